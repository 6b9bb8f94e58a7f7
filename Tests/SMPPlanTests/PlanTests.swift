import FirmwareProtocol
import Foundation
@testable import SMPPlan
@testable import SMPPlanReader
import FirmwareCore
import XCTest

final class PlanTests: XCTestCase {
    // MARK: Helpers

    /// A valid document with the given dots (JSON text of the array's elements) and extra top-level
    /// members; `header` replaces the format/plan_id/defaults members when given.
    private func document(dots: String = #"{"id": 1, "x_mm": 0, "y_mm": 0, "region": "r"}"#,
                          extra: String = "",
                          header: String = #""format": "smp-plan/1", "plan_id": "t", "defaults": {"depth_mm": 0.6, "dwell_ms": 120}"#)
        -> String
    {
        "{\(header)\(extra.isEmpty ? "" : ", " + extra), \"dots\": [\(dots)]}"
    }

    private func load(_ json: String, envelope: SafetyEnvelope = .builtIn) throws(PlanLoadError)
        -> (Plan, warnings: [PlanIssue])
    {
        try PlanLoader.load(data: Data(json.utf8), sourceName: "test.json", envelope: envelope)
    }

    /// The errors of a document that must not load.
    private func errors(_ json: String, envelope: SafetyEnvelope = .builtIn,
                        file: StaticString = #filePath, line: UInt = #line) -> [PlanIssue] {
        do {
            let (plan, _) = try load(json, envelope: envelope)
            XCTFail("loaded a plan that should be refused: \(plan.planID) with \(plan.dots.count) dots",
                    file: file, line: line)
            return []
        } catch {
            XCTAssertEqual(error.file, "test.json", file: file, line: line)
            return error.errors
        }
    }

    /// Exactly one error, of `code`, at `path`; returns it for further checks.
    @discardableResult
    private func singleError(_ json: String, _ code: PlanIssue.Code, at path: String,
                             envelope: SafetyEnvelope = .builtIn,
                             file: StaticString = #filePath, line: UInt = #line) -> PlanIssue? {
        let found = errors(json, envelope: envelope, file: file, line: line)
        XCTAssertEqual(found.count, 1, "expected one error, got:\n\(found.map(\.message).joined(separator: "\n"))",
                       file: file, line: line)
        guard let issue = found.first else { return nil }
        XCTAssertEqual(issue.code, code, issue.message, file: file, line: line)
        XCTAssertEqual(issue.path, path, issue.message, file: file, line: line)
        XCTAssertEqual(issue.severity, .error, file: file, line: line)
        return issue
    }

    private static var examplesDirectory: URL {
        URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent()  // SessionRunnerTests
            .deletingLastPathComponent()  // Tests
            .deletingLastPathComponent()  // package root
            .appendingPathComponent("Examples")
    }

    private static let deviceLimits = DeviceLimits(
        depthMinMicrometres: 300, depthMaxMicrometres: 1_200,
        dwellMinMicroseconds: 10_000, dwellMaxMicroseconds: 300_000,
        travelXMicrometres: 120_000, travelYMicrometres: 200_000,
        travelSpeedMicrometresPerSecond: 50_000, descendMicroseconds: 20_000, retractMicroseconds: 20_000)

    // MARK: A valid plan

    func testValidPlanLoadsWithMicrometreConversion() throws {
        let json = """
            {
              "format": "smp-plan/1",
              "plan_id": "crown-2025-03",
              "client": {"reference": "C-17", "hair_transplant_date": "2024-02-29"},
              "session": {"number": 2, "of": 3, "date": "2025-03-14"},
              "defaults": {"depth_mm": 0.6, "dwell_ms": 120},
              "dots": [
                {"id": 7, "x_mm": 12.3456, "y_mm": -0.0005, "region": "crown-centre"},
                {"id": 4294967295, "x_mm": -150, "y_mm": 150, "depth_mm": 1.5, "dwell_ms": 500, "region": "crown-edge"},
                {"id": 3, "x_mm": 1.0, "y_mm": 2.5, "depth_mm": 0.2, "dwell_ms": 20.0004, "region": "crown-edge"},
                {"id": 9, "x_mm": 1.5, "y_mm": 2.5, "depth_mm": 0.7505, "dwell_ms": 80.5, "region": "crown-edge"}
              ]
            }
            """
        let (plan, warnings) = try load(json)
        // 20 ms is allowed, but quicker than one dot per 50 ms (20 dots/s): worth a warning.
        XCTAssertEqual(warnings.map(\.code), [.dwellBelowRatePeriod])
        XCTAssertEqual(plan.planID, "crown-2025-03")
        XCTAssertNil(plan.sourcePath)
        XCTAssertEqual(plan.sha256?.count, 64, "SHA-256 of the bytes that were validated, in hex")
        XCTAssertEqual(plan.client, PlanClient(reference: "C-17", hairTransplantDate: PlanDate(year: 2024, month: 2, day: 29)))
        XCTAssertEqual(plan.session, PlanSession(number: 2, of: 3, date: PlanDate(year: 2025, month: 3, day: 14)))
        XCTAssertEqual(plan.dots, [
            // 12345.6 µm → 12346; -0.5 µm → -1 (halves away from zero); defaults 600 µm, 120000 µs.
            PlanDot(id: 7, xMicrometres: 12_346, yMicrometres: -1, depthMicrometres: 600,
                    dwellMicroseconds: 120_000, region: "crown-centre", index: 0),
            // Every bound exactly: allowed.
            PlanDot(id: 4_294_967_295, xMicrometres: -150_000, yMicrometres: 150_000, depthMicrometres: 1_500,
                    dwellMicroseconds: 500_000, region: "crown-edge", index: 1),
            PlanDot(id: 3, xMicrometres: 1_000, yMicrometres: 2_500, depthMicrometres: 200,
                    dwellMicroseconds: 20_000, region: "crown-edge", index: 2),
            // Exactly 0.5 mm from the dot before: allowed. 750.5 µm → 751.
            PlanDot(id: 9, xMicrometres: 1_500, yMicrometres: 2_500, depthMicrometres: 751,
                    dwellMicroseconds: 80_500, region: "crown-edge", index: 3),
        ])
        XCTAssertEqual(PlanValidator.validate(plan, envelope: .builtIn), warnings)
    }

    func testPlanWithoutDefaultsOrOptionalObjectsLoads() throws {
        let json = #"{"format": "smp-plan/1", "plan_id": "p", "dots": [{"id": 1, "x_mm": 0, "y_mm": 0, "depth_mm": 1, "dwell_ms": 100, "region": "a"}]}"#
        let (plan, _) = try load(json)
        XCTAssertNil(plan.client)
        XCTAssertNil(plan.session)
        XCTAssertEqual(plan.dots.first?.depthMicrometres, 1_000)
        XCTAssertEqual(plan.dots.first?.dwellMicroseconds, 100_000)
    }

    func testLoadFromPathKeepsSourcePath() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("plan-\(UUID().uuidString).json")
        try Data(document().utf8).write(to: url)
        defer { try? FileManager.default.removeItem(at: url) }
        let (plan, _) = try PlanLoader.load(path: url.path)
        XCTAssertEqual(plan.sourcePath, url.path)
        XCTAssertEqual(plan.dots.count, 1)
    }

    // MARK: File-level errors

    func testUnreadableFile() {
        let path = "/nonexistent/plan-\(UUID().uuidString).json"
        XCTAssertThrowsError(try PlanLoader.load(path: path)) { error in
            guard let error = error as? PlanLoadError else { return XCTFail("\(error)") }
            XCTAssertEqual(error.file, path)
            XCTAssertEqual(error.issues.map(\.code), [.fileUnreadable])
            XCTAssertTrue(error.isUnreadable)
            XCTAssertTrue(error.issues.first?.message.contains("No such file or directory") ?? false, error.description)
            XCTAssertTrue(error.description.contains(path), error.description)
        }
        XCTAssertThrowsError(try PlanLoader.load(path: FileManager.default.temporaryDirectory.path)) { error in
            XCTAssertEqual((error as? PlanLoadError)?.issues.map(\.code), [.fileUnreadable])
        }
    }

    /// A FIFO (a reader would wait for a writer forever) and a 10 GB file (sparse: nothing is
    /// written) are refused at once, before a byte is read.
    func testAFIFOAndATenGigabyteFileAreRefusedNotWaitedFor() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("smpctl-plan-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let fifo = directory.appendingPathComponent("plan.json").path
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        XCTAssertThrowsError(try PlanLoader.load(path: fifo)) { error in
            XCTAssertEqual((error as? PlanLoadError)?.issues.map(\.code), [.fileUnreadable])
            XCTAssertTrue("\(error)".contains("not a regular file"), "\(error)")
        }
        let huge = directory.appendingPathComponent("huge.json").path
        XCTAssertTrue(FileManager.default.createFile(atPath: huge, contents: nil))
        XCTAssertEqual(truncate(huge, 10 * 1024 * 1024 * 1024), 0)
        XCTAssertThrowsError(try PlanLoader.load(path: huge)) { error in
            XCTAssertEqual((error as? PlanLoadError)?.issues.map(\.code), [.fileTooLarge])
            XCTAssertTrue("\(error)".contains("10737418240 bytes is more than"), "\(error)")
        }
    }

    func testFileErrorsAreNotUnreadableWhenTheFileWasRead() {
        do {
            _ = try load("not json")
            XCTFail("loaded")
        } catch {
            XCTAssertFalse(error.isUnreadable)
        }
    }

    func testNotJSONReportsLineAndColumn() {
        let issue = singleError("{\n  \"format\": \"smp-plan/1\",\n  \"plan_id\": x\n}", .invalidJSON, at: "$")
        XCTAssertTrue(issue?.message.contains("line 3, column 14") ?? false, issue?.message ?? "")
        singleError("", .invalidJSON, at: "$")
        singleError(#"{"format": "smp-plan/1", "dots": [}"#, .invalidJSON, at: "$")
        // JSON has no NaN or Infinity literals: such a file is not JSON.
        singleError(document(dots: #"{"id": 1, "x_mm": NaN, "y_mm": 0}"#), .invalidJSON, at: "$")
        singleError(document(dots: #"{"id": 1, "x_mm": Infinity, "y_mm": 0}"#), .invalidJSON, at: "$")
    }

    func testTopLevelMustBeAnObject() {
        let issue = singleError("[1, 2]", .wrongType, at: "$")
        XCTAssertEqual(issue?.value, "[…]")
        singleError(#""smp-plan/1""#, .wrongType, at: "$")
    }

    // MARK: Top-level shape

    func testMissingFormat() {
        singleError(document(header: #""plan_id": "t", "defaults": {"depth_mm": 0.6, "dwell_ms": 120}"#),
                    .missingKey, at: "format")
    }

    func testWrongFormat() {
        let issue = singleError(document(header: #""format": "smp-plan/2", "plan_id": "t", "defaults": {"depth_mm": 0.6, "dwell_ms": 120}"#),
                                .unsupportedFormat, at: "format")
        XCTAssertEqual(issue?.value, #""smp-plan/2""#)
        XCTAssertEqual(issue?.limit, #""smp-plan/1""#)
        singleError(document(header: #""format": 1, "plan_id": "t", "defaults": {"depth_mm": 0.6, "dwell_ms": 120}"#),
                    .wrongType, at: "format")
    }

    func testMissingOrEmptyPlanID() {
        singleError(document(header: #""format": "smp-plan/1", "defaults": {"depth_mm": 0.6, "dwell_ms": 120}"#),
                    .missingKey, at: "plan_id")
        singleError(document(header: #""format": "smp-plan/1", "plan_id": "", "defaults": {"depth_mm": 0.6, "dwell_ms": 120}"#),
                    .emptyValue, at: "plan_id")
        singleError(document(header: #""format": "smp-plan/1", "plan_id": " \t", "defaults": {"depth_mm": 0.6, "dwell_ms": 120}"#),
                    .emptyValue, at: "plan_id")
        singleError(document(header: #""format": "smp-plan/1", "plan_id": 17, "defaults": {"depth_mm": 0.6, "dwell_ms": 120}"#),
                    .wrongType, at: "plan_id")
    }

    func testMissingEmptyOrWrongDots() {
        singleError(#"{"format": "smp-plan/1", "plan_id": "t"}"#, .missingKey, at: "dots")
        singleError(#"{"format": "smp-plan/1", "plan_id": "t", "dots": []}"#, .emptyValue, at: "dots")
        singleError(#"{"format": "smp-plan/1", "plan_id": "t", "dots": {"id": 1}}"#, .wrongType, at: "dots")
        singleError(#"{"format": "smp-plan/1", "plan_id": "t", "dots": null}"#, .wrongType, at: "dots")
    }

    /// The `design` object `smpctl design` writes: kept in the plan, checked like every other key.
    func testTheDesignObjectIsReadAndChecked() throws {
        let digest = String(repeating: "ab", count: 32)
        let (plan, _) = try load(document(extra: """
            "design": {"design_id": "C-1", "after": [{"plan_id": "C-1-s1", "plan_sha256": "\(digest)", "dots": 12},
                                                      {"plan_id": "C-1-s2", "record_session": 7}]}
            """))
        XCTAssertEqual(plan.design, PlanDesign(designID: "C-1", after: [
            PlanDesignSource(planID: "C-1-s1", planSHA256: digest, dotCount: 12),
            PlanDesignSource(planID: "C-1-s2", recordSession: 7),
        ]))
        XCTAssertNil(try load(document()).0.design)

        let found = errors(document(extra: """
            "design": {"design_id": " ", "after": [{"plan_sha256": "ABC", "record_session": 1.5, "dot": 3}]}
            """))
        XCTAssertEqual(found.map(\.code), [.unknownKey, .emptyValue, .missingKey, .invalidDigest, .notInteger])
        XCTAssertEqual(found.map(\.path), ["design.after[0].dot", "design.design_id", "design.after[0].plan_id",
                                           "design.after[0].plan_sha256", "design.after[0].record_session"])
        XCTAssertTrue(found[0].message.contains(#"did you mean "dots"?"#), found[0].message)
    }

    func testUnknownTopLevelKey() {
        let issue = singleError(document(extra: #""colour": "dark""#), .unknownKey, at: "colour")
        XCTAssertEqual(issue?.value, #""dark""#)
        let typo = singleError(document(extra: #""plan_di": "x""#), .unknownKey, at: "plan_di")
        XCTAssertTrue(typo?.message.contains(#"did you mean "plan_id"?"#) ?? false, typo?.message ?? "")
        let odd = singleError(document(extra: #""a b": 1"#), .unknownKey, at: #"["a b"]"#)
        XCTAssertNotNil(odd)
    }

    func testUnknownKeyInDotNeverFallsBackToTheDefault() {
        // The plan has a default depth; a typo must not silently use it.
        let issue = singleError(document(dots: #"{"id": 1, "x_mm": 0, "y_mm": 0, "depht_mm": 1.2, "region": "r"}"#),
                                .unknownKey, at: "dots[0].depht_mm")
        XCTAssertEqual(issue?.value, "1.2")
        XCTAssertTrue(issue?.message.contains(#"did you mean "depth_mm"?"#) ?? false, issue?.message ?? "")
        let unit = singleError(document(dots: #"{"id": 1, "x_mm": 0, "y_mm": 0, "dwell": 100, "region": "r"}"#),
                               .unknownKey, at: "dots[0].dwell")
        XCTAssertTrue(unit?.message.contains(#"did you mean "dwell_ms"?"#) ?? false, unit?.message ?? "")
    }

    func testUnknownKeysInNestedObjects() {
        singleError(document(header: #""format": "smp-plan/1", "plan_id": "t", "defaults": {"depth_mm": 0.6, "dwell_ms": 120, "speed": 3}"#),
                    .unknownKey, at: "defaults.speed")
        singleError(document(extra: #""client": {"reference": "c", "name": "Jo"}"#), .unknownKey, at: "client.name")
        singleError(document(extra: #""session": {"number": 1, "total": 3}"#), .unknownKey, at: "session.total")
    }

    // MARK: Types and numbers

    func testWrongTypes() {
        let string = singleError(document(dots: #"{"id": 1, "x_mm": "12.5", "y_mm": 0, "region": "r"}"#),
                                 .wrongType, at: "dots[0].x_mm")
        XCTAssertEqual(string?.value, #""12.5""#)
        XCTAssertEqual(string?.message, #"dots[0].x_mm = "12.5" must be a number, not a string"#)
        singleError(document(dots: #"{"id": 1, "x_mm": 0, "y_mm": null, "region": "r"}"#), .wrongType, at: "dots[0].y_mm")
        singleError(document(dots: #"{"id": 1, "x_mm": 0, "y_mm": 0, "depth_mm": true, "region": "r"}"#),
                    .wrongType, at: "dots[0].depth_mm")
        singleError(document(dots: #"{"id": 1, "x_mm": 0, "y_mm": 0, "dwell_ms": [100], "region": "r"}"#),
                    .wrongType, at: "dots[0].dwell_ms")
        singleError(document(dots: #"{"id": 1, "x_mm": 0, "y_mm": 0, "region": 5}"#), .wrongType, at: "dots[0].region")
        singleError(document(dots: #"{"id": "1", "x_mm": 0, "y_mm": 0, "region": "r"}"#), .wrongType, at: "dots[0].id")
        singleError(document(dots: #"{"id": 1, "x_mm": 0, "y_mm": 0, "region": "r"}, 42"#), .wrongType, at: "dots[1]")
        singleError(document(header: #""format": "smp-plan/1", "plan_id": "t", "defaults": [0.6, 120]"#),
                    .wrongType, at: "defaults")
        singleError(document(extra: #""session": 2"#), .wrongType, at: "session")
        singleError(document(header: #""format": "smp-plan/1", "plan_id": "t", "defaults": {"depth_mm": "0.6", "dwell_ms": 120}"#),
                    .wrongType, at: "defaults.depth_mm")
    }

    func testNumbersBeyondDoubleAreRefused() {
        // JSON allows 1e400; Foundation refuses to make a Double of it. Either way: an error at the path.
        let huge = singleError(document(dots: #"{"id": 1, "x_mm": 0, "y_mm": 0, "depth_mm": 1e400, "region": "r"}"#),
                               .notFinite, at: "dots[0].depth_mm")
        XCTAssertEqual(huge?.value, "1e400")
        singleError(document(dots: #"{"id": 1, "x_mm": -1e400, "y_mm": 0, "region": "r"}"#), .notFinite, at: "dots[0].x_mm")
        singleError(document(dots: #"{"id": 1e400, "x_mm": 0, "y_mm": 0, "region": "r"}"#), .notFinite, at: "dots[0].id")
        singleError(document(dots: #"{"id": 1, "x_mm": 0, "y_mm": 0, "dwell_ms": 1e-400, "region": "r"}"#),
                    .notFinite, at: "dots[0].dwell_ms")
        // Foundation checks some number syntax only when the number is used.
        let leadingZero = singleError(document(dots: #"{"id": 1, "x_mm": 01, "y_mm": 0, "region": "r"}"#),
                                      .wrongType, at: "dots[0].x_mm")
        XCTAssertTrue(leadingZero?.message.hasPrefix("dots[0].x_mm is not a valid JSON number") ?? false,
                      leadingZero?.message ?? "")
        // Large but finite: out of range, and converting it must not trap.
        singleError(document(dots: #"{"id": 1, "x_mm": 1e300, "y_mm": 0, "region": "r"}"#),
                    .travelOutOfRange, at: "dots[0].x_mm")
        singleError(document(dots: #"{"id": 1, "x_mm": 0, "y_mm": 0, "depth_mm": 1.7e308, "region": "r"}"#),
                    .depthOutOfRange, at: "dots[0].depth_mm")
    }

    // MARK: Ids

    func testNonIntegerID() {
        let issue = singleError(document(dots: #"{"id": 1.5, "x_mm": 0, "y_mm": 0, "region": "r"}"#),
                                .notInteger, at: "dots[0].id")
        XCTAssertEqual(issue?.value, "1.5")
    }

    func testIDOutOfRange() {
        singleError(document(dots: #"{"id": 0, "x_mm": 0, "y_mm": 0, "region": "r"}"#), .idOutOfRange, at: "dots[0].id")
        singleError(document(dots: #"{"id": -3, "x_mm": 0, "y_mm": 0, "region": "r"}"#), .idOutOfRange, at: "dots[0].id")
        let big = singleError(document(dots: #"{"id": 4294967296, "x_mm": 0, "y_mm": 0, "region": "r"}"#),
                              .idOutOfRange, at: "dots[0].id")
        XCTAssertEqual(big?.value, "4294967296")
        singleError(document(dots: #"{"x_mm": 0, "y_mm": 0, "region": "r"}"#), .missingKey, at: "dots[0].id")
    }

    func testDuplicateID() {
        let issue = singleError(document(dots: """
            {"id": 5, "x_mm": 0, "y_mm": 0, "region": "r"},
            {"id": 6, "x_mm": 1, "y_mm": 0, "region": "r"},
            {"id": 5, "x_mm": 2, "y_mm": 0, "region": "r"}
            """), .duplicateID, at: "dots[2].id")
        XCTAssertEqual(issue?.limit, "unique id")
        XCTAssertTrue(issue?.message.contains("dots[0]") ?? false, issue?.message ?? "")
    }

    // MARK: Defaults

    func testMissingDepthOrDwellWithoutDefault() {
        let noDefaults = #""format": "smp-plan/1", "plan_id": "t""#
        let depth = singleError(document(dots: #"{"id": 1, "x_mm": 0, "y_mm": 0, "dwell_ms": 100, "region": "r"}"#,
                                         header: noDefaults), .noValueOrDefault, at: "dots[0].depth_mm")
        XCTAssertEqual(depth?.message, "dots[0] has no depth_mm and the plan has no defaults.depth_mm (dot id 1)")
        singleError(document(dots: #"{"id": 1, "x_mm": 0, "y_mm": 0, "depth_mm": 0.5, "region": "r"}"#,
                             header: noDefaults + #", "defaults": {"depth_mm": 0.6}"#),
                    .noValueOrDefault, at: "dots[0].dwell_ms")
        singleError(document(dots: #"{"id": 1, "y_mm": 0, "region": "r"}"#), .missingKey, at: "dots[0].x_mm")
        singleError(document(dots: #"{"id": 1, "x_mm": 0, "region": "r"}"#), .missingKey, at: "dots[0].y_mm")
    }

    func testOutOfRangeDefaultIsReportedOnceNotPerDot() {
        let issue = singleError(document(dots: """
            {"id": 1, "x_mm": 0, "y_mm": 0, "region": "r"},
            {"id": 2, "x_mm": 1, "y_mm": 0, "region": "r"}
            """, header: #""format": "smp-plan/1", "plan_id": "t", "defaults": {"depth_mm": 1.8, "dwell_ms": 120}"#),
                                .depthOutOfRange, at: "defaults.depth_mm")
        XCTAssertEqual(issue?.message, "defaults.depth_mm = 1.8 exceeds the maximum 1.5 mm")
    }

    // MARK: Envelope ranges, in the file's units

    func testDepthOutOfRange() {
        let high = singleError(document(dots: #"{"id": 13, "x_mm": 0, "y_mm": 0, "depth_mm": 2.1, "region": "r"}"#),
                               .depthOutOfRange, at: "dots[0].depth_mm")
        XCTAssertEqual(high?.value, "2.1")
        XCTAssertEqual(high?.limit, "≤ 1.5 mm")
        XCTAssertEqual(high?.message, "dots[0].depth_mm = 2.1 exceeds the maximum 1.5 mm (dot id 13)")
        let low = singleError(document(dots: #"{"id": 1, "x_mm": 0, "y_mm": 0, "depth_mm": 0.1, "region": "r"}"#),
                              .depthOutOfRange, at: "dots[0].depth_mm")
        XCTAssertEqual(low?.limit, "≥ 0.2 mm")
        XCTAssertEqual(low?.message, "dots[0].depth_mm = 0.1 is below the minimum 0.2 mm (dot id 1)")
        // Checked before rounding: 1.5004 mm would round to 1500 µm but is still too deep.
        let rounding = singleError(document(dots: #"{"id": 1, "x_mm": 0, "y_mm": 0, "depth_mm": 1.5004, "region": "r"}"#),
                                   .depthOutOfRange, at: "dots[0].depth_mm")
        XCTAssertEqual(rounding?.value, "1.5004")
        singleError(document(dots: #"{"id": 1, "x_mm": 0, "y_mm": 0, "depth_mm": 0.1996, "region": "r"}"#),
                    .depthOutOfRange, at: "dots[0].depth_mm")
        singleError(document(dots: #"{"id": 1, "x_mm": 0, "y_mm": 0, "depth_mm": -0.5, "region": "r"}"#),
                    .depthOutOfRange, at: "dots[0].depth_mm")
    }

    func testValuesWrittenExactlyAtABoundAreJudgedExactly() throws {
        // 1.001 × 1000 is 1000.9999999999999 in floating point: the check must not rely on that.
        var envelope = SafetyEnvelope.builtIn
        envelope.depthMicrometres = 1_001...1_001
        envelope.dwellMicroseconds = 20_003...20_003
        envelope.travelXMicrometres = 1_003
        let header = #""format": "smp-plan/1", "plan_id": "t""#
        let (plan, _) = try load(document(dots: #"{"id": 1, "x_mm": -1.003, "y_mm": 0, "depth_mm": 1.001, "dwell_ms": 20.003, "region": "r"}"#, header: header),
                                 envelope: envelope)
        XCTAssertEqual(plan.dots.first?.depthMicrometres, 1_001)
        XCTAssertEqual(plan.dots.first?.dwellMicroseconds, 20_003)
        XCTAssertEqual(plan.dots.first?.xMicrometres, -1_003)
        singleError(document(dots: #"{"id": 1, "x_mm": 0, "y_mm": 0, "depth_mm": 1.0011, "dwell_ms": 20.003, "region": "r"}"#, header: header),
                    .depthOutOfRange, at: "dots[0].depth_mm", envelope: envelope)
        singleError(document(dots: #"{"id": 1, "x_mm": 0, "y_mm": 0, "depth_mm": 1.0009, "dwell_ms": 20.003, "region": "r"}"#, header: header),
                    .depthOutOfRange, at: "dots[0].depth_mm", envelope: envelope)

        // Every bound written with three decimals, across the ranges that matter, is accepted exactly.
        for micro in stride(from: Int32(200), through: 150_000, by: 7) {
            let range = micro...micro
            let written = Double(PlanText.milli(micro))!
            XCTAssertNil(SafetyEnvelope.rangeIssue(.depthOutOfRange, path: "p", value: "v", fileValue: written,
                                                   range: range, unit: "mm", id: nil), "\(micro)")
            XCTAssertEqual(PlanLoader.micro(written * 1000), micro)
            XCTAssertNil(SafetyEnvelope.travelIssue(axis: "x", path: "p", value: "v", fileValue: -written,
                                                    travel: micro, id: nil), "\(micro)")
        }
    }

    func testDwellOutOfRange() {
        let high = singleError(document(dots: #"{"id": 1, "x_mm": 0, "y_mm": 0, "dwell_ms": 900, "region": "r"}"#),
                               .dwellOutOfRange, at: "dots[0].dwell_ms")
        XCTAssertEqual(high?.value, "900")
        XCTAssertEqual(high?.limit, "≤ 500 ms")
        XCTAssertEqual(high?.message, "dots[0].dwell_ms = 900 exceeds the maximum 500 ms (dot id 1)")
        let low = singleError(document(dots: #"{"id": 1, "x_mm": 0, "y_mm": 0, "dwell_ms": 19.9, "region": "r"}"#),
                              .dwellOutOfRange, at: "dots[0].dwell_ms")
        XCTAssertEqual(low?.limit, "≥ 20 ms")
    }

    func testTravelOutOfRange() {
        let x = singleError(document(dots: #"{"id": 1, "x_mm": 151.2, "y_mm": 0, "region": "r"}"#),
                            .travelOutOfRange, at: "dots[0].x_mm")
        XCTAssertEqual(x?.value, "151.2")
        XCTAssertEqual(x?.limit, "|x| ≤ 150 mm")
        XCTAssertEqual(x?.message, "dots[0].x_mm = 151.2 is outside the travel: |x| must be ≤ 150 mm (dot id 1)")
        let y = singleError(document(dots: #"{"id": 1, "x_mm": 0, "y_mm": -150.0004, "region": "r"}"#),
                            .travelOutOfRange, at: "dots[0].y_mm")
        XCTAssertEqual(y?.limit, "|y| ≤ 150 mm")
    }

    // MARK: Spacing

    func testTwoDotsTooClose() {
        let issue = singleError(document(dots: """
            {"id": 1, "x_mm": 10, "y_mm": 10, "region": "r"},
            {"id": 2, "x_mm": 20, "y_mm": 10, "region": "r"},
            {"id": 3, "x_mm": 10.3, "y_mm": 10, "region": "r"}
            """), .tooClose, at: "dots[2]")
        XCTAssertEqual(issue?.value, "0.3 mm")
        XCTAssertEqual(issue?.limit, "≥ 0.5 mm from every other dot")
        XCTAssertEqual(issue?.message,
                       "dots[2] at (10.3, 10) mm is 0.3 mm from dots[0]; dots must be at least 0.5 mm apart (dot ids 3 and 1)")
    }

    func testSameSpotIsAnError() {
        let issue = singleError(document(dots: """
            {"id": 1, "x_mm": -3, "y_mm": 4, "region": "r"},
            {"id": 2, "x_mm": -3, "y_mm": 4, "region": "r"}
            """), .tooClose, at: "dots[1]")
        XCTAssertTrue(issue?.message.contains("same spot as dots[0]") ?? false, issue?.message ?? "")
        // Even with spacing switched off.
        var envelope = SafetyEnvelope.builtIn
        envelope.minimumSpacingMicrometres = 0
        singleError(document(dots: """
            {"id": 1, "x_mm": -3, "y_mm": 4, "region": "r"},
            {"id": 2, "x_mm": -3, "y_mm": 4.001, "region": "r"},
            {"id": 3, "x_mm": -3, "y_mm": 4, "region": "r"}
            """), .tooClose, at: "dots[2]", envelope: envelope)
    }

    func testSpacingGridAgreesWithBruteForce() {
        var generator = SplitMix64(seed: 0x5EED_0001)
        for trial in 0..<60 {
            let count = 1 + Int(generator.next() % 400)
            let minimum = [0, 1, 250, 500, 500, 700, 1_000][trial % 7]
            // Small areas make many conflicts; some trials use a wide area and negative coordinates.
            let extent = [2_000, 5_000, 20_000, 150_000][trial % 4]
            var xs: [Int32] = [], ys: [Int32] = []
            for _ in 0..<count {
                if !xs.isEmpty, generator.next() % 10 == 0 {
                    // Duplicates and near-duplicates of earlier points, including across cell edges.
                    let k = Int(generator.next() % UInt64(xs.count))
                    xs.append(xs[k] &+ Int32(Int(generator.next() % 7) - 3))
                    ys.append(ys[k] &+ Int32(Int(generator.next() % 7) - 3))
                } else {
                    xs.append(Int32(Int(generator.next() % UInt64(2 * extent + 1)) - extent))
                    ys.append(Int32(Int(generator.next() % UInt64(2 * extent + 1)) - extent))
                }
            }
            let grid = PlanSpacing.violations(xs: xs, ys: ys, minimum: Int32(minimum))
            XCTAssertTrue(grid.complete)
            let found = Set(grid.violations.map { Pair($0.first, $0.second, $0.distanceSquared) })
            let expected = bruteForce(xs: xs, ys: ys, minimum: minimum)
            XCTAssertEqual(found, expected, "trial \(trial): \(count) points, spacing \(minimum) µm")
            XCTAssertEqual(grid.total, expected.count)
        }
    }

    func testSpacingGridAtTheEdgesOfInt32() {
        let xs: [Int32] = [.max, .max - 400, .min, .min + 499, .min + 500, 0, -1, 0]
        let ys: [Int32] = [.max, .max, .min, .min, .min, .min, .max, .max]
        let grid = PlanSpacing.violations(xs: xs, ys: ys, minimum: 500)
        XCTAssertEqual(Set(grid.violations.map { Pair($0.first, $0.second, $0.distanceSquared) }),
                       bruteForce(xs: xs, ys: ys, minimum: 500))
    }

    func testSpacingCheckHasABudget() {
        // 3,000 dots on one spot: 4.5 million pairs; the check stops, the plan is refused.
        let xs = [Int32](repeating: 0, count: 3_000)
        let result = PlanSpacing.violations(xs: xs, ys: xs, minimum: 500, limit: 10)
        XCTAssertFalse(result.complete)
        XCTAssertEqual(result.violations.count, 10)

        let dots = (1...3_000).map { #"{"id": \#($0), "x_mm": 1, "y_mm": 1, "region": "r"}"# }.joined(separator: ",")
        let found = errors(document(dots: dots))
        // The capped list, the reason the check stopped (always shown), then "… and N more".
        XCTAssertEqual(found.count, PlanIssueList.cap + 2)
        XCTAssertEqual(found.map(\.code).suffix(2), [.spacingCheckIncomplete, .moreErrors])
    }

    // MARK: Client and session

    func testClientAndSessionShape() {
        singleError(document(extra: #""session": {"number": 4, "of": 3}"#), .invalidSession, at: "session.number")
        singleError(document(extra: #""session": {"number": 0}"#), .invalidSession, at: "session.number")
        singleError(document(extra: #""session": {"number": 1, "of": 0}"#), .invalidSession, at: "session.of")
        singleError(document(extra: #""session": {"number": 1.5}"#), .notInteger, at: "session.number")
        singleError(document(extra: #""session": {"of": 3}"#), .missingKey, at: "session.number")
        let date = singleError(document(extra: #""session": {"number": 1, "date": "2025-02-29"}"#),
                               .invalidDate, at: "session.date")
        XCTAssertEqual(date?.value, #""2025-02-29""#)
        XCTAssertEqual(date?.message, #"session.date = "2025-02-29" is not a real calendar date"#)
        let shape = singleError(document(extra: #""client": {"reference": "c", "hair_transplant_date": "12/03/2024"}"#),
                                .invalidDate, at: "client.hair_transplant_date")
        XCTAssertEqual(shape?.message, #"client.hair_transplant_date = "12/03/2024" is not a date written YYYY-MM-DD"#)
        singleError(document(extra: #""client": {"hair_transplant_date": "2024-03-12"}"#), .missingKey, at: "client.reference")
        singleError(document(extra: #""client": {"reference": ""}"#), .emptyValue, at: "client.reference")
    }

    func testPlanDateParsing() {
        XCTAssertEqual(PlanDate("2024-02-29")?.description, "2024-02-29")
        XCTAssertNil(PlanDate("2023-02-29"))
        XCTAssertNil(PlanDate("1900-02-29"))
        XCTAssertNotNil(PlanDate("2000-02-29"))
        XCTAssertNil(PlanDate("2024-2-29"))
        XCTAssertNil(PlanDate("2024-13-01"))
        XCTAssertNil(PlanDate("2024-04-31"))
        XCTAssertNil(PlanDate("0000-01-01"))
        XCTAssertNil(PlanDate("２０２４-01-01"))
        XCTAssertTrue(PlanDate("2024-12-31")! < PlanDate("2025-01-01")!)
    }

    // MARK: Collecting everything

    func testAllErrorsAreCollected() {
        let json = """
            {"format": "smp-plan/0", "plan_id": "", "extra": 1,
             "dots": [
               {"id": 1, "x_mm": 0, "y_mm": 0, "depth_mm": 3},
               {"id": 1, "x_mm": 200, "y_mm": 0, "dwell_ms": 1},
               {"id": 2.5, "x_mm": 0.1, "y_mm": 0, "depht_mm": 0.5}
             ]}
            """
        let found = errors(json)
        let summary = found.map { "\($0.code.rawValue) \($0.path)" }
        XCTAssertEqual(summary, [
            "unsupportedFormat format",
            "emptyValue plan_id",
            "unknownKey extra",
            "depthOutOfRange dots[0].depth_mm",
            "noValueOrDefault dots[0].dwell_ms",
            "duplicateID dots[1].id",
            "travelOutOfRange dots[1].x_mm",
            "noValueOrDefault dots[1].depth_mm",
            "dwellOutOfRange dots[1].dwell_ms",
            "unknownKey dots[2].depht_mm",
            "notInteger dots[2].id",
            "noValueOrDefault dots[2].depth_mm",
            "noValueOrDefault dots[2].dwell_ms",
            "tooClose dots[2]",
        ], summary.joined(separator: "\n"))
    }

    func testErrorsAreCappedWithACount() {
        let dots = (1...1_500).map { #"{"id": \#($0), "x_mm": \#($0 % 100), "y_mm": \#($0 / 100), "depth_mm": 9, "dwell_ms": 900, "region": "r"}"# }
            .joined(separator: ",")
        let found = errors(document(dots: dots))
        XCTAssertEqual(found.count, PlanIssueList.cap + 1)
        XCTAssertEqual(found.last?.code, .moreErrors)
        XCTAssertEqual(found.last?.value, "2000")
        XCTAssertEqual(found.last?.message, "… and 2000 more errors not listed")
        do {
            _ = try load(document(dots: dots))
        } catch {
            XCTAssertTrue(error.description.hasPrefix("test.json: plan refused, 3000 errors"), String(error.description.prefix(80)))
        }
    }

    // MARK: Warnings

    func testWarningsDoNotStopAPlan() throws {
        let noRegions = try load(document(dots: #"{"id": 1, "x_mm": 0, "y_mm": 0}, {"id": 2, "x_mm": 1, "y_mm": 0}"#))
        XCTAssertEqual(noRegions.warnings.map(\.code), [.noRegions])
        XCTAssertEqual(noRegions.warnings.first?.severity, .warning)

        let someRegions = try load(document(dots: #"{"id": 1, "x_mm": 0, "y_mm": 0, "region": "a"}, {"id": 2, "x_mm": 1, "y_mm": 0}"#))
        XCTAssertEqual(someRegions.warnings.map(\.code), [.someRegionsMissing])
        XCTAssertTrue(someRegions.warnings.first?.message.contains("dots[1]") ?? false)

        let fast = try load(document(dots: #"{"id": 1, "x_mm": 0, "y_mm": 0, "dwell_ms": 30, "region": "a"}"#))
        XCTAssertEqual(fast.warnings.map(\.code), [.dwellBelowRatePeriod])
        XCTAssertEqual(fast.warnings.first?.limit, "dwell ≥ 50 ms")

        XCTAssertEqual(errors(document(dots: #"{"id": 1, "x_mm": 0, "y_mm": 0, "region": " "}"#)).map(\.code), [.emptyValue])
    }

    // MARK: Envelope

    func testBuiltInEnvelope() {
        let envelope = SafetyEnvelope.builtIn
        XCTAssertEqual(envelope.depthMicrometres, 200...1_500)
        XCTAssertEqual(envelope.dwellMicroseconds, 20_000...500_000)
        XCTAssertEqual(envelope.travelXMicrometres, 150_000)
        XCTAssertEqual(envelope.travelYMicrometres, 150_000)
        XCTAssertEqual(envelope.minimumSpacingMicrometres, 500)
        XCTAssertEqual(envelope.maximumDotsPerSecond, 20)
        XCTAssertNil(envelope.emptyReason)
    }

    func testIntersectedTakesTheTighterBound() {
        let envelope = SafetyEnvelope.builtIn.intersected(with: Self.deviceLimits)
        XCTAssertEqual(envelope.depthMicrometres, 300...1_200)      // device tighter on both ends
        XCTAssertEqual(envelope.dwellMicroseconds, 20_000...300_000) // envelope's min, device's max
        XCTAssertEqual(envelope.travelXMicrometres, 120_000)         // device tighter
        XCTAssertEqual(envelope.travelYMicrometres, 150_000)         // envelope tighter
        XCTAssertEqual(envelope.minimumSpacingMicrometres, 500)
        XCTAssertEqual(envelope.maximumDotsPerSecond, 20)
        XCTAssertTrue(envelope.isUsable)

        // A looser device changes nothing.
        let loose = DeviceLimits(depthMinMicrometres: 0, depthMaxMicrometres: .max, dwellMinMicroseconds: 0,
                                 dwellMaxMicroseconds: .max, travelXMicrometres: .max, travelYMicrometres: .max,
                                 travelSpeedMicrometresPerSecond: 1, descendMicroseconds: 1, retractMicroseconds: 1)
        XCTAssertEqual(SafetyEnvelope.builtIn.intersected(with: loose), .builtIn)
    }

    func testDisjointLimitsRefuseEveryDot() {
        var limits = Self.deviceLimits
        limits.depthMinMicrometres = 1_600
        limits.depthMaxMicrometres = 2_000
        let envelope = SafetyEnvelope.builtIn.intersected(with: limits)
        XCTAssertFalse(envelope.isUsable)
        XCTAssertNotNil(envelope.emptyReason)
        let dot = PlanDot(id: 1, xMicrometres: 0, yMicrometres: 0, depthMicrometres: 1_500,
                          dwellMicroseconds: 100_000, region: nil, index: 0)
        XCTAssertEqual(envelope.check(dot)?.code, .envelopeEmpty)
        let plan = Plan(planID: "p", dots: [dot])
        XCTAssertTrue(PlanValidator.validate(plan, envelope: envelope).contains { $0.code == .envelopeEmpty })
    }

    func testCheckReturnsTheFirstProblemOfADot() {
        let envelope = SafetyEnvelope.builtIn
        let good = PlanDot(id: 1, xMicrometres: 150_000, yMicrometres: -150_000, depthMicrometres: 1_500,
                           dwellMicroseconds: 20_000, region: "r", index: 4)
        XCTAssertNil(envelope.check(good))
        let deep = PlanDot(id: 2, xMicrometres: 0, yMicrometres: 0, depthMicrometres: 1_501,
                           dwellMicroseconds: 600_000, region: "r", index: 5)
        let issue = envelope.check(deep)
        XCTAssertEqual(issue?.code, .depthOutOfRange)
        XCTAssertEqual(issue?.path, "dots[5].depth_mm")
        XCTAssertEqual(issue?.message, "dots[5].depth_mm = 1.501 exceeds the maximum 1.5 mm (dot id 2)")
        let far = PlanDot(id: 3, xMicrometres: 0, yMicrometres: 150_001, depthMicrometres: 500,
                          dwellMicroseconds: 100_000, region: "r", index: 6)
        XCTAssertEqual(envelope.check(far)?.code, .travelOutOfRange)
        XCTAssertEqual(envelope.check(far)?.path, "dots[6].y_mm")
    }

    func testRevalidationWithTheDeviceEnvelope() throws {
        let (plan, _) = try load(document(dots: """
            {"id": 1, "x_mm": 0, "y_mm": 0, "depth_mm": 1.3, "region": "r"},
            {"id": 2, "x_mm": 130, "y_mm": 0, "region": "r"},
            {"id": 3, "x_mm": 1, "y_mm": 0, "dwell_ms": 400, "region": "r"}
            """))
        let envelope = SafetyEnvelope.builtIn.intersected(with: Self.deviceLimits)
        let issues = PlanValidator.validate(plan, envelope: envelope)
        XCTAssertEqual(issues.map(\.message), [
            "dots[0].depth_mm = 1.3 exceeds the maximum 1.2 mm (dot id 1)",
            "dots[1].x_mm = 130 is outside the travel: |x| must be ≤ 120 mm (dot id 2)",
            "dots[2].dwell_ms = 400 exceeds the maximum 300 ms (dot id 3)",
        ])
    }

    func testValidatorChecksIDsAndSpacingOfBuiltPlans() {
        func dot(_ id: UInt32, _ x: Int32, _ index: Int) -> PlanDot {
            PlanDot(id: id, xMicrometres: x, yMicrometres: 0, depthMicrometres: 500, dwellMicroseconds: 100_000,
                    region: "r", index: index)
        }
        let plan = Plan(planID: "p", dots: [dot(1, 0, 0), dot(1, 5_000, 1), dot(0, 10_000, 2), dot(4, 10_499, 3)])
        let issues = PlanValidator.validate(plan, envelope: .builtIn)
        XCTAssertEqual(issues.map(\.code), [.duplicateID, .idOutOfRange, .tooClose])
        XCTAssertEqual(issues.map(\.path), ["dots[1].id", "dots[2].id", "dots[3]"])
        XCTAssertEqual(PlanValidator.validate(Plan(planID: " ", dots: []), envelope: .builtIn).map(\.code),
                       [.emptyValue, .emptyValue])
    }

    // MARK: Examples

    func testExamplePlansLoadWithoutErrors() throws {
        let hairline = try PlanLoader.load(path: Self.examplesDirectory.appendingPathComponent("hairline.json").path)
        XCTAssertEqual(hairline.warnings, [])
        XCTAssertTrue((150...250).contains(hairline.0.dots.count), "\(hairline.0.dots.count)")
        XCTAssertEqual(Set(hairline.0.dots.compactMap(\.region)), ["hairline-front", "hairline-transition"])

        let crown = try PlanLoader.load(path: Self.examplesDirectory.appendingPathComponent("crown.json").path)
        XCTAssertEqual(crown.warnings, [])
        XCTAssertTrue((4_500...5_500).contains(crown.0.dots.count), "\(crown.0.dots.count)")
        XCTAssertEqual(Set(crown.0.dots.compactMap(\.region)), ["crown-centre", "crown-edge"])

        for plan in [hairline.0, crown.0] {
            XCTAssertEqual(plan.dots.map(\.index), Array(plan.dots.indices))
            XCTAssertTrue(plan.dots.allSatisfy { (500...1_000).contains($0.depthMicrometres) })
            XCTAssertTrue(plan.dots.allSatisfy { (80_000...200_000).contains($0.dwellMicroseconds) })
            // The examples keep 0.6 mm between dots, a margin over the 0.5 mm rule.
            var strict = SafetyEnvelope.builtIn
            strict.minimumSpacingMicrometres = 600
            XCTAssertEqual(PlanValidator.validate(plan, envelope: strict), [])
            // Still valid on the test device (depth 0.3–1.2 mm, dwell ≤ 300 ms, |x| ≤ 120 mm).
            XCTAssertEqual(PlanValidator.validate(plan, envelope: SafetyEnvelope.builtIn.intersected(with: Self.deviceLimits)), [])
        }
    }

    func testDocumentationExampleLoads() throws {
        let docs = Self.examplesDirectory.deletingLastPathComponent().appendingPathComponent("docs/plan-format.md")
        let text = try String(contentsOf: docs, encoding: .utf8)
        guard let start = text.range(of: "```json\n"),
              let end = text.range(of: "```", range: start.upperBound..<text.endIndex) else {
            return XCTFail("no ```json block in docs/plan-format.md")
        }
        let (plan, warnings) = try load(String(text[start.upperBound..<end.lowerBound]))
        XCTAssertEqual(warnings, [])
        XCTAssertEqual(plan.dots.map(\.depthMicrometres), [500, 600, 600])
        XCTAssertEqual(plan.dots.map(\.dwellMicroseconds), [90_000, 120_000, 140_000])
    }

    func testInvalidExampleHasEveryKindOfError() {
        let path = Self.examplesDirectory.appendingPathComponent("invalid.json").path
        XCTAssertThrowsError(try PlanLoader.load(path: path)) { error in
            guard let error = error as? PlanLoadError else { return XCTFail("\(error)") }
            let codes = Set(error.errors.map(\.code))
            // Everything but what cannot share a file with other errors: file-level failures, an
            // empty envelope (not a property of the file), the spacing budget, the "more" line.
            let notInAFile: Set<PlanIssue.Code> = [
                .fileUnreadable, .fileTooLarge, .invalidJSON, .envelopeEmpty, .spacingCheckIncomplete,
                .moreErrors, .noRegions, .someRegionsMissing, .dwellBelowRatePeriod,
                // Clinical timing is judged after loading (ClinicalTimingTests), not by the loader.
                .clinicalTooSoonAfterTransplant, .clinicalTimingCaution, .clinicalSessionsTooClose,
                // Only a design file (smp-design/1) can have these (DesignLoaderTests).
                .invalidPolygon, .invalidCourse, .densityOutOfRange, .duplicateName,
            ]
            XCTAssertEqual(codes, Set(PlanIssue.Code.allCases).subtracting(notInAFile),
                           error.description)
            XCTAssertTrue(error.warnings.contains { $0.code == .someRegionsMissing })
            XCTAssertTrue(error.warnings.contains { $0.code == .dwellBelowRatePeriod })
        }
    }

    // MARK: Text helpers

    func testPathsAndNumbers() {
        struct Key: CodingKey {
            var stringValue: String
            var intValue: Int?
            init(_ string: String) { stringValue = string; intValue = nil }
            init(_ index: Int) { stringValue = "Index \(index)"; intValue = index }
            init?(stringValue: String) { self.init(stringValue) }
            init?(intValue: Int) { self.init(intValue) }
        }
        XCTAssertEqual(PlanText.path([]), "$")
        XCTAssertEqual(PlanText.path([Key("dots"), Key(12), Key("depth_mm")]), "dots[12].depth_mm")
        XCTAssertEqual(PlanText.path([Key("dots"), Key(0), Key("odd key")]), #"dots[0]["odd key"]"#)
        XCTAssertEqual(PlanText.milli(Int64(1_500)), "1.5")
        XCTAssertEqual(PlanText.milli(Int64(150_000)), "150")
        XCTAssertEqual(PlanText.milli(Int64(-1_234)), "-1.234")
        XCTAssertEqual(PlanText.milli(Int64(5)), "0.005")
        XCTAssertEqual(PlanText.number(2.1), "2.1")
        XCTAssertEqual(PlanText.number(4_294_967_296), "4294967296")
        XCTAssertEqual(PlanText.editDistance("depht_mm", "depth_mm"), 1)
        XCTAssertNil(PlanText.suggestion(for: "colour", among: PlanKeys.document))
        XCTAssertEqual(PlanLoader.micro(0.5), 1)
        XCTAssertEqual(PlanLoader.micro(-0.5), -1)
        XCTAssertEqual(PlanLoader.micro(.infinity), .max)
        XCTAssertEqual(PlanLoader.micro(-1e300), .min)
    }
}

// MARK: - Test support

private struct Pair: Hashable, CustomStringConvertible {
    let first: Int, second: Int, distanceSquared: Int64
    init(_ first: Int, _ second: Int, _ distanceSquared: Int64) {
        self.first = first
        self.second = second
        self.distanceSquared = distanceSquared
    }
    var description: String { "(\(first), \(second)): \(distanceSquared)" }
}

/// Every pair closer than `minimum` (same spot always), the slow obvious way.
private func bruteForce(xs: [Int32], ys: [Int32], minimum: Int) -> Set<Pair> {
    var pairs = Set<Pair>()
    for j in xs.indices {
        for i in 0..<j {
            let dx = Double(xs[j]) - Double(xs[i]), dy = Double(ys[j]) - Double(ys[i])
            let squared = dx * dx + dy * dy
            let close = minimum > 0 ? squared < Double(minimum * minimum) : squared == 0
            if close { pairs.insert(Pair(i, j, Int64(squared))) }
        }
    }
    return pairs
}

