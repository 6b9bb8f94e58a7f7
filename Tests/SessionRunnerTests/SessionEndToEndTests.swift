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

/// Full sessions over a real pseudo-terminal: Session → ApplicatorLink → SerialPort → pty →
/// SimulatedApplicator. The simulator's ground truth is compared with the host's account.
final class SessionEndToEndTests: XCTestCase {
    var logger: Logger {
        Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
    }

    func makePlan(count: Int, depth: Int32 = 800, seed: UInt64 = 1) -> Plan {
        latticePlan(count: count, depth: depth, seed: seed)
    }

    func startSimulator(timeScale: Double = 0) throws -> SimulatedApplicator {
        var options = SimulatorOptions()
        options.timeScale = timeScale
        return try SimulatedApplicator.start(options, logger: logger)
    }

    func assertExactlyOnce(_ simulator: SimulatedApplicator, _ account: SessionAccount, plan: Plan,
                           file: StaticString = #filePath, line: UInt = #line) {
        let injected = simulator.injectedDots.filter { $0.outcome == .done }.map(\.dotID)
        XCTAssertEqual(injected.count, Set(injected).count, "a dot was injected twice", file: file, line: line)
        XCTAssertEqual(Set(injected), Set(account.done), "host account differs from the ground truth", file: file, line: line)
        XCTAssertEqual(injected, account.done, "completion order differs", file: file, line: line)
    }

    func testFullSessionOverAPseudoTerminalInjectsEveryDotExactlyOnce() throws {
        let simulator = try startSimulator()
        defer { simulator.stop() }
        let plan = makePlan(count: 600)
        let session = Session(plan: plan, logger: logger)
        let events = EventLog()
        let account = try session.run(devicePath: simulator.devicePath, confirm: { _ in true },
                                      onEvent: { events.append($0) })
        XCTAssertEqual(account.outcome, .completed, account.reason ?? "")
        XCTAssertEqual(account.done.count, 600)
        XCTAssertEqual(account.outcome, .completed)
        XCTAssertTrue(account.notStarted.isEmpty && account.inDoubt.isEmpty && account.interrupted.isEmpty)
        assertExactlyOnce(simulator, account, plan: plan)
        XCTAssertEqual(simulator.injectedDots.map(\.dotID), plan.dots.map(\.id), "plan order")
        XCTAssertTrue(events.contains { if case .preflight = $0 { true } else { false } })
    }

    func testDeclinedPreflightArmsNothing() throws {
        let simulator = try startSimulator()
        defer { simulator.stop() }
        let session = Session(plan: makePlan(count: 10), logger: logger)
        let account = try session.run(devicePath: simulator.devicePath, confirm: { _ in false }, onEvent: { _ in })
        XCTAssertEqual(account.outcome, .declined)
        XCTAssertTrue(simulator.injectedDots.isEmpty)
        XCTAssertEqual(account.notStarted.count, 10)
    }

    func testPlanOutsideTheDeviceLimitsIsRefusedAfterHandshakeAndNothingIsArmed() throws {
        var options = SimulatorOptions()
        options.timeScale = 0
        options.limits.depthMaxMicrometres = 700  // tighter than the built-in envelope
        let simulator = try SimulatedApplicator.start(options, logger: logger)
        defer { simulator.stop() }
        let session = Session(plan: makePlan(count: 10, depth: 800), logger: logger)
        let account = try session.run(devicePath: simulator.devicePath, confirm: { _ in true }, onEvent: { _ in })
        XCTAssertEqual(account.outcome, .refusedPlan)
        XCTAssertEqual(account.outcome, .refusedPlan)
        XCTAssertTrue(account.reason?.contains("depth") ?? false, account.reason ?? "")
        XCTAssertTrue(simulator.injectedDots.isEmpty)
    }

    /// Layer 3 alone: the runner's check switched off and the device's limits tighter than the
    /// plan's envelope check (which ran against the built-in envelope before the handshake here
    /// is bypassed by using an envelope as wide as the device claims). The firmware must refuse.
    func testFirmwareRefusesAnOutOfLimitDotEvenWhenTheHostSendsOne() throws {
        var options = SimulatorOptions()
        options.timeScale = 0
        let simulator = try SimulatedApplicator.start(options, logger: logger)
        defer { simulator.stop() }
        // Dot 5 is deeper than the simulator's 1500 µm hardware maximum.
        var plan = makePlan(count: 10)
        var dots = plan.dots
        let bad = dots[4]
        dots[4] = PlanDot(id: bad.id, xMicrometres: bad.xMicrometres, yMicrometres: bad.yMicrometres,
                          depthMicrometres: 2_000, dwellMicroseconds: bad.dwellMicroseconds, region: bad.region,
                          index: bad.index)
        plan = Plan(planID: plan.planID, dots: dots, client: nil, session: nil, sourcePath: nil, sha256: nil)
        var sessionOptions = SessionOptions()
        // Layer 1 off: an envelope wider than the hardware, so validation after HELLO passes…
        sessionOptions.envelope.depthMicrometres = 200...3_000
        let session = Session(plan: plan, options: sessionOptions, logger: logger)
        // …and layer 2 off.
        session.checkEnvelopeBeforeEncoding = false
        session.skipValidationAfterHandshake = true
        let account = try session.run(devicePath: simulator.devicePath, confirm: { _ in true }, onEvent: { _ in })
        XCTAssertEqual(account.outcome, .stopped, account.reason ?? "")
        XCTAssertFalse(simulator.injectedDots.contains { $0.dotID == bad.id }, "the firmware injected an out-of-limit dot")
        XCTAssertLessThanOrEqual(simulator.injectedDots.count, 4)
        XCTAssertEqual(simulator.status.state, .fault)
        assertExactlyOnce(simulator, account, plan: plan)
    }

    /// Layer 2 alone: validation after the handshake is off, the runner's check before encoding
    /// stops the session before the dot is encoded.
    func testRunnerRefusesAnOutOfEnvelopeDotBeforeEncoding() throws {
        let simulator = try startSimulator()
        defer { simulator.stop() }
        var plan = makePlan(count: 10)
        var dots = plan.dots
        let bad = dots[6]
        dots[6] = PlanDot(id: bad.id, xMicrometres: bad.xMicrometres, yMicrometres: bad.yMicrometres,
                          depthMicrometres: 1_600, dwellMicroseconds: bad.dwellMicroseconds, region: bad.region,
                          index: bad.index)
        plan = Plan(planID: plan.planID, dots: dots, client: nil, session: nil, sourcePath: nil, sha256: nil)
        let session = Session(plan: plan, logger: logger)
        session.skipValidationAfterHandshake = true
        let account = try session.run(devicePath: simulator.devicePath, confirm: { _ in true }, onEvent: { _ in })
        XCTAssertNotEqual(account.outcome, .completed)
        XCTAssertFalse(simulator.injectedDots.contains { $0.dotID == bad.id })
        XCTAssertTrue(account.reason?.contains("\(bad.id)") ?? false, account.reason ?? "")
        assertExactlyOnce(simulator, account, plan: plan)
        XCTAssertEqual(Set(account.done).union(account.notStarted).union(account.inDoubt).union(account.interrupted).count, 10)
    }

    func testOperatorHoldFinishesTheDotInProgressAndKeepsTheAccountExact() throws {
        let simulator = try startSimulator(timeScale: 0.05)
        defer { simulator.stop() }
        let plan = makePlan(count: 200)
        let session = Session(plan: plan, logger: logger)
        let holdRequested = ManagedFlag()
        let account = try session.run(devicePath: simulator.devicePath, confirm: { _ in true }, onEvent: { event in
            if case .progress(let p) = event, p.done == 20, holdRequested.setOnce() {
                session.requestHold()
                DispatchQueue.global().asyncAfter(deadline: .now() + 0.3) {
                    session.requestAbort(reason: "test ends the held session")
                }
            }
        })
        XCTAssertEqual(account.outcome, .held, account.reason ?? "")
        XCTAssertGreaterThanOrEqual(account.done.count, 20)
        XCTAssertLessThan(account.done.count, 200)
        XCTAssertTrue(account.interrupted.isEmpty, "a hold never cuts a dot short")
        XCTAssertTrue(simulator.status.needleRetracted)
        assertExactlyOnce(simulator, account, plan: plan)
        XCTAssertEqual(account.done.count + account.notStarted.count + account.inDoubt.count, 200)
    }

    func testHostEstopLatchesAndNothingMoreIsInjected() throws {
        let simulator = try startSimulator(timeScale: 0.05)
        defer { simulator.stop() }
        let plan = makePlan(count: 200)
        let session = Session(plan: plan, logger: logger)
        let fired = ManagedFlag()
        let account = try session.run(devicePath: simulator.devicePath, confirm: { _ in true }, onEvent: { event in
            if case .progress(let p) = event, p.done == 10, fired.setOnce() {
                session.requestEstop(cause: .hostEstop)
            }
        })
        XCTAssertEqual(account.outcome, .stopped)
        XCTAssertEqual(simulator.status.state, .estop)
        XCTAssertTrue(simulator.status.needleRetracted)
        let injectedAtStop = simulator.injectedDots.count
        Thread.sleep(forTimeInterval: 0.2)
        XCTAssertEqual(simulator.injectedDots.count, injectedAtStop, "something was injected after the e-stop")
        assertExactlyOnce(simulator, account, plan: plan)
    }
}


/// The envelope is enforced by three independent layers: plan validation (1), the runner just
/// before encoding (2), the firmware (3). Each test switches layers off; the remaining ones stop
/// the out-of-envelope dot, and nothing outside the envelope is ever injected.
final class EnvelopeLayerTests: XCTestCase {
    let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    func plan(badDepth: Int32) -> Plan {
        Plan(planID: "layers", dots: (0..<10).map {
            PlanDot(id: UInt32($0 + 1), xMicrometres: Int32($0) * 1000, yMicrometres: 0,
                    depthMicrometres: $0 == 5 ? badDepth : 800, dwellMicroseconds: 50_000, index: $0)
        })
    }

    /// Layer 3 off (a firmware whose hardware allows 3 mm): layer 1 refuses the plan after the
    /// handshake, nothing armed.
    func testWithoutTheFirmwareLimitValidationStillRefuses() throws {
        var options = SimulatorOptions()
        options.timeScale = 0
        options.limits.depthMaxMicrometres = 3_000
        let simulator = try SimulatedApplicator.start(options, logger: logger)
        defer { simulator.stop() }
        let account = try Session(plan: plan(badDepth: 2_000), logger: logger)
            .run(devicePath: simulator.devicePath, confirm: { _ in true }, onEvent: { _ in })
        XCTAssertEqual(account.outcome, .refusedPlan)
        XCTAssertTrue(simulator.injectedDots.isEmpty)
    }

    /// Layers 1 and 3 off: the runner's check before encoding stops it.
    func testWithoutValidationAndFirmwareLimitTheRunnerStillRefuses() throws {
        var options = SimulatorOptions()
        options.timeScale = 0
        options.limits.depthMaxMicrometres = 3_000
        let simulator = try SimulatedApplicator.start(options, logger: logger)
        defer { simulator.stop() }
        let session = Session(plan: plan(badDepth: 2_000), logger: logger)
        session.skipValidationAfterHandshake = true
        let account = try session.run(devicePath: simulator.devicePath, confirm: { _ in true }, onEvent: { _ in })
        XCTAssertNotEqual(account.outcome, .completed)
        XCTAssertFalse(simulator.injectedDots.contains { $0.depthMicrometres > 1_500 }, "a dot deeper than 1.5 mm was injected")
    }

    /// Layers 1 and 2 off: the firmware refuses (latched fault).
    func testWithoutValidationAndRunnerCheckTheFirmwareStillRefuses() throws {
        var options = SimulatorOptions()
        options.timeScale = 0
        let simulator = try SimulatedApplicator.start(options, logger: logger)
        defer { simulator.stop() }
        var sessionOptions = SessionOptions()
        sessionOptions.envelope.depthMicrometres = 200...3_000
        let session = Session(plan: plan(badDepth: 2_000), options: sessionOptions, logger: logger)
        session.skipValidationAfterHandshake = true
        session.checkEnvelopeBeforeEncoding = false
        let account = try session.run(devicePath: simulator.devicePath, confirm: { _ in true }, onEvent: { _ in })
        XCTAssertEqual(account.outcome, .stopped)
        XCTAssertEqual(simulator.status.state, .fault)
        XCTAssertFalse(simulator.injectedDots.contains { $0.depthMicrometres > 1_500 })
    }
}

/// A jittered lattice of `count` dots, 1 mm apart, 50 ms dwell, regions "a" and "b".
func latticePlan(count: Int, depth: Int32 = 800, seed: UInt64 = 1) -> Plan {
    var dots: [PlanDot] = []
    // A jittered lattice, 1 mm apart: irregular but never closer than the 0.5 mm spacing.
    var state = seed
    func jitter() -> Int32 {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return Int32(truncatingIfNeeded: (state >> 33) % 200) - 100
    }
    let side = Int(Double(count).squareRoot().rounded(.up))
    for index in 0..<count {
        let x = Int32(index % side) * 1000 - 20_000 + jitter()
        let y = Int32(index / side) * 1000 - 20_000 + jitter()
        dots.append(PlanDot(id: UInt32(index + 1), xMicrometres: x, yMicrometres: y, depthMicrometres: depth,
                            dwellMicroseconds: 50_000, region: index % 2 == 0 ? "a" : "b", index: index))
    }
    return Plan(planID: "test-\(count)", dots: dots, client: nil, session: nil, sourcePath: nil, sha256: nil)
}

final class EventLog: @unchecked Sendable {
    private let lock = NSLock()
    private var events: [SessionEvent] = []
    func append(_ event: SessionEvent) { lock.withLock { events.append(event) } }
    func contains(where predicate: (SessionEvent) -> Bool) -> Bool { lock.withLock { events.contains(where: predicate) } }
}

final class ManagedFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var set = false
    /// True the first time only.
    func setOnce() -> Bool { lock.withLock { defer { set = true }; return !set } }
}
