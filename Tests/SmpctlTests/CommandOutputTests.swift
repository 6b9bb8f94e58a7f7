import Foundation
import XCTest

@testable import SMPRecords

/// The commands besides `run`, `validate`, `devices`, `preview` and `probe` (HelpTests,
/// CLITests): their help, their output on good input and their message and exit status on bad.
final class CommandOutputTests: XCTestCase {
    typealias Help = HelpTests.Help

    func help(_ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws -> Help {
        let result = try CLITests.smpctl(arguments)
        XCTAssertEqual(result.status, 0, result.stderr, file: file, line: line)
        return Help(result.stdout)
    }

    func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("smpctl-out-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    /// A records database holding one completed hairline session (id 1).
    func recordedSession() throws -> (directory: URL, db: String) {
        let directory = try temporaryDirectory()
        let db = directory.appendingPathComponent("records.sqlite").path
        let run = try CLITests.smpctl(["run", "Examples/hairline.json", "--sim", "--yes", "--time-scale", "0", "--db", db])
        XCTAssertEqual(run.status, 0, run.stderr)
        return (directory, db)
    }

    // MARK: Help

    func testHelpOfEveryOtherCommand() throws {
        let expected: [([String], String, [String])] = [
            (["sim", "--help"],
             "USAGE: smpctl sim [--link <link>] [--port <path>] [--record <record>] [--time-scale <time-scale>] [--baud <N>] [--seed <seed>] [--faults <spec>] [--scenario <path>] [--verbose]",
             ["--link <link>", "--port <path>", "--record <record>", "--time-scale <time-scale>", "--baud <N>", "--seed <seed>",
              "--faults <spec>", "--scenario <path>", "-v, --verbose", "--version", "-h, --help"]),
            (["resume", "--help"], "USAGE: smpctl resume [<options>] <id>",
             ["--device <device>", "--sim", "--time-scale <time-scale>", "--baud <N>", "--record <record>", "--seed <seed>",
              "--faults <faults>", "--line-faults <spec>", "--interlock-socket <path>", "--config <path>", "--db <path>",
              "--station", "--station-address <address>", "--station-port <port>", "--station-token <token>",
              "--ambiguous <ambiguous>",
              "--operator <name>", "--yes", "--json", "-v, --verbose", "--version", "-h, --help"]),
            (["sessions", "--help"],
             "USAGE: smpctl sessions [--db <path>] [--json] [--limit <limit>] [--client <reference>] [--course <course>]",
             ["--db <path>", "--json", "--limit <limit>", "--client <reference>", "--course <course>", "--version",
              "-h, --help"]),
            (["report", "--help"], "USAGE: smpctl report <id> --output <output> [--design <design>] [--db <path>]",
             ["-o, --output <output>", "--design <design>", "--db <path>", "--version", "-h, --help"]),
            (["export", "--help"], "USAGE: smpctl export <id> --output <output> [--db <path>]",
             ["-o, --output <output>", "--db <path>", "--version", "-h, --help"]),
            (["config", "check", "--help"], "USAGE: smpctl config check [--config <path>] [--device <device>]",
             ["--config <path>", "--device <device>", "--version", "-h, --help"]),
        ]
        for (arguments, usage, options) in expected {
            let help = try help(arguments)
            XCTAssertEqual(help.usage, usage, arguments.joined(separator: " "))
            XCTAssertEqual(help.options, options, arguments.joined(separator: " "))
        }
        XCTAssertTrue(try help(["sim", "--help"]).prose.contains("ignore-pace-at=DOT"), "sim --help lists every fault")
    }

    func testTheTopLevelHelpListsEveryCommand() throws {
        let result = try CLITests.smpctl(["help"])
        XCTAssertEqual(result.status, 0)
        for command in ["run", "resume", "sim", "sim-lines", "validate", "preview", "devices", "probe", "sessions", "report", "export", "config"] {
            XCTAssertTrue(result.stdout.contains("\n  \(command) "), "smpctl help does not list \(command):\n\(result.stdout)")
        }
    }

    // MARK: sessions

    /// Issue 19, item 4: local times (the zone named; UTC kept in the records and --json), the
    /// client and the operator in the table, and filters by client and by course.
    func testSessionsListsARecordedSessionAsATableAndAsJSON() throws {
        let (_, db) = try recordedSession()
        let json = try CLITests.smpctl(["sessions", "--json", "--db", db])
        let list = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]])
        XCTAssertEqual(list.count, 1)
        XCTAssertEqual(list.first?["state"] as? String, "completed")
        XCTAssertEqual(list.first?["done"] as? Int, 191)
        XCTAssertEqual(list.first?["plan_id"] as? String, "example-hairline-s1")
        let started = try XCTUnwrap(list.first?["started_at"] as? String)
        XCTAssertTrue(started.hasSuffix("Z"), "the records keep UTC: \(started)")
        let operatorName = try XCTUnwrap(list.first?["operator"] as? String)

        let tokyo = try XCTUnwrap(TimeZone(identifier: "Asia/Tokyo"))
        let table = try CLITests.smpctl(["sessions", "--db", db], extraEnvironment: ["TZ": "Asia/Tokyo"])
        XCTAssertEqual(table.status, 0, table.stderr)
        let lines = table.stdout.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.first?.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " "),
                       "ID STATE DONE/TOTAL STARTED (local) CLIENT OPERATOR PLAN")
        let local = LocalTime.display(started, timeZone: tokyo)
        XCTAssertTrue(local.hasSuffix(" JST") || local.hasSuffix(" UTC+09:00"), "the zone is named: \(local)")
        XCTAssertEqual(lines.dropFirst().first?.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " "),
                       "1 completed 191/191 \(local) EXAMPLE-0001 \(operatorName) example-hairline-s1")

        func ids(_ filter: [String]) throws -> [String] {
            let result = try CLITests.smpctl(["sessions", "--db", db] + filter)
            XCTAssertEqual(result.status, 0, result.stderr)
            return result.stdout.split(separator: "\n").dropFirst().compactMap { $0.split(separator: " ").first.map(String.init) }
        }
        XCTAssertEqual(try ids(["--client", "EXAMPLE-0001"]), ["1"])
        XCTAssertEqual(try ids(["--course", "example-hairline"]), ["1"])
        XCTAssertEqual(try ids(["--client", "EXAMPLE-0001", "--course", "example-hairline"]), ["1"])
        let none = try CLITests.smpctl(["sessions", "--db", db, "--client", "EXAMPLE-0002"])
        XCTAssertEqual(none.stdout, "No sessions recorded in \(db) for client EXAMPLE-0002.\n")
        XCTAssertEqual(try CLITests.smpctl(["sessions", "--db", db, "--course", "example"]).stdout,
                       "No sessions recorded in \(db) for course example.\n", "a course is the whole id before -sN")
    }

    /// A mistyped --db must not look like an empty history, nor create a database there.
    func testAMissingDatabaseIsAnErrorForEveryReadingCommandAndIsNotCreated() throws {
        let directory = try temporaryDirectory()
        let missing = directory.appendingPathComponent("typo/records.sqlite").path
        for arguments in [["sessions"], ["report", "1", "-o", directory.appendingPathComponent("r.html").path],
                          ["export", "1", "-o", directory.appendingPathComponent("s.tar.gz").path],
                          ["resume", "1", "--sim", "--yes"]] {
            let result = try CLITests.smpctl(arguments + ["--db", missing])
            XCTAssertEqual(result.status, 66, "\(arguments): \(result.stderr)")
            XCTAssertTrue(result.stderr.contains("no treatment records at \(missing) (no such file)"), result.stderr)
            XCTAssertTrue(result.stderr.contains("Check --db"), result.stderr)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory.appendingPathComponent("typo").path),
                       "a reading command created the database's folder")
    }

    /// On a fresh machine nothing is recorded yet: said plainly, exit 0, nothing created.
    func testSessionsOnAFreshMachineSaysSoAndCreatesNothing() throws {
        let home = try temporaryDirectory()
        let process = Process()
        process.executableURL = CLITests.binary
        process.arguments = ["sessions"]
        var environment = CLITests.environment
        environment["XDG_DATA_HOME"] = home.path
        process.environment = environment
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0)
        XCTAssertEqual(text, "No sessions recorded yet (they go to \(home.path)/smpctl/records.sqlite).\n")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: home.path), [])
    }

    // MARK: report, export, resume

    static func mode(_ path: String) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int ?? -1) & 0o777
    }

    func testReportWritesEachFormatAndRefusesAnotherExtensionOrAnUnknownSession() throws {
        let (directory, db) = try recordedSession()
        for ext in ["json", "svg", "html"] {
            let path = directory.appendingPathComponent("report.\(ext)").path
            let result = try CLITests.smpctl(["report", "1", "-o", path, "--db", db])
            XCTAssertEqual(result.status, 0, result.stderr)
            XCTAssertEqual(result.stdout, "\(path): session 1, 191 of 191 dots done, completed\n")
            XCTAssertGreaterThan((try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0, 1000, ext)
            XCTAssertEqual(try Self.mode(path), 0o600, "\(ext) report not written 0600 like the database")
        }
        // Local times for the reader, the recorded UTC beside them.
        let sessions = try CLITests.smpctl(["sessions", "--json", "--db", db])
        let started = try XCTUnwrap(((try JSONSerialization.jsonObject(with: Data(sessions.stdout.utf8)) as? [[String: Any]])?
            .first?["started_at"]) as? String, sessions.stdout)
        let tokyoReport = directory.appendingPathComponent("tokyo.html").path
        XCTAssertEqual(try CLITests.smpctl(["report", "1", "-o", tokyoReport, "--db", db], extraEnvironment: ["TZ": "Asia/Tokyo"]).status, 0)
        let html = try String(contentsOfFile: tokyoReport, encoding: .utf8)
        let local = LocalTime.display(started, timeZone: try XCTUnwrap(TimeZone(identifier: "Asia/Tokyo")))
        XCTAssertTrue(html.contains("<tr><th>Started</th><td>\(local) <small>(\(started))</small></td></tr>"), html)
        // A report written over a world-readable file does not keep that file's mode.
        let widened = directory.appendingPathComponent("report.html").path
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: widened)
        XCTAssertEqual(try CLITests.smpctl(["report", "1", "-o", widened, "--db", db]).status, 0)
        XCTAssertEqual(try Self.mode(widened), 0o600)
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: directory.appendingPathComponent("report.json")))
        XCTAssertEqual(((json as? [String: Any])?["counts"] as? [String: Int])?["done"], 191)

        let docx = try CLITests.smpctl(["report", "1", "-o", directory.appendingPathComponent("report.docx").path, "--db", db])
        XCTAssertEqual(docx.status, 64)
        XCTAssertTrue(docx.stderr.contains("-o must end in .json, .svg, .html or .pdf"), docx.stderr)
        // A PDF through headless Chromium, when it is there (Debian's chromium, a test package).
        let pdfPath = directory.appendingPathComponent("report.pdf").path
        let pdf = try CLITests.smpctl(["report", "1", "-o", pdfPath, "--db", db])
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/chromium") {
            XCTAssertEqual(pdf.status, 0, pdf.stderr)
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: pdfPath)).prefix(5), Data("%PDF-".utf8))
            XCTAssertEqual(try Self.mode(pdfPath), 0o600)
        } else {
            XCTAssertTrue([0, 69].contains(pdf.status), pdf.stderr)
        }
        let unknown = try CLITests.smpctl(["report", "7", "-o", directory.appendingPathComponent("r.html").path, "--db", db])
        XCTAssertEqual(unknown.status, 64)
        XCTAssertTrue(unknown.stderr.contains("no session 7"), unknown.stderr)
    }

    func testExportWritesAnArchiveOfTheSessionAndRefusesAnUnknownOne() throws {
        let (directory, db) = try recordedSession()
        let archive = directory.appendingPathComponent("session-1.tar.gz").path
        let result = try CLITests.smpctl(["export", "1", "-o", archive, "--db", db])
        XCTAssertEqual(result.status, 0, result.stderr)
        let tar = Process()
        tar.executableURL = URL(fileURLWithPath: "/usr/bin/tar")
        tar.arguments = ["-tzf", archive]
        let listing = Pipe()
        tar.standardOutput = listing
        try tar.run()
        let files = String(decoding: listing.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        tar.waitUntilExit()
        XCTAssertEqual(Set(files.split(separator: "\n").map(String.init)), [
            "smp-session-1/", "smp-session-1/session.json", "smp-session-1/report.html", "smp-session-1/plan.json",
            "smp-session-1/dot-map.svg", "smp-session-1/audit.ndjson",
        ])
        XCTAssertEqual(try Self.mode(archive), 0o600, "the archive not written 0600 like the database")
        // A name promising another format is refused, nothing written.
        let zip = directory.appendingPathComponent("session-1.zip").path
        let refused = try CLITests.smpctl(["export", "1", "-o", zip, "--db", db])
        XCTAssertEqual(refused.status, 64, refused.stderr)
        XCTAssertTrue(refused.stderr.contains("-o must end in .tar.gz or .tgz"), refused.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: zip))
        let unknown = try CLITests.smpctl(["export", "9", "-o", directory.appendingPathComponent("s9.tar.gz").path, "--db", db])
        XCTAssertEqual(unknown.status, 64)
        XCTAssertTrue(unknown.stderr.contains("no session 9"), unknown.stderr)
    }

    func testResumeRefusesAnUnknownOrCompletedSessionAndSendsNothing() throws {
        let (_, db) = try recordedSession()
        let unknown = try CLITests.smpctl(["resume", "9", "--sim", "--yes", "--db", db])
        XCTAssertEqual(unknown.status, 64)
        XCTAssertTrue(unknown.stderr.contains("no session 9 in \(db) (see `smpctl sessions`)"), unknown.stderr)
        let complete = try CLITests.smpctl(["resume", "1", "--sim", "--yes", "--db", db])
        XCTAssertEqual(complete.status, 64)
        XCTAssertTrue(complete.stderr.contains("session 1 is complete (191 of 191 dots); nothing to resume"), complete.stderr)
        XCTAssertEqual(complete.stdout, "", "nothing ran")
    }

    // MARK: config check, sim

    func testConfigCheckPrintsTheConfigurationAndNamesABadFieldWithExit78() throws {
        let good = try CLITests.smpctl(["config", "check", "--config", "Examples/machine.toml"])
        XCTAssertEqual(good.status, 0, good.stderr)
        XCTAssertTrue(good.stdout.contains("Envelope (configuration): depth 0.3–1.2 mm, dwell 20–300 ms, travel ±120 × ±100 mm, dots ≥ 0.6 mm apart, ≤ 12 dots/s"),
                      good.stdout)
        XCTAssertTrue(good.stdout.contains("needle-power \"needle-power\" gpiochip0 line 24, active high"), good.stdout)

        let bad = try temporaryDirectory().appendingPathComponent("machine.toml").path
        try "[envelope]\ndepth_max_mm = 2.0\nmax_dots_per_second = 30\n".write(toFile: bad, atomically: true, encoding: .utf8)
        let result = try CLITests.smpctl(["config", "check", "--config", bad])
        XCTAssertEqual(result.status, 78)
        XCTAssertTrue(result.stderr.contains("\(bad): envelope.depth_max_mm = 2 exceeds the built-in depth limit of 1.5 mm"), result.stderr)
        XCTAssertTrue(result.stderr.contains("\(bad): envelope.max_dots_per_second = 30 exceeds the built-in limit of 20 dots per second"),
                      result.stderr)
    }

    /// Without `[host] realtime_priority`, a session on an applicator takes SCHED_FIFO when this
    /// user may; when not, it says so once, plainly, and goes on. `realtime_priority = 0` silences it.
    /// Run as `nobody` (no rtprio, no CAP_SYS_NICE) against /dev/null, which then fails to open as a
    /// serial port: the note comes before the device is opened.
    func testWithoutTheKeyAnApplicatorSessionSaysOnceThatItRunsAtOrdinaryScheduling() throws {
        let setpriv = "/usr/bin/setpriv"
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: setpriv) else {
            throw XCTSkip("needs root and setpriv(1) to run smpctl as a user without rtprio")
        }
        let directory = try temporaryDirectory()
        XCTAssertEqual(chmod(directory.path, 0o777), 0)
        let plan = directory.appendingPathComponent("hairline.json").path
        try FileManager.default.copyItem(atPath: CLITests.repositoryRoot.appendingPathComponent("Examples/hairline.json").path,
                                         toPath: plan)
        let ordinary = directory.appendingPathComponent("ordinary.toml").path
        try "[host]\nrealtime_priority = 0\n".write(toFile: ordinary, atomically: true, encoding: .utf8)
        func runAsNobody(_ extra: [String]) throws -> String {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: setpriv)
            process.arguments = ["--reuid", "65534", "--regid", "65534", "--clear-groups", "--",
                                 CLITests.binary.path, "run", plan, "--device", "/dev/null", "--operator", "test", "--yes",
                                 "--db", directory.appendingPathComponent("records.sqlite").path] + extra
            var environment = CLITests.environment
            environment["HOME"] = directory.path
            environment["XDG_DATA_HOME"] = directory.path
            process.environment = environment
            let err = Pipe()
            process.standardError = err
            process.standardOutput = FileHandle.nullDevice
            process.standardInput = FileHandle.nullDevice
            try process.run()
            let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            XCTAssertNotEqual(process.terminationStatus, 0, "/dev/null is no applicator:\n\(text)")
            return text
        }
        let plain = try runAsNobody([])
        XCTAssertEqual(plain.components(separatedBy: "note: ordinary scheduling").count - 1, 1, plain)
        XCTAssertTrue(plain.contains("this user may not use SCHED_FIFO"), plain)
        XCTAssertTrue(plain.contains("rtprio"), "the fix is not named:\n\(plain)")
        let silenced = try runAsNobody(["--config", ordinary])
        XCTAssertFalse(silenced.contains("ordinary scheduling"), silenced)
        let check = try CLITests.smpctl(["config", "check", "--config", ordinary])
        XCTAssertTrue(check.stdout.contains("Scheduling: ordinary ([host] realtime_priority = 0)"), check.stdout)
    }

    /// `[host] realtime_priority`: every thread of the session's process under SCHED_FIFO — or,
    /// where this process may not use it, a refusal before anything is sent, naming the fix.
    func testRealtimePriorityPutsTheWholeSessionUnderSCHEDFIFOOrRefusesWithTheFix() throws {
        let directory = try temporaryDirectory()
        let config = directory.appendingPathComponent("machine.toml").path
        try "[host]\nrealtime_priority = 10\n".write(toFile: config, atomically: true, encoding: .utf8)
        let check = try CLITests.smpctl(["config", "check", "--config", config])
        XCTAssertTrue(check.stdout.contains("Scheduling: SCHED_FIFO priority 10 for sessions"), check.stdout)

        // May this machine use SCHED_FIFO at all? (root without CAP_SYS_NICE in a container may not.)
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: "/usr/bin/chrt")
        probe.arguments = ["-f", "10", "/bin/true"]
        probe.standardError = FileHandle.nullDevice
        try probe.run()
        probe.waitUntilExit()
        let allowed = probe.terminationStatus == 0

        let record = directory.appendingPathComponent("truth.ndjson").path
        let run = try TerminalSessionTests.TerminalRun(
            ["run", "Examples/hairline.json", "--sim", "--time-scale", "0.05", "--yes", "--json", "--config", config,
             "--record", record, "--db", directory.appendingPathComponent("records.sqlite").path],
            terminal: false)
        guard allowed else {
            XCTAssertEqual(run.exitStatus(), 77, run.text)
            XCTAssertTrue(run.text.contains("realtime_priority = 10: this process may not use SCHED_FIFO"), run.text)
            XCTAssertTrue(run.text.contains("rtprio 10"), "the fix is not named:\n\(run.text)")
            XCTAssertEqual((try? String(contentsOfFile: record, encoding: .utf8)) ?? "", "", "a dot was injected")
            return
        }
        run.waitFor("\"event\":\"armed\"")
        let pid = try XCTUnwrap(run.smpctlPID)
        let threads = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")
        XCTAssertGreaterThan(threads.count, 2)
        var checked = 0
        for thread in threads {
            // proc(5): field 41 of stat is the policy (1 = SCHED_FIFO); fields count from the
            // pid, and the command name in parentheses may hold spaces, so split after it.
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/task/\(thread)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }  // the thread ended meanwhile
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            XCTAssertEqual(fields.count > 38 ? String(fields[38]) : nil, "1",
                           "thread \(thread) of smpctl is not under SCHED_FIFO (policy 1): \(stat)")
            checked += 1
        }
        XCTAssertGreaterThan(checked, 2, "no thread of smpctl could be read")
        XCTAssertEqual(run.exitStatus(), 0, run.text)
    }

    /// A --config the operator named must exist: a missing file is never taken for "no
    /// interlocks" (exit 66, the path named, nothing started). Only the default path may be absent.
    func testNamedConfigFileThatDoesNotExistStopsEverything() throws {
        let directory = try temporaryDirectory()
        let missing = directory.appendingPathComponent("machne.toml").path
        let check = try CLITests.smpctl(["config", "check", "--config", missing])
        XCTAssertEqual(check.status, 66, check.stdout + check.stderr)
        XCTAssertTrue(check.stderr.contains("\(missing): cannot read the file: No such file or directory"), check.stderr)
        XCTAssertFalse(check.stdout.contains("built-in defaults"), check.stdout)

        let db = directory.appendingPathComponent("records.sqlite").path
        let record = directory.appendingPathComponent("truth.ndjson").path
        let run = try CLITests.smpctl(["run", "Examples/hairline.json", "--sim", "--time-scale", "0", "--yes", "--json",
                                       "--config", missing, "--db", db, "--record", record])
        XCTAssertEqual(run.status, 66, run.stdout + run.stderr)
        XCTAssertTrue(run.stderr.contains(missing), run.stderr)
        XCTAssertFalse(run.stdout.contains("preflight"), "the session started:\n\(run.stdout)")
        XCTAssertFalse(run.stderr.contains("developer mode"), run.stderr)
        XCTAssertEqual((try? String(contentsOfFile: record, encoding: .utf8)) ?? "", "", "a dot was injected")
        XCTAssertFalse(FileManager.default.fileExists(atPath: db), "a session was recorded")

        let resume = try CLITests.smpctl(["resume", "1", "--sim", "--yes", "--json", "--config", missing, "--db", db])
        XCTAssertEqual(resume.status, 66, resume.stderr)
        XCTAssertTrue(resume.stderr.contains(missing), resume.stderr)

        // Not given at all: the default path, absent on a developer's machine, means built-in defaults.
        if !FileManager.default.fileExists(atPath: "/etc/smpctl/machine.toml") {
            let defaults = try CLITests.smpctl(["config", "check"])
            XCTAssertEqual(defaults.status, 0, defaults.stderr)
            XCTAssertTrue(defaults.stdout.contains("built-in defaults (no file)"), defaults.stdout)
        }
    }

    /// `max_dots_per_second = 1e-15` once passed `config check` and crashed `run` converting the
    /// pace: now both refuse it with the key, the value and the limit, and nothing starts.
    func testARateNoPaceCanCarryIsRefusedByConfigCheckAndByRun() throws {
        let directory = try temporaryDirectory()
        let config = directory.appendingPathComponent("machine.toml").path
        try "[envelope]\nmax_dots_per_second = 1e-15\n".write(toFile: config, atomically: true, encoding: .utf8)
        let check = try CLITests.smpctl(["config", "check", "--config", config])
        XCTAssertEqual(check.status, 78, check.stdout + check.stderr)
        XCTAssertTrue(check.stderr.contains("\(config): envelope.max_dots_per_second = 1e-15 is below"), check.stderr)
        XCTAssertTrue(check.stderr.contains("0.0152590219"), check.stderr)
        let record = directory.appendingPathComponent("truth.ndjson").path
        let run = try CLITests.smpctl(["run", "Examples/hairline.json", "--sim", "--time-scale", "0", "--yes", "--json",
                                       "--config", config, "--db", directory.appendingPathComponent("r.sqlite").path,
                                       "--record", record])
        XCTAssertEqual(run.status, 78, run.stdout + run.stderr)
        XCTAssertTrue(run.stderr.contains("envelope.max_dots_per_second = 1e-15"), run.stderr)
        XCTAssertEqual((try? String(contentsOfFile: record, encoding: .utf8)) ?? "", "", "a dot was injected")
    }

    /// After `resume --ambiguous skip` the end summary and the progress state exactly what the
    /// records prove: done, skipped by the operator's decision, and the plan's total.
    func testResumeWithSkippedDotsSummarisesDoneAndSkippedExactly() throws {
        let directory = try temporaryDirectory()
        let db = directory.appendingPathComponent("records.sqlite").path
        let first = try CLITests.smpctl(["run", "Examples/hairline.json", "--sim", "--time-scale", "0", "--yes", "--json",
                                         "--faults", "estop-at=60", "--db", db])
        XCTAssertEqual(first.status, 75, first.stderr)
        let resume = try CLITests.smpctl(["resume", "1", "--sim", "--time-scale", "0", "--yes", "--json",
                                          "--ambiguous", "skip", "--db", db])
        XCTAssertEqual(resume.status, 0, resume.stderr)
        let events = resume.stdout.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        let finished = try XCTUnwrap(events.last { $0["event"] as? String == "finished" }, resume.stdout)
        let done = try XCTUnwrap(finished["done"] as? Int), skipped = try XCTUnwrap(finished["skipped"] as? Int)
        XCTAssertGreaterThan(skipped, 0)
        XCTAssertEqual(done + skipped, 191)
        XCTAssertEqual(finished["outcome"] as? String, "completed")
        XCTAssertEqual(finished["summary"] as? String,
                       "Session complete: \(done) dots confirmed done by the applicator; \(skipped) skipped by the "
                       + "operator's decision (not injected by this session)")
        let progress = try XCTUnwrap(events.last { $0["event"] as? String == "progress" }, resume.stdout)
        XCTAssertEqual(progress["done"] as? Int, done)
        XCTAssertEqual(progress["total"] as? Int, 191, "the plan's total, not the total less the skipped")
        XCTAssertEqual(progress["skipped"] as? Int, skipped)
        let preflight = try XCTUnwrap(events.first { $0["event"] as? String == "preflight" }, resume.stdout)
        XCTAssertEqual(preflight["skipped"] as? Int, skipped)
    }

    /// `--line-faults chip-vanish-at=N`: the simulated interlock chip goes without waking its
    /// descriptors (kernel 6.1's removal); the health check the link's thread carries finds it:
    /// e-stop, the needle-power output (on that chip) cannot be switched off, exit 71 with the
    /// instruction to cut it by hand; the run stops within a few dots.
    func testAChipThatVanishesSilentlyMidSessionIsFoundAndTheNeedlePowerReported() throws {
        let directory = try temporaryDirectory()
        let run = try CLITests.smpctl(["run", "Examples/hairline.json", "--sim", "--time-scale", "0.2", "--yes", "--json",
                                       "--line-faults", "chip-vanish-at=30",
                                       "--db", directory.appendingPathComponent("r.sqlite").path])
        XCTAssertEqual(run.status, 71, run.stdout + run.stderr)
        XCTAssertTrue(run.stderr.contains("lost while checking that the chip is still there"), run.stderr)
        XCTAssertTrue(run.stderr.contains("CUT THE NEEDLE POWER BY HAND"), run.stderr)
        let events = run.stdout.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        let finished = try XCTUnwrap(events.last { $0["event"] as? String == "finished" }, run.stdout)
        let done = try XCTUnwrap(finished["done"] as? Int)
        XCTAssertGreaterThanOrEqual(done, 30)
        XCTAssertLessThan(done, 60, "found within a few dots of the vanishing")
        XCTAssertNotNil(finished["needle_power_off_failed"])
    }

    func testSimRefusesAnUnknownOrMalformedFaultNamingIt() throws {
        let unknown = try CLITests.smpctl(["sim", "--faults", "bogus=1"])
        XCTAssertEqual(unknown.status, 64)
        XCTAssertTrue(unknown.stderr.contains("fault plan item 'bogus=1': unknown fault 'bogus'; known: corrupt"), unknown.stderr)
        let rate = try CLITests.smpctl(["sim", "--faults", "drop=2"])
        XCTAssertEqual(rate.status, 64)
        XCTAssertTrue(rate.stderr.contains("'drop=2': RATE must be a probability from 0 to 1"), rate.stderr)
    }
}
