import ArgumentParser
import Foundation
import SessionRunner
import SMPPlan
import SMPPlanReader
import SMPInterlocks
import SMPRecords
import SMPMachine
import SMPRender

struct Preview: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Draw a plan to scale as an SVG picture, without touching a device.",
        discussion: """
            One colour per region with a legend of dot counts, the applicator's travel limit \
            outlined, a millimetre grid and scale bar; earlier sessions' plans named with --after \
            in grey beneath. Open the file in a web browser. The plan is \
            validated first: exit status 0 when the picture was written, 65 when the plan has \
            errors, 66 when it cannot be read, 74 when the picture cannot be written.
            """)

    @Argument(help: "The plan file (smp-plan/1 JSON).")
    var plan: String

    @Option(name: .shortAndLong, help: ArgumentHelp("Where to write the SVG picture ('-' for standard output).", valueName: "file"))
    var output: String

    @Flag(help: "Shade the picture by dot density (dots per cm²).")
    var density = false

    @Option(help: ArgumentHelp("With --density: side of a density cell, in millimetres.", valueName: "mm"))
    var densityCellMm: Double = 5

    @Flag(help: "Frame the dots only, instead of the applicator's whole travel.")
    var fitPlan = false

    @Option(help: ArgumentHelp("An earlier session's plan, drawn in grey under this one (repeatable).", valueName: "plan"))
    var after: [String] = []

    func validate() throws {
        guard densityCellMm.isFinite, densityCellMm >= 0.1, densityCellMm <= 100 else {
            throw ValidationError("--density-cell-mm must be between 0.1 and 100 (got \(densityCellMm)).")
        }
    }

    func run() throws {
        let loaded: Plan
        do {
            let (plan, warnings) = try PlanLoader.load(path: self.plan)
            for warning in warnings { Output.err("\(self.plan): \(warning)") }
            loaded = plan
        } catch let error {
            for issue in error.issues { Output.err("\(self.plan): \(issue)") }
            Output.err("\(self.plan): plan refused; no picture was written.")
            throw ExitCode(error.isUnreadable ? ExitStatus.noInput : ExitStatus.dataError)
        }

        var options = PlanPreviewOptions()
        options.showDensity = density
        options.densityCellMicrometres = Int32((densityCellMm * 1000).rounded())
        options.framing = fitPlan ? .plan : .travel
        for path in after {
            options.earlierDots += try EarlierReference.loadPlan(path, envelope: .builtIn, role: "--after").dots
        }
        let svg = Data(PlanPreview.svg(for: loaded, options: options).utf8)

        if output == "-" {
            Output.out(svg)
            return
        }
        do {
            try svg.write(to: URL(fileURLWithPath: output), options: .atomic)
        } catch {
            Output.err("smpctl: could not write \(output): \(error.localizedDescription)")
            throw ExitCode(ExitStatus.ioError)
        }
        print("\(output): plan \(loaded.planID), \(loaded.dots.count) dots drawn. Open it in a web browser.")
    }
}
