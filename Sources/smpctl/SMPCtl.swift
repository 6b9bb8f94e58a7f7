import ArgumentParser
import SMPSystem

/// sysexits(3) codes used by every command; documented in `smpctl --help` and the operator guide.
@main
struct SMPCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "smpctl",
        abstract: "Controller for a computer-controlled scalp-micropigmentation applicator.",
        discussion: ExitStatus.summary,
        version: "0.1.0",
        subcommands: [Run.self, Resume.self, Validate.self, Sessions.self, Report.self, Export.self, Config.self, Sim.self, SimLines.self, Devices.self, Probe.self, Preview.self, DesignCommand.self])

    static func main() {
        // One malloc arena for the process, before any thread starts: memory freed by the plan
        // load and the record's creation is reused by the session's threads, not kept beside
        // arenas of their own (issue 16, docs/performance.md "Peak memory").
        Sys.limitMallocArenas(1)
        main(nil)
    }
}
