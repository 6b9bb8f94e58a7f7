import Foundation
@testable import SMPPlan
@testable import SMPPlanReader
import FirmwareCore
import XCTest

/// A key written twice in one object is refused: JSONDecoder keeps one value, Python and
/// JavaScript the last (`JSONDuplicateKeys`, docs/plan-format.md "Duplicate keys").
final class DuplicateKeyTests: XCTestCase {
    // MARK: Helpers

    private static let header = #""format": "smp-plan/1", "plan_id": "t", "defaults": {"depth_mm": 0.6, "dwell_ms": 120}"#

    /// A valid plan with the given dots (JSON text of the array's elements) and extra top-level members.
    private func plan(dots: String = #"{"id": 1, "x_mm": 0, "y_mm": 0, "region": "r"}"#, extra: String = "",
                      header: String = DuplicateKeyTests.header) -> String {
        "{\(header)\(extra.isEmpty ? "" : ", " + extra), \"dots\": [\(dots)]}"
    }

    /// `count` valid dots, 1 mm apart, ids 1...count, with `replacement` in place of the one at `index`.
    private func dots(_ count: Int, replacing index: Int? = nil, with replacement: String = "") -> String {
        (0..<count).map { i in
            i == index ? replacement : #"{"id": \#(i + 1), "x_mm": \#(i % 200 - 100), "y_mm": \#(i / 200), "region": "r"}"#
        }.joined(separator: ",\n")
    }

    private func errors(_ json: String, file: StaticString = #filePath, line: UInt = #line) -> [PlanIssue] {
        do {
            let (plan, _) = try PlanLoader.load(data: Data(json.utf8), sourceName: "test.json", envelope: .builtIn)
            XCTFail("loaded a plan that should be refused: \(plan.planID)", file: file, line: line)
            return []
        } catch {
            return error.errors
        }
    }

    /// Exactly one error, a repeated key at `path`; returns it.
    @discardableResult
    private func singleDuplicate(_ json: String, at path: String,
                                 file: StaticString = #filePath, line: UInt = #line) -> PlanIssue? {
        let found = errors(json, file: file, line: line)
        XCTAssertEqual(found.map(\.code), [.duplicateKey], found.map(\.message).joined(separator: "\n"), file: file, line: line)
        XCTAssertEqual(found.first?.path, path, file: file, line: line)
        XCTAssertEqual(found.first?.limit, "unique key", file: file, line: line)
        return found.first
    }

    private func scan(_ bytes: [UInt8], limit: Int = 1_000) -> JSONDuplicateKeyScan? {
        bytes.withUnsafeBufferPointer { JSONDuplicateKeys.scan($0, limit: limit) }
    }

    private func scan(_ text: String, limit: Int = 1_000) -> JSONDuplicateKeyScan? {
        scan(Array(text.utf8), limit: limit)
    }

    /// The paths and counts a scan found, e.g. `["a.b ×2"]`.
    private func found(_ text: String) -> [String]? {
        scan(text)?.duplicates.map { "\(PlanText.path($0.location)) ×\($0.occurrences)" }
    }

    private static var repositoryRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    // MARK: Through the loader

    func testDuplicateTopLevelKeyIsAnError() {
        let issue = singleDuplicate(plan(header: #""format": "smp-plan/1", "plan_id": "t", "plan_id": "u", "defaults": {"depth_mm": 0.6, "dwell_ms": 120}"#),
                                    at: "plan_id")
        XCTAssertEqual(issue?.message, "plan_id appears twice in the same object: programs differ in which value they read, "
                       + "so the plan would mean different things to different programs; keep one")
        XCTAssertEqual(issue?.severity, .error)
    }

    func testDuplicateKeyInDefaultsClientAndSession() {
        singleDuplicate(plan(header: #""format": "smp-plan/1", "plan_id": "t", "defaults": {"depth_mm": 0.6, "dwell_ms": 120, "depth_mm": 1.4}"#),
                        at: "defaults.depth_mm")
        singleDuplicate(plan(extra: #""client": {"reference": "C-1", "reference": "C-2"}"#), at: "client.reference")
        singleDuplicate(plan(extra: #""session": {"number": 1, "of": 3, "number": 2}"#), at: "session.number")
    }

    func testDuplicateKeyInADotNamesTheDot() {
        let dot = #"{"id": 18, "x_mm": 2.5, "y_mm": 4, "depth_mm": 1.4, "depth_mm": 0.6, "region": "r"}"#
        let issue = singleDuplicate(plan(dots: dots(20, replacing: 17, with: dot)), at: "dots[17].depth_mm")
        XCTAssertEqual(issue?.message, "dots[17].depth_mm appears twice in the same object: programs differ in which value "
                       + "they read, so the plan would mean different things to different programs; keep one (dot id 18)")
    }

    func testRepeatedIDNamesNoDotID() {
        // Which id the dot has is the question; the message must not answer it.
        let issue = singleDuplicate(plan(dots: #"{"id": 1, "x_mm": 0, "y_mm": 0, "id": 2, "region": "r"}"#), at: "dots[0].id")
        XCTAssertFalse(issue?.message.contains("dot id") ?? true, issue?.message ?? "")
    }

    func testKeyWrittenThreeTimesIsReportedOnce() {
        // Once per key and object, with the count: three lines at one path would say no more.
        let issue = singleDuplicate(plan(dots: #"{"id": 1, "x_mm": 0, "y_mm": 0, "dwell_ms": 100, "dwell_ms": 200, "region": "r", "dwell_ms": 300}"#),
                                    at: "dots[0].dwell_ms")
        XCTAssertTrue(issue?.message.hasPrefix("dots[0].dwell_ms appears 3 times in the same object") ?? false, issue?.message ?? "")
        XCTAssertEqual(found(#"{"a": 1, "b": 2, "a": 3, "b": 4, "a": 5, "a": 6}"#), ["a ×4", "b ×2"])
    }

    func testEscapedSpellingsOfAKeyAreTheSameKey() {
        singleDuplicate(plan(dots: #"{"id": 1, "x_mm": 0, "y_mm": 0, "depth_mm": 1.4, "depth\u005fmm": 0.6, "region": "r"}"#),
                        at: "dots[0].depth_mm")
        singleDuplicate(plan(dots: #"{"\u0069\u0064": 1, "x_mm": 0, "y_mm": 0, "id": 1, "region": "r"}"#), at: "dots[0].id")
        XCTAssertEqual(found(#"{"a\/b": 1, "a/b": 2}"#), [#"["a/b"] ×2"#])
        XCTAssertEqual(found(#"{"q\"": 1, "q\u0022": 2, "s\\": 3, "s\u005C": 4}"#), [#"["q\""] ×2"#, #"["s\\"] ×2"#])
        XCTAssertEqual(found(#"{"\b\f\n\r\t": 1, "\u0008\u000C\u000A\u000d\u0009": 2}"#), [#"["\u0008\u000c\n\r\t"] ×2"#])
        // Outside the basic plane: a surrogate pair, written raw or escaped, in either case of hex digit.
        XCTAssertEqual(found(#"{"😀": 1, "\uD83D\uDE00": 2, "\ud83d\ude00": 3}"#), [#"["😀"] ×3"#])
        XCTAssertEqual(found(#"{"é": 1, "\u00e9": 2, "€": 3, "\u20AC": 4}"#), [#"["é"] ×2"#, #"["€"] ×2"#])
        // Different characters stay different, also lone surrogates (JSONDecoder refuses those).
        XCTAssertEqual(found(#"{"\uD83D\uDE00": 1, "\uD83D\uDE01": 2, "\uD800": 3, "\uD801": 4, "\uDC00": 5}"#), [])
        // Malformed escapes are compared as written, never read past the key.
        XCTAssertEqual(found(#"{"\x": 1, "\x": 2, "\u12": 3, "\u12": 4, "\uD83D\u": 5}"#), [#"["\\x"] ×2"#, #"["\\u12"] ×2"#])
    }

    func testKeysDifferingInCaseAreNotDuplicates() {
        let codes = errors(plan(dots: #"{"id": 1, "x_mm": 0, "y_mm": 0, "depth_mm": 1.4, "Depth_mm": 0.6, "region": "r"}"#)).map(\.code)
        XCTAssertEqual(codes, [.unknownKey])
        XCTAssertEqual(found(#"{"a": 1, "A": 2, "a ": 3, "ａ": 4}"#), [])
    }

    func testSameKeyInTwoDotsIsNotADuplicate() throws {
        let (loaded, _) = try PlanLoader.load(data: Data(plan(dots: dots(3)).utf8), sourceName: "test.json", envelope: .builtIn)
        XCTAssertEqual(loaded.dots.count, 3)
        XCTAssertEqual(found(#"{"a": {"b": 1}, "c": {"b": 2}, "d": [{"b": 1}, {"b": 2}]}"#), [])
    }

    func testDuplicateKeysInNestedUnknownObjects() {
        let found = errors(plan(extra: #""notes": {"a": {"b": 1, "b": 2}, "list": [0, "x", {"c": 1}, [], {"c": 1, "c": 2}], "odd key": 1, "odd key": 2}"#))
        XCTAssertEqual(found.map { "\($0.code.rawValue) \($0.path)" }, [
            "unknownKey notes",
            "duplicateKey notes.a.b",
            #"duplicateKey notes.list[4].c"#,
            #"duplicateKey notes["odd key"]"#,
        ])
        XCTAssertEqual(self.found(#"[{"a": 1, "a": 2}, [[{"b": [], "b": {}}]]]"#), ["[0].a ×2", "[1][0][0].b ×2"])
    }

    func testRepeatedDotsKeyIsReportedAtTheTopLevel() {
        // JSONDecoder reads one of the arrays: a repeat inside the other must not be put on a dot of this one.
        let found = errors(plan(dots: dots(2), extra: #""dots": [{"id": 9, "id": 9}]"#))
        XCTAssertEqual(Set(found.filter { $0.code == .duplicateKey }.map(\.path)), ["dots", "dots[0].id"])
        XCTAssertFalse(found.contains { $0.message.contains("dot id") && $0.code == .duplicateKey })
    }

    func testDuplicateKeyAndOtherErrorsAreAllReported() {
        let json = """
            {"format": "smp-plan/1", "plan_id": "t", "colour": "red", "format": "smp-plan/1",
             "dots": [
               {"id": 1, "x_mm": 0, "y_mm": 0, "depth_mm": 0.6, "dwell_ms": 100, "region": "r", "region": "s"},
               {"id": 2, "x_mm": 200, "y_mm": 0, "depth_mm": 0.6, "dwell_ms": 100, "region": "r"},
               {"id": 3, "x_mm": 5, "y_mm": 0, "dwell_ms": 100, "dwell_ms": 100, "region": "r"}
             ]}
            """
        XCTAssertEqual(errors(json).map { "\($0.code.rawValue) \($0.path)" }, [
            "duplicateKey format",
            "unknownKey colour",
            "duplicateKey dots[0].region",
            "travelOutOfRange dots[1].x_mm",
            "duplicateKey dots[2].dwell_ms",
            "noValueOrDefault dots[2].depth_mm",
        ])
    }

    func testManyDuplicateKeysAreCappedWithACount() {
        let dots = (0..<1_200).map { #"{"id": \#($0 + 1), "x_mm": \#($0 % 200 - 100), "y_mm": \#($0 / 200), "region": "r", "region": "r"}"# }
        let found = errors(plan(dots: dots.joined(separator: ",")))
        XCTAssertEqual(found.count, PlanIssueList.cap + 1)
        XCTAssertEqual(found.last?.code, .moreErrors)
        XCTAssertEqual(found.last?.value, "200")
        XCTAssertEqual(scan(#"{"a": 1, "a": 1, "b": 1, "b": 1, "c": 1, "c": 1, "c": 1}"#, limit: 1)?.unlisted, 2)
    }

    func testUTF16UTF32AndByteOrderMarkPlansAreCheckedToo() {
        // JSONDecoder reads UTF-16 and UTF-32 (with or without a byte order mark) and skips a UTF-8 mark.
        let json = plan(extra: #""client": {"reference": "C-1", "reference": "C-2"}"#)
        let encodings: [(String, Data)] = [
            ("UTF-16LE with BOM", Data([0xFF, 0xFE]) + json.data(using: .utf16LittleEndian)!),
            ("UTF-16BE with BOM", Data([0xFE, 0xFF]) + json.data(using: .utf16BigEndian)!),
            ("UTF-16LE", json.data(using: .utf16LittleEndian)!),
            ("UTF-16BE", json.data(using: .utf16BigEndian)!),
            ("UTF-32BE with BOM", Data([0, 0, 0xFE, 0xFF]) + json.data(using: .utf32BigEndian)!),
            ("UTF-32BE", json.data(using: .utf32BigEndian)!),
            ("UTF-32LE", json.data(using: .utf32LittleEndian)!),
            // Not the UTF-32LE mark (FF FE 00 00), but what JSONDecoder takes for one.
            ("UTF-32LE after FE FF 00 00", Data([0xFE, 0xFF, 0, 0]) + json.data(using: .utf32LittleEndian)!),
            ("UTF-8 with BOM", Data([0xEF, 0xBB, 0xBF]) + Data(json.utf8)),
        ]
        for (name, data) in encodings {
            do {
                _ = try PlanLoader.load(data: data, sourceName: name, envelope: .builtIn)
                XCTFail("\(name): loaded")
            } catch {
                XCTAssertEqual(error.errors.map(\.path), ["client.reference"], "\(name): \(error)")
            }
        }
    }

    /// The good examples have none; invalid.json has exactly the one it is meant to show.
    func testExamplePlansHaveNoDuplicateKeysButTheInvalidOnesOne() throws {
        for (name, expected) in [("hairline.json", []), ("crown.json", []), ("invalid.json", ["dots[23].depth_mm ×2"])] {
            let data = try Data(contentsOf: Self.repositoryRoot.appendingPathComponent("Examples/\(name)"))
            let result = PlanDecoding.withJSONText(data) { JSONDuplicateKeys.scan($0, limit: 1_000) } ?? nil
            XCTAssertEqual(result?.duplicates.map { "\(PlanText.path($0.location)) ×\($0.occurrences)" }, expected, name)
            XCTAssertEqual(result?.unlisted, 0, name)
        }
        _ = try PlanLoader.load(path: Self.repositoryRoot.appendingPathComponent("Examples/hairline.json").path)
        _ = try PlanLoader.load(path: Self.repositoryRoot.appendingPathComponent("Examples/crown.json").path)
    }

    func testDocumentationShowsTheRealMessage() throws {
        let text = try String(contentsOf: Self.repositoryRoot.appendingPathComponent("docs/plan-format.md"), encoding: .utf8)
        let dot = #"{"id": 18, "x_mm": 2.5, "y_mm": 4, "depth_mm": 1.4, "depth_mm": 0.6, "region": "r"}"#
        let message = singleDuplicate(plan(dots: dots(20, replacing: 17, with: dot)), at: "dots[17].depth_mm")?.message ?? "?"
        func words(_ text: String) -> String { text.split(whereSeparator: \.isWhitespace).joined(separator: " ") }
        XCTAssertTrue(words(text).contains(words(message)), message)
    }

    // MARK: The scanner itself

    func testScannerFindsRepeatsInLargeObjects() {
        // Past `linearSearchLimit` keys an object switches to a dictionary: repeats before and after.
        var members = (0..<40).map { "\"k\($0)\": \($0)" }
        members.insert(#""k3": 0"#, at: 10)
        members.append(#""k30": 0"#)
        members.append(#""k3": 0"#)
        XCTAssertEqual(found("{\"big\": {" + members.joined(separator: ", ") + "}, \"k3\": 1}"), ["big.k3 ×3", "big.k30 ×2"])
        let huge = (0..<20_000).map { "\"k\($0)\": 1" }.joined(separator: ",")
        XCTAssertEqual(found("{" + huge + ", \"k19999\": 2}"), ["k19999 ×2"])
    }

    func testScannerShortensLongKeysInPaths() {
        let long = String(repeating: "a", count: 150)
        let location = scan("{\"\(long)\": {\"b\": 1, \"b\": 2}}")?.duplicates.first?.location
        XCTAssertEqual(location?.first?.stringValue, String(repeating: "a", count: JSONDuplicateKeys.maximumKeyLength) + "…")
        XCTAssertEqual(location?.last?.stringValue, "b")
    }

    func testScannerRefusesWhatItCannotRead() {
        for text in [#"{"a": 1"#, #"{"a": [1}"#, #"{"a": "1}"#, #"{"a": 1}}"#, #"]"#, #"{"a": 1} {"b": 2}"#,
                     #"["a": 1]"#, #"{{"a": 1, "a": 2}}"#, "{\"a\": 1,\0 \"a\": 2}",
                     String(repeating: "[", count: 1_025) + String(repeating: "]", count: 1_025)] {
            XCTAssertNil(scan(text), text)
        }
        // What JSONDecoder accepts, the scanner reads: trailing commas, deep nesting, odd spacing.
        for text in [#"{"a": 1,}"#, "[1,]", "12", #""a""#, "", " \t\r\n{ \"a\" \n:\t[ ] }",
                     String(repeating: "[", count: 512) + String(repeating: "]", count: 512)] {
            XCTAssertNotNil(scan(text), text)
            XCTAssertEqual(scan(text)?.duplicates, [], text)
        }
    }

    /// Documents built at random with the repeats they contain recorded as they are written; the
    /// scanner must find exactly those, in that order.
    func testScannerAgreesWithGeneratedDocuments() throws {
        var generator = SplitMix64(seed: 0xD0B1_E5EE)
        var repeats = 0
        for trial in 0..<300 {
            var document = GeneratedJSON(generator: generator)
            document.value(path: [], depth: 0)
            generator = document.generator
            let text = document.text
            // The generator writes JSON that JSONDecoder accepts.
            XCTAssertNoThrow(try JSONDecoder().decode(IgnoredJSON.self, from: Data(text.utf8)), "trial \(trial): \(text)")
            let result = scan(text)
            XCTAssertEqual(result?.duplicates, document.expected, "trial \(trial): \(text)")
            repeats += document.expected.count
        }
        XCTAssertGreaterThan(repeats, 200, "the generator should repeat keys often")
    }

    /// Random bytes and random edits of real plans: the scanner always ends without crashing, and
    /// never refuses to read what JSONDecoder accepted.
    func testScannerSurvivesRandomBytesAndMutations() throws {
        var generator = SplitMix64(seed: 0x5CA1_AB1E)
        let alphabet = Array(#"{}[]":,\ u0aA9-.eE"#.utf8) + [0, 0x0A, 0xD8, 0xDC, 0xFF, 0xC3, 0xA9]
        for _ in 0..<3_000 {
            let count = Int(generator.next() % 120)
            let bytes = (0..<count).map { _ in
                generator.next() % 4 == 0 ? UInt8(truncatingIfNeeded: generator.next()) : alphabet[Int(generator.next() % UInt64(alphabet.count))]
            }
            _ = scan(bytes, limit: Int(generator.next() % 4))
        }

        let small = Array(plan(dots: dots(3), extra: #""client": {"reference": "C-1", "hair_transplant_date": "2024-03-02"}"#).utf8)
        let hairline = try [UInt8](Data(contentsOf: Self.repositoryRoot.appendingPathComponent("Examples/hairline.json")))
        var accepted = 0
        for trial in 0..<3_000 {
            var bytes = trial % 10 == 0 ? hairline : small
            for _ in 0...(generator.next() % 3) {
                let at = Int(generator.next() % UInt64(bytes.count + 1))
                let byte = generator.next() % 3 == 0 ? UInt8(truncatingIfNeeded: generator.next()) : alphabet[Int(generator.next() % UInt64(alphabet.count))]
                switch generator.next() % 7 {
                case 0, 1: if at < bytes.count { bytes[at] = byte }
                case 2, 3: bytes.insert(byte, at: at)
                case 4, 5: if at < bytes.count { bytes.remove(at: at) }
                default: bytes.removeSubrange(at...)
                }
            }
            let data = Data(bytes)
            let result = PlanDecoding.withJSONText(data) { JSONDuplicateKeys.scan($0, limit: 1_000) } ?? nil
            if (try? JSONDecoder().decode(IgnoredJSON.self, from: data)) != nil {
                accepted += 1
                XCTAssertNotNil(result, String(decoding: bytes, as: UTF8.self))
            }
        }
        XCTAssertGreaterThan(accepted, 100, "too few edits kept the JSON valid to test anything")
    }
}

// MARK: - Test support

/// Any JSON value: decoding it only checks that JSONDecoder accepts the text.
private struct IgnoredJSON: Decodable {
    init(from decoder: any Decoder) {}
}


/// Writes a random JSON document and, as it goes, the repeated keys a correct scanner reports.
private struct GeneratedJSON {
    var generator: SplitMix64
    private(set) var text = ""
    private(set) var expected: [JSONDuplicateKey] = []

    init(generator: SplitMix64) {
        self.generator = generator
    }

    /// Keys likely to repeat, some only when escapes are resolved, some that only look alike.
    private static let keys = ["a", "b", "A", "depth_mm", "a b", "", "é", "e\u{301}", "😀", "q\"", "s\\", "x/y", "t\n"]

    private mutating func random(_ bound: Int) -> Int { Int(generator.next() % UInt64(bound)) }

    private mutating func space() {
        text += ["", "", " ", "\n  ", "\t", "\r\n"][random(6)]
    }

    /// The key as JSON may write it: each character plain or escaped.
    private mutating func written(_ key: String) -> String {
        var result = "\""
        for scalar in key.unicodeScalars {
            let mustEscape = scalar == "\"" || scalar == "\\" || scalar.value < 0x20
            if !mustEscape, random(3) != 0 {
                result.unicodeScalars.append(scalar)
            } else if scalar.value > 0xFFFF {
                let value = scalar.value - 0x10000
                result += String(format: "\\u%04X\\u%04x", 0xD800 + (value >> 10), 0xDC00 + (value & 0x3FF))
            } else if random(2) == 0, let short = ["\"": "\\\"", "\\": "\\\\", "/": "\\/", "\n": "\\n"][String(scalar)] {
                result += short
            } else {
                result += String(format: random(2) == 0 ? "\\u%04x" : "\\u%04X", scalar.value)
            }
        }
        return result + "\""
    }

    mutating func value(path: [JSONPathComponent], depth: Int) {
        space()
        switch depth > 4 ? 2 + random(3) : random(5) {
        case 0:
            text += "{"
            var seen: [[UInt8]: Int] = [:]  // key → index in `expected` once repeated, else -1 (bytes: "é" is not "e\u{301}")
            let count = random(4) == 0 ? random(24) : random(5)
            for member in 0..<count {
                if member > 0 { text += "," }
                space()
                let key = Self.keys[random(Self.keys.count)]
                text += written(key)
                space()
                text += ":"
                switch seen[Array(key.utf8)] {
                case nil:
                    seen[Array(key.utf8)] = -1
                case -1:
                    seen[Array(key.utf8)] = expected.count
                    expected.append(JSONDuplicateKey(location: path + [JSONPathComponent(key: key)], occurrences: 2))
                case let report?:
                    expected[report].occurrences += 1
                }
                value(path: path + [JSONPathComponent(key: key)], depth: depth + 1)
            }
            if count > 0, random(8) == 0 { text += "," }  // JSONDecoder allows a trailing comma
            space()
            text += "}"
        case 1:
            text += "["
            let count = random(4)
            for index in 0..<count {
                if index > 0 { text += "," }
                value(path: path + [JSONPathComponent(index: index)], depth: depth + 1)
            }
            space()
            text += "]"
        case 2:
            text += written(["{", "}", "[a, b]", ":", "\"", "x\\\"y"][random(6)])
        case 3:
            text += ["0", "-1.5e3", "12", "0.25"][random(4)]
        default:
            text += ["true", "false", "null"][random(3)]
        }
        space()
    }
}
