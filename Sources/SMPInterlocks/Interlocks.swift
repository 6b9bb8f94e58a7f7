import Dispatch
import FirmwareProtocol
import Logging
import SMPSystem

/// What the session gives the interlocks: how to act on the applicator. Every closure is called on
/// the interlock queue, in the order of `InterlockActions`, AFTER the needle-power output has been
/// driven off (when the transition says so); keep them short and never block in them.
public struct InterlockHandlers: Sendable {
    /// Latency-critical: write ESTOP to the applicator now. Called directly on the interlock queue,
    /// in the same handler that read the e-stop edge (see `Interlocks`), so it must write the
    /// frame itself (for example a prepared frame to a descriptor it may use from that queue), not
    /// hop to another queue first. The cause is `.hostEstop`.
    public var onEstop: @Sendable (FaultCode) -> Void
    /// Send HOLD: finish the dot in the skin, retract, keep the place.
    public var onHold: @Sendable (InterlockCause) -> Void
    /// The operator armed with every input healthy: CLEAR a latch if there is one, then ARM.
    public var onArm: @Sendable () -> Void
    /// The operator resumed with every input healthy: RESUME.
    public var onResume: @Sendable () -> Void
    /// Every transition, after its actions (for the audit trail and the display).
    public var onTransition: @Sendable (InterlockTransition) -> Void

    public init(
        onEstop: @escaping @Sendable (FaultCode) -> Void,
        onHold: @escaping @Sendable (InterlockCause) -> Void = { _ in },
        onArm: @escaping @Sendable () -> Void = {},
        onResume: @escaping @Sendable () -> Void = {},
        onTransition: @escaping @Sendable (InterlockTransition) -> Void = { _ in }
    ) {
        self.onEstop = onEstop
        self.onHold = onHold
        self.onArm = onArm
        self.onResume = onResume
        self.onTransition = onTransition
    }
}

/// The needle-power output could not be switched off when the interlock lines were released at
/// the end of a session: the line may still be on (most chips keep a released line's last level).
/// A session that ends with this is never a success (exit status 71), and the operator is told to
/// cut the needle power by hand.
public struct NeedlePowerOffFailure: Error, Sendable, Hashable, CustomStringConvertible {
    /// The output's name in the machine configuration.
    public var output: String
    public var chip: String
    public var lineOffset: UInt32
    public var error: GPIOError

    public init(output: String, chip: String, lineOffset: UInt32, error: GPIOError) {
        self.output = output
        self.chip = chip
        self.lineOffset = lineOffset
        self.error = error
    }

    /// What the operator must do, in one sentence.
    public static let instruction = "CUT THE NEEDLE POWER BY HAND NOW (the needle driver's power switch) "
        + "and keep the applicator away from the skin until it is off."

    /// Plain words for stderr, the summary and the record.
    public var description: String {
        "NEEDLE POWER MAY STILL BE ON: the needle-power output \"\(output)\" (\(chip) line \(lineOffset)) "
            + "could not be switched off when the session ended (\(error)). \(Self.instruction)"
    }
}

/// A snapshot of the interlocks, for display.
public struct InterlockStatus: Sendable, Hashable {
    public struct Input: Sendable, Hashable {
        public var name: String
        public var role: InterlockRole
        /// nil until read.
        public var reading: GPIOInputReading?
    }
    public var state: InterlockState
    public var inputs: [Input]
    /// Why arming or resuming would be refused now; empty when it would be accepted.
    public var blockers: [InterlockMachine.Blocker]
    public var linkIsUp: Bool
    /// The level the needle-power output was last driven to; nil when there is none.
    public var needlePower: GPIOLevel?
    /// Set once driving the needle-power output has failed.
    public var needlePowerFailed: Bool
}

/// The interlock runtime: a line backend and the `InterlockMachine` on ONE serial queue (the
/// backend's), turning debounced line changes, operator commands and link events into
/// transitions and performing their actions.
///
/// The e-stop path (the latency-critical one), all on `queue`, no allocation, no thread hop:
///   kernel edge → the backend's watcher thread wakes in `poll` and enters `queue` (a sync block
///   runs on that same thread) → records read into a preallocated
///   buffer → `LineDebouncer.edge` (an edge to the stop level is never delayed) → `lineChanged`
///   → `InterlockMachine.handle` (a switch on value types) → `perform`: the needle-power output
///   driven off (one ioctl through the shim) → `handlers.onEstop(.hostEstop)` (the session writes
///   ESTOP). Logging and `onTransition` come only after that.
///
/// Operator commands and link events may be given from any thread: they are stamped with
/// CLOCK_MONOTONIC at the call and handled on `queue` (one async hop).
///
/// `@unchecked Sendable`: the mutable state is touched only on `queue`.
public final class Interlocks: @unchecked Sendable {
    /// The serial queue of the interlocks and their line backend.
    public let queue: DispatchQueue
    public let wiring: InterlockWiring
    public let backend: any InterlockLineBackend
    private let logger: Logger
    private var machine: InterlockMachine
    private var handlers: InterlockHandlers?
    /// `handlers.onEstop`, kept apart so the e-stop path reads one closure, not the whole struct.
    private var onEstop: (@Sendable (FaultCode) -> Void)?
    private let needlePowerIndex: Int?
    private let lampIndex: Int?
    private var needlePower: GPIOLevel?
    private var needlePowerFailed = false
    private var lamp: GPIOLevel = .inactive
    private var started = false
    private var closed = false
    /// Set (on `queue`) by the close that found the needle-power output could not be driven off.
    private var closeFailure: NeedlePowerOffFailure?
    private static let queueKey = DispatchSpecificKey<ObjectIdentifier>()

    /// The simulated backend, when this runs without hardware (tests, `--sim`).
    public var simulator: SimulatedGPIOBackend? { backend as? SimulatedGPIOBackend }

    /// The lines' health check (a read of each chip every quarter of the lease), for the link's
    /// I/O thread to carry in the passes its heartbeats cost anyway (`ApplicatorLink.carry`); it
    /// checks on its own when nobody does. Nil for a backend without one.
    package var healthCheckDuty: (any PassDuty)? {
        switch backend {
        case let simulated as SimulatedGPIOBackend: simulated.healthCheckDuty
        case let libgpiod as LibgpiodBackend: libgpiod.healthCheckDuty
        default: nil
        }
    }

    /// A runtime over an opened backend whose `inputs` and `outputs` are
    /// `wiring.gpioInputs` and `wiring.gpioOutputs`, in that order. `requiresLink`:
    /// arming needs the link up (`linkUp()`); false only to test lines without an applicator.
    public init(wiring: InterlockWiring, backend: any InterlockLineBackend, requiresLink: Bool = true,
                logger: Logger) {
        precondition(backend.inputs.map(\.name) == wiring.inputs.map(\.name)
                     && backend.outputs.map(\.name) == wiring.outputs.map(\.name),
                     "the backend's lines must be the configuration's")
        self.queue = backend.queue
        self.wiring = wiring
        self.backend = backend
        self.logger = logger
        self.machine = InterlockMachine(inputs: wiring.inputs.map { .init(name: $0.name, role: $0.role) },
                                        requiresLink: requiresLink)
        self.needlePowerIndex = wiring.outputs.firstIndex { $0.role == .needlePower }
        self.lampIndex = wiring.outputs.firstIndex { $0.role == .lamp }
        self.needlePower = needlePowerIndex == nil ? nil : .inactive
        queue.setSpecific(key: Self.queueKey, value: ObjectIdentifier(queue))
    }

    /// Opens the configured lines and builds the runtime on `queue` (default: a new serial queue
    /// at user-interactive QoS; pass the applicator link's queue to have `onEstop` run on the
    /// queue that owns the serial port, with no hop at all): real GPIO chips,
    /// or, when `simulated` (or when the configuration has no lines at all: developer mode), a
    /// `SimulatedGPIOBackend` whose inputs start at `simulatedInitialLevels` (default: every input
    /// healthy — e-stop released, pedal pressed, contact made, cartridge present). Outputs are
    /// inactive (needle power off) from the moment they are opened. Every input chip is read
    /// every `healthCheckInterval(leaseMilliseconds:)` (a third of the lease), so a chip that
    /// disappears without waking its descriptor is noticed inside the lease (`GPIOInputPipeline`).
    public static func open(
        wiring: InterlockWiring, simulated: Bool, requiresLink: Bool = true,
        simulatedInitialLevels: [String: GPIOLevel]? = nil, queue: DispatchQueue? = nil, logger: Logger
    ) throws(GPIOError) -> Interlocks {
        let queue = queue ?? DispatchQueue(label: "smpctl.interlocks", qos: .userInteractive)
        let health = healthCheckInterval(leaseMilliseconds: wiring.leaseMilliseconds)
        let backend: any InterlockLineBackend
        if simulated || (wiring.inputs.isEmpty && wiring.outputs.isEmpty) {
            let healthy = Dictionary(uniqueKeysWithValues: wiring.inputs.map {
                ($0.name, $0.role.stopLevel == .active ? GPIOLevel.inactive : .active)
            })
            backend = try SimulatedGPIOBackend(inputs: wiring.gpioInputs, outputs: wiring.gpioOutputs,
                                               initialLevels: simulatedInitialLevels ?? healthy,
                                               healthCheckInterval: health, queue: queue, logger: logger)
        } else {
            backend = try LibgpiodBackend.open(inputs: wiring.gpioInputs, outputs: wiring.gpioOutputs,
                                               healthCheckInterval: health, queue: queue, logger: logger)
        }
        return Interlocks(wiring: wiring, backend: backend, requiresLink: requiresLink, logger: logger)
    }

    /// How often the input chips are checked: a third of the applicator's lease (33.3 ms at the
    /// default 100 ms), so a chip that vanished is found, and the machine stopped, inside it. A
    /// third, as the link's paired heartbeat (§6.5) whose passes carry the check: at a quarter
    /// the check would want a wake-up of its own between two heartbeats (issue 15).
    public static func healthCheckInterval(leaseMilliseconds: Int) -> Duration {
        .microseconds(max(leaseMilliseconds, 3) * 1000 / 3)
    }

    // MARK: - Starting and stopping

    /// Starts watching the lines: each input's current level arrives first (an e-stop pressed at
    /// start-up gives `estopped` and `onEstop` at once). Any thread; call once.
    public func start(handlers: InterlockHandlers) {
        queue.async {
            precondition(!self.started, "Interlocks.start called twice")
            guard !self.closed else { return }
            self.started = true
            self.handlers = handlers
            self.onEstop = handlers.onEstop
            if self.wiring.isDeveloperMode {
                self.logger.warning("no interlock lines configured: simulator/developer mode, not for use on a person")
            }
            self.backend.start { [weak self] change in self?.lineChanged(change) }
        }
    }

    /// Needle power off, lamp off, lines released (the backend drives every output to its safe
    /// level first). `onClosed` runs on `queue` once every descriptor is closed. Any thread; does
    /// not wait. A failure to switch the needle power off is logged and kept
    /// (`needlePowerOffFailure`); a session uses `closeConfirmingNeedlePowerOff()` instead.
    public func close(onClosed: (@Sendable () -> Void)? = nil) {
        queue.async { _ = self.closeOnQueue(onClosed: onClosed) }
    }

    /// `close()`, synchronously: returns once the needle-power output has been driven off (or
    /// could not be), with the failure if it could not. From any thread, including the interlock
    /// queue; never call it from inside a handler's caller that the interlock queue waits for.
    /// Idempotent: a later call returns the first close's result.
    @discardableResult
    public func closeConfirmingNeedlePowerOff(onClosed: (@Sendable () -> Void)? = nil) -> NeedlePowerOffFailure? {
        if DispatchQueue.getSpecific(key: Self.queueKey) == ObjectIdentifier(queue) {
            return closeOnQueue(onClosed: onClosed)
        }
        return queue.sync { closeOnQueue(onClosed: onClosed) }
    }

    /// The failure of the close that could not switch the needle power off; nil before a close
    /// and when it was switched off. Any thread.
    public var needlePowerOffFailure: NeedlePowerOffFailure? {
        if DispatchQueue.getSpecific(key: Self.queueKey) == ObjectIdentifier(queue) { return closeFailure }
        return queue.sync { closeFailure }
    }

    private func closeOnQueue(onClosed: (@Sendable () -> Void)?) -> NeedlePowerOffFailure? {
        dispatchPrecondition(condition: .onQueue(queue))
        let first = !closed
        if first {
            closed = true
            handlers = nil
            onEstop = nil
        }
        let failures = backend.close(onClosed: onClosed)
        guard first else { return closeFailure }
        if let index = needlePowerIndex, let failure = failures.first(where: { $0.output == index }) {
            needlePowerFailed = true
            let output = wiring.outputs[index]
            closeFailure = NeedlePowerOffFailure(output: output.name, chip: output.chip, lineOffset: output.lineOffset,
                                                 error: failure.error)
            logger.critical("\(closeFailure!)")
        } else {
            needlePower = needlePowerIndex == nil ? nil : .inactive
        }
        return closeFailure
    }

    // MARK: - Operator and link (any thread)

    /// The operator's reset/arm: a single action (a key, a button press), never a held level.
    public func operatorReset() { submit(.operatorReset) }
    /// The operator's resume after a hold.
    public func operatorResume() { submit(.operatorResume) }
    /// The operator's pause.
    public func operatorHold() { submit(.operatorHold) }
    /// A software e-stop (from the keyboard, a second Ctrl-C, …).
    public func operatorEstop() { submit(.operatorEstop) }
    /// The handshake with the applicator succeeded.
    public func linkUp() { submit(.linkUp) }
    /// The link to the applicator is lost.
    public func linkLost() { submit(.linkLost) }
    /// The applicator reported a latched state (STATUS estop/fault, REFUSED while latched).
    public func deviceLatched(_ fault: FaultCode) { submit(.deviceLatched(fault)) }
    /// The applicator held on its own (lease expired, contact lost on its own sensor).
    public func deviceHeld(_ fault: FaultCode) { submit(.deviceHeld(fault)) }

    /// Any event, stamped now and handled on `queue`. Any thread.
    public func submit(_ event: InterlockEvent) {
        let time = MonotonicClock.nowNanoseconds()
        queue.async { self.handle(event, atNanos: time) }
    }

    /// Handles an event synchronously. Call on `queue` (e.g. from a handler).
    public func handle(_ event: InterlockEvent, atNanos time: UInt64) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard started, !closed else { return }
        perform(machine.handle(event, atNanos: time))
    }

    /// A snapshot. From any thread, including the interlock queue (inside a handler).
    public func status() -> InterlockStatus {
        if DispatchQueue.getSpecific(key: Self.queueKey) == ObjectIdentifier(queue) { return statusOnQueue() }
        return queue.sync { statusOnQueue() }
    }

    private func statusOnQueue() -> InterlockStatus {
        InterlockStatus(
            state: machine.state,
            inputs: machine.inputs.indices.map {
                .init(name: machine.inputs[$0].name, role: machine.inputs[$0].role, reading: machine.readings[$0])
            },
            blockers: machine.blockers, linkIsUp: machine.linkIsUp, needlePower: needlePower,
            needlePowerFailed: needlePowerFailed)
    }

    // MARK: - The event path

    private func lineChanged(_ change: GPIOInputChange) {
        guard started, !closed else { return }
        perform(machine.handle(.input(index: change.inputIndex, reading: change.reading), atNanos: change.timestampNanos))
    }

    /// Performs the actions in `InterlockActions` order: needle power off FIRST, then ESTOP, then
    /// the rest; reporting and logging last. If the needle-power output cannot be driven, the
    /// arm/resume callbacks are skipped and a `.needlePowerFault` transition (→ estopped, ESTOP
    /// sent) follows at once: the record shows both.
    private func perform(_ transition: InterlockTransition) {
        let actions = transition.actions
        var powerFault = false
        if actions.contains(.needlePowerOff) {
            powerFault = !driveNeedlePower(.inactive) && machine.state != .estopped
        }
        if actions.contains(.sendEstop) { onEstop?(.hostEstop) }
        if actions.contains(.hold) { handlers?.onHold(transition.cause) }
        if actions.contains(.needlePowerOn) {
            powerFault = !driveNeedlePower(.active)
        }
        if !powerFault {
            if actions.contains(.armDevice) { handlers?.onArm() }
            if actions.contains(.resumeDevice) { handlers?.onResume() }
        }
        if !powerFault { updateLamp() }
        handlers?.onTransition(transition)
        log(transition)
        if powerFault {
            // Fail closed: the needle power is not where the state says it is.
            perform(machine.handle(.needlePowerFault, atNanos: MonotonicClock.nowNanoseconds()))
        }
    }

    /// True when the output was driven (or there is none).
    private func driveNeedlePower(_ level: GPIOLevel) -> Bool {
        guard let index = needlePowerIndex else { return true }
        do {
            try backend.setOutput(index, to: level)
            needlePower = level
            return true
        } catch {
            needlePowerFailed = true
            let name = wiring.outputs[index].name
            logger.critical("needle-power output \"\(name)\" could not be driven \(level): \(error)")
            return false
        }
    }

    private func updateLamp() {
        guard let index = lampIndex else { return }
        let wanted: GPIOLevel = machine.state == .armed ? .active : .inactive
        guard wanted != lamp else { return }
        do {
            try backend.setOutput(index, to: wanted)
            lamp = wanted
        } catch {
            logger.error("lamp output \"\(wiring.outputs[index].name)\" could not be driven \(wanted): \(error)")
        }
    }

    private func log(_ transition: InterlockTransition) {
        let text = "interlocks: \(transition)"
        if transition.to == .estopped, !transition.actions.isEmpty {
            logger.critical("\(text)")
        } else if transition.from != transition.to {
            logger.notice("\(text)")
        } else {
            logger.info("\(text)")
        }
    }
}
