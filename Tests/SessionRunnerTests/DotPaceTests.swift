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

/// The dot-rate limit (firmware-protocol.md §6.10) end to end over a pseudo-terminal: the runner
/// has the pace confirmed before arming, refuses a device that cannot be paced when physics does
/// not keep the plan slow enough, and stops a device that breaks the pace it confirmed.
final class DotPaceTests: XCTestCase {
    var logger: Logger { Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }) }

    /// Dots 1 mm apart on a line, 20 ms dwell: with the simulator's 15 ms descend and retract and
    /// 50 mm/s travel, physics runs one every 70 ms — faster than 12 dots/s (83.3 ms).
    func quickPlan(count: Int) -> Plan {
        let dots = (0..<count).map { index in
            PlanDot(id: UInt32(index + 1), xMicrometres: Int32(index) * 1000 - 50_000, yMicrometres: 0,
                    depthMicrometres: 800, dwellMicroseconds: 20_000, region: nil, index: index)
        }
        return Plan(planID: "quick-\(count)", dots: dots, client: nil, session: nil, sourcePath: nil, sha256: nil)
    }

    func simulator(_ configure: (inout SimulatorOptions) -> Void = { _ in }) throws -> SimulatedApplicator {
        var options = SimulatorOptions()
        options.timeScale = 0
        configure(&options)
        return try SimulatedApplicator.start(options, logger: logger)
    }

    func session(_ plan: Plan, dotsPerSecond: Double) -> Session {
        var options = SessionOptions()
        options.envelope.maximumDotsPerSecond = dotsPerSecond
        return Session(plan: plan, options: options, logger: logger)
    }

    func skinEntryIntervals(_ simulator: SimulatedApplicator) -> [UInt64] {
        let entries = simulator.injectedDots.map(\.skinEntrySimulatedMicroseconds)
        return zip(entries.dropFirst(), entries).map { $0 - $1 }
    }

    func testTheEnvelopesRateIsSentAsPaceAndTheDeviceKeepsIt() throws {
        let simulator = try self.simulator()
        defer { simulator.stop() }
        let plan = quickPlan(count: 40)
        let preflight = PreflightBox()
        let account = try session(plan, dotsPerSecond: 12).run(
            devicePath: simulator.devicePath, confirm: { preflight.set($0); return true }, onEvent: { _ in })
        XCTAssertEqual(account.outcome, .completed, account.reason ?? "")
        XCTAssertEqual(simulator.injectedDots.map(\.dotID), plan.dots.map(\.id))
        let intervals = skinEntryIntervals(simulator)
        XCTAssertEqual(intervals.min(), 84_000, "12 dots/s is 83.3 ms, sent as PACE 84 ms; physics alone would give 70 ms")
        XCTAssertEqual(simulator.status.paceMilliseconds, 84)
        // The estimate counts the pace, not the faster physics: the first dot travels 50 mm from
        // the centre (1 s) and takes 50 ms, each later one the 83.334 ms interval.
        XCTAssertEqual(preflight.value?.estimatedDurationSeconds ?? 0, 1.05 + 39 * 0.083_334, accuracy: 0.001)
    }

    func testAFirmwareThatStopsPacingIsStoppedByTheRunner() throws {
        let simulator = try self.simulator { $0.faults = try! FaultPlan(spec: "ignore-pace-at=20") }
        defer { simulator.stop() }
        let plan = quickPlan(count: 60)
        let account = try session(plan, dotsPerSecond: 12).run(
            devicePath: simulator.devicePath, confirm: { _ in true }, onEvent: { _ in })
        XCTAssertEqual(account.outcome, .stopped, account.reason ?? "")
        XCTAssertTrue(account.reason?.contains("faster than the envelope allows") ?? false, account.reason ?? "")
        XCTAssertTrue(simulator.status.state.isLatched, "the device is left latched: \(simulator.status.state)")
        let done = simulator.injectedDots.filter { $0.outcome == .done }.map(\.dotID)
        XCTAssertEqual(done.count, Set(done).count, "a dot was injected twice")
        XCTAssertEqual(Set(account.done).subtracting(done), [], "the host counted a dot the device did not do")
        XCTAssertLessThan(done.count, plan.dots.count, "stopped before the end")
        XCTAssertTrue(skinEntryIntervals(simulator).contains(70_000), "the firmware really ran unpaced")
    }

    /// A device that cannot be paced (protocol 1.0: no capability, no minimum of its own) whose
    /// physics would run this plan faster than the envelope allows: refused, nothing armed.
    func testADeviceThatCannotBePacedIsRefusedWhenPhysicsIsTooFast() throws {
        let simulator = try self.simulator { options in
            options.capabilities.remove(.pace)
            options.minimumDotIntervalMicroseconds = 0
        }
        defer { simulator.stop() }
        let account = try session(quickPlan(count: 10), dotsPerSecond: 12).run(
            devicePath: simulator.devicePath, confirm: { _ in true }, onEvent: { _ in })
        XCTAssertEqual(account.outcome, .refusedPlan)
        XCTAssertEqual(account.outcome, .refusedPlan)
        XCTAssertTrue(account.reason?.contains("cannot be paced") ?? false, account.reason ?? "")
        XCTAssertTrue(account.reason?.contains("dots[1] (id 2) could enter the skin 70 ms after dots[0] (id 1)") ?? false,
                      account.reason ?? "")
        XCTAssertTrue(simulator.injectedDots.isEmpty)
        XCTAssertEqual(simulator.status.paceMilliseconds, 0, "no PACE sent to a device without the capability")
    }

    /// The same device where physics keeps the plan within the limit (20 dots/s = 50 ms < 70 ms).
    func testADeviceThatCannotBePacedRunsWhenPhysicsKeepsTheRate() throws {
        let simulator = try self.simulator { options in
            options.capabilities.remove(.pace)
            options.minimumDotIntervalMicroseconds = 0
        }
        defer { simulator.stop() }
        let plan = quickPlan(count: 20)
        let account = try session(plan, dotsPerSecond: 20).run(
            devicePath: simulator.devicePath, confirm: { _ in true }, onEvent: { _ in })
        XCTAssertEqual(account.outcome, .completed, account.reason ?? "")
        XCTAssertEqual(skinEntryIntervals(simulator).min(), 70_000)
    }

    /// An envelope built in code (not through the loader) with a rate PACE cannot carry: the
    /// session ends before anything is armed, and the device never sees a clamped pace.
    func testASessionWhoseRateCannotBeSentAsPaceArmsNothing() throws {
        let simulator = try simulator()
        defer { simulator.stop() }
        let account = try session(quickPlan(count: 3), dotsPerSecond: 0.01).run(
            devicePath: simulator.devicePath, confirm: { _ in true }, onEvent: { _ in })
        XCTAssertNotEqual(account.outcome, .completed)
        XCTAssertTrue(account.reason?.contains("65.535") == true, account.reason ?? "no reason")
        XCTAssertTrue(simulator.injectedDots.isEmpty, "a dot was injected")
        XCTAssertEqual(simulator.status.paceMilliseconds, 0, "a pace was sent")
    }

    // MARK: Arithmetic

    func testIntervalsFromRates() throws {
        var envelope = SafetyEnvelope.builtIn
        XCTAssertEqual(try DotPace.minimumIntervalMicroseconds(envelope), 50_000)
        XCTAssertEqual(try DotPace.paceMilliseconds(envelope), 50)
        envelope.maximumDotsPerSecond = 12
        XCTAssertEqual(try DotPace.minimumIntervalMicroseconds(envelope), 83_334, "rounded up: never faster")
        XCTAssertEqual(try DotPace.paceMilliseconds(envelope), 84)
        envelope.maximumDotsPerSecond = .nan
        XCTAssertThrowsError(try DotPace.paceMilliseconds(envelope), "no usable rate: refused, not the slowest pace")
    }

    /// The second line behind the loader: a rate whose interval PACE (u16 ms) cannot carry, or
    /// that is no positive finite number, is refused by the conversion — never clamped to a
    /// faster pace, never a trap.
    func testARateBeyondWhatPACECanCarryIsRefusedNotClamped() {
        var envelope = SafetyEnvelope.builtIn
        for rate in [0.01, 1e-15, 1e-300, 0, -1, .nan, .infinity, -.infinity, 0.015259021896696420] {
            envelope.maximumDotsPerSecond = rate
            XCTAssertThrowsError(try DotPace.paceMilliseconds(envelope), "\(rate) dots/s")
            XCTAssertThrowsError(try DotPace.minimumIntervalMicroseconds(envelope), "\(rate) dots/s")
        }
        envelope.maximumDotsPerSecond = 1000 / 65_535  // one dot per 65.535 s: the longest pace there is
        XCTAssertEqual(try DotPace.paceMilliseconds(envelope), 65_535)
        XCTAssertEqual(try DotPace.minimumIntervalMicroseconds(envelope), 65_535_000)
    }

    func testPhysicalIntervalIsDescendDwellRetractAndTravel() {
        let plan = quickPlan(count: 2)
        XCTAssertEqual(DotPace.physicalIntervalMicroseconds(from: plan.dots[0], to: plan.dots[1], limits: .simulatorDefault),
                       15_000 + 20_000 + 15_000 + 20_000)
        XCTAssertNil(DotPace.firstPairTooFast(plan.dots, limits: .simulatorDefault, minimumIntervalMicroseconds: 70_000))
        XCTAssertEqual(DotPace.firstPairTooFast(plan.dots, limits: .simulatorDefault, minimumIntervalMicroseconds: 70_001)?
                        .intervalMicroseconds, 70_000)
    }

    func testTheMonitorJudgesSkinEntriesFromCompletionTimesAndDwells() {
        var monitor = DotPace.Monitor(minimumIntervalMicroseconds: 50_000)
        // Completion = entry + 30 ms (descend, retract) + dwell. Entries at 0, 50, 100 ms with
        // different dwells: all in order.
        XCTAssertNil(monitor.completed(dotID: 1, dwellMicroseconds: 20_000, deviceTimeMicroseconds: 50_000))
        XCTAssertNil(monitor.completed(dotID: 2, dwellMicroseconds: 100_000, deviceTimeMicroseconds: 180_000))
        XCTAssertNil(monitor.completed(dotID: 3, dwellMicroseconds: 20_000, deviceTimeMicroseconds: 150_000 + 999),
                     "within the 1 ms allowance")
        // Entry 40 ms after the previous one (dot 3's entry is 100.999 ms): too fast.
        let violation = monitor.completed(dotID: 4, dwellMicroseconds: 20_000, deviceTimeMicroseconds: 190_999)
        XCTAssertEqual(violation?.earlierDotID, 3)
        XCTAssertEqual(violation?.laterDotID, 4)
        XCTAssertEqual(violation?.intervalMicroseconds, 40_000)
        // A completion without a time (its DOT_DONE lost) leaves the next pair unjudged.
        XCTAssertNil(monitor.completed(dotID: 5, dwellMicroseconds: 20_000, deviceTimeMicroseconds: 0))
        XCTAssertNil(monitor.completed(dotID: 6, dwellMicroseconds: 20_000, deviceTimeMicroseconds: 191_000))
        XCTAssertNotNil(monitor.completed(dotID: 7, dwellMicroseconds: 20_000, deviceTimeMicroseconds: 200_000))
    }
}

final class PreflightBox: @unchecked Sendable {  // `stored` guarded by `lock`
    private let lock = NSLock()
    private var stored: Preflight?
    func set(_ preflight: Preflight) { lock.withLock { stored = preflight } }
    var value: Preflight? { lock.withLock { stored } }
}
