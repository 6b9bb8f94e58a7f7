import Foundation
import SMPPlan
import SMPPlanReader

// Reading `smp-design/1` files (docs/design-format.md) with the plan reader's machinery, so a
// design is refused for the same reasons and in the same words as a plan: unknown keys with a
// "did you mean", wrong types, keys written twice, every problem with its JSON path, value and
// limit.

/// Why a design was not loaded: the file could not be read, was not JSON, or had at least one
/// error. `issues` holds every error found, then any warnings.
public struct DesignLoadError: Error, Sendable, CustomStringConvertible {
    public let file: String
    public let issues: [PlanIssue]

    public init(file: String, issues: [PlanIssue]) {
        self.file = file
        self.issues = issues
    }

    /// True when the file itself could not be read (the CLI says "no input", not "bad data").
    public var isUnreadable: Bool { issues.contains { $0.code == .fileUnreadable } }

    public var description: String {
        let errors = issues.filter(\.isError).count
        return issues.reduce("\(file): design refused, \(errors) error\(errors == 1 ? "" : "s")") { $0 + "\n  \($1)" }
    }
}

/// Reads `smp-design/1` files into a checked `Design`.
public enum DesignLoader {
    /// The only format this version reads.
    public static let format = "smp-design/1"
    /// Most sessions a course may have.
    public static let maximumSessions = 20
    /// Widest hairline feathering, mm.
    public static let maximumFeatherMillimetres = 50.0

    /// Loads and checks the design at `path` against `envelope` (depths, dwells, travel, and the
    /// densest the minimum spacing allows).
    public static func load(path: String, envelope: SafetyEnvelope = .builtIn) throws(DesignLoadError) -> Design {
        switch PlanLoader.readFile(path, document: "a design") {
        case .success(let data): return try load(data: data, sourceName: path, envelope: envelope)
        case .failure(let failure): throw DesignLoadError(file: path, issues: [failure.issue])
        }
    }

    /// Loads and checks a design from memory; `sourceName` names it in messages.
    public static func load(data: Data, sourceName: String, envelope: SafetyEnvelope = .builtIn)
        throws(DesignLoadError) -> Design
    {
        let raw: RawDesign
        switch PlanDecoding.decodeCheckingKeys(DesignObject.self, from: data, document: "design",
                                               isObject: { $0.value != nil }) {
        case .failure(let failure):
            throw DesignLoadError(file: sourceName, issues: [failure.issue])
        case .success(let (object, scan)):
            guard let value = object.value else { throw DesignLoadError(file: sourceName, issues: object.issues) }
            raw = value
            var issues = object.issues
            for duplicate in scan?.duplicates ?? [] {
                issues.append(PlanDecoding.duplicateKeyIssue(duplicate, document: "design"))
            }
            var resolver = DesignResolver(envelope: envelope, issues: issues)
            let design = resolver.resolve(raw)
            let errors = resolver.issues.filter(\.isError)
            guard let design, errors.isEmpty else {
                let ordered = PlanLoader.inDocumentOrder(errors, keys: DesignKeys.document)
                throw DesignLoadError(file: sourceName, issues: ordered.isEmpty
                    ? [.error(.wrongType, "$", "the design could not be built (internal error: no reason recorded)")]
                    : ordered)
            }
            return design
        }
    }

    /// The densest target the envelope's minimum spacing allows, dots per cm²: placement draws
    /// candidates at `PoissonDiskPlacement.candidateRadiusFactor` of the nominal radius, and even
    /// those must keep the spacing.
    public static func maximumDensityPerSquareCentimetre(_ envelope: SafetyEnvelope) -> Double {
        let spacing = Double(max(envelope.minimumSpacingMicrometres, 1)) / 1000 + PoissonDiskPlacement.roundingMarginMillimetres
        let radius = spacing / PoissonDiskPlacement.candidateRadiusFactor
        return PoissonDiskPlacement.bridsonDensityConstant / (radius * radius) * 100
    }
}

enum DesignKeys {
    static let document = ["format", "design_id", "client", "course", "defaults", "regions", "exclusions", "hairline"]
    static let course = ["sessions", "share"]
    static let defaults = ["depth_mm", "dwell_ms"]
    static let region = ["name", "polygon_mm", "density_per_cm2", "depth_mm", "dwell_ms"]
    static let exclusion = ["name", "polygon_mm"]
    static let hairline = ["polyline_mm", "feather_mm"]
}

// MARK: - Stage 1: JSON → raw values as written

struct RawDesign: Sendable {
    var format: RawField<String> = .absent
    var designID: RawField<String> = .absent
    var client: RawField<RawClient> = .absent
    var course: RawField<RawCourse> = .absent
    var defaults: RawField<RawDesignDefaults> = .absent
    var regions: RawField<[RawArea?]> = .absent
    var exclusions: RawField<[RawArea?]> = .absent
    var hairline: RawField<RawHairline> = .absent
}

struct RawCourse: ObjectFields {
    var sessions: RawField<Double> = .absent
    var share: RawField<[Double]> = .absent

    static let keys = DesignKeys.course

    mutating func read(_ key: PlanJSONKey, with reader: inout ObjectReader) -> Bool {
        switch key.stringValue {
        case "sessions": sessions = reader.number(key)
        case "share": share = reader.numbers(key)
        default: return false
        }
        return true
    }
}

struct RawDesignDefaults: ObjectFields {
    var depth: RawField<Double> = .absent
    var dwell: RawField<Double> = .absent

    static let keys = DesignKeys.defaults

    mutating func read(_ key: PlanJSONKey, with reader: inout ObjectReader) -> Bool {
        switch key.stringValue {
        case "depth_mm": depth = reader.number(key)
        case "dwell_ms": dwell = reader.number(key)
        default: return false
        }
        return true
    }
}

/// A region or an exclusion (an exclusion has no density, depth or dwell).
struct RawArea: Sendable {
    var path = ""
    var name: RawField<String> = .absent
    var polygon: RawField<[DesignPoint]> = .absent
    var density: RawField<Double> = .absent
    var depth: RawField<Double> = .absent
    var dwell: RawField<Double> = .absent
}

struct RawHairline: ObjectFields {
    var polyline: RawField<[DesignPoint]> = .absent
    var feather: RawField<Double> = .absent

    static let keys = DesignKeys.hairline

    mutating func read(_ key: PlanJSONKey, with reader: inout ObjectReader) -> Bool {
        switch key.stringValue {
        case "polyline_mm": polyline = reader.points(key)
        case "feather_mm": feather = reader.number(key)
        default: return false
        }
        return true
    }
}

extension ObjectReader {
    /// `[[x, y], …]` in millimetres: every point a pair of finite numbers.
    mutating func points(_ key: PlanJSONKey) -> RawField<[DesignPoint]> {
        let path = path(key)
        guard var array = try? container.nestedUnkeyedContainer(forKey: key) else {
            wrongType(key, expected: "an array of [x, y] points in millimetres")
            return .invalid
        }
        var points: [DesignPoint] = []
        var allRead = true
        while !array.isAtEnd {
            let index = array.currentIndex
            // PointElement never throws, so each element is consumed exactly once.
            guard let element = try? array.decode(PointElement.self) else { return .invalid }
            if let point = element.point {
                points.append(point)
                continue
            }
            issues.append(.error(.wrongType, "\(path)[\(index)]", limit: "[x, y]",
                                 "\(path)[\(index)] must be a point [x, y]: two numbers, millimetres"))
            allRead = false
        }
        return allRead ? .present(points) : .invalid
    }

    /// An array of numbers.
    mutating func numbers(_ key: PlanJSONKey) -> RawField<[Double]> {
        if let values = try? container.decode([Double].self, forKey: key), values.allSatisfy(\.isFinite) {
            return .present(values)
        }
        wrongType(key, expected: "an array of numbers")
        return .invalid
    }
}

/// One `[x, y]` element; nil when it is anything else (never throws).
private struct PointElement: Decodable {
    var point: DesignPoint?

    init(from decoder: any Decoder) {
        if let pair = try? decoder.singleValueContainer().decode([Double].self), pair.count == 2,
           pair.allSatisfy(\.isFinite) {
            point = DesignPoint(xMillimetres: pair[0], yMillimetres: pair[1])
        }
    }
}

private struct DesignObject: Decodable {
    var value: RawDesign?
    var issues: [PlanIssue] = []

    init(from decoder: any Decoder) {
        guard let container = openObject(decoder, expected: "a JSON object", issues: &issues) else { return }
        var reader = ObjectReader(container, decoder: decoder)
        var raw = RawDesign()
        var unknown: [PlanJSONKey] = []
        for key in container.allKeys {
            switch key.stringValue {
            case "format": raw.format = reader.string(key)
            case "design_id": raw.designID = reader.string(key)
            case "client": raw.client = reader.object(key, as: FieldsObject<RawClient>.self)
            case "course": raw.course = reader.object(key, as: FieldsObject<RawCourse>.self)
            case "defaults": raw.defaults = reader.object(key, as: FieldsObject<RawDesignDefaults>.self)
            case "regions": raw.regions = reader.array(key, of: AreaObject.self, expected: "an array of region objects")
            case "exclusions":
                raw.exclusions = reader.array(key, of: AreaObject.self, expected: "an array of exclusion objects")
            case "hairline": raw.hairline = reader.object(key, as: FieldsObject<RawHairline>.self)
            default: unknown.append(key)
            }
        }
        reader.unknown(unknown, known: DesignKeys.document)
        issues += reader.issues
        value = raw
    }
}

/// An element of `regions` or `exclusions`; which keys are allowed is decided by the resolver,
/// which knows which array it came from.
private struct AreaObject: Decodable, RawObject {
    var value: RawArea?
    var issues: [PlanIssue] = []

    init(from decoder: any Decoder) {
        guard let container = openObject(decoder, expected: "an object", issues: &issues) else { return }
        var reader = ObjectReader(container, decoder: decoder)
        var raw = RawArea(path: PlanText.path(decoder.codingPath))
        let isExclusion = decoder.codingPath.first?.stringValue == "exclusions"
        var unknown: [PlanJSONKey] = []
        for key in container.allKeys {
            switch (key.stringValue, isExclusion) {
            case ("name", _): raw.name = reader.string(key)
            case ("polygon_mm", _): raw.polygon = reader.points(key)
            case ("density_per_cm2", false): raw.density = reader.number(key)
            case ("depth_mm", false): raw.depth = reader.number(key)
            case ("dwell_ms", false): raw.dwell = reader.number(key)
            default: unknown.append(key)
            }
        }
        reader.unknown(unknown, known: isExclusion ? DesignKeys.exclusion : DesignKeys.region)
        issues += reader.issues.sorted { $0.path < $1.path }
        value = raw
    }
}

// MARK: - Stage 2: values, limits, geometry

private struct DesignResolver {
    let envelope: SafetyEnvelope
    var issues: [PlanIssue]

    init(envelope: SafetyEnvelope, issues: [PlanIssue]) {
        self.envelope = envelope
        self.issues = issues
    }

    mutating func resolve(_ raw: RawDesign) -> Design? {
        if let reason = envelope.emptyReason {
            issues.append(.error(.envelopeEmpty, "$", "no dot can run: the safety envelope admits nothing (\(reason))"))
        }
        switch raw.format {
        case .absent:
            issues.append(.error(.missingKey, "format", limit: PlanText.quoted(DesignLoader.format),
                                 "format is missing: a design must declare \"format\": \"\(DesignLoader.format)\""))
        case .present(let value) where value != DesignLoader.format:
            issues.append(.error(.unsupportedFormat, "format", value: PlanText.quoted(value),
                                 limit: PlanText.quoted(DesignLoader.format),
                                 "format = \(PlanText.quoted(value)) is not supported here; `smpctl design` reads "
                                 + PlanText.quoted(DesignLoader.format)))
        default: break
        }
        let designID = PlanLoader.nonBlank(raw.designID, path: "design_id", required: true, issues: &issues)
        let client = PlanLoader.resolveClient(raw.client, issues: &issues)
        let course = resolveCourse(raw)

        if raw.defaults.isAbsent {
            issues.append(.error(.missingKey, "defaults", limit: "depth_mm and dwell_ms",
                                 "defaults is missing: a design gives the depth and dwell of its dots"))
        }
        let defaults = raw.defaults.value ?? RawDesignDefaults()
        let depth = value(defaults.depth, path: "defaults.depth_mm", required: raw.defaults.value != nil,
                          code: .depthOutOfRange, range: envelope.depthMicrometres, unit: "mm")
        let dwell = value(defaults.dwell, path: "defaults.dwell_ms", required: raw.defaults.value != nil,
                          code: .dwellOutOfRange, range: envelope.dwellMicroseconds, unit: "ms")

        let regions = resolveRegions(raw.regions)
        let exclusions = resolveExclusions(raw.exclusions)
        let hairline = resolveHairline(raw.hairline)

        guard let designID, let course, let depth, let dwell, let regions, let exclusions,
              raw.hairline.isAbsent || hairline != nil, !issues.contains(where: \.isError) else { return nil }
        return Design(designID: designID, client: client, course: course, defaultDepthMicrometres: depth,
                      defaultDwellMicroseconds: dwell, regions: regions, exclusions: exclusions, hairline: hairline)
    }

    /// A depth or dwell checked in file units against the envelope, in micro-units.
    mutating func value(_ field: RawField<Double>, path: String, required: Bool, code: PlanIssue.Code,
                        range: ClosedRange<Int32>, unit: String) -> Int32? {
        switch field {
        case .absent:
            if required { issues.append(.error(.missingKey, path, limit: "a number", "\(path) is missing")) }
            return nil
        case .invalid:
            return nil
        case .present(let number):
            if let issue = SafetyEnvelope.rangeIssue(code, path: path, value: PlanText.number(number), fileValue: number,
                                                      range: range, unit: unit, id: nil) {
                issues.append(issue)
                return nil
            }
            return PlanLoader.micro(number * 1000)
        }
    }

    mutating func resolveCourse(_ raw: RawDesign) -> DesignCourse? {
        if raw.course.isAbsent {
            issues.append(.error(.missingKey, "course", limit: "sessions and share",
                                 "course is missing: a design says how many sessions share the density out"))
            return nil
        }
        guard let course = raw.course.value else { return nil }
        if course.sessions.isAbsent {
            issues.append(.error(.missingKey, "course.sessions", limit: "integer ≥ 1", "course.sessions is missing"))
        }
        if course.share.isAbsent {
            issues.append(.error(.missingKey, "course.share", limit: "one fraction per session",
                                 "course.share is missing"))
        }
        let sessions = PlanLoader.wholeNumber(course.sessions, path: "course.sessions",
                                              range: 1...Double(DesignLoader.maximumSessions), code: .invalidCourse,
                                              issues: &issues)
        guard let shares = course.share.value, let sessions else { return nil }
        let shown = "[" + shares.map(PlanText.number).joined(separator: ", ") + "]"
        guard shares.count == sessions else {
            issues.append(.error(.invalidCourse, "course.share", value: shown, limit: "\(sessions) fractions",
                                 "course.share = \(shown) has \(shares.count) fraction\(shares.count == 1 ? "" : "s") "
                                 + "for course.sessions = \(sessions): give one per session"))
            return nil
        }
        if let bad = shares.firstIndex(where: { !($0 > 0 && $0 <= 1) }) {
            issues.append(.error(.invalidCourse, "course.share[\(bad)]", value: PlanText.number(shares[bad]),
                                 limit: "> 0 and ≤ 1",
                                 "course.share[\(bad)] = \(PlanText.number(shares[bad])) must be a fraction above 0 and at most 1"))
            return nil
        }
        let sum = shares.reduce(0, +)
        // Written to three decimals, three thirds sum to 0.999: allow that, not a forgotten session.
        guard abs(sum - 1) <= 0.001 else {
            issues.append(.error(.invalidCourse, "course.share", value: shown, limit: "sum 1",
                                 "course.share = \(shown) sums to \(PlanText.number((sum * 1e6).rounded() / 1e6)); "
                                 + "the sessions together must place the whole density: the fractions must sum to 1"))
            return nil
        }
        return DesignCourse(sessions: Int(sessions), shares: shares)
    }

    /// A polygon checked for corners, area, crossings and travel.
    mutating func polygon(_ field: RawField<[DesignPoint]>, path: String) -> DesignPolygon? {
        guard case .present(let points) = field else {
            if field.isAbsent {
                issues.append(.error(.missingKey, path, limit: "at least 3 points", "\(path) is missing"))
            }
            return nil
        }
        guard points.count >= 3 else {
            issues.append(.error(.invalidPolygon, path, value: "\(points.count) points", limit: "at least 3 points",
                                 "\(path) has \(points.count) point\(points.count == 1 ? "" : "s"); a polygon needs at least 3"))
            return nil
        }
        var inside = true
        for (index, point) in points.enumerated() {
            for (axis, value, travel) in [("x", point.xMillimetres, envelope.travelXMicrometres),
                                          ("y", point.yMillimetres, envelope.travelYMicrometres)] {
                if let issue = SafetyEnvelope.travelIssue(axis: axis, path: "\(path)[\(index)]", value: PlanText.number(value),
                                                           fileValue: value, travel: travel, id: nil) {
                    issues.append(issue)
                    inside = false
                }
            }
        }
        let polygon = DesignPolygon(corners: points)
        // Crossings first: a figure of eight also has no net area, and the crossing is its fault.
        if let (first, second) = polygon.firstCrossing() {
            issues.append(.error(.invalidPolygon, path, limit: "edges that do not cross",
                                 "\(path): the edge from point \(first) crosses the edge from point \(second); "
                                 + "draw the outline without crossing itself"))
            return nil
        }
        guard polygon.areaSquareMillimetres > 0.01 else {
            issues.append(.error(.invalidPolygon, path, value: "\(PlanText.number(polygon.areaSquareMillimetres)) mm²",
                                 limit: "> 0.01 mm²", "\(path) encloses no area: its points lie on a line"))
            return nil
        }
        return inside ? polygon : nil
    }

    /// A non-blank name, unique within its list.
    mutating func name(_ field: RawField<String>, path: String, seen: inout [String: String]) -> String? {
        guard let name = PlanLoader.nonBlank(field, path: path + ".name", required: true, issues: &issues) else { return nil }
        if let first = seen[name] {
            issues.append(.error(.duplicateName, path + ".name", value: PlanText.quoted(name), limit: "unique name",
                                 "\(path).name = \(PlanText.quoted(name)) is already the name of \(first)"))
            return nil
        }
        seen[name] = path
        return name
    }

    mutating func resolveRegions(_ field: RawField<[RawArea?]>) -> [DesignRegion]? {
        guard case .present(let elements) = field else {
            if field.isAbsent {
                issues.append(.error(.missingKey, "regions", limit: "non-empty array",
                                     "regions is missing: a design needs at least one region"))
            }
            return nil
        }
        guard !elements.isEmpty else {
            issues.append(.error(.emptyValue, "regions", value: "[]", limit: "non-empty array",
                                 "regions is empty: a design needs at least one region"))
            return nil
        }
        let densest = DesignLoader.maximumDensityPerSquareCentimetre(envelope)
        var seen: [String: String] = [:]
        var regions: [DesignRegion] = []
        var allBuilt = true
        for element in elements {
            guard let raw = element else {
                allBuilt = false
                continue
            }
            let path = raw.path
            let name = name(raw.name, path: path, seen: &seen)
            let polygon = polygon(raw.polygon, path: path + ".polygon_mm")
            var density: Double?
            switch raw.density {
            case .absent:
                issues.append(.error(.missingKey, path + ".density_per_cm2", limit: "dots per cm²",
                                     "\(path).density_per_cm2 is missing"))
            case .invalid: break
            case .present(let value):
                if value > 0, value <= densest {
                    density = value
                } else {
                    let limit = "> 0 and ≤ \(PlanText.number((densest * 10).rounded(.down) / 10)) per cm²"
                    issues.append(.error(.densityOutOfRange, path + ".density_per_cm2", value: PlanText.number(value),
                                         limit: limit,
                                         "\(path).density_per_cm2 = \(PlanText.number(value)) must be \(limit) "
                                         + "(the densest that keeps dots \(PlanText.milli(envelope.minimumSpacingMicrometres)) mm apart)"))
                }
            }
            let depth = value(raw.depth, path: path + ".depth_mm", required: false, code: .depthOutOfRange,
                              range: envelope.depthMicrometres, unit: "mm")
            let dwell = value(raw.dwell, path: path + ".dwell_ms", required: false, code: .dwellOutOfRange,
                              range: envelope.dwellMicroseconds, unit: "ms")
            guard let name, let polygon, let density, raw.depth.isAbsent || depth != nil,
                  raw.dwell.isAbsent || dwell != nil else {
                allBuilt = false
                continue
            }
            regions.append(DesignRegion(name: name, polygon: polygon, densityPerSquareCentimetre: density,
                                        depthMicrometres: depth, dwellMicroseconds: dwell))
        }
        return allBuilt ? regions : nil
    }

    mutating func resolveExclusions(_ field: RawField<[RawArea?]>) -> [DesignExclusion]? {
        switch field {
        case .absent: return []
        case .invalid: return nil
        case .present(let elements):
            var seen: [String: String] = [:]
            var exclusions: [DesignExclusion] = []
            for element in elements {
                guard let raw = element else { return nil }
                let name = name(raw.name, path: raw.path, seen: &seen)
                let polygon = polygon(raw.polygon, path: raw.path + ".polygon_mm")
                if let name, let polygon { exclusions.append(DesignExclusion(name: name, polygon: polygon)) }
            }
            return exclusions.count == elements.count ? exclusions : nil
        }
    }

    mutating func resolveHairline(_ field: RawField<RawHairline>) -> DesignHairline? {
        guard case .present(let raw) = field else { return nil }
        var line: [DesignPoint]?
        switch raw.polyline {
        case .absent:
            issues.append(.error(.missingKey, "hairline.polyline_mm", limit: "at least 2 points",
                                 "hairline.polyline_mm is missing"))
        case .invalid: break
        case .present(let points):
            if points.count < 2 {
                issues.append(.error(.invalidPolygon, "hairline.polyline_mm", value: "\(points.count) points",
                                     limit: "at least 2 points", "hairline.polyline_mm needs at least 2 points"))
            } else if zip(points, points.dropFirst()).contains(where: { $0 == $1 }) {
                issues.append(.error(.invalidPolygon, "hairline.polyline_mm", limit: "distinct consecutive points",
                                     "hairline.polyline_mm repeats a point: consecutive points must differ"))
            } else {
                line = points
            }
        }
        var feather: Double?
        switch raw.feather {
        case .absent:
            issues.append(.error(.missingKey, "hairline.feather_mm", limit: "mm", "hairline.feather_mm is missing"))
        case .invalid: break
        case .present(let value):
            if value >= 1, value <= DesignLoader.maximumFeatherMillimetres {
                feather = value
            } else {
                let limit = "1 … \(PlanText.number(DesignLoader.maximumFeatherMillimetres)) mm"
                issues.append(.error(.valueOutOfRange, "hairline.feather_mm", value: PlanText.number(value), limit: limit,
                                     "hairline.feather_mm = \(PlanText.number(value)) must be within \(limit)"))
            }
        }
        guard let line, let feather else { return nil }
        return DesignHairline(polyline: line, featherMillimetres: feather)
    }
}
