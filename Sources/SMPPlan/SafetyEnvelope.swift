import FirmwareProtocol

/// The limits every dot must respect, in wire units. The built-in envelope is the software's own
/// hard limit; after HELLO it is intersected with the limits the device declares, and plans are
/// validated again against the result.
public struct SafetyEnvelope: Sendable, Hashable {
    /// Allowed needle depth.
    public var depthMicrometres: ClosedRange<Int32>
    /// Allowed dwell at depth.
    public var dwellMicroseconds: ClosedRange<Int32>
    /// Largest allowed |x| from the centre of travel.
    public var travelXMicrometres: Int32
    /// Largest allowed |y| from the centre of travel.
    public var travelYMicrometres: Int32
    /// No two dots of a plan may be closer than this (exactly this far apart is allowed). Two dots
    /// at the same spot are refused even if this is 0.
    public var minimumSpacingMicrometres: Int32
    /// The runner never starts dots faster than this.
    public var maximumDotsPerSecond: Double
    /// Set when intersecting left a bound with nothing in it (e.g. the device's minimum depth is
    /// above this envelope's maximum). Such an envelope refuses every dot; its ranges are then
    /// meaningless and must not be used to build commands.
    public private(set) var emptyReason: String?

    public init(depthMicrometres: ClosedRange<Int32>, dwellMicroseconds: ClosedRange<Int32>,
                travelXMicrometres: Int32, travelYMicrometres: Int32,
                minimumSpacingMicrometres: Int32, maximumDotsPerSecond: Double) {
        self.depthMicrometres = depthMicrometres
        self.dwellMicroseconds = dwellMicroseconds
        self.travelXMicrometres = travelXMicrometres
        self.travelYMicrometres = travelYMicrometres
        self.minimumSpacingMicrometres = minimumSpacingMicrometres
        self.maximumDotsPerSecond = maximumDotsPerSecond
        self.emptyReason = nil
    }

    /// Depth 0.2–1.5 mm, dwell 20–500 ms, |x| and |y| ≤ 150 mm, dots ≥ 0.5 mm apart, ≤ 20 dots/s.
    public static let builtIn = SafetyEnvelope(
        depthMicrometres: 200...1_500,
        dwellMicroseconds: 20_000...500_000,
        travelXMicrometres: 150_000,
        travelYMicrometres: 150_000,
        minimumSpacingMicrometres: 500,
        maximumDotsPerSecond: 20)

    /// True when the envelope admits at least one dot.
    public var isUsable: Bool { emptyReason == nil }

    /// The tighter of each bound of this envelope and the device's declared hardware limits.
    /// Spacing and dot rate are not device limits and are kept. If a range comes out empty the
    /// result refuses every dot (`emptyReason` says why).
    public func intersected(with limits: DeviceLimits) -> SafetyEnvelope {
        var result = self
        var reasons: [String] = emptyReason.map { [$0] } ?? []

        let deviceDepth = (Int32(limits.depthMinMicrometres), Int32(limits.depthMaxMicrometres))
        let depthLower = max(depthMicrometres.lowerBound, deviceDepth.0)
        let depthUpper = min(depthMicrometres.upperBound, deviceDepth.1)
        if depthLower <= depthUpper {
            result.depthMicrometres = depthLower...depthUpper
        } else {
            reasons.append("the device's depth limits \(PlanText.milli(deviceDepth.0))–\(PlanText.milli(deviceDepth.1)) mm "
                + "do not overlap the allowed \(PlanText.milli(depthMicrometres.lowerBound))–"
                + "\(PlanText.milli(depthMicrometres.upperBound)) mm")
            result.depthMicrometres = depthUpper...depthUpper
        }

        let deviceDwell = (Int32(clamping: limits.dwellMinMicroseconds), Int32(clamping: limits.dwellMaxMicroseconds))
        let dwellLower = max(dwellMicroseconds.lowerBound, deviceDwell.0)
        let dwellUpper = min(dwellMicroseconds.upperBound, deviceDwell.1)
        if dwellLower <= dwellUpper {
            result.dwellMicroseconds = dwellLower...dwellUpper
        } else {
            reasons.append("the device's dwell limits \(PlanText.milli(deviceDwell.0))–\(PlanText.milli(deviceDwell.1)) ms "
                + "do not overlap the allowed \(PlanText.milli(dwellMicroseconds.lowerBound))–"
                + "\(PlanText.milli(dwellMicroseconds.upperBound)) ms")
            result.dwellMicroseconds = dwellUpper...dwellUpper
        }

        result.travelXMicrometres = min(travelXMicrometres, Int32(clamping: limits.travelXMicrometres))
        result.travelYMicrometres = min(travelYMicrometres, Int32(clamping: limits.travelYMicrometres))
        if result.travelXMicrometres < 0 || result.travelYMicrometres < 0 {
            reasons.append("the travel limits are negative")
        }

        result.emptyReason = reasons.isEmpty ? nil : reasons.joined(separator: "; ")
        return result
    }

    /// The first way `dot` breaks this envelope (depth, dwell, x, y), or nil when it fits.
    /// The runner calls this just before encoding each dot.
    public func check(_ dot: PlanDot) -> PlanIssue? {
        if let emptyReason {
            return .error(.envelopeEmpty, dot.path,
                          "\(dot.path) cannot run: the safety envelope admits no dot (\(emptyReason))"
                          + PlanText.idSuffix(dot.id))
        }
        if let issue = depthIssue(dot) { return issue }
        if let issue = dwellIssue(dot) { return issue }
        if let issue = travelIssue(dot, axis: "x") { return issue }
        if let issue = travelIssue(dot, axis: "y") { return issue }
        return nil
    }

    /// Every way `dot` breaks this envelope (not the envelope's own emptiness).
    package func issues(for dot: PlanDot) -> [PlanIssue] {
        if depthMicrometres.contains(dot.depthMicrometres), dwellMicroseconds.contains(dot.dwellMicroseconds),
           dot.xMicrometres.magnitude <= travelXMicrometres.magnitude, travelXMicrometres >= 0,
           dot.yMicrometres.magnitude <= travelYMicrometres.magnitude, travelYMicrometres >= 0 {
            return []
        }
        return [depthIssue(dot), dwellIssue(dot), travelIssue(dot, axis: "x"), travelIssue(dot, axis: "y")]
            .compactMap { $0 }
    }

    private func depthIssue(_ dot: PlanDot) -> PlanIssue? {
        Self.rangeIssue(.depthOutOfRange, path: dot.path + ".depth_mm", value: PlanText.milli(dot.depthMicrometres),
                        fileValue: Double(dot.depthMicrometres) / 1000, range: depthMicrometres, unit: "mm", id: dot.id)
    }

    private func dwellIssue(_ dot: PlanDot) -> PlanIssue? {
        Self.rangeIssue(.dwellOutOfRange, path: dot.path + ".dwell_ms", value: PlanText.milli(dot.dwellMicroseconds),
                        fileValue: Double(dot.dwellMicroseconds) / 1000, range: dwellMicroseconds, unit: "ms", id: dot.id)
    }

    private func travelIssue(_ dot: PlanDot, axis: String) -> PlanIssue? {
        let micro = axis == "x" ? dot.xMicrometres : dot.yMicrometres
        return Self.travelIssue(axis: axis, path: "\(dot.path).\(axis)_mm", value: PlanText.milli(micro),
                                fileValue: Double(micro) / 1000, travel: axis == "x" ? travelXMicrometres : travelYMicrometres,
                                id: dot.id)
    }

    // MARK: Shared with the loader, which checks the file's own values before rounding.

    // Comparisons are made in the file's units against `Double(bound) / 1000`. That quotient is the
    // double nearest the decimal bound, the same double a file gets by writing the bound (e.g.
    // "1.001"), so a value written exactly at a limit is judged exactly. (Scaling the value instead,
    // 1.001 × 1000 = 1000.9999999999999, would not be.) A value that passes also converts inside the
    // range: it is within one ulp of the bound after × 1000, and rounding to whole µm cannot cross it.

    /// `fileValue` is in mm or ms as written; `path` and `value` are only evaluated when there is an
    /// issue (this runs for every dot).
    package static func rangeIssue(_ code: PlanIssue.Code, path: @autoclosure () -> String, value: @autoclosure () -> String,
                           fileValue: Double, range: ClosedRange<Int32>, unit: String, id: UInt32?) -> PlanIssue? {
        let lower = Double(range.lowerBound) / 1000, upper = Double(range.upperBound) / 1000
        if fileValue >= lower, fileValue <= upper { return nil }
        let path = path(), value = value()
        if fileValue.isNaN || fileValue > upper {
            let limit = "\(PlanText.milli(range.upperBound)) \(unit)"
            return .error(code, path, value: value, limit: "≤ " + limit,
                          "\(path) = \(value) exceeds the maximum \(limit)" + PlanText.idSuffix(id))
        }
        let limit = "\(PlanText.milli(range.lowerBound)) \(unit)"
        return .error(code, path, value: value, limit: "≥ " + limit,
                      "\(path) = \(value) is below the minimum \(limit)" + PlanText.idSuffix(id))
    }

    package static func travelIssue(axis: String, path: @autoclosure () -> String, value: @autoclosure () -> String,
                            fileValue: Double, travel: Int32, id: UInt32?) -> PlanIssue? {
        if fileValue.magnitude <= Double(travel) / 1000 { return nil }
        let path = path(), value = value()
        let limit = "\(PlanText.milli(travel)) mm"
        return .error(.travelOutOfRange, path, value: value, limit: "|\(axis)| ≤ " + limit,
                      "\(path) = \(value) is outside the travel: |\(axis)| must be ≤ \(limit)" + PlanText.idSuffix(id))
    }
}
