import ArgumentParser
import Dispatch
import Foundation
import Logging
import SessionRunner
import SMPPlan
import SMPRecords
import SMPRender
import SMPStation
import SMPSystem

/// `--station` and its address, for `run` and `resume`.
struct StationOptions: ParsableArguments {
    @Flag(help: ArgumentHelp(
        "Serve the technician station: this session's web console (live dot map, Hold, Resume, End), from this process. It stays up after the end, showing the summary and the report, until Ctrl-C."))
    var station = false

    @Option(help: ArgumentHelp(
        "With --station: the address to listen on (default 127.0.0.1, this computer only). Any other address needs --station-token.",
        valueName: "address"))
    var stationAddress: String?

    @Option(help: ArgumentHelp("With --station: the port (default 8470; 0 picks a free one, printed).", valueName: "port"))
    var stationPort: Int?

    @Option(help: ArgumentHelp(
        "With --station: a secret of at least 16 characters the page must present (?token=…); required off 127.0.0.1.",
        valueName: "token"))
    var stationToken: String?

    static let defaultPort = 8470

    func validate() throws {
        guard station else {
            if stationAddress != nil || stationPort != nil || stationToken != nil {
                throw ValidationError("--station-address, --station-port and --station-token apply with --station only.")
            }
            return
        }
        if let port = stationPort, !(0...65535).contains(port) {
            throw ValidationError("--station-port must be 0…65535 (got \(port)).")
        }
        if let token = stationToken, token.count < 16 {
            throw ValidationError("--station-token must be at least 16 characters (a page holding it can hold or end the session).")
        }
        if let address = stationAddress, !StationConfiguration.isLoopback(address), stationToken == nil {
            throw ValidationError("""
                --station-address \(address) would let other computers hold, resume or end this session: \
                give --station-token TOKEN as well (the page must present it), or leave the station on 127.0.0.1.
                """)
        }
    }

    var configuration: StationConfiguration {
        StationConfiguration(host: stationAddress ?? "127.0.0.1", port: stationPort ?? Self.defaultPort, token: stationToken)
    }
}

/// The station of one session run: its state (fed from the session's events), its server, and
/// the operator console its page's commands go to once there is one.
final class StationHost: Sendable {
    let state: StationState
    let server: StationServer
    let url: String
    private let console = Locked<OperatorConsole?>(nil)
    private let sessionID = Locked<Int64?>(nil)

    /// Binds before anything else is opened: a port in use ends the run (69) with nothing sent.
    static func start(_ options: StationOptions, plan: Plan, sim: Bool, store: RecordStore, logger: Logger) throws -> StationHost? {
        guard options.station else { return nil }
        let configuration = options.configuration
        let state = StationState(plan: plan, sim: sim)
        let holder = Locked<StationHost?>(nil)
        // The server's own log (a cancelled connection at the exit is "error" to it) only with -v.
        var serverLogger = logger
        if logger.logLevel > .debug { serverLogger.logLevel = .critical }
        let server = StationServer(
            state: state, configuration: configuration,
            commands: { command in holder.withLock { $0 }?.command(command) },
            report: { holder.withLock { $0 }?.reportHTML(store) },
            logger: serverLogger)
        // Before the server's threads exist, so that they inherit the mask: Ctrl-C, SIGTERM and
        // SIGHUP must reach the operator console's signal sources, not be dropped by an nio thread.
        if case .failure(let errno) = Sys.blockSignals([SIGINT, SIGTERM, SIGHUP]) {
            Output.err("smpctl: cannot route Ctrl-C past the station's threads (pthread_sigmask: \(errno)); the session was not started.")
            throw ExitCode(ExitStatus.software)
        }
        let port: Int
        do {
            port = try server.start()
        } catch {
            Output.err("smpctl: the station \(error). Choose another --station-port (0 picks a free one); "
                       + "the session was not started, nothing was sent to the applicator.")
            throw ExitCode(ExitStatus.unavailable)
        }
        let shownHost = configuration.host.contains(":") ? "[\(configuration.host)]" : configuration.host
        let token = configuration.token.map { "?token=\($0)" } ?? ""
        let host = StationHost(state: state, server: server, url: "http://\(shownHost):\(port)/\(token)")
        holder.withLock { $0 = host }
        return host
    }

    private init(state: StationState, server: StationServer, url: String) {
        self.state = state
        self.server = server
        self.url = url
    }

    func attach(_ console: OperatorConsole) { self.console.withLock { $0 = console } }

    /// A page's command, handed to the console (which answers on its own queue).
    private func command(_ command: StationCommand) {
        guard let console = console.withLock({ $0 }) else { return }
        console.stationCommand(command)
    }

    private func reportHTML(_ store: RecordStore) -> String? {
        guard let id = sessionID.withLock({ $0 }) else { return nil }
        return (try? SessionReport(store: store, sessionID: id))?.html()
    }

    /// The end: the summary on every page, the report linked.
    func finished(_ account: SessionAccount, sim: Bool) {
        sessionID.withLock { $0 = account.sessionID }
        state.finish(headline: RunReporter.headline(account), lines: RunReporter.summaryLines(account, sim: sim),
                     outcome: account.outcome.rawValue, exitStatus: ExitStatus.of(account),
                     reportAvailable: account.sessionID != nil)
        server.flush()
    }

    /// After the end the station keeps serving the summary and the report until Ctrl-C, SIGTERM
    /// or SIGHUP; the process then exits with the session's status.
    func waitForOperatorToClose(reporter: RunReporter, ndjson: Bool) {
        let done = DispatchSemaphore(value: 0)
        let queue = DispatchQueue(label: "smpctl.station.close")
        var sources: [any DispatchSourceSignal] = []
        for number in [SIGINT, SIGTERM, SIGHUP] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler { done.signal() }
            source.resume()
            sources.append(source)
        }
        reporter.note("The session has ended; the station at \(url) shows its summary and report. Ctrl-C closes it.")
        done.wait()
        for source in sources { source.cancel() }
        server.stop()
    }
}
