import ArgumentParser
import Foundation
import SessionRunner

struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a plan against the safety envelope without touching a device.",
        discussion: """
            Prints every problem with its JSON path, the value and the limit. Exit status 0 when \
            the plan is valid (warnings may be printed), 65 when it has errors, 66 when the file \
            cannot be read.
            """)

    @Argument(help: "The plan file (smp-plan/1 JSON).")
    var plan: String

    @Flag(help: "Print the result as one JSON object.")
    var json = false

    func run() throws {
        do {
            let (loaded, warnings) = try PlanLoader.load(path: plan)
            if json {
                Output.printJSON([
                    "file": plan, "valid": true, "plan_id": loaded.planID, "dots": loaded.dots.count,
                    "errors": [Any](), "warnings": warnings.map(Output.issueJSON),
                ])
            } else {
                for warning in warnings { Output.err("\(plan): \(warning)") }
                print("\(plan): valid — plan \(loaded.planID), \(loaded.dots.count) dots")
            }
        } catch let error {
            let errors = error.issues.filter { $0.severity == .error }
            let warnings = error.issues.filter { $0.severity == .warning }
            if json {
                Output.printJSON([
                    "file": plan, "valid": false, "errors": errors.map(Output.issueJSON),
                    "warnings": warnings.map(Output.issueJSON),
                ])
            } else {
                for issue in error.issues { Output.err("\(plan): \(issue)") }
                Output.err("\(plan): \(errors.count) error(s); nothing was sent to any device.")
            }
            throw ExitCode(error.isUnreadable ? ExitStatus.noInput : ExitStatus.dataError)
        }
    }
}
