import SMPSystem
import Foundation
import SessionRunner
import SMPPlan
import SMPPlanReader
import SMPInterlocks
import SMPRecords
import SMPMachine
import SMPRender

/// Standard output and error for the CLI. Writes go through write(2), never `FileHandle.write`,
/// which traps when the other end is gone (EPIPE from a closed pipe, EIO from a hung-up
/// terminal): a session must end held then, not crash with a dot in the skin.
enum Output {
    /// Called once, after the first write to standard output or error that failed, with a
    /// description; a running session sets it to end itself (nobody can follow it any more).
    static let onWriteFailure = Locked<(@Sendable (String) -> Void)?>(nil)

    static func err(_ line: String) {
        write(STDERR_FILENO, Data((line + "\n").utf8))
    }

    static func out(_ data: Data) {
        write(STDOUT_FILENO, data)
    }

    static func printJSON(_ object: Any) {
        guard var data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return }
        data.append(UInt8(ascii: "\n"))
        write(STDOUT_FILENO, data)  // one write: a line is never split between two events
    }

    /// Writes all of `data` to `fd`, retrying EINTR and short writes.
    ///
    /// The corresponding C function is `write`.
    @discardableResult
    static func write(_ fd: CInt, _ data: Data) -> Bool {
        let failure: CInt? = data.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = Glibc.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                offset += written
            }
            return nil
        }
        guard let failure else { return true }
        let stream = fd == STDOUT_FILENO ? "standard output" : fd == STDERR_FILENO ? "standard error" : "fd \(fd)"
        let text = "\(stream) failed (\(String(cString: strerror(failure))))"
        // Taken, not read: the first failure ends the session; later ones have nothing to add.
        onWriteFailure.withLock { hook in defer { hook = nil }; return hook }?(text)
        return false
    }

    static func issueJSON(_ issue: PlanIssue) -> [String: Any] {
        ["severity": issue.severity == .error ? "error" : "warning", "path": issue.path, "value": issue.value,
         "limit": issue.limit, "message": issue.message]
    }

    static var stdoutIsTerminal: Bool { isatty(STDOUT_FILENO) == 1 }
    static var stdinIsTerminal: Bool { isatty(STDIN_FILENO) == 1 }
    static var stderrIsTerminal: Bool { isatty(STDERR_FILENO) == 1 }
}
