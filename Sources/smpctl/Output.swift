import Foundation
import SessionRunner

enum Output {
    static func err(_ line: String) {
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }

    static func printJSON(_ object: Any) {
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return }
        FileHandle.standardOutput.write(data)
        FileHandle.standardOutput.write(Data("\n".utf8))
    }

    static func issueJSON(_ issue: PlanIssue) -> [String: Any] {
        ["severity": issue.severity == .error ? "error" : "warning", "path": issue.path, "value": issue.value,
         "limit": issue.limit, "message": issue.message]
    }

    static var stdoutIsTerminal: Bool { isatty(STDOUT_FILENO) == 1 }
    static var stdinIsTerminal: Bool { isatty(STDIN_FILENO) == 1 }
}
