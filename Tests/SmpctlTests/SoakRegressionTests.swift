import Foundation
import XCTest

@testable import SMPRecords

/// Defects found by the fault soak (scripts/soak.py, docs/reliability.md), each reproduced
/// deterministically here.
final class SoakRegressionTests: XCTestCase {
    func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("smpctl-soak-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    /// `kill -9` after the last dot's DONE was committed and before the session's end record:
    /// every dot `done`, the session still `running`. `smpctl resume` refused it ("complete; nothing
    /// to resume", exit 64), so it stayed `running` for ever, `smpctl sessions` saying "resume
    /// continues it". Now the resume closes it — `completed`, exit 0 — and sends no dot.
    func testASessionKilledAfterItsLastDotButBeforeItsEndIsClosedByResume() throws {
        let directory = try temporaryDirectory()
        let db = directory.appendingPathComponent("records.sqlite").path
        let first = try CLITests.smpctl(["run", "Examples/hairline.json", "--sim", "--time-scale", "0", "--yes", "--json", "--db", db])
        XCTAssertEqual(first.status, 0, first.stderr)
        // The state a kill leaves between the last commit of dots and the end record.
        do {
            let store = try RecordStore(path: db)
            try store.executeRaw("UPDATE session SET state = 'running', ended_at = NULL, reason = NULL WHERE id = 1")
        }
        let before = try CLITests.smpctl(["sessions", "--json", "--db", db])
        let listed = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(before.stdout.utf8)) as? [[String: Any]])
        XCTAssertEqual(listed.first?["state"] as? String, "running")
        XCTAssertEqual(listed.first?["done"] as? Int, listed.first?["total"] as? Int)

        let truth = directory.appendingPathComponent("truth.ndjson").path
        let resumed = try CLITests.smpctl(["resume", "1", "--sim", "--time-scale", "0", "--record", truth, "--yes", "--json", "--db", db])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertEqual((try? CLITests.recordedDotIDs(truth)) ?? [], [], "the resume injected a dot")
        let after = try CLITests.smpctl(["sessions", "--json", "--db", db])
        let final = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(after.stdout.utf8)) as? [[String: Any]])
        XCTAssertEqual(final.first?["state"] as? String, "completed")

        let again = try CLITests.smpctl(["resume", "1", "--sim", "--time-scale", "0", "--yes", "--db", db])
        XCTAssertEqual(again.status, 64, "a completed session has nothing to resume")
        XCTAssertTrue(again.stderr.contains("nothing to resume"), again.stderr)
    }
}
