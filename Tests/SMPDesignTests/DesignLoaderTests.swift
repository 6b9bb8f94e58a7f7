import Foundation
import SMPPlan
import XCTest

@testable import SMPDesign

/// `smp-design/1` is refused for the same reasons and in the same words as a plan: every problem
/// with its JSON path, the value as written and the limit.
final class DesignLoaderTests: XCTestCase {
    static let valid = """
        {"format": "smp-design/1", "design_id": "D-1", "client": {"reference": "C-1", "hair_transplant_date": "2024-03-02"},
         "course": {"sessions": 2, "share": [0.6, 0.4]},
         "defaults": {"depth_mm": 0.6, "dwell_ms": 120},
         "regions": [{"name": "crown", "polygon_mm": [[0, 0], [20, 0], [20, 20], [0, 20]], "density_per_cm2": 70,
                      "depth_mm": 0.5, "dwell_ms": 90}],
         "exclusions": [{"name": "mole", "polygon_mm": [[5, 5], [8, 5], [8, 8]]}],
         "hairline": {"polyline_mm": [[0, 18], [20, 18]], "feather_mm": 6}}
        """

    func load(_ text: String, envelope: SafetyEnvelope = .builtIn) throws(DesignLoadError) -> Design {
        try DesignLoader.load(data: Data(text.utf8), sourceName: "design.json", envelope: envelope)
    }

    func issues(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> [PlanIssue] {
        do {
            _ = try load(text)
            XCTFail("a design that should be refused loaded", file: file, line: line)
            return []
        } catch {
            return error.issues
        }
    }

    func testAValidDesignLoadsInMicrometresAndMicroseconds() throws {
        let design = try load(Self.valid)
        XCTAssertEqual(design.designID, "D-1")
        XCTAssertEqual(design.client?.hairTransplantDate, PlanDate("2024-03-02"))
        XCTAssertEqual(design.course, DesignCourse(sessions: 2, shares: [0.6, 0.4]))
        XCTAssertEqual(design.course.cumulativeShare(through: 1), 0.6)
        XCTAssertEqual(design.course.cumulativeShare(through: 2), 1)
        XCTAssertEqual(design.defaultDepthMicrometres, 600)
        XCTAssertEqual(design.defaultDwellMicroseconds, 120_000)
        XCTAssertEqual(design.regions.map(\.name), ["crown"])
        XCTAssertEqual(design.regions[0].depthMicrometres, 500)
        XCTAssertEqual(design.regions[0].dwellMicroseconds, 90_000)
        XCTAssertEqual(design.regions[0].polygon.areaSquareMillimetres, 400)
        XCTAssertEqual(design.exclusions.map(\.name), ["mole"])
        XCTAssertEqual(design.hairline?.featherMillimetres, 6)
    }

    func testShapeErrorsCarryPathValueAndLimit() {
        let found = issues("""
            {"format": "smp-design/2", "design_id": "", "course": {"sessions": 2.5, "share": [1]},
             "defaults": {"depth_mm": 2, "dwell_ms": "120"},
             "regions": [{"name": "a", "polygon_mm": [[0, 0], [1]], "density_per_cm2": 0},
                         {"name": "a", "polygon_mm": [[0, 0], [200, 0], [0, 10]], "density_per_cm2": 50, "dwell_ms": 9}],
             "hairline": {"polyline_mm": [[0, 0]], "feather_mm": 0.5}, "notes": 1}
            """)
        let byPath = Dictionary(found.map { ($0.path, $0) }, uniquingKeysWith: { first, _ in first })
        XCTAssertEqual(byPath["format"]?.code, .unsupportedFormat)
        XCTAssertEqual(byPath["design_id"]?.code, .emptyValue)
        XCTAssertEqual(byPath["course.sessions"]?.code, .notInteger)
        XCTAssertEqual(byPath["defaults.depth_mm"]?.code, .depthOutOfRange)
        XCTAssertEqual(byPath["defaults.depth_mm"]?.limit, "≤ 1.5 mm")
        XCTAssertEqual(byPath["defaults.dwell_ms"]?.code, .wrongType)
        XCTAssertEqual(byPath["regions[0].polygon_mm[1]"]?.code, .wrongType)
        XCTAssertEqual(byPath["regions[0].density_per_cm2"]?.code, .densityOutOfRange)
        XCTAssertEqual(byPath["regions[1].name"]?.code, .duplicateName)
        XCTAssertEqual(byPath["regions[1].polygon_mm[1]"]?.code, .travelOutOfRange)
        XCTAssertEqual(byPath["regions[1].polygon_mm[1]"]?.value, "200")
        XCTAssertEqual(byPath["regions[1].dwell_ms"]?.code, .dwellOutOfRange)
        XCTAssertEqual(byPath["hairline.polyline_mm"]?.code, .invalidPolygon)
        XCTAssertEqual(byPath["hairline.feather_mm"]?.code, .valueOutOfRange)
        XCTAssertEqual(byPath["notes"]?.code, .unknownKey)
        XCTAssertEqual(found.first?.path, "format", "issues in the format's order")
    }

    func testCourseShares() {
        func course(_ sessions: Int, _ share: String) -> String {
            Self.valid.replacingOccurrences(of: #""course": {"sessions": 2, "share": [0.6, 0.4]}"#,
                                            with: #""course": {"sessions": \#(sessions), "share": \#(share)}"#)
        }
        XCTAssertNoThrow(try load(course(3, "[0.333, 0.333, 0.333]")), "thirds written to three decimals")
        XCTAssertEqual(issues(course(2, "[0.5, 0.4]")).first?.message,
                       "course.share = [0.5, 0.4] sums to 0.9; the sessions together must place the whole density: the fractions must sum to 1")
        XCTAssertEqual(issues(course(3, "[0.5, 0.5]")).first?.code, .invalidCourse)
        XCTAssertEqual(issues(course(2, "[1.2, -0.2]")).first?.path, "course.share[0]")
        XCTAssertEqual(issues(course(21, "[1]")).first?.code, .invalidCourse)
    }

    func testDuplicateKeysAndMissingKeys() {
        let duplicated = issues(Self.valid.replacingOccurrences(of: #""name": "crown""#, with: #""name": "crown", "name": "top""#))
        XCTAssertEqual(duplicated.map(\.code), [.duplicateKey])
        XCTAssertEqual(duplicated.first?.path, "regions[0].name")
        XCTAssertTrue(duplicated.first?.message.contains("so the design would mean different things") == true)

        let missing = issues(#"{"format": "smp-design/1"}"#)
        XCTAssertEqual(missing.map(\.path), ["design_id", "course", "defaults", "regions"])
        XCTAssertTrue(missing.allSatisfy { $0.code == .missingKey })
    }

    func testTheDensiestTargetFollowsTheEnvelopeSpacing() throws {
        XCTAssertEqual(DesignLoader.maximumDensityPerSquareCentimetre(.builtIn), 180.6, accuracy: 0.1)
        var wide = SafetyEnvelope.builtIn
        wide.minimumSpacingMicrometres = 1000
        XCTAssertThrowsError(try load(Self.valid, envelope: wide)) { error in
            XCTAssertEqual((error as? DesignLoadError)?.issues.map(\.code), [.densityOutOfRange])
        }
    }

    func testFilesThatCannotBeReadOrAreNotJSON() {
        XCTAssertThrowsError(try DesignLoader.load(path: "/nonexistent/design.json")) { error in
            XCTAssertEqual((error as? DesignLoadError)?.isUnreadable, true)
        }
        XCTAssertEqual(issues("{").map(\.code), [.invalidJSON])
        XCTAssertEqual(issues("[]").map(\.code), [.wrongType])
    }
}
