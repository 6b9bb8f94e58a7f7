import XCTest
import FirmwareProtocol
@testable import DeviceSim

/// Issue 12, item 15: `estop-at`, `contact-loss-at` and `over-depth-at` fire when their dot is
/// *executed*, not when its DOT frame first arrives (which may be a whole queue earlier).
final class FaultTimingTests: XCTestCase {
    /// Dots 1 mm apart on a grid of 40 columns: every dot is a real, distinct spot.
    static func position(_ id: UInt32) -> (x: Int32, y: Int32) {
        (Int32((id - 1) % 40) * 1_000 - 20_000, Int32((id - 1) / 40) * 1_000)
    }

    /// A host that streams dots 1…count keeping the queue full, until the device stops taking
    /// them (held or latched) or everything is done.
    func stream(_ spec: String, timeScale: Double, count: UInt32 = 60) throws -> Bench {
        let plan = try FaultPlan(spec: spec)
        var bench = Bench {
            spacingOn(&$0)  // distinct spots: the device's own spacing check stays on
            $0.faults = plan
            $0.timeScale = timeScale
        }
        bench.handshakeAndArm()
        var next: UInt32 = 1
        let deadline: UInt64 = 120_000_000
        while bench.now < deadline {
            let status = bench.status
            if status.state == .held || status.state.isLatched { break }
            while next <= count, bench.status.queueDepth < bench.firmware.queueCapacity,
                  bench.status.state == .ready || bench.status.state == .running {
                let (x, y) = Self.position(next)
                bench.dot(UInt8(truncatingIfNeeded: next), id: next, x: x, y: y, dwell: 40_000)
                next += 1
            }
            if next > count && bench.status.queueDepth == 0 && bench.status.needleRetracted { break }
            bench.run(for: 1_000)
        }
        bench.run(for: 1_000_000)  // let any pending stop settle
        return bench
    }

    func assertDone(_ bench: Bench, through last: UInt32, file: StaticString = #filePath, line: UInt = #line) {
        let done = bench.record.filter { $0.outcome == .done }.map(\.dotID)
        XCTAssertEqual(done, Array(1...last), "dots before the faulted one are done, in order", file: file, line: line)
    }

    func checkEstopAt50(timeScale: Double) throws {
        var bench = try stream("estop-at=50", timeScale: timeScale)
        assertDone(bench, through: 49)
        XCTAssertEqual(bench.record.count, 50, "timeScale \(timeScale): nothing after dot 50 entered the skin")
        let cut = bench.record.last
        XCTAssertEqual(cut?.dotID, 50)
        XCTAssertEqual(cut?.outcome, .interrupted)
        XCTAssertEqual(cut?.cause, .shutdown(.estopButton))
        XCTAssertEqual(cut?.dwellDeliveredMicroseconds, 20_000, "cut halfway through its dwell")
        XCTAssertEqual(bench.status.state, .estop)
        XCTAssertEqual(bench.status.fault, .estopButton)
        XCTAssertEqual(bench.status.currentDotID, 50, "STATUS names the cut-short dot")
        XCTAssertTrue(bench.status.needleRetracted)
        XCTAssertTrue(bench.events.contains(.faultInjected(.estop, dotID: 50)))
        // A new host: HELLO does not forget which dot was cut short.
        bench.hello(nonce: 0xBEEF)
        XCTAssertEqual(bench.send(.statusRequest).statuses.last?.currentDotID, 50, "across a HELLO")
        XCTAssertEqual(bench.send(.clear).statuses.last?.currentDotID, 0, "CLEAR forgets it")
    }

    func testEstopAtFiresWhileItsDotIsInTheSkinAtTimeScaleZero() throws {
        try checkEstopAt50(timeScale: 0)
    }

    func testEstopAtFiresWhileItsDotIsInTheSkinAtASmallTimeScale() throws {
        try checkEstopAt50(timeScale: 0.01)
    }

    func checkOverDepthAt50(timeScale: Double) throws {
        let bench = try stream("over-depth-at=50", timeScale: timeScale)
        assertDone(bench, through: 49)
        XCTAssertEqual(bench.record.count, 50)
        XCTAssertEqual(bench.record.last?.dotID, 50)
        XCTAssertEqual(bench.record.last?.outcome, .interrupted)
        XCTAssertEqual(bench.record.last?.cause, .shutdown(.overDepth))
        XCTAssertEqual(bench.record.last?.dwellDeliveredMicroseconds, 20_000)
        XCTAssertEqual(bench.status.state, .fault)
        XCTAssertEqual(bench.status.fault, .overDepth)
        XCTAssertEqual(bench.status.currentDotID, 50)
    }

    func testOverDepthAtFiresWhileItsDotIsInTheSkinAtTimeScaleZero() throws {
        try checkOverDepthAt50(timeScale: 0)
    }

    func testOverDepthAtFiresWhileItsDotIsInTheSkinAtASmallTimeScale() throws {
        try checkOverDepthAt50(timeScale: 0.01)
    }

    func checkContactLossAt50(timeScale: Double) throws {
        let bench = try stream("contact-loss-at=50", timeScale: timeScale)
        assertDone(bench, through: 49)
        XCTAssertEqual(bench.record.count, 49, "dot 50 never entered the skin")
        XCTAssertEqual(bench.status.state, .held)
        XCTAssertEqual(bench.status.fault, .contactLost)
        XCTAssertEqual(bench.status.currentDotID, 0)
        XCTAssertEqual(bench.status.queueDepth, 0, "the queue behind dot 50 is fenced")
        XCTAssertTrue(bench.status.needleRetracted)
        XCTAssertTrue(bench.events.contains(.faultInjected(.contactLoss, dotID: 50)))
    }

    func testContactLossAtFiresAsItsDotsTravelEndsAtTimeScaleZero() throws {
        try checkContactLossAt50(timeScale: 0)
    }

    func testContactLossAtFiresAsItsDotsTravelEndsAtASmallTimeScale() throws {
        try checkContactLossAt50(timeScale: 0.01)
    }
}
