import FirmwareProtocol
import Foundation
import Logging
import NeedleDriver
import XCTest

@testable import SessionRunner
@testable import SMPPlan
@testable import SMPPlanReader
@testable import SMPInterlocks
@testable import SMPRecords
@testable import SMPMachine
@testable import SMPRender

/// Review of a3f079b: the end of a session sends CLEAR whatever the last STATUS the host saw
/// (firmware-protocol.md §6.9, 7: "it sends CLEAR … whatever the outcome"; the device ignores
/// CLEAR while it is really running). The link skipped CLEAR when that STATUS said `running` —
/// which it does whenever the final `ready` STATUS was lost on the line: a completed session over
/// a lossy link then left the applicator armed (ready, then held by its lease: needle power on).
final class SessionEndClearTests: XCTestCase {
    let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    /// Runs DOTs at once; the STATUS it sends for a DOT says `running` (needle in the skin), then
    /// DOT_DONE — and the `ready` STATUS after it is lost: after its first DOT it answers nothing
    /// but CLEAR (STATUS `disarmed`). The script runs on the fake's one thread.
    func lossyEndApplicator() throws -> ScriptedApplicator {
        @Sendable func status(_ state: DeviceState, ack: UInt8 = 0, done: UInt32 = 0, last: UInt32 = 0,
                    current: UInt32 = 0, retracted: Bool = true) -> Frame {
            Frame(.status(Status(state: state, fault: .none, queueDepth: current == 0 ? 0 : 1, freeSlots: 32, epoch: 0,
                                 ackSeq: ack, lastDoneSeq: done == 0 ? 0 : ack, lastDoneDotID: last, doneCount: done,
                                 currentDotID: current, needleRetracted: retracted, paceMilliseconds: 0)))
        }
        nonisolated(unsafe) var state = DeviceState.disarmed
        nonisolated(unsafe) var silent = false
        return try ScriptedApplicator { frame in
            switch frame.message {
            case .hello(let hello):
                var reply = ScriptedApplicator.hello
                reply.hostNonce = hello.hostNonce
                return [Frame(.helloReply(reply))]
            case .arm:
                state = .ready
                return [status(state)]
            case .dot(let dot) where state == .ready && !silent:
                let seq = frame.seq
                silent = true  // the `ready` STATUS that follows is lost, and every later answer but CLEAR's
                return [Frame(.ack(Ack(ackSeq: seq, freeSlots: 31, epoch: 0))),
                        status(.running, ack: seq, current: dot.dotID, retracted: false),
                        Frame(.dotDone(DotDone(dotSeq: seq, dotID: dot.dotID, doneCount: 1, deviceTimeMicroseconds: 100_000)))]
            case .clear where state == .ready || state == .held:
                state = .disarmed
                return [status(state, done: 1)]
            default:
                return silent ? [] : [status(state)]
            }
        }
    }

    func testACompletedSessionWhoseLastStatusSaidRunningStillClearsTheApplicator() throws {
        let device = try lossyEndApplicator()
        defer { device.stop() }
        let plan = Plan(planID: "clear", dots: [PlanDot(id: 1, xMicrometres: 0, yMicrometres: 0, depthMicrometres: 700,
                                                       dwellMicroseconds: 60_000, index: 0)])
        let box = AccountBox()
        let session = Session(plan: plan, logger: logger)
        Thread.detachNewThread {
            box.set(Result { try session.run(devicePath: device.path, confirm: { _ in true }, onEvent: { _ in }) })
        }
        guard let result = box.wait(timeout: 20) else {
            session.requestAbort(reason: "test timeout")
            XCTFail("the session did not end")
            throw CancellationError()
        }
        let account = try result.get()
        XCTAssertEqual(account.outcome, .completed, account.reason ?? "")
        XCTAssertTrue(device.types.contains(.clear), "no CLEAR at the end: the applicator was left armed (\(device.types))")
        XCTAssertTrue(account.deviceDisarmed, "the applicator's STATUS disarmed was not taken")
    }
}
