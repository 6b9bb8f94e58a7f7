import Dispatch
import Foundation
import SMPInterlocks
import SMPSystem

/// The simulated interlock lines of a `--sim` session, driven from outside the session's own
/// terminal: a Unix-domain socket that takes one command a line (`pedal release`, `contact lose`,
/// `estop press`, …) and answers one line (`ok: …` or `error: …`). With it a technician
/// rehearses every hold, stop and resume on the simulator, through the same event path as real
/// lines (`SimulatedGPIOBackend`), while the operator's terminal stays the operator's.
/// `smpctl sim-lines` is its client; `socat - UNIX-CONNECT:PATH` works too.
///
/// One serial queue owns the listening descriptor and every connection; each descriptor is
/// closed only in its source's cancel handler.
final class SimulatedLinesControl: @unchecked Sendable {  // mutable state touched only on `queue`
    /// One command: what it does to which role's lines.
    struct Command: Equatable {
        var role: InterlockRole
        /// The level the role's lines go to.
        var level: GPIOLevel
        /// What the answer says happened, e.g. "foot pedal released".
        var effect: String
    }

    /// The commands, by their words. The first word names the line, the second what happens.
    static let commands: [String: Command] = [
        "pedal press": Command(role: .pedal, level: .active, effect: "foot pedal pressed"),
        "pedal release": Command(role: .pedal, level: .inactive, effect: "foot pedal released"),
        "contact restore": Command(role: .contact, level: .active, effect: "skin contact made"),
        "contact lose": Command(role: .contact, level: .inactive, effect: "skin contact lost"),
        "estop press": Command(role: .estop, level: .active, effect: "e-stop pressed"),
        "estop release": Command(role: .estop, level: .inactive, effect: "e-stop released"),
        "cartridge in": Command(role: .cartridge, level: .active, effect: "cartridge inserted"),
        "cartridge out": Command(role: .cartridge, level: .inactive, effect: "cartridge removed"),
    ]

    static let usage = "commands: " + commands.keys.sorted().joined(separator: ", ") + ", status, help"

    let path: String
    private let lines: SimulatedGPIOBackend
    private let interlocks: Interlocks
    private var wiring: InterlockWiring { interlocks.wiring }
    private let queue = DispatchQueue(label: "smpctl.sim-lines")
    private var listener: (any DispatchSourceRead)?
    private var connections: [ObjectIdentifier: Connection] = [:]

    private final class Connection {
        let source: any DispatchSourceRead
        var pending: [UInt8] = []
        init(source: any DispatchSourceRead) { self.source = source }
    }

    struct OpenError: Error, CustomStringConvertible {
        var description: String
    }

    /// Listens at `path`. A socket file already there is replaced only when `replaceStale` (the
    /// default per-process path); otherwise it is an error, so two sessions never share one.
    init(path: String, lines: SimulatedGPIOBackend, interlocks: Interlocks, replaceStale: Bool) throws(OpenError) {
        self.path = path
        self.lines = lines
        self.interlocks = interlocks
        if replaceStale { _ = Sys.unlink(path) }
        let fd: CInt
        switch Sys.listenUnixSocket(path) {
        case .success(let listening): fd = listening
        case .failure(let errno):
            throw OpenError(description: "the interlock control socket \(path): \(errno)")
        }
        let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        source.setEventHandler { [weak self] in self?.acceptAll(fd) }
        source.setCancelHandler { _ = Sys.close(fd) }
        listener = source
        source.resume()
    }

    /// Stops listening, closes every connection and removes the socket file. Waits until done.
    func close() {
        queue.sync {
            listener?.cancel()
            listener = nil
            for connection in connections.values { connection.source.cancel() }
            connections = [:]
        }
        _ = Sys.unlink(path)
    }

    /// The default path for this process: in `$XDG_RUNTIME_DIR` (private to the user), else the
    /// temporary directory.
    static func defaultPath() -> String {
        let environment = ProcessInfo.processInfo.environment
        let directory = environment["XDG_RUNTIME_DIR"].flatMap { $0.isEmpty ? nil : $0 }
            ?? NSTemporaryDirectory()
        return (directory as NSString).appendingPathComponent("smpctl-sim-\(Sys.processID()).sock")
    }

    private func acceptAll(_ listening: CInt) {
        while case .success(let accepted?) = Sys.accept(listening) {
            let source = DispatchSource.makeReadSource(fileDescriptor: accepted, queue: queue)
            let connection = Connection(source: source)
            let key = ObjectIdentifier(connection)
            connections[key] = connection
            source.setEventHandler { [weak self] in self?.readCommands(accepted, key) }
            source.setCancelHandler { _ = Sys.close(accepted) }
            source.resume()
        }
    }

    private func readCommands(_ fd: CInt, _ key: ObjectIdentifier) {
        guard let connection = connections[key] else { return }
        var buffer = [UInt8](repeating: 0, count: 512)
        let result = buffer.withUnsafeMutableBytes { Sys.read(fd, into: $0) }
        switch result {
        case .success(.transferred(let count)):
            connection.pending += buffer[..<count]
            while let newline = connection.pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: connection.pending[..<newline], as: UTF8.self)
                connection.pending.removeSubrange(...newline)
                reply(fd, answer(line))
            }
            if connection.pending.count > 4096 {  // not a line protocol client: drop it
                connection.source.cancel()
                connections[key] = nil
            }
        case .success(.wouldBlock):
            return
        case .success(.endOfFile), .failure:
            connection.source.cancel()
            connections[key] = nil
        }
    }

    /// The answer to one command line; acts on the lines first.
    func answer(_ line: String) -> String {
        let words = line.lowercased().split(whereSeparator: \.isWhitespace).joined(separator: " ")
        switch words {
        case "": return ""
        case "help": return "ok: " + Self.usage
        case "status": return "ok: " + status()
        default: break
        }
        guard let command = Self.commands[words] else {
            return "error: unknown command \"\(line.trimmingCharacters(in: .whitespaces))\"; " + Self.usage
        }
        let names = wiring.inputs.filter { $0.role == command.role }.map(\.name)
        guard !names.isEmpty else {
            return "error: no \(command.role) line is configured for this session"
        }
        for name in names where !lines.set(line: name, to: command.level) {
            return "error: the simulated line \"\(name)\" could not be changed (the session is closing)"
        }
        // "ok" once the interlocks have taken the change (after their debounce), so an Enter
        // typed right after the answer meets the new state, as after a real pedal.
        let reading: GPIOInputReading = command.level == .active ? .active : .inactive
        let deadline = Sys.monotonicNanoseconds() + 2_000_000_000
        while Sys.monotonicNanoseconds() < deadline,
              interlocks.status().inputs.contains(where: { names.contains($0.name) && $0.reading != reading }) {
            Thread.sleep(forTimeInterval: 0.001)
        }
        return "ok: \(command.effect)"
    }

    /// Every simulated input and its level, e.g. "estop released, pedal pressed, contact touching".
    func status() -> String {
        wiring.inputs.map { input in
            let level = lines.level(of: input.name)
            return "\(input.name) \(input.role.describe(level == .active ? .active : .inactive))"
        }.joined(separator: ", ")
    }

    private func reply(_ fd: CInt, _ text: String) {
        guard !text.isEmpty else { return }
        // Answers are short: one write, and a client that does not read them loses them.
        let bytes = Array((text + "\n").utf8)
        _ = bytes.withUnsafeBytes { Sys.write(fd, from: $0) }
    }
}
