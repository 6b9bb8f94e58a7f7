import ArgumentParser
import Dispatch
import FirmwareProtocol
import Foundation
import NeedleDriver

struct Probe: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Say hello to an applicator and print what it reports, without arming it.",
        discussion: """
            Opens the port, does the protocol handshake (HELLO) and closes it again: the needle is \
            never armed. Prints the firmware, protocol version, capabilities, queue capacity, lease, \
            hardware limits, boot id and the dots done since boot. Exit status 0 on success; 69 \
            device absent, busy or not answering; 74 I/O error; 76 the device answered but the \
            handshake failed; 77 permission denied.
            """)

    @Option(help: "The applicator's tty, e.g. /dev/smp/applicator-SERIAL or /dev/ttyACM0.")
    var device: String

    @Flag(help: "Print the result as one JSON object.")
    var json = false

    @Flag(name: .shortAndLong, help: "Log protocol details to stderr.")
    var verbose = false

    func run() throws {
        let logger = CLILogging.logger(label: "smpctl.probe", verbose: verbose)
        let queue = DispatchQueue(label: "smpctl.probe")
        let port: SerialPort
        do {
            port = try SerialPort.open(path: device, queue: queue)
        } catch {
            Output.err("smpctl: \(error.description)")
            throw ExitCode(ExitStatus.of(error))
        }
        let link = ApplicatorLink(port: port, configuration: LinkConfiguration(), logger: logger)
        let outcome = ProbeOutcome()
        queue.async {
            link.connect { result in
                let received = link.metrics.framesReceived
                link.close()
                outcome.finish(result, framesReceived: received)
            }
        }
        // The link gives up by itself after its handshake attempts (2 s by default); this is a
        // safety net only.
        guard let (result, framesReceived) = outcome.wait(timeout: .now() + .seconds(15)) else {
            queue.sync { link.close() }
            Output.err("smpctl: \(device) did not finish the handshake in 15 s. Unplug and replug the applicator.")
            throw ExitCode(ExitStatus.unavailable)
        }
        switch result {
        case .success(let hello):
            if json {
                Output.printJSON(Self.json(hello, device: device))
            } else {
                print(Self.report(hello, device: device))
            }
        case .failure(let loss):
            Output.err("smpctl: \(device): \(loss.description)")
            throw ExitCode(Self.exitCode(for: loss, framesReceived: framesReceived))
        }
    }

    /// No frame at all from the device: nothing there speaks our protocol (69). A device that
    /// answered and then failed the handshake (version, capabilities) misbehaved (76).
    static func exitCode(for loss: LinkLoss, framesReceived: Int) -> Int32 {
        switch loss {
        case .disconnected(let error): ExitStatus.of(error)
        case .silent: ExitStatus.unavailable
        case .handshakeFailed: framesReceived > 0 ? ExitStatus.protocolError : ExitStatus.unavailable
        case .protocolViolation: ExitStatus.protocolError
        case .closedByHost: ExitStatus.software
        }
    }

    static func capabilityNames(_ capabilities: Capabilities) -> [String] {
        let known: [(Capabilities, String)] = [
            (.deduplication, "de-duplication"), (.epochFence, "epoch fences"), (.lease, "lease"),
            (.contactSensor, "contact sensor"), (.depthSensor, "depth sensor"), (.pace, "pace"),
        ]
        var names = known.filter { capabilities.contains($0.0) }.map(\.1)
        let unknown = capabilities.subtracting(known.reduce(Capabilities()) { $0.union($1.0) })
        if !unknown.isEmpty { names.append("unknown bits 0x\(String(unknown.rawValue, radix: 16))") }
        return names
    }

    /// Micrometres or microseconds as millimetres or milliseconds: 1500 → "1.5".
    static func milli(_ value: some BinaryInteger) -> String {
        let micro = Int64(value)
        let whole = micro / 1000, fraction = abs(micro % 1000)
        guard fraction != 0 else { return String(whole) }
        var digits = String(fraction)
        digits = String(repeating: "0", count: 3 - digits.count) + digits
        while digits.hasSuffix("0") { digits.removeLast() }
        return "\(micro < 0 && whole == 0 ? "-" : "")\(whole).\(digits)"
    }

    static func bootIDText(_ bootID: UInt32) -> String {
        let hex = String(bootID, radix: 16)
        return "0x" + String(repeating: "0", count: 8 - hex.count) + hex
    }

    static func report(_ hello: HelloReply, device: String) -> String {
        let limits = hello.limits
        let capabilities = capabilityNames(hello.capabilities)
        let rows: [(String, String)] = [
            ("firmware", hello.firmwareID.text),
            ("protocol", "\(hello.versionMajor).\(hello.versionMinor)"),
            ("capabilities", capabilities.isEmpty ? "none" : capabilities.joined(separator: ", ")),
            ("queue capacity", "\(hello.queueCapacity) dots"),
            ("lease", "\(hello.leaseMilliseconds) ms"),
            ("depth", "\(milli(limits.depthMinMicrometres))–\(milli(limits.depthMaxMicrometres)) mm"),
            ("dwell", "\(milli(limits.dwellMinMicroseconds))–\(milli(limits.dwellMaxMicroseconds)) ms"),
            ("travel", "|x| ≤ \(milli(limits.travelXMicrometres)) mm, |y| ≤ \(milli(limits.travelYMicrometres)) mm"),
            ("travel speed", "\(milli(limits.travelSpeedMicrometresPerSecond)) mm/s"),
            ("descend, retract", "\(milli(limits.descendMicroseconds)) ms, \(milli(limits.retractMicroseconds)) ms"),
            ("boot id", bootIDText(hello.bootID)),
            ("dots done since boot", hello.doneCount == 0 ? "0" : "\(hello.doneCount) (last dot id \(hello.lastDoneDotID))"),
        ]
        let width = rows.map(\.0.count).max() ?? 0
        let body = rows.map { "  \($0.0.padding(toLength: width, withPad: " ", startingAt: 0))  \($0.1)" }
        return (["Applicator at \(device) answered (not armed):"] + body).joined(separator: "\n")
    }

    static func json(_ hello: HelloReply, device: String) -> [String: Any] {
        let limits = hello.limits
        return [
            "device": device,
            "firmware_id": hello.firmwareID.text,
            "protocol_version": "\(hello.versionMajor).\(hello.versionMinor)",
            "capabilities": capabilityNames(hello.capabilities),
            "capabilities_raw": Int(hello.capabilities.rawValue),
            "queue_capacity": Int(hello.queueCapacity),
            "lease_ms": Int(hello.leaseMilliseconds),
            "depth_min_mm": Double(limits.depthMinMicrometres) / 1000,
            "depth_max_mm": Double(limits.depthMaxMicrometres) / 1000,
            "dwell_min_ms": Double(limits.dwellMinMicroseconds) / 1000,
            "dwell_max_ms": Double(limits.dwellMaxMicroseconds) / 1000,
            "travel_x_mm": Double(limits.travelXMicrometres) / 1000,
            "travel_y_mm": Double(limits.travelYMicrometres) / 1000,
            "travel_speed_mm_per_s": Double(limits.travelSpeedMicrometresPerSecond) / 1000,
            "descend_ms": Double(limits.descendMicroseconds) / 1000,
            "retract_ms": Double(limits.retractMicroseconds) / 1000,
            "boot_id": bootIDText(hello.bootID),
            "done_count": Int(hello.doneCount),
            "last_done_dot_id": Int(hello.lastDoneDotID),
        ]
    }
}

/// The handshake's result, handed from the link's queue to the waiting main thread.
private final class ProbeOutcome: @unchecked Sendable {
    private let lock = NSLock()
    private let done = DispatchSemaphore(value: 0)
    private var value: (Result<HelloReply, LinkLoss>, Int)?

    func finish(_ result: Result<HelloReply, LinkLoss>, framesReceived: Int) {
        lock.lock()
        let first = value == nil
        if first { value = (result, framesReceived) }
        lock.unlock()
        if first { done.signal() }
    }

    func wait(timeout: DispatchTime) -> (Result<HelloReply, LinkLoss>, Int)? {
        guard done.wait(timeout: timeout) == .success else { return nil }
        lock.lock()
        defer { lock.unlock() }
        return value
    }
}
