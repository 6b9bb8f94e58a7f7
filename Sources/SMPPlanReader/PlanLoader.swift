import SMPSystem
import SMPPlan
import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads `smp-plan/1` files (docs/plan-format.md) into a validated `Plan`.
///
/// Loading is two stages: `PlanJSONReader` (a plain plan, one pass over the bytes) or else
/// `PlanDecoding` (every other file) turns JSON into a raw document and reports shape problems;
/// `resolve` below applies defaults, checks every value in the file's own units against the
/// envelope (before rounding, so 1.5004 mm is refused under a 1.5 mm maximum; see
/// `SafetyEnvelope.rangeIssue` for why this is exact at the bounds), converts to µm/µs
/// and checks spacing. Every problem is collected; the load fails if there is any error.
public enum PlanLoader {
    /// Files above this size are refused before reading (a 200,000-dot plan is about 20 MB).
    public static let maximumFileBytes = 256 * 1024 * 1024

    /// The only format this version reads.
    public static let format = "smp-plan/1"

    /// Loads and validates the plan at `path`. Returns the plan and its warnings; throws with every
    /// error (and the warnings) otherwise.
    public static func load(path: String, envelope: SafetyEnvelope = .builtIn)
        throws(PlanLoadError) -> (Plan, warnings: [PlanIssue])
    {
        let loaded = try loadUntrimmed(path: path, envelope: envelope)
        // The file, its parse and the raw dots are freed: their pages go back to the kernel
        // rather than stay in the session's peak RSS (issue 16).
        Sys.releaseFreeHeap()
        return loaded
    }

    private static func loadUntrimmed(path: String, envelope: SafetyEnvelope)
        throws(PlanLoadError) -> (Plan, warnings: [PlanIssue])
    {
        let (raw, digest) = try readAndDecode(path)
        return try finish(raw, sha256: digest, sourceName: path, sourcePath: path, envelope: envelope)
    }

    /// Stage 1 of a file: the bytes as read (not copied into a `Data`) are parsed and hashed in
    /// place, and released when this returns, before stage 2 builds the plan's dots.
    private static func readAndDecode(_ path: String) throws(PlanLoadError) -> (RawPlanDocument, String) {
        let bytes: [UInt8]
        switch readBytes(path) {
        case .success(let read): bytes = read
        case .failure(let failure): throw PlanLoadError(file: path, issues: [failure.issue])
        }
        switch decode(bytes) {
        case .success(let document): return (document, sha256(bytes))
        case .failure(let failure): throw PlanLoadError(file: path, issues: [failure.issue])
        }
    }

    /// Loads and validates a plan from memory; `sourceName` names it in messages.
    public static func load(data: Data, sourceName: String, envelope: SafetyEnvelope)
        throws(PlanLoadError) -> (Plan, warnings: [PlanIssue])
    {
        switch decode(data) {
        case .success(let document):
            return try finish(document, sha256: sha256(data), sourceName: sourceName, sourcePath: nil, envelope: envelope)
        case .failure(let failure):
            throw PlanLoadError(file: sourceName, issues: [failure.issue])
        }
    }

    /// The SHA-256 of exactly the bytes that were read, lowercase hex: the record ties a session to them.
    private static func sha256(_ bytes: some DataProtocol) -> String {
        SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
    }

    /// Stage 2 and the verdict.
    private static func finish(_ raw: RawPlanDocument, sha256 digest: String, sourceName: String, sourcePath: String?,
                               envelope: SafetyEnvelope) throws(PlanLoadError) -> (Plan, warnings: [PlanIssue])
    {
        var issues = PlanIssueList()
        let plan = resolve(raw, envelope: envelope, sourcePath: sourcePath, issues: &issues)
        if plan == nil, !issues.hasErrors {
            // Cannot happen (every unbuildable dot has a reported reason); refuse loudly if it does.
            issues.append(.error(.wrongType, "$", "the plan could not be built (internal error: no reason recorded)"))
        }
        guard let plan, !issues.hasErrors else {
            throw PlanLoadError(file: sourceName, issues: issues.all)
        }
        let hashed = Plan(planID: plan.planID, dots: plan.dots, client: plan.client, session: plan.session,
                          sourcePath: plan.sourcePath, sha256: digest, design: plan.design)
        return (hashed, warnings: issues.all.filter { !$0.isError })
    }

    /// Stage 1: the one-pass byte reader for a plain plan (`PlanJSONReader`), else the Foundation
    /// decoder, which explains every shape problem (and reads the rare features the fast reader
    /// leaves to it: escapes, UTF-16, a byte order mark).
    static func decode(_ bytes: some ContiguousBytes & DataProtocol) -> Result<RawPlanDocument, PlanIssueFailure> {
        if let document = bytes.withUnsafeBytes({ PlanJSONReader.read($0) }) { return .success(document) }
        if let data = bytes as? Data { return PlanDecoding.decode(data) }
        return PlanDecoding.decode(Data(bytes))
    }

    // MARK: Reading the file

    /// The file's bytes (`RegularFile`: a FIFO, a directory or an oversized file is refused with
    /// the system's own reason). `document` names what the file should be in the size message
    /// ("a plan", "a design").
    package static func readFile(_ path: String, document: String = "a plan") -> Result<Data, PlanIssueFailure> {
        readBytes(path, document: document).map { Data($0) }
    }

    /// `readFile`'s bytes as read.
    package static func readBytes(_ path: String, document: String = "a plan") -> Result<[UInt8], PlanIssueFailure> {
        RegularFile.read(path: path, maximumBytes: maximumFileBytes).mapError { error in
            let code: PlanIssue.Code, reason: String
            if case .tooLarge(let bytes, let maximum) = error {
                (code, reason) = (.fileTooLarge, "\(bytes) bytes is more than the \(maximum) allowed for \(document)")
            } else {
                (code, reason) = (.fileUnreadable, "\(error)")
            }
            return PlanIssueFailure(issue: .error(code, "$", "cannot read \(PlanText.quoted(path, maximumLength: 200)): \(reason)"))
        }
    }

    // MARK: Stage 2: values, defaults, units, spacing

    /// Checks the raw document; returns the plan when every dot could be built (the caller still
    /// refuses it if `issues` has errors).
    static func resolve(_ raw: RawPlanDocument, envelope: SafetyEnvelope, sourcePath: String?,
                        issues: inout PlanIssueList) -> Plan? {
        guard raw.isObject else {
            // Not an object at all: that one error says it; "format is missing" etc. would be noise.
            issues.append(contentsOf: raw.issues)
            return nil
        }
        issues.addOmittedErrors(raw.unlistedErrors)
        // Issues outside `dots`, put in the format's order once all are known.
        var top = raw.issues
        if let reason = envelope.emptyReason {
            top.append(.error(.envelopeEmpty, "$", "no dot can run: the safety envelope admits nothing (\(reason))"))
        }

        // format
        switch raw.format {
        case .absent:
            top.append(.error(.missingKey, "format", limit: PlanText.quoted(format),
                              "format is missing: a plan must declare \"format\": \"\(format)\""))
        case .present(let value) where value != format:
            top.append(.error(.unsupportedFormat, "format", value: PlanText.quoted(value), limit: PlanText.quoted(format),
                              "format = \(PlanText.quoted(value)) is not supported; this smpctl reads \(PlanText.quoted(format))"))
        default: break
        }

        // plan_id
        var planID: String?
        switch raw.planID {
        case .absent:
            top.append(.error(.missingKey, "plan_id", limit: "non-empty string", "plan_id is missing"))
        case .present(let value):
            if value.allSatisfy(\.isWhitespace) {
                top.append(.error(.emptyValue, "plan_id", value: PlanText.quoted(value), limit: "non-empty string",
                                  "plan_id = \(PlanText.quoted(value)) must not be empty or blank"))
            } else {
                planID = value
            }
        case .invalid: break
        }

        // defaults (an unusable `defaults` object makes both unusable: no "missing" cascade)
        let defaults = raw.defaults.value
            ?? (raw.defaults.isAbsent ? RawDefaults() : RawDefaults(depthMillimetres: .invalid, dwellMilliseconds: .invalid))
        let defaultDepth = checkedDefault(defaults.depthMillimetres, path: "defaults.depth_mm", code: .depthOutOfRange,
                                          range: envelope.depthMicrometres, unit: "mm", issues: &top)
        let defaultDwell = checkedDefault(defaults.dwellMilliseconds, path: "defaults.dwell_ms", code: .dwellOutOfRange,
                                          range: envelope.dwellMicroseconds, unit: "ms", issues: &top)

        let client = resolveClient(raw.client, issues: &top)
        let session = resolveSession(raw.session, issues: &top)
        let design = resolveDesign(raw.design, issues: &top)

        // dots
        let rawDots = raw.dots.value ?? []
        if raw.dots.isAbsent {
            top.append(.error(.missingKey, "dots", limit: "non-empty array", "dots is missing: a plan needs at least one dot"))
        } else if raw.dots.value?.isEmpty == true {
            top.append(.error(.emptyValue, "dots", value: "[]", limit: "non-empty array",
                              "dots is empty: a plan needs at least one dot"))
        }
        issues.append(contentsOf: inDocumentOrder(top))
        if rawDots.isEmpty { return nil }

        var dots: [PlanDot] = []
        dots.reserveCapacity(rawDots.count)
        var allDotsBuilt = true
        var firstIndexOfID: [UInt32: Int] = [:]
        firstIndexOfID.reserveCapacity(rawDots.count)
        // Positions of every dot that has both coordinates, for the spacing check.
        var spacingXs: [Int32] = [], spacingYs: [Int32] = [], spacingIndex: [Int] = []
        spacingXs.reserveCapacity(rawDots.count)
        spacingYs.reserveCapacity(rawDots.count)
        spacingIndex.reserveCapacity(rawDots.count)
        var idOfIndex = [UInt32](repeating: 0, count: rawDots.count)
        var facts = PlanValidator.WarningFacts(envelope: envelope)

        for (index, rawDot) in rawDots.enumerated() {
            issues.append(contentsOf: rawDot.issues)
            guard rawDot.isObject else {
                allDotsBuilt = false
                continue
            }
            // Built only when a message needs it: this loop runs for every dot.
            var path: String { "dots[\(index)]" }

            // id
            var id: UInt32?
            switch rawDot.id {
            case .absent:
                issues.append(.error(.missingKey, path + ".id", limit: "integer 1...4294967295", "\(path).id is missing"))
            case .present(let value):
                var shown: String { PlanText.number(value) }
                if value != value.rounded(.towardZero) {
                    issues.append(.error(.notInteger, path + ".id", value: shown, limit: "whole number",
                                         "\(path).id = \(shown) must be a whole number"))
                } else if value < 1 || value > Double(UInt32.max) {
                    issues.append(.error(.idOutOfRange, path + ".id", value: shown, limit: "1...4294967295",
                                         "\(path).id = \(shown) must be between 1 and 4294967295"))
                } else {
                    let candidate = UInt32(value)
                    if let first = firstIndexOfID[candidate] {
                        issues.append(.error(.duplicateID, path + ".id", value: shown, limit: "unique id",
                                             "\(path).id = \(shown) is already the id of dots[\(first)]"))
                    } else {
                        firstIndexOfID[candidate] = index
                        id = candidate
                    }
                }
            case .invalid: break
            }
            if let id { idOfIndex[index] = id }

            // position
            let x = coordinate(rawDot.xMillimetres, axis: "x", index: index, travel: envelope.travelXMicrometres,
                               id: id, issues: &issues)
            let y = coordinate(rawDot.yMillimetres, axis: "y", index: index, travel: envelope.travelYMicrometres,
                               id: id, issues: &issues)
            if let x, let y {
                spacingXs.append(x)
                spacingYs.append(y)
                spacingIndex.append(index)
            }

            // depth and dwell: the dot's own value, else the default
            let depth = dotValue(rawDot.depthMillimetres, default: defaultDepth, key: "depth_mm", index: index,
                                 code: .depthOutOfRange, range: envelope.depthMicrometres, unit: "mm", id: id,
                                 issues: &issues)
            let dwell = dotValue(rawDot.dwellMilliseconds, default: defaultDwell, key: "dwell_ms", index: index,
                                 code: .dwellOutOfRange, range: envelope.dwellMicroseconds, unit: "ms", id: id,
                                 issues: &issues)

            // region
            var region: String?
            if case .present(let value) = rawDot.region {
                if isBlank(value) {
                    issues.append(.error(.emptyValue, path + ".region", value: PlanText.quoted(value),
                                         limit: "non-empty string",
                                         "\(path).region = \(PlanText.quoted(value)) must not be blank (leave the key out instead)"
                                         + PlanText.idSuffix(id)))
                } else {
                    region = value
                }
            }

            facts.count(path: path, hasRegion: !rawDot.region.isAbsent, dwellMicroseconds: dwell)

            if let id, let x, let y, let depth, let dwell {
                dots.append(PlanDot(id: id, xMicrometres: x, yMicrometres: y, depthMicrometres: depth,
                                    dwellMicroseconds: dwell, region: region, index: index))
            } else {
                allDotsBuilt = false
            }
        }

        // spacing, over every dot with a position (even those with other errors)
        PlanValidator.spacingIssues(xs: spacingXs, ys: spacingYs, paths: { "dots[\(spacingIndex[$0])]" },
                                    ids: { idOfIndex[spacingIndex[$0]] }, envelope: envelope, issues: &issues)

        PlanValidator.warnings(facts, envelope: envelope, issues: &issues)

        guard allDotsBuilt, let planID else { return nil }
        if !issues.hasErrors {
            // Defence in depth: the converted integers must pass the same envelope the file's values
            // passed. (They always should: rounding cannot cross an integer bound.)
            for dot in dots {
                issues.append(contentsOf: envelope.issues(for: dot))
            }
        }
        return Plan(planID: planID, dots: dots, client: client, session: session, sourcePath: sourcePath,
                    design: design)
    }

    /// A default checked in file units; nil when absent or unusable. An out-of-range default is
    /// reported once here, not again at every dot using it.
    private static func checkedDefault(_ field: RawField<Double>, path: String, code: PlanIssue.Code,
                                       range: ClosedRange<Int32>, unit: String,
                                       issues: inout [PlanIssue]) -> DefaultValue {
        switch field {
        case .absent: return .absent
        case .invalid: return .unusable
        case .present(let value):
            if let issue = SafetyEnvelope.rangeIssue(code, path: path, value: PlanText.number(value), fileValue: value,
                                                      range: range, unit: unit, id: nil) {
                issues.append(issue)
                return .unusable
            }
            return .value(micro(value * 1000))
        }
    }

    private enum DefaultValue {
        case absent
        /// Present but wrong (already reported): dots relying on it are not reported again.
        case unusable
        case value(Int32)
    }

    /// The dot's own value (checked in file units) or the default, in micro-units; nil when
    /// missing or unusable (reported). `index` names the dot only in messages.
    private static func dotValue(_ field: RawField<Double>, default fallback: DefaultValue, key: String,
                                 index: Int, code: PlanIssue.Code, range: ClosedRange<Int32>, unit: String,
                                 id: UInt32?, issues: inout PlanIssueList) -> Int32? {
        switch field {
        case .present(let value):
            if let issue = SafetyEnvelope.rangeIssue(code, path: "dots[\(index)].\(key)", value: PlanText.number(value),
                                                      fileValue: value, range: range, unit: unit, id: id) {
                issues.append(issue)
                return nil
            }
            return micro(value * 1000)
        case .invalid:
            return nil
        case .absent:
            switch fallback {
            case .value(let micro): return micro
            case .unusable: return nil
            case .absent:
                issues.append(.error(.noValueOrDefault, "dots[\(index)].\(key)", limit: "a value or defaults.\(key)",
                                     "dots[\(index)] has no \(key) and the plan has no defaults.\(key)"
                                     + PlanText.idSuffix(id)))
                return nil
            }
        }
    }

    /// A coordinate in µm, or nil when missing or unusable. Out of travel is reported but the
    /// position is still returned, for the spacing check.
    private static func coordinate(_ field: RawField<Double>, axis: String, index: Int, travel: Int32,
                                   id: UInt32?, issues: inout PlanIssueList) -> Int32? {
        switch field {
        case .absent:
            issues.append(.error(.missingKey, "dots[\(index)].\(axis)_mm", limit: "a number",
                                 "dots[\(index)].\(axis)_mm is missing" + PlanText.idSuffix(id)))
            return nil
        case .invalid:
            return nil
        case .present(let value):
            if let issue = SafetyEnvelope.travelIssue(axis: axis, path: "dots[\(index)].\(axis)_mm",
                                                       value: PlanText.number(value), fileValue: value, travel: travel,
                                                       id: id) {
                issues.append(issue)
            }
            return micro(value * 1000)
        }
    }

    /// `value.allSatisfy(\.isWhitespace)`, answered from the first byte when that is an ASCII
    /// letter or digit (a character that starts with one is not whitespace): run for every dot's
    /// region, where Unicode properties cost more than the rest of the dot.
    @inline(__always)
    static func isBlank(_ value: String) -> Bool {
        if let first = value.utf8.first, first &- 0x30 < 10 || (first | 0x20) &- 0x61 < 26 { return false }
        return value.allSatisfy(\.isWhitespace)
    }

    /// Micro-units from a value already multiplied by 1000: nearest integer, halves away from zero,
    /// saturating at the ends of Int32 (such values are out of every envelope and already reported).
    package static func micro(_ scaled: Double) -> Int32 {
        let rounded = scaled.rounded(.toNearestOrAwayFromZero)
        if rounded.isNaN { return 0 }
        if rounded >= Double(Int32.max) { return .max }
        if rounded <= Double(Int32.min) { return .min }
        return Int32(rounded)
    }

    /// Top-level issues in the order of the format's keys (`$` first, unknown keys last), since
    /// the decoder gives keys in no particular order.
    private static func inDocumentOrder(_ issues: [PlanIssue]) -> [PlanIssue] {
        inDocumentOrder(issues, keys: PlanKeys.document)
    }

    /// `issues` in the order of `keys` by their first path component (`$` first, unknown keys last).
    package static func inDocumentOrder(_ issues: [PlanIssue], keys: [String]) -> [PlanIssue] {
        let order = Dictionary(uniqueKeysWithValues: (["$"] + keys).enumerated().map { ($1, $0) })
        func rank(_ issue: PlanIssue) -> Int {
            order[String(issue.path.prefix { $0 != "." && $0 != "[" })] ?? order.count
        }
        return issues.enumerated().sorted { lhs, rhs in
            let (left, right) = (rank(lhs.element), rank(rhs.element))
            if left != right { return left < right }
            if left == order.count, lhs.element.path != rhs.element.path { return lhs.element.path < rhs.element.path }
            return lhs.offset < rhs.offset
        }.map(\.element)
    }

    private static func date(_ field: RawField<String>, path: String, issues: inout [PlanIssue]) -> PlanDate? {
        guard case .present(let text) = field else { return nil }
        if let date = PlanDate(text) { return date }
        let shaped = text.utf8.count == 10 && text.utf8.enumerated().allSatisfy { offset, byte in
            offset == 4 || offset == 7 ? byte == UInt8(ascii: "-") : (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
        }
        let problem = shaped ? "is not a real calendar date" : "is not a date written YYYY-MM-DD"
        issues.append(.error(.invalidDate, path, value: PlanText.quoted(text), limit: "YYYY-MM-DD",
                             "\(path) = \(PlanText.quoted(text)) \(problem)"))
        return nil
    }

    /// The `client` object of a plan or a design.
    package static func resolveClient(_ field: RawField<RawClient>, issues: inout [PlanIssue]) -> PlanClient? {
        guard case .present(let raw) = field else { return nil }
        let reference = nonBlank(raw.reference, path: "client.reference", required: true, issues: &issues)
        let transplant = date(raw.hairTransplantDate, path: "client.hair_transplant_date", issues: &issues)
        guard let reference else { return nil }
        return PlanClient(reference: reference, hairTransplantDate: transplant)
    }

    /// A string that must not be empty or blank; nil (reported) otherwise.
    package static func nonBlank(_ field: RawField<String>, path: String, required: Bool,
                                 issues: inout [PlanIssue]) -> String? {
        switch field {
        case .absent:
            if required {
                issues.append(.error(.missingKey, path, limit: "non-empty string", "\(path) is missing"))
            }
        case .present(let value):
            if !value.allSatisfy(\.isWhitespace) { return value }
            issues.append(.error(.emptyValue, path, value: PlanText.quoted(value), limit: "non-empty string",
                                 "\(path) = \(PlanText.quoted(value)) must not be empty or blank"))
        case .invalid: break
        }
        return nil
    }

    /// A whole number in `range`, nil (reported) otherwise; `code` for a number outside it, with
    /// `limit` and "must be `requirement`" (by default the range itself).
    package static func wholeNumber(_ field: RawField<Double>, path: String, range: ClosedRange<Double>,
                                    code: PlanIssue.Code, limit: String? = nil, requirement: String? = nil,
                                    issues: inout [PlanIssue]) -> Int64? {
        guard case .present(let value) = field else { return nil }
        let shown = PlanText.number(value)
        if value != value.rounded(.towardZero) {
            issues.append(.error(.notInteger, path, value: shown, limit: "whole number",
                                 "\(path) = \(shown) must be a whole number"))
            return nil
        }
        guard range.contains(value) else {
            let bounds = "\(PlanText.number(range.lowerBound))...\(PlanText.number(range.upperBound))"
            issues.append(.error(code, path, value: shown, limit: limit ?? bounds,
                                 "\(path) = \(shown) must be \(requirement ?? "in " + bounds)"))
            return nil
        }
        return Int64(value)
    }

    /// The `design` object written by `smpctl design` (docs/plan-format.md).
    private static func resolveDesign(_ field: RawField<RawPlanDesign>, issues: inout [PlanIssue]) -> PlanDesign? {
        guard case .present(let raw) = field else { return nil }
        let designID = nonBlank(raw.designID, path: "design.design_id", required: true, issues: &issues)
        var sources: [PlanDesignSource] = []
        var allRead = true
        for (index, element) in (raw.after.value ?? []).enumerated() {
            guard let element else {
                allRead = false
                continue
            }
            let path = "design.after[\(index)]"
            let planID = nonBlank(element.planID, path: path + ".plan_id", required: true, issues: &issues)
            var digest: String?
            if case .present(let text) = element.planSHA256 {
                let isHex = text.utf8.count == 64 && text.utf8.allSatisfy {
                    (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0)
                }
                if isHex {
                    digest = text
                } else {
                    issues.append(.error(.invalidDigest, path + ".plan_sha256", value: PlanText.quoted(text),
                                         limit: "64 lowercase hexadecimal digits",
                                         "\(path).plan_sha256 = \(PlanText.quoted(text)) must be a SHA-256 written as 64 lowercase hexadecimal digits"))
                    allRead = false
                }
            }
            let recordSession = wholeNumber(element.recordSession, path: path + ".record_session",
                                            range: 1...999_999_999_999, code: .valueOutOfRange, issues: &issues)
            let dots = wholeNumber(element.dots, path: path + ".dots", range: 0...999_999_999_999,
                                   code: .valueOutOfRange, issues: &issues)
            guard let planID else {
                allRead = false
                continue
            }
            sources.append(PlanDesignSource(planID: planID, planSHA256: digest, recordSession: recordSession,
                                            dotCount: dots.map(Int.init)))
        }
        guard let designID, allRead, raw.after.value != nil || raw.after.isAbsent else { return nil }
        return PlanDesign(designID: designID, after: sources)
    }

    private static func resolveSession(_ field: RawField<RawSession>, issues: inout [PlanIssue]) -> PlanSession? {
        guard case .present(let raw) = field else { return nil }
        func count(_ field: RawField<Double>, _ path: String) -> Int? {
            wholeNumber(field, path: path, range: 1...Double(Int32.max), code: .invalidSession, limit: "≥ 1",
                        requirement: "1 or more", issues: &issues).map(Int.init)
        }
        if raw.number.isAbsent {
            issues.append(.error(.missingKey, "session.number", limit: "integer ≥ 1", "session.number is missing"))
        }
        let number = count(raw.number, "session.number")
        let of = count(raw.of, "session.of")
        if let number, let of, number > of {
            issues.append(.error(.invalidSession, "session.number", value: String(number), limit: "≤ session.of (\(of))",
                                 "session.number = \(number) is more than session.of = \(of)"))
        }
        let sessionDate = date(raw.date, path: "session.date", issues: &issues)
        guard let number else { return nil }
        return PlanSession(number: number, of: of, date: sessionDate)
    }
}
