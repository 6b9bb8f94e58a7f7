import ArgumentParser
import Foundation
import SessionRunner
import SMPPlan
import SMPPlanReader
import SMPInterlocks
import SMPRecords
import SMPMachine
import SMPRender

struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a plan against the safety envelope without touching a device.",
        discussion: """
            Prints every problem with its JSON path, the value and the limit, warnings apart from \
            errors. Also applies the clinical timing rule (a session less than 6 months after a \
            hair transplant is an error, 6–12 months a warning). With --against, every dot must \
            also keep the minimum spacing from every dot of the earlier sessions' plans (a course \
            layered session by session). Exit status 0 when the plan is valid (warnings may be \
            printed), 65 when it (or an earlier plan) has errors, 66 when a file cannot be read.
            """)

    @Argument(help: "The plan file (smp-plan/1 JSON).")
    var plan: String

    @Option(help: ArgumentHelp("An earlier session's plan whose dots this one must keep clear of (repeatable).",
                               valueName: "plan"))
    var against: [String] = []

    @Flag(help: "Print the result as one JSON object.")
    var json = false

    func run() throws {
        var errors: [PlanIssue] = []
        var warnings: [PlanIssue] = []
        var loaded: Plan?
        do {
            let (plan, loadWarnings) = try PlanLoader.load(path: plan)
            let clinical = ClinicalTiming.check(plan, today: .today())
            loaded = plan
            warnings = loadWarnings + clinical.filter { !$0.isError }
            errors = clinical.filter(\.isError)

        } catch let error {
            errors = error.issues.filter(\.isError)
            warnings = error.issues.filter { !$0.isError }
            if error.isUnreadable {
                if json { report(valid: false, loaded: nil, errors: errors, warnings: warnings) } else {
                    for issue in errors { Output.err("\(plan): \(issue)") }
                }
                throw ExitCode(ExitStatus.noInput)
            }
        }
        if let loaded {
            for earlierPath in against {
                let earlier = try EarlierReference.loadPlan(earlierPath, envelope: .builtIn, role: "--against")
                errors += PlanValidator.spacingIssues(loaded, against: earlier, earlierName: earlierPath, envelope: .builtIn)
                if let date = earlier.session?.date,
                   let issue = ClinicalTiming.checkSessionSpacing(loaded, previous: date, previousName: earlierPath,
                                                                  today: .today()) {
                    warnings.append(issue)
                }
            }
        }
        if json {
            report(valid: errors.isEmpty, loaded: loaded, errors: errors, warnings: warnings)
        } else {
            for issue in errors + warnings { Output.err("\(plan): \(issue)") }
            if errors.isEmpty, let loaded {
                print("\(plan): valid — plan \(loaded.planID), \(loaded.dots.count) dots")
            } else {
                Output.err("\(plan): \(errors.count) error(s); nothing was sent to any device.")
            }
        }
        if !errors.isEmpty { throw ExitCode(ExitStatus.dataError) }
    }

    private func report(valid: Bool, loaded: Plan?, errors: [PlanIssue], warnings: [PlanIssue]) {
        var object: [String: Any] = [
            "file": plan, "valid": valid, "errors": errors.map(Output.issueJSON),
            "warnings": warnings.map(Output.issueJSON),
        ]
        if let loaded {
            object["plan_id"] = loaded.planID
            object["dots"] = loaded.dots.count
        }
        Output.printJSON(object)
    }
}
