import Foundation

/// Timing of SMP against a hair transplant (docs/plan-format.md, "Clinical timing").
///
/// From the project's founding document and the clinic sources gathered in
/// shared/reference/smp-domain.md: SMP at least 6 months after a transplant, preferably 12; or
/// about a month before a planned one. So a session less than 6 months after the transplant is
/// refused unless the operator overrides it with a reason (kept in the audit trail); 6–12 months
/// is a warning; a session before a planned transplant is a warning to confirm the plan.
public enum ClinicalTiming {
    /// Issues for `plan` if its session took place on `sessionDate` (the plan's `session.date`,
    /// else the day of the run).
    public static func check(_ plan: Plan, today: PlanDate) -> [PlanIssue] {
        guard let transplant = plan.client?.hairTransplantDate else { return [] }
        let sessionDate = plan.session?.date ?? today
        let path = plan.session?.date != nil ? "session.date" : "client.hair_transplant_date"
        let sixMonths = transplant.addingMonths(6)
        let twelveMonths = transplant.addingMonths(12)
        if sessionDate < transplant {
            return [.warning(.clinicalTimingCaution, path, value: "\(sessionDate)", limit: "",
                             "the session (\(sessionDate)) is before the hair transplant (\(transplant)): SMP about a month before a planned transplant is usual; confirm the plan with the clinician")]
        }
        if sessionDate < sixMonths {
            return [.error(.clinicalTooSoonAfterTransplant, path, value: "\(sessionDate)", limit: "≥ \(sixMonths)",
                           "the session (\(sessionDate)) is less than 6 months after the hair transplant (\(transplant)); the earliest date is \(sixMonths). Override only with a clinician's reason: --override-clinical \"REASON\"")]
        }
        if sessionDate < twelveMonths {
            return [.warning(.clinicalTimingCaution, path, value: "\(sessionDate)", limit: "≥ \(twelveMonths) preferred",
                             "the session (\(sessionDate)) is 6–12 months after the hair transplant (\(transplant)); 12 months (\(twelveMonths)) is preferred")]
        }
        return []
    }
}

extension ClinicalTiming {
    /// Sessions of a course are 10–30 days apart (shared/reference/smp-domain.md): the skin heals
    /// between them and the dots settle before the next layer goes in.
    public static let minimumDaysBetweenSessions = 10

    /// A warning when `plan`'s session (its `session.date`, else `today`) comes less than
    /// `minimumDaysBetweenSessions` days after `previous`, an earlier session of its course that
    /// `previousName` names (a records session, a plan file).
    public static func checkSessionSpacing(_ plan: Plan, previous: PlanDate, previousName: String,
                                           today: PlanDate) -> PlanIssue? {
        let sessionDate = plan.session?.date ?? today
        let days = sessionDate.dayNumber - previous.dayNumber
        guard days < minimumDaysBetweenSessions else { return nil }
        let path = plan.session?.date != nil ? "session.date" : "$"
        return .warning(.clinicalSessionsTooClose, path, value: "\(sessionDate)",
                        limit: "≥ \(minimumDaysBetweenSessions) days after the previous session",
                        "the session (\(sessionDate)) is \(days) day\(days == 1 ? "" : "s") after the previous session of its "
                        + "course (\(previousName), \(previous)); sessions are usually 10–30 days apart, so the skin has healed: "
                        + "confirm with the clinician")
    }
}

extension PlanDate {
    /// Days since 1970-01-01 (proleptic Gregorian), for differences between dates.
    public var dayNumber: Int {
        // Howard Hinnant's days_from_civil.
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    /// The same day `months` later, clamped to the end of a shorter month (31 Aug + 6 → 28/29 Feb).
    public func addingMonths(_ months: Int) -> PlanDate {
        let total = year * 12 + (month - 1) + months
        let newYear = total / 12, newMonth = total % 12 + 1
        let day = min(self.day, PlanDate.daysIn(month: newMonth, year: newYear))
        return PlanDate(year: newYear, month: newMonth, day: day)!
    }

    /// Today in UTC.
    public static func today() -> PlanDate {
        var now = time(nil)
        var parts = tm()
        gmtime_r(&now, &parts)
        return PlanDate(year: Int(parts.tm_year) + 1900, month: Int(parts.tm_mon) + 1, day: Int(parts.tm_mday))!
    }
}
