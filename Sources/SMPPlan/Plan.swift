// The in-memory model of an `smp-plan/1` file (see docs/plan-format.md).
//
// Values are integers in the wire's units (micrometres, microseconds). The file's millimetres and
// milliseconds are converted once, by `PlanLoader`, rounding to the nearest unit (halves away from
// zero), after the file's values have been checked in the file's own units.

/// One dot of a plan, in the units the device speaks.
public struct PlanDot: Sendable, Hashable {
    /// The plan's id for the dot: 1...4294967295, unique within the plan.
    public let id: UInt32
    /// Position from the centre of travel.
    public let xMicrometres: Int32
    public let yMicrometres: Int32
    /// Needle penetration.
    public let depthMicrometres: Int32
    /// Time the needle stays at depth.
    public let dwellMicroseconds: Int32
    /// Free-form region name from the file (e.g. "hairline-front"), nil when absent.
    public let region: String?
    /// Position of the dot in the file's `dots` array (the `12` of `dots[12]`).
    public let index: Int

    public init(id: UInt32, xMicrometres: Int32, yMicrometres: Int32, depthMicrometres: Int32,
                dwellMicroseconds: Int32, region: String? = nil, index: Int) {
        self.id = id
        self.xMicrometres = xMicrometres
        self.yMicrometres = yMicrometres
        self.depthMicrometres = depthMicrometres
        self.dwellMicroseconds = dwellMicroseconds
        self.region = region
        self.index = index
    }

    /// The dot's path in the file, e.g. `dots[12]`.
    public var path: String { "dots[\(index)]" }
}

/// A calendar date written `YYYY-MM-DD` in a plan. Only the shape and the calendar are checked.
public struct PlanDate: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let year: Int
    public let month: Int
    public let day: Int

    /// Nil unless `year`-`month`-`day` is a real date of the proleptic Gregorian calendar,
    /// year 1...9999.
    public init?(year: Int, month: Int, day: Int) {
        guard (1...9999).contains(year), (1...12).contains(month),
              (1...PlanDate.daysIn(month: month, year: year)).contains(day) else { return nil }
        self.year = year
        self.month = month
        self.day = day
    }

    /// Parses exactly `YYYY-MM-DD` (ASCII digits, two hyphens, ten characters).
    public init?(_ text: String) {
        let bytes = Array(text.utf8)
        guard bytes.count == 10, bytes[4] == UInt8(ascii: "-"), bytes[7] == UInt8(ascii: "-") else {
            return nil
        }
        func digits(_ range: Range<Int>) -> Int? {
            var value = 0
            for index in range {
                let byte = bytes[index]
                guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
                value = value * 10 + Int(byte - UInt8(ascii: "0"))
            }
            return value
        }
        guard let year = digits(0..<4), let month = digits(5..<7), let day = digits(8..<10) else {
            return nil
        }
        self.init(year: year, month: month, day: day)
    }

    package static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2:
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
            return leap ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    public static func < (lhs: PlanDate, rhs: PlanDate) -> Bool {
        (lhs.year, lhs.month, lhs.day) < (rhs.year, rhs.month, rhs.day)
    }

    public var description: String {
        func pad(_ value: Int, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))"
    }
}

/// The optional `client` object. Clinical rules (e.g. transplant timing) are not applied here.
public struct PlanClient: Sendable, Hashable {
    /// A clinic's reference for the client (pseudonymous; no names in plan files).
    public let reference: String
    public let hairTransplantDate: PlanDate?

    public init(reference: String, hairTransplantDate: PlanDate? = nil) {
        self.reference = reference
        self.hairTransplantDate = hairTransplantDate
    }
}

/// The optional `session` object: which session of a course this plan is for.
public struct PlanSession: Sendable, Hashable {
    /// 1-based session number.
    public let number: Int
    /// Number of sessions planned in the course, when known.
    public let of: Int?
    public let date: PlanDate?

    public init(number: Int, of: Int? = nil, date: PlanDate? = nil) {
        self.number = number
        self.of = of
        self.date = date
    }
}

/// One earlier session a designed plan was placed around (`design.after[i]`): its dots were
/// fixed points the new dots keep the minimum spacing from.
public struct PlanDesignSource: Sendable, Hashable {
    /// The earlier plan's `plan_id`.
    public let planID: String
    /// SHA-256 of the earlier plan file, lowercase hex, when it was designed against the file.
    public let planSHA256: String?
    /// The treatment-records session, when it was designed against what the records prove was
    /// injected rather than against the plan.
    public let recordSession: Int64?
    /// How many of its dots were fixed points.
    public let dotCount: Int?

    public init(planID: String, planSHA256: String? = nil, recordSession: Int64? = nil, dotCount: Int? = nil) {
        self.planID = planID
        self.planSHA256 = planSHA256
        self.recordSession = recordSession
        self.dotCount = dotCount
    }
}

/// The optional `design` object: the plan was written by `smpctl design`, for session
/// `session.number` of a course, around the dots of earlier sessions. Links a course together in
/// the records.
public struct PlanDesign: Sendable, Hashable {
    /// The `design_id` of the `smp-design/1` file.
    public let designID: String
    /// The earlier sessions, in the order given.
    public let after: [PlanDesignSource]

    public init(designID: String, after: [PlanDesignSource] = []) {
        self.designID = designID
        self.after = after
    }
}

/// A loaded plan. A `Plan` from `PlanLoader` has passed validation against the envelope it was
/// loaded with; run `PlanValidator.validate` again with a tighter envelope (e.g. after HELLO).
public struct Plan: Sendable {
    public let planID: String
    /// In file order; `dots[i].index == i` for a loaded plan.
    public let dots: [PlanDot]
    public let client: PlanClient?
    public let session: PlanSession?
    /// The path the plan was loaded from; nil when loaded from memory.
    public let sourcePath: String?
    /// SHA-256 of the file's bytes, lowercase hex; set by `PlanLoader`, nil for a plan built in memory.
    public let sha256: String?
    /// Set when the plan was designed by `smpctl design` (the `design` object).
    public let design: PlanDesign?

    public init(planID: String, dots: [PlanDot], client: PlanClient? = nil, session: PlanSession? = nil,
                sourcePath: String? = nil, sha256: String? = nil, design: PlanDesign? = nil) {
        self.planID = planID
        self.dots = dots
        self.client = client
        self.session = session
        self.sourcePath = sourcePath
        self.sha256 = sha256
        self.design = design
    }
}
