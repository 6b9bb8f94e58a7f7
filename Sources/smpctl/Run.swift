import ArgumentParser
import DeviceSim
import Dispatch
import FirmwareProtocol
import Foundation
import Logging
import NeedleDriver
import SessionRunner
import SMPPlan
import SMPPlanReader
import SMPInterlocks
import SMPRecords
import SMPMachine
import SMPRender
import SMPStation
import SMPSystem

/// Where the session runs: a real applicator, or the built-in simulator.
struct DeviceOptions: ParsableArguments {
    @Option(help: "The applicator's tty, e.g. /dev/smp/applicator-SERIAL or /dev/ttyACM0.")
    var device: String?

    @Flag(help: "Run on the built-in simulator (its own pseudo-terminal, same driver path).")
    var sim = false

    @Option(help: "With --sim: simulator time scale (1 = real time, 0 = instant).")
    var timeScale: Double = 0.02

    @Option(help: ArgumentHelp(
        "With --sim: pace the simulator's wire like an 8N1 UART at this baud (N/10 bytes per second each way); the host's window and retransmission timeout follow it.",
        valueName: "N"))
    var baud: Int?

    @Option(help: "With --sim: append the simulator's ground-truth record (NDJSON) to this file.")
    var record: String?

    @Option(help: "With --sim: seed of the simulator.")
    var seed: UInt64 = 1

    @Option(help: "With --sim: inject faults, e.g. corrupt=0.02,drop=0.02,estop-at=120 (see `smpctl sim --help`).")
    var faults: String?

    @Option(help: ArgumentHelp(
        "With --sim: act on the host's simulated interlock lines when a dot is confirmed: estop-at=DOT, pedal-release-at=DOT, contact-loss-at=DOT, cartridge-out-at=DOT, chip-vanish-at=DOT (the chip goes without a sound: the health check must find it) (comma-separated).",
        valueName: "spec"))
    var lineFaults: String?

    @Option(help: ArgumentHelp(
        "With --sim: listen here for commands to the simulated interlocks (`smpctl sim-lines`); at a terminal the default is $XDG_RUNTIME_DIR/smpctl-sim-PID.sock.",
        valueName: "path"))
    var interlockSocket: String?

    /// Nil when not given: only then may the default file be absent (built-in defaults).
    @Option(help: ArgumentHelp(
        "The machine configuration (interlocks, envelope, lease); it must exist (default: /etc/smpctl/machine.toml, built-in defaults when absent).",
        valueName: "path"))
    var config: String?

    func validate() throws {
        if sim == (device != nil) {
            throw ValidationError("Give exactly one of --device PATH or --sim.")
        }
        if !sim && (record != nil || faults != nil || lineFaults != nil || interlockSocket != nil || baud != nil) {
            throw ValidationError("--record, --faults, --line-faults, --interlock-socket and --baud apply to --sim only.")
        }
        if let baud, baud < 300 || baud > 12_000_000 {
            throw ValidationError("--baud must be 300…12000000 (got \(baud)).")
        }
        if let lineFaults {
            do { _ = try HostLineFaults(spec: lineFaults) } catch { throw ValidationError("--line-faults: \(error)") }
        }
        guard timeScale.isFinite, timeScale >= 0 else {
            throw ValidationError("--time-scale must be a finite number ≥ 0 (got \(timeScale)).")
        }
        if let faults {
            do { _ = try FaultPlan(spec: faults) } catch { throw ValidationError("--faults: \(error)") }
        }
    }
}

struct RecordsOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The treatment records database.", valueName: "path"))
    var db: String = RecordStore.defaultPath

    func open() throws -> RecordStore {
        do {
            return try RecordStore(path: db)
        } catch {
            throw Self.failed("smpctl", error, consequence: "")
        }
    }

    /// Says once what went wrong with the records and returns the exit status for it: 75 when
    /// another live process runs the session (with `consequence`: what was not done), 78 when
    /// the database was written by a newer smpctl, 74 otherwise.
    static func failed(_ command: String, _ error: RecordStoreError, consequence: String) -> ExitCode {
        switch error.kind {
        case .sessionRunning:
            Output.err("\(command): \(error.message) (treatment records at \(error.path)); \(consequence)")
            return ExitCode(ExitStatus.incomplete)
        case .newerSchema:
            Output.err("\(command): \(error)")
            return ExitCode(ExitStatus.config)
        case .failed:
            Output.err("\(command): \(error)")
            return ExitCode(ExitStatus.ioError)
        case .notADatabaseFile:
            Output.err("\(command): \(error)")
            return ExitCode(ExitStatus.noInput)
        }
    }

    /// True when `db` names no file: nothing has been recorded there.
    var isMissing: Bool { !FileManager.default.fileExists(atPath: db) }

    /// For the commands that only read records: a database that is not there is never created
    /// (a mistyped --db would otherwise look like an empty history). Exit 66 when it is missing.
    func openExisting(command: String) throws -> RecordStore {
        if isMissing {
            Output.err("smpctl \(command): no treatment records at \(db) (no such file). Check --db: sessions are "
                       + "recorded by `smpctl run`, by default in \(RecordStore.defaultPath).")
            throw ExitCode(ExitStatus.noInput)
        }
        return try open()
    }
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a plan on the applicator (or on the built-in simulator with --sim).",
        discussion: """
            The plan is validated first; nothing is sent to a device when it has an error. After \
            the handshake the plan is checked again against the applicator's own limits, a \
            preflight summary is shown and you are asked to confirm (--yes skips the question). \
            Every session is recorded (--db). Ctrl-C once holds the session (the dot in the skin \
            finishes, needle retracted, queue flushed; Enter resumes); Ctrl-C again asks whether \
            to end it (resumable later with `smpctl resume`); Ctrl-Z holds too, it does not \
            suspend smpctl during a session. SIGTERM, a closed terminal or closed \
            output end the session held as soon as the dot in the skin is done. A machine \
            configuration named with --config must exist and load (66 missing or unreadable, 78 \
            invalid); only the default /etc/smpctl/machine.toml may be absent, meaning developer \
            mode. With --station the session is also shown and driven (Arm, Hold, Resume, End, \
            each with the terminal's confirmation) from a web page served by this process on \
            127.0.0.1:8470; it stays up after the end until Ctrl-C.
            """ + " " + ExitStatus.summary)

    @Argument(help: "The plan file (smp-plan/1 JSON).")
    var plan: String

    @OptionGroup var target: DeviceOptions
    @OptionGroup var records: RecordsOptions
    @OptionGroup var station: StationOptions

    @Option(name: .customLong("operator"), help: ArgumentHelp(
        "Who runs the session (recorded). Required on an applicator unless the machine file sets [host] operator; with --sim the login name by default.",
        valueName: "name"))
    var operatorName: String?

    @Flag(help: "Do not ask for confirmation after the preflight summary.")
    var yes = false

    @Flag(help: "Print events as NDJSON, one object per line (the default when stdout is not a terminal).")
    var json = false

    @Option(help: ArgumentHelp(
        "Run a session less than 6 months after a hair transplant; the reason goes into the audit trail.",
        valueName: "reason"))
    var overrideClinical: String?

    @Flag(name: .shortAndLong, help: "Log protocol details to stderr.")
    var verbose = false

    func validate() throws {
        if let overrideClinical, overrideClinical.trimmingCharacters(in: .whitespaces).isEmpty {
            throw ValidationError("--override-clinical needs a reason (it is kept in the audit trail).")
        }
        try SessionCommand.validateOperator(operatorName)
    }

    func run() throws {
        let machine = try SessionCommand.loadMachineConfiguration(target.config)
        let operatorName = try SessionCommand.operatorName(operatorName, machine: machine, sim: target.sim)
        let loaded = try SessionCommand.loadPlan(plan, json: SessionCommand.speaksJSON(json))
        let auditAtStart = try SessionCommand.checkClinicalTiming(loaded, planPath: plan, override: overrideClinical,
                                                                  json: SessionCommand.speaksJSON(json))
        let store = try records.open()
        CourseTiming.warn(loaded, planPath: plan,
                          previous: CourseTiming.previousSession(loaded.design?.after ?? [], store: store))
        var recording = RecordingOptions(
            store: store, planPath: SessionCommand.absolute(plan), planSHA256: loaded.sha256 ?? "",
            operatorName: operatorName, machineID: SessionCommand.machineID())
        recording.auditAtStart = auditAtStart
        try SessionCommand.execute(plan: loaded, machine: machine, recording: recording, store: store, target: target,
                                   station: station, yes: yes, json: json, verbose: verbose)
    }
}

/// What `run` and `resume` share: the device or simulator, the session, the reporter, Ctrl-C.
enum SessionCommand {
    static func validateOperator(_ name: String?) throws {
        if let name, name.trimmingCharacters(in: .whitespaces).isEmpty {
            throw ValidationError("--operator needs a name (it is recorded with the session).")
        }
    }

    /// Who runs the session, for the records: `--operator`, else the machine file's `[host]
    /// operator`; on the simulator the login name will do. A session on an applicator is never
    /// recorded under a guessed name: without either, it is refused (64), nothing opened.
    static func operatorName(_ given: String?, machine: MachineConfiguration, sim: Bool) throws -> String {
        if let given { return given }
        if let configured = machine.operatorName { return configured }
        if sim { return ProcessInfo.processInfo.environment["USER"] ?? "unknown" }
        Output.err("""
            smpctl: say who runs this session: --operator NAME (recorded with the session), or set             [host] operator in \(machine.sourcePath ?? MachineConfigurationLoader.defaultPath). Nothing was             sent to the applicator.
            """)
        throw ExitCode(ExitStatus.usage)
    }

    /// Whether a session command speaks NDJSON on standard output (`--json`, or not a terminal).
    static func speaksJSON(_ json: Bool) -> Bool { json || !Output.stdoutIsTerminal }

    /// `json`: a refusal is also one `error` event on standard output (what a script reads),
    /// with every issue as `smpctl validate --json` gives it.
    static func loadPlan(_ path: String, json: Bool) throws -> Plan {
        do {
            let (plan, warnings) = try PlanLoader.load(path: path)
            for warning in warnings { Output.err("\(path): \(warning)") }
            return plan
        } catch let error {
            for issue in error.issues { Output.err("\(path): \(issue)") }
            Output.err("\(path): plan refused; nothing was sent to the applicator.")
            let status = error.isUnreadable ? ExitStatus.noInput : ExitStatus.dataError
            if json { refusedJSON(path, issues: error.issues, message: "plan refused; nothing was sent to the applicator", status) }
            throw ExitCode(status)
        }
    }

    /// The NDJSON line of a plan refused before anything was sent.
    static func refusedJSON(_ path: String, issues: [PlanIssue], message: String, _ status: Int32) {
        Output.printJSON([
            "event": "error", "message": "\(path): \(message)", "file": path, "exit_code": status,
            "errors": issues.filter(\.isError).map(Output.issueJSON),
            "warnings": issues.filter { !$0.isError }.map(Output.issueJSON),
        ])
    }

    /// The clinical timing rule (docs/plan-format.md): refused without an override, which is
    /// returned as an audit event; warnings printed.
    static func checkClinicalTiming(_ plan: Plan, planPath: String, override: String?, json: Bool) throws -> [RecordBatch.Event] {
        let issues = ClinicalTiming.check(plan, today: .today())
        for issue in issues where !issue.isError { Output.err("\(planPath): \(issue)") }
        guard let error = issues.first(where: \.isError) else { return [] }
        guard let override else {
            Output.err("\(planPath): \(error)")
            Output.err("\(planPath): session refused; nothing was sent to the applicator.")
            if json { refusedJSON(planPath, issues: issues, message: "session refused; nothing was sent to the applicator", ExitStatus.dataError) }
            throw ExitCode(ExitStatus.dataError)
        }
        Output.err("\(planPath): clinical timing overridden (\(override)): \(error.message)")
        return [RecordBatch.Event(kind: "clinical-override", detail: ["reason": override, "rule": error.message])]
    }

    /// The file the operator named with --config (`path`), which must exist and load; or, when
    /// none was named, the default file if it exists, else the built-in defaults (developer mode).
    /// A named file that is missing is never taken for "no interlocks" (exit 66).
    static func loadMachineConfiguration(_ path: String?) throws -> MachineConfiguration {
        do {
            if let path { return try MachineConfigurationLoader.load(path: path) }
            return try MachineConfigurationLoader.loadIfPresent(path: MachineConfigurationLoader.defaultPath)
        } catch let error {
            Output.err("\(error)")
            throw ExitCode(ExitStatus.of(error))
        }
    }

    static func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
    }

    static func machineID() -> String {
        if let id = try? String(contentsOfFile: "/etc/machine-id", encoding: .utf8) {
            let trimmed = id.trimmingCharacters(in: .whitespacesAndNewlines)
            if !trimmed.isEmpty { return trimmed }
        }
        return ProcessInfo.processInfo.hostName
    }

    /// `machine` is loaded by the caller before anything else (records, simulator, device).
    static func execute(plan: Plan, machine: MachineConfiguration, recording: RecordingOptions, store: RecordStore,
                        target: DeviceOptions, station stationOptions: StationOptions, yes: Bool, json: Bool,
                        verbose: Bool) throws {
        let logger = CLILogging.logger(label: "smpctl.run", verbose: verbose)
        let ndjson = json || !Output.stdoutIsTerminal
        // The station's page can confirm the preflight (its Arm, confirmed twice) in place of a terminal.
        if !yes && !Output.stdinIsTerminal && !stationOptions.station {
            Output.err("smpctl: standard input is not a terminal, so the preflight cannot be confirmed: pass --yes (or use --station).")
            throw ExitCode(ExitStatus.usage)
        }
        // Before any thread exists (the station's, the lines' watcher, the simulator's), so that
        // every thread inherits the mask: Ctrl-C, SIGTERM and SIGHUP then wait, pending, for the
        // operator console's signal sources. With only `signal(SIG_IGN)` in `install()`, one that
        // came before libdispatch had put its handler in place was dropped — with --yes the
        // session armed though the technician had pressed Ctrl-C. (Until the console is installed
        // they wait; the steps before it open files and lines, nothing that blocks for long.)
        if case .failure(let errno) = Sys.blockSignals([SIGINT, SIGTERM, SIGHUP]) {
            Output.err("smpctl: cannot route Ctrl-C to the session (pthread_sigmask: \(errno)); the session was not started.")
            throw ExitCode(ExitStatus.software)
        }
        // Before the simulator, the lines or the device: a port in use ends the run with nothing opened.
        let station = try StationHost.start(stationOptions, plan: plan, sim: target.sim, store: store,
                                            logger: CLILogging.logger(label: "smpctl.station", verbose: verbose))
        defer { station?.server.stop() }
        if let station, let id = recording.resumeSessionID, let earlier = try? SessionReport(store: store, sessionID: id) {
            station.state.markEarlier(earlier.dots.map { ($0.dotID, $0.status) })
        }
        var simulator: SimulatedApplicator?
        defer { simulator?.stop() }
        let devicePath: String
        if target.sim {
            var options = SimulatorOptions()
            options.timeScale = target.timeScale
            options.baud = target.baud
            options.seed = target.seed
            options.recordPath = target.record
            options.keepsGroundTruthInMemory = false  // only the NDJSON file (--record) is read
            if let faults = target.faults { options.faults = try FaultPlan(spec: faults) }
            do {
                simulator = try SimulatedApplicator.start(options, logger: CLILogging.logger(label: "smpctl.sim", verbose: verbose))
            } catch {
                Output.err("smpctl: could not start the simulator: \(error)")
                throw ExitCode(ExitStatus.ioError)
            }
            devicePath = simulator!.devicePath
        } else {
            devicePath = target.device!
        }

        let interlocks: Interlocks
        do {
            // With --sim and no lines configured, a simulated e-stop, pedal and contact stand in.
            let configuration = target.sim && machine.inputs.isEmpty ? machine.withSimulatedInterlockLines() : machine
            interlocks = try Interlocks.open(configuration: configuration, simulated: target.sim,
                                             logger: CLILogging.logger(label: "smpctl.interlocks", verbose: verbose))
        } catch {
            Output.err("smpctl: \(error)")
            throw ExitCode(ExitStatus.unavailable)
        }
        if machine.isDeveloperMode && !target.sim {
            Output.err("smpctl: WARNING: \(machine.sourcePath ?? "no machine configuration"): no interlock lines configured — developer mode, not for use on a person.")
        }
        switch machine.realtimePriority {
        case 0?:
            break  // ordinary scheduling, asked for
        case let priority?:
            do {
                try RealtimeScheduling.apply(priority: priority)
            } catch let failure {
                Output.err("smpctl: \(machine.sourcePath ?? "machine configuration"): \(failure)")
                Output.err("smpctl: session not started; nothing was sent to the applicator.")
                throw ExitCode(failure.errno == EPERM ? ExitStatus.permission : ExitStatus.software)
            }
        case nil where !target.sim:
            // The default on an applicator: real-time when allowed; otherwise said once, plainly.
            do {
                try RealtimeScheduling.apply(priority: MachineConfiguration.defaultRealtimePriority)
            } catch let failure {
                Output.err("smpctl: note: ordinary scheduling — \(failure.reason). If this computer gets busy "
                           + "the applicator may hold (lease expired; resumable, nothing lost). Allow SCHED_FIFO for "
                           + "group smp (/etc/security/limits.d, `@smp - rtprio 50`, the Debian package does) or "
                           + "set [host] realtime_priority = 0 to silence this.")
            }
        case nil:
            break  // the simulator shares this computer's CPUs: no real-time policy unless asked
        }
        let reporter = RunReporter(ndjson: ndjson, sim: target.sim, station: station?.state)
        if let station {
            if ndjson {
                Output.printJSON(["event": "station", "url": station.url])
            } else {
                reporter.note("Station: open \(station.url) in a browser on this computer (Hold, Resume and End there too; "
                              + "the e-stop is the hardware button).")
            }
            station.state.setInterlocks(interlocks.status())
        }
        // The simulated lines' control: the technician rehearses holds and stops from a second
        // terminal (`smpctl sim-lines`), at a terminal by default, elsewhere when asked for.
        var linesControl: SimulatedLinesControl?
        defer { linesControl?.close() }
        if let lines = interlocks.simulator, target.sim, target.interlockSocket != nil || !ndjson {
            do {
                linesControl = try SimulatedLinesControl(
                    path: target.interlockSocket ?? SimulatedLinesControl.defaultPath(), lines: lines,
                    interlocks: interlocks, replaceStale: target.interlockSocket == nil)
            } catch {
                Output.err("smpctl: \(error)")
                throw ExitCode(ExitStatus.ioError)
            }
            let socketOption = target.interlockSocket == nil ? "" : " --socket \(linesControl!.path)"
            reporter.note("Simulated interlocks: from another terminal, `smpctl sim-lines\(socketOption) pedal release` "
                          + "(or pedal press, contact lose, contact restore, estop press, estop release, status); "
                          + "control socket \(linesControl!.path)")
        }
        var options = SessionOptions()
        options.recording = recording
        options.interlocks = interlocks
        options.envelope = machine.envelope
        options.link.requestedLease = .milliseconds(machine.leaseMilliseconds)
        // A line with a byte rate bounds the window and raises the RTO floor (§6.3).
        if target.sim, let baud = target.baud { options.link.lineBytesPerSecond = baud / 10 }
        // The applicator's own holds wait for the operator like the operator's own; with nobody
        // at a terminal the console ends them held (resumable).
        options.waitForOperatorOnDeviceHold = true
        let session = Session(plan: plan, options: options, logger: logger)
        let lineFaults = try target.lineFaults.map { try HostLineFaults(spec: $0) }
        let reporterQueue = DispatchQueue(label: "smpctl.reporter")
        let operatorConsole = OperatorConsole(session: session, interlocks: interlocks, reporter: reporter,
                                              interactive: Output.stdinIsTerminal && !ndjson, station: station?.state,
                                              readsStandardInput: station == nil || Output.stdinIsTerminal)
        // Printing happens on a queue of its own: the session's queue never waits for the terminal.
        let relay = EventRelay(queue: reporterQueue) { event in
            reporter.report(event)
            operatorConsole.observe(event)
            if let station {
                switch event {
                case .interlock, .held, .resumed: station.state.setInterlocks(interlocks.status())
                default: break
                }
            }
        }
        station?.attach(operatorConsole)
        operatorConsole.install()
        defer { operatorConsole.uninstall() }
        let account: SessionAccount
        do {
            account = try session.run(
                devicePath: devicePath,
                confirm: { preflight in
                    reporterQueue.sync {}  // the preflight summary is on the screen before the question
                    // The console owns standard input: the answer can reach only this question.
                    return yes || operatorConsole.confirmArm("Arm the applicator and start \(preflight.dotCount) dots?")
                },
                onEvent: { event in
                    station?.state.observe(event)  // every event, none coalesced: the page's map misses no dot
                    relay.send(event)
                    if case .progress(let progress) = event, let lineFaults, let lines = interlocks.simulator {
                        lineFaults.fire(afterDot: progress.lastDotID, on: lines, wiring: interlocks.wiring)
                    }
                })
        } catch let error {
            reporterQueue.sync {}
            reporter.failed(error.description)
            throw ExitCode(ExitStatus.of(error))
        }
        reporterQueue.sync {}  // every event printed, the summary last
        if let station {
            station.finished(account, sim: target.sim)
            operatorConsole.uninstall()  // Ctrl-C now closes the station, nothing else
            // Told to stop (SIGTERM, SIGHUP): the process exits now; else the summary stays up.
            if !operatorConsole.wasToldToStop { station.waitForOperatorToClose(reporter: reporter, ndjson: ndjson) }
        }
        throw ExitCode(ExitStatus.of(account))
    }
}

/// What one read of the operator's input gave.
enum PromptInput: Equatable, Sendable {
    case line(String)
    /// read(2) gave 0 bytes: at a terminal, Ctrl-D on an empty line — the keyboard is still
    /// there; on a pipe or file, the end of it.
    case endOfFile
    /// read(2) failed (EIO: the terminal is gone).
    case closed
}

enum Prompt {
    /// A line from standard input read with read(2), not stdio: a thread blocked in stdio's
    /// getline holds stdin's FILE lock, and `fflush(NULL)` — which ConsoleKit's terminal calls
    /// on every redraw here (see `LiveLine`) — takes every stream's lock, so the redraw, and the
    /// session queue reporting through it, would wait for the operator to type. Text before an
    /// end of file or a failure comes as a line; the end itself with the next read.
    static func readLine() -> PromptInput {
        var bytes: [UInt8] = []
        var byte: UInt8 = 0
        while true {
            let count = read(STDIN_FILENO, &byte, 1)
            if count < 0 && errno == EINTR { continue }
            guard count == 1 else {
                if !bytes.isEmpty { return .line(String(decoding: bytes, as: UTF8.self)) }
                return count == 0 ? .endOfFile : .closed
            }
            if byte == UInt8(ascii: "\n") { return .line(String(decoding: bytes, as: UTF8.self)) }
            bytes.append(byte)
        }
    }
}
