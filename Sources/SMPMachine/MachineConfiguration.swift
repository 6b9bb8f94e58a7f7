import Dispatch
import Logging
import SMPInterlocks
import NeedleDriver
import SMPPlan
import FirmwareProtocol

/// How one machine is built: which applicator, how it may be used (an envelope that can only
/// narrow `SafetyEnvelope.builtIn`), and its interlock lines. Read by `MachineConfigurationLoader`
/// from a TOML file a person edits (default `/etc/smpctl/machine.toml`; docs/machine-config.md).
///
/// The built-in configuration (`builtIn`, used when there is no file) watches no interlock line:
/// that is simulator/developer mode, not for use on a person. See `isDeveloperMode`.
public struct MachineConfiguration: Sendable {
    /// Which serial port is the applicator.
    public var applicator: ApplicatorSelection
    /// The machine's envelope: `SafetyEnvelope.builtIn`, narrowed by the file.
    public var envelope: SafetyEnvelope
    /// The interlock inputs, in file order; there is at least one e-stop among them when there are any.
    public var inputs: [InterlockInput]
    /// The interlock outputs, in file order (at most one of each role).
    public var outputs: [InterlockOutput]
    /// Lease asked for in HELLO (firmware-protocol.md §6.5): 20–250 ms, default 100 ms.
    public var leaseMilliseconds: Int
    /// `[host] realtime_priority`: what keeps the heartbeat inside the lease on a loaded machine
    /// (docs/performance.md, underruns). 1–99: a session's process under SCHED_FIFO at that
    /// priority, required (refused when not allowed). 0: ordinary scheduling, asked for. Nil (the
    /// key absent): SCHED_FIFO at `defaultRealtimePriority` for a session on a real applicator
    /// whenever this user may use it, and otherwise ordinary scheduling, said once.
    public var realtimePriority: Int?
    /// Who runs the sessions on this machine (`[host] operator`), recorded when `--operator` is
    /// not given; nil: a session on a real applicator must name one (`--operator`).
    public var operatorName: String?
    /// The file this was read from; nil for the built-in configuration or text.
    public var sourcePath: String?

    public init(applicator: ApplicatorSelection = .match(.default), envelope: SafetyEnvelope = .builtIn,
                inputs: [InterlockInput] = [], outputs: [InterlockOutput] = [],
                leaseMilliseconds: Int = MachineConfiguration.defaultLeaseMilliseconds, realtimePriority: Int? = nil,
                sourcePath: String? = nil) {
        self.applicator = applicator
        self.envelope = envelope
        self.inputs = inputs
        self.outputs = outputs
        self.leaseMilliseconds = leaseMilliseconds
        self.realtimePriority = realtimePriority
        self.sourcePath = sourcePath
    }

    /// Lease when the file gives none.
    public static let defaultLeaseMilliseconds = 100
    /// The lease a file may ask for (the firmware grants 20–250 ms).
    public static let leaseMillisecondsRange = 20...250
    /// The SCHED_FIFO priorities Linux offers (sched_get_priority_min/max).
    public static let realtimePriorityRange = 1...99
    /// The priority a session takes without the key, when allowed: below a PREEMPT_RT kernel's
    /// interrupt threads (50), like the value docs/machine-config.md recommends.
    public static let defaultRealtimePriority = 50
    /// Debounce when an interlock gives none.
    public static let defaultDebounce = InterlockWiring.defaultDebounce
    /// Largest debounce an interlock may ask for. Debounce never delays a stop (see
    /// `GPIOInputLine.immediateLevel`), only the return to "healthy", so this bounds how sluggish
    /// the pedal may feel.
    public static let maximumDebounceMilliseconds = 100

    /// No file: the built-in envelope, the default lease, the applicator found by USB id, and NO
    /// interlock lines — simulator/developer mode.
    public static let builtIn = MachineConfiguration()

    /// True when no interlock input is configured: nothing watches an e-stop, pedal or skin
    /// contact, so the machine is only fit for the simulator and development.
    public var isDeveloperMode: Bool { interlockWiring.isDeveloperMode }

    /// The needle-power output, if configured.
    public var needlePowerOutput: InterlockOutput? { interlockWiring.needlePowerOutput }

    /// What the interlocks need of this configuration: their lines and the lease they are checked within.
    public var interlockWiring: InterlockWiring {
        InterlockWiring(inputs: inputs, outputs: outputs, leaseMilliseconds: leaseMilliseconds)
    }
}

/// How the applicator's serial port is found.
public enum ApplicatorSelection: Sendable, Hashable {
    /// A fixed device path (`[applicator] device = "/dev/…"`).
    case device(path: String)
    /// The USB serial device with these ids, found through udev (`[applicator.match]`, or the
    /// default ids when the file says nothing).
    case match(ApplicatorMatch)
}

// MARK: - Describing (`smpctl config check`)

extension MachineConfiguration {
    /// The effective configuration as text for `smpctl config check`: the source, applicator,
    /// lease, interlock lines and outputs, the configured envelope and, when the device's limits
    /// are known (after HELLO), the effective envelope: configuration ∩ device limits.
    public func describe(deviceLimits: DeviceLimits?) -> String {
        var lines: [String] = []
        lines.append("Machine configuration: " + (sourcePath ?? "built-in defaults (no file)"))

        switch applicator {
        case .device(let path):
            lines.append("Applicator: \(path)")
        case .match(let match):
            let serial = match.serial.map { " serial \(PlanText.quoted($0))" } ?? " (any serial number)"
            lines.append("Applicator: USB \(match.vendorID):\(match.productID)\(serial), found through udev")
        }
        lines.append("Lease: \(leaseMilliseconds) ms")
        switch realtimePriority {
        case 0?:
            lines.append("Scheduling: ordinary ([host] realtime_priority = 0): a loaded machine can delay the "
                         + "heartbeat past the lease, and the applicator then holds")
        case let priority?:
            lines.append("Scheduling: SCHED_FIFO priority \(priority) for sessions (smpctl run and resume), required")
        case nil:
            lines.append("Scheduling: SCHED_FIFO priority \(Self.defaultRealtimePriority) for sessions on an applicator "
                         + "when this user may use it (group smp's rtprio limit), otherwise ordinary, said at the start")
        }

        if inputs.isEmpty {
            lines.append("Interlocks: none — SIMULATOR/DEVELOPER MODE: no e-stop, pedal, skin-contact or cartridge "
                         + "line is watched. Not for use on a person.")
        } else {
            lines.append("Interlocks:")
            for input in inputs {
                lines.append("  \(Self.padded(input.role.rawValue, 10)) \(Self.padded(PlanText.quoted(input.name), 14)) "
                             + "\(input.chip) line \(input.lineOffset), active \(input.activeLow ? "low" : "high"), "
                             + "bias \(input.bias.rawValue), debounce \(Self.milliseconds(input.debounce)) ms "
                             + "(stop when \(input.role.describe(GPIOInputReading(input.role.stopLevel))))")
            }
        }
        if outputs.isEmpty {
            lines.append("Outputs: none")
        } else {
            lines.append("Outputs:")
            for output in outputs {
                lines.append("  \(Self.padded(output.role.rawValue, 12)) \(Self.padded(PlanText.quoted(output.name), 14)) "
                             + "\(output.chip) line \(output.lineOffset), active \(output.activeLow ? "low" : "high")")
            }
        }
        if !inputs.isEmpty, needlePowerOutput == nil {
            lines.append("Note: no needle-power output: an e-stop reaches the needle only through the applicator's "
                         + "firmware (ESTOP frame) and the hardware e-stop chain.")
        }

        lines.append("Envelope (configuration): " + Self.describe(envelope))
        if let deviceLimits {
            let limits = deviceLimits
            lines.append("Device limits: depth \(limits.depthMinMicrometres.milli)–\(limits.depthMaxMicrometres.milli) mm, "
                         + "dwell \(limits.dwellMinMicroseconds.milli)–\(limits.dwellMaxMicroseconds.milli) ms, "
                         + "travel ±\(limits.travelXMicrometres.milli) × ±\(limits.travelYMicrometres.milli) mm")
            let effective = envelope.intersected(with: deviceLimits)
            if let reason = effective.emptyReason {
                lines.append("Effective envelope: NONE — no dot can run: \(reason)")
            } else {
                lines.append("Effective envelope (configuration ∩ device): " + Self.describe(effective))
            }
        } else {
            lines.append("Effective envelope: the configuration's, until the applicator's limits are known "
                         + "(they are read at connection)")
        }
        return lines.joined(separator: "\n")
    }

    static func describe(_ envelope: SafetyEnvelope) -> String {
        let depth = envelope.depthMicrometres, dwell = envelope.dwellMicroseconds
        return "depth \(PlanText.milli(depth.lowerBound))–\(PlanText.milli(depth.upperBound)) mm, "
            + "dwell \(PlanText.milli(dwell.lowerBound))–\(PlanText.milli(dwell.upperBound)) ms, "
            + "travel ±\(PlanText.milli(envelope.travelXMicrometres)) × ±\(PlanText.milli(envelope.travelYMicrometres)) mm, "
            + "dots ≥ \(PlanText.milli(envelope.minimumSpacingMicrometres)) mm apart, "
            + "≤ \(PlanText.number(envelope.maximumDotsPerSecond)) dots/s"
    }

    static func milliseconds(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        return PlanText.milli(Int64(seconds) * 1_000_000 + attoseconds / 1_000_000_000_000)
    }

    private static func padded(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
    }
}

extension FixedWidthInteger {
    /// Micro-units shown in milli-units ("1.5").
    fileprivate var milli: String { PlanText.milli(Int64(clamping: self)) }
}

extension Interlocks {
    /// `open(wiring:…)` with the configuration's lines and lease.
    public static func open(
        configuration: MachineConfiguration, simulated: Bool, requiresLink: Bool = true,
        simulatedInitialLevels: [String: GPIOLevel]? = nil, queue: DispatchQueue? = nil, logger: Logger
    ) throws(GPIOError) -> Interlocks {
        try open(wiring: configuration.interlockWiring, simulated: simulated, requiresLink: requiresLink,
                 simulatedInitialLevels: simulatedInitialLevels, queue: queue, logger: logger)
    }
}

extension MachineConfiguration {
    /// This configuration with simulated interlock lines in place of its own: an e-stop, a pedal
    /// and a contact input and a needle-power output on one chip "sim" — what `smpctl run --sim`
    /// watches when the machine file names no lines, and what the benchmarks' sessions open.
    public func withSimulatedInterlockLines() -> MachineConfiguration {
        var machine = self
        machine.inputs = [
            InterlockInput(name: "estop", role: .estop, chip: "sim", lineOffset: 0, activeLow: false, bias: .asIs),
            InterlockInput(name: "pedal", role: .pedal, chip: "sim", lineOffset: 1, activeLow: false, bias: .asIs),
            InterlockInput(name: "contact", role: .contact, chip: "sim", lineOffset: 2, activeLow: false, bias: .asIs),
        ]
        machine.outputs = [InterlockOutput(name: "needle-power", role: .needlePower, chip: "sim", lineOffset: 3, activeLow: false)]
        return machine
    }
}
