import Foundation
@testable import SMPPlan
@testable import SMPPlanReader
import XCTest

/// The one-pass plan reader (`PlanJSONReader`, `PlainNumber`) against the Foundation decoder it
/// replaces on the hot path: whatever the fast reader accepts, the old one must read to the same
/// raw document with no shape problem; numbers must be exactly `Double(_:)`'s. Random inputs come
/// from a fixed seed, so a failure reproduces.
final class PlanReaderDifferentialTests: XCTestCase {
    /// SplitMix64: small, seedable, good enough to draw test inputs.
    private struct Generator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    private struct Number: Decodable { var v: Double }

    /// Foundation's JSONDecoder reading `text` as a number, nil when it refuses.
    private func foundation(_ text: String) -> Double? {
        try? JSONDecoder().decode(Number.self, from: Data("{\"v\": \(text)}".utf8)).v
    }

    /// The fast parser must give exactly `Double(_:)`'s bits, and only for numbers Foundation
    /// reads to the same bits; what it refuses, the slow path handles.
    private func checkNumber(_ text: String, file: StaticString = #filePath, line: UInt = #line) {
        guard let fast = PlainNumber.parse(text) else { return }
        guard let standard = Double(text) else {
            XCTFail("\(text): fast parser read \(fast), Double(_:) refuses it", file: file, line: line)
            return
        }
        XCTAssertEqual(fast.bitPattern, standard.bitPattern, "\(text): fast \(fast) vs Double(_:) \(standard)",
                       file: file, line: line)
        XCTAssertEqual(foundation(text)?.bitPattern, standard.bitPattern, "\(text): Foundation differs",
                       file: file, line: line)
    }

    func testPlainNumbersMatchDoubleOnAdversarialInputs() {
        let cases = [
            "0", "-0", "0.0", "-0.0", "0e0", "0E+0", "0e-0", "0e999", "-0e-999", "1", "-1", "9", "10", "120", "0.6",
            "-76.779", "145.105", "1.5004", "0.1996", "20.0004", "4294967295", "4294967296",
            "9007199254740991", "9007199254740992", "9007199254740993", "9007199254740994", "9007199254740995",
            "18014398509481985", "1e22", "1e23", "9e22", "8.98846567431158e307", "1.7976931348623157e308",
            "1.7976931348623158e308", "1.7976931348623159e308", "2.2250738585072014e-308", "2.2250738585072011e-308",
            "4.9406564584124654e-324", "2.4703282292062328e-324", "2.4703282292062327e-324", "1e-400", "1e400",
            "0.1000000000000000055511151231257827021181583404541015625",
            "0.1000000000000000055511151231257827021181583404541015624",
            "0.1000000000000000055511151231257827021181583404541015626",
            "123456789012345678901234567890", "1234567890123456789", "12345678901234567890", "0.000000000000000000001",
            "1.00000000000000011102230246251565404236316680908203125", // halfway 1 and its successor
            "1.00000000000000011102230246251565404236316680908203124",
            "1.00000000000000011102230246251565404236316680908203126",
            "3.0517578125e-05", "7.3177701707893310e+15", "2.2250738585072012e-308", "5e-324", "1e-310",
            "100000000000000000000000", "0.00000000000000000000000000000000000001",
            "9.999999999999999e22", "1.0e23", "1.000000000000000000000000001", "1e-22", "1e-23", "123.456e-20",
            "1.e5", ".5", "01", "-01", "+1", "1e", "1e+", "-", "", "1.", "00", "0x10", "1_0", " 1", "1 ", "NaN",
        ]
        for text in cases { checkNumber(text) }
        // What the grammar refuses, the parser refuses.
        for text in ["1.e5", ".5", "01", "-01", "+1", "1e", "1e+", "-", "", "1.", "00", "0x10", "NaN", "--1"] {
            XCTAssertNil(PlainNumber.parse(text), text)
        }
    }

    func testPlainNumbersMatchDoubleOnRandomInputs() {
        var generator = Generator(state: 0x5EED_0016)
        func digits(_ count: Int) -> String {
            String((0..<count).map { _ in Character(String(Int.random(in: 0...9, using: &generator))) })
        }
        for _ in 0..<20_000 {
            var text = Bool.random(using: &generator) ? "-" : ""
            let integerDigits = Int.random(in: 1...(Bool.random(using: &generator) ? 4 : 25), using: &generator)
            let integer = digits(integerDigits)
            text += integer.hasPrefix("0") ? "0" : integer
            if Int.random(in: 0..<3, using: &generator) != 0 {
                text += "." + digits(Int.random(in: 1...(Bool.random(using: &generator) ? 6 : 30), using: &generator))
            }
            if Int.random(in: 0..<3, using: &generator) == 0 {
                text += ["e", "E", "e+", "e-", "E-"].randomElement(using: &generator)!
                text += String(Int.random(in: 0...(Bool.random(using: &generator) ? 30 : 330), using: &generator))
            }
            checkNumber(text)
            // Every normal finite number is read on the fast path (or its Double(_:) fallback).
            if let value = Double(text), value.isNormal {
                XCTAssertNotNil(PlainNumber.parse(text), text)
            }
        }
        // Random Doubles written the shortest way (Swift's description) and with 17 digits.
        for _ in 0..<20_000 {
            let value = Double(bitPattern: generator.next())
            guard value.isFinite else { continue }
            checkNumber("\(value)".replacingOccurrences(of: "e+", with: "e"))
            checkNumber(String(format: "%.17g", value))
        }
        // Plan-like values: millimetres with three decimals.
        for _ in 0..<20_000 {
            let micro = Int.random(in: -300_000...300_000, using: &generator)
            let text = PlanText.milli(Int32(micro))
            checkNumber(text)
            XCTAssertEqual(PlainNumber.parse(text), Double(text))
        }
    }

    /// The compact dot keeps each number's state apart: setting one field changes no other.
    func testRawDotFieldsAreIndependentAndSmall() {
        XCTAssertLessThanOrEqual(MemoryLayout<RawDot>.stride, 72, "one RawDot per dot of the plan")
        let keyPaths: [WritableKeyPath<RawDot, RawField<Double>>] = [
            \.id, \.xMillimetres, \.yMillimetres, \.depthMillimetres, \.dwellMilliseconds,
        ]
        for (index, keyPath) in keyPaths.enumerated() {
            for field in [RawField<Double>.present(-0.0), .present(12.5), .invalid, .absent] {
                var dot = RawDot()
                for other in keyPaths where other != keyPath { dot[keyPath: other] = .present(7) }
                dot[keyPath: keyPath] = field
                XCTAssertEqual(dot[keyPath: keyPath], field, "field \(index)")
                for other in keyPaths where other != keyPath { XCTAssertEqual(dot[keyPath: other], .present(7)) }
            }
        }
        var negativeZero = RawDot(), zero = RawDot()
        negativeZero.xMillimetres = .present(-0.0)
        zero.xMillimetres = .present(0)
        XCTAssertNotEqual(negativeZero, zero, "numbers compare bit for bit")
    }

    // MARK: Whole documents

    private static var examplesDirectory: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Examples")
    }

    /// The fast reader's verdict on `text` against the Foundation decoder's: when the fast reader
    /// reads it, the old one reads the same document without a shape problem. Returns whether the
    /// fast reader read it.
    @discardableResult
    private func checkDocument(_ bytes: [UInt8], _ name: String, file: StaticString = #filePath,
                               line: UInt = #line) -> Bool {
        guard let fast = bytes.withUnsafeBytes({ PlanJSONReader.read($0) }) else { return false }
        switch PlanDecoding.decode(Data(bytes)) {
        case .failure(let failure):
            XCTFail("\(name): fast reader read it, Foundation refused it: \(failure.issue)", file: file, line: line)
        case .success(let old):
            XCTAssertTrue(old.issues.isEmpty && old.unlistedErrors == 0 && old.isObject,
                          "\(name): fast reader read it, Foundation found \(old.issues)", file: file, line: line)
            XCTAssertFalse(old.dots.value?.contains { !$0.issues.isEmpty || !$0.isObject } ?? false,
                           "\(name): Foundation found a problem in a dot", file: file, line: line)
            XCTAssertEqual(fast, old, "\(name): the readers differ", file: file, line: line)
        }
        return true
    }

    func testExamplesReadTheSameByBothReaders() throws {
        let files = try FileManager.default.contentsOfDirectory(at: Self.examplesDirectory, includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "json" }
        XCTAssertFalse(files.isEmpty)
        var plans = 0
        for url in files {
            let bytes = Array(try Data(contentsOf: url))
            if checkDocument(bytes, url.lastPathComponent) { plans += 1 }
        }
        XCTAssertGreaterThan(plans, 0, "no example plan took the fast path")
    }

    private let sample = """
        {
          "format": "smp-plan/1",
          "plan_id": "crown-2025-03",
          "client": {"reference": "C-17", "hair_transplant_date": "2024-02-29"},
          "session": {"number": 2, "of": 3, "date": "2025-03-14"},
          "design": {"design_id": "D", "after": [{"plan_id": "p", "plan_sha256": "00", "record_session": 3, "dots": 12}]},
          "defaults": {"depth_mm": 0.6, "dwell_ms": 120},
          "dots": [
            {"id": 7, "x_mm": 12.3456, "y_mm": -0.0005, "region": "crown-centre"},
            {"id": 4294967295, "x_mm": -150, "y_mm": 150, "depth_mm": 1.5, "dwell_ms": 500, "region": "crown-edge"},
            {"id": 3, "x_mm": 1.0, "y_mm": 2.5e0, "depth_mm": 0.2, "dwell_ms": 20.0004, "region": "Zoë"},
            {}, {"id": 9, "x_mm": 1.5, "y_mm": 2.5, "depth_mm": 0.7505, "dwell_ms": 80.5, "region": "crown-edge"}
          ]
        }
        """

    func testTheSampleTakesTheFastPathAndAgrees() {
        XCTAssertTrue(checkDocument(Array(sample.utf8), "sample"))
        XCTAssertTrue(checkDocument(Array(#"{"dots": []}"#.utf8), "empty dots"))
        XCTAssertTrue(checkDocument(Array("{}".utf8), "empty object"))
    }

    /// Files the fast reader leaves to the slow one (which then words the error or reads the rare
    /// feature): each is still loaded exactly as before, by the slow reader.
    func testWhatIsNotPlainGoesToTheFoundationDecoder() {
        let notPlain = [
            "", "[]", "{", #"{"dots": [], }"#, #"{"dots": [{"id": 1,}]}"#, #"{"dots": [1]}"#, #"{"dots": [{"id": "1"}]}"#,
            #"{"dots": [{"id": 1, "id": 2}]}"#, #"{"dots": [{"iD": 1}]}"#, #"{"colour": 1}"#, #"{"format": "a\"b"}"#,
            #"{"dots": [{"region": "a\u0062"}]}"#, #"{"dots": [{"x_mm": 1e400}]}"#, #"{"dots": [{"x_mm": 1e-400}]}"#,
            #"{"dots": [{"x_mm": 01}]}"#, #"{"dots": [{"x_mm": NaN}]}"#, #"{"dots": null}"#, "{} x", "\u{FEFF}{}",
            #"{"plan_id": "t"} {}"#, #"{"dots": [{"region": "a"#, #"{"format": null}"#,
        ]
        for text in notPlain {
            XCTAssertNil(Array(text.utf8).withUnsafeBytes { PlanJSONReader.read($0) }, text)
        }
        var invalidUTF8 = Array(#"{"plan_id": "a"#.utf8)
        invalidUTF8 += [0xFF, 0x22, 0x7D]
        XCTAssertNil(invalidUTF8.withUnsafeBytes { PlanJSONReader.read($0) })
        let utf16 = Array(Data(#"{"dots": []}"#.data(using: .utf16LittleEndian)!))
        XCTAssertNil(utf16.withUnsafeBytes { PlanJSONReader.read($0) })
    }

    /// Random edits of a valid plan, each judged by both readers (the in-test form of `make fuzz`).
    func testMutatedPlansGetTheSameVerdict() {
        var generator = Generator(state: 0xD1FF)
        let base = Array(sample.utf8)
        let alphabet = Array(#"{}[]:,"0123456789.eE+- \ntrunlfasx_mdpi"#.utf8) + [0x00, 0x5C, 0xC3, 0xA9, 0xFF]
        var fast = 0
        for round in 0..<4_000 {
            var bytes = base
            for _ in 0...Int.random(in: 0..<3, using: &generator) {
                let at = Int.random(in: 0..<bytes.count, using: &generator)
                switch Int.random(in: 0..<3, using: &generator) {
                case 0: bytes[at] = alphabet.randomElement(using: &generator)!
                case 1: bytes.insert(alphabet.randomElement(using: &generator)!, at: at)
                default: bytes.remove(at: at)
                }
            }
            if checkDocument(bytes, "mutation \(round)") { fast += 1 }
        }
        XCTAssertGreaterThan(fast, 100, "too few mutations took the fast path to mean anything")
    }
}
