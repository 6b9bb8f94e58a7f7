import DeviceSim
import Foundation
import Logging
import SMPPlan
import SMPSystem
import XCTest

@testable import SessionRunner
@testable import SMPStation
@testable import smpctl

/// A Ctrl-C (or the station's End) in the moment the session arms. Found by pressing Ctrl-C as
/// `--yes` armed: the console, whose idea of "armed" comes with the `.armed` event, said
/// "Ctrl-C before arming: ending the session; nothing was armed." — and the applicator armed
/// after it. Only the session can say whether it armed (`Session.endUnlessArmed`).
final class ArmingRaceTests: XCTestCase {
    let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    func plan(_ count: Int) -> Plan {
        Plan(planID: "arming-race", dots: (0..<count).map {
            PlanDot(id: UInt32($0 + 1), xMicrometres: Int32($0 % 20) * 1000, yMicrometres: Int32($0 / 20) * 1000,
                    depthMicrometres: 700, dwellMicroseconds: 60_000, index: $0)
        }, sha256: "h")
    }

    func simulator() throws -> SimulatedApplicator {
        var options = SimulatorOptions()
        options.timeScale = 0.2
        let simulator = try SimulatedApplicator.start(options, logger: logger)
        addTeardownBlock { simulator.stop() }
        return simulator
    }

    final class Events: @unchecked Sendable {  // guarded by `lock`
        private let lock = NSLock()
        private var seen: [SessionEvent] = []
        let armed = DispatchSemaphore(value: 0)
        let held = DispatchSemaphore(value: 0)
        let finished = DispatchSemaphore(value: 0)
        private(set) var account: Result<SessionAccount, any Error>?

        func observe(_ event: SessionEvent) {
            lock.withLock { seen.append(event) }
            switch event {
            case .armed: armed.signal()
            case .held: held.signal()
            default: break
            }
        }

        func finish(_ result: Result<SessionAccount, any Error>) {
            lock.withLock { account = result }
            finished.signal()
        }

        var armedCount: Int {
            lock.withLock { seen.filter { if case .armed = $0 { true } else { false } }.count }
        }
    }

    func start(_ session: Session, on simulator: SimulatedApplicator,
               confirm: @escaping @Sendable (Preflight) -> Bool = { _ in true }) -> Events {
        let events = Events()
        let path = simulator.devicePath
        Thread.detachNewThread {
            events.finish(Result { try session.run(devicePath: path, confirm: confirm, onEvent: events.observe) })
        }
        return events
    }

    func notes(_ station: StationState) throws -> [String] {
        let object = try JSONSerialization.jsonObject(with: Data(station.snapshot().utf8)) as? [String: Any]
        return object?["notes"] as? [String] ?? []
    }

    /// The session armed; the console has not seen `.armed` yet (it never does here): its Ctrl-C
    /// must not say "nothing was armed" nor end the run as declined — it holds, as the first
    /// Ctrl-C of a streaming session does.
    func testCtrlCAfterTheSessionArmedButBeforeTheConsoleKnowsHoldsAndSaysSo() throws {
        let simulator = try simulator()
        let session = Session(plan: plan(200), logger: logger)
        let station = StationState(plan: plan(200), sim: true)
        let console = OperatorConsole(session: session, interlocks: nil,
                                      reporter: RunReporter(ndjson: true, sim: true, station: station),
                                      interactive: false, station: station, readsStandardInput: false)
        let events = start(session, on: simulator)
        XCTAssertEqual(events.armed.wait(timeout: .now() + 30), .success, "the session never armed")
        console.interrupted()
        XCTAssertEqual(events.held.wait(timeout: .now() + 30), .success, "the Ctrl-C did not hold the session")
        session.requestEnd(reason: "test over")
        XCTAssertEqual(events.finished.wait(timeout: .now() + 30), .success, "the session did not end")
        let account = try XCTUnwrap(events.account).get()
        let said = try notes(station)
        XCTAssertTrue(said.contains("The applicator had just been armed."), "\(said)")
        XCTAssertFalse(said.contains { $0.contains("nothing was armed") }, "said nothing was armed after arming: \(said)")
        XCTAssertEqual(account.outcome, .held, account.reason ?? "")
        XCTAssertEqual(simulator.status.state, .disarmed)
    }

    /// An end requested while the operator's yes is on its way (inside `confirm`): the session
    /// never arms, and says so truthfully.
    func testAnEndRequestedBeforeArmingIsSeenByTheArmingThatFollows() throws {
        let simulator = try simulator()
        let session = Session(plan: plan(20), logger: logger)
        let ended = Locked<Bool?>(nil)
        let events = start(session, on: simulator) { _ in
            ended.withLock { $0 = session.endUnlessArmed(reason: "ended in the moment of the yes") }
            return true
        }
        XCTAssertEqual(events.finished.wait(timeout: .now() + 30), .success, "the session did not end")
        let account = try XCTUnwrap(events.account).get()
        XCTAssertEqual(ended.withLock { $0 }, true)
        XCTAssertEqual(account.outcome, .declined)
        XCTAssertEqual(account.reason, "ended in the moment of the yes; nothing was armed")
        XCTAssertEqual(events.armedCount, 0, "the session armed after its end was requested")
        XCTAssertEqual(account.done.count, 0)
        XCTAssertEqual(simulator.status.doneCount, 0)
    }

    /// After arming, `endUnlessArmed` refuses and changes nothing: the session runs to the end.
    func testEndUnlessArmedAfterArmingChangesNothing() throws {
        let simulator = try simulator()
        let session = Session(plan: plan(20), logger: logger)
        let events = start(session, on: simulator)
        XCTAssertEqual(events.armed.wait(timeout: .now() + 30), .success, "the session never armed")
        XCTAssertFalse(session.endUnlessArmed(reason: "too late"))
        XCTAssertEqual(events.finished.wait(timeout: .now() + 60), .success, "the session did not end")
        let account = try XCTUnwrap(events.account).get()
        XCTAssertEqual(account.outcome, .completed, account.reason ?? "")
        XCTAssertEqual(account.done.count, 20)
    }
}
