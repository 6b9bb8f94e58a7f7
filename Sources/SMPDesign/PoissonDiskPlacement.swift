import Foundation

/// Variable-density Poisson-disk placement with a hard minimum distance, around fixed points.
///
/// 1. Candidates: Bridson's algorithm (2007) with a radius that varies with the target density,
///    r = √(0.63 / D) for the cumulative density D after this session (0.63 measured for
///    Bridson's maximal sets, shared/reference/plan-generation.md), drawn at
///    `candidateRadiusFactor` × r so there are more candidates than needed. The earlier sessions'
///    dots go in first as fixed samples, so every candidate keeps its radius from them too, and
///    no radius is ever below the envelope's minimum spacing.
/// 2. Exact counts: weighted sample elimination (Yuksel 2015) removes the most crowded candidate
///    until each 5 mm tile of each region holds its quota (`TileQuotas`), so the density is on
///    target square centimetre by square centimetre, not only over a whole region. Crowding is counted twice, as in multi-class blue
///    noise (Wei 2010): among all dots against the cumulative radius (the skin ends up even) and
///    among this session's own dots against the session's radius (each session is even in
///    itself, not just the gaps of the last). Removing points never brings two closer, so the
///    spacing of step 1 holds, and the counts — hence the densities — come out exact rather
///    than within Bridson's few per cent.
enum PoissonDiskPlacement {
    /// Density × r² of a maximal Bridson set (measured; plan-generation.md).
    static let bridsonDensityConstant = 0.63
    /// Candidates are drawn at this share of the nominal radius: about 1.4 times the dots needed.
    static let candidateRadiusFactor = 0.85
    /// Added to the envelope's spacing so rounding positions to whole micrometres (at most
    /// √2 × 0.5 µm per pair) cannot bring two dots below it.
    static let roundingMarginMillimetres = 0.002
    /// Bridson's k: tries around each sample before it is retired.
    static let attemptsPerSample = 30
    /// Crowding is counted out to this many nominal radii (Yuksel's 2·r_max for a hexagonal
    /// packing at the same density is 1.354 r).
    static let eliminationRadiusFactor = 1.354

    struct Placed {
        var xs: [Double] = []
        var ys: [Double] = []
        var regions: [Int] = []
    }

    /// New dots for each tile's quota in the regions of `field`, around `fixed` points.
    /// `nominalRadius(region, factor)` is r for the cumulative density after this session where
    /// the density is `factor` of the region's; `sessionRadius` the same for this session's share.
    static func place(field: DensityField, fixed: [DesignPoint], quotas: TileQuotas, hardSpacingMillimetres: Double,
                      nominalRadius: (Int, Double) -> Double, sessionRadius: (Int, Double) -> Double,
                      seed: UInt64) -> Placed {
        let minimumRadius = hardSpacingMillimetres + roundingMarginMillimetres
        func candidateRadius(_ region: Int, _ factor: Double) -> Double {
            max(candidateRadiusFactor * nominalRadius(region, factor), minimumRadius)
        }
        // The smallest radius anywhere sets the grid; the largest, how far fixed points matter.
        let smallest = field.regions.indices.map { candidateRadius($0, 1) }.min()!
        let largestFactor = field.hairline == nil ? 1 : HairlineShape.scatteredDensity
        let largest = field.regions.indices.map { eliminationRadiusFactor * sessionRadius($0, largestFactor) }.max()!
        let bounds = field.bounds
        var grid = PointGrid(minimumX: bounds.minimumX - largest, maximumX: bounds.maximumX + largest,
                             minimumY: bounds.minimumY - largest, maximumY: bounds.maximumY + largest, cell: smallest)

        var random = DesignRandom(seed: seed, label: "placement")
        var points = PointSet()
        var active: [Int] = []
        for point in fixed where grid.covers(point.xMillimetres, point.yMillimetres) {
            let spot = field.spot(point.xMillimetres, point.yMillimetres)
            let radius = spot.map { candidateRadius($0.region, $0.factor) } ?? smallest
            let index = points.append(point.xMillimetres, point.yMillimetres, radius: radius, region: -1)
            grid.insert(index, points)
            active.append(index)
        }

        func fits(_ x: Double, _ y: Double, radius: Double) -> Bool {
            grid.noPoint(within: radius, of: x, y, points)
        }
        func grow() {
            while !active.isEmpty {
                let pick = Int(random.next() % UInt64(active.count))
                let from = active[pick]
                let radius = points.radius[from]
                var placed = false
                for _ in 0..<attemptsPerSample {
                    let angle = 2 * Double.pi * random.unit()
                    let distance = radius * (1 + random.unit())
                    let x = onMicrometreGrid(points.xs[from] + distance * cos(angle))
                    let y = onMicrometreGrid(points.ys[from] + distance * sin(angle))
                    guard let spot = field.spot(x, y) else { continue }
                    let own = candidateRadius(spot.region, spot.factor)
                    guard fits(x, y, radius: own) else { continue }
                    let index = points.append(x, y, radius: own, region: spot.region)
                    grid.insert(index, points)
                    active.append(index)
                    placed = true
                    break
                }
                if !placed {
                    active.swapAt(pick, active.count - 1)
                    active.removeLast()
                }
            }
        }
        grow()
        // A sweep for what growth could not reach: a region cut in two by an exclusion, one
        // without earlier dots, gaps Bridson's k tries missed. Each spot found seeds growth again.
        let step = smallest
        var y = bounds.minimumY + step * random.unit()
        while y <= bounds.maximumY {
            var x = bounds.minimumX + step * random.unit()
            while x <= bounds.maximumX {
                let jx = onMicrometreGrid(x + 0.5 * step * random.unit())
                let jy = onMicrometreGrid(y + 0.5 * step * random.unit())
                if let spot = field.spot(jx, jy) {
                    let own = candidateRadius(spot.region, spot.factor)
                    if fits(jx, jy, radius: own) {
                        let index = points.append(jx, jy, radius: own, region: spot.region)
                        grid.insert(index, points)
                        active.append(index)
                        grow()
                    }
                }
                x += step
            }
            y += step
        }

        return eliminate(points, grid: grid, quotas: quotas, field: field, nominalRadius: nominalRadius,
                         sessionRadius: sessionRadius)
    }

    /// Positions are whole micrometres from the start, as the plan will carry them: what is tested
    /// against regions, exclusions and spacing is exactly what is written.
    static func onMicrometreGrid(_ millimetres: Double) -> Double {
        (millimetres * 1000).rounded(.toNearestOrAwayFromZero) / 1000
    }

    /// Weighted sample elimination down to each tile's quota; fixed points count as
    /// neighbours but are never removed.
    private static func eliminate(_ points: PointSet, grid: PointGrid, quotas: TileQuotas, field: DensityField,
                                  nominalRadius: (Int, Double) -> Double,
                                  sessionRadius: (Int, Double) -> Double) -> Placed {
        let count = points.xs.count
        var weight = [Double](repeating: 0, count: count)
        // Who is affected when a point goes: for point j, the candidates i whose crowding counts j.
        var affectedStart = [Int](repeating: 0, count: count + 1)
        var pairs: [(of: Int, by: Int, weight: Double)] = []
        for i in 0..<count where points.region[i] >= 0 {
            let factor = field.hairline?.densityFactor(points.xs[i], points.ys[i]) ?? 1
            let all = eliminationRadiusFactor * nominalRadius(points.region[i], factor)
            let own = eliminationRadiusFactor * sessionRadius(points.region[i], factor)
            grid.forEach(within: max(all, own), of: points.xs[i], points.ys[i], points) { j, distance in
                guard j != i else { return }
                let isNew = points.region[j] >= 0
                var contribution = distance < all ? pow(1 - distance / all, 8) : 0
                if isNew, distance < own { contribution += pow(1 - distance / own, 8) }
                weight[i] += contribution
                if isNew { pairs.append((i, j, contribution)) }
            }
        }
        for pair in pairs { affectedStart[pair.by + 1] += 1 }
        for j in 0..<count { affectedStart[j + 1] += affectedStart[j] }
        var fill = affectedStart
        var affected = [(point: Int, weight: Double)](repeating: (0, 0), count: pairs.count)
        for pair in pairs {
            affected[fill[pair.by]] = (pair.of, pair.weight)
            fill[pair.by] += 1
        }

        // A candidate in a sliver of a tile the area sum never sampled has a quota of 0.
        let targets = quotas.targets + [0]
        var tile = [Int](repeating: -1, count: count)
        var remaining = [Int](repeating: 0, count: targets.count)
        for i in 0..<count where points.region[i] >= 0 {
            tile[i] = quotas.tile(points.xs[i], points.ys[i], region: points.region[i]) ?? quotas.targets.count
            remaining[tile[i]] += 1
        }
        var heap = IndexedMaxHeap(weights: weight, members: (0..<count).filter { points.region[$0] >= 0 })
        var removed = [Bool](repeating: false, count: count)
        while let top = heap.popMax() {
            // A tile at its quota keeps the rest of its candidates.
            guard remaining[tile[top]] > targets[tile[top]] else { continue }
            removed[top] = true
            remaining[tile[top]] -= 1
            for k in affectedStart[top]..<affectedStart[top + 1] {
                let (point, contribution) = affected[k]
                if !removed[point] { heap.decrease(point, by: contribution) }
            }
        }

        var placed = Placed()
        for i in 0..<count where points.region[i] >= 0 && !removed[i] {
            placed.xs.append(points.xs[i])
            placed.ys.append(points.ys[i])
            placed.regions.append(points.region[i])
        }
        return placed
    }
}

/// Points with their radius and region (−1: a fixed point of an earlier session).
struct PointSet {
    var xs: [Double] = []
    var ys: [Double] = []
    var radius: [Double] = []
    var region: [Int] = []

    mutating func append(_ x: Double, _ y: Double, radius: Double, region: Int) -> Int {
        xs.append(x)
        ys.append(y)
        self.radius.append(radius)
        self.region.append(region)
        return xs.count - 1
    }
}

/// A uniform grid of cells over a rectangle, each holding a linked list of the points in it.
struct PointGrid {
    let minimumX, minimumY, cell: Double
    let columns, rows: Int
    private var head: [Int32]
    private var next: [Int32] = []

    init(minimumX: Double, maximumX: Double, minimumY: Double, maximumY: Double, cell: Double) {
        self.minimumX = minimumX
        self.minimumY = minimumY
        self.cell = cell
        columns = max(1, Int(((maximumX - minimumX) / cell).rounded(.up)) + 1)
        rows = max(1, Int(((maximumY - minimumY) / cell).rounded(.up)) + 1)
        head = [Int32](repeating: -1, count: columns * rows)
    }

    func covers(_ x: Double, _ y: Double) -> Bool {
        let column = Int(((x - minimumX) / cell).rounded(.down)), row = Int(((y - minimumY) / cell).rounded(.down))
        return column >= 0 && column < columns && row >= 0 && row < rows
    }

    /// `index` must be the next point of `points` not yet inserted, and inside the grid.
    mutating func insert(_ index: Int, _ points: PointSet) {
        let column = Int(((points.xs[index] - minimumX) / cell).rounded(.down))
        let row = Int(((points.ys[index] - minimumY) / cell).rounded(.down))
        while next.count <= index { next.append(-1) }
        let slot = row * columns + column
        next[index] = head[slot]
        head[slot] = Int32(index)
    }

    /// Calls `body` with every point closer than `reach` to (x, y), and its distance.
    func forEach(within reach: Double, of x: Double, _ y: Double, _ points: PointSet, _ body: (Int, Double) -> Void) {
        _ = visit(within: reach, of: x, y, points) { index, distance in
            body(index, distance)
            return true
        }
    }

    /// True when no point is closer than `reach` to (x, y).
    func noPoint(within reach: Double, of x: Double, _ y: Double, _ points: PointSet) -> Bool {
        visit(within: reach, of: x, y, points) { _, _ in false }
    }

    /// Calls `body` with each point closer than `reach`, and its distance, while it returns true;
    /// false when `body` stopped the visit.
    private func visit(within reach: Double, of x: Double, _ y: Double, _ points: PointSet,
                       _ body: (Int, Double) -> Bool) -> Bool {
        let span = Int((reach / cell).rounded(.up))
        let column = Int(((x - minimumX) / cell).rounded(.down)), row = Int(((y - minimumY) / cell).rounded(.down))
        let reachSquared = reach * reach
        for r in max(0, row - span)...min(rows - 1, row + span) {
            for c in max(0, column - span)...min(columns - 1, column + span) {
                var index = head[r * columns + c]
                while index >= 0 {
                    let i = Int(index)
                    let dx = points.xs[i] - x, dy = points.ys[i] - y
                    let squared = dx * dx + dy * dy
                    if squared < reachSquared, !body(i, squared.squareRoot()) { return false }
                    index = next[i]
                }
            }
        }
        return true
    }
}

/// A binary max-heap of point indices by weight whose weights can only go down; ties go to the
/// lower index, so elimination is the same on every run.
struct IndexedMaxHeap {
    private var weight: [Double]
    private var heap: [Int]
    private var position: [Int]

    init(weights: [Double], members: [Int]) {
        weight = weights
        heap = members
        position = [Int](repeating: -1, count: weights.count)
        for (slot, member) in members.enumerated() { position[member] = slot }
        if heap.count > 1 {
            for slot in stride(from: heap.count / 2 - 1, through: 0, by: -1) { siftDown(slot) }
        }
    }

    private func above(_ a: Int, _ b: Int) -> Bool {
        weight[a] > weight[b] || (weight[a] == weight[b] && a < b)
    }

    mutating func popMax() -> Int? {
        guard let top = heap.first else { return nil }
        let last = heap.removeLast()
        position[top] = -1
        if !heap.isEmpty {
            heap[0] = last
            position[last] = 0
            siftDown(0)
        }
        return top
    }

    mutating func decrease(_ member: Int, by amount: Double) {
        let slot = position[member]
        guard slot >= 0 else { return }
        weight[member] -= amount
        siftDown(slot)
    }

    private mutating func siftDown(_ start: Int) {
        var slot = start
        while true {
            let left = 2 * slot + 1, right = left + 1
            var best = slot
            if left < heap.count, above(heap[left], heap[best]) { best = left }
            if right < heap.count, above(heap[right], heap[best]) { best = right }
            if best == slot { return }
            heap.swapAt(slot, best)
            position[heap[slot]] = slot
            position[heap[best]] = best
            slot = best
        }
    }
}

/// How many dots each 5 mm tile of each region receives: the session's share of the density
/// summed over the tile (hairline ramp included), rounded with the remainder carried from tile
/// to tile so each region's total is its own sum rounded.
struct TileQuotas {
    static let tileMillimetres = 5.0

    private struct Key: Hashable {
        var region: Int
        var column: Int
        var row: Int
    }

    /// Dots per tile, tiles in the order first met (rows upward, each left to right).
    private(set) var targets: [Int] = []
    private(set) var regionOfTile: [Int] = []
    private var tiles: [Key: Int] = [:]

    /// From the expected dots per sampled spot: `add` for each sample, then `finish`.
    private var expected: [Double] = []

    mutating func add(_ x: Double, _ y: Double, region: Int, dots: Double) {
        let key = Self.key(x, y, region)
        if let index = tiles[key] {
            expected[index] += dots
        } else {
            tiles[key] = expected.count
            expected.append(dots)
            regionOfTile.append(region)
        }
    }

    mutating func finish(regions: Int) {
        var carried = [Double](repeating: 0, count: regions), given = [Int](repeating: 0, count: regions)
        targets = expected.indices.map { index in
            let region = regionOfTile[index]
            carried[region] += expected[index]
            let target = Int(carried[region].rounded()) - given[region]
            given[region] += target
            return target
        }
    }

    func tile(_ x: Double, _ y: Double, region: Int) -> Int? {
        tiles[Self.key(x, y, region)]
    }

    func regionTargets(regions: Int) -> [Int] {
        var result = [Int](repeating: 0, count: regions)
        for (index, target) in targets.enumerated() { result[regionOfTile[index]] += target }
        return result
    }

    private static func key(_ x: Double, _ y: Double, _ region: Int) -> Key {
        Key(region: region, column: Int((x / tileMillimetres).rounded(.down)), row: Int((y / tileMillimetres).rounded(.down)))
    }
}
