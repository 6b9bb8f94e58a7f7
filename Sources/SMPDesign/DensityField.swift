import Foundation

/// Where dots may go and how dense they should be there, for one session of a design: the
/// region a spot belongs to (the first containing it), nothing inside an exclusion or outside the
/// travel, and the hairline's ramp.
struct DensityField: Sendable {
    let regions: [DesignRegion]
    let exclusions: [DesignExclusion]
    let hairline: HairlineShape?
    let travelXMillimetres: Double
    let travelYMillimetres: Double

    init(design: Design, travelXMillimetres: Double, travelYMillimetres: Double) {
        regions = design.regions
        exclusions = design.exclusions
        self.travelXMillimetres = travelXMillimetres
        self.travelYMillimetres = travelYMillimetres
        hairline = design.hairline.map { HairlineShape($0, regions: design.regions, designID: design.designID) }
    }

    /// The region of a spot where a dot may go and the share of its density there (the hairline's
    /// ramp, else 1); nil where no dot may go.
    func spot(_ x: Double, _ y: Double) -> (region: Int, factor: Double)? {
        guard let region = region(x, y) else { return nil }
        let factor = hairline?.densityFactor(x, y) ?? 1
        return factor > 0 ? (region, factor) : nil
    }

    /// The region containing the spot, outside every exclusion and inside the travel.
    func region(_ x: Double, _ y: Double) -> Int? {
        guard abs(x) <= travelXMillimetres, abs(y) <= travelYMillimetres else { return nil }
        for exclusion in exclusions where exclusion.polygon.contains(x, y) { return nil }
        return regions.firstIndex { $0.polygon.contains(x, y) }
    }

    /// The bounding box of every region.
    var bounds: (minimumX: Double, maximumX: Double, minimumY: Double, maximumY: Double) {
        (regions.map(\.polygon.minimumX).min()!, regions.map(\.polygon.maximumX).max()!,
         regions.map(\.polygon.minimumY).min()!, regions.map(\.polygon.maximumY).max()!)
    }
}

/// The hairline as a shape: a signed depth behind the line, made irregular by a slow wobble
/// along it, and the density ramp over that depth.
struct HairlineShape: Sendable {
    /// Density at the line itself, as a share of the full density: sparse, the first single hairs.
    static let densityAtLine = 0.15
    /// Density of the dots scattered ahead of the line (a "broken" hairline), as a share.
    static let scatteredDensity = 0.04
    /// How far ahead of the line dots are scattered, at most (mm).
    static let scatterDepthMillimetres = 3.0

    let points: [DesignPoint]
    /// Arc length at each point, mm.
    let arcLength: [Double]
    let featherMillimetres: Double
    /// +1 or −1: makes the depth positive on the side where the regions lie (set once, in init).
    private(set) var behind: Double
    /// Wobble of the front: amplitude (mm) and three phases, fixed by the design id so every
    /// session of a course sees the same front.
    let wobbleAmplitude: Double
    let phases: (Double, Double, Double)

    init(_ hairline: DesignHairline, regions: [DesignRegion], designID: String) {
        points = hairline.polyline
        var lengths = [0.0]
        for (a, b) in zip(points, points.dropFirst()) {
            lengths.append(lengths.last! + hypot(b.xMillimetres - a.xMillimetres, b.yMillimetres - a.yMillimetres))
        }
        arcLength = lengths
        featherMillimetres = hairline.featherMillimetres
        wobbleAmplitude = min(0.25 * hairline.featherMillimetres, 2)
        var random = DesignRandom(seed: DesignRandom.fnv1a(designID), label: "hairline-front")
        phases = (random.unit() * 2 * .pi, random.unit() * 2 * .pi, random.unit() * 2 * .pi)
        behind = 1
        // The side holding most of the regions' area is "behind".
        var area = 0.0, x = 0.0, y = 0.0
        for region in regions {
            let a = region.polygon.areaSquareMillimetres, c = region.polygon.centroid
            area += a
            x += a * c.xMillimetres
            y += a * c.yMillimetres
        }
        let centre = area > 0 ? (x / area, y / area) : (0, 0)
        behind = signedDistance(centre.0, centre.1).distance < 0 ? -1 : 1
    }

    /// Distance to the line, positive on the left of its direction of drawing (times `behind`),
    /// and the arc length of the nearest point.
    func signedDistance(_ x: Double, _ y: Double) -> (distance: Double, arc: Double) {
        var best = Double.infinity, bestSigned = 0.0, bestArc = 0.0
        for index in 0..<(points.count - 1) {
            let a = points[index], b = points[index + 1]
            let dx = b.xMillimetres - a.xMillimetres, dy = b.yMillimetres - a.yMillimetres
            let lengthSquared = dx * dx + dy * dy
            let t = max(0, min(1, ((x - a.xMillimetres) * dx + (y - a.yMillimetres) * dy) / lengthSquared))
            let px = a.xMillimetres + t * dx, py = a.yMillimetres + t * dy
            let distance = hypot(x - px, y - py)
            if distance < best {
                best = distance
                let cross = dx * (y - a.yMillimetres) - dy * (x - a.xMillimetres)
                bestSigned = cross >= 0 ? distance : -distance
                bestArc = arcLength[index] + t * lengthSquared.squareRoot()
            }
        }
        return (bestSigned * behind, bestArc)
    }

    /// Depth behind the irregular front, mm (negative ahead of it).
    func depthBehindFront(_ x: Double, _ y: Double) -> Double {
        let (distance, arc) = signedDistance(x, y)
        // Three incommensurate waves: a front that never repeats and never runs straight.
        let wobble = 0.5 * sin(2 * .pi * arc / 7.3 + phases.0) + 0.3 * sin(2 * .pi * arc / 13.1 + phases.1)
            + 0.2 * sin(2 * .pi * arc / 29.0 + phases.2)
        return distance - wobbleAmplitude * wobble
    }

    /// The share of the full density at a spot: sparse at the front, smoothly full one feather
    /// behind it, a few scattered dots just ahead of it, none further ahead.
    func densityFactor(_ x: Double, _ y: Double) -> Double {
        let depth = depthBehindFront(x, y)
        if depth >= featherMillimetres { return 1 }
        if depth >= 0 {
            let u = depth / featherMillimetres
            return Self.densityAtLine + (1 - Self.densityAtLine) * u * u * (3 - 2 * u)
        }
        return depth >= -min(Self.scatterDepthMillimetres, featherMillimetres) ? Self.scatteredDensity : 0
    }
}
