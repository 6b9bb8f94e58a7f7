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
struct SpacingLedger: Sendable {
    private struct Entry: Sendable {
        var dotID: UInt32
        var x: Int32
        var y: Int32
    }
    let minimumMicrometres: Int32
    private var cells: [Int64: [Entry]] = [:]
    private let cell: Int64

    init(minimumMicrometres: Int32) {
        self.minimumMicrometres = max(minimumMicrometres, 0)
        cell = Int64(max(minimumMicrometres, 1))
    }

    /// The first recorded dot closer than the minimum to this one (another id), with the distance.
    func conflict(dotID: UInt32, x: Int32, y: Int32) -> (dotID: UInt32, distanceMicrometres: Double)? {
        guard minimumMicrometres > 0 else { return nil }
        let limit = Int64(minimumMicrometres) * Int64(minimumMicrometres)
        let cx = coordinate(x), cy = coordinate(y)
        for dx in -1...1 {
            for dy in -1...1 {
                for entry in cells[key(cx + Int64(dx), cy + Int64(dy))] ?? [] where entry.dotID != dotID {
                    let ex = Int64(entry.x) - Int64(x), ey = Int64(entry.y) - Int64(y)
                    let squared = ex * ex + ey * ey
                    if squared < limit { return (entry.dotID, Double(squared).squareRoot()) }
                }
            }
        }
        return nil
    }

    mutating func insert(dotID: UInt32, x: Int32, y: Int32) {
        cells[key(coordinate(x), coordinate(y)), default: []].append(Entry(dotID: dotID, x: x, y: y))
    }

    private func coordinate(_ value: Int32) -> Int64 {
        let v = Int64(value)
        return v >= 0 ? v / cell : -((-v + cell - 1) / cell)
    }

    private func key(_ cx: Int64, _ cy: Int64) -> Int64 {
        Int64(bitPattern: UInt64(UInt32(truncatingIfNeeded: cx)) << 32 | UInt64(UInt32(truncatingIfNeeded: cy)))
    }
}
