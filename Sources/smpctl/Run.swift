import ArgumentParser
import DeviceSim
import Dispatch
import FirmwareProtocol
import Foundation
import Logging
import NeedleDriver
import SessionRunner

/// Where the session runs: a real applicator, or the built-in simulator.
struct DeviceOptions: ParsableArguments {
    @Option(help: "The applicator's tty, e.g. /dev/smp/applicator-SERIAL or /dev/ttyACM0.")
    var device: String?

    @Flag(help: "Run on the built-in simulator (its own pseudo-terminal, same driver path).")
    var sim = false

    @Option(help: "With --sim: simulator time scale (1 = real time, 0 = instant).")
    var timeScale: Double = 0.02

    @Option(help: "With --sim: append the simulator's ground-truth record (NDJSON) to this file.")
    var record: String?

    @Option(help: "With --sim: seed of the simulator.")
    var seed: UInt64 = 1

    @Option(help: "With --sim: inject faults, e.g. corrupt=0.02,drop=0.02,estop-at=120 (see `smpctl sim --help`).")
    var faults: String?

    @Option(help: ArgumentHelp(
        "With --sim: act on the host's simulated interlock lines when a dot is confirmed: estop-at=DOT, pedal-release-at=DOT, contact-loss-at=DOT, cartridge-out-at=DOT (comma-separated).",
        valueName: "spec"))
    var lineFaults: String?

    @Option(help: ArgumentHelp("The machine configuration (interlocks, envelope, lease).", valueName: "path"))
    var config: String = MachineConfigurationLoader.defaultPath

    func validate() throws {
        if sim == (device != nil) {
            throw ValidationError("Give exactly one of --device PATH or --sim.")
        }
        if !sim && (record != nil || faults != nil || lineFaults != nil) {
            throw ValidationError("--record, --faults and --line-faults apply to --sim only.")
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
            Output.err("smpctl: \(error)")
            throw ExitCode(ExitStatus.ioError)
        }
    }
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a plan on the applicator (or on the built-in simulator with --sim).",
        discussion: """
            The plan is validated first; nothing is sent to a device when it has an error. After \
            the handshake the plan is checked again against the applicator's own limits, a \
            preflight summary is shown and you are asked to confirm (--yes skips the question). \
            Every session is recorded (--db). Ctrl-C once holds the session (needle retracted, \
            queue flushed); Ctrl-C again ends it, resumable with `smpctl resume`. Exit status 0 \
            only when every dot was confirmed done by the applicator; 65 invalid plan; 69 \
            applicator unavailable or link lost; 74 records not writable; 75 held or stopped \
            before the end; 77 permission denied on the device.
            """)

    @Argument(help: "The plan file (smp-plan/1 JSON).")
    var plan: String

    @OptionGroup var target: DeviceOptions
    @OptionGroup var records: RecordsOptions

    @Option(name: .customLong("operator"), help: "Who runs the session (recorded).")
    var operatorName: String = ProcessInfo.processInfo.environment["USER"] ?? "unknown"

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
    }

    func run() throws {
        let loaded = try SessionCommand.loadPlan(plan)
        let auditAtStart = try SessionCommand.checkClinicalTiming(loaded, planPath: plan, override: overrideClinical)
        let store = try records.open()
        var recording = RecordingOptions(
            store: store, planPath: SessionCommand.absolute(plan), planSHA256: loaded.sha256 ?? "",
            operatorName: operatorName, machineID: SessionCommand.machineID())
        recording.auditAtStart = auditAtStart
        try SessionCommand.execute(plan: loaded, recording: recording, target: target, yes: yes, json: json,
                                   verbose: verbose)
    }
}

/// What `run` and `resume` share: the device or simulator, the session, the reporter, Ctrl-C.
enum SessionCommand {
    static func loadPlan(_ path: String) throws -> Plan {
        do {
            let (plan, warnings) = try PlanLoader.load(path: path)
            for warning in warnings { Output.err("\(path): \(warning)") }
            return plan
        } catch let error {
            for issue in error.issues { Output.err("\(path): \(issue)") }
            Output.err("\(path): plan refused; nothing was sent to the applicator.")
            throw ExitCode(error.isUnreadable ? ExitStatus.noInput : ExitStatus.dataError)
        }
    }

    /// The clinical timing rule (docs/plan-format.md): refused without an override, which is
    /// returned as an audit event; warnings printed.
    static func checkClinicalTiming(_ plan: Plan, planPath: String, override: String?) throws -> [RecordBatch.Event] {
        let issues = ClinicalTiming.check(plan, today: .today())
        for issue in issues where !issue.isError { Output.err("\(planPath): \(issue)") }
        guard let error = issues.first(where: \.isError) else { return [] }
        guard let override else {
            Output.err("\(planPath): \(error)")
            Output.err("\(planPath): session refused; nothing was sent to the applicator.")
            throw ExitCode(ExitStatus.dataError)
        }
        Output.err("\(planPath): clinical timing overridden (\(override)): \(error.message)")
        return [RecordBatch.Event(kind: "clinical-override", detail: ["reason": override, "rule": error.message])]
    }

    static func loadMachineConfiguration(_ path: String) throws -> MachineConfiguration {
        do {
            return try MachineConfigurationLoader.loadIfPresent(path: path)
        } catch let error {
            Output.err("\(error)")
            throw ExitCode(error.exitCode)
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

    static func execute(plan: Plan, recording: RecordingOptions, target: DeviceOptions, yes: Bool, json: Bool,
                        verbose: Bool) throws {
        let logger = CLILogging.logger(label: "smpctl.run", verbose: verbose)
        let ndjson = json || !Output.stdoutIsTerminal
        if !yes && !Output.stdinIsTerminal {
            Output.err("smpctl: standard input is not a terminal, so the preflight cannot be confirmed: pass --yes.")
            throw ExitCode(ExitStatus.usage)
        }
        var simulator: SimulatedApplicator?
        defer { simulator?.stop() }
        let devicePath: String
        if target.sim {
            var options = SimulatorOptions()
            options.timeScale = target.timeScale
            options.seed = target.seed
            options.recordPath = target.record
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

        let machine = try loadMachineConfiguration(target.config)
        let interlocks: Interlocks
        do {
            // With --sim and no lines configured, a simulated e-stop, pedal and contact stand in.
            let configuration = target.sim && machine.inputs.isEmpty ? HostLineFaults.simulatedMachine(machine) : machine
            interlocks = try Interlocks.open(configuration: configuration, simulated: target.sim,
                                             logger: CLILogging.logger(label: "smpctl.interlocks", verbose: verbose))
        } catch {
            Output.err("smpctl: \(error)")
            throw ExitCode(ExitStatus.unavailable)
        }
        if machine.isDeveloperMode && !target.sim {
            Output.err("smpctl: WARNING: \(machine.sourcePath ?? "no machine configuration"): no interlock lines configured — developer mode, not for use on a person.")
        }
        let reporter = RunReporter(ndjson: ndjson, sim: target.sim)
        var options = SessionOptions()
        options.recording = recording
        options.interlocks = interlocks
        options.envelope = machine.envelope
        options.link.requestedLease = .milliseconds(machine.leaseMilliseconds)
        let session = Session(plan: plan, options: options, logger: logger)
        let lineFaults = try target.lineFaults.map { try HostLineFaults(spec: $0) }
        let heldPrompt = HeldPrompt(interactive: Output.stdinIsTerminal && !ndjson, reporter: reporter)
        let interrupts = InterruptHandler(session: session, reporter: reporter)
        interrupts.install()
        defer { interrupts.uninstall() }
        let account: SessionAccount
        do {
            account = try session.run(
                devicePath: devicePath,
                confirm: { preflight in yes || Prompt.confirm("Arm the applicator and start \(preflight.dotCount) dots?") },
                onEvent: { event in
                    reporter.report(event)
                    if case .held = event { heldPrompt.held(session: session) }
                    if case .progress(let progress) = event, let lineFaults, let lines = interlocks.simulator {
                        lineFaults.fire(afterDot: progress.lastDotID, on: lines, configuration: interlocks.configuration)
                    }
                })
        } catch let error {
            reporter.failed(error.description)
            throw ExitCode(error.exitCode)
        }
        throw ExitCode(account.exitCode)
    }
}

/// Ctrl-C once: hold. Twice: end the session held (resumable).
final class InterruptHandler: @unchecked Sendable {
    private let session: Session
    private let reporter: RunReporter
    private var source: (any DispatchSourceSignal)?
    private var count = 0
    private let queue = DispatchQueue(label: "smpctl.signals")

    init(session: Session, reporter: RunReporter) {
        self.session = session
        self.reporter = reporter
    }

    func install() {
        signal(SIGINT, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGINT, queue: queue)
        source.setEventHandler { [self] in
            count += 1
            if count == 1 {
                reporter.note("Ctrl-C: holding — the dot in progress finishes, the needle retracts. Ctrl-C again ends the session (resumable).")
                session.requestHold()
            } else {
                reporter.note("Ctrl-C again: ending the session, needle retracted.")
                session.requestAbort(reason: "ended by the operator (Ctrl-C twice)")
            }
        }
        source.resume()
        self.source = source
    }

    func uninstall() {
        source?.cancel()
        signal(SIGINT, SIG_DFL)
    }
}

enum Prompt {
    static func confirm(_ question: String) -> Bool {
        FileHandle.standardError.write(Data("\(question) [y/N] ".utf8))
        guard let answer = readLine() else { return false }
        return ["y", "yes"].contains(answer.trimmingCharacters(in: .whitespaces).lowercased())
    }
}

/// What happens when a session is held (pedal released, contact lost, operator's Ctrl-C): at a
/// terminal the operator resumes with Enter — the interlocks allow it only when every input is
/// healthy — or ends with Ctrl-C; without one nobody can resume, so the session ends held (its
/// account exact, `smpctl resume` continues it).
final class HeldPrompt: @unchecked Sendable {  // `asking` guarded by `lock`
    private let interactive: Bool
    private let reporter: RunReporter
    private let lock = NSLock()
    private var asking = false

    init(interactive: Bool, reporter: RunReporter) {
        self.interactive = interactive
        self.reporter = reporter
    }

    func held(session: Session) {
        guard interactive else {
            session.requestEndWhenHeld(reason: "held with no operator at a terminal to resume it; continue with smpctl resume")
            return
        }
        let start = lock.withLock { () -> Bool in
            defer { asking = true }
            return !asking
        }
        guard start else { return }
        reporter.note("Press Enter to resume (every interlock must be healthy), or Ctrl-C to end the session.")
        Thread.detachNewThread { [self] in
            _ = readLine()
            lock.withLock { asking = false }
            session.requestResume()
        }
    }
}
