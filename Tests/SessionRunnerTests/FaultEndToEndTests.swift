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

/// Every fault the simulator can inject, end to end over a pty at a fast time scale. For each,
/// the simulator's ground truth is compared with the host's account:
/// - no dot executed twice;
/// - no dot executed that the host does not know about (done, interrupted or in doubt);
/// - after a stop the needle is retracted and nothing more is injected.
final class FaultEndToEndTests: XCTestCase {
    let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    func plan(_ count: Int) -> Plan {
        let dots = (0..<count).map {
            PlanDot(id: UInt32($0 + 1), xMicrometres: Int32($0 % 40) * 1000 - 20_000, yMicrometres: Int32($0 / 40) * 1000,
                    depthMicrometres: 700, dwellMicroseconds: 40_000, region: nil, index: $0)
        }
        return Plan(planID: "faults", dots: dots)
    }

    struct Outcome {
        var account: SessionAccount
        var simulator: SimulatedApplicator
    }

    func run(_ spec: String, dots: Int = 300, timeScale: Double = 0.01, seed: UInt64 = 7) throws -> Outcome {
        var options = SimulatorOptions()
        options.timeScale = timeScale
        options.seed = seed
        options.faults = try FaultPlan(spec: spec)
        let simulator = try SimulatedApplicator.start(options, logger: logger)
        addTeardownBlock { simulator.stop() }
        let session = Session(plan: plan(dots), logger: logger)
        let account = try session.run(devicePath: simulator.devicePath, confirm: { _ in true }, onEvent: { _ in })
        return Outcome(account: account, simulator: simulator)
    }

    func assertConsistent(_ outcome: Outcome, _ spec: String, file: StaticString = #filePath, line: UInt = #line) {
        let truth = outcome.simulator.injectedDots
        let account = outcome.account
        let done = truth.filter { $0.outcome == .done }.map(\.dotID)
        XCTAssertEqual(done.count, Set(done).count, "\(spec): a dot was executed twice", file: file, line: line)
        let known = Set(account.done).union(account.inDoubt).union(account.interrupted)
        let unknown = Set(truth.map(\.dotID)).subtracting(known)
        XCTAssertTrue(unknown.isEmpty, "\(spec): executed without the host knowing: \(unknown.sorted())", file: file, line: line)
        XCTAssertTrue(Set(account.done).isSubset(of: Set(done)), "\(spec): host counts a dot done that was not", file: file, line: line)
        for id in account.interrupted {
            XCTAssertTrue(truth.contains { $0.dotID == id && $0.outcome == .interrupted }, "\(spec): \(id) not interrupted", file: file, line: line)
        }
        XCTAssertEqual(account.done.count + account.inDoubt.count + account.interrupted.count + account.notStarted.count,
                       account.total, "\(spec): account does not add up", file: file, line: line)
    }

    func assertStoppedForGood(_ outcome: Outcome, _ spec: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue(outcome.simulator.status.needleRetracted, "\(spec): needle not retracted", file: file, line: line)
        let count = outcome.simulator.injectedDots.count
        Thread.sleep(forTimeInterval: 0.3)
        XCTAssertEqual(outcome.simulator.injectedDots.count, count, "\(spec): injected after the stop", file: file, line: line)
    }

    func testLinkFaultsAreSurvivedAndEveryDotRunsExactlyOnce() throws {
        for spec in ["corrupt=0.05", "drop=0.05", "duplicate=0.05", "garbage=0.05", "delay-ack=20ms",
                     "corrupt=0.02,drop=0.02,duplicate=0.02,garbage=0.01", "slow=3"]
        {
            let outcome = try run(spec)
            XCTAssertEqual(outcome.account.outcome, .completed, "\(spec): \(outcome.account.reason ?? "")")
            assertConsistent(outcome, spec)
            XCTAssertEqual(outcome.simulator.injectedDots.filter { $0.outcome == .done }.count, 300, spec)
        }
    }

    func testRetransmissionsHappenUnderLoss() throws {
        let outcome = try run("drop=0.1", dots: 200)
        XCTAssertEqual(outcome.account.outcome, .completed, outcome.account.reason ?? "")
        XCTAssertGreaterThan(outcome.account.metrics.retransmissions, 0)
        assertConsistent(outcome, "drop=0.1")
    }

    func testShortStallIsRidden() throws {
        // Shorter than the host's 500 ms link-loss timeout: the device's lease expires (it holds),
        // the session ends held with an exact account.
        let spec = "stall-at=50:200ms"
        let outcome = try run(spec)
        assertConsistent(outcome, spec)
        XCTAssertNotEqual(outcome.account.outcome, .completed)
        XCTAssertTrue(outcome.simulator.status.needleRetracted)
    }

    func testLongStallIsDetectedAsLinkLoss() throws {
        let spec = "stall-at=50:1500ms"
        let outcome = try run(spec)
        XCTAssertEqual(outcome.account.outcome, .linkLost, outcome.account.reason ?? "")
        assertConsistent(outcome, spec)
        assertStoppedForGood(outcome, spec)
    }

    func testDeviceResetLeavesInFlightDotsInDoubtNeverResent() throws {
        let spec = "reset-at=80"
        let outcome = try run(spec)
        XCTAssertNotEqual(outcome.account.outcome, .completed)
        assertConsistent(outcome, spec)
        assertStoppedForGood(outcome, spec)
    }

    func testDisconnectIsDetectedAndAccounted() throws {
        let spec = "disconnect-at=60"
        let outcome = try run(spec)
        XCTAssertEqual(outcome.account.outcome, .linkLost, outcome.account.reason ?? "")
        XCTAssertEqual(outcome.account.outcome, .linkLost)
        assertConsistent(outcome, spec)
    }

    func testDeviceEstopLatchesAndNothingMoreIsInjected() throws {
        let spec = "estop-at=70"
        let outcome = try run(spec)
        XCTAssertEqual(outcome.account.outcome, .stopped)
        XCTAssertEqual(outcome.simulator.status.state, .estop)
        assertConsistent(outcome, spec)
        assertStoppedForGood(outcome, spec)
        XCTAssertFalse(outcome.simulator.injectedDots.contains { $0.dotID >= 70 && $0.outcome == .done })
    }

    func testContactLossHoldsAndTheDotInProgressCompletes() throws {
        let spec = "contact-loss-at=90"
        let outcome = try run(spec)
        XCTAssertEqual(outcome.account.outcome, .held, outcome.account.reason ?? "")
        XCTAssertTrue(outcome.account.interrupted.isEmpty, "a hold never cuts a dot short")
        assertConsistent(outcome, spec)
        assertStoppedForGood(outcome, spec)
    }

    func testOverDepthFaultLatches() throws {
        let spec = "over-depth-at=40"
        let outcome = try run(spec)
        XCTAssertEqual(outcome.account.outcome, .stopped)
        XCTAssertEqual(outcome.simulator.status.state, .fault)
        assertConsistent(outcome, spec)
        assertStoppedForGood(outcome, spec)
    }
}
