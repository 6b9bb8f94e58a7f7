import Foundation
import XCTest

/// `smpctl run` told to stop by something other than the operator's Ctrl-C: SIGTERM (a service
/// manager, `kill`), SIGHUP (the technician's terminal window closed), its output gone (the
/// program reading its NDJSON exited). Each must end the session held — the dot in the skin
/// finished, nothing cut short, nothing in doubt — and resumable, never kill it mid-dot.
final class TerminationTests: XCTestCase {
    typealias TerminalRun = TerminalSessionTests.TerminalRun

    func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("smpctl-term-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    /// A hairline session on the in-process simulator, slow enough (time scale 0.2, ~9 s) to be
    /// stopped in the middle.
    func hairlineArguments(_ directory: URL, json: Bool) -> [String] {
        ["run", "Examples/hairline.json", "--sim", "--time-scale", "0.2", "--yes",
         "--record", directory.appendingPathComponent("record.ndjson").path,
         "--db", directory.appendingPathComponent("records.sqlite").path] + (json ? ["--json"] : [])
    }

    /// Waits for a progress event with at least `done` dots.
    func waitForProgress(_ run: TerminalRun, done: Int, file: StaticString = #filePath, line: UInt = #line) {
        let deadline = Date().addingTimeInterval(60)
        func reached() -> Bool {
            run.events.contains { $0["event"] as? String == "progress" && ($0["done"] as? Int ?? 0) >= done }
        }
        while !reached() && Date() < deadline && run.process.isRunning { Thread.sleep(forTimeInterval: 0.02) }
        XCTAssertTrue(reached(), "no progress to \(done) dots:\n\(run.text)", file: file, line: line)
    }

    func sessions(_ directory: URL) throws -> [[String: Any]] {
        let listed = try CLITests.smpctl(["sessions", "--json", "--db", directory.appendingPathComponent("records.sqlite").path])
        XCTAssertEqual(listed.status, 0, listed.stderr)
        return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [[String: Any]])
    }

    /// Resumes session 1 on a fresh simulator appending to the same ground truth; then every plan
    /// dot must be in it exactly once.
    func resumeAndCheckEveryDotOnce(_ directory: URL, file: StaticString = #filePath, line: UInt = #line) throws {
        let record = directory.appendingPathComponent("record.ndjson").path
        let resumed = try CLITests.smpctl([
            "resume", "1", "--sim", "--time-scale", "0", "--yes", "--json", "--record", record,
            "--db", directory.appendingPathComponent("records.sqlite").path,
        ])
        XCTAssertEqual(resumed.status, 0, resumed.stderr + resumed.stdout.suffix(800), file: file, line: line)
        let injected = try CLITests.recordedDotIDs(record)
        XCTAssertEqual(injected.count, Set(injected).count, "a dot was injected twice", file: file, line: line)
        XCTAssertEqual(Set(injected), Set(try CLITests.planDotIDs("Examples/hairline.json")), file: file, line: line)
    }

    func testSIGTERMEndsTheSessionHeldWithNothingCutShortAndResumeFinishesIt() throws {
        try endsHeldOn(SIGTERM, named: "SIGTERM")
    }

    func testSIGHUPEndsTheSessionHeldWithNothingCutShortAndResumeFinishesIt() throws {
        try endsHeldOn(SIGHUP, named: "SIGHUP")
    }

    func endsHeldOn(_ signalNumber: Int32, named name: String) throws {
        let directory = try temporaryDirectory()
        let run = try TerminalRun(hairlineArguments(directory, json: true), terminal: false)
        waitForProgress(run, done: 10)
        // Every thread blocks the three, so none can take one and drop it (the console's signal
        // sources read them): blocked before the first thread, not after (fifth stop).
        let pid = run.process.processIdentifier
        for task in try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task") {
            let status = try String(contentsOfFile: "/proc/\(pid)/task/\(task)/status", encoding: .utf8)
            let blocked = try XCTUnwrap(status.split(separator: "\n").first { $0.hasPrefix("SigBlk:") })
            let mask = try XCTUnwrap(UInt64(blocked.dropFirst(7).trimmingCharacters(in: .whitespaces), radix: 16))
            for (signal, signalName) in [(SIGINT, "SIGINT"), (SIGTERM, "SIGTERM"), (SIGHUP, "SIGHUP")] {
                XCTAssertNotEqual(mask & (1 << (UInt64(signal) - 1)), 0, "thread \(task) takes \(signalName)")
            }
        }
        kill(pid, signalNumber)
        let status = run.exitStatus()
        XCTAssertEqual(status, 75, run.text)
        let finished = try XCTUnwrap(run.events.last { $0["event"] as? String == "finished" }, run.text)
        XCTAssertEqual(finished["outcome"] as? String, "held")
        XCTAssertTrue((finished["reason"] as? String ?? "").contains("smpctl received \(name)"), "\(finished)")
        XCTAssertEqual((finished["interrupted"] as? [Any])?.count, 0, "a dot was cut short: \(finished)")
        XCTAssertEqual((finished["in_doubt"] as? [Any])?.count, 0, "dots left in doubt: \(finished)")
        XCTAssertLessThan(finished["done"] as? Int ?? 191, 191)
        XCTAssertEqual(try sessions(directory).first?["state"] as? String, "held")
        try resumeAndCheckEveryDotOnce(directory)
    }

    /// The reader of `smpctl run --json` goes away: the next event cannot be written (EPIPE), and
    /// the session ends held instead of the process dying of SIGPIPE mid-dot.
    func testClosedStandardOutputEndsTheSessionHeldNotDeadOfSIGPIPE() throws {
        let directory = try temporaryDirectory()
        let process = Process()
        process.executableURL = CLITests.binary
        process.arguments = hairlineArguments(directory, json: true)
        process.environment = CLITests.environment
        process.currentDirectoryURL = CLITests.repositoryRoot
        let stdout = Pipe()
        let stderrPath = directory.appendingPathComponent("stderr.txt")
        XCTAssertTrue(FileManager.default.createFile(atPath: stderrPath.path, contents: nil))
        let stderr = try FileHandle(forWritingTo: stderrPath)
        process.standardOutput = stdout
        process.standardError = stderr
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // Read until the first progress event, as a consumer piping into `head` would, then go.
        var seen = Data()
        while !String(decoding: seen, as: UTF8.self).contains("\"event\":\"progress\"") {
            let chunk = stdout.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            seen.append(chunk)
        }
        try stdout.fileHandleForReading.close()
        process.waitUntilExit()
        let errors = try String(contentsOf: stderrPath, encoding: .utf8)
        XCTAssertEqual(process.terminationReason, .exit, "killed by a signal: \(errors)")
        XCTAssertEqual(process.terminationStatus, 75, errors)
        let session = try XCTUnwrap(try sessions(directory).first)
        XCTAssertEqual(session["state"] as? String, "held")
        XCTAssertTrue((session["reason"] as? String ?? "").contains("standard output failed"), "\(session)")
        try resumeAndCheckEveryDotOnce(directory)
    }

    /// The technician closes the terminal window: the kernel hangs up the terminal and sends
    /// SIGHUP. Here script(1), which holds the terminal's master side, is killed.
    func testClosingTheTerminalEndsTheSessionHeld() throws {
        let directory = try temporaryDirectory()
        let run = try TerminalRun(hairlineArguments(directory, json: false))
        run.waitFor("Dots [")
        let smpctl = try XCTUnwrap(run.smpctlPID, "smpctl not found under script(1)")
        kill(run.process.processIdentifier, SIGKILL)
        run.process.waitUntilExit()
        let deadline = Date().addingTimeInterval(60)
        while kill(smpctl, 0) == 0 && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        XCTAssertNotEqual(kill(smpctl, 0), 0, "smpctl still running after its terminal closed")
        let session = try XCTUnwrap(try sessions(directory).first)
        XCTAssertEqual(session["state"] as? String, "held", "\(session)")
        XCTAssertTrue((session["reason"] as? String ?? "").contains("SIGHUP"), "\(session)")
        try resumeAndCheckEveryDotOnce(directory)
    }

    /// SIGTERM while the preflight question waits: the session ends, nothing armed.
    func testSIGTERMAtThePreflightQuestionEndsWithNothingArmed() throws {
        let directory = try temporaryDirectory()
        let run = try TerminalRun(hairlineArguments(directory, json: false).filter { $0 != "--yes" })
        run.waitFor("[y/N]")
        let smpctl = try XCTUnwrap(run.smpctlPID, "smpctl not found under script(1)")
        kill(smpctl, SIGTERM)
        let status = run.exitStatus()
        XCTAssertEqual(status, 75, run.text)
        XCTAssertTrue(run.text.contains("smpctl received SIGTERM; nothing was armed"), run.text)
        XCTAssertFalse(run.text.contains("Armed."), run.text)
        let truth = (try? String(contentsOf: directory.appendingPathComponent("record.ndjson"), encoding: .utf8)) ?? ""
        XCTAssertEqual(truth, "", "a dot was injected")
    }
}
