@testable import SMPPlan
import XCTest

/// `PlanSpacing` keeps its cells in a dense array when the points' bounding box is small and in a
/// dictionary otherwise: both must find exactly the pairs a brute-force comparison finds.
final class PlanSpacingGridTests: XCTestCase {
    private func bruteForce(xs: [Int32], ys: [Int32], minimum: Int32) -> [PlanSpacing.Violation] {
        let threshold = minimum > 0 ? Int64(minimum) * Int64(minimum) : 1
        var found: [PlanSpacing.Violation] = []
        for j in xs.indices {
            for i in 0..<j {
                let dx = Int64(xs[i]) - Int64(xs[j]), dy = Int64(ys[i]) - Int64(ys[j])
                guard dx.magnitude < 1 << 30, dy.magnitude < 1 << 30 else { continue }  // far apart; no overflow
                let squared = dx * dx + dy * dy
                if squared < threshold { found.append(.init(first: i, second: j, distanceSquared: squared)) }
            }
        }
        return found
    }

    func testDenseAndSparseGridsFindEveryPair() {
        var generator = SystemRandomNumberGenerator()
        for round in 0..<300 {
            let count = Int.random(in: 2...120, using: &generator)
            // Small boxes take the dense grid; huge ones (up to the ends of Int32) the dictionary.
            let reach: Int32 = [2_000, 20_000, 150_000, Int32.max][round % 4]
            let minimum: Int32 = [0, 1, 600, 5_000][round % 3 + (round % 2)]
            let xs = (0..<count).map { _ in Int32.random(in: -reach...(reach == Int32.max ? reach : reach), using: &generator) }
            let ys = (0..<count).map { _ in Int32.random(in: -reach...reach, using: &generator) }
            // Some repeated points and near neighbours.
            var (px, py) = (xs, ys)
            for index in stride(from: 1, to: count, by: 7) {
                px[index] = px[index - 1] &+ Int32.random(in: -700...700, using: &generator) / 2
                py[index] = py[index - 1]
            }
            let result = PlanSpacing.violations(xs: px, ys: py, minimum: minimum)
            XCTAssertTrue(result.complete)
            XCTAssertEqual(result.violations, bruteForce(xs: px, ys: py, minimum: minimum), "round \(round)")
        }
    }
}
