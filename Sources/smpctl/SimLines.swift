import ArgumentParser
import Foundation
import SMPSystem

/// The client of `SimulatedLinesControl`: one command to a running `--sim` session's simulated
/// interlock lines, its answer printed.
struct SimLines: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sim-lines",
        abstract: "Press or release the simulated interlocks of a running `smpctl run --sim` (rehearse holds and stops).",
        discussion: """
            A session on the simulator (`smpctl run PLAN --sim`, `smpctl resume ID --sim`) at a \
            terminal prints the path of its interlock control socket. From a second terminal: \
            `smpctl sim-lines pedal release` holds the session as a lifted foot would, `pedal \
            press` makes resuming possible again (Enter in the session's terminal); `contact \
            lose` / `contact restore` the same for skin contact; `estop press` stops it (needle \
            power off, the session ends, resumable once `estop release`d); `cartridge out` / \
            `cartridge in` where a cartridge line is configured; `status` shows every line. \
            Exit status 0 done; 64 unknown command; 69 no running session found or the line \
            could not be changed.
            """)

    @Option(help: ArgumentHelp("The session's control socket (default: the only one running for this user).",
                               valueName: "path"))
    var socket: String?

    @Argument(help: ArgumentHelp("The line and what happens to it, e.g. `pedal release`, or `status`.",
                                 valueName: "command"))
    var words: [String]

    func validate() throws {
        if words.isEmpty { throw ValidationError("Say what to do, e.g. `smpctl sim-lines pedal release`. " + SimulatedLinesControl.usage) }
    }

    func run() throws {
        let path = try socket ?? Self.onlyRunningSocket()
        let fd: CInt
        switch Sys.connectUnixSocket(path) {
        case .success(let connected): fd = connected
        case .failure(let errno):
            Output.err("smpctl sim-lines: cannot reach \(path): \(errno). Is `smpctl run --sim` still running?")
            throw ExitCode(ExitStatus.unavailable)
        }
        defer { _ = Sys.close(fd) }
        let request = Array((words.joined(separator: " ") + "\n").utf8)
        _ = request.withUnsafeBytes { Sys.write(fd, from: $0) }
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 512)
        reading: while !answer.contains(UInt8(ascii: "\n")) {
            switch buffer.withUnsafeMutableBytes({ Sys.read(fd, into: $0) }) {
            case .success(.transferred(let count)): answer += buffer[..<count]
            case .success(.wouldBlock): continue
            case .success(.endOfFile), .failure: break reading
            }
        }
        let text = String(decoding: answer, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if text.hasPrefix("ok: ") {
            print(text.dropFirst(4))
            return
        }
        Output.err("smpctl sim-lines: \(text.hasPrefix("error: ") ? String(text.dropFirst(7)) : "no answer from \(path)")")
        throw ExitCode(text.contains("unknown command") ? ExitStatus.usage : ExitStatus.unavailable)
    }

    /// The control socket of the one simulated session this user runs now.
    static func onlyRunningSocket() throws -> String {
        let example = SimulatedLinesControl.defaultPath()
        let directory = (example as NSString).deletingLastPathComponent
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
            .filter { $0.hasPrefix("smpctl-sim-") && $0.hasSuffix(".sock") }
            .filter { name in
                // Left by a session that did not close it: its process is gone.
                let pid = name.dropFirst("smpctl-sim-".count).dropLast(".sock".count)
                return FileManager.default.fileExists(atPath: "/proc/\(pid)")
            }
            .sorted()
        guard names.count == 1 else {
            Output.err(names.isEmpty
                       ? "smpctl sim-lines: no simulated session is running (no control socket in \(directory)); start one with `smpctl run PLAN --sim`."
                       : "smpctl sim-lines: several simulated sessions are running; name one with --socket: "
                         + names.map { (directory as NSString).appendingPathComponent($0) }.joined(separator: ", "))
            throw ExitCode(ExitStatus.unavailable)
        }
        return (directory as NSString).appendingPathComponent(names[0])
    }
}
