/// Finds pairs of points closer than a minimum spacing with a spatial hash grid: cells the size of
/// the spacing, so a point can only conflict with points in its own cell and the eight around it.
/// Each point is compared with the points inserted before it, then inserted; every pair is seen once.
///
/// In a plan that passes, a cell holds at most 3 points (4 points pairwise ≥ s apart need the
/// corners of an s×s square, and a cell is half-open), so the work is at most 27 comparisons per
/// point: O(n). A budget stops pathological inputs (thousands of dots on one spot) from going
/// quadratic; running out of budget is reported and treated as an error by callers.
package enum PlanSpacing {
    package struct Violation: Sendable, Hashable {
        /// Indices into the input arrays, `first < second`.
        package let first: Int
        package let second: Int
        /// Squared distance in µm².
        package let distanceSquared: Int64
    }

    package struct Result: Sendable {
        /// Violations in order of `second`, then `first`; at most `limit` of them.
        package var violations: [Violation] = []
        /// All violations found, including those beyond `limit`.
        package var total = 0
        /// False when the comparison budget ran out before every point was checked.
        package var complete = true
    }

    /// Pairs of points closer than `minimum` (exactly `minimum` apart is fine). With `minimum` ≤ 0
    /// only points at the very same spot are reported.
    package static func violations(xs: [Int32], ys: [Int32], minimum: Int32, limit: Int = .max,
                           budget: Int? = nil) -> Result {
        precondition(xs.count == ys.count, "one x per y")
        let count = xs.count
        var result = Result()
        guard count > 1 else { return result }

        let spacing = Int64(max(minimum, 0))
        let cell = max(spacing, 1)
        // Closer than the spacing; same spot always (spacing 0 leaves only that).
        let threshold = spacing > 0 ? spacing * spacing : 1
        var comparisonsLeft = budget ?? (64 * count + 1_000_000)

        // head[cell] = last point inserted in that cell; next[i] = the point inserted before i there.
        var head: [Int64: Int32] = [:]
        head.reserveCapacity(count)
        var next = [Int32](repeating: -1, count: count)
        var found: [Violation] = []

        func cellCoordinate(_ value: Int32) -> Int32 {
            // Floor division; |result| ≤ |value| so it fits in Int32.
            let v = Int64(value)
            return Int32(v >= 0 ? v / cell : -((-v + cell - 1) / cell))
        }
        func key(_ cx: Int32, _ cy: Int32) -> Int64 {
            Int64(bitPattern: UInt64(UInt32(bitPattern: cx)) << 32 | UInt64(UInt32(bitPattern: cy)))
        }

        for j in 0..<count {
            let x = Int64(xs[j]), y = Int64(ys[j])
            let cx = cellCoordinate(xs[j]), cy = cellCoordinate(ys[j])
            found.removeAll(keepingCapacity: true)
            // Own cell first: in a dense cluster that is where the conflicts are.
            for (dx, dy) in neighbourOffsets {
                // Wrapping at the edges of Int32 only adds candidates; the distance test is exact.
                var i = head[key(cx &+ dx, cy &+ dy)] ?? -1
                while i >= 0 {
                    comparisonsLeft -= 1
                    if comparisonsLeft < 0 {
                        result.complete = false
                        return result
                    }
                    let ddx = (x - Int64(xs[Int(i)])).magnitude, ddy = (y - Int64(ys[Int(i)])).magnitude
                    // Squares stay far inside Int64 once both legs are below the cell size.
                    if ddx < UInt64(cell), ddy < UInt64(cell) {
                        let squared = Int64(ddx * ddx + ddy * ddy)
                        if squared < threshold {
                            found.append(Violation(first: Int(i), second: j, distanceSquared: squared))
                        }
                    }
                    i = next[Int(i)]
                }
            }
            if !found.isEmpty {
                result.total += found.count
                found.sort { $0.first < $1.first }
                for violation in found where result.violations.count < limit {
                    result.violations.append(violation)
                }
            }
            let own = key(cx, cy)
            next[j] = head[own] ?? -1
            head[own] = Int32(j)
        }
        return result
    }

    private static let neighbourOffsets: [(Int32, Int32)] = [
        (0, 0), (-1, -1), (0, -1), (1, -1), (-1, 0), (1, 0), (-1, 1), (0, 1), (1, 1),
    ]

    /// Distance in whole micrometres (rounded) for messages.
    package static func distanceMicrometres(_ squared: Int64) -> Int64 {
        Int64(Double(squared).squareRoot().rounded())
    }
}
