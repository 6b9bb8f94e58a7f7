@testable import SessionRunner
import SMPPlan
import XCTest

/// `SpacingLedger` (chained entries over a dense grid or a dictionary) answers exactly what the
/// dictionary of arrays it replaced answered: the same conflicting dot — the first inserted of
/// the first cell in the order the 3 × 3 neighbourhood is scanned — and the same distance.
final class SpacingLedgerTests: XCTestCase {
    /// The replaced implementation, kept here as the reference.
    private struct Reference {
        let minimum: Int32
        let cell: Int64
        var cells: [Int64: [(UInt32, Int32, Int32)]] = [:]
        init(_ minimum: Int32) {
            self.minimum = max(minimum, 0)
            cell = Int64(max(minimum, 1))
        }
        func coordinate(_ value: Int32) -> Int64 {
            let v = Int64(value)
            return v >= 0 ? v / cell : -((-v + cell - 1) / cell)
        }
        func key(_ cx: Int64, _ cy: Int64) -> Int64 {
            Int64(bitPattern: UInt64(UInt32(truncatingIfNeeded: cx)) << 32 | UInt64(UInt32(truncatingIfNeeded: cy)))
        }
        func conflict(_ id: UInt32, _ x: Int32, _ y: Int32) -> (UInt32, Double)? {
            guard minimum > 0 else { return nil }
            let limit = Int64(minimum) * Int64(minimum)
            let cx = coordinate(x), cy = coordinate(y)
            for dx in -1...1 {
                for dy in -1...1 {
                    for (other, ox, oy) in cells[key(cx + Int64(dx), cy + Int64(dy))] ?? [] where other != id {
                        let ex = Int64(ox) - Int64(x), ey = Int64(oy) - Int64(y)
                        if ex * ex + ey * ey < limit { return (other, Double(ex * ex + ey * ey).squareRoot()) }
                    }
                }
            }
            return nil
        }
        mutating func insert(_ id: UInt32, _ x: Int32, _ y: Int32) {
            cells[key(coordinate(x), coordinate(y)), default: []].append((id, x, y))
        }
    }

    func testFindsWhatTheDictionaryOfArraysFound() {
        var generator = SystemRandomNumberGenerator()
        for round in 0..<300 {
            let minimum = [0, 1, 400, 800, 3_000][round % 5]
            let spread: Int32 = [1_000, 10_000, 200_000][round % 3]
            let count = Int.random(in: 0...400, using: &generator)
            let dots = (0..<count).map { index in
                PlanDot(id: UInt32(index + 1), xMicrometres: Int32.random(in: -spread...spread, using: &generator),
                        yMicrometres: Int32.random(in: -spread...spread, using: &generator),
                        depthMicrometres: 600, dwellMicroseconds: 100_000, index: index)
            }
            // Every other round the grid is sized for only some of the dots: the rest are outside it.
            var ledger = SpacingLedger(minimumMicrometres: Int32(minimum),
                                       bounds: round % 2 == 0 ? dots : Array(dots.prefix(count / 3)))
            var reference = Reference(Int32(minimum))
            for dot in dots.shuffled(using: &generator) {
                // Sometimes a point nowhere near the plan, and sometimes the same dot again.
                let far = Int.random(in: 0..<10, using: &generator) == 0
                let x = far ? Int32.random(in: -2_000_000...2_000_000, using: &generator) : dot.xMicrometres
                let y = far ? Int32.random(in: -2_000_000...2_000_000, using: &generator) : dot.yMicrometres
                let id = Int.random(in: 0..<10, using: &generator) == 0 ? UInt32.random(in: 1...UInt32(count), using: &generator) : dot.id
                let expected = reference.conflict(id, x, y)
                let found = ledger.conflict(dotID: id, x: x, y: y)
                XCTAssertEqual(found?.dotID, expected?.0, "round \(round), dot \(id)")
                XCTAssertEqual(found?.distanceMicrometres, expected?.1, "round \(round), dot \(id)")
                if expected == nil || Bool.random(using: &generator) {
                    ledger.insert(dotID: id, x: x, y: y)
                    reference.insert(id, x, y)
                }
            }
        }
    }

    func testDotsInTheSameCellAreAllCompared() {
        var ledger = SpacingLedger(minimumMicrometres: 1_000, bounds: [])
        ledger.insert(dotID: 1, x: 10, y: 10)
        ledger.insert(dotID: 2, x: 900, y: 900)
        XCTAssertEqual(ledger.conflict(dotID: 3, x: 990, y: 990)?.dotID, 2)
        XCTAssertEqual(ledger.conflict(dotID: 3, x: 300, y: 300)?.dotID, 1, "the first inserted of the cell")
        XCTAssertNil(ledger.conflict(dotID: 1, x: 10, y: 10).flatMap { $0.dotID == 1 ? $0 : nil })
    }
}
