import Foundation
import SMPPlan

/// The dots of an earlier session of the course, which the new session's dots keep the minimum
/// spacing from: its planned dots, or what the records prove may be in the skin.
public struct EarlierSession: Sendable {
    /// What it was, for the plan's `design.after`.
    public var source: PlanDesignSource
    public var xMicrometres: [Int32]
    public var yMicrometres: [Int32]

    public init(source: PlanDesignSource, xMicrometres: [Int32], yMicrometres: [Int32]) {
        precondition(xMicrometres.count == yMicrometres.count, "one x per y")
        self.source = source
        self.xMicrometres = xMicrometres
        self.yMicrometres = yMicrometres
    }
}

/// What one session placed in one region, for the technician.
public struct DesignedRegion: Sendable, Hashable {
    public let name: String
    /// The region's area less its exclusions, cm².
    public let areaSquareCentimetres: Double
    /// Dots this session placed in it, and the count its share asked for.
    public let dotCount: Int
    public let targetDotCount: Int
    /// Earlier sessions' dots inside it.
    public let earlierDotCount: Int
    /// The final density the course aims at, dots per cm².
    public let finalDensityPerSquareCentimetre: Double

    /// This session's dots per cm².
    public var densityPerSquareCentimetre: Double { Double(dotCount) / areaSquareCentimetres }
    /// All dots so far per cm², earlier sessions included.
    public var cumulativeDensityPerSquareCentimetre: Double {
        Double(dotCount + earlierDotCount) / areaSquareCentimetres
    }
}

/// One session designed: the plan and what it achieves.
public struct DesignedSession: Sendable {
    /// The plan, dots in running order; ids are `session × 1,000,000 + n`.
    public let plan: Plan
    public let defaultDepthMicrometres: Int32
    public let defaultDwellMicroseconds: Int32
    public let regions: [DesignedRegion]
    /// The closest two dots, this session's among themselves and to earlier ones, µm; nil with
    /// fewer than two dots.
    public let minimumSpacingMicrometres: Int64?
    /// Needle travel from the first dot to the last in running order, mm.
    public let travelMillimetres: Double
    /// Lower bound of the session's time at the envelope's dot rate, each dot at least its
    /// dwell; travel and needle strokes add to it on a real applicator.
    public let estimatedSeconds: Double
}

/// Why a session could not be designed.
public enum DesignError: Error, Sendable, Hashable, CustomStringConvertible {
    /// `--session` outside the course.
    case sessionOutOfRange(session: Int, sessions: Int)
    /// More dots than the ids of one session can number.
    case tooManyDots(Int)
    /// The placement broke the spacing after rounding. Cannot happen; refused rather than written.
    case spacingBroken(String)

    public var description: String {
        switch self {
        case .sessionOutOfRange(let session, let sessions):
            "session \(session) is not in the course: the design has sessions 1 to \(sessions)"
        case .tooManyDots(let count):
            "the session would have \(count) dots; one session holds at most \(CourseDesigner.maximumDotsPerSession)"
        case .spacingBroken(let detail):
            "internal error, nothing written: the placement broke the minimum spacing (\(detail))"
        }
    }
}

/// Designs the plan of one session of a course.
public enum CourseDesigner {
    /// Ids are `session × 1,000,000 + n`, so a dot's id says its session.
    public static let maximumDotsPerSession = 999_999
    /// Cells of the numerical area integral, mm.
    static let integrationStepMillimetres = 0.25

    /// The plan for session `session` (1-based) of `design`, its dots at least the envelope's
    /// minimum spacing from each other and from every dot of `earlier`. The same arguments give
    /// the same plan.
    public static func designSession(_ design: Design, session: Int, after earlier: [EarlierSession] = [],
                                     seed: UInt64 = 1, envelope: SafetyEnvelope = .builtIn,
                                     date: PlanDate? = nil) throws(DesignError) -> DesignedSession {
        guard (1...design.course.sessions).contains(session) else {
            throw .sessionOutOfRange(session: session, sessions: design.course.sessions)
        }
        let field = DensityField(design: design, travelXMillimetres: Double(envelope.travelXMicrometres) / 1000,
                                 travelYMillimetres: Double(envelope.travelYMicrometres) / 1000)
        let share = design.course.shares[session - 1]
        let cumulative = design.course.cumulativeShare(through: session)
        let regions = design.regions
        // r = √(0.63 / D) for the density in the skin after this session, per mm².
        let nominalRadius = { (region: Int, factor: Double) -> Double in
            let density = regions[region].densityPerSquareCentimetre / 100 * cumulative * factor
            return (PoissonDiskPlacement.bridsonDensityConstant / density).squareRoot()
        }
        let sessionRadius = { (region: Int, factor: Double) -> Double in
            let density = regions[region].densityPerSquareCentimetre / 100 * share * factor
            return (PoissonDiskPlacement.bridsonDensityConstant / density).squareRoot()
        }

        let (areas, quotas) = integrate(field, share: share)
        let targets = quotas.regionTargets(regions: regions.count)
        let total = targets.reduce(0, +)
        guard total <= maximumDotsPerSession else { throw .tooManyDots(total) }

        var fixed: [DesignPoint] = []
        for source in earlier {
            for (x, y) in zip(source.xMicrometres, source.yMicrometres) {
                fixed.append(DesignPoint(xMillimetres: Double(x) / 1000, yMillimetres: Double(y) / 1000))
            }
        }
        let spacing = Double(max(envelope.minimumSpacingMicrometres, 0)) / 1000
        let placed = PoissonDiskPlacement.place(field: field, fixed: fixed, quotas: quotas,
                                                hardSpacingMillimetres: spacing, nominalRadius: nominalRadius,
                                                sessionRadius: sessionRadius,
                                                seed: seed ^ (UInt64(session) &* 0x9E37_79B9_7F4A_7C15))

        let order = DotOrder.serpentine(xs: placed.xs, ys: placed.ys, bandMillimetres: bandHeight(placed, areas))
        var dots: [PlanDot] = []
        dots.reserveCapacity(order.count)
        for (index, point) in order.enumerated() {
            let region = regions[placed.regions[point]]
            dots.append(PlanDot(id: UInt32(session * 1_000_000 + index + 1),
                                xMicrometres: micrometres(placed.xs[point]), yMicrometres: micrometres(placed.ys[point]),
                                depthMicrometres: region.depthMicrometres ?? design.defaultDepthMicrometres,
                                dwellMicroseconds: region.dwellMicroseconds ?? design.defaultDwellMicroseconds,
                                region: region.name, index: index))
        }

        let earlierXs = earlier.flatMap(\.xMicrometres), earlierYs = earlier.flatMap(\.yMicrometres)
        try checkSpacing(dots, earlierXs: earlierXs, earlierYs: earlierYs, minimum: envelope.minimumSpacingMicrometres)

        var earlierInRegion = [Int](repeating: 0, count: regions.count)
        for (x, y) in zip(earlierXs, earlierYs) {
            if let region = field.region(Double(x) / 1000, Double(y) / 1000) { earlierInRegion[region] += 1 }
        }
        var placedInRegion = [Int](repeating: 0, count: regions.count)
        for region in placed.regions { placedInRegion[region] += 1 }
        let summaries = regions.indices.map { g in
            DesignedRegion(name: regions[g].name, areaSquareCentimetres: areas[g] / 100, dotCount: placedInRegion[g],
                           targetDotCount: targets[g], earlierDotCount: earlierInRegion[g],
                           finalDensityPerSquareCentimetre: regions[g].densityPerSquareCentimetre)
        }

        let plan = Plan(planID: "\(design.designID)-s\(session)", dots: dots, client: design.client,
                        session: PlanSession(number: session, of: design.course.sessions, date: date),
                        design: PlanDesign(designID: design.designID, after: earlier.map(\.source)))
        return DesignedSession(plan: plan, defaultDepthMicrometres: design.defaultDepthMicrometres,
                               defaultDwellMicroseconds: design.defaultDwellMicroseconds, regions: summaries,
                               minimumSpacingMicrometres: minimumSpacing(dots, earlierXs: earlierXs, earlierYs: earlierYs),
                               travelMillimetres: DotOrder.travelMillimetres(dots),
                               estimatedSeconds: estimatedSeconds(dots, envelope: envelope))
    }

    /// Each region's area (mm², less exclusions) and the dots this session's share of its density
    /// asks for in each tile of it, hairline ramp included: a midpoint sum over a fine grid.
    static func integrate(_ field: DensityField, share: Double) -> (areas: [Double], quotas: TileQuotas) {
        let step = integrationStepMillimetres, cellArea = step * step
        var areas = [Double](repeating: 0, count: field.regions.count)
        var quotas = TileQuotas()
        let bounds = field.bounds
        var y = bounds.minimumY + step / 2
        while y < bounds.maximumY {
            var x = bounds.minimumX + step / 2
            while x < bounds.maximumX {
                if let region = field.region(x, y) {
                    areas[region] += cellArea
                    let factor = field.hairline?.densityFactor(x, y) ?? 1
                    quotas.add(x, y, region: region,
                               dots: field.regions[region].densityPerSquareCentimetre / 100 * share * factor * cellArea)
                }
                x += step
            }
            y += step
        }
        quotas.finish(regions: field.regions.count)
        return (areas, quotas)
    }

    /// Rows of the serpentine about one typical spacing high: short hops within a row, one
    /// short hop between rows.
    private static func bandHeight(_ placed: PoissonDiskPlacement.Placed, _ areas: [Double]) -> Double {
        let area = areas.reduce(0, +)
        guard !placed.xs.isEmpty, area > 0 else { return 1 }
        return min(5, max(0.5, (area / Double(placed.xs.count)).squareRoot()))
    }

    private static func micrometres(_ millimetres: Double) -> Int32 {
        Int32((millimetres * 1000).rounded(.toNearestOrAwayFromZero))
    }

    /// Every new dot against every other and every earlier dot, on the rounded positions that go
    /// into the plan: the guarantee checked, not assumed.
    private static func checkSpacing(_ dots: [PlanDot], earlierXs: [Int32], earlierYs: [Int32],
                                     minimum: Int32) throws(DesignError) {
        let result = PlanSpacing.violations(xs: earlierXs + dots.map(\.xMicrometres),
                                            ys: earlierYs + dots.map(\.yMicrometres), minimum: minimum)
        // Pairs of two earlier dots are the earlier plans' own business.
        if let violation = result.violations.first(where: { $0.second >= earlierXs.count }) {
            let distance = PlanSpacing.distanceMicrometres(violation.distanceSquared)
            throw .spacingBroken("dot \(dots[violation.second - earlierXs.count].id) is \(distance) µm from another")
        }
        guard result.complete else { throw .spacingBroken("the spacing check did not finish") }
    }

    /// The closest pair involving a new dot, µm.
    private static func minimumSpacing(_ dots: [PlanDot], earlierXs: [Int32], earlierYs: [Int32]) -> Int64? {
        var points = PointSet()
        for (x, y) in zip(earlierXs, earlierYs) {
            _ = points.append(Double(x), Double(y), radius: 0, region: -1)
        }
        for dot in dots {
            _ = points.append(Double(dot.xMicrometres), Double(dot.yMicrometres), radius: 0, region: 0)
        }
        guard points.xs.count > 1, !dots.isEmpty else { return nil }
        let xs = dots.map { Double($0.xMicrometres) }, ys = dots.map { Double($0.yMicrometres) }
        let cell = 2_000.0
        var grid = PointGrid(minimumX: xs.min()! - cell, maximumX: xs.max()! + cell,
                             minimumY: ys.min()! - cell, maximumY: ys.max()! + cell, cell: cell)
        var best = Double.infinity
        for index in points.xs.indices where grid.covers(points.xs[index], points.ys[index]) {
            if points.region[index] == 0 {
                grid.forEach(within: cell, of: points.xs[index], points.ys[index], points) { _, distance in
                    best = min(best, distance)
                }
            }
            grid.insert(index, points)
        }
        // No pair within 2 mm: the grid says nothing closer; measure the slow way (rare, small).
        if best.isInfinite {
            for i in dots.indices {
                for j in points.xs.indices where j != earlierXs.count + i {
                    best = min(best, hypot(points.xs[j] - xs[i], points.ys[j] - ys[i]))
                }
            }
        }
        return Int64(best.rounded())
    }

    /// At least one dot-rate period per dot, and at least its dwell.
    static func estimatedSeconds(_ dots: [PlanDot], envelope: SafetyEnvelope) -> Double {
        let period = Double((try? DotPace.minimumIntervalMicroseconds(envelope)) ?? 0)
        return dots.reduce(0) { $0 + max(period, Double($1.dwellMicroseconds)) } / 1_000_000
    }
}

/// Running order: a serpentine over horizontal bands, front (high y) to back, alternating
/// direction: about as short as nearest-neighbour tours, and never a long jump back.
enum DotOrder {
    /// Indices of the points in running order.
    static func serpentine(xs: [Double], ys: [Double], bandMillimetres: Double) -> [Int] {
        guard let top = ys.max() else { return [] }
        let band = xs.indices.map { Int(((top - ys[$0]) / bandMillimetres).rounded(.down)) }
        return xs.indices.sorted { a, b in
            if band[a] != band[b] { return band[a] < band[b] }
            let forward = band[a] % 2 == 0
            if xs[a] != xs[b] { return forward ? xs[a] < xs[b] : xs[a] > xs[b] }
            return a < b
        }
    }

    /// Length of the path through `dots` in order, mm.
    static func travelMillimetres(_ dots: [PlanDot]) -> Double {
        zip(dots, dots.dropFirst()).reduce(0) { length, pair in
            length + hypot(Double(pair.1.xMicrometres - pair.0.xMicrometres),
                           Double(pair.1.yMicrometres - pair.0.yMicrometres)) / 1000
        }
    }
}
