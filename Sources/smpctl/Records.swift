import ArgumentParser
import Foundation
import SessionRunner
import SMPPlan
import SMPPlanReader
import SMPInterlocks
import SMPRecords
import SMPMachine
import SMPRender
import SMPSystem

struct Sessions: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List recorded sessions, newest first.",
        discussion: """
            Times are local (with their zone); the records and --json keep UTC.
            """)

    @OptionGroup var records: RecordsOptions

    @Flag(help: "Print a JSON array of objects with id, plan_id, state, done, total and more.")
    var json = false

    @Option(help: "How many sessions to list.")
    var limit: Int = 50

    @Option(help: ArgumentHelp("Only this client's sessions (the plan's client.reference, exactly).", valueName: "reference"))
    var client: String?

    @Option(help: ArgumentHelp(
        "Only the sessions of this course: the plans `smpctl design` makes for it (COURSE-s1, COURSE-s2, …).",
        valueName: "course"))
    var course: String?

    func run() throws {
        if records.isMissing && records.db == RecordStore.defaultPath {
            // A fresh machine: nothing recorded yet is not an error, and nothing is created.
            if json { Output.printJSON([Any]()) } else { print("No sessions recorded yet (they go to \(records.db)).") }
            return
        }
        let store = try records.openExisting(command: "sessions")
        let sessions: [SessionSummary]
        // A session recorded `running` is live only while its owner holds it (docs/records.md).
        var owners: [Int64: SessionOwner] = [:]
        do {
            sessions = try store.sessions(limit: limit, clientReference: client, course: course)
            for s in sessions where s.state == "running" {
                if let owner = try store.liveOwner(of: s.id) { owners[s.id] = owner }
            }
        } catch {
            throw RecordsOptions.failed("smpctl sessions", error, consequence: "")
        }
        if json {
            let array: [[String: Any]] = sessions.map { s in
                ["id": s.id, "plan_id": s.planID, "state": s.state, "done": s.done, "total": s.total,
                 "started_at": s.startedAt, "ended_at": s.endedAt ?? NSNull(), "plan_path": s.planPath,
                 "operator": s.operatorName, "client": s.clientReference ?? NSNull(), "reason": s.reason ?? NSNull(),
                 "owner_pid": s.state == "running" ? owners[s.id]?.processID.map { $0 as Any } ?? NSNull() : NSNull(),
                 "live": owners[s.id] != nil]
            }
            Output.printJSON(array)
            return
        }
        if sessions.isEmpty {
            let filters = [client.map { "client \($0)" }, course.map { "course \($0)" }].compactMap { $0 }
            print("No sessions recorded in \(records.db)\(filters.isEmpty ? "" : " for " + filters.joined(separator: ", ")).")
            return
        }
        func column(_ text: String, _ width: Int) -> String {
            text.count >= width ? text + " " : text.padding(toLength: width, withPad: " ", startingAt: 0)
        }
        let clientWidth = max(6, sessions.map { ($0.clientReference ?? "—").count }.max() ?? 0) + 1
        let operatorWidth = max(8, sessions.map(\.operatorName.count).max() ?? 0) + 1
        print(column("ID", 6) + column("STATE", 15) + column("DONE/TOTAL", 15) + column("STARTED (local)", 27)
              + column("CLIENT", clientWidth) + column("OPERATOR", operatorWidth) + "PLAN")
        for s in sessions {
            print(column(String(s.id), 6) + column(s.state, 15) + column("\(s.done)/\(s.total)", 15)
                  + column(LocalTime.display(s.startedAt), 27) + column(s.clientReference ?? "—", clientWidth)
                  + column(s.operatorName, operatorWidth) + s.planID)
        }
        for s in sessions.reversed() where s.state == "running" {
            if let owner = owners[s.id] {
                print("Session \(s.id) is running in \(owner.processID.map { "process \($0)" } ?? "another process").")
            } else {
                print("Session \(s.id) is recorded running but its process is gone (killed or crashed): "
                      + "`smpctl resume \(s.id)` continues it.")
            }
        }
    }
}

struct Resume: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Continue a recorded session that was held, stopped or interrupted.",
        discussion: """
            Refuses when the plan file changed since the session started (its SHA-256 is recorded) \
            or the session is complete. Dots that were in flight are settled from what the \
            applicator reports (its boot id, done count and last completed dot); dots whose fate \
            cannot be known are listed and resumed only with --ambiguous skip or --ambiguous redo, \
            a decision recorded in the audit trail. A session still running in another process \
            (its owner holds the session's lock) is refused with exit 75, nothing armed or written; \
            one whose process died (killed, crashed, power lost) resumes. Exit status as for `run`; \
            64 when a decision is needed; 75 also when another process runs the session; 78 when \
            the records were written by a newer smpctl.
            """)

    @Argument(help: "The session id (see `smpctl sessions`).")
    var id: Int64

    @OptionGroup var target: DeviceOptions
    @OptionGroup var records: RecordsOptions
    @OptionGroup var station: StationOptions

    @Option(help: "What to do with dots that may or may not have been injected: skip or redo.")
    var ambiguous: AmbiguousChoice?

    @Option(name: .customLong("operator"), help: ArgumentHelp(
        "Who resumes the session (recorded). Required on an applicator unless the machine file sets [host] operator; with --sim the login name by default.",
        valueName: "name"))
    var operatorName: String?

    func validate() throws { try SessionCommand.validateOperator(operatorName) }

    @Flag(help: "Do not ask for confirmation after the preflight summary.")
    var yes = false

    @Flag(help: "Print events as NDJSON.")
    var json = false

    @Flag(name: .shortAndLong, help: "Log protocol details to stderr.")
    var verbose = false

    enum AmbiguousChoice: String, ExpressibleByArgument, CaseIterable {
        case skip, redo
    }

    func run() throws {
        let machine = try SessionCommand.loadMachineConfiguration(target.config)
        let operatorName = try SessionCommand.operatorName(operatorName, machine: machine, sim: target.sim)
        let store = try records.openExisting(command: "resume")
        do {
            try resume(store, machine: machine, operatorName: operatorName)
        } catch let error as RecordStoreError {
            throw RecordsOptions.failed("smpctl resume", error, consequence: """
                nothing was armed or written. Wait until it has ended, or end it there (Ctrl-C at \
                its terminal, or SIGTERM); a session whose process was killed resumes at once.
                """)
        }
    }

    private func resume(_ store: RecordStore, machine: MachineConfiguration, operatorName: String) throws {
        guard try store.session(id: id) != nil else {
            Output.err("smpctl resume: no session \(id) in \(records.db) (see `smpctl sessions`).")
            throw ExitCode(ExitStatus.usage)
        }
        // Owned before anything is read for the decision, and for the whole resumed session (the
        // session releases it when its account is final): refused while another process runs it.
        try store.takeOwnership(of: id)
        defer { store.releaseOwnership(of: id) }
        guard let session = try store.session(id: id) else { throw ExitCode(ExitStatus.usage) }
        // Only a session recorded `completed` has nothing left. One whose every dot is done but
        // whose state is still `running` was killed between its last dot's commit and its end
        // record: resumed (nothing is sent), it is closed like any session, device disarmed.
        // (Refused here before issue 14, it stayed `running` for ever, its resume refused.)
        if session.state == "completed" {
            Output.err("smpctl resume: session \(id) is complete (\(session.done) of \(session.total) dots); nothing to resume.")
            throw ExitCode(ExitStatus.usage)
        }
        let plan = try SessionCommand.loadPlan(session.planPath, json: SessionCommand.speaksJSON(json))
        guard plan.sha256 == session.planSHA256 else {
            Output.err("""
                smpctl resume: the plan file \(session.planPath) changed since session \(id) started \
                (SHA-256 \(plan.sha256 ?? "?") now, \(session.planSHA256) then). Resuming it could put \
                dots in other places; restore the original file. Nothing was sent.
                """)
            throw ExitCode(ExitStatus.dataError)
        }
        let recording = RecordingOptions(
            store: store, planPath: session.planPath, planSHA256: session.planSHA256, operatorName: operatorName,
            machineID: SessionCommand.machineID(), resumeSessionID: id,
            ambiguousDecision: ambiguous.map { $0 == .skip ? .skip : .redo })
        try SessionCommand.execute(plan: plan, machine: machine, recording: recording, store: store, target: target,
                                   station: station, yes: yes, json: json, verbose: verbose)
    }
}

struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a session's report: .json (machine-readable), .svg (dot map), .html (everything) or .pdf.",
        discussion: """
            Written 0600, like the records. A .pdf is the .html printed by headless Chromium (not a \
            dependency of smpctl: without it, exit 69). \
            Exit status: 0 written; 64 no such session or a bad -o; 66 no database at --db; 69 no \
            Chromium for a .pdf; 74 \
            records or output not readable or writable; 75 the session is still running in another \
            process (its account is not final; nothing is written); 78 records written by a newer \
            smpctl.
            """)

    @Argument(help: "The session id.")
    var id: Int64

    @Option(name: .shortAndLong, help: "Output file; its extension chooses the format (.json, .svg, .html, .pdf).")
    var output: String

    @Option(help: ArgumentHelp(
        "The smp-design/1 file the session's plan was designed from: its region outlines, no-go areas and hairline are drawn on the dot map (.svg, .html, .pdf).",
        valueName: "design"))
    var design: String?

    @OptionGroup var records: RecordsOptions

    func validate() throws {
        guard ["json", "svg", "html", "pdf"].contains((output as NSString).pathExtension.lowercased()) else {
            throw ValidationError("-o must end in .json, .svg, .html or .pdf (got \(output)).")
        }
    }

    func run() throws {
        let report = try ReportCommand.load(id, records, command: "report")
        let outlines = try design.map { try ReportCommand.outlines($0, for: report) } ?? []
        let data: Data
        switch (output as NSString).pathExtension.lowercased() {
        case "json": data = try report.json()
        case "svg": data = Data(report.svg(outlines: outlines).utf8)
        case "pdf": data = try ReportCommand.pdf(report.html(outlines: outlines))
        default: data = Data(report.html(outlines: outlines).utf8)
        }
        try ReportCommand.write(data, to: output)
        print("\(output): session \(id), \(report.session.done) of \(report.session.total) dots done, \(report.session.state)")
    }
}

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a self-contained archive of a session: report, JSON, audit trail and the plan file.",
        discussion: """
            The archive is a .tar.gz; records stay in the database (the tool never deletes them). \
            Exit status: 0 written; 64 no such session; 66 no database at --db; 74 records or \
            archive not readable or writable; 75 the session is still running in another process \
            (its account is not final; nothing is written); 78 records written by a newer smpctl.
            """)

    @Argument(help: "The session id.")
    var id: Int64

    @Option(name: .shortAndLong, help: "The archive to write (.tar.gz or .tgz; written 0600, like the records).")
    var output: String

    @OptionGroup var records: RecordsOptions

    func validate() throws {
        // A name that promises another format (x.zip) would hold a tar.gz: refused, not renamed.
        let name = output.lowercased()
        guard name.hasSuffix(".tar.gz") || name.hasSuffix(".tgz") else {
            throw ValidationError("-o must end in .tar.gz or .tgz: the archive is a gzip-compressed tar (got \(output)).")
        }
    }

    func run() throws {
        let report = try ReportCommand.load(id, records, command: "export")
        let staging = FileManager.default.temporaryDirectory.appendingPathComponent("smpctl-export-\(UUID().uuidString)")
        let folder = staging.appendingPathComponent("smp-session-\(id)")
        defer { try? FileManager.default.removeItem(at: staging) }
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        try FileManager.default.setAttributes([.posixPermissions: 0o700], ofItemAtPath: staging.path)
        try report.json().write(to: folder.appendingPathComponent("session.json"))
        try Data(report.html().utf8).write(to: folder.appendingPathComponent("report.html"))
        try Data(report.svg().utf8).write(to: folder.appendingPathComponent("dot-map.svg"))
        try report.auditNDJSON().write(to: folder.appendingPathComponent("audit.ndjson"))
        if let plan = FileManager.default.contents(atPath: report.session.planPath) {
            try plan.write(to: folder.appendingPathComponent("plan.json"))
        }
        // Made in the private staging folder, then written 0600 like the report: it holds the
        // client's treatment record.
        let archive = staging.appendingPathComponent("archive.tar.gz")
        let tar = Process()
        tar.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        tar.arguments = ["tar", "-czf", archive.path, "-C", staging.path, "smp-session-\(id)"]
        try tar.run()
        tar.waitUntilExit()
        guard tar.terminationStatus == 0, let data = FileManager.default.contents(atPath: archive.path) else {
            Output.err("smpctl export: tar failed with status \(tar.terminationStatus) writing \(output)")
            throw ExitCode(ExitStatus.ioError)
        }
        try ReportCommand.write(data, to: output)
        print("\(output): session \(id) archived (report.html, session.json, dot-map.svg, audit.ndjson, plan.json)")
    }
}

enum ReportCommand {
    /// The design's lines for the report's map. The records keep the plan's id, not its design's,
    /// so the check is on the plan file when it is still there and unchanged (the hash in the
    /// records); otherwise the design is drawn as given.
    static func outlines(_ path: String, for report: SessionReport) throws -> [PreviewOutline] {
        let plan = try? PlanLoader.load(path: report.session.planPath, envelope: .builtIn).0
        let designed = plan.flatMap { $0.sha256 == report.session.planSHA256 ? $0.design?.designID : nil }
        return try Preview.outlines(path, designedFrom: designed, command: "report")
    }

    /// The session's report; refused (75) while another process runs the session: its account
    /// is not final, and a report of it would look like one.
    static func load(_ id: Int64, _ records: RecordsOptions, command: String) throws -> SessionReport {
        let store = try records.openExisting(command: command)
        do {
            guard try store.session(id: id) != nil else {
                Output.err("smpctl \(command): no session \(id) in \(records.db) (see `smpctl sessions`).")
                throw ExitCode(ExitStatus.usage)
            }
            try store.refuseIfRunningElsewhere(id)
            return try SessionReport(store: store, sessionID: id)
        } catch let error as RecordStoreError {
            throw RecordsOptions.failed("smpctl \(command)", error, consequence: """
                its account is not final yet, so nothing was written. Try again when it has ended.
                """)
        }
    }

    /// The HTML report printed to PDF by headless Chromium (its print stylesheet, A4), in a
    /// private folder. Chromium is not a dependency of smpctl: without it, exit 69 and the way to
    /// get it.
    static func pdf(_ html: String) throws -> Data {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
        guard let chromium = ["chromium", "chromium-browser", "google-chrome"].lazy.compactMap({ name in
            path.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
        }).first else {
            Output.err("smpctl report: a PDF is printed by headless Chromium, which is not installed "
                       + "(Debian: apt-get install chromium). Write .html and print it from a browser instead.")
            throw ExitCode(ExitStatus.unavailable)
        }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("smpctl-pdf-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        do {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
            try Data(html.utf8).write(to: folder.appendingPathComponent("report.html"))
        } catch {
            Output.err("smpctl report: cannot prepare the PDF in \(folder.path): \(error.localizedDescription)")
            throw ExitCode(ExitStatus.ioError)
        }
        let pdf = folder.appendingPathComponent("report.pdf")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: chromium)
        // Chromium's sandbox refuses to start as root; the page is our own report, no network.
        process.arguments = (NSUserName() == "root" ? ["--no-sandbox"] : []) + [
            "--headless", "--disable-gpu", "--no-first-run", "--no-pdf-header-footer",
            "--user-data-dir=\(folder.appendingPathComponent("profile").path)", "--print-to-pdf=\(pdf.path)",
            folder.appendingPathComponent("report.html").absoluteString,
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0, let data = FileManager.default.contents(atPath: pdf.path), !data.isEmpty else {
            Output.err("smpctl report: \(chromium) could not print the PDF (exit \(process.terminationStatus)).")
            throw ExitCode(ExitStatus.ioError)
        }
        return data
    }

    /// Writes `data` to `path` with mode 0600, like the database (treatment records are personal
    /// data): a new file beside it, created 0600 whatever the umask, renamed over `path`, so an
    /// existing file's wider mode is never kept and a reader never sees half a report.
    static func write(_ data: Data, to path: String) throws {
        let temporary = path + ".smpctl-\(Sys.processID())"
        func fail(_ errno: Errno, _ what: String) -> ExitCode {
            _ = Sys.unlink(temporary)
            Output.err("smpctl: cannot write \(path): \(what): \(errno)")
            return ExitCode(ExitStatus.ioError)
        }
        let fd: CInt
        switch Sys.open(temporary, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, mode: 0o600) {
        case .success(let opened): fd = opened
        case .failure(let errno): throw fail(errno, "creating it")
        }
        var failure: Errno?
        data.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                switch Sys.write(fd, from: UnsafeRawBufferPointer(rebasing: buffer[offset...])) {
                case .success(.transferred(let count)): offset += count
                case .success: continue
                case .failure(let errno):
                    failure = errno
                    return
                }
            }
        }
        _ = Sys.close(fd)
        if let failure { throw fail(failure, "writing it") }
        if case .failure(let errno) = Sys.rename(temporary, to: path) { throw fail(errno, "renaming it into place") }
    }
}
