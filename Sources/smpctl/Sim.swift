import ArgumentParser
import DeviceSim
import Dispatch
import Foundation

struct Sim: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the emulated applicator on a pseudo-terminal until SIGINT or SIGTERM.",
        discussion: """
            Prints the tty path of the emulated applicator; connect with \
            `smpctl run PLAN --device PATH`. The firmware enforces its own hardware limits \
            whatever the host sends, and appends one NDJSON line per injected dot to --record: \
            the ground truth the tests compare the host's account against.
            """)

    @Option(help: "Keep a symlink at this path to the tty while running (e.g. /tmp/smp).")
    var link: String?

    @Option(help: "Append the ground-truth record (one NDJSON line per injected dot) to this file.")
    var record: String?

    @Option(help: "Physics time scale: 1 = real time, 0 = instant, 0.02 = 50× faster.")
    var timeScale: Double = 1

    @Option(help: "Seed for the simulator's randomness (boot id, fault injection).")
    var seed: UInt64 = 1

    @Flag(name: .shortAndLong, help: "Log protocol details to stderr.")
    var verbose = false

    func validate() throws {
        guard timeScale.isFinite, timeScale >= 0 else {
            throw ValidationError("--time-scale must be a finite number ≥ 0 (got \(timeScale)).")
        }
    }

    func run() throws {
        var options = SimulatorOptions()
        options.timeScale = timeScale
        options.seed = seed
        options.recordPath = record
        options.linkPath = link
        let simulator: SimulatedApplicator
        do {
            simulator = try SimulatedApplicator.start(options, logger: CLILogging.logger(label: "smpctl.sim", verbose: verbose))
        } catch {
            FileHandle.standardError.write(Data("smpctl sim: \(error)\n".utf8))
            throw ExitCode(ExitStatus.ioError)
        }
        FileHandle.standardOutput.write(Data((simulator.devicePath + "\n").utf8))
        if let link { FileHandle.standardError.write(Data("smpctl sim: \(link) → \(simulator.devicePath)\n".utf8)) }

        let stop = DispatchSemaphore(value: 0)
        var sources: [any DispatchSourceSignal] = []
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { stop.signal() }
            source.resume()
            sources.append(source)
        }
        stop.wait()
        simulator.stop()
        sources.forEach { $0.cancel() }
    }
}
