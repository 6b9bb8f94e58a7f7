import SMPPlan
import FirmwareProtocol

/// The interlock states, in the style of LinuxCNC's `estop_latch`.
public enum InterlockState: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// Not armed: at start-up, after a link loss, or while waiting for the operator. Needle power off.
    case faulted
    /// The needle may run: every input healthy and the operator armed. Needle power on.
    case armed
    /// Controlled stop (IEC 60204-1 category 2): the dot in the skin finished, needle retracted,
    /// place kept, power on. Left only by the operator's resume with every input healthy.
    case held
    /// Latched stop (category 0): needle power off, ESTOP sent. Left only by the operator's reset
    /// once the e-stop is released; releasing the e-stop alone changes nothing.
    case estopped

    public var description: String { rawValue }

    /// Whether the needle-power output is on in this state.
    public var needlePowered: Bool { self == .armed || self == .held }
}

/// What happens to the machine: input lines (already debounced), the operator's commands (each a
/// single event: the rising edge of an action, never a level), and what the applicator link
/// reports.
public enum InterlockEvent: Sendable, Hashable {
    /// Input `index` (position in the machine's `inputs`) now reads `reading`.
    case input(index: Int, reading: GPIOInputReading)
    /// Arm from `faulted` or `estopped` (LinuxCNC's reset edge).
    case operatorReset
    /// Continue from `held`.
    case operatorResume
    /// Pause: controlled stop from `armed`.
    case operatorHold
    /// Software e-stop.
    case operatorEstop
    /// The applicator reports a latched state (its e-stop button, over-depth, refused dot, …).
    case deviceLatched(FaultCode)
    /// The applicator held on its own (lease expired, contact lost on its sensor).
    case deviceHeld(FaultCode)
    /// The link to the applicator is up (handshake done).
    case linkUp
    /// The link to the applicator is lost.
    case linkLost
    /// The needle-power output could not be driven (GPIO error): fail closed.
    case needlePowerFault
}

/// Why a transition happened, self-describing for the audit trail: the event, and for an input
/// event the line it came from.
public struct InterlockCause: Sendable, Hashable, CustomStringConvertible {
    public var event: InterlockEvent
    /// The line of an `.input` event (nil for every other event).
    public var input: InterlockMachine.Input?

    public init(_ event: InterlockEvent, input: InterlockMachine.Input? = nil) {
        self.event = event
        self.input = input
    }

    public var description: String {
        switch event {
        case .input(let index, let reading):
            guard let input else { return "input \(index) \(reading)" }
            return "\(input.role) \(PlanText.quoted(input.name)) \(input.role.describe(reading))"
        case .operatorReset: return "operator reset"
        case .operatorResume: return "operator resume"
        case .operatorHold: return "operator hold"
        case .operatorEstop: return "operator e-stop"
        case .deviceLatched(let fault): return "applicator latched: \(fault)"
        case .deviceHeld(let fault): return "applicator held: \(fault)"
        case .linkUp: return "link to the applicator up"
        case .linkLost: return "link to the applicator lost"
        case .needlePowerFault: return "the needle-power output could not be driven"
        }
    }
}

/// What the runtime must do for a transition, performed in the order of the constants below
/// (`needlePowerOff` before anything else). An option set: building it allocates nothing, which
/// matters on the e-stop path.
public struct InterlockActions: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Drive the needle-power output off. Always first.
    public static let needlePowerOff = InterlockActions(rawValue: 1 << 0)
    /// Send ESTOP to the applicator at once, out of band (a priority frame).
    public static let sendEstop = InterlockActions(rawValue: 1 << 1)
    /// Send HOLD: finish the dot in the skin, retract, keep the place.
    public static let hold = InterlockActions(rawValue: 1 << 2)
    /// Drive the needle-power output on (only ever on the operator's reset).
    public static let needlePowerOn = InterlockActions(rawValue: 1 << 3)
    /// The operator armed with every input healthy: the session may CLEAR a latch and ARM.
    public static let armDevice = InterlockActions(rawValue: 1 << 4)
    /// The operator resumed with every input healthy: the session may RESUME.
    public static let resumeDevice = InterlockActions(rawValue: 1 << 5)

    /// In execution order.
    public static let ordered: [(InterlockActions, String)] = [
        (.needlePowerOff, "needle power off"), (.sendEstop, "send ESTOP"), (.hold, "send HOLD"),
        (.needlePowerOn, "needle power on"), (.armDevice, "arm the applicator"), (.resumeDevice, "resume the applicator"),
    ]

    public var description: String {
        let names = Self.ordered.filter { contains($0.0) }.map(\.1)
        return names.isEmpty ? "none" : names.joined(separator: ", ")
    }
}

/// One step of the machine, for the audit trail. Every event gives one, even when nothing
/// changes (`from == to`, no actions): an operator's refused reset is recorded too.
public struct InterlockTransition: Sendable, Hashable, CustomStringConvertible {
    public var from: InterlockState
    public var to: InterlockState
    public var cause: InterlockCause
    public var actions: InterlockActions
    /// CLOCK_MONOTONIC nanoseconds of the event (the kernel's edge time for a line).
    public var timestampNanos: UInt64

    public init(from: InterlockState, to: InterlockState, cause: InterlockCause, actions: InterlockActions,
                timestampNanos: UInt64) {
        self.from = from
        self.to = to
        self.cause = cause
        self.actions = actions
        self.timestampNanos = timestampNanos
    }

    public var description: String {
        let change = from == to ? "stays \(to)" : "\(from) → \(to)"
        return "\(cause): \(change)" + (actions.isEmpty ? "" : "; \(actions)")
    }
}

/// The interlock state machine: a pure value (no I/O, no clock). Events with timestamps in,
/// transitions with actions out. Rules (LinuxCNC `estop_latch`, tatbot's fail-closed e-stop):
///
/// - It starts `faulted`. It becomes `armed` only on the operator's reset (an event, never a
///   level) while every configured input is healthy and the link is up.
/// - An e-stop input pressed or lost, any input line lost (it can never read healthy again: a
///   doubt), the operator's e-stop → `estopped` with [needlePowerOff, sendEstop], from any
///   state, every time. The applicator latching → `estopped`
///   with [needlePowerOff].
/// - `estopped` is left only by the operator's reset, and only when every input is healthy:
///   releasing the e-stop never restarts anything.
/// - Pedal released, contact lost, cartridge missing, the operator's hold
///   → `held` with [hold] when armed. Leaving `held` takes the operator's resume with every input
///   healthy; nothing resumes by itself. The applicator holding on its own → `held`.
/// - Link lost → `faulted` with [needlePowerOff] (from `estopped` it stays `estopped`).
/// - The needle-power output failing → `estopped` with [needlePowerOff, sendEstop].
public struct InterlockMachine: Sendable, Hashable {
    /// A configured input: its name (for the record) and role.
    public struct Input: Sendable, Hashable {
        public var name: String
        public var role: InterlockRole
        public init(name: String, role: InterlockRole) {
            self.name = name
            self.role = role
        }
    }

    /// Why the machine cannot be armed or resumed now.
    public enum Blocker: Sendable, Hashable, CustomStringConvertible {
        /// The input has not been read yet.
        case notRead(name: String, role: InterlockRole)
        /// The input reads a stop level (or is lost).
        case unhealthy(name: String, role: InterlockRole, reading: GPIOInputReading)
        case noLink

        public var description: String {
            switch self {
            case .notRead(let name, let role): "\(role) \(PlanText.quoted(name)) not read yet"
            case .unhealthy(let name, let role, let reading): "\(role) \(PlanText.quoted(name)) \(role.describe(reading))"
            case .noLink: "no link to the applicator"
            }
        }
    }

    public let inputs: [Input]
    /// Whether arming also needs `linkUp` (false only for line tests without an applicator).
    public let requiresLink: Bool
    public private(set) var state: InterlockState = .faulted
    /// The newest reading of each input; nil until read.
    public private(set) var readings: [GPIOInputReading?]
    public private(set) var linkIsUp = false

    public init(inputs: [Input], requiresLink: Bool = true) {
        self.inputs = inputs
        self.requiresLink = requiresLink
        self.readings = Array(repeating: nil, count: inputs.count)
    }

    /// Everything that keeps the operator from arming or resuming now; empty when healthy.
    public var blockers: [Blocker] {
        var result: [Blocker] = []
        for (index, input) in inputs.enumerated() {
            switch readings[index] {
            case nil: result.append(.notRead(name: input.name, role: input.role))
            case let reading?:
                if !input.role.isHealthy(reading) {
                    result.append(.unhealthy(name: input.name, role: input.role, reading: reading))
                }
            }
        }
        if requiresLink, !linkIsUp { result.append(.noLink) }
        return result
    }

    /// Every input read and healthy, and the link up (when required). Allocation-free.
    public var isHealthy: Bool {
        if requiresLink, !linkIsUp { return false }
        for index in inputs.indices {
            guard let reading = readings[index], inputs[index].role.isHealthy(reading) else { return false }
        }
        return true
    }

    /// Applies one event. Always returns the transition (possibly `from == to` with no actions).
    public mutating func handle(_ event: InterlockEvent, atNanos timestamp: UInt64) -> InterlockTransition {
        let from = state
        var cause = InterlockCause(event)
        var actions: InterlockActions = []

        switch event {
        case .input(let index, let reading):
            let input = inputs[index]
            readings[index] = reading
            cause.input = input
            if input.role == .estop || reading == .lost {
                // The e-stop pressed or lost, or any line that can no longer be read (its chip
                // removed): a doubt, so the safe state — needle power off, ESTOP — not a hold
                // that would keep the needle powered on a line that can never read healthy again.
                if reading != .inactive || input.role != .estop {
                    state = .estopped
                    actions = [.needlePowerOff, .sendEstop]
                }
            } else if !input.role.isHealthy(reading), state == .armed {
                state = .held
                actions = [.hold]
            }

        case .operatorReset:
            if (state == .faulted || state == .estopped), isHealthy {
                state = .armed
                actions = [.needlePowerOn, .armDevice]
            }

        case .operatorResume:
            if state == .held, isHealthy {
                state = .armed
                actions = [.resumeDevice]
            }

        case .operatorHold:
            if state == .armed {
                state = .held
                actions = [.hold]
            }

        case .operatorEstop:
            state = .estopped
            actions = [.needlePowerOff, .sendEstop]

        case .deviceLatched:
            state = .estopped
            actions = [.needlePowerOff]

        case .deviceHeld:
            if state == .armed { state = .held }

        case .linkUp:
            linkIsUp = true

        case .linkLost:
            linkIsUp = false
            if state != .estopped { state = .faulted }
            actions = [.needlePowerOff]

        case .needlePowerFault:
            state = .estopped
            actions = [.needlePowerOff, .sendEstop]
        }
        return InterlockTransition(from: from, to: state, cause: cause, actions: actions, timestampNanos: timestamp)
    }
}
