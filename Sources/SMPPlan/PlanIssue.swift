/// One problem found in a plan: an error (the plan is refused) or a warning (the technician should
/// know, the plan may still run).
public struct PlanIssue: Sendable, Hashable, CustomStringConvertible {
    public enum Severity: Sendable, Hashable, CustomStringConvertible {
        case error, warning

        public var description: String {
            switch self {
            case .error: "error"
            case .warning: "warning"
            }
        }
    }

    /// What kind of problem this is, for programs (the message is for people).
    public enum Code: String, Sendable, Hashable, CaseIterable {
        // File level: each of these stops the load before anything else is looked at.
        /// The file could not be read (missing, permissions, a directory, …).
        case fileUnreadable
        /// The file is larger than `PlanLoader.maximumFileBytes`.
        case fileTooLarge
        /// The bytes are not JSON.
        case invalidJSON

        // Shape.
        /// A key the format does not define (e.g. a typo such as `depht_mm`).
        case unknownKey
        /// A key written more than once in the same object: programs differ in which value they read.
        case duplicateKey
        /// A required key is absent.
        case missingKey
        /// A value of the wrong JSON type (a string for a number, null, an array for an object, …).
        case wrongType
        /// A number JSON allows but a 64-bit float cannot hold (e.g. `1e400`).
        case notFinite
        /// A number that must be whole is not (e.g. an id of 1.5).
        case notInteger
        /// A string or array that must not be empty is.
        case emptyValue
        /// `format` is not `smp-plan/1`.
        case unsupportedFormat
        /// A date that is not a real `YYYY-MM-DD` date.
        case invalidDate
        /// `session.number` / `session.of` below 1, or a number above `of`.
        case invalidSession

        // Dots.
        /// An id outside 1...4294967295.
        case idOutOfRange
        /// Two dots share an id.
        case duplicateID
        /// A dot has no depth (or dwell) and the plan has no default for it.
        case noValueOrDefault
        case depthOutOfRange
        case dwellOutOfRange
        /// A position outside the travel envelope.
        case travelOutOfRange
        /// Two dots closer than the minimum spacing (or at the same spot).
        case tooClose
        /// The spacing check gave up because dots are packed far denser than the minimum spacing.
        case spacingCheckIncomplete
        /// The envelope itself admits nothing (e.g. the device's minimum depth is above the
        /// configured maximum), so no dot can run.
        case envelopeEmpty
        /// Stands for the errors left out after the first `PlanIssueList.cap`.
        case moreErrors

        // Designs (`smp-design/1`) and the `design` object of a plan.
        /// A polygon with fewer than 3 corners, no area or edges that cross; a polyline with fewer
        /// than 2 points.
        case invalidPolygon
        /// `course.sessions` and `course.share` disagree, or the shares do not sum to 1.
        case invalidCourse
        /// A target density of 0 or less, or denser than the minimum spacing allows.
        case densityOutOfRange
        /// Another design value outside its range (e.g. `hairline.feather_mm`).
        case valueOutOfRange
        /// Two regions (or two exclusions) with the same name.
        case duplicateName
        /// A `plan_sha256` that is not 64 lowercase hexadecimal digits.
        case invalidDigest

        // Warnings.
        /// No dot names a region: progress per region will not be available.
        case noRegions
        /// Some dots name a region and some do not.
        case someRegionsMissing
        /// Dwell shorter than the dot-rate limit's period: the runner, not the dwell, sets the pace.
        case dwellBelowRatePeriod
        /// The session is less than 6 months after the client's hair transplant.
        case clinicalTooSoonAfterTransplant
        /// The session is 6–12 months after the transplant, or before a planned one.
        case clinicalTimingCaution
        /// The session is planned less than 10 days after the previous session of its course.
        case clinicalSessionsTooClose
    }

    public let severity: Severity
    public let code: Code
    /// Where in the file: `dots[12].depth_mm`, `defaults.dwell_ms`, `format`, or `$` for the whole
    /// document.
    public let path: String
    /// The offending value as written in the file (strings quoted), or "" when there is none.
    public let value: String
    /// The rule broken, e.g. `≤ 1.5 mm`, `unique id`; may be "".
    public let limit: String
    /// A complete sentence for a technician, naming the path and the value, e.g.
    /// `dots[12].depth_mm = 2.1 exceeds the maximum 1.5 mm (dot id 13)`.
    public let message: String

    public init(severity: Severity, code: Code, path: String, value: String = "", limit: String = "",
                message: String) {
        self.severity = severity
        self.code = code
        self.path = path
        self.value = value
        self.limit = limit
        self.message = message
    }

    package static func error(_ code: Code, _ path: String, value: String = "", limit: String = "",
                      _ message: String) -> PlanIssue {
        PlanIssue(severity: .error, code: code, path: path, value: value, limit: limit, message: message)
    }

    package static func warning(_ code: Code, _ path: String, value: String = "", limit: String = "",
                        _ message: String) -> PlanIssue {
        PlanIssue(severity: .warning, code: code, path: path, value: value, limit: limit, message: message)
    }

    public var isError: Bool { severity == .error }

    public var description: String { "\(severity): \(message)" }
}

/// Why a plan was not loaded: the file could not be read, was not JSON, or had at least one error.
/// `issues` holds every error found (up to `PlanIssueList.cap`, then one `moreErrors` entry), then
/// any warnings.
public struct PlanLoadError: Error, Sendable, CustomStringConvertible {
    /// The path or source name given to the loader.
    public let file: String
    public let issues: [PlanIssue]

    public init(file: String, issues: [PlanIssue]) {
        self.file = file
        self.issues = issues
    }

    public var errors: [PlanIssue] { issues.filter(\.isError) }
    /// True when the file itself could not be read (missing, no permission, a directory, …), as
    /// opposed to read and found wrong (the CLI says "no input" rather than "bad data").
    public var isUnreadable: Bool { issues.contains { $0.code == .fileUnreadable } }
    public var warnings: [PlanIssue] { issues.filter { !$0.isError } }

    public var description: String {
        let errorCount = issues.reduce(0) { count, issue in
            guard issue.isError else { return count }
            // "… and N more" stands for N errors.
            if issue.code == .moreErrors, let more = Int(issue.value) { return count + more }
            return count + 1
        }
        var text = "\(file): plan refused, \(errorCount) error\(errorCount == 1 ? "" : "s")"
        for issue in issues {
            text += "\n  \(issue)"
        }
        return text
    }
}

/// Collects issues up to a cap so a thoroughly broken 200,000-dot file cannot flood memory or the
/// screen; counts what it leaves out and reports it as one final `moreErrors` issue.
package struct PlanIssueList: Sendable {
    package static let cap = 1000

    package private(set) var errors: [PlanIssue] = []
    package private(set) var warnings: [PlanIssue] = []
    package private(set) var omittedErrors = 0

    package init() {}

    package var hasErrors: Bool { !errors.isEmpty || omittedErrors > 0 }

    package mutating func append(_ issue: PlanIssue) {
        switch issue.severity {
        case .error:
            if errors.count < PlanIssueList.cap {
                errors.append(issue)
            } else {
                omittedErrors += 1
            }
        case .warning:
            if warnings.count < PlanIssueList.cap { warnings.append(issue) }
        }
    }

    package mutating func append(contentsOf issues: [PlanIssue]) {
        for issue in issues { append(issue) }
    }

    /// An error that must be seen even when the list is full (it explains the others).
    package mutating func appendEvenIfFull(_ issue: PlanIssue) {
        errors.append(issue)
    }

    /// Counts errors that were found but not built (e.g. spacing pairs beyond a limit).
    package mutating func addOmittedErrors(_ count: Int) {
        omittedErrors += count
    }

    /// Errors, then the `moreErrors` line if any were left out, then warnings.
    package var all: [PlanIssue] {
        var result = errors
        if omittedErrors > 0 {
            result.append(.error(.moreErrors, "$", value: String(omittedErrors),
                                 "… and \(omittedErrors) more error\(omittedErrors == 1 ? "" : "s") not listed"))
        }
        result.append(contentsOf: warnings)
        return result
    }
}
