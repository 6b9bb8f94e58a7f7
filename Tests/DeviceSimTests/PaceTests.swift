import XCTest
import FirmwareProtocol
@testable import DeviceSim

/// The device's side of the dot-rate limit (firmware-protocol.md §6.10): no skin entry sooner
/// than the interval in force after the previous one, whatever the host sends.
final class PaceTests: XCTestCase {
    /// A device whose physics alone would run a dot every 22 ms (1 ms descend and retract, 20 ms
    /// dwell, no travel): only the pace keeps the dots apart.
    func quickBench(_ configure: (inout FirmwareConfiguration) -> Void = { _ in }) -> Bench {
        var bench = Bench { configuration in
            var limits = DeviceLimits.simulatorDefault
            limits.descendMicroseconds = 1_000
            limits.retractMicroseconds = 1_000
            configuration.limits = limits
            configure(&configuration)
        }
        bench.handshakeAndArm()
        return bench
    }

    /// Sends `count` dots at the same spot, 20 ms dwell, and runs until they are done.
    func runDots(_ bench: inout Bench, count: UInt32, firstSeq: UInt8 = 1, firstID: UInt32 = 1) {
        for index in 0..<count {
            bench.dot(firstSeq &+ UInt8(index), id: firstID + index, dwell: 20_000)
        }
        bench.runUntilIdle()
    }

    func skinEntryIntervals(_ bench: Bench) -> [UInt64] {
        let entries = bench.record.filter { $0.outcome == .done }.map(\.skinEntrySimulatedMicroseconds)
        return zip(entries.dropFirst(), entries).map { $0 - $1 }
    }

    func testWithoutPaceTheDevicesOwnMinimumKeepsDotsApart() {
        var bench = quickBench()
        runDots(&bench, count: 6)
        XCTAssertEqual(bench.record.count, 6)
        XCTAssertEqual(skinEntryIntervals(bench), Array(repeating: 50_000, count: 5),
                       "the device's own 50 ms minimum, although physics allows 22 ms")
        XCTAssertEqual(bench.send(.statusRequest).statuses.last?.paceMilliseconds, 0, "no PACE yet: reported 0")
    }

    func testPaceLengthensTheIntervalAndStatusShowsIt() {
        var bench = quickBench()
        XCTAssertEqual(bench.send(.pace(minimumIntervalMilliseconds: 84)).statuses.last?.paceMilliseconds, 84)
        runDots(&bench, count: 6)
        XCTAssertEqual(skinEntryIntervals(bench), Array(repeating: 84_000, count: 5))
    }

    func testPaceShorterThanTheDevicesOwnMinimumCannotShortenIt() {
        var bench = quickBench()
        XCTAssertEqual(bench.send(.pace(minimumIntervalMilliseconds: 10)).statuses.last?.paceMilliseconds, 50,
                       "STATUS shows the interval in force, not the one asked for")
        runDots(&bench, count: 4)
        XCTAssertEqual(skinEntryIntervals(bench), Array(repeating: 50_000, count: 3))
    }

    func testHelloForgetsThePaceButNotTheDevicesOwnMinimum() {
        var bench = quickBench()
        bench.send(.pace(minimumIntervalMilliseconds: 120))
        bench.hello()
        bench.send(.arm)
        XCTAssertEqual(bench.send(.statusRequest).statuses.last?.paceMilliseconds, 0)
        runDots(&bench, count: 3)
        XCTAssertEqual(skinEntryIntervals(bench), [50_000, 50_000])
    }

    /// A hold and an immediate resume do not reset the clock: the next dot still waits.
    func testThePaceHoldsAcrossAHoldAndResume() {
        var bench = quickBench()
        bench.send(.pace(minimumIntervalMilliseconds: 200))
        bench.dot(1, id: 1, dwell: 20_000)
        bench.runUntilIdle()
        bench.send(.hold(epoch: 1))
        bench.runUntilIdle()
        bench.send(.resume(epoch: 1, nextSeq: 2))
        bench.dot(2, id: 2, epoch: 1, dwell: 20_000)
        bench.runUntilIdle()
        XCTAssertEqual(bench.record.map(\.dotID), [1, 2])
        XCTAssertGreaterThanOrEqual(skinEntryIntervals(bench).first ?? 0, 200_000)
    }

    /// A dot waiting for its pace has not started: stopped then, it leaves nothing in the skin.
    func testADotStoppedWhileWaitingForItsPaceWasNeverStarted() {
        var bench = quickBench()
        bench.send(.pace(minimumIntervalMilliseconds: 1_000))
        bench.dot(1, id: 1, dwell: 20_000)
        bench.dot(2, id: 2, dwell: 20_000)
        bench.run(for: 100_000)  // dot 1 done at ~22 ms; dot 2 waits until 1 s
        XCTAssertEqual(bench.record.map(\.dotID), [1])
        XCTAssertTrue(bench.status.needleRetracted, "waiting at standoff")
        bench.send(.abort(epoch: 1))
        bench.runUntilIdle()
        XCTAssertEqual(bench.record.map(\.dotID), [1], "dot 2 never entered the skin")
        XCTAssertEqual(bench.send(.statusRequest).statuses.last?.state, .held)
    }

    /// The fault the host's check exists for: a firmware that stops pacing.
    func testIgnorePaceFaultLetsDotsRunAtThePaceOfPhysics() throws {
        var bench = quickBench { $0.faults = try! FaultPlan(spec: "ignore-pace-at=3") }
        bench.send(.pace(minimumIntervalMilliseconds: 84))
        runDots(&bench, count: 2)
        runDots(&bench, count: 4, firstSeq: 3, firstID: 3)
        XCTAssertEqual(bench.events.filter { if case .faultInjected(.ignorePace, 3) = $0 { true } else { false } }.count, 1)
        let intervals = skinEntryIntervals(bench)
        XCTAssertEqual(intervals.first, 84_000, "paced until dot 3 arrived")
        XCTAssertEqual(intervals.suffix(3), [22_000, 22_000, 22_000], "unpaced afterwards: \(intervals)")
    }
}
