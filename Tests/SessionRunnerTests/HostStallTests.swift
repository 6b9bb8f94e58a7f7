import DeviceSim
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

/// The host's own queue blocked for a while — a long synchronous write (a 20,000-dot plan's
/// record), a starved process — must not be taken for a silent applicator. `onEvent` runs on
/// the session's queue, so sleeping in it stalls the host exactly there.
final class HostStallTests: XCTestCase {
    var logger: Logger { Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }) }

    func run(_ plan: Plan, stallAfter: @escaping @Sendable (SessionEvent) -> Bool) throws -> (SessionAccount, SimulatedApplicator) {
        var options = SimulatorOptions()
        options.timeScale = 0.05
        let simulator = try SimulatedApplicator.start(options, logger: logger)
        let stalled = ManagedFlag()
        let account = try Session(plan: plan, logger: logger).run(
            devicePath: simulator.devicePath, confirm: { _ in true },
            onEvent: { event in
                if stallAfter(event), stalled.setOnce() { Thread.sleep(forTimeInterval: 1.0) }
            })
        return (account, simulator)
    }

    /// Before arming nothing runs on the device, so a stall there costs nothing: the session goes on.
    func testAStallAfterTheHandshakeIsNotALostLink() throws {
        let plan = latticePlan(count: 30)
        let (account, simulator) = try run(plan) { if case .preflight = $0 { true } else { false } }
        defer { simulator.stop() }
        XCTAssertEqual(account.outcome, .completed, account.reason ?? "")
        XCTAssertEqual(simulator.injectedDots.map(\.dotID), plan.dots.map(\.id))
    }

    /// While streaming, a stall of the session's queue longer than the lease no longer lets the
    /// applicator's lease expire: the link's own I/O thread keeps the heartbeat (issue 15), the
    /// device finishes the dots it has and waits, and the session goes on once its queue runs
    /// again — every dot exactly once, nothing in doubt, not a lost link.
    func testAStallWhileStreamingIsRiddenByTheLinksOwnThread() throws {
        let plan = latticePlan(count: 200)
        let (account, simulator) = try run(plan) { event in
            if case .progress(let progress) = event { progress.done >= 20 } else { false }
        }
        defer { simulator.stop() }
        XCTAssertEqual(account.outcome, .completed, account.reason ?? "")
        XCTAssertTrue(account.inDoubt.isEmpty && account.interrupted.isEmpty, "\(account)")
        XCTAssertEqual(simulator.injectedDots.map(\.dotID), plan.dots.map(\.id), "a dot injected twice or missed")
        let done = simulator.injectedDots.filter { $0.outcome == .done }.map(\.dotID)
        XCTAssertEqual(done, account.done, "host account differs from the ground truth")
    }
}
