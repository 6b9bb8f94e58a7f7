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

        func cellCoordinate(_ value: Int32) -> Int32 {
            // Floor division; |result| ≤ |value| so it fits in Int32.
            let v = Int64(value)
            return Int32(v >= 0 ? v / cell : -((-v + cell - 1) / cell))
        }

        // head[cell] = last point inserted in that cell; next[i] = the point inserted before i there.
        // The cells are a dense array over the points' bounding box (with a border of one cell, so
        // no neighbour falls outside) when that is at most a few cells per point, as in every
        // real plan; else a dictionary. Both visit the same points in the same order.
        var next = [Int32](repeating: -1, count: count)
        var found: [Violation] = []
        var (lowX, lowY, highX, highY) = (Int32.max, Int32.max, Int32.min, Int32.min)
        for index in 0..<count {
            let cx = cellCoordinate(xs[index]), cy = cellCoordinate(ys[index])
            (lowX, highX) = (min(lowX, cx), max(highX, cx))
            (lowY, highY) = (min(lowY, cy), max(highY, cy))
        }
        let (originX, originY) = (Int64(lowX), Int64(lowY))
        let width = Int64(highX) - originX + 3, height = Int64(highY) - originY + 3
        let (cells, overflow) = width.multipliedReportingOverflow(by: height)
        let dense = !overflow && cells <= Int64(max(4 * count, 1 << 16))
        var denseHead = [Int32](repeating: -1, count: dense ? Int(cells) : 0)
        var head: [Int64: Int32] = [:]
        if !dense { head.reserveCapacity(count) }
        func denseKey(_ cx: Int64, _ cy: Int64) -> Int {
            Int((cy - originY + 1) * width + (cx - originX + 1))
        }
        func key(_ cx: Int32, _ cy: Int32) -> Int64 {
            Int64(bitPattern: UInt64(UInt32(bitPattern: cx)) << 32 | UInt64(UInt32(bitPattern: cy)))
        }
        func first(_ key: Int64) -> Int32 { head[key] ?? -1 }

        for j in 0..<count {
            let x = Int64(xs[j]), y = Int64(ys[j])
            let cx = cellCoordinate(xs[j]), cy = cellCoordinate(ys[j])
            found.removeAll(keepingCapacity: true)
            // Own cell first: in a dense cluster that is where the conflicts are.
            for (dx, dy) in neighbourOffsets {
                // Wrapping at the edges of Int32 only adds candidates; the distance test is exact.
                // (In the dense grid no point is within a cell of those edges' wrap: the border.)
                var i = dense ? denseHead[denseKey(Int64(cx) + Int64(dx), Int64(cy) + Int64(dy))]
                    : first(key(cx &+ dx, cy &+ dy))
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
            if dense {
                let own = denseKey(Int64(cx), Int64(cy))
                next[j] = denseHead[own]
                denseHead[own] = Int32(j)
            } else {
                let own = key(cx, cy)
                next[j] = head[own] ?? -1
                head[own] = Int32(j)
            }
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
