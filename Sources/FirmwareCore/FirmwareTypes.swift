import FirmwareProtocol

extension DeviceLimits {
    /// The simulator's hardware envelope: depth 200–1,500 µm, dwell 20–500 ms, ±150 mm on both
    /// axes, 50 mm/s travel, 15 ms descend, 15 ms retract.
    public static let simulatorDefault = DeviceLimits(
        depthMinMicrometres: 200, depthMaxMicrometres: 1500,
        dwellMinMicroseconds: 20_000, dwellMaxMicroseconds: 500_000,
        travelXMicrometres: 150_000, travelYMicrometres: 150_000,
        travelSpeedMicrometresPerSecond: 50_000,
        descendMicroseconds: 15_000, retractMicroseconds: 15_000)
}

extension Capabilities {
    /// What the simulated applicator declares: every capability of protocol 1.2.
    public static let simulatorDefault: Capabilities = [
        .deduplication, .epochFence, .lease, .contactSensor, .depthSensor, .pace, .spacing,
    ]
}

/// Everything that makes one `Firmware` differ from another. Plain values, no I/O.
public struct FirmwareConfiguration: Sendable, Hashable {
    public var limits: DeviceLimits = .simulatorDefault
    /// The device's own minimum interval between skin entries, whatever the host asks (PACE
    /// can only lengthen it): 50 ms, the built-in envelope's 20 dots/s.
    public var minimumDotIntervalMicroseconds: UInt32 = 50_000
    /// The device's own minimum distance between a new dot and each of its recent skin entries
    /// (and the dots queued before it), whatever the host asks (SPACING can only lengthen it):
    /// 500 µm, the plan format's built-in minimum spacing. 0 turns the check off until a SPACING.
    public var minimumSpacingMicrometres: UInt32 = 500
    /// DOT frames the device queues (the executing one included); clamped to 1…64.
    public var queueCapacity: UInt8 = 32
    /// Up to 16 printable ASCII characters (a longer literal is cut to the field).
    public var firmwareID: FirmwareID = "smp-sim 1.0"
    public var capabilities: Capabilities = .simulatorDefault
    /// The minor protocol version the device speaks (HELLO_REPLY `version_minor`): a simulator
    /// configured as an older device (1.2: every ACK, every STATUS) whatever the host speaks.
    public var protocolMinor: UInt8 = ProtocolVersion.minor
    /// Wall duration of every physics phase = simulated duration × `timeScale`
    /// (1 = real time, 0.02 = 50× faster, 0 = instant). Negative or non-finite values mean 0.
    public var timeScale: Double = 1
    /// Seeds the runtime's link-fault generator. Not the boot ids: see `bootIDEntropy`.
    public var seed: UInt64 = 1
    /// Where the boot ids come from: the first is drawn from a generator seeded with this value
    /// and every reboot (`reset-at`) draws the next, never the same id twice in a row. The
    /// firmware stays deterministic given it; the simulator's runtime supplies the operating
    /// system's randomness (`SystemRandomNumberGenerator`) so that every start is a new boot
    /// whatever the seed, as the protocol requires (a boot id is never derived from
    /// configuration). Real firmware uses its hardware RNG or unique id and a boot counter.
    public var bootIDEntropy: UInt64 = 0
    /// Device faults (`reset-at`, `stall-at`, `estop-at`, `contact-loss-at`, `over-depth-at`,
    /// `disconnect-at`, `slow`) are applied by the firmware; link faults are ignored here.
    public var faults = FaultPlan()  // not `.none`: a global with a lazy initialiser costs 1.3 KB of flash on the MCU

    public init() {}
}

/// Why a dot's dwell was cut short.
public enum Interruption: Sendable, Hashable, CustomStringConvertible {
    /// ABORT from the host.
    case abort
    /// A latched shutdown: host ESTOP, the e-stop button, over-depth, a refused out-of-limits DOT.
    case shutdown(FaultCode)
    /// The device lost power / rebooted (fault injection `reset-at`).
    case reset

    /// The NDJSON `cause` value.
    public var description: String {
        switch self {
        case .abort: "host_abort"
        case .shutdown(let fault): fault.recordName
        case .reset: "reset"
        }
    }
}

/// One dot the needle entered the skin for: the simulator's ground truth.
public struct InjectedDot: Sendable, Hashable {
    public enum Outcome: String, Sendable, Hashable {
        /// The full dwell was delivered and the needle retracted (a DOT_DONE was sent).
        case done
        /// An ABORT, a latched shutdown or a reset cut the descend or the dwell short.
        case interrupted
    }

    public var dotID: UInt32
    public var seq: UInt8
    public var epoch: UInt16
    public var xMicrometres: Int32
    public var yMicrometres: Int32
    public var depthMicrometres: UInt16
    /// Commanded dwell.
    public var dwellMicroseconds: UInt32
    /// Simulated time actually spent at depth (equals the commanded dwell when done).
    public var dwellDeliveredMicroseconds: UInt64
    /// Simulated time when the needle started to descend into the skin.
    public var skinEntrySimulatedMicroseconds: UInt64
    /// Simulated time when the needle was back at standoff (or was cut off, when interrupted).
    public var simulatedTimeMicroseconds: UInt64
    /// Device wall time (µs since the simulator started) of the same moment.
    public var wallTimeMicroseconds: UInt64
    public var bootID: UInt32
    public var outcome: Outcome
    /// Interrupted dots only: why.
    public var cause: Interruption?
    /// The device's done_count after this dot (unchanged by an interrupted dot).
    public var doneCount: UInt32

    public init(dotID: UInt32, seq: UInt8, epoch: UInt16, xMicrometres: Int32, yMicrometres: Int32,
                depthMicrometres: UInt16, dwellMicroseconds: UInt32, dwellDeliveredMicroseconds: UInt64,
                skinEntrySimulatedMicroseconds: UInt64, simulatedTimeMicroseconds: UInt64,
                wallTimeMicroseconds: UInt64, bootID: UInt32, outcome: Outcome, cause: Interruption?,
                doneCount: UInt32) {
        self.dotID = dotID
        self.seq = seq
        self.epoch = epoch
        self.xMicrometres = xMicrometres
        self.yMicrometres = yMicrometres
        self.depthMicrometres = depthMicrometres
        self.dwellMicroseconds = dwellMicroseconds
        self.dwellDeliveredMicroseconds = dwellDeliveredMicroseconds
        self.skinEntrySimulatedMicroseconds = skinEntrySimulatedMicroseconds
        self.simulatedTimeMicroseconds = simulatedTimeMicroseconds
        self.wallTimeMicroseconds = wallTimeMicroseconds
        self.bootID = bootID
        self.outcome = outcome
        self.cause = cause
        self.doneCount = doneCount
    }
}

/// Device faults the firmware injects: `reset`, `disconnect`, `stall` and `ignorePace` when the
/// DOT with the planned id first arrives; `contactLoss` as that dot's travel ends (before it
/// enters the skin); `estop` and `overDepth` halfway through that dot's dwell.
public enum InjectedFault: String, Sendable, Hashable {
    case reset, disconnect, stall, estop, contactLoss = "contact-loss", overDepth = "over-depth"
    case ignorePace = "ignore-pace"
}

/// What the firmware tells its runtime besides the bytes it sends.
public enum FirmwareEvent: Sendable, Hashable {
    /// The needle left the skin: one ground-truth entry (append it to the `GroundTruthRecord`).
    case injected(InjectedDot)
    /// State or fault changed (a STATUS went out).
    case stateChanged(DeviceState, FaultCode)
    /// A received block failed its checks (NAK bad_frame went out).
    case frameDiscarded(DecodeError)
    /// A DOT of an older epoch consumed its sequence number without being queued.
    case dotFenced(seq: UInt8, dotID: UInt32)
    /// A DOT outside the hardware limits was refused (and latched a fault).
    case dotRefused(seq: UInt8, dotID: UInt32, code: ErrorCode, value: Int32)
    /// The queue ran dry while the host was streaming (see `Firmware.underruns`).
    case underrun
    /// A planned device fault fired.
    case faultInjected(InjectedFault, dotID: UInt32)
    /// RAM state lost (`reset-at`): a new boot id.
    case rebooted(bootID: UInt32)
    /// `disconnect-at`: the runtime must close the link now.
    case disconnectRequested
}

/// Result of one firmware call: frames to send, in order, and ground-truth events.
public struct FirmwareOutput: Sendable, Hashable {
    public var frames: [Frame] = []
    public var events: [FirmwareEvent] = []

    public init() {}

    public var isEmpty: Bool { frames.isEmpty && events.isEmpty }

    /// The frames as wire bytes (COBS, CRC, delimiters).
    public var bytes: [UInt8] {
        var out: [UInt8] = []
        for frame in frames { frame.encode(into: &out) }
        return out
    }

    /// The ground-truth entries among the events.
    public var injectedDots: [InjectedDot] {
        events.compactMap { if case .injected(let dot) = $0 { dot } else { nil } }
    }

    mutating func append(_ other: FirmwareOutput) {
        frames.append(contentsOf: other.frames)
        events.append(contentsOf: other.events)
    }
}

/// A thread-safe snapshot of the simulated device, for tests and the CLI.
public struct SimulatorSnapshot: Sendable, Hashable {
    public var state: DeviceState
    public var fault: FaultCode
    public var doneCount: UInt32
    public var needleRetracted: Bool
    /// See `Firmware.underruns`.
    public var underruns: Int
    public var epoch: UInt16
    /// Dots queued, the executing one included.
    public var queueDepth: Int
    public var bootID: UInt32
    /// Current dot (0 = none); in estop/fault or after ABORT the dot that was interrupted.
    public var currentDotID: UInt32
    public var estopButtonPressed: Bool
    public var skinContact: Bool
    /// Simulated (physics) time, µs.
    public var simulatedTimeMicroseconds: UInt64
    /// Blocks that failed their checks (NAK bad_frame sent).
    public var discardedBlocks: Int
    /// STATUS `pace_ms`: 0 until a PACE in this host session, then the interval in force.
    public var paceMilliseconds: UInt16

    public init(state: DeviceState, fault: FaultCode, doneCount: UInt32, needleRetracted: Bool, underruns: Int,
                epoch: UInt16, queueDepth: Int, bootID: UInt32, currentDotID: UInt32,
                estopButtonPressed: Bool, skinContact: Bool, simulatedTimeMicroseconds: UInt64,
                discardedBlocks: Int, paceMilliseconds: UInt16 = 0) {
        self.paceMilliseconds = paceMilliseconds
        self.state = state
        self.fault = fault
        self.doneCount = doneCount
        self.needleRetracted = needleRetracted
        self.underruns = underruns
        self.epoch = epoch
        self.queueDepth = queueDepth
        self.bootID = bootID
        self.currentDotID = currentDotID
        self.estopButtonPressed = estopButtonPressed
        self.skinContact = skinContact
        self.simulatedTimeMicroseconds = simulatedTimeMicroseconds
        self.discardedBlocks = discardedBlocks
    }
}

extension FaultCode {
    /// snake_case name as in firmware-protocol.md section 7 (used in the NDJSON record).
    public var recordName: String {
        switch self {
        case .none: "none"
        case .estopButton: "estop_button"
        case .hostEstop: "host_estop"
        case .contactLost: "contact_lost"
        case .overDepth: "over_depth"
        case .leaseExpired: "lease_expired"
        case .dotOutOfLimits: "dot_out_of_limits"
        case .hostHold: "host_hold"
        case .hostAbort: "host_abort"
        }
    }
}
