import Foundation
import ConsoleKitTerminal
import NeedleDriver
import XCTest

@testable import SessionRunner
@testable import SMPPlan
@testable import SMPPlanReader
@testable import SMPInterlocks
@testable import SMPRecords
@testable import SMPMachine
@testable import SMPRender
@testable import smpctl

/// `smpctl run` at a real terminal: a pseudo-terminal made by util-linux's `script`, whose input
/// is this test's keyboard — Ctrl-C is the byte 0x03 typed into the terminal, turned into SIGINT
/// by the kernel's line discipline exactly as for a technician.
final class TerminalSessionTests: XCTestCase {
    /// A running `smpctl` at a terminal (or, with `terminal: false`, on plain pipes), and what
    /// it has printed so far.
    final class TerminalRun: @unchecked Sendable {  // `output` guarded by `lock`
        let process = Process()
        private let keyboard = Pipe()
        private let screen = Pipe()
        private let lock = NSLock()
        private var output = Data()

        init(_ arguments: [String], terminal: Bool = true, environment: [String: String] = CLITests.environment) throws {
            var environment = environment
            if terminal {
                // `exec`: smpctl itself is script's child, alone in the terminal's foreground
                // group. Without it a shell that does not exec its last command (dash, the
                // /bin/sh script(1) runs when SHELL is unset) sits between them, dies of the
                // Ctrl-C's SIGINT and reports 130 while smpctl carries on holding.
                let command = "exec " + ([CLITests.binary.path] + arguments).map { "'\($0)'" }.joined(separator: " ")
                process.executableURL = URL(fileURLWithPath: "/usr/bin/script")
                // -q quiet, -e the child's exit status, -f flush; /dev/null: no typescript file.
                process.arguments = ["-q", "-e", "-f", "-c", command, "/dev/null"]
                environment["SHELL"] = "/bin/sh"  // the same shell whatever the caller's login shell
                environment["TERM"] = "xterm"
                environment["COLUMNS"] = "160"
                environment.removeValue(forKey: "NO_COLOR")
            } else {
                process.executableURL = CLITests.binary
                process.arguments = arguments
            }
            process.environment = environment
            process.currentDirectoryURL = CLITests.repositoryRoot
            process.standardInput = keyboard
            process.standardOutput = screen
            process.standardError = screen
            try process.run()
            screen.fileHandleForReading.readabilityHandler = { [weak self] handle in
                let data = handle.availableData
                guard let self, !data.isEmpty else { return }
                lock.withLock { output.append(data) }
            }
        }

        var text: String { lock.withLock { String(decoding: output, as: UTF8.self) } }

        /// The NDJSON events printed so far (lines that parse as JSON objects).
        var events: [[String: Any]] {
            text.split(separator: "\n").compactMap {
                try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
            }
        }

        /// The `smpctl` process itself: `process` or, at a terminal, its descendant under script(1).
        var smpctlPID: pid_t? {
            var frontier = [process.processIdentifier]
            while let pid = frontier.popLast() {
                if (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?.hasPrefix("smpctl") == true {
                    return pid
                }
                let children = (try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? ""
                frontier += children.split(separator: " ").compactMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            }
            return nil
        }

        /// Keys typed after smpctl has exited go nowhere (a closed pipe is not the test's failure).
        func type(_ keys: String) {
            signal(SIGPIPE, SIG_IGN)
            try? keyboard.fileHandleForWriting.write(contentsOf: Data(keys.utf8))
        }

        /// Waits until the screen shows `expected` (not a timing assertion: the timeout only
        /// keeps a broken build from hanging the suite).
        func waitFor(_ expected: String, timeout: TimeInterval = 60, file: StaticString = #filePath, line: UInt = #line) {
            let deadline = Date().addingTimeInterval(timeout)
            while !text.contains(expected) && Date() < deadline && process.isRunning {
                Thread.sleep(forTimeInterval: 0.02)
            }
            XCTAssertTrue(text.contains(expected), "the terminal never showed “\(expected)”:\n\(text)", file: file, line: line)
        }

        func exitStatus(timeout: TimeInterval = 90) -> Int32 {
            let deadline = Date().addingTimeInterval(timeout)
            while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
            if process.isRunning { process.terminate() }
            process.waitUntilExit()
            Thread.sleep(forTimeInterval: 0.1)  // the last bytes through the readability handler
            keyboard.fileHandleForWriting.closeFile()
            return process.terminationStatus
        }
    }

    static let ctrlC = "\u{03}"
    /// Ctrl-D: at a terminal in canonical mode, on an empty line, read(2) gives 0 bytes.
    static let ctrlD = "\u{04}"
    /// Ctrl-Z: SIGTSTP from the terminal's line discipline.
    static let ctrlZ = "\u{1A}"
    /// ConsoleKit's erase of the previous progress line: cursor up, erase line.
    static let consoleKitErase = "\u{1B}[1A\u{1B}[2K"

    func hairlineRun(_ directory: URL) throws -> (TerminalRun, record: String) {
        let record = directory.appendingPathComponent("record.ndjson").path
        let run = try TerminalRun([
            "run", "Examples/hairline.json", "--sim", "--time-scale", "0.2", "--yes", "--record", record,
            "--db", directory.appendingPathComponent("records.sqlite").path,
        ])
        return (run, record)
    }

    /// The hairline plan without --yes, once the preflight asks "Arm the applicator?".
    func preflightRun(timeScale: String, file: StaticString = #filePath, line: UInt = #line) throws -> (TerminalRun, record: String) {
        let directory = try temporaryDirectory()
        let record = directory.appendingPathComponent("record.ndjson").path
        let run = try TerminalRun([
            "run", "Examples/hairline.json", "--sim", "--time-scale", timeScale, "--record", record,
            "--db", directory.appendingPathComponent("records.sqlite").path,
        ])
        run.waitFor("Arm the applicator and start 191 dots?", file: file, line: line)
        return (run, record)
    }

    func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("smpctl-tty-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    /// Ctrl-C (the hold), then Ctrl-C again: the "end the session?" question is open.
    func holdThenAskToEnd(_ run: TerminalRun, file: StaticString = #filePath, line: UInt = #line) {
        run.waitFor("Dots [", file: file, line: line)
        run.type(Self.ctrlC)
        run.waitFor("Held. Press Enter to resume", file: file, line: line)
        run.type(Self.ctrlC)
        run.waitFor("End the session now?", file: file, line: line)
    }

    /// After the Enter that resumes: the session shows "Resumed.", completes (exit 0) and the
    /// simulator injected every dot once. Returns the screen.
    func resumedToTheEnd(_ run: TerminalRun, record: String, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        run.waitFor("Resumed.", file: file, line: line)
        let status = run.exitStatus()
        let screen = run.text
        XCTAssertEqual(status, 0, screen, file: file, line: line)
        XCTAssertTrue(screen.contains("Session complete: all 191 dots confirmed done"), screen, file: file, line: line)
        let truth = try groundTruth(record)
        XCTAssertEqual(truth.count, 191, file: file, line: line)
        XCTAssertEqual(Set(truth.map { $0.dot }).count, 191, "a dot was injected twice", file: file, line: line)
        XCTAssertTrue(truth.allSatisfy { $0.outcome == "done" }, file: file, line: line)
        return screen
    }

    /// Dot ids in the simulator's ground truth, each with its outcome.
    func groundTruth(_ path: String) throws -> [(dot: Int, outcome: String)] {
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        return try text.split(separator: "\n").map { line in
            let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            return (try XCTUnwrap(object["dot"] as? Int), try XCTUnwrap(object["outcome"] as? String))
        }
    }

    /// Ctrl-C holds; a second Ctrl-C asks; "n" keeps the session; Enter resumes; every dot once.
    func testCtrlCHoldsSecondAsksAndDecliningThenEnterResumesToTheEnd() throws {
        let (run, record) = try hairlineRun(try temporaryDirectory())
        holdThenAskToEnd(run)
        run.type("n\n")
        run.waitFor("Not ended.")
        run.type("\n")
        let screen = try resumedToTheEnd(run, record: record)
        XCTAssertTrue(screen.contains(Self.consoleKitErase + "Dots ["), "the progress line is not redrawn in place:\n\(screen)")
        XCTAssertTrue(screen.contains("interlocks \u{1B}[0;32marmed"), "interlock state not shown in colour:\n\(screen)")
    }

    /// "y" at the question ends the session held and resumable: exit 75, no dot twice.
    func testConfirmingTheSecondCtrlCEndsTheSessionResumable() throws {
        let (run, record) = try hairlineRun(try temporaryDirectory())
        holdThenAskToEnd(run)
        run.type("y\n")
        let status = run.exitStatus()
        let screen = run.text
        XCTAssertEqual(status, 75, screen)
        XCTAssertTrue(screen.contains("Session held before the end."), screen)
        XCTAssertTrue(screen.contains("ended by the operator (Ctrl-C, confirmed)"), screen)
        XCTAssertTrue(screen.contains("continue with: smpctl resume"), screen)
        let truth = try groundTruth(record)
        XCTAssertLessThan(truth.count, 191)
        XCTAssertEqual(Set(truth.map { $0.dot }).count, truth.count, "a dot was injected twice")
    }

    /// A third Ctrl-C answers the open question: end now.
    func testThirdCtrlCEndsWithoutWaitingForAnAnswer() throws {
        let (run, _) = try hairlineRun(try temporaryDirectory())
        holdThenAskToEnd(run)
        run.type(Self.ctrlC)
        let status = run.exitStatus()
        XCTAssertEqual(status, 75, run.text)
        XCTAssertTrue(run.text.contains("ended by the operator (Ctrl-C three times)"), run.text)
    }

    /// Ctrl-D at the hold's question and at "end the session?": neither resumes nor ends, and
    /// the keyboard still answers afterwards. It used to stop the one reader of the terminal,
    /// leaving a hold that no Enter could end (only Ctrl-C, then `smpctl resume`).
    func testCtrlDNeitherResumesNorEndsAndEnterStillResumes() throws {
        let (run, record) = try hairlineRun(try temporaryDirectory())
        run.waitFor("Dots [")
        run.type(Self.ctrlC)
        run.waitFor("Held. Press Enter to resume")
        run.type(Self.ctrlD)
        run.waitFor("Ctrl-D does not resume: still held.")
        run.type(Self.ctrlC)
        run.waitFor("End the session now?")
        run.type(Self.ctrlD)
        run.waitFor("Not ended.")
        XCTAssertFalse(run.text.contains("Resuming"), "Ctrl-D resumed the hold:\n\(run.text)")
        run.type("\n")
        _ = try resumedToTheEnd(run, record: record)
    }

    /// Ctrl-Z while dots stream: smpctl is not suspended (which would leave the applicator to
    /// hold on its lease behind a shell prompt); it holds, and Enter resumes to the end.
    func testCtrlZHoldsInsteadOfSuspendingAndEnterResumes() throws {
        let (run, record) = try hairlineRun(try temporaryDirectory())
        run.waitFor("Dots [")
        run.type(Self.ctrlZ)
        run.waitFor("Ctrl-Z: smpctl is not suspended during a session; holding instead")
        run.waitFor("Held. Press Enter to resume")
        run.type("\n")
        _ = try resumedToTheEnd(run, record: record)
    }

    /// Ctrl-D at the preflight's question is a no: nothing armed, nothing injected.
    func testCtrlDAtThePreflightQuestionArmsNothing() throws {
        let (run, record) = try preflightRun(timeScale: "0")
        run.type(Self.ctrlD)
        let status = run.exitStatus()
        XCTAssertEqual(status, 75, run.text)
        XCTAssertTrue(run.text.contains("Not started."), run.text)
        XCTAssertTrue(try groundTruth(record).isEmpty, "dots were injected:\n\(run.text)")
    }

    /// Keys typed while dots stream are not echoed into the progress line, and an Enter typed
    /// then cannot answer a later "Press Enter to resume": the hold stays until asked.
    func testTypeAheadIsNeitherEchoedNorTakenAsAnAnswer() throws {
        let (run, record) = try hairlineRun(try temporaryDirectory())
        run.waitFor("Dots [")
        run.type("stray keys\n\n")
        holdThenAskToEnd(run)
        run.type("y\n")
        let status = run.exitStatus()
        let screen = run.text
        XCTAssertEqual(status, 75, screen)
        XCTAssertFalse(screen.contains("stray keys"), "typed keys were echoed while streaming:\n\(screen)")
        XCTAssertFalse(screen.contains("Resuming"), "a key typed before the hold resumed it:\n\(screen)")
        XCTAssertFalse(screen.contains("^C"), "Ctrl-C echoed as ^C:\n\(screen)")
        let truth = try groundTruth(record)
        XCTAssertEqual(Set(truth.map { $0.dot }).count, truth.count, "a dot was injected twice")
    }

    /// Issue 12, item 1: Ctrl-C twice then "y" at the preflight's "Arm the applicator?" used to
    /// reach the arm question (two readers of one terminal) and run the whole plan. An interrupt
    /// before arming ends the run with nothing armed and nothing sent, whatever is typed next.
    func testCtrlCAtThePreflightQuestionEndsTheRunWithNothingArmed() throws {
        for trial in 1...3 {
            let (run, record) = try preflightRun(timeScale: "0.2")
            run.type(Self.ctrlC)
            Thread.sleep(forTimeInterval: 0.2)
            run.type(Self.ctrlC)
            Thread.sleep(forTimeInterval: 0.2)
            run.type("y\n")
            let status = run.exitStatus()
            let screen = run.text
            XCTAssertEqual(status, 75, "trial \(trial):\n\(screen)")
            XCTAssertTrue(screen.contains("nothing was armed"), "trial \(trial):\n\(screen)")
            XCTAssertTrue(try groundTruth(record).isEmpty, "trial \(trial): dots were injected:\n\(screen)")
        }
    }

    /// "y" typed at the preflight question arms, through the same single reader.
    func testYesAtThePreflightQuestionArmsAndRuns() throws {
        let (run, record) = try preflightRun(timeScale: "0")
        run.type("y\n")
        XCTAssertEqual(run.exitStatus(), 0, run.text)
        XCTAssertEqual(try groundTruth(record).count, 191)
    }

    /// Issue 12, item 15: the applicator's own contact-loss hold waits for the operator like the
    /// operator's hold, and comes at the dot the fault names; Enter resumes; every dot once.
    func testDeviceContactLossHoldWaitsForEnterThenCompletes() throws {
        let directory = try temporaryDirectory()
        let record = directory.appendingPathComponent("record.ndjson").path
        let run = try TerminalRun([
            "run", "Examples/hairline.json", "--sim", "--time-scale", "0.2", "--yes", "--record", record,
            "--faults", "contact-loss-at=50", "--db", directory.appendingPathComponent("records.sqlite").path,
        ])
        run.waitFor("Held. Press Enter to resume")
        Thread.sleep(forTimeInterval: 0.5)
        XCTAssertTrue(run.process.isRunning, "the session did not wait for the operator:\n\(run.text)")
        XCTAssertFalse(run.text.contains("Session held before the end."), run.text)
        let atHold = try groundTruth(record).count
        run.type("\n")
        let status = run.exitStatus()
        XCTAssertEqual(status, 0, run.text)
        let truth = try groundTruth(record)
        XCTAssertEqual(truth.count, 191)
        XCTAssertEqual(Set(truth.map { $0.dot }).count, 191, "a dot was injected twice")
        XCTAssertGreaterThanOrEqual(atHold, 45, "the hold came long before dot 50 (\(atHold) dots)")
    }

    /// Issue 19, item 4: with --verbose, log lines go above the live progress line: each is
    /// followed by the line drawn again, never by the erase meant for the progress line (which
    /// would wipe the log line and leave a stale progress line on the screen).
    func testLogLinesNeverTearThroughTheProgressLine() throws {
        let directory = try temporaryDirectory()
        let run = try TerminalRun([
            "run", "Examples/hairline.json", "--sim", "--time-scale", "0", "--yes", "--verbose",
            "--db", directory.appendingPathComponent("records.sqlite").path,
        ])
        XCTAssertEqual(run.exitStatus(), 0, run.text)
        let lines = run.text.components(separatedBy: "\n")
        let logged = lines.indices.filter { lines[$0].contains(" debug smpctl.") }
        XCTAssertFalse(logged.isEmpty, "no log line with --verbose:\n\(run.text)")
        for index in logged where index + 1 < lines.count {
            XCTAssertFalse(lines[index + 1].hasPrefix(Self.consoleKitErase),
                           "a log line was printed under the progress line and erased:\n\(lines[index])")
        }
    }

    // MARK: The progress line's text

    func testProgressBarShowsCountsRateEtaRegionAndStates() {
        var bar = SessionProgressBar()
        bar.done = 90
        bar.total = 191
        bar.dotsPerSecond = 14.6
        bar.etaSeconds = 7
        bar.region = "hairline-front"
        bar.deviceState = "running"
        bar.interlock = "armed"
        bar.colours = false
        XCTAssertEqual(bar.renderActiveBar(tick: 1, width: 20).description,
                       "[#########-----------] 90/191  47.1%  15 dots/s  ETA 0:07  hairline-front  running  interlocks armed")
        bar.done = 191
        bar.etaSeconds = nil
        XCTAssertTrue(bar.renderActiveBar(tick: 2, width: 10).description.hasPrefix("[##########] 191/191 100.0%  15 dots/s  ETA –"))
    }

    /// Dots skipped by the operator's decision are neither done nor hidden: the bar counts done
    /// of the plan's total and says how many were skipped.
    func testProgressBarShowsThePlansTotalAndTheSkipped() {
        var bar = SessionProgressBar()
        (bar.done, bar.total, bar.skipped, bar.dotsPerSecond, bar.etaSeconds) = (160, 191, 31, 14.6, nil)
        (bar.deviceState, bar.interlock, bar.colours) = ("ready", "armed", false)
        XCTAssertEqual(bar.renderActiveBar(tick: 1, width: 20).description,
                       "[################----] 160/191 (31 skipped)  83.8%  15 dots/s  ETA –  ready  interlocks armed")
    }

    /// The end summary never claims more than the records prove: a session completed with
    /// skipped dots says how many were done and how many skipped, and lists every category.
    func testEndSummaryNeverCountsSkippedDotsAsDone() {
        var account = SessionAccount(
            outcome: .completed, reason: nil, total: 191, done: Array(1...127), interrupted: [], inDoubt: [],
            notStarted: [], metrics: LinkMetrics(), firmwareID: nil, elapsedSeconds: 3, sessionID: 1)
        account.previouslyDone = 33
        account.skipped = 31
        XCTAssertEqual(RunReporter.summaryLines(account, sim: true), [
            "Session complete: 160 dots confirmed done by the applicator; 31 skipped by the operator's decision "
                + "(not injected by this session)",
            "  Session:     1 (report: smpctl report 1 -o report.html)",
            "  Done:        160 of 191 (33 in earlier runs)",
            "  Skipped:     31 (the operator's decision)",
            "  Cut short:   0",
            "  In doubt:    0",
            "  Not started: 0",
        ])
        account.previouslyDone = 64
        account.skipped = 0
        XCTAssertEqual(RunReporter.summaryLines(account, sim: true).first,
                       "Session complete: all 191 dots confirmed done by the applicator.")
        account.outcome = .held
        account.previouslyDone = 0
        account.skipped = 4
        account.interrupted = [130]
        account.inDoubt = [131, 132]
        account.notStarted = Array(133...189)
        XCTAssertEqual(Array(RunReporter.summaryLines(account, sim: true).dropFirst(2)), [
            "  Done:        127 of 191",
            "  Skipped:     4 (the operator's decision)",
            "  Cut short:   1 (dot 130)",
            "  In doubt:    2 (dots 131, 132)",
            "  Not started: 57",
        ])
        // The records failed: dots the applicator confirmed afterwards are named, with the one
        // safe resume for them.
        account.recordsFailed = true
        account.notStarted = Array(135...189)
        account.doneUnrecorded = [133, 134]
        XCTAssertEqual(Array(RunReporter.summaryLines(account, sim: true).suffix(2)), [
            "  Not started: 55",
            "  Done, NOT RECORDED: 2 (dots 133, 134): the applicator confirmed them after the records failed. "
                + "The records hold them as in doubt: never inject them again (resume with --ambiguous skip).",
        ])
        account.recordsFailed = false
        account.doneUnrecorded = []
        // A resume refused for a decision did nothing: no counts of its own (its reason has the
        // records' counts), never "Done: 0 of 191 … Not started: 191".
        account.outcome = .needsDecision
        account.reason = "1 dot(s) may or may not have been injected (ambiguous or cut short): dot id(s) 130. …"
        XCTAssertEqual(RunReporter.summaryLines(account, sim: true), [
            "Not resumed: a decision is needed.",
            "  Reason:      1 dot(s) may or may not have been injected (ambiguous or cut short): dot id(s) 130. …",
            "  Session:     1 (report: smpctl report 1 -o report.html; continue with: smpctl resume 1 --sim --ambiguous skip|redo)",
        ])
    }

    /// The line never wraps (a wrapped line is not erased whole): on a narrow terminal the bar
    /// shrinks, then rate, region, percentage and ETA go in that order, then it is cut short.
    func testProgressLineFitsTheTerminalWidth() {
        var bar = SessionProgressBar()
        (bar.done, bar.total, bar.dotsPerSecond, bar.etaSeconds) = (90, 191, 14.6, 7)
        (bar.region, bar.deviceState, bar.interlock, bar.colours) = ("hairline-front", "running", "armed", false)
        func line(_ columns: Int) -> String {
            bar.columns = columns
            return bar.title + " " + bar.renderActiveBar(tick: 1, width: 30).description
        }
        XCTAssertEqual(line(200), "Dots [##############----------------] 90/191  47.1%  15 dots/s  ETA 0:07  hairline-front  running  interlocks armed")
        XCTAssertEqual(line(100), "Dots [######--------] 90/191  47.1%  15 dots/s  ETA 0:07  hairline-front  running  interlocks armed")
        XCTAssertEqual(line(80), "Dots [####------] 90/191  47.1%  ETA 0:07  running  interlocks armed")
        XCTAssertEqual(line(60), "Dots [####------] 90/191  running  interlocks armed")
        XCTAssertEqual(line(40), "Dots [####------] 90/191")
        XCTAssertEqual(line(20), "Dots [####------] …")
        for columns in 10...220 {
            XCTAssertLessThan(line(columns).count, max(columns, 8), "\(columns) columns: \(line(columns))")
        }
    }

    func testProgressBarColoursFollowTheStates() {
        XCTAssertEqual(SessionProgressBar.interlockStyle("armed").color.map { "\($0)" }, "green")
        XCTAssertEqual(SessionProgressBar.interlockStyle("held").color.map { "\($0)" }, "yellow")
        XCTAssertEqual(SessionProgressBar.interlockStyle("estopped").color.map { "\($0)" }, "red")
        XCTAssertEqual(SessionProgressBar.deviceStyle("fault").color.map { "\($0)" }, "red")
        var bar = SessionProgressBar()
        bar.interlock = "estopped"
        let fragment = bar.renderActiveBar(tick: 0, width: 5).fragments.last
        XCTAssertEqual(fragment?.string, "estopped")
        XCTAssertEqual(fragment?.style.color.map { "\($0)" }, "red")
        XCTAssertEqual(fragment?.style.isBold, true)
    }
}
