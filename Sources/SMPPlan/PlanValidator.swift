/// Checks an already-parsed plan against an envelope: ids, every dot's depth, dwell and position,
/// and spacing; plus warnings. `PlanLoader` has already done this against the envelope it was given;
/// call this again whenever the envelope tightens (after HELLO, with
/// `envelope.intersected(with: reply.limits)`).
public enum PlanValidator {
    /// Every error (up to 1000, then one "… and N more"), then the warnings. The plan may run under
    /// `envelope` only if no issue has severity `.error`.
    public static func validate(_ plan: Plan, envelope: SafetyEnvelope) -> [PlanIssue] {
        var issues = PlanIssueList()
        if let reason = envelope.emptyReason {
            issues.append(.error(.envelopeEmpty, "$", "no dot can run: the safety envelope admits nothing (\(reason))"))
        }
        if plan.planID.allSatisfy(\.isWhitespace) {
            issues.append(.error(.emptyValue, "plan_id", value: PlanText.quoted(plan.planID), limit: "non-empty string",
                                 "plan_id = \(PlanText.quoted(plan.planID)) must not be empty or blank"))
        }
        if plan.dots.isEmpty {
            issues.append(.error(.emptyValue, "dots", value: "[]", limit: "non-empty array",
                                 "dots is empty: a plan needs at least one dot"))
        }

        var firstIndexOfID: [UInt32: Int] = [:]
        firstIndexOfID.reserveCapacity(plan.dots.count)
        for dot in plan.dots {
            if dot.id == 0 {
                issues.append(.error(.idOutOfRange, dot.path + ".id", value: "0", limit: "1...4294967295",
                                     "\(dot.path).id = 0 must be between 1 and 4294967295"))
            } else if let first = firstIndexOfID[dot.id] {
                issues.append(.error(.duplicateID, dot.path + ".id", value: String(dot.id), limit: "unique id",
                                     "\(dot.path).id = \(dot.id) is already the id of dots[\(first)]"))
            } else {
                firstIndexOfID[dot.id] = dot.index
            }
            for issue in envelope.issues(for: dot) {
                issues.append(issue)
            }
        }

        let dots = plan.dots
        spacingIssues(xs: dots.map(\.xMicrometres), ys: dots.map(\.yMicrometres), paths: { dots[$0].path },
                      ids: { dots[$0].id }, envelope: envelope, issues: &issues)
        warnings(for: dots, envelope: envelope, issues: &issues)
        return issues.all
    }

    /// Errors for the dots of `plan` closer than the minimum spacing to a dot of `earlier`, an
    /// earlier session of the same course (`earlierName` names it in messages): sessions are
    /// layered into the same skin, so the spacing holds across them. Pairs within one plan are
    /// that plan's own validation.
    public static func spacingIssues(_ plan: Plan, against earlier: Plan, earlierName: String,
                                     envelope: SafetyEnvelope) -> [PlanIssue] {
        let minimum = envelope.minimumSpacingMicrometres
        let result = PlanSpacing.violations(xs: earlier.dots.map(\.xMicrometres) + plan.dots.map(\.xMicrometres),
                                            ys: earlier.dots.map(\.yMicrometres) + plan.dots.map(\.yMicrometres),
                                            minimum: minimum)
        let minimumText = "\(PlanText.milli(max(minimum, 0))) mm"
        var issues = PlanIssueList()
        for violation in result.violations
        where violation.second >= earlier.dots.count && violation.first < earlier.dots.count {
            let dot = plan.dots[violation.second - earlier.dots.count], other = earlier.dots[violation.first]
            let distance = PlanText.milli(PlanSpacing.distanceMicrometres(violation.distanceSquared))
            issues.append(.error(.tooClose, dot.path, value: "\(distance) mm", limit: "≥ \(minimumText) from every earlier dot",
                                 "\(dot.path) at (\(PlanText.milli(dot.xMicrometres)), \(PlanText.milli(dot.yMicrometres))) mm "
                                 + "is \(distance) mm from \(other.path) of \(earlierName) (id \(other.id)); dots of a course "
                                 + "must be at least \(minimumText) apart" + PlanText.idSuffix(dot.id)))
        }
        if !result.complete {
            issues.appendEvenIfFull(.error(.spacingCheckIncomplete, "dots", limit: "≥ \(minimumText) apart",
                                           "the spacing check against \(earlierName) stopped early: dots are packed far "
                                           + "closer than \(minimumText)"))
        }
        return issues.all
    }

    /// Spacing errors for the points (`paths` and `ids` name point `i` in messages).
    package static func spacingIssues(xs: [Int32], ys: [Int32], paths: (Int) -> String, ids: (Int) -> UInt32,
                              envelope: SafetyEnvelope, issues: inout PlanIssueList) {
        let minimum = envelope.minimumSpacingMicrometres
        let room = max(0, PlanIssueList.cap - issues.errors.count)
        let result = PlanSpacing.violations(xs: xs, ys: ys, minimum: minimum, limit: room)
        let minimumText = "\(PlanText.milli(max(minimum, 0))) mm"
        for violation in result.violations {
            let (i, j) = (violation.first, violation.second)
            let distance = PlanSpacing.distanceMicrometres(violation.distanceSquared)
            let at = "(\(PlanText.milli(xs[j])), \(PlanText.milli(ys[j]))) mm"
            let idsText = [ids(j), ids(i)].map { $0 == 0 ? "?" : String($0) }.joined(separator: " and ")
            let message: String
            if violation.distanceSquared == 0 {
                message = "\(paths(j)) is at the same spot as \(paths(i)), \(at) (dot ids \(idsText))"
            } else {
                message = "\(paths(j)) at \(at) is \(PlanText.milli(distance)) mm from \(paths(i)); "
                    + "dots must be at least \(minimumText) apart (dot ids \(idsText))"
            }
            issues.append(.error(.tooClose, paths(j), value: "\(PlanText.milli(distance)) mm",
                                 limit: "≥ \(minimumText) from every other dot", message))
        }
        issues.addOmittedErrors(result.total - result.violations.count)
        if !result.complete {
            issues.appendEvenIfFull(.error(.spacingCheckIncomplete, "dots", limit: "≥ \(minimumText) apart",
                                 "the spacing check stopped early: many dots are packed far closer than "
                                 + "\(minimumText); fix the dots reported and load the plan again"))
        }
    }

    /// What the warnings are made from, gathered by the loader over the raw dots (so a refused
    /// file still gets sensible counts) or from a built plan's dots.
    package struct WarningFacts {
        package var dotCount = 0
        package var withoutRegion = 0
        package var firstWithoutRegion: String?
        /// Dots whose dwell is below one period of the dot-rate limit.
        package var shortDwells = 0
        package var firstShortDwell: String?
        package let shortDwellBelow: Double?

        package init(envelope: SafetyEnvelope) {
            let rate = envelope.maximumDotsPerSecond
            shortDwellBelow = rate.isFinite && rate > 0 ? 1_000_000 / rate : nil
        }

        package mutating func count(path: @autoclosure () -> String, hasRegion: Bool, dwellMicroseconds: Int32?) {
            dotCount += 1
            if !hasRegion {
                withoutRegion += 1
                if firstWithoutRegion == nil { firstWithoutRegion = path() }
            }
            if let dwellMicroseconds, let shortDwellBelow, Double(dwellMicroseconds) < shortDwellBelow {
                shortDwells += 1
                if firstShortDwell == nil { firstShortDwell = path() }
            }
        }
    }

    package static func warnings(for dots: [PlanDot], envelope: SafetyEnvelope, issues: inout PlanIssueList) {
        var facts = WarningFacts(envelope: envelope)
        for dot in dots {
            facts.count(path: dot.path, hasRegion: dot.region != nil, dwellMicroseconds: dot.dwellMicroseconds)
        }
        warnings(facts, envelope: envelope, issues: &issues)
    }

    /// Things a technician should know that do not stop the plan.
    package static func warnings(_ facts: WarningFacts, envelope: SafetyEnvelope, issues: inout PlanIssueList) {
        guard facts.dotCount > 0 else { return }
        if facts.withoutRegion == facts.dotCount {
            issues.append(.warning(.noRegions, "dots", limit: "region on every dot",
                                   "no dot names a region: progress per region will not be shown"))
        } else if facts.withoutRegion > 0, let first = facts.firstWithoutRegion {
            issues.append(.warning(.someRegionsMissing, "dots", value: String(facts.withoutRegion),
                                   limit: "region on every dot",
                                   "\(facts.withoutRegion) of \(facts.dotCount) dots name no region (the first is \(first)); "
                                   + "their progress will not be shown under any region"))
        }

        if facts.shortDwells > 0, let first = facts.firstShortDwell, let period = facts.shortDwellBelow {
            let count = facts.shortDwells
            let periodText = PlanText.milli(Int64(period.rounded()))
            issues.append(.warning(.dwellBelowRatePeriod, "dots", value: String(count),
                                   limit: "dwell ≥ \(periodText) ms",
                                   "\(count) dot\(count == 1 ? "" : "s") dwell less than \(periodText) ms "
                                   + "(the first is \(first)); at most \(PlanText.number(envelope.maximumDotsPerSecond)) "
                                   + "dots/s run, so the rate limit, not the dwell, sets their pace"))
        }
    }
}
