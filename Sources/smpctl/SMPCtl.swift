import ArgumentParser

/// sysexits(3) codes used by every command; documented in `smpctl --help` and the operator guide.
enum ExitStatus {
    static let ok: Int32 = 0
    static let usage: Int32 = 64  // EX_USAGE
    static let dataError: Int32 = 65  // EX_DATAERR: the plan or configuration is invalid
    static let noInput: Int32 = 66  // EX_NOINPUT: a file could not be read
    static let unavailable: Int32 = 69  // EX_UNAVAILABLE: device absent, busy or link lost
    static let software: Int32 = 70  // EX_SOFTWARE
    static let needlePowerNotOff: Int32 = 71  // EX_OSERR: needle power could not be switched off at the end
    static let ioError: Int32 = 74  // EX_IOERR
    static let incomplete: Int32 = 75  // EX_TEMPFAIL: session held or stopped before the end, or running elsewhere
    static let protocolError: Int32 = 76  // EX_PROTOCOL: the device refused or misbehaved
    static let permission: Int32 = 77  // EX_NOPERM
    static let config: Int32 = 78  // EX_CONFIG: invalid machine configuration; records from a newer smpctl
}

@main
struct SMPCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "smpctl",
        abstract: "Controller for a computer-controlled scalp-micropigmentation applicator.",
        discussion: """
            Exit status: 0 success; 64 usage error; 65 invalid plan; 66 file not readable; \
            69 applicator unavailable or link lost; 71 the needle power could not be switched off at \
            the end (it may still be on: cut it by hand); 74 I/O error; 75 session held or stopped \
            before the end (resumable), or running in another process; 76 applicator refused or \
            broke the protocol; 77 permission denied; 78 invalid machine configuration, or \
            treatment records written by a newer smpctl.
            """,
        version: "0.1.0",
        subcommands: [Run.self, Resume.self, Validate.self, Sessions.self, Report.self, Export.self, Config.self, Sim.self, Devices.self, Probe.self, Preview.self])
}
