import Foundation
import XCTest

/// `smpctl design` as a technician runs it: a course designed session by session, each run on the
/// simulator, the next placed around what the records say was injected; the simulator's ground
/// truth proves every dot ran once and no two dots of the course are closer than 0.5 mm.
final class DesignCommandTests: XCTestCase {
    /// About 200 dots per session: a 30 × 24 mm crown at 60 per cm² around a 4 mm mole.
    static let design = """
        {"format": "smp-design/1", "design_id": "TEST-course", "client": {"reference": "TEST-0017"},
         "course": {"sessions": 3, "share": [0.4, 0.35, 0.25]},
         "defaults": {"depth_mm": 0.6, "dwell_ms": 60},
         "regions": [{"name": "crown", "polygon_mm": [[-15, -12], [15, -12], [15, 12], [-15, 12]], "density_per_cm2": 60}],
         "exclusions": [{"name": "mole", "polygon_mm": [[-2, -2], [2, -2], [2, 2], [-2, 2]]}]}
        """

    func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("smpctl-design-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    func writeDesign(_ text: String = design, in folder: URL) throws -> String {
        let path = folder.appendingPathComponent("design.json").path
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    func json(_ path: String) throws -> [String: Any] {
        try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
    }

    func planDotIDs(_ path: String) throws -> [Int] {
        try XCTUnwrap(json(path)["dots"] as? [[String: Any]]).compactMap { $0["id"] as? Int }
    }

    /// (x, y) in µm of every dot the simulator injected.
    static func injectedPositions(_ record: String) throws -> [(Int, Int)] {
        let text = try String(contentsOfFile: record, encoding: .utf8)
        return try text.split(separator: "\n").map { line in
            let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            return (try XCTUnwrap(object["x_um"] as? Int), try XCTUnwrap(object["y_um"] as? Int))
        }
    }

    static func closestPair(_ points: [(Int, Int)]) -> Double {
        var best = Double.infinity
        for i in points.indices {
            for j in (i + 1)..<points.count {
                let dx = Double(points[i].0 - points[j].0), dy = Double(points[i].1 - points[j].1)
                best = min(best, (dx * dx + dy * dy).squareRoot())
            }
        }
        return best
    }

    /// design → run → design --after session:ID --db → run → … for three sessions.
    func testAThreeSessionCourseRunsThroughTheRecords() throws {
        let folder = try temporaryDirectory()
        let design = try writeDesign(in: folder)
        let db = folder.appendingPathComponent("records.sqlite").path
        var sessionIDs: [Int] = []
        var planFiles: [String] = []
        var injected: [(Int, Int)] = []
        for number in 1...3 {
            let plan = folder.appendingPathComponent("s\(number).json").path
            let after = sessionIDs.flatMap { ["--after", "session:\($0)"] }
            let designed = try CLITests.smpctl(["design", design, "--session", "\(number)", "-o", plan, "--db", db] + after)
            XCTAssertEqual(designed.status, 0, designed.stderr)
            XCTAssertTrue(designed.stdout.contains("crown"), designed.stdout)
            XCTAssertTrue(designed.stdout.contains("minimum spacing"), designed.stdout)

            let validated = try CLITests.smpctl(["validate", plan] + planFiles.flatMap { ["--against", $0] })
            XCTAssertEqual(validated.status, 0, validated.stderr)

            let object = try json(plan)
            let linked = try XCTUnwrap(object["design"] as? [String: Any])
            XCTAssertEqual(linked["design_id"] as? String, "TEST-course")
            let sources = try XCTUnwrap(linked["after"] as? [[String: Any]])
            XCTAssertEqual(sources.compactMap { $0["record_session"] as? Int }, sessionIDs)

            let record = folder.appendingPathComponent("truth-\(number).ndjson").path
            let run = try CLITests.smpctl(["run", plan, "--sim", "--time-scale", "0", "--yes", "--db", db, "--record", record])
            XCTAssertEqual(run.status, 0, run.stderr)
            // The whole course on one day: every later session is warned about, none refused.
            XCTAssertEqual(run.stderr.contains("0 days after the previous session of its course"), number > 1, run.stderr)
            XCTAssertEqual(designed.stderr.contains("0 days after the previous session of its course"), number > 1,
                           designed.stderr)
            let finished = try XCTUnwrap(run.stdout.split(separator: "\n").compactMap {
                try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
            }.last { $0["event"] as? String == "finished" })
            sessionIDs.append(try XCTUnwrap(finished["session_id"] as? Int))

            // Every planned dot injected exactly once.
            let planned = try planDotIDs(plan)
            XCTAssertGreaterThan(planned.count, 100)
            XCTAssertEqual(try CLITests.recordedDotIDs(record).sorted(), planned.sorted())
            injected += try Self.injectedPositions(record)
            planFiles.append(plan)
        }
        XCTAssertGreaterThanOrEqual(Self.closestPair(injected), 500, "two injected dots of the course closer than 0.5 mm")
        // The course reaches the final density: 60 per cm² over 7.2 cm² less the 0.16 cm² mole.
        XCTAssertEqual(Double(injected.count), 60 * 7.04, accuracy: 60 * 7.04 * 0.05)
    }

    func testPlansDesignedAfterPlanFilesPassValidateAgainstThemAndTheSameSeedGivesTheSameBytes() throws {
        let folder = try temporaryDirectory()
        let design = try writeDesign(in: folder)
        let first = folder.appendingPathComponent("s1.json").path, second = folder.appendingPathComponent("s2.json").path
        let again = folder.appendingPathComponent("s2-again.json").path, other = folder.appendingPathComponent("s2-seed.json").path
        XCTAssertEqual(try CLITests.smpctl(["design", design, "--session", "1", "-o", first]).status, 0)
        XCTAssertEqual(try CLITests.smpctl(["design", design, "--session", "2", "--after", first, "-o", second]).status, 0)
        XCTAssertEqual(try CLITests.smpctl(["design", design, "--session", "2", "--after", first, "-o", again]).status, 0)
        XCTAssertEqual(try CLITests.smpctl(["design", design, "--session", "2", "--after", first, "--seed", "2", "-o", other]).status, 0)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: second)), try Data(contentsOf: URL(fileURLWithPath: again)))
        XCTAssertNotEqual(try Data(contentsOf: URL(fileURLWithPath: second)), try Data(contentsOf: URL(fileURLWithPath: other)))

        let validated = try CLITests.smpctl(["validate", second, "--against", first])
        XCTAssertEqual(validated.status, 0, validated.stderr)

        // Dated plans: a session 5 days after the one it was placed around is warned about.
        let dated1 = folder.appendingPathComponent("d1.json").path, dated2 = folder.appendingPathComponent("d2.json").path
        XCTAssertEqual(try CLITests.smpctl(["design", design, "--session", "1", "--date", "2027-03-01", "-o", dated1]).status, 0)
        XCTAssertEqual(try CLITests.smpctl(["design", design, "--session", "2", "--after", dated1, "--date", "2027-03-06",
                                            "-o", dated2]).status, 0)
        let soon = try CLITests.smpctl(["validate", dated2, "--against", dated1])
        XCTAssertEqual(soon.status, 0, soon.stderr)
        XCTAssertTrue(soon.stderr.contains("warning: the session (2027-03-06) is 5 days after the previous session"), soon.stderr)

        // Session 1 again, whole, is on top of session 1: every dot too close to an earlier one.
        let onTop = try CLITests.smpctl(["validate", first, "--against", first])
        XCTAssertEqual(onTop.status, 65)
        XCTAssertTrue(onTop.stderr.contains("dots[0] at ("), onTop.stderr)
        XCTAssertTrue(onTop.stderr.contains("of \(first) (id 1000"), onTop.stderr)

        let preview = folder.appendingPathComponent("s2.svg").path
        let drawn = try CLITests.smpctl(["preview", second, "--after", first, "-o", preview])
        XCTAssertEqual(drawn.status, 0, drawn.stderr)
        let svg = try String(contentsOfFile: preview, encoding: .utf8)
        XCTAssertTrue(svg.contains(#"<g id="earlier-dots""#))
        let earlierCount = try planDotIDs(first).count
        XCTAssertTrue(svg.contains(#"id="legend-earlier" data-dots="\#(earlierCount)""#), "legend of earlier dots")
    }

    func testADesignWithErrorsIsRefusedWithPathValueAndLimit() throws {
        let folder = try temporaryDirectory()
        let design = try writeDesign("""
            {"format": "smp-design/1", "design_id": "BAD", "course": {"sessions": 2, "share": [0.5, 0.4]},
             "defaults": {"depth_mm": 0.6, "dwell_ms": 60, "dwell_ms": 80},
             "regions": [{"name": "crown", "polygon_mm": [[0, 0], [10, 0], [0, 10], [10, 10]], "density_per_cm2": 600,
                          "depht_mm": 0.5}]}
            """, in: folder)
        let output = folder.appendingPathComponent("plan.json").path
        let result = try CLITests.smpctl(["design", design, "--session", "1", "-o", output])
        XCTAssertEqual(result.status, 65, result.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: output), "a refused design writes no plan")
        for expected in [
            "course.share = [0.5, 0.4] sums to 0.9",
            "defaults.dwell_ms appears twice in the same object",
            "regions[0].depht_mm = 0.5: \"depht_mm\" is not a key of this format (did you mean \"depth_mm\"?)",
            "regions[0].polygon_mm: the edge from point 1 crosses the edge from point 3",
            "regions[0].density_per_cm2 = 600 must be > 0 and ≤ 180.6 per cm²",
            "design refused; no plan was written",
        ] {
            XCTAssertTrue(result.stderr.contains(expected), "missing “\(expected)” in:\n\(result.stderr)")
        }
    }

    func testUnreadableFilesAndSessionsOutsideTheCourse() throws {
        let folder = try temporaryDirectory()
        let design = try writeDesign(in: folder)
        let output = folder.appendingPathComponent("plan.json").path
        XCTAssertEqual(try CLITests.smpctl(["design", folder.appendingPathComponent("none.json").path, "--session", "1",
                                            "-o", output]).status, 66)
        let beyond = try CLITests.smpctl(["design", design, "--session", "4", "-o", output])
        XCTAssertEqual(beyond.status, 64)
        XCTAssertTrue(beyond.stderr.contains("session 4 is not in the course: the design has sessions 1 to 3"), beyond.stderr)
        XCTAssertEqual(try CLITests.smpctl(["design", design, "--session", "2", "--after", "session:x", "-o", output]).status, 64)
        let noRecords = try CLITests.smpctl(["design", design, "--session", "2", "--after", "session:1",
                                             "--db", folder.appendingPathComponent("none.sqlite").path, "-o", output])
        XCTAssertEqual(noRecords.status, 66, noRecords.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: output))
    }

    /// The examples the docs use design and validate.
    func testTheExampleDesignsDesignValidPlans() throws {
        let folder = try temporaryDirectory()
        for example in ["Examples/design-hairline-crown.json", "Examples/design-scar.json"] {
            let plan = folder.appendingPathComponent("plan.json").path
            let designed = try CLITests.smpctl(["design", example, "--session", "1", "-o", plan])
            XCTAssertEqual(designed.status, 0, "\(example): \(designed.stderr)")
            XCTAssertEqual(try CLITests.smpctl(["validate", plan]).status, 0, example)
        }
    }

    /// Issue 19, item 3: a designed plan's preview shows the design's region outlines, its no-go
    /// areas and its drawn hairline over the dots.
    func testThePreviewDrawsTheDesignsOutlinesAndHairline() throws {
        let folder = try temporaryDirectory()
        let plan = folder.appendingPathComponent("s1.json").path
        let example = "Examples/design-hairline-crown.json"
        XCTAssertEqual(try CLITests.smpctl(["design", example, "--session", "1", "-o", plan]).status, 0)
        let picture = folder.appendingPathComponent("s1.svg").path
        let drawn = try CLITests.smpctl(["preview", plan, "--design", example, "--fit-plan", "-o", picture])
        XCTAssertEqual(drawn.status, 0, drawn.stderr)
        XCTAssertTrue(drawn.stderr.isEmpty, drawn.stderr)
        let svg = try String(contentsOfFile: picture, encoding: .utf8)
        XCTAssertTrue(svg.contains("<polygon class=\"region\""), "no region outline")
        XCTAssertTrue(svg.contains("<title>region crown</title>"), "the crown region is not named")
        XCTAssertTrue(svg.contains("<polygon class=\"exclusion\""), "the mole is not drawn")
        XCTAssertTrue(svg.contains("<polyline class=\"hairline\" points=\"-40,-76 -20,-83 0,-86 20,-83 40,-76\""), svg)
        XCTAssertEqual(svg.components(separatedBy: "<circle").count - 1, try planDotIDs(plan).count,
                       "every circle is still a dot of the plan")
        // Another design's outlines are drawn with a warning.
        let other = try CLITests.smpctl(["preview", plan, "--design", "Examples/design-scar.json", "-o", picture])
        XCTAssertEqual(other.status, 0, other.stderr)
        XCTAssertTrue(other.stderr.contains("warning: the plan was designed from"), other.stderr)
    }

    /// Issue 19, item 3: the session report of a designed plan draws the design over the dot map
    /// as the preview does, inside the map's frame; another design than the plan's is drawn with a
    /// warning (the plan file, unchanged since the session, names its design).
    func testTheSessionReportDrawsTheDesignOverTheDotMap() throws {
        let folder = try temporaryDirectory()
        let plan = folder.appendingPathComponent("s1.json").path
        let db = folder.appendingPathComponent("records.sqlite").path
        let example = "Examples/design-hairline-crown.json"
        XCTAssertEqual(try CLITests.smpctl(["design", example, "--session", "1", "-o", plan]).status, 0)
        let run = try CLITests.smpctl(["run", plan, "--sim", "--time-scale", "0", "--yes", "--db", db])
        XCTAssertEqual(run.status, 0, run.stderr)

        let page = folder.appendingPathComponent("report.html").path
        let written = try CLITests.smpctl(["report", "1", "--design", example, "-o", page, "--db", db])
        XCTAssertEqual(written.status, 0, written.stderr)
        XCTAssertTrue(written.stderr.isEmpty, written.stderr)
        let html = try String(contentsOfFile: page, encoding: .utf8)
        XCTAssertTrue(html.contains("<polygon class=\"region\""), "no region outline on the report's map")
        XCTAssertTrue(html.contains("<title>region crown</title>"), "the crown region is not named")
        XCTAssertTrue(html.contains("<polyline class=\"hairline\" points=\"-40,-76 -20,-83 0,-86 20,-83 40,-76\""), html)
        // The frame holds the hairline: the view box reaches above y = 86 mm (drawn at -86).
        let viewBox = try XCTUnwrap(html.range(of: #"viewBox="[-0-9. ]+""#, options: .regularExpression))
        let numbers = html[viewBox].dropFirst(9).dropLast().split(separator: " ").compactMap { Double($0) }
        XCTAssertEqual(numbers.count, 4)
        XCTAssertLessThan(numbers[1], -86, "the hairline is outside the map's frame")

        let svgPath = folder.appendingPathComponent("map.svg").path
        let other = try CLITests.smpctl(["report", "1", "--design", "Examples/design-scar.json", "-o", svgPath, "--db", db])
        XCTAssertEqual(other.status, 0, other.stderr)
        XCTAssertTrue(other.stderr.contains("smpctl report: warning: the plan was designed from"), other.stderr)
        let refused = try CLITests.smpctl(["report", "1", "--design", folder.appendingPathComponent("none.json").path,
                                           "-o", svgPath, "--db", db])
        XCTAssertEqual(refused.status, 66, refused.stderr)
    }
}
