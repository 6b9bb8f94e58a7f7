import SMPInterlocks
import SMPPlan
/// The runner's layer of the minimum-spacing limit: every dot about to be encoded is checked
/// against every dot this session has already sent or proven done — this run's, and the earlier
/// runs' of a resumed session — so a dot can never be sent on top of one already in the skin,
/// even if the plan (layer 1) was edited, decoded wrongly or resumed against the wrong record.
///
/// Cells the size of the spacing (the same grid as `PlanSpacing`): a dot can only conflict with
/// dots in its own cell and the eight around it, so one check is a few comparisons. The same dot
/// sent again (a dot a fence returned, a redo the operator decided) is not its own neighbour.
///
/// Memory (issue 16): the entries are one flat array chained per cell (16 bytes a dot); a cell's
/// chain head is found in a dense array over the plan's bounding box when that has at most 4
/// cells per plan dot (4 bytes a cell), in a dictionary otherwise and for a point outside the
/// box. It was a dictionary of arrays, one allocation per occupied cell: ~20 MB for 200,000 dots.
struct SpacingLedger: Sendable {
    private struct Entry: Sendable {
        var dotID: UInt32
        var x: Int32
        var y: Int32
        /// The entry inserted before this one in the same cell, or -1.
        var previous: Int32
    }
    let minimumMicrometres: Int32
    private let cell: Int64
    private var entries: [Entry] = []
    /// Dense grid: the newest entry of each cell of the box, or -1.
    private var dense: [Int32] = []
    private let originX: Int64, originY: Int64, columns: Int64, rows: Int64
    /// Cells outside the dense grid (or all of them when there is none).
    private var sparse: [Int64: Int32] = [:]

    /// `bounds`: the dots expected (the plan's), to size the grid; any other point still works.
    init(minimumMicrometres: Int32, bounds: [PlanDot] = []) {
        self.minimumMicrometres = max(minimumMicrometres, 0)
        let cell = Int64(max(minimumMicrometres, 1))
        self.cell = cell
        var minX = Int64.max, minY = Int64.max, maxX = Int64.min, maxY = Int64.min
        if minimumMicrometres > 0 {
            for dot in bounds {
                let cx = Self.coordinate(dot.xMicrometres, cell), cy = Self.coordinate(dot.yMicrometres, cell)
                minX = min(minX, cx); maxX = max(maxX, cx)
                minY = min(minY, cy); maxY = max(maxY, cy)
            }
        }
        if minX <= maxX, (maxX - minX + 1) * (maxY - minY + 1) <= 4 * Int64(bounds.count) {
            originX = minX; originY = minY
            columns = maxX - minX + 1; rows = maxY - minY + 1
            dense = Array(repeating: -1, count: Int(columns * rows))
        } else {
            originX = 0; originY = 0; columns = 0; rows = 0
        }
        // Pages reserved and never touched (a session cut short) cost no memory.
        if minimumMicrometres > 0 { entries.reserveCapacity(bounds.count) }
    }

    /// The first recorded dot (in the order inserted, scanning the cells row by row) closer than
    /// the minimum to this one (another id), with the distance.
    func conflict(dotID: UInt32, x: Int32, y: Int32) -> (dotID: UInt32, distanceMicrometres: Double)? {
        guard minimumMicrometres > 0 else { return nil }
        let limit = Int64(minimumMicrometres) * Int64(minimumMicrometres)
        let cx = Self.coordinate(x, cell), cy = Self.coordinate(y, cell)
        for dx in -1...1 {
            for dy in -1...1 {
                // The chain runs newest first: the last match found is the first inserted.
                var found: (UInt32, Int64)?
                var at = head(cx + Int64(dx), cy + Int64(dy))
                while at >= 0 {
                    let entry = entries[Int(at)]
                    if entry.dotID != dotID {
                        let ex = Int64(entry.x) - Int64(x), ey = Int64(entry.y) - Int64(y)
                        let squared = ex * ex + ey * ey
                        if squared < limit { found = (entry.dotID, squared) }
                    }
                    at = entry.previous
                }
                if let (other, squared) = found { return (other, Double(squared).squareRoot()) }
            }
        }
        return nil
    }

    mutating func insert(dotID: UInt32, x: Int32, y: Int32) {
        // Without a minimum nothing is ever compared: nothing to keep.
        guard minimumMicrometres > 0 else { return }
        let cx = Self.coordinate(x, cell), cy = Self.coordinate(y, cell)
        let index = Int32(truncatingIfNeeded: entries.count)
        if let slot = denseSlot(cx, cy) {
            entries.append(Entry(dotID: dotID, x: x, y: y, previous: dense[slot]))
            dense[slot] = index
        } else {
            let key = Self.key(cx, cy)
            entries.append(Entry(dotID: dotID, x: x, y: y, previous: sparse[key] ?? -1))
            sparse[key] = index
        }
    }

    private func head(_ cx: Int64, _ cy: Int64) -> Int32 {
        if let slot = denseSlot(cx, cy) { return dense[slot] }
        return sparse[Self.key(cx, cy)] ?? -1
    }

    private func denseSlot(_ cx: Int64, _ cy: Int64) -> Int? {
        let column = cx - originX, row = cy - originY
        guard column >= 0, column < columns, row >= 0, row < rows else { return nil }
        return Int(row * columns + column)
    }

    private static func coordinate(_ value: Int32, _ cell: Int64) -> Int64 {
        let v = Int64(value)
        return v >= 0 ? v / cell : -((-v + cell - 1) / cell)
    }

    private static func key(_ cx: Int64, _ cy: Int64) -> Int64 {
        Int64(bitPattern: UInt64(UInt32(truncatingIfNeeded: cx)) << 32 | UInt64(UInt32(truncatingIfNeeded: cy)))
    }
}
