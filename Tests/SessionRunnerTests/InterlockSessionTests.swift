import DeviceSim
import FirmwareProtocol
import Foundation
import Logging
import NeedleDriver
import SMPSystem
import XCTest

@testable import SessionRunner
@testable import SMPPlan
@testable import SMPPlanReader
@testable import SMPInterlocks
@testable import SMPRecords
@testable import SMPMachine
@testable import SMPRender

/// Interlocks driven through the simulated GPIO backend (same fd event path as libgpiod) during a
/// real pty session; the simulator's ground truth is the judge.
final class InterlockSessionTests: XCTestCase {
    let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    /// The lines `smpctl run --sim` simulates.
    var machine: MachineConfiguration { MachineConfiguration().withSimulatedInterlockLines() }

    func plan(_ count: Int) -> Plan {
        Plan(planID: "interlocks", dots: (0..<count).map {
            PlanDot(id: UInt32($0 + 1), xMicrometres: Int32($0 % 30) * 1000, yMicrometres: Int32($0 / 30) * 1000,
                    depthMicrometres: 700, dwellMicroseconds: 60_000, index: $0)
        })
    }

    struct Rig {
        var simulator: SimulatedApplicator
        var interlocks: Interlocks
        var session: Session
        var lines: SimulatedGPIOBackend { interlocks.simulator! }
    }

    func rig(dots: Int = 120) throws -> Rig {
        var options = SimulatorOptions()
        options.timeScale = 0.05
        let simulator = try SimulatedApplicator.start(options, logger: logger)
        addTeardownBlock { simulator.stop() }
        let interlocks = try Interlocks.open(configuration: machine, simulated: true, logger: logger)
        var sessionOptions = SessionOptions()
        sessionOptions.interlocks = interlocks
        return Rig(simulator: simulator, interlocks: interlocks, session: Session(plan: plan(dots), options: sessionOptions, logger: logger))
    }

    func testEstopInputStopsTheNeedleCutsPowerAndNothingMoreIsInjected() throws {
        let rig = try rig()
        let fired = ManagedFlag()
        let account = try rig.session.run(devicePath: rig.simulator.devicePath, confirm: { _ in true }) { event in
            if case .progress(let p) = event, p.done == 15, fired.setOnce() { _ = rig.lines.press(line: "estop") }
        }
        XCTAssertEqual(account.outcome, .stopped, account.reason ?? "")
        XCTAssertEqual(rig.simulator.status.state, .estop)
        XCTAssertTrue(rig.simulator.status.needleRetracted)
        XCTAssertEqual(rig.lines.value(of: "needle-power"), .inactive)
        assertNothingMoreInjectedAndEveryDoneDotOnceInTheRecord(rig, account, after: "the e-stop")
    }

    /// Nothing injected in the 0.3 s after the session ended; the device's done dots are the
    /// account's, each once.
    func assertNothingMoreInjectedAndEveryDoneDotOnceInTheRecord(
        _ rig: Rig, _ account: SessionAccount, after what: String, line: UInt = #line
    ) {
        let count = rig.simulator.injectedDots.count
        Thread.sleep(forTimeInterval: 0.3)
        XCTAssertEqual(rig.simulator.injectedDots.count, count, "injected after \(what)", line: line)
        let done = rig.simulator.injectedDots.filter { $0.outcome == .done }.map(\.dotID)
        XCTAssertEqual(Set(done), Set(account.done), line: line)
        XCTAssertEqual(done.count, Set(done).count, line: line)
    }

    /// The lines' health check rides the link thread's passes during a session (issue 15); a
    /// chip that vanishes silently mid-session is still found, as an e-stop, and nothing more is
    /// injected.
    func testAChipThatVanishesMidSessionIsFoundByTheCheckTheLinkCarries() throws {
        let rig = try rig()
        let fired = ManagedFlag()
        let carried = Locked(0)
        let account = try rig.session.run(devicePath: rig.simulator.devicePath, confirm: { _ in true }) { event in
            if case .progress(let p) = event, p.done == 15, fired.setOnce() {
                carried.withLock { $0 = rig.interlocks.queue.sync { rig.lines.healthChecks.carried } }
                rig.lines.vanish(chip: "sim")
            }
        }
        XCTAssertEqual(account.outcome, .stopped, account.reason ?? "")
        XCTAssertGreaterThan(carried.withLock { $0 }, 0, "the link's I/O thread made the checks")
        XCTAssertEqual(rig.simulator.status.state, .estop)
        XCTAssertTrue(rig.simulator.status.needleRetracted)
        XCTAssertEqual(rig.lines.value(of: "needle-power"), .active, "the output was on the vanished chip: it could not be driven")
        assertNothingMoreInjectedAndEveryDoneDotOnceInTheRecord(rig, account, after: "the chip was found gone")
    }

    func testEstopReleaseNeverRestartsWithoutTheOperatorsReset() throws {
        let rig = try rig()
        let fired = ManagedFlag()
        _ = try rig.session.run(devicePath: rig.simulator.devicePath, confirm: { _ in true }) { event in
            if case .progress(let p) = event, p.done == 10, fired.setOnce() {
                _ = rig.lines.press(line: "estop")
                DispatchQueue.global().asyncAfter(deadline: .now() + 0.1) { _ = rig.lines.release(line: "estop") }
            }
        }
        let count = rig.simulator.injectedDots.count
        Thread.sleep(forTimeInterval: 0.4)
        XCTAssertEqual(rig.simulator.injectedDots.count, count, "a released e-stop restarted the needle")
        XCTAssertEqual(rig.interlocks.status().state, .estopped)
        XCTAssertEqual(rig.simulator.status.state, .estop)
    }

    func testPedalReleaseHoldsTheDotInProgressCompletesAndNothingStartsUntilResume() throws {
        let rig = try rig(dots: 80)
        let released = ManagedFlag()
        let heldAt = CountBox()
        let account = try rig.session.run(devicePath: rig.simulator.devicePath, confirm: { _ in true }) { event in
            if case .progress(let p) = event, p.done == 20, released.setOnce() {
                _ = rig.lines.release(line: "pedal")
            }
            if case .held = event {
                // While held: wait, check nothing new starts, then press the pedal and resume.
                DispatchQueue.global().asyncAfter(deadline: .now() + 0.3) {
                    heldAt.set(rig.simulator.injectedDots.count)
                    DispatchQueue.global().asyncAfter(deadline: .now() + 0.3) {
                        heldAt.check(rig.simulator.injectedDots.count)
                        _ = rig.lines.press(line: "pedal")
                        DispatchQueue.global().asyncAfter(deadline: .now() + 0.1) { rig.session.requestResume() }
                    }
                }
            }
        }
        XCTAssertEqual(account.outcome, .completed, account.reason ?? "")
        XCTAssertTrue(heldAt.stayedStill, "a dot started while held")
        XCTAssertFalse(rig.simulator.injectedDots.contains { $0.outcome == .interrupted }, "a hold cut a dot short")
        let done = rig.simulator.injectedDots.map(\.dotID)
        XCTAssertEqual(done.count, 80)
        XCTAssertEqual(Set(done).count, 80, "a dot ran twice")
    }

    func testCompletedSessionWhoseNeedlePowerOffFailedExitsNonZeroSaysCutItByHandAndIsAudited() throws {
        var options = SimulatorOptions()
        options.timeScale = 0
        let simulator = try SimulatedApplicator.start(options, logger: logger)
        defer { simulator.stop() }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("smpctl-power-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try RecordStore(path: directory.appendingPathComponent("records.sqlite").path)
        let interlocks = try Interlocks.open(configuration: machine, simulated: true, logger: logger)
        // The relay driver stops answering: the needle power cannot be switched off at the end.
        interlocks.simulator?.failSafeLevelAtClose(output: "needle-power", with: .ioError)
        var sessionOptions = SessionOptions()
        sessionOptions.interlocks = interlocks
        sessionOptions.recording = RecordingOptions(store: store, planPath: "/tmp/p.json", planSHA256: "h",
                                                    operatorName: "tester", machineID: "m")
        let session = Session(plan: plan(30), options: sessionOptions, logger: logger)
        let account = try session.run(devicePath: simulator.devicePath, confirm: { _ in true }, onEvent: { _ in })

        XCTAssertEqual(account.outcome, .completed, "every dot was done: the outcome says so")
        XCTAssertEqual(account.done.count, 30)
        XCTAssertNotNil(account.needlePowerOffFailure, "never a clean end while the needle power may be on")
        let failure = try XCTUnwrap(account.needlePowerOffFailure)
        XCTAssertEqual(failure.output, "needle-power")
        let reason = try XCTUnwrap(account.reason)
        XCTAssertTrue(reason.contains("CUT THE NEEDLE POWER BY HAND"), reason)
        XCTAssertEqual(interlocks.simulator?.value(of: "needle-power"), .active, "the line really is still on")
        let id = try XCTUnwrap(account.sessionID)
        let events = try store.events(session: id)
        let audited = try XCTUnwrap(events.first { $0.kind == "needle-power-off-failed" }, "\(events.map(\.kind))")
        XCTAssertTrue(audited.detail.contains("needle-power"), audited.detail)
        XCTAssertTrue(audited.detail.contains("CUT THE NEEDLE POWER BY HAND"), audited.detail)
        let kinds = events.map(\.kind)
        XCTAssertLessThan(try XCTUnwrap(kinds.firstIndex(of: "needle-power-off-failed")),
                          try XCTUnwrap(kinds.lastIndex(of: "session-ended")), "recorded before the session's end")
    }

    func testArmingIsRefusedWhileAnInputIsUnhealthy() throws {
        var options = SimulatorOptions()
        options.timeScale = 0
        let simulator = try SimulatedApplicator.start(options, logger: logger)
        defer { simulator.stop() }
        let interlocks = try Interlocks.open(configuration: machine, simulated: true,
                                             simulatedInitialLevels: ["estop": .inactive, "pedal": .inactive, "contact": .active],
                                             logger: logger)
        var sessionOptions = SessionOptions()
        sessionOptions.interlocks = interlocks
        let session = Session(plan: plan(10), options: sessionOptions, logger: logger)
        let account = try session.run(devicePath: simulator.devicePath, confirm: { _ in true }, onEvent: { _ in })
        XCTAssertEqual(account.outcome, .declined)
        XCTAssertTrue(account.reason?.contains("pedal") ?? false, account.reason ?? "")
        XCTAssertTrue(simulator.injectedDots.isEmpty)
    }
}

final class CountBox: @unchecked Sendable {
    private let lock = NSLock()
    private var at: Int?
    private var still = true
    func set(_ value: Int) { lock.withLock { at = value } }
    func check(_ value: Int) { lock.withLock { if let at, at != value { still = false } } }
    var stayedStill: Bool { lock.withLock { still && at != nil } }
}
