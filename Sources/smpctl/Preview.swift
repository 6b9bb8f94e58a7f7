import ArgumentParser
import Foundation
import SessionRunner
import SMPPlan
import SMPPlanReader
import SMPInterlocks
import SMPRecords
import SMPMachine
import SMPRender
import SMPDesign

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

    @Option(help: ArgumentHelp(
        "The smp-design/1 file the plan was designed from: its region outlines, no-go areas and hairline are drawn over the dots.",
        valueName: "design"))
    var design: String?

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
        if let design {
            options.outlines = try Self.outlines(design, designedFrom: loaded.design?.designID, command: "preview")
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

    /// The design's lines for a picture (the preview, the session report); a design other than
    /// the one the plan names is drawn, with a warning.
    static func outlines(_ path: String, designedFrom designed: String?, command: String) throws -> [PreviewOutline] {
        let design: Design
        do {
            design = try DesignLoader.load(path: path, envelope: .builtIn)
        } catch let error {
            for issue in error.issues { Output.err("\(path): \(issue)") }
            Output.err("\(path): design refused; no picture was written.")
            throw ExitCode(error.isUnreadable ? ExitStatus.noInput : ExitStatus.dataError)
        }
        if let designed, designed != design.designID {
            Output.err("smpctl \(command): warning: the plan was designed from \(PlanText.quoted(designed)), "
                       + "not from \(PlanText.quoted(design.designID)) (\(path)); its outlines are drawn all the same.")
        }
        func points(_ corners: [DesignPoint]) -> [(Double, Double)] { corners.map { ($0.xMillimetres, $0.yMillimetres) } }
        var outlines = design.regions.map { PreviewOutline(name: $0.name, kind: .region, points: points($0.polygon.corners)) }
        outlines += design.exclusions.map { PreviewOutline(name: $0.name, kind: .exclusion, points: points($0.polygon.corners)) }
        if let hairline = design.hairline {
            outlines.append(PreviewOutline(name: "hairline", kind: .hairline, points: points(hairline.polyline)))
        }
        return outlines
    }
}
