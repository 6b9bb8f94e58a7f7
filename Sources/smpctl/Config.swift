import ArgumentParser
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

struct Config: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Work with the machine configuration.", subcommands: [Check.self])

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate the machine configuration; print it and the effective envelope.",
            discussion: """
                Every field is checked; a bad one is named with its key, value and limit (exit 78, \
                EX_CONFIG; 66 when the file cannot be read). A file named with --config must exist; \
                only without --config may /etc/smpctl/machine.toml be absent, meaning the built-in \
                defaults (developer mode, no interlocks). With --device the applicator is asked for \
                its limits and the effective envelope (configuration ∩ device) is printed.
                """)

        @Option(help: ArgumentHelp(
            "The machine configuration; it must exist (default: /etc/smpctl/machine.toml, built-in defaults when absent).",
            valueName: "path"))
        var config: String?

        @Option(help: "Also ask this applicator for its hardware limits.")
        var device: String?

        func run() throws {
            let machine = try SessionCommand.loadMachineConfiguration(config)
            var hello: HelloReply?
            if let device { hello = try Handshake.run(device) }
            print(machine.describe(deviceLimits: hello?.limits))
        }
    }
}

/// One handshake with an applicator, then the port is closed (the device holds by its lease).
enum Handshake {
    static func run(_ path: String) throws -> HelloReply {
        let queue = DispatchQueue(label: "smpctl.handshake")
        let port: SerialPort
        do {
            port = try SerialPort.open(path: path, queue: queue)
        } catch let error {
            Output.err("smpctl: \(error)")
            throw ExitCode(ExitStatus.of(error))
        }
        let link = ApplicatorLink(port: port, logger: CLILogging.logger(label: "smpctl.handshake", verbose: false))
        let box = HandshakeBox()
        queue.async {
            link.connect { result in
                link.close()
                box.set(result)
            }
        }
        switch box.wait() {
        case .success(let hello): return hello
        case .failure(let loss):
            Output.err("smpctl: \(path): \(loss)")
            throw ExitCode(ExitStatus.unavailable)
        }
    }
}

private final class HandshakeBox: @unchecked Sendable {  // set once, then read after the semaphore
    private let semaphore = DispatchSemaphore(value: 0)
    private var result: Result<HelloReply, LinkLoss>?
    func set(_ value: Result<HelloReply, LinkLoss>) {
        guard result == nil else { return }
        result = value
        semaphore.signal()
    }
    func wait() -> Result<HelloReply, LinkLoss> {
        semaphore.wait()
        return result!
    }
}
