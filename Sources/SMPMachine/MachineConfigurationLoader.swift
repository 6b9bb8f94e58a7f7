import SMPSystem
import SMPInterlocks
import NeedleDriver
import SMPPlan
import TOMLKit
#if canImport(Glibc)
import Glibc
#endif

/// One problem in a machine configuration file. `message` is a whole sentence naming the key
/// path (`interlock[1].debounce_ms`; `interlock[0]` is the first `[[interlock]]` table), the
/// value as written and the limit it breaks.
public struct MachineConfigurationIssue: Sendable, Hashable, CustomStringConvertible {
    public enum Code: String, Sendable, Hashable, CaseIterable {
        /// The file could not be read.
        case fileUnreadable
        /// Not TOML.
        case syntax
        /// A key or table the format does not define.
        case unknownKey
        /// A required key is absent.
        case missingKey
        /// A value of the wrong TOML type.
        case wrongType
        /// A value outside its allowed range (that is not a widening of the built-in envelope).
        case outOfRange
        /// An envelope value wider than `SafetyEnvelope.builtIn`: a file may only narrow it.
        case widensBuiltIn
        /// A value of the right type that is not allowed (unknown role, bad chip name, …).
        case invalidValue
        /// A name or a (chip, line) used twice, or a second output of a role.
        case duplicate
        /// Values that contradict each other (minimum above maximum, device and match, …).
        case conflict
    }

    public var code: Code
    /// Where: `envelope.depth_max_mm`, `interlock[1].debounce_ms`, `$` for the whole file.
    public var keyPath: String
    /// The value as written, when there is one.
    public var value: String?
    /// The limit broken ("≤ 1.5 mm"), when there is one.
    public var limit: String?
    public var message: String

    public init(code: Code, keyPath: String, value: String? = nil, limit: String? = nil, message: String) {
        self.code = code
        self.keyPath = keyPath
        self.value = value
        self.limit = limit
        self.message = message
    }

    public var description: String { message }
}

/// A machine configuration that cannot be used; every problem found is listed.
public struct MachineConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The file (or the source name given to `load(text:sourceName:)`).
    public var file: String
    public var issues: [MachineConfigurationIssue]

    public init(file: String, issues: [MachineConfigurationIssue]) {
        self.file = file
        self.issues = issues
    }

    /// One line per issue: `file: message`.
    public var description: String {
        issues.map { "\(file): \($0.message)" }.joined(separator: "\n")
    }

    /// The file could not be read at all (as opposed to: read, and invalid).
    public var isUnreadable: Bool { issues.contains { $0.code == .fileUnreadable } }
}

/// Reads machine configuration files (docs/machine-config.md).
public enum MachineConfigurationLoader {
    /// Where smpctl looks when no `--config` is given.
    public static let defaultPath = "/etc/smpctl/machine.toml"
    /// Larger files are refused before reading.
    public static let maximumFileBytes = 1024 * 1024

    /// Reads and validates the file at `path`. Throws with every problem found.
    public static func load(path: String) throws(MachineConfigurationError) -> MachineConfiguration {
        let text: String
        switch readFile(path) {
        case .success(let contents): text = contents
        case .failure(let failure):
            let reason = failure.reason
            throw MachineConfigurationError(file: path, issues: [
                MachineConfigurationIssue(code: .fileUnreadable, keyPath: "$", message: "cannot read the file: \(reason)"),
            ])
        }
        var configuration = try load(text: text, sourceName: path)
        configuration.sourcePath = path
        return configuration
    }

    /// Validates configuration text; `sourceName` names it in messages.
    public static func load(text: String, sourceName: String) throws(MachineConfigurationError) -> MachineConfiguration {
        if let trap = tomlppTrap(in: text) {
            throw MachineConfigurationError(file: sourceName, issues: [
                MachineConfigurationIssue(
                    code: .syntax, keyPath: "$",
                    message: "line \(trap.line), column \(trap.column): not valid TOML: \(trap.expected), "
                        + "found \(PlanText.quoted(trap.found))"),
            ])
        }
        let root: TOMLTable
        do {
            root = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            let position = error.source.begin
            throw MachineConfigurationError(file: sourceName, issues: [
                MachineConfigurationIssue(
                    code: .syntax, keyPath: "$",
                    message: "line \(position.line), column \(position.column): not valid TOML: \(error.description)"),
            ])
        } catch {
            throw MachineConfigurationError(file: sourceName, issues: [
                MachineConfigurationIssue(code: .syntax, keyPath: "$", message: "not valid TOML: \(error)"),
            ])
        }
        var reader = ConfigurationReader()
        reader.issues = nulEscapes(in: text)
        let configuration = reader.configuration(root)
        guard reader.issues.isEmpty else { throw MachineConfigurationError(file: sourceName, issues: reader.issues) }
        return configuration
    }

    /// toml++ 3.4.0's `is_whitespace`, exactly. Not Unicode's White_Space: U+FEFF, U+200B and
    /// U+2060 are in it (the fuzzer found the difference).
    static func isTomlppWhitespace(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x09, 0x20, 0x0A...0x0D, 0x85, 0xA0, 0x1680, 0x180E, 0x2000...0x200B, 0x2028, 0x2029, 0x202F,
             0x205F, 0x2060, 0x3000, 0xFEFF:
            return true
        default:
            return false
        }
    }

    /// Where toml++ 3.4.0 (inside TOMLKit 0.6.0) would abort the whole process — an assertion,
    /// live in release builds too, as SwiftPM does not define NDEBUG — instead of refusing the
    /// text. Three shapes, all found by `make fuzz`:
    /// - a table header whose first character after "[" or "[[" and spaces is neither a key
    ///   character, a quote nor "]": `parse_key()` asserts what `parse_table_header()` never
    ///   checked (`[)` is enough);
    /// - "}" or a non-ASCII line break (U+0085, U+2028, U+2029: toml++'s whitespace, not TOML's
    ///   line breaks) where an array expects a value (after its "[" or a ",", across blanks,
    ///   newlines and comments): `parse_array()` hands it to `parse_value()`, which asserts it is
    ///   no value terminator (`a = [ } ]`; the other terminators the array loop refuses itself);
    /// - a value of ten characters (underscores not counted) with "-" as its fifth and eighth,
    ///   then a space, one digit and a value terminator: `parse_value()` reads on for a date-time
    ///   with a space for its "T" and asserts the terminator after the digit is none
    ///   (`a = 1979-05-27 1 `).
    /// (The first also behind a byte-order mark, which toml++ skips.) Found here first, outside
    /// strings and comments, and refused with the position.
    /// Conservative: what this refuses, toml++ could not parse.
    static func tomlppTrap(in text: String) -> (line: Int, column: Int, found: String, expected: String)? {
        enum Mode { case normal, comment, basic, literal, multiBasic, multiLiteral }
        let scalars = Array(text.unicodeScalars)
        func at(_ index: Int) -> Unicode.Scalar? { index < scalars.count ? scalars[index] : nil }
        func isBlank(_ scalar: Unicode.Scalar?) -> Bool { scalar == " " || scalar == "\t" }
        func isDigit(_ scalar: Unicode.Scalar?) -> Bool { scalar.map { ("0"..."9").contains($0) } ?? false }
        /// toml++'s value terminators: its whitespace (line breaks too), "]", "}", ",", "#".
        func endsValue(_ scalar: Unicode.Scalar?) -> Bool {
            guard let scalar else { return false }
            return isTomlppWhitespace(scalar) || scalar == "]" || scalar == "}" || scalar == "," || scalar == "#"
        }
        /// At `index`, the first digit of a value: a date, a space, one digit and a terminator?
        func dateWithHalfATime(at index: Int) -> String? {
            var token: [Unicode.Scalar] = []
            var end = index
            while let scalar = at(end), !endsValue(scalar) {
                if scalar != "_" { token.append(scalar) }
                end += 1
            }
            guard token.count == 10, token[4] == "-", token[7] == "-", at(end) == " ", isDigit(at(end + 1)),
                  endsValue(at(end + 2)) else { return nil }
            return String(String.UnicodeScalarView(scalars[index...(end + 1)]))
        }
        func startsKey(_ scalar: Unicode.Scalar) -> Bool {
            scalar.isASCII && (scalar.properties.isAlphabetic || isDigit(scalar)
                || scalar == "_" || scalar == "-" || scalar == "\"" || scalar == "'")
        }
        var mode = Mode.normal
        // toml++ skips a byte-order mark at the very start: so does this scan, or a header on
        // the first line would not be seen as one.
        let start = scalars.first == "\u{FEFF}" ? 1 : 0
        var line = 1, lineStart = start, index = start
        /// The current value's open arrays ("[") and inline tables ("{"), innermost last.
        var containers: [Unicode.Scalar] = []
        var depth: Int { containers.count }
        /// An array's "[" or "," was the last token: its next one must be a value or "]".
        var arrayExpectsValue = false
        /// At depth 0 with nothing but blanks since the line began: where a header can start.
        var statementStart = true
        while index < scalars.count {
            let scalar = scalars[index]
            if scalar == "\n" {
                line += 1
                lineStart = index + 1
                if mode == .comment || mode == .basic || mode == .literal { mode = .normal }
                statementStart = depth == 0 && mode == .normal
                index += 1
                continue
            }
            switch mode {
            case .comment:
                index += 1
            case .basic:
                if scalar == "\\" { index += 2; continue }
                if scalar == "\"" { mode = .normal }
                index += 1
            case .literal:
                if scalar == "'" { mode = .normal }
                index += 1
            case .multiBasic:
                if scalar == "\\" { index += 2; continue }
                if scalar == "\"", at(index + 1) == "\"", at(index + 2) == "\"" { mode = .normal; index += 3; continue }
                index += 1
            case .multiLiteral:
                if scalar == "'", at(index + 1) == "'", at(index + 2) == "'" { mode = .normal; index += 3; continue }
                index += 1
            case .normal:
                if isBlank(scalar) || scalar == "\r" { index += 1; continue }
                defer { statementStart = false }
                if arrayExpectsValue && (scalar == "}" || scalar == "\u{85}" || scalar == "\u{2028}" || scalar == "\u{2029}") {
                    return (line, index - lineStart + 1, String(Character(scalar)), "an array needs a value or \"]\" here")
                }
                if scalar != "#" { arrayExpectsValue = false }
                if isDigit(scalar), index == start || endsValue(scalars[index - 1]) || "=[{".unicodeScalars.contains(scalars[index - 1]),
                   let found = dateWithHalfATime(at: index) {
                    return (line, index - lineStart + 1, found, "a date with a space after it needs a time (hh:mm:ss)")
                }
                switch scalar {
                case "#":
                    mode = .comment
                    index += 1
                case "\"", "'":
                    let triple = at(index + 1) == scalar && at(index + 2) == scalar
                    mode = scalar == "\"" ? (triple ? .multiBasic : .basic) : (triple ? .multiLiteral : .literal)
                    index += triple ? 3 : 1
                case "[" where statementStart && depth == 0:
                    var next = index + 1
                    let arrayOfTables = at(next) == "["
                    if arrayOfTables { next += 1 }
                    while isBlank(at(next)) { next += 1 }
                    // "]" (an empty name) and "[ [" toml++ refuses itself, with a message.
                    if let found = at(next), !startsKey(found), found != "]", found != "[" || arrayOfTables {
                        return (line, next - lineStart + 1, String(Character(found)), "a table header needs a key name after \"[\"")
                    }
                    index = next
                case "[", "{":
                    if !statementStart {
                        containers.append(scalar)
                        arrayExpectsValue = scalar == "["
                    }
                    index += 1
                case "]", "}":
                    if !containers.isEmpty { containers.removeLast() }
                    index += 1
                case ",":
                    arrayExpectsValue = containers.last == "["
                    index += 1
                default:
                    index += 1
                }
            }
        }
        return nil
    }

    /// TOMLKit hands strings over as C strings, so a `\u0000` escape in a string would silently
    /// cut its value short (`"/dev/ttyACM0\u0000x"` would open /dev/ttyACM0). No key takes a
    /// NUL, so any such escape is refused here, found in the text itself, with the key it is in.
    static func nulEscapes(in text: String) -> [MachineConfigurationIssue] {
        var issues: [MachineConfigurationIssue] = []
        var table = ""
        var arrayCounts: [String: Int] = [:]
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.drop { $0 == " " || $0 == "\t" }
            if trimmed.hasPrefix("[[") {
                let name = String(trimmed.dropFirst(2).prefix { $0 != "]" }).trimmingSpaces
                let index = arrayCounts[name, default: -1] + 1
                arrayCounts[name] = index
                table = "\(name)[\(index)]"
            } else if trimmed.hasPrefix("[") {
                table = String(trimmed.dropFirst().prefix { $0 != "]" }).trimmingSpaces
            }
            guard containsNulEscape(line) else { continue }
            let key = line.firstIndex(of: "=").map { String(line[..<$0]).trimmingSpaces } ?? ""
            let keyPath = key.isEmpty ? (table.isEmpty ? "$" : table) : PlanText.append(key: key, to: table)
            issues.append(MachineConfigurationIssue(
                code: .invalidValue, keyPath: keyPath, value: "\\u0000", limit: "printable characters only",
                message: "\(keyPath) (line \(number + 1)) contains a control character (U+0000, written \\u0000): "
                    + "no value may hold a NUL, which would cut it short"))
        }
        return issues
    }

    /// `\u0000` or `\U00000000` not preceded by an escaped backslash.
    private static func containsNulEscape<S: StringProtocol>(_ line: S) -> Bool {
        let scalars = Array(line.unicodeScalars)
        var index = 0
        while index < scalars.count {
            guard scalars[index] == "\\" else { index += 1; continue }
            guard index + 1 < scalars.count else { return false }
            let letter = scalars[index + 1]
            let digits = letter == "u" ? 4 : letter == "U" ? 8 : 0
            if digits > 0, index + 2 + digits <= scalars.count,
               scalars[(index + 2)..<(index + 2 + digits)].allSatisfy({ $0 == "0" }) {
                return true
            }
            index += 2  // an escape pair, `\\` included
        }
        return false
    }

    /// `load(path:)` if the file exists; the built-in configuration (developer mode: no
    /// interlocks) if there is no file at all. Any other problem (unreadable, invalid) throws.
    public static func loadIfPresent(path: String = defaultPath) throws(MachineConfigurationError) -> MachineConfiguration {
        var status = stat()
        if stat(path, &status) != 0, errno == ENOENT { return .builtIn }
        return try load(path: path)
    }

    /// The file as UTF-8 text (`RegularFile`: a FIFO, a directory or an oversized file is refused
    /// with the system's own reason).
    private static func readFile(_ path: String) -> Result<String, ReadFailure> {
        switch RegularFile.read(path: path, maximumBytes: maximumFileBytes) {
        case .failure(let error): return .failure(ReadFailure("\(error)"))
        case .success(let bytes):
            guard let text = String(validating: bytes, as: UTF8.self) else { return .failure(ReadFailure("not UTF-8 text")) }
            return .success(text)
        }
    }

    private struct ReadFailure: Error {
        var reason: String
        init(_ reason: String) { self.reason = reason }
    }
}

extension String {
    fileprivate var trimmingSpaces: String {
        var text = Substring(self)
        while let first = text.first, first == " " || first == "\t" { text.removeFirst() }
        while let last = text.last, last == " " || last == "\t" { text.removeLast() }
        return String(text)
    }
}

// MARK: - Reading the tables

/// Walks the TOML tree, collecting every issue.
private struct ConfigurationReader {
    var issues: [MachineConfigurationIssue] = []

    static let rootKeys = ["applicator", "envelope", "host", "interlock", "output"]
    static let hostKeys = ["realtime_priority", "operator"]
    static let applicatorKeys = ["device", "match"]
    static let matchKeys = ["vendor_id", "product_id", "serial"]
    static let envelopeKeys = ["depth_min_mm", "depth_max_mm", "dwell_min_ms", "dwell_max_ms", "travel_x_mm",
                               "travel_y_mm", "min_spacing_mm", "max_dots_per_second", "lease_ms"]
    static let interlockKeys = ["name", "role", "chip", "line", "active_low", "bias", "debounce_ms"]
    static let outputKeys = ["name", "role", "chip", "line", "active_low"]

    mutating func configuration(_ root: TOMLTable) -> MachineConfiguration {
        var configuration = MachineConfiguration()
        checkKeys(root, allowed: Self.rootKeys, path: "")
        if let table = table(root, "applicator", path: "applicator") {
            configuration.applicator = applicator(table)
        }
        if let table = table(root, "envelope", path: "envelope") {
            (configuration.envelope, configuration.leaseMilliseconds) = envelope(table)
        }
        if let table = table(root, "host", path: "host") {
            configuration.realtimePriority = host(table)
            configuration.operatorName = hostOperator(table)
        }
        var owners: [String: String] = [:]  // name → key path of its first use
        var sawEstop = false  // even on an entry with other problems: one error at a time
        var lines: [String: String] = [:]  // "chip path#line" → key path of its first use
        if let entries = arrayOfTables(root, "interlock") {
            for (index, entry) in entries.enumerated() {
                if entry["role"]?.string == InterlockRole.estop.rawValue { sawEstop = true }
                if let input = interlock(entry, path: "interlock[\(index)]") {
                    claim(name: input.name, chip: input.chip, line: input.lineOffset, path: "interlock[\(index)]",
                          owners: &owners, lines: &lines)
                    configuration.inputs.append(input)
                }
            }
        }
        if let entries = arrayOfTables(root, "output") {
            var roles: [InterlockOutputRole: String] = [:]
            for (index, entry) in entries.enumerated() {
                let path = "output[\(index)]"
                guard let output = output(entry, path: path) else { continue }
                claim(name: output.name, chip: output.chip, line: output.lineOffset, path: path,
                      owners: &owners, lines: &lines)
                if let first = roles[output.role] {
                    add(.duplicate, path + ".role", value: PlanText.quoted(output.role.rawValue),
                        "\(path).role = \(PlanText.quoted(output.role.rawValue)): \(first) already has this role; "
                        + "a machine has at most one \(output.role) output")
                } else {
                    roles[output.role] = path
                }
                configuration.outputs.append(output)
            }
        }
        if let entries = root["interlock"]?.array, !entries.isEmpty, !sawEstop {
            add(.missingKey, "interlock",
                "interlock: no [[interlock]] has role = \"estop\": a machine with interlock lines needs at least "
                + "one e-stop input (remove every [[interlock]] only for the simulator/developer mode)")
        }
        return configuration
    }

    /// Names are unique across inputs and outputs, and so are (chip, line) pairs.
    private mutating func claim(name: String, chip: String, line: UInt32, path: String,
                                owners: inout [String: String], lines: inout [String: String]) {
        if let first = owners[name] {
            add(.duplicate, path + ".name", value: PlanText.quoted(name),
                "\(path).name = \(PlanText.quoted(name)) is already the name of \(first): names must be unique")
        } else {
            owners[name] = path
        }
        let key = GPIOChip.path(of: chip) + "#\(line)"
        if let first = lines[key] {
            add(.duplicate, path + ".line", value: "\(line)",
                "\(path).line = \(line) on \(chip) is already used by \(first): each GPIO line can serve one purpose")
        } else {
            lines[key] = path
        }
    }

    // MARK: [applicator]

    private mutating func applicator(_ table: TOMLTable) -> ApplicatorSelection {
        checkKeys(table, allowed: Self.applicatorKeys, path: "applicator")
        let device = string(table, "device", path: "applicator.device", required: false)
        let matchTable = self.table(table, "match", path: "applicator.match")
        if device != nil, matchTable != nil {
            add(.conflict, "applicator",
                "applicator: give either applicator.device or [applicator.match], not both")
        }
        if let device {
            if printable(device, path: "applicator.device", what: "a device path", maximum: Self.maximumPathBytes,
                         unit: "bytes", measure: { $0.utf8.count }), !device.hasPrefix("/") {
                add(.invalidValue, "applicator.device", value: PlanText.quoted(device),
                    "applicator.device = \(PlanText.quoted(device)) must be an absolute path such as \"/dev/ttyACM0\" "
                    + "or \"/dev/smp/applicator-<serial>\"")
            }
            return .device(path: device)
        }
        guard let matchTable else { return .match(.default) }
        checkKeys(matchTable, allowed: Self.matchKeys, path: "applicator.match")
        let vendor = usbID(matchTable, "vendor_id", path: "applicator.match.vendor_id")
        let product = usbID(matchTable, "product_id", path: "applicator.match.product_id")
        var serial = string(matchTable, "serial", path: "applicator.match.serial", required: false)
        if serial == "" {
            add(.invalidValue, "applicator.match.serial", value: "\"\"",
                "applicator.match.serial must not be empty (leave it out to accept any serial number)")
            serial = nil
        } else if let text = serial, !printable(text, path: "applicator.match.serial", what: "a USB serial number",
                                                maximum: 126, unit: "characters", measure: { $0.utf16.count }) {
            serial = nil
        }
        return .match(ApplicatorMatch(vendorID: vendor ?? ApplicatorMatch.default.vendorID,
                                      productID: product ?? ApplicatorMatch.default.productID, serial: serial))
    }

    /// A USB id: a string of four hex digits ("1209", "0x1209") or an integer 0…0xFFFF.
    private mutating func usbID(_ table: TOMLTable, _ key: String, path: String) -> String? {
        guard let value = table[key] else {
            add(.missingKey, path, "\(path) is missing: give the USB id as four hex digits, e.g. \"1209\"")
            return nil
        }
        if let number = value.int {
            guard (0...0xFFFF).contains(number) else {
                add(.outOfRange, path, value: String(number), limit: "0…0xffff",
                    "\(path) = \(number) is not a USB id (0…0xffff)")
                return nil
            }
            let hex = String(number, radix: 16)
            return String(repeating: "0", count: 4 - hex.count) + hex
        }
        guard let text = value.string else {
            wrongType(path, value, expected: "a string of four hex digits")
            return nil
        }
        var digits = text.lowercased()
        if digits.hasPrefix("0x") { digits.removeFirst(2) }
        guard digits.count == 4, digits.allSatisfy({ $0.isHexDigit }) else {
            add(.invalidValue, path, value: PlanText.quoted(text), limit: "four hex digits",
                "\(path) = \(PlanText.quoted(text)) is not a USB id: give four hex digits, e.g. \"1209\"")
            return nil
        }
        return digits
    }

    // MARK: [envelope]

    private mutating func envelope(_ table: TOMLTable) -> (SafetyEnvelope, Int) {
        checkKeys(table, allowed: Self.envelopeKeys, path: "envelope")
        let builtIn = SafetyEnvelope.builtIn
        var envelope = builtIn

        let depthMin = micro(table, "depth_min_mm", unit: "mm", what: "depth", bound: .lower,
                             builtIn: builtIn.depthMicrometres.lowerBound, other: builtIn.depthMicrometres.upperBound)
        let depthMax = micro(table, "depth_max_mm", unit: "mm", what: "depth", bound: .upper,
                             builtIn: builtIn.depthMicrometres.upperBound, other: builtIn.depthMicrometres.lowerBound)
        if let range = range("depth", "depth_min_mm", "depth_max_mm", depthMin, depthMax, builtIn.depthMicrometres, unit: "mm") {
            envelope.depthMicrometres = range
        }
        let dwellMin = micro(table, "dwell_min_ms", unit: "ms", what: "dwell", bound: .lower,
                             builtIn: builtIn.dwellMicroseconds.lowerBound, other: builtIn.dwellMicroseconds.upperBound)
        let dwellMax = micro(table, "dwell_max_ms", unit: "ms", what: "dwell", bound: .upper,
                             builtIn: builtIn.dwellMicroseconds.upperBound, other: builtIn.dwellMicroseconds.lowerBound)
        if let range = range("dwell", "dwell_min_ms", "dwell_max_ms", dwellMin, dwellMax, builtIn.dwellMicroseconds, unit: "ms") {
            envelope.dwellMicroseconds = range
        }
        if let x = micro(table, "travel_x_mm", unit: "mm", what: "travel |x|", bound: .upper,
                         builtIn: builtIn.travelXMicrometres, other: 1) {
            envelope.travelXMicrometres = x
        }
        if let y = micro(table, "travel_y_mm", unit: "mm", what: "travel |y|", bound: .upper,
                         builtIn: builtIn.travelYMicrometres, other: 1) {
            envelope.travelYMicrometres = y
        }
        if let spacing = micro(table, "min_spacing_mm", unit: "mm", what: "spacing between dots", bound: .lower,
                               builtIn: builtIn.minimumSpacingMicrometres, other: 100_000) {
            envelope.minimumSpacingMicrometres = spacing
        }
        let rateRange = "\(DotPace.slowestRateText) … \(PlanText.number(builtIn.maximumDotsPerSecond)) dots per second"
        if let rate = number(table, "max_dots_per_second", path: "envelope.max_dots_per_second", allowed: rateRange) {
            let path = "envelope.max_dots_per_second", written = PlanText.number(rate)
            if rate > builtIn.maximumDotsPerSecond {
                add(.widensBuiltIn, path, value: written, limit: "≤ \(PlanText.number(builtIn.maximumDotsPerSecond))",
                    "\(path) = \(written) exceeds the built-in limit of \(PlanText.number(builtIn.maximumDotsPerSecond)) "
                    + "dots per second: the file can only narrow the built-in envelope")
            } else if !Self.paceCarries(rate) {
                // The conversion itself decides, so what loads is exactly what PACE can carry.
                add(.outOfRange, path, value: written, limit: "≥ \(DotPace.slowestRateText)",
                    "\(path) = \(written) is below \(DotPace.slowestRateText) dots per second (one dot per 65.535 s), "
                    + "the slowest pace the applicator's PACE can carry (firmware-protocol.md §6.10)")
            } else {
                envelope.maximumDotsPerSecond = rate
            }
        }

        var lease = MachineConfiguration.defaultLeaseMilliseconds
        if let value = table["lease_ms"] {
            let path = "envelope.lease_ms", range = MachineConfiguration.leaseMillisecondsRange
            if let milliseconds = value.int {
                if range.contains(milliseconds) {
                    lease = milliseconds
                } else {
                    let limit = milliseconds > range.upperBound ? "≤ \(range.upperBound) ms" : "≥ \(range.lowerBound) ms"
                    add(.outOfRange, path, value: String(milliseconds), limit: limit,
                        "\(path) = \(milliseconds) is outside \(range.lowerBound)–\(range.upperBound) ms, the lease the "
                        + "firmware grants (firmware-protocol.md §6.5)")
                }
            } else {
                wrongType(path, value, expected: "a whole number of milliseconds")
            }
        }
        return (envelope, lease)
    }

    /// Whether PACE can carry `rate` (DotPace refuses, never clamps, what it cannot).
    private static func paceCarries(_ rate: Double) -> Bool {
        var envelope = SafetyEnvelope.builtIn
        envelope.maximumDotsPerSecond = rate
        return (try? DotPace.paceMilliseconds(envelope)) != nil
    }

    // MARK: [host]

    private mutating func host(_ table: TOMLTable) -> Int? {
        checkKeys(table, allowed: Self.hostKeys, path: "host")
        guard let value = table["realtime_priority"] else { return nil }
        let path = "host.realtime_priority", range = MachineConfiguration.realtimePriorityRange
        guard let priority = value.int else {
            wrongType(path, value, expected: "a whole number, the SCHED_FIFO priority")
            return nil
        }
        guard priority == 0 || range.contains(priority) else {
            add(.outOfRange, path, value: String(priority),
                limit: priority > range.upperBound ? "≤ \(range.upperBound)" : "≥ 0",
                "\(path) = \(priority) is outside \(range.lowerBound)–\(range.upperBound), the SCHED_FIFO priorities "
                + "Linux offers; 0 asks for ordinary scheduling")
            return nil
        }
        return priority
    }

    /// `[host] operator`: a name, not blank.
    private mutating func hostOperator(_ table: TOMLTable) -> String? {
        guard let value = table["operator"] else { return nil }
        let path = "host.operator"
        guard let name = value.string else {
            wrongType(path, value, expected: "a string, who runs the sessions (recorded)")
            return nil
        }
        guard !name.trimmingCharacters(in: .whitespaces).isEmpty else {
            wrongType(path, value, expected: "a name that is not blank (recorded as the operator)")
            return nil
        }
        return name
    }

    private enum Bound { case lower, upper }

    /// An envelope value in mm (ms) as micrometres (microseconds). `bound` says which way is
    /// narrower: a lower bound may only rise above `builtIn`, an upper one only fall below it;
    /// `other` is the far end of the sane range. Checked in the file's units (exact at the
    /// limits, see `SafetyEnvelope.rangeIssue`), then rounded to whole units TOWARDS the inside.
    private mutating func micro(_ table: TOMLTable, _ key: String, unit: String, what: String, bound: Bound,
                                builtIn: Int32, other: Int32) -> Int32? {
        let path = "envelope." + key
        let allowed = bound == .upper
            ? "\(PlanText.milli(other)) … \(PlanText.milli(builtIn)) \(unit)"
            : "\(PlanText.milli(builtIn)) … \(PlanText.milli(other)) \(unit)"
        guard let value = number(table, key, path: path, allowed: allowed) else { return nil }
        let written = PlanText.number(value)
        let limit = Double(builtIn) / 1000, far = Double(other) / 1000
        switch bound {
        case .upper:
            if value > limit {
                add(.widensBuiltIn, path, value: written, limit: "≤ \(PlanText.milli(builtIn)) \(unit)",
                    "\(path) = \(written) exceeds the built-in \(what) limit of \(PlanText.milli(builtIn)) \(unit): "
                    + "the file can only narrow the built-in envelope")
                return nil
            }
            if value < far {
                add(.outOfRange, path, value: written, limit: "≥ \(PlanText.milli(other)) \(unit)",
                    "\(path) = \(written) is below \(PlanText.milli(other)) \(unit), the smallest \(what) limit allowed")
                return nil
            }
        case .lower:
            if value < limit {
                add(.widensBuiltIn, path, value: written, limit: "≥ \(PlanText.milli(builtIn)) \(unit)",
                    "\(path) = \(written) is below the built-in \(what) minimum of \(PlanText.milli(builtIn)) \(unit): "
                    + "the file can only narrow the built-in envelope")
                return nil
            }
            if value > far {
                add(.outOfRange, path, value: written, limit: "≤ \(PlanText.milli(other)) \(unit)",
                    "\(path) = \(written) is above \(PlanText.milli(other)) \(unit), the largest \(what) minimum allowed")
                return nil
            }
        }
        let scaled = value * 1000
        let nearest = scaled.rounded()
        if abs(scaled - nearest) < 1e-6 { return Int32(nearest) }
        return Int32(bound == .lower ? scaled.rounded(.up) : scaled.rounded(.down))
    }

    /// Minimum and maximum together; a missing end is the built-in one.
    private mutating func range(_ what: String, _ minKey: String, _ maxKey: String, _ lower: Int32?, _ upper: Int32?,
                                _ builtIn: ClosedRange<Int32>, unit: String) -> ClosedRange<Int32>? {
        let low = lower ?? builtIn.lowerBound, high = upper ?? builtIn.upperBound
        guard low <= high else {
            add(.conflict, "envelope." + minKey, value: PlanText.milli(low), limit: "≤ \(PlanText.milli(high)) \(unit)",
                "envelope.\(minKey) = \(PlanText.milli(low)) is above envelope.\(maxKey) = \(PlanText.milli(high)) "
                + "(\(unit), after rounding to whole micro-units): the \(what) range is empty")
            return nil
        }
        return low...high
    }

    // MARK: [[interlock]] and [[output]]

    private mutating func interlock(_ table: TOMLTable, path: String) -> InterlockInput? {
        checkKeys(table, allowed: Self.interlockKeys, path: path)
        let name = self.name(table, path: path)
        let role = choice(table, "role", path: path, InterlockRole.self, context: name)
        let chip = self.chip(table, path: path, context: name)
        let line = self.line(table, path: path, context: name)
        let activeLow = bool(table, "active_low", path: path + ".active_low", context: name)
        let bias = choice(table, "bias", path: path, GPIOBias.self, context: name)
        var debounce = MachineConfiguration.defaultDebounce
        if let value = number(table, "debounce_ms", path: path + ".debounce_ms",
                              allowed: "0 … \(MachineConfiguration.maximumDebounceMilliseconds) ms") {
            let maximum = Double(MachineConfiguration.maximumDebounceMilliseconds)
            let written = PlanText.number(value)
            if value > maximum {
                add(.outOfRange, path + ".debounce_ms", value: written, limit: "≤ \(Int(maximum)) ms",
                    "\(path).debounce_ms = \(written) exceeds the maximum \(Int(maximum)) ms\(Self.named(name))")
            } else if value < 0 {
                add(.outOfRange, path + ".debounce_ms", value: written, limit: "≥ 0 ms",
                    "\(path).debounce_ms = \(written) is below the minimum 0 ms\(Self.named(name))")
            } else {
                debounce = .microseconds(Int64((value * 1000).rounded()))
            }
        }
        guard let name, let role, let chip, let line, let activeLow, let bias else { return nil }
        return InterlockInput(name: name, role: role, chip: chip, lineOffset: line, activeLow: activeLow, bias: bias,
                              debounce: debounce)
    }

    private mutating func output(_ table: TOMLTable, path: String) -> InterlockOutput? {
        checkKeys(table, allowed: Self.outputKeys, path: path)
        let name = self.name(table, path: path)
        let role = choice(table, "role", path: path, InterlockOutputRole.self, context: name)
        let chip = self.chip(table, path: path, context: name)
        let line = self.line(table, path: path, context: name)
        let activeLow = bool(table, "active_low", path: path + ".active_low", context: name)
        guard let name, let role, let chip, let line, let activeLow else { return nil }
        return InterlockOutput(name: name, role: role, chip: chip, lineOffset: line, activeLow: activeLow)
    }

    /// The longest path Linux takes (PATH_MAX, 4096, less the terminating NUL).
    static let maximumPathBytes = 4095

    /// Text that becomes a C string (a path, a udev property): a NUL would cut it short silently
    /// and other control characters are never meant, so none is allowed; and at most `maximum`
    /// long as `measure` counts. False (the issue added) when it breaks either.
    private mutating func printable(_ text: String, path: String, what: String, maximum: Int, unit: String,
                                    measure: (String) -> Int, context: String? = nil) -> Bool {
        if let control = text.unicodeScalars.first(where: { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) }) {
            let code = String(control.value, radix: 16, uppercase: true)
            add(.invalidValue, path, value: PlanText.quoted(text), limit: "printable characters only",
                "\(path) = \(PlanText.quoted(text)) contains a control character (U+\(String(repeating: "0", count: 4 - code.count) + code)): "
                + "\(what) is printable text\(Self.named(context))")
            return false
        }
        let length = measure(text)
        guard length <= maximum else {
            add(.invalidValue, path, value: PlanText.quoted(text), limit: "≤ \(maximum) \(unit)",
                "\(path) = \(PlanText.quoted(text)) is \(length) \(unit) long, more than the \(maximum) \(what) may have"
                + Self.named(context))
            return false
        }
        return true
    }

    private static func named(_ name: String?) -> String { name.map { " (\(PlanText.quoted($0)))" } ?? "" }

    private mutating func name(_ table: TOMLTable, path: String) -> String? {
        guard let name = string(table, "name", path: path + ".name") else { return nil }
        let printable = name.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value != 0x7F }
        guard !name.isEmpty, name.count <= 40, printable else {
            add(.invalidValue, path + ".name", value: PlanText.quoted(name), limit: "1–40 printable characters",
                "\(path).name = \(PlanText.quoted(name)) must be 1–40 printable characters")
            return nil
        }
        return name
    }

    private mutating func chip(_ table: TOMLTable, path: String, context: String?) -> String? {
        guard let chip = string(table, "chip", path: path + ".chip", context: context) else { return nil }
        guard printable(chip, path: path + ".chip", what: "a GPIO chip", maximum: Self.maximumPathBytes, unit: "bytes",
                        measure: { $0.utf8.count }, context: context) else { return nil }
        let number = chip.utf8.dropFirst(8)
        let isName = chip.hasPrefix("gpiochip") && !number.isEmpty
            && number.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
        let isPath = chip.hasPrefix("/dev/") && chip.count > 5
        guard isName || isPath else {
            add(.invalidValue, path + ".chip", value: PlanText.quoted(chip), limit: "gpiochipN or /dev/…",
                "\(path).chip = \(PlanText.quoted(chip)) is not a GPIO chip: give a name such as \"gpiochip0\" or a "
                + "path such as \"/dev/gpiochip0\" (`gpiodetect` lists them)\(Self.named(context))")
            return nil
        }
        return chip
    }

    private mutating func line(_ table: TOMLTable, path: String, context: String?) -> UInt32? {
        let keyPath = path + ".line"
        guard let value = table["line"] else {
            add(.missingKey, keyPath, "\(keyPath) is missing: give the line offset on the chip (`gpioinfo` lists them)"
                + Self.named(context))
            return nil
        }
        guard let offset = value.int else {
            wrongType(keyPath, value, expected: "a whole number (the line offset)", context: context)
            return nil
        }
        guard (0...65_535).contains(offset) else {
            add(.outOfRange, keyPath, value: String(offset), limit: "0…65535",
                "\(keyPath) = \(offset) is outside 0…65535\(Self.named(context))")
            return nil
        }
        return UInt32(offset)
    }

    /// A string key whose value is one of `T`'s raw values.
    private mutating func choice<T: RawRepresentable & CaseIterable>(
        _ table: TOMLTable, _ key: String, path: String, _ type: T.Type, context: String?
    ) -> T? where T.RawValue == String {
        let keyPath = path + "." + key
        guard let text = string(table, key, path: keyPath, context: context) else { return nil }
        if let value = T(rawValue: text) { return value }
        let allowed = T.allCases.map { PlanText.quoted($0.rawValue) }.joined(separator: ", ")
        let names = T.allCases.map(\.rawValue)
        let stem = names.first { $0.hasPrefix(text.lowercased() + "-") }
        let hint = (stem ?? PlanText.suggestion(for: text, among: names)).map { " (did you mean \"\($0)\"?)" } ?? ""
        add(.invalidValue, keyPath, value: PlanText.quoted(text), limit: "one of \(allowed)",
            "\(keyPath) = \(PlanText.quoted(text)) is not one of \(allowed)\(hint)\(Self.named(context))")
        return nil
    }

    // MARK: Typed access

    private mutating func table(_ parent: TOMLTable, _ key: String, path: String) -> TOMLTable? {
        guard let value = parent[key] else { return nil }
        guard let table = value.table else {
            wrongType(path, value, expected: "a table ([\(path)])")
            return nil
        }
        return table
    }

    private mutating func arrayOfTables(_ root: TOMLTable, _ key: String) -> [TOMLTable]? {
        guard let value = root[key] else { return nil }
        guard let array = value.array else {
            wrongType(key, value, expected: "an array of tables: write each one as [[\(key)]]")
            return nil
        }
        var tables: [TOMLTable] = []
        for index in 0..<array.count {
            guard let table = array[index].table else {
                wrongType("\(key)[\(index)]", array[index], expected: "a table: write each one as [[\(key)]]")
                continue
            }
            tables.append(table)
        }
        return tables
    }

    private mutating func string(_ table: TOMLTable, _ key: String, path: String, required: Bool = true,
                                 context: String? = nil) -> String? {
        guard let value = table[key] else {
            if required { add(.missingKey, path, "\(path) is missing\(Self.named(context))") }
            return nil
        }
        guard let text = value.string else {
            wrongType(path, value, expected: "a string", context: context)
            return nil
        }
        return text
    }

    private mutating func bool(_ table: TOMLTable, _ key: String, path: String, context: String?) -> Bool? {
        guard let value = table[key] else {
            add(.missingKey, path, "\(path) is missing: say whether the line is active when low (true) or high (false); "
                + "there is no safe default, the wiring decides\(Self.named(context))")
            return nil
        }
        guard let flag = value.bool else {
            wrongType(path, value, expected: "true or false", context: context)
            return nil
        }
        return flag
    }

    /// An integer or a float, finite; `allowed` ("0.2 … 1.5 mm") is the key's documented range,
    /// named when the value is nan or inf.
    private mutating func number(_ table: TOMLTable, _ key: String, path: String, allowed: String,
                                 required: Bool = false) -> Double? {
        guard let value = table[key] else {
            if required { add(.missingKey, path, "\(path) is missing") }
            return nil
        }
        if let whole = value.int { return Double(whole) }
        if let real = value.double {
            guard real.isFinite else {
                add(.outOfRange, path, value: String(describing: real), limit: allowed,
                    "\(path) = \(real) must be a finite number in \(allowed)")
                return nil
            }
            return real
        }
        wrongType(path, value, expected: "a number")
        return nil
    }

    private mutating func checkKeys(_ table: TOMLTable, allowed: [String], path: String) {
        for key in table.keys where !allowed.contains(key) {
            let keyPath = PlanText.append(key: key, to: path)
            let hint = PlanText.suggestion(for: key, among: allowed).map { " (did you mean \"\($0)\"?)" } ?? ""
            let known = allowed.joined(separator: ", ")
            add(.unknownKey, keyPath,
                "\(keyPath) is not a known key\(hint); \(path.isEmpty ? "top-level" : path) keys are: \(known)")
        }
    }

    private mutating func wrongType(_ path: String, _ value: any TOMLValueConvertible, expected: String, context: String? = nil) {
        add(.wrongType, path, value: Self.written(value),
            "\(path) = \(Self.written(value)) is \(Self.article(value.type)) \(value.type), expected \(expected)"
            + Self.named(context))
    }

    private static func article(_ type: TOMLType) -> String {
        "\(type)".first.map { "aeiou".contains($0) } == true ? "an" : "a"
    }

    /// A value as it would be written in the file (shortened).
    private static func written(_ value: any TOMLValueConvertible) -> String {
        if let text = value.string { return PlanText.quoted(text) }
        if let whole = value.int { return String(whole) }
        if let real = value.double { return PlanText.number(real) }
        if let flag = value.bool { return String(flag) }
        switch value.type {
        case .table: return "{…}"
        case .array: return "[…]"
        default: return String(value.debugDescription.prefix(40))
        }
    }

    private mutating func add(_ code: MachineConfigurationIssue.Code, _ path: String, value: String? = nil,
                              limit: String? = nil, _ message: String) {
        issues.append(MachineConfigurationIssue(code: code, keyPath: path, value: value, limit: limit, message: message))
    }
}
