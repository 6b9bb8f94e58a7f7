import Foundation
import XCTest

/// The records' disk fills up in the middle of a session (a clinic PC whose disk is full): every
/// commit from then on fails. Simulated with RLIMIT_FSIZE on the host process only (`ulimit -f`,
/// SIGXFSZ ignored, so a write past the limit fails with EFBIG as a full disk fails with ENOSPC);
/// the simulator runs in its own process and keeps its ground truth.
final class RecordsFullTests: XCTestCase {
    func testARecordsDiskThatFillsMidSessionHoldsAndLosesNoDot() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("smpctl-full-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: folder) }
        // 4,000 dots on a 1 mm grid: the planned rows fit under the limit, the session's commits do not.
        let dots = (0..<4000).map { #"{"id": \#($0 + 1), "x_mm": \#(-40 + $0 % 80), "y_mm": \#(-25 + $0 / 80)}"# }
        let plan = folder.appendingPathComponent("grid.json").path
        try #"{"format": "smp-plan/1", "plan_id": "records-full", "defaults": {"depth_mm": 0.6, "dwell_ms": 60}, "dots": [\#(dots.joined(separator: ","))]}"#
            .write(toFile: plan, atomically: true, encoding: .utf8)
        let link = folder.appendingPathComponent("applicator").path
        let truth = folder.appendingPathComponent("truth.ndjson").path
        let db = folder.appendingPathComponent("records.sqlite").path
        let config = folder.appendingPathComponent("machine.toml").path
        try "[envelope]\nlease_ms = 250\n".write(toFile: config, atomically: true, encoding: .utf8)

        let sim = Process()
        sim.executableURL = CLITests.binary
        sim.arguments = ["sim", "--link", link, "--record", truth, "--time-scale", "0"]
        sim.environment = CLITests.environment
        sim.standardOutput = FileHandle.nullDevice
        sim.standardError = FileHandle.nullDevice
        try sim.run()
        defer { if sim.isRunning { sim.interrupt(); sim.waitUntilExit() } }
        let deadline = Date().addingTimeInterval(30)
        while !FileManager.default.fileExists(atPath: link) && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }

        // The host with a 1,000 KiB file-size limit.
        let smpctl = CLITests.binary.path
        let arguments = ["run", plan, "--device", link, "--operator", "test-tech", "--yes", "--json", "--db", db, "--config", config]
        let limited = try shell("trap '' XFSZ; ulimit -f 1000; exec \"$0\" \"$@\"", [smpctl] + arguments)
        XCTAssertEqual(limited.status, 74, limited.stderr)
        let finished = try XCTUnwrap(events(limited.stdout).last { $0["event"] as? String == "finished" }, limited.stdout)
        XCTAssertTrue((finished["reason"] as? String ?? "").contains("the treatment record could not be written"), "\(finished)")
        XCTAssertEqual(finished["outcome"] as? String, "held")
        XCTAssertEqual(finished["device_disarmed"] as? Bool, true)
        let doneUnrecorded = Set(try XCTUnwrap(finished["done_unrecorded"] as? [Int]))
        let inDoubt = Set(try XCTUnwrap(finished["in_doubt"] as? [Int]))
        let interrupted = Set(try XCTUnwrap(finished["interrupted"] as? [Int]))
        let done = try XCTUnwrap(finished["done"] as? Int), notStarted = try XCTUnwrap(finished["not_started"] as? Int)
        XCTAssertGreaterThan(done, 0, "the limit was hit before the session started: no test of a full disk mid-session")
        XCTAssertLessThan(done, 4000, "the limit was never hit")
        // Every plan dot in exactly one list (it was not: DOT_DONEs whose commit failed fell out).
        XCTAssertEqual(done + doneUnrecorded.count + inDoubt.count + interrupted.count + notStarted, 4000, "\(finished)")

        // Durable before injected: no dot the simulator injected is `planned` in the records, and
        // every one is done in them or named by the account.
        let injected = try CLITests.recordedDotIDs(truth)
        XCTAssertEqual(injected.count, Set(injected).count, "a dot injected twice")
        let report = folder.appendingPathComponent("report.json").path
        XCTAssertEqual(try CLITests.smpctl(["report", "1", "-o", report, "--db", db]).status, 0)
        let reportObject = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: report))) as? [String: Any])
        var status: [Int: String] = [:]
        for dot in try XCTUnwrap(reportObject["dots"] as? [[String: Any]]) {
            status[try XCTUnwrap(dot["dot_id"] as? Int)] = dot["status"] as? String
        }
        for id in injected {
            XCTAssertNotEqual(status[id], "planned", "dot \(id) injected with no durable claim")
            XCTAssertTrue(status[id] == "done" || doneUnrecorded.contains(id) || inDoubt.contains(id) || interrupted.contains(id),
                          "dot \(id) injected, \(status[id] ?? "?") in the records, and in none of the account's lists")
        }
        for id in doneUnrecorded {
            XCTAssertTrue(injected.contains(id), "dot \(id) reported done, not injected")
            XCTAssertEqual(status[id], "sent", "dot \(id): done on the skin, recorded \(status[id] ?? "?")")
        }

        // With room again, the resume the summary advises (skip what is in doubt) finishes the
        // session, and nothing is injected twice.
        let resumed = try CLITests.smpctl(["resume", "1", "--device", link, "--operator", "test-tech", "--yes", "--json", "--db", db,
                                           "--config", config, "--ambiguous", "skip"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr + resumed.stdout.suffix(800))
        sim.interrupt()
        sim.waitUntilExit()
        let all = try CLITests.recordedDotIDs(truth)
        XCTAssertEqual(all.count, Set(all).count, "a dot injected twice across the failure and the resume")
        XCTAssertTrue(doneUnrecorded.isSubset(of: Set(all)))
    }

    /// Runs `bash -c SCRIPT ARGS…` (the script sees the arguments as $0, $1, …).
    private func shell(_ script: String, _ arguments: [String]) throws -> CLITests.Result {
        try CLITests.run(URL(fileURLWithPath: "/bin/bash"), ["-c", script] + arguments)
    }

    private func events(_ stdout: String) -> [[String: Any]] {
        stdout.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }
}
