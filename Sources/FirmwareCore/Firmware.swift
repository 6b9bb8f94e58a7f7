import FirmwareProtocol

/// The applicator's firmware, device side of protocol v1 (`firmware-protocol.md`), as a pure,
/// deterministic state machine: no I/O, no clock, no Dispatch.
///
/// The caller owns time. Every input carries `now`, the device's wall time in microseconds
/// (monotonic, any origin; a `now` earlier than the last one is treated as the last one):
/// - `receive(_:at:)` — bytes read from the link;
/// - `advance(to:)` — time passed; call it no later than `nextDeadline`;
/// - `setEstopButton(pressed:at:)`, `setSkinContact(_:at:)` — the device's own sensors.
///
/// Each returns a `FirmwareOutput`: the frames to send, in order, and ground-truth events
/// (`.injected` for every dot the needle entered the skin for).
///
/// ## Two clocks
/// Physics (travel, descend, dwell, retract) runs on **simulated time**; each phase lasts its
/// simulated duration × `timeScale` of wall time (0 = instant). Between dots simulated time runs
/// at the wall rate, so at `timeScale` 1 simulated time equals wall time. The lease, stalls and
/// everything the host perceives as a timeout use wall time. DOT_DONE's `device_time_us` and the
/// record's `sim_time_us` are simulated time: they are the device's physics clock and match each
/// other exactly. Phase boundaries are absolute: a phase that ends at `t` starts the next one at
/// `t` however late the caller is, so delays never accumulate.
///
/// ## Decisions where the spec is silent (the safe reading)
/// - The in-skin dot finishing under HOLD, lease expiry, contact loss or HELLO keeps the state
///   `running` (fence already applied, `needle_retracted` 0) until it is back at standoff: only
///   then DOT_DONE, then STATUS `held`. So a STATUS `held` always means every older-epoch dot
///   without a DOT_DONE will never run (section 6.4's promise).
/// - HELLO while dots are queued or executing replies only after the in-skin dot is retracted
///   (after its DOT_DONE), and leaves the device `held` (fault host_hold, epoch 0).
/// - Interruptions (ABORT, latch, reset) retract at once. A dot interrupted in its travel phase
///   was not started (no record). One interrupted in descend or dwell is recorded `interrupted`
///   and reported as `current_dot_id`. One interrupted in its retract phase had its full dwell: it
///   completes as `done` with a DOT_DONE.
/// - Every DOT is checked against the hardware limits before anything else but the latch
///   (even a duplicate, a gap, a fenced one or one sent while disarmed): one outside them is
///   REFUSED and latches `dot_out_of_limits`. A DOT with dot_id 0 ("never 0") gets NAK bad_frame.
/// - Disarmed: every DOT gets NAK not_armed (no de-duplication), as the state table says.
/// - A DOT whose epoch differs from the current one (older, or newer which a correct host never
///   sends) is fenced: it consumes its sequence number, is ACKed and never queued.
/// - ARM needs a HELLO with major version 1 first (REFUSED version_mismatch otherwise, value =
///   the host's major, 0 if no HELLO). ARM/CLEAR/HOLD/RESUME/ABORT in a state that does not take
///   them change nothing and are answered with STATUS.
/// - CLEAR disarms from ready and held (needle at standoff, queue empty), not while running.
/// - The device is never ready/running without skin contact: contact lost while armed holds
///   (contact_lost, epoch + 1), ARM without contact holds at once, RESUME without contact is
///   ignored (STATUS, still held).
/// - RESUME's `next_seq` may move `expected` forward (over DOTs lost before the fence) or leave
///   it, never move it back over accepted sequence numbers (`(next_seq − expected) mod 256 ≥ 128`):
///   such a RESUME is ignored (STATUS, still held), since accepting it would let a stale copy of
///   an old DOT be taken for a new one.
/// - ESTOP (or the button) while already latched keeps the first shutdown reason.
/// - Frames of device → host types (an echoing line) are ignored: no NAK (no NAK loop with an
///   echo), no lease renewal.
/// - Pace (§6.10): no skin entry (start of descend) sooner than the minimum interval after the
///   previous one since boot — the larger of PACE's and `minimumDotIntervalMicroseconds`. The
///   needle waits at standoff, at the end of its travel, which counts as travel (a dot stopped
///   then was not started). PACE is taken in every state; HELLO forgets it.
/// - Spacing (§6.11): a new DOT about to be queued is compared with the last
///   `spacingRingSize` skin entries since boot and with every dot accepted before it that has not
///   entered the skin yet; closer than the spacing in force (the larger of SPACING's and
///   `minimumSpacingMicrometres`) it is REFUSED too_close and latches `dot_out_of_limits`.
///   Duplicates and fenced DOTs are not compared (they never run). SPACING is taken in every
///   state; HELLO forgets it, not the ring. Without the `spacing` capability SPACING is treated
///   as a 1.1 device would: an unknown type, NAK bad_frame.
/// - An interrupted dot stays `current_dot_id` (in estop/fault, or held after ABORT) until CLEAR,
///   ARM, RESUME or the next dot starts; HELLO keeps it, so a new host learns which dot was cut
///   short.
/// - Boot ids come from `FirmwareConfiguration.bootIDEntropy`, never from the seed.
public struct Firmware: Sendable {
    public let configuration: FirmwareConfiguration
    /// Queue capacity granted (configuration clamped to 1…64).
    public let queueCapacity: Int
    public private(set) var bootID: UInt32
    /// Last wall time processed.
    public private(set) var now: UInt64

    /// Times the queue ran empty while running although a new DOT had been accepted less than one
    /// lease before (the host was streaming but did not keep the queue fed). Approximate: a
    /// session that ends within a lease of its last DOT counts one more; at `timeScale` 0 every
    /// dot counts (an instant device always starves the host).
    public private(set) var underruns = 0
    /// Blocks that failed their checks.
    public private(set) var discardedBlocks = 0
    /// Frames of device → host types received and ignored.
    public private(set) var ignoredFrames = 0
    public private(set) var estopButtonPressed = false
    public private(set) var skinContact = true

    private var rng: SplitMix64
    private var decoder = FrameDecoder()
    private var txSeq: UInt8 = 0

    // Protocol state (RAM: lost on reset).
    private var state: DeviceState = .disarmed
    private var fault: FaultCode = .none
    private var epoch: UInt16 = 0
    private var expected: UInt8 = 1
    private var queue: [QueuedDot] = []
    private var active: ActiveDot?
    private var pendingStop: PendingStop?
    private var doneCount: UInt32 = 0
    private var lastDoneSeq: UInt8 = 0
    private var lastDoneDotID: UInt32 = 0
    private var interruptedDotID: UInt32 = 0
    private var leaseMicroseconds: UInt64 = Firmware.defaultLeaseMicroseconds
    private var lastValidFrameAt: UInt64
    private var lastNewDotAt: UInt64?
    private var hostVersionMajor: UInt8?
    /// HELLO's minor version: with the device's own, it decides the rules of this host session
    /// (firmware-protocol.md §6.7.2: the lower of the two).
    private var hostVersionMinor: UInt8 = 0
    /// 1.3: the cumulative ACK owed for the DOTs of this input, sent before any other frame but
    /// DOT_DONE and at the end of the input (§6.3).
    private var pendingAck: Ack?
    /// Set by PACE (µs); 0 until the host sends one in this host session.
    private var paceMicroseconds: UInt64 = 0
    /// Simulated time of the last skin entry since boot.
    private var lastSkinEntrySim: UInt64?
    /// Fault injection `ignore-pace-at`: the pace is no longer enforced.
    private var paceIgnored = false
    /// Set by SPACING (µm); 0 until the host sends one in this host session.
    private var spacingMicrometres: UInt32 = 0
    /// Positions of the last `spacingRingSize` skin entries since boot (a ring; `ringNext` is
    /// where the next one goes once it is full).
    private var recentEntries: [Position] = []
    private var ringNext = 0
    private var reportedState: DeviceState = .disarmed
    private var reportedFault: FaultCode = .none
    private var statusDue = false

    // Physics.
    private var x: Int32 = 0
    private var y: Int32 = 0
    private var idleWall: UInt64
    private var idleSim: UInt64
    /// `timeScale` and `FaultPlan.slowFactor` in parts per million (FixedPoint): no Double at run time.
    private let scalePPM: UInt64
    private let slowPPM: UInt64

    // Fault injection.
    private var plan: FaultPlan
    private var stalledUntil: UInt64?
    private var stallBacklog: [FrameDecoder.Event] = []
    private var stallOutbox: [Frame] = []

    private var output = FirmwareOutput()
    /// `receive`'s decoded frames, kept between calls for its capacity.
    private var decodedEvents: [FrameDecoder.Event] = []

    public static let defaultLeaseMicroseconds: UInt64 = 100_000
    public static let minimumLeaseMilliseconds: UInt16 = 20
    public static let maximumLeaseMilliseconds: UInt16 = 250
    /// How many recent skin entries a new dot is compared with (firmware-protocol.md §6.11).
    public static let spacingRingSize = 64

    public init(configuration: FirmwareConfiguration = FirmwareConfiguration(), at now: UInt64 = 0) {
        self.configuration = configuration
        queueCapacity = Int(min(max(configuration.queueCapacity, 1), 64))
        rng = SplitMix64.stream(seed: configuration.bootIDEntropy, purpose: 1)
        bootID = 0
        self.now = now
        lastValidFrameAt = now
        idleWall = now
        idleSim = 0
        scalePPM = FixedPoint.partsPerMillion(configuration.timeScale)  // negative, non-finite: 0
        slowPPM = FixedPoint.partsPerMillion(configuration.faults.slowFactor)
        plan = configuration.faults
        bootID = nextBootID()
    }

    // MARK: - Inputs

    /// Bytes received from the host at wall time `now`.
    public mutating func receive(_ bytes: some Sequence<UInt8>, at now: UInt64) -> FirmwareOutput {
        beginStep()
        run(until: now)
        // Decode the whole batch first, then act (a reboot may replace the decoder), into a
        // buffer kept between calls.
        var events = decodedEvents
        decodedEvents = []
        events.removeAll(keepingCapacity: true)
        decoder.feed(bytes) { events.append($0) }
        for event in events {
            dispatch(event)
        }
        decodedEvents = events
        return takeOutput()
    }

    /// Processes everything due up to `now` (phase ends, lease expiry, the end of a stall).
    public mutating func advance(to now: UInt64) -> FirmwareOutput {
        beginStep()
        run(until: now)
        return takeOutput()
    }

    /// The device's own e-stop button. Pressing it latches `estop` (estop_button) at once;
    /// releasing it only allows CLEAR.
    public mutating func setEstopButton(pressed: Bool, at now: UInt64) -> FirmwareOutput {
        beginStep()
        run(until: now)
        estopButtonPressed = pressed
        if pressed && !state.isLatched {
            latch(.estop, .estopButton)
        }
        endStep()
        run(until: self.now)
        return takeOutput()
    }

    /// The skin-contact sensor. Losing contact while armed holds (contact_lost, epoch + 1);
    /// regaining it resumes nothing.
    public mutating func setSkinContact(_ inContact: Bool, at now: UInt64) -> FirmwareOutput {
        beginStep()
        run(until: now)
        skinContact = inContact
        endStep()
        run(until: self.now)
        return takeOutput()
    }

    /// When the firmware must be called again (wall µs): the end of the current phase, the lease
    /// expiry, the end of a stall. Nil when nothing is due without new input.
    public var nextDeadline: UInt64? { nextEvent()?.time }

    /// When the lease expires unless a valid frame arrives first (wall µs); nil while it does not
    /// run (not armed, or already holding).
    public var leaseExpiry: UInt64? { leaseRunning ? lastValidFrameAt &+ leaseMicroseconds : nil }

    /// The lease agreed in HELLO (µs).
    public var leaseDurationMicroseconds: UInt64 { leaseMicroseconds }

    // MARK: - Observation

    public var snapshot: SimulatorSnapshot {
        SimulatorSnapshot(
            state: state, fault: fault, doneCount: doneCount, needleRetracted: needleRetracted,
            underruns: underruns, epoch: epoch, queueDepth: queueDepth, bootID: bootID,
            currentDotID: currentDotID, estopButtonPressed: estopButtonPressed, skinContact: skinContact,
            simulatedTimeMicroseconds: simulatedTime(at: now), discardedBlocks: discardedBlocks,
            paceMilliseconds: paceMilliseconds)
    }

    // MARK: - Event loop

    private enum EventKind { case phaseEnd, stallEnd, leaseExpiry }

    private func nextEvent() -> (time: UInt64, kind: EventKind)? {
        var best: (time: UInt64, kind: EventKind)?
        func consider(_ time: UInt64, _ kind: EventKind) {
            if best == nil || time < best!.time { best = (time, kind) }
        }
        // Ties: the phase end first, then the stall end, then the lease.
        if let active { consider(active.phaseEndWall, .phaseEnd) }
        if let stalledUntil { consider(stalledUntil, .stallEnd) }
        if leaseRunning { consider(lastValidFrameAt &+ leaseMicroseconds, .leaseExpiry) }
        return best
    }

    /// The lease matters while armed and not already holding.
    private var leaseRunning: Bool {
        (state == .ready || state == .running) && pendingStop == nil
    }

    private mutating func run(until time: UInt64) {
        let target = max(time, now)
        while let event = nextEvent(), event.time <= target {
            now = max(now, event.time)
            switch event.kind {
            case .phaseEnd: phaseEnded()
            case .stallEnd: stallEnded()
            case .leaseExpiry:
                epoch &+= 1
                beginHold(.leaseExpired)
            }
            endStep()
        }
        now = target
    }

    private mutating func dispatch(_ event: FrameDecoder.Event) {
        if stalledUntil != nil {
            stallBacklog.append(event)
            return
        }
        switch event {
        case .discarded(let error, _):
            discardedBlocks += 1
            output.events.append(.frameDiscarded(error))
            sendNak(.badFrame)
        case .frame(let frame):
            handle(frame)
        }
        endStep()
        run(until: now)  // zero-duration phases (timeScale 0) complete between frames
    }

    /// The output of this call. Its arrays are emptied (capacity kept) at the start of the next
    /// call: a caller that has let go of it by then (the microcontroller's main loop does) costs
    /// no allocation per call; one that keeps it gets a copy, as before.
    private mutating func takeOutput() -> FirmwareOutput {
        flushAck()
        return output
    }

    /// Protocol 1.3 in this host session: both sides said 1.3 or later (§6.7.2). Then one
    /// cumulative ACK per input and no STATUS for ready ↔ running alone.
    private var quietLink: Bool {
        hostVersionMajor == ProtocolVersion.major && min(hostVersionMinor, configuration.protocolMinor) >= 3
    }

    private mutating func beginStep() {
        output.frames.removeAll(keepingCapacity: true)
        output.events.removeAll(keepingCapacity: true)
    }

    /// After every input and every timed event: the contact interlock, then one STATUS if asked
    /// for or if the state or fault changed.
    private mutating func endStep() {
        if !skinContact && leaseRunning {
            epoch &+= 1
            beginHold(.contactLost)
        }
        // 1.3: the queue running dry between DOTs (and the next DOT starting) is not news (§4 STATUS).
        let flap = quietLink && fault == reportedFault && state.isArmedAndNotHeld && reportedState.isArmedAndNotHeld
        let changed = (state != reportedState || fault != reportedFault) && !flap
        if statusDue || changed {
            statusDue = false
            reportedState = state
            reportedFault = fault
            send(.status(currentStatus))
            if changed { output.events.append(.stateChanged(state, fault)) }
        }
    }

    // MARK: - Frames

    /// Whether the device this core stands in for knows `type`: SPACING came with capability
    /// bit 6 (1.2), HEARTBEAT with 1.4 (a host sends neither to a device without it).
    private func knows(_ type: MessageType) -> Bool {
        switch type {
        case .spacing: configuration.capabilities.contains(.spacing)
        case .heartbeat: configuration.protocolMinor >= 4
        default: true
        }
    }

    private mutating func handle(_ frame: Frame) {
        guard frame.message.type.rawValue < 0x80 else {
            ignoredFrames += 1
            return
        }
        if case .dot(let command) = frame.message, fireDeviceFaults(for: command.dotID, frame: frame) {
            return
        }
        if !knows(frame.message.type) {
            // An older device does not know the type: the block fails its checks.
            discardedBlocks += 1
            output.events.append(.frameDiscarded(.unknownType(frame.message.type.rawValue)))
            return sendNak(.badFrame)
        }
        lastValidFrameAt = now
        switch frame.message {
        case .hello(let hello): handleHello(hello)
        case .statusRequest: statusDue = true
        case .heartbeat: break  // the lease, renewed above, is all it asks for (§6.5)
        case .arm: handleArm()
        case .clear: handleClear()
        case .pace(let milliseconds):
            paceMicroseconds = UInt64(milliseconds) * 1000
            statusDue = true
        case .spacing(let micrometres):
            spacingMicrometres = micrometres
            send(.spacingReply(minimumSpacingMicrometres: spacingInForceMicrometres,
                               ringSize: UInt8(Self.spacingRingSize)))
        case .dot(let command): handleDot(seq: frame.seq, command)
        case .hold(let epoch): handleHold(epoch)
        case .resume(let epoch, let nextSeq): handleResume(epoch, nextSeq: nextSeq)
        case .abort(let epoch): handleAbort(epoch)
        case .estop(let cause): handleEstop(cause)
        case .helloReply, .ack, .nak, .dotDone, .status, .refused, .spacingReply: break
        }
    }

    private mutating func handleHello(_ hello: Hello) {
        hostVersionMajor = hello.versionMajor
        hostVersionMinor = hello.versionMinor
        let requested = hello.requestedLeaseMilliseconds == 0
            ? UInt16(Self.defaultLeaseMicroseconds / 1000) : hello.requestedLeaseMilliseconds
        leaseMicroseconds = UInt64(min(max(requested, Self.minimumLeaseMilliseconds), Self.maximumLeaseMilliseconds)) * 1000
        if pendingStop != nil {
            pendingStop!.hello = hello  // reply when the in-skin dot is back at standoff
            return
        }
        if state.isLatched || (active == nil && queue.isEmpty) {
            completeHello(hello)
            return
        }
        // Dots queued or executing: do what HOLD does first.
        if stopMotion(finishInSkin: true, cause: .abort) {
            pendingStop = PendingStop(reason: .hostHold, hello: hello)
        } else {
            state = .held
            fault = .hostHold
            completeHello(hello)
        }
    }

    private mutating func completeHello(_ hello: Hello) {
        expected = 1
        epoch = 0
        paceMicroseconds = 0
        spacingMicrometres = 0  // not the ring of skin entries: that is the device's, since boot
        // interruptedDotID is kept: a new host reads STATUS current_dot_id to learn which dot an
        // e-stop, fault or ABORT cut short.
        send(.helloReply(HelloReply(
            versionMinor: configuration.protocolMinor, capabilities: configuration.capabilities, bootID: bootID, firmwareID: configuration.firmwareID,
            queueCapacity: UInt8(queueCapacity), leaseMilliseconds: UInt16(leaseMicroseconds / 1000),
            limits: configuration.limits, hostNonce: hello.hostNonce, doneCount: doneCount,
            lastDoneDotID: lastDoneDotID)))
    }

    private mutating func handleArm() {
        if state.isLatched { return refuse(code: .shutdown) }
        if state == .disarmed {
            guard hostVersionMajor == ProtocolVersion.major else {
                return refuse(code: .versionMismatch, value: Int32(hostVersionMajor ?? 0))
            }
            state = .ready
            fault = .none
            interruptedDotID = 0
        }
        statusDue = true
    }

    private mutating func handleClear() {
        if state.isLatched {
            if estopButtonPressed { return refuse(code: .shutdown) }  // the cause persists
            state = .disarmed
            fault = .none
            interruptedDotID = 0
        } else if state == .ready || state == .held {
            state = .disarmed
            fault = .none
            interruptedDotID = 0
        }
        statusDue = true
    }

    /// HOLD and ABORT are fences: refused while latched, answered but without effect when
    /// disarmed or for an epoch not newer than the current one (a retransmission), and otherwise
    /// the new epoch is taken. True when the fence applies.
    private mutating func acceptFence(_ newEpoch: UInt16) -> Bool {
        if state.isLatched {
            refuse(code: .shutdown)
            return false
        }
        statusDue = true
        guard state != .disarmed, Self.isNewer(newEpoch, than: epoch) else { return false }
        epoch = newEpoch
        return true
    }

    private mutating func handleHold(_ newEpoch: UInt16) {
        guard acceptFence(newEpoch) else { return }
        beginHold(.hostHold)
    }

    private mutating func handleResume(_ resumeEpoch: UInt16, nextSeq: UInt8) {
        if state.isLatched { return refuse(code: .shutdown) }
        statusDue = true
        // next_seq may jump over DOTs lost before the fence, never back over accepted ones.
        guard state == .held, resumeEpoch == epoch, skinContact, nextSeq &- expected < 128 else { return }
        state = .ready
        fault = .none
        interruptedDotID = 0
        expected = nextSeq
    }

    private mutating func handleAbort(_ newEpoch: UInt16) {
        guard acceptFence(newEpoch) else { return }
        _ = stopMotion(finishInSkin: false, cause: .abort)
        let hello = pendingStop?.hello
        pendingStop = nil
        state = .held
        fault = .hostAbort
        if let hello { completeHello(hello) }
    }

    /// Latches whatever the cause byte says (an unknown one, or 0, is taken as host_estop).
    private mutating func handleEstop(_ cause: EstopCause) {
        statusDue = true
        if !state.isLatched {
            latch(.estop, cause.latchReason)
        }
    }

    private mutating func handleDot(seq: UInt8, _ command: DotCommand) {
        if state.isLatched {
            return refuse(seq: seq, dotID: command.dotID, code: .shutdown)
        }
        if command.dotID == 0 {
            return sendNak(.badFrame)
        }
        if let (code, value) = Self.limitViolation(command, configuration.limits) {
            latch(.fault, .dotOutOfLimits)
            output.events.append(.dotRefused(seq: seq, dotID: command.dotID, code: code, value: value))
            return refuse(seq: seq, dotID: command.dotID, code: code, value: value)
        }
        if state == .disarmed {
            return sendNak(.notArmed)
        }
        let distance = seq &- expected
        if distance >= 128 {
            return sendAck()  // duplicate: never queued again
        }
        if distance != 0 {
            return sendNak(.outOfOrder)
        }
        if command.epoch != epoch {
            expected &+= 1
            output.events.append(.dotFenced(seq: seq, dotID: command.dotID))
            return sendAck()
        }
        if state == .held || pendingStop != nil {
            return sendNak(.held)
        }
        if queueDepth >= queueCapacity {
            return sendNak(.queueFull)
        }
        if let distance = tooClose(command) {
            latch(.fault, .dotOutOfLimits)
            output.events.append(.dotRefused(seq: seq, dotID: command.dotID, code: .tooClose, value: distance))
            return refuse(seq: seq, dotID: command.dotID, code: .tooClose, value: distance)
        }
        queue.append(QueuedDot(seq: seq, command: command))
        expected &+= 1
        lastNewDotAt = now
        sendAck()
        startNextDot()
    }

    /// The first failing limit, in the order depth, dwell, x, y, with the offending value.
    public static func limitViolation(_ command: DotCommand, _ limits: DeviceLimits) -> (ErrorCode, Int32)? {
        if command.depthMicrometres < limits.depthMinMicrometres || command.depthMicrometres > limits.depthMaxMicrometres {
            return (.depthOutOfRange, Int32(command.depthMicrometres))
        }
        if command.dwellMicroseconds < limits.dwellMinMicroseconds || command.dwellMicroseconds > limits.dwellMaxMicroseconds {
            return (.dwellOutOfRange, Int32(clamping: command.dwellMicroseconds))
        }
        if command.xMicrometres.magnitude > limits.travelXMicrometres {
            return (.travelOutOfRange, command.xMicrometres)
        }
        if command.yMicrometres.magnitude > limits.travelYMicrometres {
            return (.travelOutOfRange, command.yMicrometres)
        }
        return nil
    }

    /// The minimum spacing in force (µm): the larger of SPACING's and the device's own.
    private var spacingInForceMicrometres: UInt32 {
        max(configuration.minimumSpacingMicrometres, spacingMicrometres)
    }

    /// The distance (µm, rounded down) from `command` to the nearest of the recent skin entries
    /// and the dots accepted before it that have not entered the skin, if that is closer than
    /// the spacing in force; nil when the dot keeps its distance.
    private func tooClose(_ command: DotCommand) -> Int32? {
        let spacing = spacingInForceMicrometres
        guard spacing > 0 else { return nil }
        let target = Position(x: command.xMicrometres, y: command.yMicrometres)
        var nearest: UInt64?
        func consider(_ other: Position) {
            guard let squared = Self.squaredDistanceIfCloser(target, other, than: spacing) else { return }
            if nearest == nil || squared < nearest! { nearest = squared }
        }
        for entry in recentEntries { consider(entry) }
        if let active, active.phase == .travel {
            consider(Position(x: active.command.xMicrometres, y: active.command.yMicrometres))
        }
        for queued in queue { consider(Position(x: queued.command.xMicrometres, y: queued.command.yMicrometres)) }
        guard let nearest else { return nil }
        return Int32(clamping: Self.integerSquareRoot(nearest))
    }

    /// (distance between `a` and `b`)² when that distance is less than `spacing`, else nil.
    /// Exact integer arithmetic: exactly `spacing` apart is allowed.
    static func squaredDistanceIfCloser(_ a: Position, _ b: Position, than spacing: UInt32) -> UInt64? {
        let dx = (Int64(a.x) - Int64(b.x)).magnitude, dy = (Int64(a.y) - Int64(b.y)).magnitude
        guard dx < UInt64(spacing), dy < UInt64(spacing) else { return nil }
        // Both below 2³², so each square fits; their sum may not, and is then far enough.
        let (squared, overflow) = (dx * dx).addingReportingOverflow(dy * dy)
        guard !overflow, squared < UInt64(spacing) * UInt64(spacing) else { return nil }
        return squared
    }

    /// ⌊√value⌋.
    static func integerSquareRoot(_ value: UInt64) -> UInt64 { FixedPoint.squareRoot(value) }

    /// A skin entry: remembered in the ring (the oldest forgotten once it is full).
    private mutating func rememberSkinEntry(_ position: Position) {
        if recentEntries.count < Self.spacingRingSize {
            recentEntries.append(position)
        } else {
            recentEntries[ringNext] = position
            ringNext = (ringNext + 1) % Self.spacingRingSize
        }
    }

    /// RFC 1982 serial-number arithmetic on 16 bits.
    public static func isNewer(_ candidate: UInt16, than current: UInt16) -> Bool {
        let distance = candidate &- current
        return distance != 0 && distance < 0x8000
    }

    // MARK: - Stops

    /// HOLD semantics (the caller has set the new epoch): flush, let the in-skin dot finish,
    /// then `held` with `reason`.
    private mutating func beginHold(_ reason: FaultCode) {
        if pendingStop != nil {
            pendingStop!.reason = reason
            queue.removeAll()
            return
        }
        if stopMotion(finishInSkin: true, cause: .abort) {
            pendingStop = PendingStop(reason: reason, hello: nil)
        } else {
            state = .held
            fault = reason
        }
    }

    /// Latched shutdown: needle off and retracted at once, queue flushed.
    private mutating func latch(_ latchedState: DeviceState, _ reason: FaultCode) {
        _ = stopMotion(finishInSkin: false, cause: .shutdown(reason))
        let hello = pendingStop?.hello
        pendingStop = nil
        state = latchedState
        fault = reason
        if let hello { completeHello(hello) }
    }

    /// Flushes the queue (the fence) and deals with the executing dot. Returns true when a dot is
    /// in the skin and was left to finish (`finishInSkin`); otherwise the needle is at standoff.
    private mutating func stopMotion(finishInSkin: Bool, cause: Interruption) -> Bool {
        queue.removeAll()
        guard let dot = active else { return false }
        switch dot.phase {
        case .travel:
            // Not started: the gantry stops where it is.
            let total = max(dot.phaseWall, 1)
            let elapsed = dot.phaseWall == 0 ? 1 : min(now - min(now, dot.phaseStartWall), dot.phaseWall)
            x = Int32(Int64(dot.fromX) + FixedPoint.along(Int64(dot.command.xMicrometres) - Int64(dot.fromX), elapsed, over: total))
            y = Int32(Int64(dot.fromY) + FixedPoint.along(Int64(dot.command.yMicrometres) - Int64(dot.fromY), elapsed, over: total))
            let sim = simulatedTime(at: now)
            active = nil
            setIdle(wall: now, sim: sim)
            return false
        case .descend, .dwell:
            if finishInSkin { return true }
            let sim = simulatedTime(at: now)
            let delivered = dot.phase == .dwell ? dot.elapsedSim(at: now) : 0
            active = nil
            interruptedDotID = dot.command.dotID
            record(dot, outcome: .interrupted, cause: cause, delivered: delivered, sim: sim, wall: now)
            setIdle(wall: now, sim: sim)
            return false
        case .retract:
            if finishInSkin { return true }
            // The dwell was complete: the dot is done; the retraction is cut short.
            let sim = simulatedTime(at: now)
            active = nil
            completeDot(dot, sim: sim, wall: now)
            return false
        }
    }

    private mutating func finishPendingStop() {
        guard let stop = pendingStop else { return }
        pendingStop = nil
        state = .held
        fault = stop.reason
        if let hello = stop.hello { completeHello(hello) }
    }

    // MARK: - Physics

    private var queueDepth: Int { queue.count + (active == nil ? 0 : 1) }

    private var needleRetracted: Bool { active == nil || active!.phase == .travel }

    private var currentDotID: UInt32 { active?.command.dotID ?? interruptedDotID }

    private func simulatedTime(at wall: UInt64) -> UInt64 {
        if let active { return active.phaseStartSim + active.elapsedSim(at: wall) }
        return idleSim + (wall - min(wall, idleWall))
    }

    private mutating func setIdle(wall: UInt64, sim: UInt64) {
        idleWall = wall
        idleSim = sim
    }

    private func wallDuration(_ sim: UInt64) -> UInt64 {
        scalePPM == FixedPoint.million ? sim : FixedPoint.scale(sim, partsPerMillion: scalePPM, roundingUp: false)
    }

    private func slowed(_ sim: UInt64) -> UInt64 {
        slowPPM == FixedPoint.million ? sim : FixedPoint.scale(sim, partsPerMillion: slowPPM, roundingUp: true)
    }

    /// Simulated travel time from the current position, at the declared speed, straight line.
    public static func travelDuration(fromX: Int32, fromY: Int32, toX: Int32, toY: Int32, speed: UInt32) -> UInt64 {
        guard speed > 0 else { return 0 }
        let dx = (Int64(toX) - Int64(fromX)).magnitude, dy = (Int64(toY) - Int64(fromY)).magnitude
        // Each below 2³², so each square fits; their sum may not: halve the distance (and the
        // time's resolution) only then, far beyond any travel.
        let (squared, overflow) = (dx * dx).addingReportingOverflow(dy * dy)
        if overflow {
            return 2 * FixedPoint.travelMicroseconds(squaredDistance: (dx / 2) * (dx / 2) + (dy / 2) * (dy / 2),
                                                     speed: UInt64(speed))
        }
        return FixedPoint.travelMicroseconds(squaredDistance: squared, speed: UInt64(speed))
    }

    /// The minimum interval between skin entries in force (µs): the larger of PACE's and the
    /// device's own.
    private var paceInForceMicroseconds: UInt64 {
        max(UInt64(configuration.minimumDotIntervalMicroseconds), paceMicroseconds)
    }

    /// What the pacing enforces (µs); nothing once the `ignore-pace-at` fault fired.
    var minimumDotIntervalMicroseconds: UInt64 { paceIgnored ? 0 : paceInForceMicroseconds }

    private mutating func startNextDot() {
        guard active == nil, !queue.isEmpty else { return }
        let next = queue.removeFirst()
        var travel = slowed(Self.travelDuration(
            fromX: x, fromY: y, toX: next.command.xMicrometres, toY: next.command.yMicrometres,
            speed: configuration.limits.travelSpeedMicrometresPerSecond))
        let sim = simulatedTime(at: now)
        if let last = lastSkinEntrySim, last &+ minimumDotIntervalMicroseconds > sim &+ travel {
            travel = last &+ minimumDotIntervalMicroseconds - sim  // wait at standoff: the pace
        }
        active = ActiveDot(seq: next.seq, command: next.command, phase: .travel,
                           phaseStartWall: now, phaseWall: wallDuration(travel),
                           phaseStartSim: sim, phaseSim: travel, fromX: x, fromY: y, skinEntrySim: 0)
        interruptedDotID = 0
        if state == .ready {
            state = .running
            fault = .none
        }
    }

    private mutating func phaseEnded() {
        guard var dot = active else { return }
        let endWall = dot.phaseEndWall, endSim = dot.phaseStartSim + dot.phaseSim
        func enter(_ phase: Phase, _ sim: UInt64) {
            dot.phase = phase
            dot.phaseStartWall = endWall
            dot.phaseStartSim = endSim
            dot.phaseSim = sim
            dot.phaseWall = wallDuration(sim)
        }
        switch dot.phase {
        case .travel:
            x = dot.command.xMicrometres
            y = dot.command.yMicrometres
            if plan.contactLossAt.remove(dot.command.dotID) != nil {
                output.events.append(.faultInjected(.contactLoss, dotID: dot.command.dotID))
                if leaseRunning {
                    // Contact lost for a moment as the needle is about to descend: the dot is
                    // not started (nothing entered the skin) and the device holds.
                    active = nil
                    setIdle(wall: endWall, sim: endSim)
                    epoch &+= 1
                    beginHold(.contactLost)
                    return
                }
            }
            dot.skinEntrySim = endSim
            lastSkinEntrySim = endSim
            rememberSkinEntry(Position(x: x, y: y))
            enter(.descend, slowed(UInt64(configuration.limits.descendMicroseconds)))
            active = dot
        case .descend:
            let dwell = UInt64(dot.command.dwellMicroseconds)
            let estop = plan.estopAt.remove(dot.command.dotID) != nil
            let overDepth = plan.overDepthAt.remove(dot.command.dotID) != nil
            if estop { dot.inSkinFaults.append(.estop) }
            if overDepth { dot.inSkinFaults.append(.overDepth) }
            // A planned in-skin fault fires halfway through the dwell: the dwell phase ends there.
            enter(.dwell, dot.inSkinFaults.isEmpty ? dwell : dwell / 2)
            active = dot
        case .dwell:
            if !dot.inSkinFaults.isEmpty {
                inSkinFaultFired(dot, sim: endSim, wall: endWall)
                return
            }
            enter(.retract, slowed(UInt64(configuration.limits.retractMicroseconds)))
            active = dot
        case .retract:
            active = nil
            completeDot(dot, sim: endSim, wall: endWall)
            if pendingStop != nil {
                finishPendingStop()
            } else if !queue.isEmpty {
                startNextDot()
            } else if state == .running {
                state = .ready
                if let last = lastNewDotAt, endWall < last &+ leaseMicroseconds {
                    underruns += 1
                    output.events.append(.underrun)
                }
            }
        }
    }

    private mutating func completeDot(_ dot: ActiveDot, sim: UInt64, wall: UInt64) {
        doneCount &+= 1
        lastDoneSeq = dot.seq
        lastDoneDotID = dot.command.dotID
        send(.dotDone(DotDone(dotSeq: dot.seq, dotID: dot.command.dotID, doneCount: doneCount,
                              deviceTimeMicroseconds: sim)))
        record(dot, outcome: .done, cause: nil, delivered: UInt64(dot.command.dwellMicroseconds), sim: sim, wall: wall)
        setIdle(wall: wall, sim: sim)
    }

    private mutating func record(_ dot: ActiveDot, outcome: InjectedDot.Outcome, cause: Interruption?,
                                 delivered: UInt64, sim: UInt64, wall: UInt64) {
        let command = dot.command
        output.events.append(.injected(InjectedDot(
            dotID: command.dotID, seq: dot.seq, epoch: command.epoch, xMicrometres: command.xMicrometres,
            yMicrometres: command.yMicrometres, depthMicrometres: command.depthMicrometres,
            dwellMicroseconds: command.dwellMicroseconds, dwellDeliveredMicroseconds: delivered,
            skinEntrySimulatedMicroseconds: dot.skinEntrySim, simulatedTimeMicroseconds: sim,
            wallTimeMicroseconds: wall, bootID: bootID, outcome: outcome, cause: cause, doneCount: doneCount)))
    }

    // MARK: - Device faults

    /// Fires the planned device faults that belong to a DOT's first arrival (`reset-at`,
    /// `disconnect-at`, `stall-at`, `ignore-pace-at`; the others fire as the dot executes).
    /// Returns true when the frame was consumed (lost with a reset or disconnect, or held back
    /// by a stall).
    private mutating func fireDeviceFaults(for dotID: UInt32, frame: Frame) -> Bool {
        if plan.resetAt.remove(dotID) != nil {
            output.events.append(.faultInjected(.reset, dotID: dotID))
            reboot()
            return true
        }
        if plan.disconnectAt.remove(dotID) != nil {
            output.events.append(.faultInjected(.disconnect, dotID: dotID))
            output.events.append(.disconnectRequested)
            return true
        }
        if let duration = plan.stallAt.removeValue(forKey: dotID) {
            output.events.append(.faultInjected(.stall, dotID: dotID))
            stalledUntil = now &+ duration
            stallBacklog.append(.frame(frame))
            return true
        }
        if plan.ignorePaceAt.remove(dotID) != nil {
            output.events.append(.faultInjected(.ignorePace, dotID: dotID))
            paceIgnored = true
        }
        return false
    }

    /// `estop-at` / `over-depth-at`: halfway through the dwell of the planned dot (the first
    /// part of its dwell has just ended) the e-stop button is pressed and released, or the depth
    /// sensor trips. The dot is cut short there — exactly half its dwell delivered, at every
    /// time scale — and stays `current_dot_id`.
    private mutating func inSkinFaultFired(_ dot: ActiveDot, sim: UInt64, wall: UInt64) {
        for fault in dot.inSkinFaults {
            output.events.append(.faultInjected(fault, dotID: dot.command.dotID))
        }
        let estop = dot.inSkinFaults.contains(.estop)
        let reason: FaultCode = estop ? .estopButton : .overDepth
        active = nil
        interruptedDotID = dot.command.dotID
        record(dot, outcome: .interrupted, cause: .shutdown(reason), delivered: dot.phaseSim, sim: sim, wall: wall)
        setIdle(wall: wall, sim: sim)
        latch(estop ? .estop : .fault, reason)
    }

    private mutating func stallEnded() {
        stalledUntil = nil
        output.frames.append(contentsOf: stallOutbox)
        stallOutbox.removeAll()
        let backlog = stallBacklog
        stallBacklog.removeAll()
        for event in backlog {
            dispatch(event)  // re-queued in order if one of them starts a new stall
        }
    }

    /// Power cycle: the dot in the skin is interrupted; every bit of RAM state is lost.
    private mutating func reboot() {
        if let dot = active {
            // Power lost: no frame goes out for the dot in the skin, the record tells the truth.
            let sim = simulatedTime(at: now)
            switch dot.phase {
            case .travel:
                break
            case .descend, .dwell:
                let delivered = dot.phase == .dwell ? dot.elapsedSim(at: now) : 0
                record(dot, outcome: .interrupted, cause: .reset, delivered: delivered, sim: sim, wall: now)
            case .retract:
                doneCount &+= 1
                record(dot, outcome: .done, cause: nil, delivered: UInt64(dot.command.dwellMicroseconds),
                       sim: sim, wall: now)
            }
            active = nil
            setIdle(wall: now, sim: sim)
        }
        bootID = nextBootID()
        state = .disarmed
        fault = .none
        epoch = 0
        expected = 1
        queue.removeAll()
        active = nil
        pendingStop = nil
        doneCount = 0
        lastDoneSeq = 0
        lastDoneDotID = 0
        interruptedDotID = 0
        leaseMicroseconds = Self.defaultLeaseMicroseconds
        lastValidFrameAt = now
        lastNewDotAt = nil
        hostVersionMajor = nil
        hostVersionMinor = 0
        pendingAck = nil  // never sent: as if lost on the line
        paceMicroseconds = 0
        lastSkinEntrySim = nil
        spacingMicrometres = 0
        recentEntries.removeAll()
        ringNext = 0
        decoder = FrameDecoder()
        stalledUntil = nil
        stallBacklog.removeAll()
        stallOutbox.removeAll()
        output.events.append(.rebooted(bootID: bootID))
        statusDue = true  // the boot announcement
    }

    private mutating func nextBootID() -> UInt32 {
        while true {
            let id = UInt32(truncatingIfNeeded: rng.next())
            if id != 0 && id != bootID { return id }
        }
    }

    // MARK: - Sending

    private var freeSlots: UInt8 { UInt8(queueCapacity - queueDepth) }

    private var currentStatus: Status {
        Status(state: state, fault: fault, queueDepth: UInt8(queueDepth), freeSlots: freeSlots, epoch: epoch,
               ackSeq: expected &- 1, lastDoneSeq: lastDoneSeq, lastDoneDotID: lastDoneDotID,
               doneCount: doneCount, currentDotID: currentDotID, needleRetracted: needleRetracted,
               paceMilliseconds: paceMilliseconds)
    }

    /// STATUS `pace_ms`: 0 until PACE, then the interval in force, in whole ms rounded up.
    private var paceMilliseconds: UInt16 {
        guard paceMicroseconds > 0 else { return 0 }
        return UInt16(clamping: (paceInForceMicroseconds + 999) / 1000)
    }

    private mutating func send(_ message: Message) {
        if let ack = pendingAck {
            if case .dotDone(let done) = message {
                // 1.3: the DOT_DONE of the very DOT the owed ACK names says all it would (§6.3).
                if done.dotSeq == ack.ackSeq { pendingAck = nil }
            } else {
                flushAck()
            }
        }
        let frame = Frame(seq: txSeq, message)
        txSeq &+= 1
        if stalledUntil != nil {
            stallOutbox.append(frame)
        } else {
            output.frames.append(frame)
        }
    }

    private mutating func sendAck() {
        let ack = Ack(ackSeq: expected &- 1, freeSlots: freeSlots, epoch: epoch)
        if quietLink {
            pendingAck = ack  // the last one of this input stands for all of them (§6.3, 1.3)
        } else {
            send(.ack(ack))
        }
    }

    private mutating func flushAck() {
        guard let ack = pendingAck else { return }
        pendingAck = nil
        send(.ack(ack))
    }

    private mutating func sendNak(_ reason: ErrorCode) {
        send(.nak(Nak(expectedSeq: expected, reason: reason, freeSlots: freeSlots)))
    }

    private mutating func refuse(seq: UInt8 = 0, dotID: UInt32 = 0, code: ErrorCode, value: Int32 = 0) {
        send(.refused(Refused(seq: seq, dotID: dotID, code: code, value: value, state: state, fault: fault)))
    }
}

/// A dot's position, µm.
struct Position: Sendable, Hashable {
    var x: Int32
    var y: Int32
}

private struct QueuedDot: Sendable {
    var seq: UInt8
    var command: DotCommand
}

private enum Phase: Sendable { case travel, descend, dwell, retract }

private struct ActiveDot: Sendable {
    var seq: UInt8
    var command: DotCommand
    var phase: Phase
    var phaseStartWall: UInt64
    var phaseWall: UInt64
    var phaseStartSim: UInt64
    var phaseSim: UInt64
    var fromX: Int32
    var fromY: Int32
    var skinEntrySim: UInt64
    /// `estop-at` / `over-depth-at` planned for this dot: they fire halfway through its dwell.
    var inSkinFaults: [InjectedFault] = []

    var phaseEndWall: UInt64 { phaseStartWall &+ phaseWall }

    /// Simulated time elapsed in the current phase at `wall`, proportional to wall time.
    func elapsedSim(at wall: UInt64) -> UInt64 {
        guard wall > phaseStartWall else { return 0 }
        guard phaseWall > 0 else { return phaseSim }
        let elapsed = min(wall - phaseStartWall, phaseWall)
        return elapsed == phaseWall ? phaseSim : FixedPoint.fraction(phaseSim, times: elapsed, over: phaseWall)
    }
}

private struct PendingStop: Sendable {
    /// Fault reported with `held` once the in-skin dot is back at standoff.
    var reason: FaultCode
    /// A HELLO to answer at that moment.
    var hello: Hello?
}
