import ArgumentParser
import DeviceSim
import Dispatch
import Foundation
import SMPSystem

struct Sim: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the emulated applicator on a pseudo-terminal (or an existing tty) until SIGINT or SIGTERM.",
        discussion: """
            Prints the tty path of the emulated applicator; connect with \
            `smpctl run PLAN --device PATH`. The firmware enforces its own hardware limits \
            whatever the host sends, and appends one NDJSON line per injected dot to --record: \
            the ground truth the tests compare the host's account against. With --port the \
            firmware answers on an existing tty instead, such as the USB gadget side of a \
            CDC-ACM link (hil/run.sh, docs/hil.md), so the host reaches it through a real USB \
            serial device, udev rule and hot-unplug.
            """)

    @Option(help: "Keep a symlink at this path to the tty while running (e.g. /tmp/smp). Not with --port.")
    var link: String?

    @Option(help: ArgumentHelp(
        "Serve the firmware on this existing tty instead of a new pseudo-terminal (not with --link).",
        discussion: """
            For the hardware-in-the-loop rig: the device's end of a real serial link, e.g. the \
            USB gadget tty /dev/ttyGS0 whose host side is /dev/ttyACMn. Opened raw and locked; \
            when the host unplugs, the port is opened again as soon as it can be, so a host that \
            plugs in again finds the device.
            """,
        valueName: "path"))
    var port: String?

    @Option(help: "Append the ground-truth record (one NDJSON line per injected dot) to this file.")
    var record: String?

    @Option(help: "Physics time scale: 1 = real time, 0 = instant, 0.02 = 50× faster.")
    var timeScale: Double = 1

    @Option(help: ArgumentHelp(
        "Pace the wire like an 8N1 UART at this baud: bytes leave and arrive at N/10 per second each way (default: as fast as the pseudo-terminal).",
        valueName: "N"))
    var baud: Int?

    @Option(help: "Seed for fault injection: the same seed reproduces the faults. Not the boot id: every start is a new boot.")
    var seed: UInt64 = 1

    @Option(help: ArgumentHelp(
        "Device-side faults, comma-separated: corrupt=RATE, drop=RATE, duplicate=RATE, garbage=RATE, delay-ack=DURATION, stall-at=DOT:DURATION, reset-at=DOT, disconnect-at=DOT, estop-at=DOT, contact-loss-at=DOT, over-depth-at=DOT, ignore-pace-at=DOT, slow=FACTOR. estop-at and over-depth-at fire halfway through DOT's dwell (DOT cut short), contact-loss-at as DOT's travel ends (DOT not started); reset-at, disconnect-at, stall-at and ignore-pace-at when DOT's frame first arrives. Seeded by --seed. The host's own interlock lines are faulted with `smpctl run --sim --line-faults`.",
        valueName: "spec"))
    var faults: String?

    @Option(help: ArgumentHelp("A JSON scenario file with the same keys as --faults.", valueName: "path"))
    var scenario: String?

    @Flag(name: .shortAndLong, help: "Log protocol details to stderr.")
    var verbose = false

    func faultPlan() throws -> FaultPlan {
        if let scenario { return try FaultPlan.load(scenarioFile: scenario) }
        if let faults { return try FaultPlan(spec: faults) }
        return .none
    }

    func validate() throws {
        if faults != nil && scenario != nil {
            throw ValidationError("Give --faults or --scenario, not both.")
        }
        do { _ = try faultPlan() } catch { throw ValidationError("\(scenario != nil ? "--scenario" : "--faults"): \(error)") }
        if port != nil && link != nil {
            throw ValidationError("--port and --link exclude each other: --link points at a new pseudo-terminal, --port serves an existing tty.")
        }
        if let port, port.isEmpty {
            throw ValidationError("--port needs the path of a tty, e.g. /dev/ttyGS0.")
        }
        if let baud, baud < 300 || baud > 12_000_000 {
            throw ValidationError("--baud must be 300…12000000 (got \(baud)).")
        }
        guard timeScale.isFinite, timeScale >= 0 else {
            throw ValidationError("--time-scale must be a finite number ≥ 0 (got \(timeScale)).")
        }
    }

    func run() throws {
        var options = SimulatorOptions()
        options.timeScale = timeScale
        options.baud = baud
        options.seed = seed
        options.recordPath = record
        options.keepsGroundTruthInMemory = false  // only the NDJSON file (--record) is read
        options.linkPath = link
        options.portPath = port
        options.faults = try faultPlan()
        // SIGINT and SIGTERM are blocked before any thread exists (all inherit the mask) and their
        // sources made before the device path is printed: a script may signal the moment it reads
        // that line. With `signal(SIG_IGN)` instead, one that came before libdispatch had put its
        // own handler in place was dropped and the simulator ran on (the soak's power cycles, 1 in
        // 60: "the simulator did not stop on SIGINT"); blocked, it waits, pending, for the source's
        // signalfd.
        if case .failure(let errno) = Sys.blockSignals([SIGINT, SIGTERM]) {
            Output.err("smpctl sim: cannot route SIGINT and SIGTERM (pthread_sigmask: \(errno))")
            throw ExitCode(ExitStatus.software)
        }
        let stop = DispatchSemaphore(value: 0)
        var sources: [any DispatchSourceSignal] = []
        for sig in [SIGINT, SIGTERM] {
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { stop.signal() }
            source.resume()
            sources.append(source)
        }
        let simulator: SimulatedApplicator
        do {
            simulator = try SimulatedApplicator.start(options, logger: CLILogging.logger(label: "smpctl.sim", verbose: verbose))
        } catch {
            Output.err("smpctl sim: \(error)")
            throw ExitCode(ExitStatus.ioError)
        }
        Output.out(Data((simulator.devicePath + "\n").utf8))
        if let link { Output.err("smpctl sim: \(link) → \(simulator.devicePath)") }

        stop.wait()
        simulator.stop()
        sources.forEach { $0.cancel() }
        if options.faults != .none { Output.err("smpctl sim: faults injected: \(Self.faultSummary(simulator))") }
    }

    /// One JSON object, the counts of every fault that fired (link faults summed over both
    /// directions, device faults by kind): what scripts/soak.py counts as faults injected.
    static func faultSummary(_ simulator: SimulatedApplicator) -> String {
        let (toDevice, toHost) = simulator.linkFaultCounters
        var counts: [String: Int] = [
            "corrupt": toDevice.corrupted + toHost.corrupted,
            "drop": toDevice.dropped + toHost.dropped,
            "duplicate": toDevice.duplicated + toHost.duplicated,
            "garbage": toDevice.garbageBlocks + toHost.garbageBlocks,
            "delay-ack": toHost.delayedAcks,
        ]
        counts.merge(simulator.deviceFaultCounts) { $0 + $1 }
        let fields = counts.keys.sorted().map { "\"\($0)\":\(counts[$0]!)" }
        return "{" + fields.joined(separator: ",") + "}"
    }
}
