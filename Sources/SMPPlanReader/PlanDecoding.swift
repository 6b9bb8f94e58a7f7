import SMPPlan
import Foundation

// Stage 1 of loading: JSON → a "raw" document that keeps every value the file holds, as written
// (numbers as Double), plus the shape problems found on the way (unknown keys, wrong types,
// numbers a Double cannot hold). Nothing here throws past the top level: every problem becomes a
// `PlanIssue` so that all of them are reported, not just the first.
//
// Stage 2 (`PlanLoader`) resolves defaults, checks values and converts units. Only this file knows
// about `Decoder`; a faster parser can replace it by producing the same `RawPlanDocument`. Keys
// written twice in one object, which JSONDecoder cannot see, are found by `JSONDuplicateKeys` over
// the same bytes.

/// A field as found in the file. Equatable so that the two readers' documents can be compared
/// (PlanReaderDifferentialTests, `make fuzz`).
package enum RawField<Value: Sendable>: Sendable {
    /// The key is not there.
    case absent
    /// The key is there but its value is unusable; the problem is already reported.
    case invalid
    case present(Value)

    package var value: Value? {
        if case .present(let value) = self { return value }
        return nil
    }

    package var isAbsent: Bool {
        if case .absent = self { return true }
        return false
    }
}

struct RawDefaults: ObjectFields, Equatable {
    var depthMillimetres: RawField<Double> = .absent
    var dwellMilliseconds: RawField<Double> = .absent

    static let keys = ["depth_mm", "dwell_ms"]

    mutating func read(_ key: PlanJSONKey, with reader: inout ObjectReader) -> Bool {
        switch key.stringValue {
        case "depth_mm": depthMillimetres = reader.number(key)
        case "dwell_ms": dwellMilliseconds = reader.number(key)
        default: return false
        }
        return true
    }
}

/// The `client` object, the same in plans and designs.
package struct RawClient: ObjectFields, Equatable {
    var reference: RawField<String> = .absent
    var hairTransplantDate: RawField<String> = .absent

    package init() {}

    package static let keys = ["reference", "hair_transplant_date"]

    package mutating func read(_ key: PlanJSONKey, with reader: inout ObjectReader) -> Bool {
        switch key.stringValue {
        case "reference": reference = reader.string(key)
        case "hair_transplant_date": hairTransplantDate = reader.string(key)
        default: return false
        }
        return true
    }
}

struct RawSession: ObjectFields, Equatable {
    var number: RawField<Double> = .absent
    var of: RawField<Double> = .absent
    var date: RawField<String> = .absent

    static let keys = ["number", "of", "date"]

    mutating func read(_ key: PlanJSONKey, with reader: inout ObjectReader) -> Bool {
        switch key.stringValue {
        case "number": number = reader.number(key)
        case "of": of = reader.number(key)
        case "date": date = reader.string(key)
        default: return false
        }
        return true
    }
}

struct RawPlanDesign: ObjectFields, Equatable {
    var designID: RawField<String> = .absent
    var after: RawField<[RawDesignSource?]> = .absent

    static let keys = ["design_id", "after"]

    mutating func read(_ key: PlanJSONKey, with reader: inout ObjectReader) -> Bool {
        switch key.stringValue {
        case "design_id": designID = reader.string(key)
        case "after": after = reader.array(key, of: FieldsObject<RawDesignSource>.self, expected: "an array of objects")
        default: return false
        }
        return true
    }
}

struct RawDesignSource: ObjectFields, Equatable {
    var planID: RawField<String> = .absent
    var planSHA256: RawField<String> = .absent
    var recordSession: RawField<Double> = .absent
    var dots: RawField<Double> = .absent

    static let keys = ["plan_id", "plan_sha256", "record_session", "dots"]

    mutating func read(_ key: PlanJSONKey, with reader: inout ObjectReader) -> Bool {
        switch key.stringValue {
        case "plan_id": planID = reader.string(key)
        case "plan_sha256": planSHA256 = reader.string(key)
        case "record_session": recordSession = reader.number(key)
        case "dots": dots = reader.number(key)
        default: return false
        }
        return true
    }
}

/// One element of `dots` as written. There is one per dot of the plan until it is resolved, so
/// it is kept small (72 bytes, not 112 as five `RawField<Double>`s would make it): the five
/// numbers stored bare, whether each is absent, invalid or present in two bits of `states`.
struct RawDot: Sendable, Equatable {
    private var numbers: (Double, Double, Double, Double, Double) = (0, 0, 0, 0, 0)
    var region: RawField<String> = .absent
    /// Two bits per number, in the order of `numbers`: 0 absent, 1 invalid, 2 present.
    private var states: UInt16 = 0
    /// False when the array element was not an object (already reported).
    var isObject = true
    /// Shape problems of this dot, sorted by path (almost always empty).
    var issues: [PlanIssue] = []

    var id: RawField<Double> {
        get { field(0, numbers.0) }
        set { numbers.0 = set(0, newValue) }
    }
    var xMillimetres: RawField<Double> {
        get { field(1, numbers.1) }
        set { numbers.1 = set(1, newValue) }
    }
    var yMillimetres: RawField<Double> {
        get { field(2, numbers.2) }
        set { numbers.2 = set(2, newValue) }
    }
    var depthMillimetres: RawField<Double> {
        get { field(3, numbers.3) }
        set { numbers.3 = set(3, newValue) }
    }
    var dwellMilliseconds: RawField<Double> {
        get { field(4, numbers.4) }
        set { numbers.4 = set(4, newValue) }
    }

    @inline(__always)
    private func field(_ slot: UInt16, _ value: Double) -> RawField<Double> {
        switch states >> (2 * slot) & 3 {
        case 0: return .absent
        case 1: return .invalid
        default: return .present(value)
        }
    }

    /// Records `field`'s state in `slot` and returns the number to store (0 unless present, so
    /// that equal dots compare equal).
    @inline(__always)
    private mutating func set(_ slot: UInt16, _ field: RawField<Double>) -> Double {
        let (state, value): (UInt16, Double)
        switch field {
        case .absent: (state, value) = (0, 0)
        case .invalid: (state, value) = (1, 0)
        case .present(let number): (state, value) = (2, number)
        }
        states = states & ~(3 << (2 * slot)) | state << (2 * slot)
        return value
    }

    static func == (lhs: RawDot, rhs: RawDot) -> Bool {
        lhs.states == rhs.states && lhs.isObject == rhs.isObject && lhs.region == rhs.region && lhs.issues == rhs.issues
            && lhs.numbers.0.bitPattern == rhs.numbers.0.bitPattern && lhs.numbers.1.bitPattern == rhs.numbers.1.bitPattern
            && lhs.numbers.2.bitPattern == rhs.numbers.2.bitPattern && lhs.numbers.3.bitPattern == rhs.numbers.3.bitPattern
            && lhs.numbers.4.bitPattern == rhs.numbers.4.bitPattern
    }
}

struct RawPlanDocument: Sendable, Equatable {
    var format: RawField<String> = .absent
    var planID: RawField<String> = .absent
    var defaults: RawField<RawDefaults> = .absent
    var client: RawField<RawClient> = .absent
    var session: RawField<RawSession> = .absent
    var design: RawField<RawPlanDesign> = .absent
    var dots: RawField<[RawDot]> = .absent
    /// Shape problems outside `dots` (each dot carries its own).
    var issues: [PlanIssue] = []
    /// Errors found but not built: repeated keys beyond `PlanIssueList.cap`.
    var unlistedErrors = 0
    /// False when the top level is not a JSON object (already reported).
    var isObject = true
}

enum PlanKeys {
    static let document = ["format", "plan_id", "defaults", "client", "session", "design", "dots"]
    static let dot = ["id", "x_mm", "y_mm", "depth_mm", "dwell_ms", "region"]
}

// MARK: - Decoding with Foundation's JSONDecoder

extension RawField: Equatable where Value: Equatable {}

package struct PlanJSONKey: CodingKey {
    package var stringValue: String
    package var intValue: Int? { nil }
    package init(_ string: String) { stringValue = string }
    package init?(stringValue: String) { self.stringValue = stringValue }
    package init?(intValue: Int) { nil }
}

/// Reads the fields of one JSON object, turning every failure into an issue. Shared with the
/// design reader (SMPDesign), so both formats report problems alike.
package struct ObjectReader {
    package let container: KeyedDecodingContainer<PlanJSONKey>
    package let decoder: any Decoder
    package var issues: [PlanIssue] = []

    package init(_ container: KeyedDecodingContainer<PlanJSONKey>, decoder: any Decoder) {
        self.container = container
        self.decoder = decoder
    }

    package func path(_ key: PlanJSONKey) -> String {
        PlanText.path(decoder.codingPath + [key])
    }

    /// The value under `key` as written, and what JSON type it is, for "wrong type" messages.
    func describe(_ key: PlanJSONKey) -> (value: String, kind: String) {
        if (try? container.decodeNil(forKey: key)) == true { return ("null", "null") }
        if let string = try? container.decode(String.self, forKey: key) {
            return (PlanText.quoted(string), "a string")
        }
        if let bool = try? container.decode(Bool.self, forKey: key) { return (String(bool), "a boolean") }
        if (try? container.nestedContainer(keyedBy: PlanJSONKey.self, forKey: key)) != nil {
            return ("{…}", "an object")
        }
        if (try? container.nestedUnkeyedContainer(forKey: key)) != nil { return ("[…]", "an array") }
        if let number = try? container.decode(Double.self, forKey: key) {
            return (PlanText.number(number), "a number")
        }
        return ("", "an unreadable value")
    }

    package mutating func wrongType(_ key: PlanJSONKey, expected: String) {
        let (value, kind) = describe(key)
        let path = path(key)
        let message = value.isEmpty
            ? "\(path) must be \(expected), but its value cannot be read (e.g. a string that is not valid UTF-8)"
            : "\(path) = \(value) must be \(expected), not \(kind)"
        issues.append(.error(.wrongType, path, value: value, limit: expected, message))
    }

    package mutating func number(_ key: PlanJSONKey) -> RawField<Double> {
        do {
            let value = try container.decode(Double.self, forKey: key)
            guard value.isFinite else {
                // JSON has no NaN or infinity; kept in case a decoder ever lets one through.
                let path = path(key)
                issues.append(.error(.notFinite, path, value: PlanText.number(value), limit: "finite number",
                                     "\(path) = \(PlanText.number(value)) is not a finite number"))
                return .invalid
            }
            return .present(value)
        } catch let error as DecodingError {
            switch error {
            case .typeMismatch, .valueNotFound:
                wrongType(key, expected: "a number")
            default:
                notANumber(key, error)
            }
            return .invalid
        } catch {
            notANumber(key, error)
            return .invalid
        }
    }

    /// JSON numbers JSONDecoder will not turn into a Double: out of range (`1e400`, `1e-400`) or
    /// malformed in a way its lazy number scanning only notices on use (`01`).
    private mutating func notANumber(_ key: PlanJSONKey, _ error: any Error) {
        let path = path(key)
        let detail = String(describing: error)
        if let written = Self.parsedNumber(in: detail) {
            issues.append(.error(.notFinite, path, value: written, limit: "finite number",
                                 "\(path) = \(written) is too large or too small for a 64-bit number"))
        } else {
            // e.g. numberWithLeadingZero(location: …SourceLocation(line: 1, column: 8, index: 7))
            var at = ""
            if let line = detail.range(of: "line: "), let column = detail.range(of: "column: ") {
                let lineNumber = detail[line.upperBound...].prefix { $0.isNumber }
                let columnNumber = detail[column.upperBound...].prefix { $0.isNumber }
                if !lineNumber.isEmpty, !columnNumber.isEmpty { at = " at line \(lineNumber), column \(columnNumber)" }
            }
            issues.append(.error(.wrongType, path, limit: "a number",
                                 "\(path) is not a valid JSON number\(at)"))
        }
    }

    /// Foundation's `numberIsNotRepresentableInSwift(parsed: "1e400")` carries the text as written.
    private static func parsedNumber(in detail: String) -> String? {
        guard let start = detail.range(of: "parsed: \"") else { return nil }
        let rest = detail[start.upperBound...]
        guard let end = rest.firstIndex(of: "\"") else { return nil }
        let text = String(rest[..<end])
        return text.isEmpty ? nil : text
    }

    package mutating func string(_ key: PlanJSONKey) -> RawField<String> {
        do {
            return .present(try container.decode(String.self, forKey: key))
        } catch {
            wrongType(key, expected: "a string")
            return .invalid
        }
    }

    package mutating func object<T: Decodable & RawObject>(_ key: PlanJSONKey, as type: T.Type) -> RawField<T.Value> {
        do {
            let decoded = try container.decode(T.self, forKey: key)
            issues.append(contentsOf: decoded.issues)
            return decoded.value.map { .present($0) } ?? .invalid
        } catch {
            wrongType(key, expected: "an object")
            return .invalid
        }
    }

    /// An array of objects each read by `Element`; an element that is not an object is reported
    /// (by `Element`) and kept as nil, so indices stay those of the file.
    package mutating func array<Element: Decodable & RawObject>(_ key: PlanJSONKey, of type: Element.Type,
                                                               expected: String) -> RawField<[Element.Value?]> {
        guard var array = try? container.nestedUnkeyedContainer(forKey: key) else {
            wrongType(key, expected: expected)
            return .invalid
        }
        var values: [Element.Value?] = []
        while !array.isAtEnd {
            let index = array.currentIndex
            guard let element = try? array.decode(Element.self) else {
                // Elements never throw; if a decoder ever does, stop rather than loop forever.
                let path = path(key) + "[\(index)]"
                issues.append(.error(.wrongType, path, "\(path) could not be read"))
                return .invalid
            }
            issues.append(contentsOf: element.issues)
            values.append(element.value)
        }
        return .present(values)
    }

    package mutating func unknown(_ keys: [PlanJSONKey], known: [String]) {
        for key in keys.sorted(by: { $0.stringValue < $1.stringValue }) {
            let (value, _) = describe(key)
            let path = path(key)
            let shown = value.isEmpty ? path : "\(path) = \(value)"
            var message = "\(shown): \(PlanText.quoted(key.stringValue)) is not a key of this format"
            if let suggestion = PlanText.suggestion(for: key.stringValue, among: known) {
                message += " (did you mean \(PlanText.quoted(suggestion))?)"
            } else {
                message += " (known here: \(known.joined(separator: ", ")))"
            }
            issues.append(.error(.unknownKey, path, value: value, limit: "known key", message))
        }
    }
}

/// A nested object of the document, decoded without throwing.
package protocol RawObject {
    associatedtype Value: Sendable
    /// Nil when the JSON value was not an object (reported in `issues`).
    var value: Value? { get }
    var issues: [PlanIssue] { get }
}

/// Opens `decoder` as an object, or records why it is not one.
package func openObject(_ decoder: any Decoder, expected: String, issues: inout [PlanIssue])
    -> KeyedDecodingContainer<PlanJSONKey>?
{
    if let container = try? decoder.container(keyedBy: PlanJSONKey.self) { return container }
    let path = PlanText.path(decoder.codingPath)
    var value = ""
    var kind = "another JSON value"
    if let single = try? decoder.singleValueContainer() {
        if single.decodeNil() {
            (value, kind) = ("null", "null")
        } else if let string = try? single.decode(String.self) {
            (value, kind) = (PlanText.quoted(string), "a string")
        } else if let bool = try? single.decode(Bool.self) {
            (value, kind) = (String(bool), "a boolean")
        } else if let number = try? single.decode(Double.self) {
            (value, kind) = (PlanText.number(number), "a number")
        } else if (try? decoder.unkeyedContainer()) != nil {
            (value, kind) = ("[…]", "an array")
        }
    }
    let shown = value.isEmpty ? path : "\(path) = \(value)"
    issues.append(.error(.wrongType, path, value: value, limit: expected, "\(shown) must be \(expected), not \(kind)"))
    return nil
}

/// The fields of an object with fixed keys: what each key reads into.
package protocol ObjectFields: Sendable {
    init()
    /// The keys the format defines here, for "did you mean" and "known here".
    static var keys: [String] { get }
    /// Reads `key`'s value; false when the key is not one of this object's.
    mutating func read(_ key: PlanJSONKey, with reader: inout ObjectReader) -> Bool
}

/// An object of `Fields`, decoded without throwing: every key read, unknown keys reported,
/// this object's issues in path order (the decoder gives keys in no particular order).
package struct FieldsObject<Fields: ObjectFields>: Decodable, RawObject {
    package var value: Fields?
    package var issues: [PlanIssue] = []

    package init(from decoder: any Decoder) {
        guard let container = openObject(decoder, expected: "an object", issues: &issues) else { return }
        var reader = ObjectReader(container, decoder: decoder)
        var fields = Fields()
        var unknown: [PlanJSONKey] = []
        for key in container.allKeys where !fields.read(key, with: &reader) {
            unknown.append(key)
        }
        reader.unknown(unknown, known: Fields.keys)
        issues += reader.issues.sorted { $0.path < $1.path }
        value = fields
    }
}

/// One element of `dots`. Never throws, so the array is always read to its end.
private struct DotElement: Decodable {
    var dot = RawDot()

    init(from decoder: any Decoder) {
        guard let container = openObject(decoder, expected: "an object", issues: &dot.issues) else {
            dot.isObject = false
            return
        }
        var reader = ObjectReader(container, decoder: decoder)
        var unknown: [PlanJSONKey] = []
        for key in container.allKeys {
            switch key.stringValue {
            case "id": dot.id = reader.number(key)
            case "x_mm": dot.xMillimetres = reader.number(key)
            case "y_mm": dot.yMillimetres = reader.number(key)
            case "depth_mm": dot.depthMillimetres = reader.number(key)
            case "dwell_ms": dot.dwellMilliseconds = reader.number(key)
            case "region": dot.region = reader.string(key)
            default: unknown.append(key)
            }
        }
        if !unknown.isEmpty { reader.unknown(unknown, known: PlanKeys.dot) }
        if !reader.issues.isEmpty {
            // Keys come from a dictionary in no particular order: sort this dot's issues by key.
            dot.issues = reader.issues.sorted { $0.path < $1.path }
        }
    }
}

private struct DocumentObject: Decodable {
    var document = RawPlanDocument()

    init(from decoder: any Decoder) {
        guard let container = openObject(decoder, expected: "a JSON object", issues: &document.issues) else {
            document.isObject = false
            return
        }
        var reader = ObjectReader(container, decoder: decoder)
        var unknown: [PlanJSONKey] = []
        var dotsKey: PlanJSONKey?
        for key in container.allKeys {
            switch key.stringValue {
            case "format": document.format = reader.string(key)
            case "plan_id": document.planID = reader.string(key)
            case "defaults": document.defaults = reader.object(key, as: FieldsObject<RawDefaults>.self)
            case "client": document.client = reader.object(key, as: FieldsObject<RawClient>.self)
            case "session": document.session = reader.object(key, as: FieldsObject<RawSession>.self)
            case "design": document.design = reader.object(key, as: FieldsObject<RawPlanDesign>.self)
            case "dots": dotsKey = key
            default: unknown.append(key)
            }
        }
        reader.unknown(unknown, known: PlanKeys.document)
        document.issues += reader.issues

        if let dotsKey {
            document.dots = Self.readDots(container, key: dotsKey, reader: &reader, issues: &document.issues)
        }
    }

    private static func readDots(_ container: KeyedDecodingContainer<PlanJSONKey>, key: PlanJSONKey,
                                 reader: inout ObjectReader, issues: inout [PlanIssue]) -> RawField<[RawDot]> {
        guard var array = try? container.nestedUnkeyedContainer(forKey: key) else {
            reader.issues.removeAll()
            reader.wrongType(key, expected: "an array of dot objects")
            issues += reader.issues
            return .invalid
        }
        var dots: [RawDot] = []
        dots.reserveCapacity(array.count ?? 0)
        while !array.isAtEnd {
            let index = array.currentIndex
            guard let element = try? array.decode(DotElement.self) else {
                // DotElement never throws; if a decoder ever does, stop rather than loop forever.
                issues.append(.error(.wrongType, "dots[\(index)]", "dots[\(index)] could not be read"))
                return .invalid
            }
            dots.append(element.dot)
        }
        return .present(dots)
    }
}


package enum PlanDecoding {
    /// Decodes `data` into a raw document, with an error for every key written twice in one
    /// object, or returns the file-level issue that stopped it (not JSON, with the line and column
    /// where that can be found).
    static func decode(_ data: Data) -> Result<RawPlanDocument, PlanIssueFailure> {
        switch decodeCheckingKeys(DocumentObject.self, from: data, document: "plan", isObject: \.document.isObject) {
        case .failure(let failure): return .failure(failure)
        case .success(let (object, scan)):
            var document = object.document
            if let scan { document.addDuplicateKeyIssues(from: scan) }
            return .success(document)
        }
    }

    /// Decodes `data` as `Document` with JSONDecoder, then finds the keys written twice in one
    /// object (which JSONDecoder cannot see) over the same text. The scan is nil when the top
    /// level is not an object (`isObject`), which is then reported alone. `document` names the
    /// file in messages ("plan", "design").
    package static func decodeCheckingKeys<Document: Decodable>(
        _ type: Document.Type, from data: Data, document: String, isObject: (Document) -> Bool
    ) -> Result<(Document, JSONDuplicateKeyScan?), PlanIssueFailure> {
        let decoded: Document
        do {
            decoded = try JSONDecoder().decode(Document.self, from: data)
        } catch {
            return .failure(PlanIssueFailure(issue: invalidJSON(data, error)))
        }
        guard isObject(decoded) else { return .success((decoded, nil)) }
        let scanned = withJSONText(data) { text -> JSONDuplicateKeyScan? in
            // JSONDecoder found an object; text that does not start with one is not what it read.
            guard text.first(where: { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 }) == UInt8(ascii: "{") else {
                return nil
            }
            return JSONDuplicateKeys.scan(text, limit: PlanIssueList.cap)
        }
        guard let scan = scanned ?? nil else {
            // Cannot happen for text JSONDecoder accepted; refuse rather than use an unchecked file.
            return .failure(PlanIssueFailure(issue: .error(.duplicateKey, "$",
                "the \(document) could not be checked for repeated keys (internal error: the check read the JSON differently from the decoder)")))
        }
        return .success((decoded, scan))
    }

    /// The error for a key written more than once in one object; `document` names the file
    /// ("plan", "design").
    package static func duplicateKeyIssue(_ duplicate: JSONDuplicateKey, document: String, idSuffix: String = "") -> PlanIssue {
        let path = PlanText.path(duplicate.location)
        let times = duplicate.occurrences == 2 ? "twice" : "\(duplicate.occurrences) times"
        return .error(.duplicateKey, path, limit: "unique key",
                      "\(path) appears \(times) in the same object: programs differ in which value they read, "
                      + "so the \(document) would mean different things to different programs; keep one" + idSuffix)
    }

    /// Runs `body` over the UTF-8 text JSONDecoder parses. Like JSONDecoder, this reads UTF-16 and
    /// UTF-32 too, told apart by a byte order mark or by the zero bytes around the first two
    /// characters (RFC 4627 §3), converting them to UTF-8; the mark itself is not part of the text.
    /// Nil when the bytes do not convert (JSONDecoder would have refused them).
    static func withJSONText<T>(_ data: Data, _ body: (UnsafeBufferPointer<UInt8>) -> T) -> T? {
        let head = Array(data.prefix(4))
        func byte(_ index: Int) -> UInt8? { index < head.count ? head[index] : nil }
        let encoding: String.Encoding
        let markLength: Int
        // The same cases in the same order as JSONDecoder, so both read the same text.
        switch (byte(0), byte(1), byte(2), byte(3)) {
        case (0, 0, 0xFE, 0xFF): (encoding, markLength) = (.utf32BigEndian, 4)
        case (0xFE, 0xFF, 0, 0): (encoding, markLength) = (.utf32LittleEndian, 4)
        case (0xFE, 0xFF, _, _): (encoding, markLength) = (.utf16BigEndian, 2)
        case (0xFF, 0xFE, _, _): (encoding, markLength) = (.utf16LittleEndian, 2)
        case (0xEF, 0xBB, 0xBF, _): (encoding, markLength) = (.utf8, 3)
        case (0, 0, 0, let last?) where last != 0: (encoding, markLength) = (.utf32BigEndian, 0)
        case (0, let first?, 0, let second?) where first != 0 && second != 0: (encoding, markLength) = (.utf16BigEndian, 0)
        case (let first?, 0, 0, 0) where first != 0: (encoding, markLength) = (.utf32LittleEndian, 0)
        case (let first?, 0, let second?, 0) where first != 0 && second != 0: (encoding, markLength) = (.utf16LittleEndian, 0)
        case (0, let first?, nil, nil) where first != 0: (encoding, markLength) = (.utf16BigEndian, 0)
        case (let first?, 0, nil, nil) where first != 0: (encoding, markLength) = (.utf16LittleEndian, 0)
        default: (encoding, markLength) = (.utf8, 0)
        }
        if encoding == .utf8 {
            return data.withUnsafeBytes { raw in
                raw.withMemoryRebound(to: UInt8.self) { body(UnsafeBufferPointer(rebasing: $0.dropFirst(markLength))) }
            }
        }
        guard var text = String(data: data.dropFirst(markLength), encoding: encoding) else { return nil }
        return text.withUTF8(body)
    }

    /// JSONDecoder only says "The given data was not valid JSON."; JSONSerialization names the
    /// byte offset ("around character 16"), which is turned into a line and column here. Only run
    /// on failure, so its slowness does not matter.
    private static func invalidJSON(_ data: Data, _ error: any Error) -> PlanIssue {
        var reason = "the data is not valid JSON"
        do {
            _ = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        } catch {
            let detail = ((error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String) ?? ""
            if !detail.isEmpty { reason = locate(detail, in: data) }
        }
        if data.isEmpty { reason = "the file is empty" }
        return .error(.invalidJSON, "$", "not valid JSON: \(reason)")
    }

    /// "Invalid value around character 16." → "invalid value at line 3, column 7".
    static func locate(_ detail: String, in data: Data) -> String {
        var text = detail.hasSuffix(".") ? String(detail.dropLast()) : detail
        guard let range = text.range(of: "around character ") else { return text }
        let digits = text[range.upperBound...].prefix { $0.isNumber }
        guard let offset = Int(digits), offset >= 0 else { return text }
        var line = 1, column = 1, index = 0
        for byte in data {
            if index == offset { break }
            if byte == UInt8(ascii: "\n") {
                line += 1
                column = 1
            } else if byte & 0xC0 != 0x80 {  // count characters, not UTF-8 continuation bytes
                column += 1
            }
            index += 1
        }
        text.replaceSubrange(range.lowerBound..<text.index(range.upperBound, offsetBy: digits.count),
                             with: "at line \(line), column \(column)")
        return text.prefix(1).lowercased() + text.dropFirst()
    }
}

extension RawPlanDocument {
    /// Adds an error for each repeated key: to its dot when it is inside one, else to `issues`.
    mutating func addDuplicateKeyIssues(from scan: JSONDuplicateKeyScan) {
        unlistedErrors += scan.unlisted
        var rawDots = dots.value ?? []
        // With `dots` itself repeated, `dots[3]` may name an element of the array not read.
        if scan.duplicates.contains(where: { $0.location.map(\.stringValue) == ["dots"] }) { rawDots = [] }
        var changed = Set<Int>()
        for duplicate in scan.duplicates {
            let location = duplicate.location
            guard location.count > 2, location[0].stringValue == "dots", let index = location[1].intValue,
                  rawDots.indices.contains(index) else {
                issues.append(Self.issue(duplicate, idSuffix: ""))
                continue
            }
            // A repeated id leaves the dot's id in doubt: do not name one.
            let idIsRepeated = location.count == 3 && location[2].stringValue == "id"
            rawDots[index].issues.append(Self.issue(duplicate, idSuffix: idIsRepeated ? "" : Self.idSuffix(rawDots[index])))
            changed.insert(index)
        }
        guard !changed.isEmpty else { return }
        for index in changed {
            rawDots[index].issues.sort { $0.path < $1.path }
        }
        dots = .present(rawDots)
    }

    private static func issue(_ duplicate: JSONDuplicateKey, idSuffix: String) -> PlanIssue {
        PlanDecoding.duplicateKeyIssue(duplicate, document: "plan", idSuffix: idSuffix)
    }

    /// "(dot id N)" when the dot's id is usable, as in the loader's messages.
    private static func idSuffix(_ dot: RawDot) -> String {
        guard let id = dot.id.value, id == id.rounded(.towardZero), id >= 1, id <= Double(UInt32.max) else { return "" }
        return PlanText.idSuffix(UInt32(id))
    }
}

/// A single file-level issue carried through `Result`.
package struct PlanIssueFailure: Error, Sendable {
    package let issue: PlanIssue

    package init(issue: PlanIssue) {
        self.issue = issue
    }
}
