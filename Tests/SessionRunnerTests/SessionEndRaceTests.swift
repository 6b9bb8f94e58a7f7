import FirmwareProtocol
import Foundation
import Logging
import NeedleDriver
import XCTest

@testable import SessionRunner
@testable import SMPPlan
@testable import SMPRecords

/// Found by the soak (fifth stop, trial fault-contact-loss-at-1007): a session that ended held the
/// moment the applicator held left 11 dots recorded `sent` that had never left the host, and
/// every `smpctl resume` after it asked for a decision (exit 64) about dots nobody could settle.
/// The session had pulled them for the link (an ACK's credit) just before the held STATUS; the
/// link's thread took them only after the session had ended, found no credit and returned them,
/// and the session, already ended, dropped that event. A dot returned by the link after the end,
/// before the record closes, is put back to `planned` as one returned before it.
final class SessionEndRaceTests: XCTestCase {
    let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    /// On a thread of its own, so a session that never ends fails the test instead of hanging it.
    func runToEnd(_ session: Session, on devicePath: String, file: StaticString = #filePath,
                  line: UInt = #line) throws -> SessionAccount {
        let box = AccountBox()
        Thread.detachNewThread {
            box.set(Result { try session.run(devicePath: devicePath, confirm: { _ in true }, onEvent: { _ in }) })
        }
        guard let result = box.wait(timeout: 30) else {
            session.requestAbort(reason: "test timeout")
            XCTFail("the session did not end", file: file, line: line)
            throw CancellationError()
        }
        return try result.get()
    }

    func temporaryPath() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("smpctl-endrace-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir.appendingPathComponent("records.sqlite").path
    }

    /// Runs each DOT at once (ACK with the whole queue free, then DOT_DONE), until the one with
    /// id `holdAt`: its answer is the ACK — credit for more — and, in the same write, a STATUS
    /// `held` (skin contact lost, a new epoch) that fences it. CLEAR disarms.
    func applicator(holdAt: UInt32) throws -> ScriptedApplicator {
        nonisolated(unsafe) var state = DeviceState.disarmed
        nonisolated(unsafe) var epoch: UInt16 = 0
        nonisolated(unsafe) var done: UInt32 = 0
        nonisolated(unsafe) var lastDone: UInt32 = 0
        @Sendable func status() -> Frame {
            Frame(.status(Status(state: state, fault: state == .held ? .contactLost : .none, queueDepth: 0, freeSlots: 32,
                                 epoch: epoch, ackSeq: 0, lastDoneSeq: 0, lastDoneDotID: lastDone, doneCount: done,
                                 currentDotID: 0, needleRetracted: true, paceMilliseconds: 0)))
        }
        return try ScriptedApplicator { frame in
            switch frame.message {
            case .hello(let hello):
                return [ScriptedApplicator.reply(to: hello)]
            case .arm:
                state = .ready
                return [status()]
            case .dot(let dot) where state == .ready || state == .running:
                let ack = Frame(.ack(Ack(ackSeq: frame.seq, freeSlots: 32, epoch: epoch)))
                if dot.dotID == holdAt {
                    state = .held
                    epoch &+= 1
                    return [ack, status()]
                }
                done += 1
                lastDone = dot.dotID
                return [ack, Frame(.dotDone(DotDone(dotSeq: frame.seq, dotID: dot.dotID, doneCount: done,
                                                    deviceTimeMicroseconds: UInt64(done) * 100_000)))]
            case .dot(let dot):
                return [Frame(.refused(Refused(seq: frame.seq, dotID: dot.dotID, code: .held, value: 0,
                                               state: state, fault: .contactLost)))]
            case .clear:
                state = .disarmed
                return [status()]
            default:
                return [status()]
            }
        }
    }

    func testDotsTheLinkReturnsAfterAHeldEndAreRecordedPlannedNotSent() throws {
        // The race needs the link's thread to take the pulled dots after the end: repeated.
        for attempt in 1...6 {
            let device = try applicator(holdAt: UInt32(20 + attempt))
            defer { device.stop() }
            let path = try temporaryPath()
            let store = try RecordStore(path: path)
            var options = SessionOptions()
            options.recording = RecordingOptions(store: store, planPath: "/tmp/p.json", planSHA256: "h",
                                                 operatorName: "tester", machineID: "m")
            let dots = (0..<200).map {
                PlanDot(id: UInt32($0 + 1), xMicrometres: Int32($0 % 20) * 1_000, yMicrometres: Int32($0 / 20) * 1_000,
                        depthMicrometres: 700, dwellMicroseconds: 60_000, index: $0)
            }
            let session = Session(plan: Plan(planID: "race", dots: dots, sha256: "h"), options: options, logger: logger)
            let account = try runToEnd(session, on: device.path)
            XCTAssertEqual(account.outcome, .held, account.reason ?? "")
            let id = try XCTUnwrap(account.sessionID)
            let records = try RecordStore(path: path).dots(session: id)
            let sent = records.filter { $0.status == .sent }.map(\.dotID)
            XCTAssertEqual(sent, [], "attempt \(attempt): dots left `sent` that never reached the applicator")
            XCTAssertEqual(records.filter { $0.status == .done }.count, account.done.count)
            XCTAssertEqual(Set(records.filter { $0.status == .planned }.map(\.dotID)), Set(account.notStarted),
                           "attempt \(attempt): the record and the account disagree on what was not started")
        }
    }

    /// Found by the soak too (trial kill-handshake-device-44, a hang): `smpctl resume` of a run
    /// killed mid-stream, on a device still armed (`ready`). ARM's answer repeated the
    /// handshake's STATUS, the 1.3 device said nothing about ready ↔ running, so the session never
    /// saw the device running; when it reset (STATUS `disarmed`) or held, nothing ended the
    /// session and it waited for ever. A dot done after our ARM now counts as seeing it run.
    func testADeviceArmedBeforeTheSessionThatResetsOrHoldsEndsItAndNeverHangs() throws {
        for holds in [false, true] {
            nonisolated(unsafe) var state = DeviceState.ready  // armed by the run before, which died
            nonisolated(unsafe) var epoch: UInt16 = 0
            nonisolated(unsafe) var done: UInt32 = 0
            @Sendable func status() -> Frame {
                let fault: FaultCode = state == .held ? .contactLost : .none
                return Frame(.status(Status(state: state, fault: fault, queueDepth: 0, freeSlots: 32, epoch: epoch, ackSeq: 0,
                                            lastDoneSeq: 0, lastDoneDotID: 0, doneCount: done, currentDotID: 0,
                                            needleRetracted: true, paceMilliseconds: 0)))
            }
            let device = try ScriptedApplicator { frame in
                switch frame.message {
                case .hello(let hello):
                    return [ScriptedApplicator.reply(to: hello)]
                case .dot(let dot) where state == .ready:
                    let ack = Frame(.ack(Ack(ackSeq: frame.seq, freeSlots: 32, epoch: epoch)))
                    if dot.dotID == 40 {
                        // A reset: queue and counts gone, disarmed. Or a hold: skin contact lost.
                        if holds { state = .held; epoch &+= 1 } else { state = .disarmed; done = 0 }
                        return [ack, status()]
                    }
                    done += 1
                    return [ack, Frame(.dotDone(DotDone(dotSeq: frame.seq, dotID: dot.dotID, doneCount: done,
                                                        deviceTimeMicroseconds: UInt64(done) * 100_000)))]
                case .dot(let dot):
                    return [Frame(.refused(Refused(seq: frame.seq, dotID: dot.dotID, code: state == .held ? .held : .notArmed,
                                                   value: 0, state: state, fault: .none)))]
                case .clear:
                    state = .disarmed
                    return [status()]
                default:  // STATUS_REQUEST, ARM (already armed: the same `ready`)
                    return [status()]
                }
            }
            defer { device.stop() }
            let dots = (0..<200).map {
                PlanDot(id: UInt32($0 + 1), xMicrometres: Int32($0 % 20) * 1_000, yMicrometres: Int32($0 / 20) * 1_000,
                        depthMicrometres: 700, dwellMicroseconds: 60_000, index: $0)
            }
            let session = Session(plan: Plan(planID: "armed-before", dots: dots, sha256: "h"), logger: logger)
            let account = try runToEnd(session, on: device.path)
            if holds {
                XCTAssertEqual(account.outcome, .held, account.reason ?? "")
            } else {
                XCTAssertEqual(account.outcome, .stopped, account.reason ?? "")
                XCTAssertTrue(account.reason?.contains("reset") == true, account.reason ?? "")
            }
            XCTAssertEqual(account.done.count, 39)
        }
    }
}
