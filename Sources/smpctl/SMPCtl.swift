import ArgumentParser

/// sysexits(3) codes used by every command; documented in `smpctl --help` and the operator guide.
@main
struct SMPCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "smpctl",
        abstract: "Controller for a computer-controlled scalp-micropigmentation applicator.",
        discussion: """
            Exit status: 0 success; 64 usage error; 65 invalid plan or design; 66 file not readable; \
            69 applicator unavailable or link lost; 71 the needle power could not be switched off at \
            the end (it may still be on: cut it by hand); 74 I/O error; 75 session held or stopped \
            before the end (resumable), or running in another process; 76 applicator refused or \
            broke the protocol; 77 permission denied; 78 invalid machine configuration, or \
            treatment records written by a newer smpctl.
            """,
        version: "0.1.0",
        subcommands: [Run.self, Resume.self, Validate.self, Sessions.self, Report.self, Export.self, Config.self, Sim.self, SimLines.self, Devices.self, Probe.self, Preview.self, DesignCommand.self])
}
