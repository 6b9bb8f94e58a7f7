import Foundation
import XCTest

/// Issue 21 through the binary: a session has one live owner, which other processes detect; a
/// killed owner does not block its resume; a database deleted under a session fails its records;
/// a database written by a newer smpctl is refused by every command.
final class RecordOwnershipTests: XCTestCase {
    typealias TerminalRun = TerminalSessionTests.TerminalRun

    func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("smpctl-owner-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    /// `smpctl run` of the crown (5016 dots) on the in-process simulator, slow enough (minutes)
    /// to be met by other commands in the middle; every test ends it early. The longest lease the
    /// protocol allows: on a shared, loaded machine a starved host would let the applicator hold
    /// (safely, but it would end the run these tests need running).
    func startRun(_ directory: URL) throws -> TerminalRun {
        let config = directory.appendingPathComponent("machine.toml").path
        try "[envelope]\nlease_ms = 250\n".write(toFile: config, atomically: true, encoding: .utf8)
        return try TerminalRun([
            "run", "Examples/crown.json", "--sim", "--time-scale", "0.05", "--yes", "--json", "--config", config,
            "--record", directory.appendingPathComponent("truth.ndjson").path,
            "--db", directory.appendingPathComponent("records.sqlite").path,
        ], terminal: false)
    }

    func waitForProgress(_ run: TerminalRun, done: Int, file: StaticString = #filePath, line: UInt = #line) {
        let deadline = Date().addingTimeInterval(60)
        func reached() -> Bool {
            run.events.contains { $0["event"] as? String == "progress" && ($0["done"] as? Int ?? 0) >= done }
        }
        while !reached() && Date() < deadline && run.process.isRunning { Thread.sleep(forTimeInterval: 0.02) }
        XCTAssertTrue(reached(), "no progress to \(done) dots:\n\(run.text)", file: file, line: line)
    }

    func reportJSON(_ db: String, _ directory: URL) throws -> [String: Any] {
        let path = directory.appendingPathComponent("report-\(UUID().uuidString).json").path
        let result = try CLITests.smpctl(["report", "1", "-o", path, "--db", db])
        XCTAssertEqual(result.status, 0, result.stderr)
        return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
    }

    /// The reviewer's reproduction: `resume` while `run` is still running the session. Resume,
    /// report and export say who runs it and touch nothing; the run carries on undisturbed.
    func testResumeReportAndExportRefuseASessionOwnedByALiveProcess() throws {
        let directory = try temporaryDirectory()
        let db = directory.appendingPathComponent("records.sqlite").path
        let run = try startRun(directory)
        waitForProgress(run, done: 10)
        let pid = run.process.processIdentifier
        let running = "session 1 is running in process \(pid)"

        let listed = try CLITests.smpctl(["sessions", "--db", db])
        XCTAssertTrue(listed.stdout.contains("Session 1 is running in process \(pid)."), listed.stdout)
        let listedJSON = try CLITests.smpctl(["sessions", "--json", "--db", db])
        let first = try XCTUnwrap((JSONSerialization.jsonObject(with: Data(listedJSON.stdout.utf8)) as? [[String: Any]])?.first)
        XCTAssertEqual(first["live"] as? Bool, true, "\(first)")
        XCTAssertEqual(first["owner_pid"] as? Int, Int(pid), "\(first)")

        let resume = try CLITests.smpctl(["resume", "1", "--sim", "--time-scale", "0", "--ambiguous", "skip", "--yes",
                                          "--json", "--db", db])
        XCTAssertTrue(run.process.isRunning, "the run ended before the resume was tried:\n\(run.text)")
        XCTAssertEqual(resume.status, 75, resume.stderr + resume.stdout)
        XCTAssertTrue(resume.stderr.contains(running), resume.stderr)
        XCTAssertTrue(resume.stderr.contains("nothing was armed or written"), resume.stderr)
        XCTAssertFalse(resume.stdout.contains("\"armed\""), "the resume armed a device:\n\(resume.stdout)")

        let report = directory.appendingPathComponent("live.html").path
        let reported = try CLITests.smpctl(["report", "1", "-o", report, "--db", db])
        XCTAssertEqual(reported.status, 75, reported.stderr)
        XCTAssertTrue(reported.stderr.contains(running), reported.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: report), "a report of a live session was written")

        let archive = directory.appendingPathComponent("live.tar.gz").path
        let exported = try CLITests.smpctl(["export", "1", "-o", archive, "--db", db])
        XCTAssertEqual(exported.status, 75, exported.stderr)
        XCTAssertTrue(exported.stderr.contains(running), exported.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: archive), "an archive of a live session was written")

        // The run was not disturbed: it ends as it would have (SIGTERM: held, nothing in doubt),
        // and nothing of the refused resume is in its record.
        kill(pid, SIGTERM)
        XCTAssertEqual(run.exitStatus(), 75, run.text)
        XCTAssertFalse(run.text.contains("not in flight"), run.text)
        let finished = try XCTUnwrap(run.events.last { $0["event"] as? String == "finished" }, run.text)
        XCTAssertEqual(finished["outcome"] as? String, "held", "\(finished)")
        let json = try reportJSON(db, directory)
        XCTAssertEqual((json["counts"] as? [String: Int])?["skipped"] ?? 0, 0, "the refused resume skipped dots")
        let kinds = (json["events"] as? [[String: Any]] ?? []).compactMap { $0["kind"] as? String }
        XCTAssertFalse(kinds.contains("resume-settled") || kinds.contains("operator-decision"), "\(kinds)")

        // Now that the owner has ended, the session resumes and completes.
        let resumed = try CLITests.smpctl(["resume", "1", "--sim", "--time-scale", "0", "--yes", "--json", "--db", db])
        XCTAssertEqual(resumed.status, 0, resumed.stderr + resumed.stdout.suffix(600))
    }

    /// A crashed owner (SIGKILL: no chance to release anything) never blocks the resume, which
    /// exists for exactly that case.
    func testResumeTakesOverASessionWhoseOwnerWasKilled() throws {
        let directory = try temporaryDirectory()
        let db = directory.appendingPathComponent("records.sqlite").path
        let run = try startRun(directory)
        waitForProgress(run, done: 10)
        kill(run.process.processIdentifier, SIGKILL)
        XCTAssertEqual(run.exitStatus(), SIGKILL, run.text)

        let listed = try CLITests.smpctl(["sessions", "--json", "--db", db])
        let list = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [[String: Any]])
        XCTAssertEqual(list.first?["state"] as? String, "running", "the killed session is recorded as running")
        XCTAssertEqual(list.first?["live"] as? Bool, false, "a killed session has no live owner: \(list)")
        let table = try CLITests.smpctl(["sessions", "--db", db])
        XCTAssertTrue(table.stdout.contains("Session 1 is recorded running but its process is gone (killed or crashed): "
                                            + "`smpctl resume 1` continues it."), table.stdout)

        let report = directory.appendingPathComponent("crashed.json").path
        let reported = try CLITests.smpctl(["report", "1", "-o", report, "--db", db])
        XCTAssertEqual(reported.status, 0, "a crashed session's report: \(reported.stderr)")

        // A fresh simulator (another boot): the dots in flight are the operator's decision.
        let resumed = try CLITests.smpctl(["resume", "1", "--sim", "--time-scale", "0", "--ambiguous", "skip", "--yes",
                                           "--json", "--db", db])
        XCTAssertEqual(resumed.status, 0, resumed.stderr + resumed.stdout.suffix(600))
        let final = try CLITests.smpctl(["sessions", "--json", "--db", db])
        let finalList = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(final.stdout.utf8)) as? [[String: Any]])
        XCTAssertEqual(finalList.first?["state"] as? String, "completed")
    }

    /// The reviewer's second reproduction: `rm db.sqlite*` during a run. The session holds at its
    /// next commit, exit 74, and the error is said once.
    func testDeletingTheDatabaseDuringARunHoldsItAndExits74WithOneMessage() throws {
        let directory = try temporaryDirectory()
        let db = directory.appendingPathComponent("records.sqlite").path
        let run = try startRun(directory)
        waitForProgress(run, done: 10)
        for suffix in ["", "-wal", "-shm"] { unlink(db + suffix) }
        XCTAssertEqual(run.exitStatus(), 74, run.text)
        let finished = try XCTUnwrap(run.events.last { $0["event"] as? String == "finished" }, run.text)
        XCTAssertEqual(finished["outcome"] as? String, "held", "\(finished)")
        XCTAssertEqual(finished["exit_code"] as? Int, 74, "\(finished)")
        let reason = finished["reason"] as? String ?? ""
        XCTAssertTrue(reason.contains("the database file was deleted, renamed or replaced while in use"), reason)
        XCTAssertEqual(reason.components(separatedBy: "treatment records at").count - 1, 1, "said more than once: \(reason)")
        XCTAssertFalse(run.text.contains("treatment records at \(db): treatment records at"), run.text)
    }

    /// A database with a migration this smpctl does not know: refused by every command, exit 78,
    /// nothing appended.
    func testEveryCommandRefusesADatabaseWrittenByANewerSmpctl() throws {
        let directory = try temporaryDirectory()
        let db = directory.appendingPathComponent("records.sqlite").path
        let first = try CLITests.smpctl(["run", "Examples/hairline.json", "--sim", "--yes", "--time-scale", "0", "--json",
                                         "--db", db])
        XCTAssertEqual(first.status, 0, first.stderr)
        try sqlite(db, "INSERT INTO grdb_migrations (identifier) VALUES ('v2'); ALTER TABLE session ADD COLUMN future TEXT;")
        for arguments in [["run", "Examples/hairline.json", "--sim", "--yes", "--time-scale", "0", "--json"],
                          ["resume", "1", "--sim", "--yes"], ["sessions"],
                          ["report", "1", "-o", directory.appendingPathComponent("r.html").path],
                          ["export", "1", "-o", directory.appendingPathComponent("r.tar.gz").path]] {
            let result = try CLITests.smpctl(arguments + ["--db", db])
            XCTAssertEqual(result.status, 78, "\(arguments): \(result.stderr)")
            XCTAssertTrue(result.stderr.contains("treatment records at \(db)"), result.stderr)
            XCTAssertTrue(result.stderr.contains("schema v2") && result.stderr.contains("schema v1"), result.stderr)
            XCTAssertTrue(result.stderr.contains("upgrade smpctl"), result.stderr)
            XCTAssertFalse(result.stdout.contains("\"armed\""), "\(arguments) armed a device")
        }
        XCTAssertEqual(try sqlite(db, "SELECT COUNT(*) FROM session;"), "1", "a session was appended")
    }

    @discardableResult
    func sqlite(_ db: String, _ sql: String) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["sqlite3", db, sql]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, "sqlite3 \(sql)")
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
