import NeedleDriver
import SessionRunner
import SMPMachine

/// The process exit statuses (sysexits(3)), documented in `smpctl --help` and
/// docs/operator-guide.md. The only place numbers are given to outcomes: the libraries report
/// typed errors and accounts, the CLI maps them here.
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

extension ExitStatus {
    /// What each status means, for people: the one list `smpctl --help` (so `man smpctl`),
    /// `smpctl run --help` and docs/operator-guide.md give, word for word (`HelpTests` compares).
    static let documented: [(status: Int32, meaning: String)] = [
        (ok, "success; for a session: every dot confirmed done by the applicator (after `smpctl resume "
            + "--ambiguous skip`: every dot but those the operator decided to skip)"),
        (usage, "usage error, or a resume that needs the operator's decision (--ambiguous skip or redo)"),
        (dataError, "invalid plan or design, or the clinical timing refused"),
        (noInput, "a file not readable: the plan, a --config file, or no records at --db; or one that is not a regular file (a device, a FIFO: refused before it is opened)"),
        (unavailable, "applicator unavailable or link lost, or the station's address could not be listened on (nothing was sent)"),
        (needlePowerNotOff, "the needle-power output could not be switched off at the end, whatever else "
            + "happened: it may still be on, cut the needle power by hand"),
        (ioError, "I/O error: records or output not writable (or the database deleted or replaced during a "
            + "session: it holds)"),
        (incomplete, "held or stopped before the end (resumable), or the session is running in another process"),
        (protocolError, "the applicator refused or broke the protocol"),
        (permission, "permission denied on the device, or SCHED_FIFO not permitted for [host] realtime_priority"),
        (config, "invalid machine configuration, or treatment records written by a newer smpctl"),
    ]

    /// `documented` as one paragraph.
    static var summary: String {
        "Exit status: " + documented.map { "\($0.status) \($0.meaning)" }.joined(separator: "; ") + "."
    }

    /// How a session ended.
    static func of(_ account: SessionAccount) -> Int32 {
        if account.needlePowerOffFailure != nil { return needlePowerNotOff }  // before anything else, whatever the outcome
        if account.recordsFailed { return ioError }
        switch account.outcome {
        case .completed: return ok
        case .needsDecision: return usage
        case .refusedPlan: return dataError
        case .linkLost: return unavailable
        case .held, .stopped, .declined: return incomplete
        }
    }

    /// The serial port could not be used.
    static func of(_ error: SerialPortError) -> Int32 {
        switch error {
        case .noSuchDevice, .busy, .disconnected: return unavailable
        case .permissionDenied: return permission
        case .io, .notATerminal, .unsupportedBaud, .closed, .settingsNotApplied: return ioError
        }
    }

    /// The device list could not be read: a service that is unavailable.
    static func of(_ error: DeviceDiscoveryError) -> Int32 { unavailable }

    /// The machine configuration file could not be read (66) or is invalid (78).
    static func of(_ error: MachineConfigurationError) -> Int32 { error.isUnreadable ? noInput : config }
}
