import XCTest
@testable import FirmwareCore

/// The firmware's integer physics (FixedPoint) against the floating-point formulas it replaced, so
/// the microcontroller image (no FPU, no soft-float linked) and the simulator keep the behaviour the
/// rest of the suite was written against.
final class FixedPointTests: XCTestCase {
    func testPartsPerMillionReadsTheDoubleExactly() {
        let cases: [(Double, UInt64)] = [
            (1, 1_000_000), (0.02, 20_000), (0.25, 250_000), (2.5, 2_500_000), (3, 3_000_000),
            (0.1, 100_000), (1e-7, 0), (6e-7, 1), (123.456789, 123_456_789),
            (5e-7, 0),  // 4.99999…e-7 exactly: below the half (the Double product rounds to 0.5, then up)
            (0, 0), (-1, 0), (.infinity, 0), (.nan, 0), (-0.0, 0), (.leastNonzeroMagnitude, 0),
        ]
        for (value, expected) in cases {
            XCTAssertEqual(FixedPoint.partsPerMillion(value), expected, "\(value)")
        }
        XCTAssertEqual(FixedPoint.partsPerMillion(1e30), .max, "saturates")
        var rng = SplitMix64(seed: 7)
        for _ in 0..<10_000 {
            let value = Double(rng.nextInt(below: 100_000_000)) / 1_000_000 + rng.nextUnit() * 1e-9
            XCTAssertEqual(FixedPoint.partsPerMillion(value), UInt64((value * 1_000_000).rounded()), "\(value)")
        }
    }

    func testScaleMatchesTheFloatingPointRoundingForExactFactors() {
        var rng = SplitMix64(seed: 11)
        for ppm: UInt64 in [0, 20_000, 250_000, 1_000_000, 2_000_000, 2_500_000, 3_000_000] {
            let factor = Double(ppm) / 1_000_000
            for _ in 0..<2_000 {
                let value = UInt64(rng.nextInt(below: 1 << 40))
                XCTAssertEqual(FixedPoint.scale(value, partsPerMillion: ppm, roundingUp: false),
                               UInt64((Double(value) * factor).rounded()), "\(value) × \(factor)")
                XCTAssertEqual(FixedPoint.scale(value, partsPerMillion: ppm, roundingUp: true),
                               UInt64((Double(value) * factor).rounded(.up)), "\(value) × \(factor) ↑")
            }
        }
    }

    func testTravelTimeIsTheExactCeilingAndMatchesTheFloatingPointFormula() {
        var rng = SplitMix64(seed: 3)
        for _ in 0..<20_000 {
            let from = (Int32(rng.nextInt(below: 300_001)) - 150_000, Int32(rng.nextInt(below: 300_001)) - 150_000)
            let to = (Int32(rng.nextInt(below: 300_001)) - 150_000, Int32(rng.nextInt(below: 300_001)) - 150_000)
            let speed = UInt32(1 + rng.nextInt(below: 200_000))
            let dx = Double(Int64(to.0) - Int64(from.0)), dy = Double(Int64(to.1) - Int64(from.1))
            let floating = UInt64(((dx * dx + dy * dy).squareRoot() * 1_000_000 / Double(speed)).rounded(.up))
            XCTAssertEqual(Firmware.travelDuration(fromX: from.0, fromY: from.1, toX: to.0, toY: to.1, speed: speed),
                           floating, "\(from) → \(to) at \(speed) µm/s")
        }
        // Exact cases: a 3-4-5 triangle, no move, a zero speed.
        XCTAssertEqual(Firmware.travelDuration(fromX: 0, fromY: 0, toX: 30_000, toY: 40_000, speed: 50_000), 1_000_000)
        XCTAssertEqual(Firmware.travelDuration(fromX: 5, fromY: 5, toX: 5, toY: 5, speed: 50_000), 0)
        XCTAssertEqual(Firmware.travelDuration(fromX: 0, fromY: 0, toX: 1, toY: 0, speed: 0), 0)
        // The largest moves the wire allows (Int32 corners) do not trap.
        _ = Firmware.travelDuration(fromX: .min, fromY: .min, toX: .max, toY: .max, speed: 1)
    }

    func testSquareRootAndFractions() {
        var rng = SplitMix64(seed: 5)
        for _ in 0..<20_000 {
            let value = rng.next() >> UInt64(rng.nextInt(below: 64))
            let root = FixedPoint.squareRoot(value)
            XCTAssertLessThanOrEqual(root.multipliedFullWidth(by: root).low, value)
            let next = (root + 1).multipliedReportingOverflow(by: root + 1)
            XCTAssertTrue(next.overflow || next.partialValue > value, "\(value)")
        }
        XCTAssertEqual(FixedPoint.squareRoot(.max), UInt64(UInt32.max))
        for _ in 0..<20_000 {
            let whole = UInt64(rng.nextInt(below: 100_000_000)), total = UInt64(1 + rng.nextInt(below: 10_000_000))
            let part = UInt64(rng.nextInt(below: Int(total) + 1))
            XCTAssertEqual(FixedPoint.fraction(whole, times: part, over: total),
                           UInt64(Double(whole) * Double(part) / Double(total)), "\(whole) × \(part) / \(total)")
            let delta = Int64(rng.nextInt(below: 600_001)) - 300_000
            XCTAssertEqual(FixedPoint.along(delta, part, over: total),
                           Int64((Double(delta) * (Double(part) / Double(total))).rounded()), "\(delta) × \(part) / \(total)")
        }
    }
}
