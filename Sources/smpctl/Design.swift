import ArgumentParser
import Foundation
import SessionRunner
import SMPDesign
import SMPPlan
import SMPPlanReader
import SMPRecords

struct DesignCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "design",
        abstract: "Design the plan of one session of a course from regions and densities.",
        discussion: """
            Reads a design (smp-design/1 JSON: regions with a final density, exclusions, a \
            hairline, the course's sessions and each one's share; docs/design-format.md) and \
            writes the smp-plan/1 plan of session --session: dots by variable-density Poisson-disk \
            sampling, never closer than the envelope's minimum spacing to each other or to any dot \
            of the earlier sessions named with --after, in a serpentine running order. --after \
            takes an earlier plan file (its planned dots) or session:ID, the dots the treatment \
            records (--db) say may be in the skin (done, interrupted, ambiguous or sent). The same \
            design, session, earlier dots and --seed give the same file, byte for byte. Prints \
            dots and density per region, the minimum spacing, the travel and the least time the \
            session takes at the envelope's dot rate. Exit status 0 written; 64 no such session in \
            the course or the records; 65 invalid design or earlier plan; 66 a file or the \
            records not readable; 74 the plan could not be written; 75 the earlier session is \
            running in another process; 78 invalid machine configuration, or records written by a \
            newer smpctl.
            """)

    @Argument(help: "The design file (smp-design/1 JSON).")
    var design: String

    @Option(help: ArgumentHelp("The session of the course to design, from 1.", valueName: "number"))
    var session: Int

    @Option(name: .shortAndLong, help: ArgumentHelp("Where to write the plan ('-' for standard output).", valueName: "file"))
    var output: String

    @Option(help: ArgumentHelp(
        "An earlier session to place around: a plan file, or session:ID from the records (repeatable).",
        valueName: "plan-or-session"))
    var after: [String] = []

    @Option(help: "Seed of the placement: the same seed gives the same plan.")
    var seed: UInt64 = 1

    @Option(help: ArgumentHelp("The session's date, written into the plan (YYYY-MM-DD).", valueName: "date"))
    var date: String?

    @Option(help: ArgumentHelp(
        "The machine configuration, for its envelope; it must exist (default: /etc/smpctl/machine.toml, built-in defaults when absent).",
        valueName: "path"))
    var config: String?

    @OptionGroup var records: RecordsOptions

    func validate() throws {
        guard session >= 1 else { throw ValidationError("--session must be 1 or more (got \(session)).") }
        for reference in after {
            if case .recordSession(nil) = EarlierReference(reference) {
                throw ValidationError("--after \(reference): give session:ID with the session's id (see `smpctl sessions`).")
            }
        }
        if let date, PlanDate(date) == nil {
            throw ValidationError("--date \(date) is not a real date written YYYY-MM-DD.")
        }
    }

    func run() throws {
        let machine = try SessionCommand.loadMachineConfiguration(config)
        let envelope = machine.envelope
        let loaded: Design
        do {
            loaded = try DesignLoader.load(path: design, envelope: envelope)
        } catch let error {
            for issue in error.issues { Output.err("\(design): \(issue)") }
            Output.err("\(design): design refused; no plan was written.")
            throw ExitCode(error.isUnreadable ? ExitStatus.noInput : ExitStatus.dataError)
        }
        guard session <= loaded.course.sessions else {
            Output.err("smpctl design: \(DesignError.sessionOutOfRange(session: session, sessions: loaded.course.sessions)).")
            throw ExitCode(ExitStatus.usage)
        }

        var earlier: [EarlierSession] = []
        for reference in after {
            let session = try EarlierReference.load(reference, envelope: envelope, records: records)
            if let designID = session.designID, designID != loaded.designID {
                Output.err("smpctl design: warning: --after \(reference) was designed from \(PlanText.quoted(designID)), "
                           + "not from this design (\(PlanText.quoted(loaded.designID))); its dots are kept clear of all the same.")
            }
            earlier.append(session.dots)
        }

        let designed: DesignedSession
        do {
            designed = try CourseDesigner.designSession(loaded, session: session, after: earlier, seed: seed,
                                                        envelope: envelope, date: date.flatMap(PlanDate.init))
        } catch let error {
            Output.err("smpctl design: \(error)")
            throw ExitCode(Self.exitStatus(error))
        }
        let text = Data(PlanFileText.text(designed).utf8)
        // The plan is checked as `validate` and `run` will read it before it is written.
        do {
            _ = try PlanLoader.load(data: text, sourceName: output, envelope: envelope)
        } catch let error {
            for issue in error.issues { Output.err("\(output): \(issue)") }
            Output.err("smpctl design: internal error: the designed plan does not load; nothing was written.")
            throw ExitCode(ExitStatus.software)
        }
        if output == "-" {
            Output.out(text)
        } else {
            do {
                try text.write(to: URL(fileURLWithPath: output), options: .atomic)
            } catch {
                Output.err("smpctl design: could not write \(output): \(error.localizedDescription)")
                throw ExitCode(ExitStatus.ioError)
            }
        }
        if !records.isMissing, after.contains(where: { $0.hasPrefix("session:") }), let store = try? records.open() {
            CourseTiming.warn(designed.plan, planPath: output,
                              previous: CourseTiming.previousSession(designed.plan.design?.after ?? [], store: store))
        }
        let summary = Self.summary(designed, earlier: earlier, envelope: envelope, output: output)
        if output == "-" { Output.err(summary) } else { print(summary) }
    }

    private static func exitStatus(_ error: DesignError) -> Int32 {
        switch error {
        case .sessionOutOfRange: ExitStatus.usage
        case .tooManyDots: ExitStatus.dataError
        case .spacingBroken: ExitStatus.software
        }
    }

    static func summary(_ designed: DesignedSession, earlier: [EarlierSession], envelope: SafetyEnvelope,
                        output: String) -> String {
        let plan = designed.plan
        let earlierCount = earlier.reduce(0) { $0 + $1.xMicrometres.count }
        var lines = ["\(output): plan \(plan.planID), session \(plan.session?.number ?? 0) of \(plan.session?.of ?? 0), "
                     + "\(plan.dots.count) dots" + (earlier.isEmpty ? "" : " around \(earlierCount) dots of \(earlier.count) earlier session\(earlier.count == 1 ? "" : "s")")]
        func cell(_ text: String, _ width: Int) -> String {
            String(repeating: " ", count: max(0, width - text.count)) + text
        }
        func number(_ value: Double) -> String { String(format: "%.1f", value) }
        let nameWidth = max(6, designed.regions.map(\.name.count).max() ?? 0)
        lines.append("  " + "region".padding(toLength: nameWidth, withPad: " ", startingAt: 0)
                     + cell("dots", 8) + cell("target", 8) + cell("cm²", 8) + cell("dots/cm²", 10)
                     + cell("in skin/cm²", 13) + cell("final/cm²", 11))
        for region in designed.regions {
            lines.append("  " + region.name.padding(toLength: nameWidth, withPad: " ", startingAt: 0)
                         + cell(String(region.dotCount), 8) + cell(String(region.targetDotCount), 8)
                         + cell(number(region.areaSquareCentimetres), 8) + cell(number(region.densityPerSquareCentimetre), 10)
                         + cell(number(region.cumulativeDensityPerSquareCentimetre), 13)
                         + cell(number(region.finalDensityPerSquareCentimetre), 11))
        }
        let spacing = designed.minimumSpacingMicrometres.map { "\(PlanText.milli($0)) mm" } ?? "–"
        lines.append("  minimum spacing \(spacing) (envelope \(PlanText.milli(envelope.minimumSpacingMicrometres)) mm); "
                     + "travel \(String(format: "%.2f", designed.travelMillimetres / 1000)) m; "
                     + "at least \(RunReporter.duration(designed.estimatedSeconds)) at "
                     + "\(PlanText.number(envelope.maximumDotsPerSecond)) dots/s")
        return lines.joined(separator: "\n")
    }
}

/// An earlier session named on the command line: a plan file, or `session:ID` in the records.
enum EarlierReference: Equatable {
    case planFile(String)
    /// Nil when the id after `session:` is not a positive number.
    case recordSession(Int64?)

    init(_ text: String) {
        if text.hasPrefix("session:") {
            let id = Int64(text.dropFirst("session:".count))
            self = .recordSession(id.flatMap { $0 > 0 ? $0 : nil })
        } else {
            self = .planFile(text)
        }
    }

    /// Statuses of recorded dots that may be in the skin: confirmed, cut short, unknown, or
    /// claimed for sending by a process that never said more.
    static let mayBeInSkin: Set<DotStatus> = [.done, .interrupted, .ambiguous, .sent]

    /// The earlier session's dots, and the design it came from when known. Exits with the
    /// command's status when the plan or the records cannot be used.
    static func load(_ text: String, envelope: SafetyEnvelope, records: RecordsOptions) throws
        -> (dots: EarlierSession, designID: String?)
    {
        switch EarlierReference(text) {
        case .planFile(let path):
            let plan = try loadPlan(path, envelope: envelope, role: "--after")
            let source = PlanDesignSource(planID: plan.planID, planSHA256: plan.sha256, dotCount: plan.dots.count)
            return (EarlierSession(source: source, xMicrometres: plan.dots.map(\.xMicrometres),
                                   yMicrometres: plan.dots.map(\.yMicrometres)), plan.design?.designID)
        case .recordSession(let id?):
            let store = try records.openExisting(command: "design")
            do {
                guard let summary = try store.session(id: id) else {
                    Output.err("smpctl design: no session \(id) in \(records.db) (see `smpctl sessions`).")
                    throw ExitCode(ExitStatus.usage)
                }
                try store.refuseIfRunningElsewhere(id)
                let dots = try store.dots(session: id).filter { mayBeInSkin.contains($0.status) }
                let source = PlanDesignSource(planID: summary.planID, planSHA256: summary.planSHA256,
                                              recordSession: id, dotCount: dots.count)
                let designID = (try? PlanLoader.load(path: summary.planPath, envelope: envelope))?.0.design?.designID
                return (EarlierSession(source: source, xMicrometres: dots.map(\.xMicrometres),
                                       yMicrometres: dots.map(\.yMicrometres)), designID)
            } catch let error as RecordStoreError {
                throw RecordsOptions.failed("smpctl design", error, consequence: """
                    its dots are not final yet, so nothing was designed around them. Try again when it has ended.
                    """)
            }
        case .recordSession(nil):
            Output.err("smpctl design: --after \(text): give session:ID with the session's id.")
            throw ExitCode(ExitStatus.usage)
        }
    }

    /// An earlier plan file, validated like any plan (65 invalid, 66 unreadable).
    static func loadPlan(_ path: String, envelope: SafetyEnvelope, role: String) throws -> Plan {
        do {
            return try PlanLoader.load(path: path, envelope: envelope).0
        } catch let error {
            for issue in error.issues where issue.isError { Output.err("\(path): \(issue)") }
            Output.err("\(path): \(role) plan refused.")
            throw ExitCode(error.isUnreadable ? ExitStatus.noInput : ExitStatus.dataError)
        }
    }
}

/// The clinical rule between sessions of a course (`ClinicalTiming.checkSessionSpacing`): the
/// previous session's date from the records or from an earlier plan, warned about, never refused.
enum CourseTiming {
    /// The latest day one of `sources` (an earlier session of the plan's course) was run, from
    /// the records: a `record_session`, else the last session recorded for its `plan_id`.
    static func previousSession(_ sources: [PlanDesignSource], store: RecordStore) -> (date: PlanDate, name: String)? {
        // A plan not designed around earlier sessions has no previous session to look up.
        guard !sources.isEmpty else { return nil }
        var latest: (date: PlanDate, name: String)?
        let recorded = (try? store.sessions(limit: 10_000)) ?? []
        for source in sources {
            let sessions = source.recordSession.map { id in recorded.filter { $0.id == id } }
                ?? recorded.filter { $0.planID == source.planID }
            for session in sessions {
                guard let date = PlanDate(String(session.startedAt.prefix(10))) else { continue }
                if latest.map({ date > $0.date }) ?? true { latest = (date, "records session \(session.id), plan \(session.planID)") }
            }
        }
        return latest
    }

    /// Prints the warning for `plan` when its session is too soon after `previous`.
    static func warn(_ plan: Plan, planPath: String, previous: (date: PlanDate, name: String)?) {
        guard let previous,
              let issue = ClinicalTiming.checkSessionSpacing(plan, previous: previous.date, previousName: previous.name,
                                                             today: .today()) else { return }
        Output.err("\(planPath): \(issue)")
    }
}
