import SMPPlan

// The in-memory model of an `smp-design/1` file (docs/design-format.md): where dots go, how dense
// they end up, and how a course of sessions shares them out. Geometry is in millimetres as
// Doubles, in the applicator's frame (the plan's); plans round to whole micrometres at the end.

/// A point in the applicator's frame, millimetres from the centre of travel.
public struct DesignPoint: Sendable, Hashable {
    public var xMillimetres: Double
    public var yMillimetres: Double

    public init(xMillimetres: Double, yMillimetres: Double) {
        self.xMillimetres = xMillimetres
        self.yMillimetres = yMillimetres
    }
}

/// A closed polygon (the last corner joins the first), simple: no two edges cross.
public struct DesignPolygon: Sendable, Hashable {
    public let corners: [DesignPoint]
    /// Bounding box, for a quick "certainly outside" before the exact test.
    let minimumX, maximumX, minimumY, maximumY: Double

    public init(corners: [DesignPoint]) {
        self.corners = corners
        minimumX = corners.map(\.xMillimetres).min() ?? 0
        maximumX = corners.map(\.xMillimetres).max() ?? 0
        minimumY = corners.map(\.yMillimetres).min() ?? 0
        maximumY = corners.map(\.yMillimetres).max() ?? 0
    }

    /// Even–odd rule (ray casting). A point exactly on an edge may fall either way; dots are
    /// never placed on purpose there.
    public func contains(_ x: Double, _ y: Double) -> Bool {
        guard x >= minimumX, x <= maximumX, y >= minimumY, y <= maximumY else { return false }
        var inside = false
        var previous = corners[corners.count - 1]
        for corner in corners {
            if (corner.yMillimetres > y) != (previous.yMillimetres > y) {
                let crossing = corner.xMillimetres + (y - corner.yMillimetres)
                    * (previous.xMillimetres - corner.xMillimetres) / (previous.yMillimetres - corner.yMillimetres)
                if x < crossing { inside.toggle() }
            }
            previous = corner
        }
        return inside
    }

    /// Area by the shoelace formula, mm² (positive whatever the winding).
    public var areaSquareMillimetres: Double {
        abs(signedArea)
    }

    var signedArea: Double {
        var twice = 0.0
        var previous = corners[corners.count - 1]
        for corner in corners {
            twice += previous.xMillimetres * corner.yMillimetres - corner.xMillimetres * previous.yMillimetres
            previous = corner
        }
        return twice / 2
    }

    /// Area-weighted centre.
    var centroid: DesignPoint {
        var cx = 0.0, cy = 0.0, twice = 0.0
        var previous = corners[corners.count - 1]
        for corner in corners {
            let cross = previous.xMillimetres * corner.yMillimetres - corner.xMillimetres * previous.yMillimetres
            twice += cross
            cx += (previous.xMillimetres + corner.xMillimetres) * cross
            cy += (previous.yMillimetres + corner.yMillimetres) * cross
            previous = corner
        }
        guard twice != 0 else { return corners[0] }
        return DesignPoint(xMillimetres: cx / (3 * twice), yMillimetres: cy / (3 * twice))
    }

    /// The first pair of edges that cross (by index of their first corner), nil for a simple polygon.
    /// O(n²): design polygons have tens of corners.
    func firstCrossing() -> (Int, Int)? {
        let n = corners.count
        for i in 0..<n {
            for j in (i + 1)..<n {
                // Neighbouring edges share a corner and do not count.
                if j == i + 1 || (i == 0 && j == n - 1) { continue }
                if Self.segmentsCross(corners[i], corners[(i + 1) % n], corners[j], corners[(j + 1) % n]) {
                    return (i, j)
                }
            }
        }
        return nil
    }

    static func segmentsCross(_ a: DesignPoint, _ b: DesignPoint, _ c: DesignPoint, _ d: DesignPoint) -> Bool {
        func orientation(_ p: DesignPoint, _ q: DesignPoint, _ r: DesignPoint) -> Double {
            (q.xMillimetres - p.xMillimetres) * (r.yMillimetres - p.yMillimetres)
                - (q.yMillimetres - p.yMillimetres) * (r.xMillimetres - p.xMillimetres)
        }
        let d1 = orientation(c, d, a), d2 = orientation(c, d, b)
        let d3 = orientation(a, b, c), d4 = orientation(a, b, d)
        return ((d1 > 0 && d2 < 0) || (d1 < 0 && d2 > 0)) && ((d3 > 0 && d4 < 0) || (d3 < 0 && d4 > 0))
    }
}

/// An area to fill with dots up to a final density over the course.
public struct DesignRegion: Sendable, Hashable {
    /// The region's name; each dot placed in it carries it (`region` in the plan).
    public let name: String
    public let polygon: DesignPolygon
    /// The density the whole course reaches, dots per cm².
    public let densityPerSquareCentimetre: Double
    /// The region's own depth and dwell; nil takes the design's defaults.
    public let depthMicrometres: Int32?
    public let dwellMicroseconds: Int32?

    public init(name: String, polygon: DesignPolygon, densityPerSquareCentimetre: Double,
                depthMicrometres: Int32? = nil, dwellMicroseconds: Int32? = nil) {
        self.name = name
        self.polygon = polygon
        self.densityPerSquareCentimetre = densityPerSquareCentimetre
        self.depthMicrometres = depthMicrometres
        self.dwellMicroseconds = dwellMicroseconds
    }
}

/// An area no dot may enter (a scar to leave, a mole, a no-go drawn by the clinician).
public struct DesignExclusion: Sendable, Hashable {
    public let name: String
    public let polygon: DesignPolygon

    public init(name: String, polygon: DesignPolygon) {
        self.name = name
        self.polygon = polygon
    }
}

/// The frontal hairline: density ramps from sparse at the line to full `featherMillimetres`
/// behind it, along an irregular front, with a few dots scattered ahead of it.
public struct DesignHairline: Sendable, Hashable {
    /// The line, at least two points. "Behind" is the side where the regions' area mostly lies.
    public let polyline: [DesignPoint]
    public let featherMillimetres: Double

    public init(polyline: [DesignPoint], featherMillimetres: Double) {
        self.polyline = polyline
        self.featherMillimetres = featherMillimetres
    }
}

/// How a course of sessions shares the final density out.
public struct DesignCourse: Sendable, Hashable {
    /// Sessions in the course, ≥ 1.
    public let sessions: Int
    /// `shares[k - 1]`: the fraction of the final density session k places; they sum to 1.
    public let shares: [Double]

    public init(sessions: Int, shares: [Double]) {
        self.sessions = sessions
        self.shares = shares
    }

    /// The fraction of the final density in the skin once session `session` (1-based) is done.
    public func cumulativeShare(through session: Int) -> Double {
        // The last session reaches the full density exactly, whatever the shares' rounding.
        session >= sessions ? 1 : shares.prefix(session).reduce(0, +)
    }
}

/// A loaded, checked design.
public struct Design: Sendable {
    public let designID: String
    public let client: PlanClient?
    public let course: DesignCourse
    public let defaultDepthMicrometres: Int32
    public let defaultDwellMicroseconds: Int32
    /// In file order; a point in two regions belongs to the first.
    public let regions: [DesignRegion]
    public let exclusions: [DesignExclusion]
    public let hairline: DesignHairline?

    public init(designID: String, client: PlanClient?, course: DesignCourse, defaultDepthMicrometres: Int32,
                defaultDwellMicroseconds: Int32, regions: [DesignRegion], exclusions: [DesignExclusion] = [],
                hairline: DesignHairline? = nil) {
        self.designID = designID
        self.client = client
        self.course = course
        self.defaultDepthMicrometres = defaultDepthMicrometres
        self.defaultDwellMicroseconds = defaultDwellMicroseconds
        self.regions = regions
        self.exclusions = exclusions
        self.hairline = hairline
    }
}
