import FirmwareProtocol
import Logging
import SMPSystem  // Duration in nanoseconds only: the machine makes no system call

/// Timing of the host side of the protocol (firmware-protocol.md §6.3, §6.5, §6.7).
public struct LinkConfiguration: Sendable, Hashable {
    /// Lease asked for in HELLO; the device grants 20–250 ms.
    public var requestedLease: Duration = .milliseconds(100)
    public var handshakeAttempts = 20
    public var handshakeInterval: Duration = .milliseconds(100)
    /// No valid frame from the device for this long = link lost.
    public var linkLossTimeout: Duration = .milliseconds(500)
    public var initialRetransmissionTimeout: Duration = .milliseconds(50)
    public var minimumRetransmissionTimeout: Duration = .milliseconds(25)
    public var maximumRetransmissionTimeout: Duration = .milliseconds(200)
    /// The minimum interval between skin entries to set with PACE during the handshake (§6.10);
    /// 0 sends none. A device without the `pace` capability is not asked: the caller decides.
    public var minimumDotIntervalMilliseconds: UInt16 = 0
    /// The minimum spacing between dots to set with SPACING during the handshake (§6.7.3,
    /// protocol 1.2); 0 sends none. Only to a device with the `spacing` capability.
    public var minimumSpacingMicrometres: UInt32 = 0
    /// The line's byte rate when it has one (a UART: baud ÷ 10, 8N1); nil for USB CDC-ACM, whose
    /// baud is ignored. Bounds the window and raises the RTO floor (firmware-protocol.md §6.3).
    public var lineBytesPerSecond: Int?
    /// The minor version HELLO announces (§6.7.2: both sides follow the lower of the two). Lower
    /// only to stand in for an older host (tests); the machine reads every version alike.
    public var protocolMinor: UInt8 = ProtocolVersion.minor
    /// Where the machine's deadlines fall (see `LinkMachine.nextDeadline`).
    public var deadlines: DeadlineTiming = .tickGrid
    /// With `.exact` deadlines, the heartbeat goes out once nothing was sent for the lease divided
    /// by this (at least 2). §6.5 says a quarter (4): three frames in a row must be lost before the
    /// lease expires. 2 halves the heartbeats of a quiet link, but then one lost or late frame
    /// expires it (measured: docs/performance.md, the link's I/O thread). Not used while the
    /// heartbeat is paired (`pairedHeartbeat`).
    public var heartbeatLeaseDivisor: UInt64 = 4
    /// With `.exact` deadlines, when both sides speak 1.4: the heartbeat goes out once nothing was
    /// sent for a third of the lease (never later than three quarters of the lease after the
    /// third frame from last), as two frames in one write, the second a HEARTBEAT, which the
    /// device does not answer (§6.5). Any two frames lost in a row still leave the next at most
    /// three quarters of the lease after the last received; a heartbeat is lost only when both
    /// its frames are, so under independent frame loss the lease holds better than with single
    /// frames a quarter apart; and a link at an applicator's pace wakes once fewer per lease
    /// (issue 15's host CPU). What it gives up: a burst that takes both frames counts as one
    /// lost heartbeat, and a late host thread has two thirds of the lease, not three quarters
    /// (8 ms less at 100 ms). False: single frames `heartbeatLeaseDivisor` apart, as with a 1.3
    /// device (no HEARTBEAT frame).
    public var pairedHeartbeat = true
    /// While the device's queue holds at least this much work at the pace its DOT_DONEs arrive
    /// (the host's clock), its owner lets up to a quarter of the queue free before refilling it,
    /// all in one write (`LinkMachine.dotRefillThreshold`); faster, or before two DOT_DONEs have
    /// come, every freed slot is refilled at once. At an applicator's pace a DOT sent for each
    /// DOT_DONE cost the link's thread two wake-ups a dot — the owner's hand-over and the
    /// device's ACK — for a queue that holds three seconds of work anyway (issue 15's host CPU).
    /// nil: every freed slot at once.
    public var dotRefillFloor: Duration? = .seconds(1)

    /// How a driver wakes the machine.
    public enum DeadlineTiming: Sendable, Hashable {
        /// On a grid of ticks a quarter of the lease apart, the heartbeat on the first tick an
        /// eighth of an interval short of it: the timing of a driver with a periodic timer.
        case tickGrid
        /// Each deadline at its own time, the heartbeat `heartbeatLeaseDivisor` of the lease
        /// after the last frame sent (every frame, a DOT too, stands in for it): the timing of a
        /// driver with a one-shot timer (`ApplicatorLink`'s `ppoll` deadline), which then wakes only when
        /// something is due.
        case exact
    }

    public init() {}
}

/// What a line's byte rate allows (firmware-protocol.md §6.3, "A line with a byte rate"): the
/// window of DOTs whose frames and answers fit in `windowSpan` of the line, and an RTO floor raised
/// by the time that window takes, so a DOT written behind a full window is not counted lost.
public struct LineBudget: Sendable, Hashable {
    /// A DOT frame on the wire (COBS + delimiter included).
    public static let dotFrameBytes = 28
    /// Its answers at worst when both sides speak 1.3: ACK (12 B) and DOT_DONE (25 B).
    public static let answerBytesPerDot = 37
    /// An older device's: also the two STATUS frames (31 B each) of a queue that runs dry
    /// between DOTs, as it does whenever the line is the bottleneck.
    public static let olderDeviceAnswerBytesPerDot = 99
    /// How much of the line one window may take.
    public static let windowSpan: Duration = .milliseconds(100)

    public var window: Int
    public var minimumRetransmissionTimeout: Duration
    public var maximumRetransmissionTimeout: Duration
    public var initialRetransmissionTimeout: Duration

    /// The defaults of `configuration` when the line has no byte rate. `protocolMinor`: the
    /// version in use (the lower of the host's and the device's, §6.7.2).
    public init(configuration: LinkConfiguration, queueCapacity: Int, protocolMinor: UInt8 = ProtocolVersion.minor) {
        window = queueCapacity
        minimumRetransmissionTimeout = configuration.minimumRetransmissionTimeout
        maximumRetransmissionTimeout = configuration.maximumRetransmissionTimeout
        initialRetransmissionTimeout = configuration.initialRetransmissionTimeout
        guard let rate = configuration.lineBytesPerSecond, rate > 0 else { return }
        let perDot = Self.dotFrameBytes + (protocolMinor >= 3 ? Self.answerBytesPerDot : Self.olderDeviceAnswerBytesPerDot)
        let fits = Int(UInt64(rate) * Self.windowSpan.nanoseconds / 1_000_000_000) / perDot
        window = min(queueCapacity, max(1, fits))
        let drainNanos = UInt64(window * perDot) * 1_000_000_000 / UInt64(rate)
        let floor = configuration.minimumRetransmissionTimeout.nanoseconds + drainNanos
        minimumRetransmissionTimeout = .nanoseconds(floor)
        maximumRetransmissionTimeout = .nanoseconds(max(configuration.maximumRetransmissionTimeout.nanoseconds, 2 * floor))
        initialRetransmissionTimeout = .nanoseconds(max(configuration.initialRetransmissionTimeout.nanoseconds, floor))
    }
}

/// Counters of the link, reported as events and kept in the session record.
public struct LinkMetrics: Sendable, Hashable, Codable {
    public var framesSent = 0
    public var framesReceived = 0
    public var bytesSent = 0
    public var bytesReceived = 0
    public var dotFramesSent = 0
    public var retransmissions = 0
    /// Blocks discarded by the decoder (CRC, COBS, length, garbage).
    public var badFramesReceived = 0
    public var naksReceived = 0
    /// Gaps in the device's transmit counter: device frames lost on the way.
    public var deviceFramesLost = 0
    public var smoothedRTTMicroseconds = 0
    public var retransmissionTimeoutMicroseconds = 0

    public init() {}
}

/// Why the link ended.
public enum LinkLoss: Error, Sendable, Hashable, CustomStringConvertible {
    case disconnected(SerialPortError)
    case silent(milliseconds: Int)
    case handshakeFailed(String)
    case protocolViolation(String)
    case closedByHost

    public var description: String {
        switch self {
        case .disconnected(let error): "\(error)"
        case .silent(let ms): "no valid frame from the applicator for \(ms) ms after the host's last unanswered one: link lost"
        case .handshakeFailed(let why): "handshake failed: \(why)"
        case .protocolViolation(let why): "protocol violation by the applicator: \(why)"
        case .closedByHost: "closed by the host"
        }
    }
}

/// What the link tells its owner, in order.
public enum LinkEvent: Sendable, Hashable {
    /// The device confirmed the dot complete (needle back at standoff). Exactly once per sent dot.
    /// `deviceTimeMicroseconds` is its DOT_DONE's time, 0 when it was confirmed by a later dot's
    /// report instead (its own DOT_DONE lost).
    case dotDone(dotID: UInt32, deviceTimeMicroseconds: UInt64, deviceDoneCount: UInt32)
    /// A fence (hold, abort, e-stop, device hold) discarded these dots before they started: they
    /// were not injected and may be sent again after RESUME. In send order.
    case dotsReturned([DotCommand])
    /// An e-stop, fault or abort cut this dot's dwell short: partially injected, never resent.
    case dotInterrupted(dotID: UInt32)
    /// These dots were in flight when the device rebooted or the link was lost: whether they were
    /// injected cannot be known from the host. Never resent automatically.
    case dotsInDoubt([DotCommand])
    case deviceStatus(Status)
    case refused(Refused)
    /// ARM (or the RESUME that continues a device found held) or an operator's RESUME was not
    /// taken: the device stays held (its `fault` says why, e.g. skin contact lost) or latched.
    /// The link never repeats it on its own: only the operator's next decision resumes.
    case notTaken(MessageType, Status?)
    case metrics(LinkMetrics)
    case linkLost(LinkLoss)
}

/// What the driver does for the machine after a step, in order.
public enum LinkAction: Sendable, Hashable {
    /// For the owner (the session).
    case event(LinkEvent)
    /// The handshake ended: `connect`'s answer.
    case handshakeFinished(Result<HelloReply, LinkLoss>)
    /// The CLEAR at the end was confirmed (true) or not sent or not confirmed (false): the answer
    /// to `disarmAndClose`, given once the port's descriptor is closed.
    case disarmFinished(Bool)
    /// Close the port; no input but `portClosed` is expected after it.
    case closePort
    case log(Logger.Level, String)
}

/// One step's result: the bytes to write (first, in one write), then the actions in order.
public struct LinkOutput: Sendable, Hashable {
    public var bytes: [UInt8] = []
    public var actions: [LinkAction] = []

    public init() {}

    public var events: [LinkEvent] {
        actions.compactMap { if case .event(let event) = $0 { event } else { nil } }
    }
}

/// The host side of the applicator protocol as a pure, deterministic state machine: handshake,
/// reliable in-order delivery of DOT frames within the device's window (go-back-N), RTO per
/// RFC 6298, heartbeat inside the lease, epoch fences, bounded operator decisions, latched
/// shutdown. No I/O, no clock, no Dispatch, no callbacks — like the firmware core (`Firmware`).
///
/// The caller owns time: every input carries `now`, monotonic nanoseconds (any origin). Inputs:
/// `connect`, `receive` (one decoded block at a time), `tick` (no later than `nextDeadline`),
/// the commands, `send(dots:)` (at most `dotCredit`), `portClosed`, `writeFailed`. Each returns a
/// `LinkOutput`: bytes to write, then actions (events for the owner, completions, close, logs).
/// `ApplicatorLink` drives it with the real port, clock and timer; the tests on virtual time.
public struct LinkMachine: Sendable {
    public let configuration: LinkConfiguration
    /// For messages only.
    public let devicePath: String

    // Handshake
    public private(set) var hello: HelloReply?
    private var handshaking = false
    private var started = false
    /// The nonce of the latest HELLO: each repetition has its own, and only the reply to the
    /// latest ends that step. A reply to an earlier one would let the device's frames from before
    /// the latest HELLO reached it (a lease expiry's `held` in an epoch that HELLO then reset) be
    /// read as the new session's, and that HELLO still on its way restarts the device's session
    /// behind the host's back (make fuzz: dots 1-5 returned as fenced by such a `held`, then run).
    private var handshakeNonce: UInt32 { baseNonce &+ (helloCount &- 1) &* 0x9E37_79B9 }
    private var baseNonce: UInt32 = 0
    /// HELLOs sent: the first carries the owner's nonce, each repetition a different one.
    private var helloCount: UInt32 = 0
    private var handshakeAttemptsLeft = 0
    /// The steps after HELLO_REPLY (§6.7.3), each repeated until the device confirms it: PACE
    /// (its STATUS shows the pace), SPACING (its SPACING_REPLY shows the spacing), and last a
    /// STATUS, so the owner knows the device's state (held, latched, the cut-short dot) before
    /// it decides anything — a resume settles its record from it.
    private enum HandshakeStep { case hello, pace, spacing, status }
    private var handshakeStep = HandshakeStep.hello

    // Sequencing (firmware-protocol.md §6.1–6.3)
    private struct Outstanding: Sendable {
        var seq: UInt64
        var dot: DotCommand
        var sentAt: UInt64
        var retransmitted: Bool
    }
    private var outstanding: [Outstanding] = []  // ≤ 64 entries, in seq order
    private var outstandingHead = 0
    private var nextSeq: UInt64 = 1
    private var ackedThrough: UInt64 = 0
    private var creditAtAck = 0
    /// The newest DOT the last report (ACK, STATUS, NAK, HELLO_REPLY) counted: its `free_slots`
    /// counts each DOT up to this one, not yet done, as holding a slot.
    private var reportCovers: UInt64 = 0
    /// DOTs up to `reportCovers` whose DOT_DONE came after the report: each freed its slot since
    /// (the device frees a slot when the dot is done and sends DOT_DONE then, before any frame
    /// that reports it free, §6.1). The next DOT goes with the DOT_DONE's own batch instead of
    /// waiting for the next report (issue 15: one wake-up less per dot, each side).
    private var freedSinceReport = 0
    private var lastFastRetransmit: UInt64 = 0
    /// When the last DOT_DONE arrived, and the two intervals before it (0: not known), on the
    /// host's clock: the simulator's device time is simulated time, not the queue's wall pace.
    private var lastDoneArrival: UInt64?
    private var doneArrivalIntervals: (UInt64, UInt64) = (0, 0)

    // Device state as last reported
    public private(set) var deviceStatus: Status?
    private var epoch: UInt16 = 0
    private var lastDeviceTxSeq: UInt8?
    /// When the last valid frame from the device was handled.
    private var lastReceivedAt: UInt64?
    /// A frame from the device said its state changed (an ACK in another epoch, a NAK `held` or
    /// `not_armed`) and no STATUS has come since: the heartbeat asks until one does (§6.5).
    private var statusWanted = false
    /// The minor version this host session follows: the lower of HELLO's and HELLO_REPLY's (§6.7.2).
    private var protocolMinorInUse: UInt8 = 0
    /// The lease the device granted.
    private var leaseNanos: UInt64 = 100_000_000

    /// What STATUS confirms a command.
    private enum Confirmation: Sendable {
        /// ARM: any answer but disarmed (ready, or held at once without contact, or latched).
        case answered
        /// RESUME: ready or running in that epoch.
        case running(epoch: UInt16)
        /// HOLD: held, needle up, the fence's epoch or a newer one.
        case held(epoch: UInt16)
        /// ABORT: held or latched, needle up, the fence's epoch or a newer one.
        case stopped(epoch: UInt16)
        /// ESTOP.
        case latched
        /// CLEAR.
        case disarmed

        func isMet(by status: Status) -> Bool {
            switch self {
            case .answered: status.state != .disarmed
            case .running(let epoch): (status.state == .ready || status.state == .running) && status.epoch == epoch
            case .held(let epoch):
                status.state == .held && status.needleRetracted && LinkMachine.isNotOlder(status.epoch, than: epoch)
            case .stopped(let epoch):
                (status.state == .held || status.state.isLatched) && status.needleRetracted
                    && LinkMachine.isNotOlder(status.epoch, than: epoch)
            case .latched: status.state.isLatched
            case .disarmed: status.state == .disarmed
            }
        }
    }

    // Commands awaiting confirmation by STATUS
    private struct PendingCommand: Sendable {
        var message: Message
        var lastSent: UInt64
        var confirmation: Confirmation
        /// Transmissions left, for the commands that must not outlive the operator's decision
        /// (ARM, RESUME, CLEAR): a RESUME repeated until the device takes it would resume the
        /// moment a device-side cause (contact lost) went away, with nobody asked. Nil: repeated
        /// until confirmed (HOLD, ABORT, ESTOP — the safe direction).
        var attemptsLeft: Int?
    }
    private var pendingCommand: PendingCommand?
    /// Transmissions of ARM, RESUME or CLEAR before the link gives up (`notTaken`): enough to
    /// cover lost frames, never so many that a device-side cause could clear meanwhile unseen.
    public static let decisionAttempts = 4
    /// What a bounded command stands for when it is given up (`notTaken`).
    private enum Decision { case arm, resume, clear }
    private var pendingDecision: Decision?
    /// An operator's RESUME given while the HOLD before it is not yet confirmed: sent, with the
    /// new epoch, once the hold is.
    private var resumeQueued = false
    /// Set when a STATUS confirmed the hold a queued RESUME waits for; `settle` sends it.
    private var resumeAfterFence = false
    /// Set while the CLEAR at the end waits for its STATUS: its answer is `disarmFinished`.
    private var disarmPending = false
    /// True from HOLD/ABORT/ESTOP until the fence is confirmed; no DOT is sent meanwhile.
    private var fencePending = false
    /// Streaming is allowed only when armed and not held; set by the owner.
    public private(set) var streaming = false
    /// Set by a latched state or a local e-stop; a latched device is never armed again by this link.
    public private(set) var latched = false
    public private(set) var closed = false

    // Timing (nanoseconds)
    private var srttNanos: Double = 0
    private var rttvarNanos: Double = 0
    private var rtoNanos: UInt64
    /// The window and RTO bounds (the line's byte rate, once the HELLO_REPLY says the queue).
    public private(set) var lineBudget: LineBudget
    /// When the first frame sent since the last valid one received left: the device's silence
    /// is counted from there. Nil while nothing is unanswered — a host that sends nothing (its
    /// queue blocked by a long write, its process starved) cannot blame the device for quiet.
    private var unansweredSince: UInt64?
    private var lastSend: UInt64 = 0
    /// When the last three frames were sent, oldest first (nil until three were): a paired
    /// heartbeat never comes later than three quarters of the lease after the oldest (see
    /// `heartbeatDueAt`).
    private var lastThreeSends: (UInt64?, UInt64?, UInt64?) = (nil, nil, nil)
    /// A quarter of the lease (§6.5); 25 ms until the HELLO_REPLY says the lease.
    private var heartbeatIntervalNanos: UInt64 = 25_000_000
    /// When the heartbeat goes out: on the tick grid, the first tick an eighth of an interval
    /// short of one interval after the last frame sent; exact, the lease divided by
    /// `heartbeatLeaseDivisor` after it (the interval is a quarter of the lease, at least 5 ms);
    /// paired, a third of the lease after it, but never later than three quarters of the lease
    /// after the third frame from last. So any two frames lost in a row, the next comes at most
    /// three quarters of the lease after the last one received, as with single heartbeats a
    /// quarter apart, whatever the DOTs' pace: without the bound, lone DOTs a little under a third
    /// of the lease apart (each standing in for a heartbeat) would leave no time to spare
    /// (`LinkMachineHeartbeatTests`: every DOT period from 5 to 200 ms). At an applicator's pace
    /// the bound never comes first.
    private var heartbeatDueAt: UInt64 {
        guard configuration.deadlines == .exact else {
            return lastSend &+ (heartbeatIntervalNanos - heartbeatIntervalNanos / 8)
        }
        guard heartbeatPaired else {
            return lastSend &+ 4 * heartbeatIntervalNanos / max(configuration.heartbeatLeaseDivisor, 2)
        }
        let third = lastSend &+ 4 * heartbeatIntervalNanos / 3
        guard let oldest = lastThreeSends.0 else { return third }
        return min(third, oldest &+ 3 * heartbeatIntervalNanos)
    }
    /// See `LinkConfiguration.pairedHeartbeat`: 1.4 on both sides (HEARTBEAT), one-shot deadlines.
    private var heartbeatPaired: Bool {
        configuration.pairedHeartbeat && configuration.deadlines == .exact && protocolMinorInUse >= 4
    }
    /// The tick grid (see `nextDeadline`): where it starts, and the last tick.
    private var tickOrigin: UInt64 = 0
    private var lastTickAt: UInt64?

    public private(set) var metrics = LinkMetrics()
    /// The last 100 frames each way, dumped to the log on any fault (Klipper's practice).
    public private(set) var history = FrameHistory(capacity: 100)

    private var out = LinkOutput()

    public init(configuration: LinkConfiguration = LinkConfiguration(), devicePath: String) {
        self.configuration = configuration
        self.devicePath = devicePath
        lineBudget = LineBudget(configuration: configuration, queueCapacity: 64)
        rtoNanos = lineBudget.initialRetransmissionTimeout.nanoseconds
    }

    // MARK: - Observation

    /// Dots sent and not yet confirmed done or returned, in send order.
    public var inFlight: [DotCommand] { outstanding[outstandingHead...].map(\.dot) }

    /// True while ARM or RESUME waits for the device's answer: a `held` STATUS then is the
    /// state before the command, not a new hold.
    public var decisionPending: Bool {
        guard let pendingCommand else { return resumeQueued }
        return pendingCommand.attemptsLeft != nil || resumeQueued
    }

    /// How many DOTs `send(dots:)` takes now: the window's room and the credit of the last report
    /// with the slots DOT_DONEs freed since (§6.1), 0 unless streaming to a ready or running
    /// device, after the handshake, with no fence pending.
    public var dotCredit: Int {
        guard streaming, !fencePending, !latched, !closed, !handshaking, let hello else { return 0 }
        guard let state = deviceStatus?.state, state == .ready || state == .running else { return 0 }
        let room = min(Int(hello.queueCapacity), lineBudget.window) - windowCount
        let credit = creditAtAck + freedSinceReport - Int(nextSeq - 1 - ackedThrough)
        return max(0, min(room, credit))
    }

    /// How much `dotCredit` the owner lets build up before it sends more (`dotCredit` at least
    /// this, or none): 1 — every freed slot at once — unless the device's queue would still hold
    /// `LinkConfiguration.dotRefillFloor` of work at the pace of the last DOT_DONEs (the faster of
    /// the last two intervals between them); then as many as leave that much queued, at most a
    /// quarter of the queue. Never more than the device's queue can free: the stream never waits
    /// on a credit that cannot come.
    public var dotRefillThreshold: Int {
        guard let floor = configuration.dotRefillFloor, let hello else { return 1 }
        let interval = min(doneArrivalIntervals.0, doneArrivalIntervals.1)
        guard interval > 0 else { return 1 }
        let depth = min(Int(hello.queueCapacity), lineBudget.window)
        let queuedForFloor = Int(clamping: (floor.nanoseconds + interval - 1) / interval)
        return max(1, min(depth / 4, depth - queuedForFloor))
    }

    /// When `tick` must be called next (the same clock as `now`); nil when the link is closed.
    /// Every timeout is checked on a grid of ticks one heartbeat interval apart, from the start of
    /// the handshake and again from the HELLO_REPLY (a quarter of the lease): the effective RTO,
    /// the four transmissions of a decision, the link-loss limit are those of a periodic tick,
    /// as the link has always had them; the machine only skips the ticks with nothing due.
    ///
    /// With `.exact` deadlines, no grid: the earliest of the heartbeat (a third of the lease
    /// after the last send, paired, by default), the link-loss limit, the retransmission
    /// timeouts, each at its own time; what
    /// was overdue at the last tick and could not be done (a retransmission behind a fence) is
    /// tried again `minimumRetransmissionTimeout` later, never in a spin.
    public var nextDeadline: UInt64? {
        guard started, !closed else { return nil }
        var due: UInt64
        if handshaking {
            due = lastSend &+ configuration.handshakeInterval.nanoseconds
        } else {
            due = heartbeatDueAt
            if let since = unansweredSince {
                due = min(due, since &+ configuration.linkLossTimeout.nanoseconds &+ 1)
            }
            if let pendingCommand { due = min(due, pendingCommand.lastSent &+ rtoNanos) }
            if let oldest = oldestUnacknowledged { due = min(due, oldest.sentAt &+ rtoNanos) }
        }
        if configuration.deadlines == .exact {
            if let last = lastTickAt, due <= last { return last &+ configuration.minimumRetransmissionTimeout.nanoseconds }
            return due
        }
        // The first grid tick at or after `due`, after the last tick (what is overdue but cannot
        // be done yet, a retransmission behind a fence, waits for the next tick, never spins).
        let period = heartbeatIntervalNanos
        let earliest = max(due, lastTickAt.map { $0 &+ 1 } ?? 0, tickOrigin &+ 1)
        return tickOrigin &+ (earliest - tickOrigin + period - 1) / period * period
    }

    /// The tick grid every deadline falls on: a driver may tick on every grid tick instead of
    /// waking exactly at `nextDeadline` (a tick with nothing due does nothing). Nil when closed.
    public var tickGrid: (origin: UInt64, interval: UInt64)? {
        guard started, !closed else { return nil }
        return (tickOrigin, heartbeatIntervalNanos)
    }

    // MARK: - Handshake

    /// Sends 0x00 (flushes a half-received frame in the device), then HELLO — the first with
    /// `nonce`, each repetition with its own — until the reply to the latest arrives (§6.7).
    /// Ends with `handshakeFinished`.
    public mutating func connect(nonce: UInt32, now: UInt64) -> LinkOutput {
        guard !started, !closed else { return take() }
        started = true
        tickOrigin = now
        handshaking = true
        baseNonce = nonce
        handshakeAttemptsLeft = configuration.handshakeAttempts
        let start = out.bytes.count
        out.bytes.append(0)
        sent(from: start, frames: 1, now: now)
        sendHello(now: now)
        return take()
    }

    private mutating func sendHello(now: UInt64) {
        handshakeAttemptsLeft -= 1
        helloCount &+= 1
        let lease = UInt16(clamping: configuration.requestedLease.milliseconds)
        send(Frame(.hello(Hello(versionMinor: configuration.protocolMinor, requestedLeaseMilliseconds: lease,
                                hostNonce: handshakeNonce))), now: now)
    }

    private mutating func finishHandshake(_ result: Result<HelloReply, LinkLoss>) {
        guard handshaking else { return }
        handshaking = false
        out.actions.append(.handshakeFinished(result))
    }

    // MARK: - Commands

    /// ARM at the start of a session (the operator confirmed the preflight). A device found
    /// `held` — its lease expired when an earlier host went away — is resumed instead, which is
    /// the same operator decision; a latched device is left alone (CLEAR needs its own action).
    /// Sent a bounded number of times: if the device does not become ready (it holds at once
    /// without skin contact, §6.9.8), the link reports `notTaken` and waits for the operator.
    public mutating func arm(now: UInt64) -> LinkOutput {
        guard !latched, !closed else { return take() }
        if let status = deviceStatus, status.state == .held, windowCount > 0 {
            return resume(now: now)  // dots still in flight: the fence first (see `resume`)
        }
        if let status = deviceStatus, status.state == .held {
            epoch = status.epoch
            fencePending = false
            sendDecision(.resume(epoch: status.epoch, nextSeq: UInt8(truncatingIfNeeded: nextSeq)), kind: .arm,
                         confirmation: .running(epoch: status.epoch), now: now)
        } else {
            sendDecision(.arm, kind: .arm, confirmation: .answered, now: now)
        }
        return take()
    }

    /// Allows DOTs (`dotCredit`) once the device is ready.
    public mutating func startStreaming() -> LinkOutput {
        streaming = true
        return take()
    }

    /// HOLD: the dot in the skin finishes, everything queued is fenced and returned (§6.4).
    public mutating func hold(now: UInt64) -> LinkOutput {
        sendFence(abort: false, now: now)
        return take()
    }

    /// ABORT: as HOLD, but the dot in the skin is abandoned at once.
    public mutating func abort(now: UInt64) -> LinkOutput {
        sendFence(abort: true, now: now)
        return take()
    }

    /// HOLD or ABORT with the next epoch, repeated until a STATUS confirms it.
    private mutating func sendFence(abort: Bool, now: UInt64) {
        guard !closed else { return }
        streaming = false
        fencePending = true
        resumeQueued = false
        let target = epoch &+ 1
        if abort {
            sendCommand(.abort(epoch: target), confirmation: .stopped(epoch: target), now: now)
        } else {
            sendCommand(.hold(epoch: target), confirmation: .held(epoch: target), now: now)
        }
    }

    /// RESUME after a hold (the operator's decision); streaming restarts when the device reports
    /// `ready`. Given while the hold is still under way it waits for the hold's confirmation and
    /// goes out with the new epoch (a RESUME with the old epoch would be ignored). Sent a bounded
    /// number of times: a device still held by its own cause (contact lost) answers `notTaken`.
    public mutating func resume(now: UInt64) -> LinkOutput {
        guard !latched, !closed else { return take() }
        if fencePending {
            resumeQueued = true
            return take()
        }
        // RESUME names the seq that comes next and the device skips to it (§6.4), so every dot
        // sent before must be settled first: one the device never took would otherwise be
        // counted done by the next DOT_DONE's cumulative confirmation (found by make fuzz: a late
        // HELLO retransmission restarted the device's host session, a RESUME skipped six DOTs it
        // had refused, and the DONE of the seventh confirmed all seven). With dots in flight and
        // no hold under way, the hold comes first and the resume waits for it, as above.
        if windowCount > 0 {
            sendFence(abort: false, now: now)
            resumeQueued = true
            return take()
        }
        sendResume(now: now)
        return take()
    }

    private mutating func sendResume(now: UInt64) {
        let resumeEpoch = epoch
        sendDecision(.resume(epoch: resumeEpoch, nextSeq: UInt8(truncatingIfNeeded: nextSeq)), kind: .resume,
                     confirmation: .running(epoch: resumeEpoch), now: now)
        streaming = true
    }

    /// E-STOP: twice in one write (a corrupted single frame must not delay it), repeated every
    /// RTO until the device confirms. Latches the link: no DOT is sent on it again.
    public mutating func estop(cause: FaultCode, now: UInt64) -> LinkOutput {
        sendEstop(cause: cause, now: now)
        return take()
    }

    private mutating func sendEstop(cause: FaultCode, now: UInt64) {
        latched = true
        streaming = false
        fencePending = true
        let frame = Frame(.estop(cause: cause))
        if !closed {
            let start = out.bytes.count
            out.bytes.append(contentsOf: Self.estopBytes(cause: cause))
            sent(from: start, frames: 2, now: now)
        }
        pendingCommand = PendingCommand(message: frame.message, lastSent: now, confirmation: .latched)
    }

    /// ESTOP twice: what `estop` writes, and what the e-stop path writes from any thread.
    public static func estopBytes(cause: FaultCode) -> [UInt8] {
        var bytes: [UInt8] = []
        let frame = Frame(.estop(cause: cause))
        frame.encode(into: &bytes)
        frame.encode(into: &bytes)
        return bytes
    }

    /// Ends the link: the port is closed, the device's lease then expires and it holds.
    public mutating func close() -> LinkOutput {
        closeLink()
        return take()
    }

    private mutating func closeLink() {
        guard !closed else { return }
        closed = true
        out.actions.append(.closePort)
        if disarmPending {
            disarmPending = false
            out.actions.append(.disarmFinished(false))
        }
    }

    /// The end of a session (§6.9.7): CLEAR, so the device is left disarmed (needle power off)
    /// rather than held or ready, then close. Sent unless the device is latched — it keeps its
    /// latch (its needle drive is already off; leaving it is the operator's action) — or a dot is
    /// still in flight. A last STATUS `running` with nothing in flight is stale (the `ready` after
    /// the last DOT_DONE was lost on the line): CLEAR goes all the same — a device really running
    /// ignores it (§6.9.7), one that is ready disarms. `disarmFinished(true)` once a STATUS shows
    /// `disarmed`; `disarmFinished(false)` when CLEAR was not sent or not confirmed after its
    /// attempts. Streaming has stopped before.
    public mutating func disarmAndClose(now: UInt64) -> LinkOutput {
        guard !closed else {
            out.actions.append(.disarmFinished(false))
            return take()
        }
        streaming = false
        resumeQueued = false
        guard let status = deviceStatus, hello != nil, !latched,
              (status.needleRetracted && (status.state == .ready || status.state == .held || status.state == .disarmed))
                || (status.state == .running && inFlight.isEmpty) else {
            closeLink()
            out.actions.append(.disarmFinished(false))
            return take()
        }
        if status.state == .disarmed {
            closeLink()
            out.actions.append(.disarmFinished(true))
            return take()
        }
        disarmPending = true
        sendDecision(.clear, kind: .clear, confirmation: .disarmed, now: now)
        return take()
    }

    // MARK: - Sending

    /// Sends DOTs, stamped with the current epoch, in one write (§6.1). Takes at most `dotCredit`;
    /// any beyond it come back at once as `dotsReturned` (never sent, so never injected).
    public mutating func send(dots: [DotCommand], now: UInt64) -> LinkOutput {
        let start = out.bytes.count
        var count = 0
        for var dot in dots {
            guard dotCredit > 0 else { break }
            dot.epoch = epoch
            let frame = Frame(seq: UInt8(truncatingIfNeeded: nextSeq), .dot(dot))
            frame.encode(into: &out.bytes)
            history.record(.sent, frame: frame, at: now)
            outstanding.append(Outstanding(seq: nextSeq, dot: dot, sentAt: now, retransmitted: false))
            nextSeq += 1
            count += 1
        }
        if count > 0 {
            compactOutstanding()
            metrics.dotFramesSent += count
            sent(from: start, frames: count, now: now)
        }
        if count < dots.count { out.actions.append(.event(.dotsReturned(Array(dots[count...])))) }
        return take()
    }

    private mutating func sendCommand(_ message: Message, confirmation: Confirmation, now: UInt64) {
        pendingCommand = PendingCommand(message: message, lastSent: now, confirmation: confirmation, attemptsLeft: nil)
        send(Frame(message), now: now)
    }

    /// ARM, RESUME or CLEAR: an operator's (or the session end's) one decision, repeated only to
    /// cover a lost frame.
    private mutating func sendDecision(_ message: Message, kind: Decision, confirmation: Confirmation, now: UInt64) {
        pendingCommand = PendingCommand(message: message, lastSent: now, confirmation: confirmation,
                                        attemptsLeft: Self.decisionAttempts - 1)
        pendingDecision = kind
        send(Frame(message), now: now)
    }

    /// The device did not take ARM, RESUME or CLEAR after every attempt.
    private mutating func giveUp(_ decision: Decision) {
        pendingCommand = nil
        pendingDecision = nil
        switch decision {
        case .arm, .resume:
            streaming = false
            out.actions.append(.event(.notTaken(decision == .arm ? .arm : .resume, deviceStatus)))
        case .clear:
            closeLink()
        }
    }

    private mutating func send(_ frame: Frame, now: UInt64) {
        history.record(.sent, frame: frame, at: now)
        guard !closed else { return }
        let start = out.bytes.count
        frame.encode(into: &out.bytes)
        sent(from: start, frames: 1, now: now)
    }

    /// Accounts for what was appended to `out.bytes` since `start`, `frames` frames of it.
    private mutating func sent(from start: Int, frames: Int, now: UInt64) {
        metrics.framesSent += frames
        metrics.bytesSent += out.bytes.count - start
        for _ in 0..<min(frames, 3) { lastThreeSends = (lastThreeSends.1, lastThreeSends.2, now) }
        lastSend = now
        if unansweredSince == nil { unansweredSince = now }
    }

    private var windowCount: Int { outstanding.count - outstandingHead }

    private var oldestUnacknowledged: Outstanding? {
        guard windowCount > 0 else { return nil }
        return outstanding[outstandingHead...].first { $0.seq > ackedThrough }
    }

    /// Resends every unacknowledged DOT from `fromSeq` (go-back-N).
    private mutating func retransmit(from fromSeq: UInt64, now: UInt64) {
        guard !fencePending, !latched, !closed else { return }
        let start = out.bytes.count
        var count = 0
        for index in outstandingHead..<outstanding.count where outstanding[index].seq >= fromSeq
            && outstanding[index].seq > ackedThrough
        {
            outstanding[index].retransmitted = true
            outstanding[index].sentAt = now
            let entry = outstanding[index]
            let frame = Frame(seq: UInt8(truncatingIfNeeded: entry.seq), .dot(entry.dot))
            frame.encode(into: &out.bytes)
            history.record(.sent, frame: frame, at: now)
            count += 1
        }
        guard count > 0 else { return }
        metrics.retransmissions += count
        sent(from: start, frames: count, now: now)
    }

    private mutating func compactOutstanding() {
        if outstandingHead > 64 && outstandingHead * 2 > outstanding.count {
            outstanding.removeFirst(outstandingHead)
            outstandingHead = 0
        }
    }

    // MARK: - Receiving

    /// Counts bytes read from the port (before they are decoded).
    public mutating func received(byteCount: Int) {
        metrics.bytesReceived += byteCount
    }

    /// One block decoded from the port: a frame, or one discarded by the decoder.
    public mutating func receive(_ event: FrameDecoder.Event, now: UInt64) -> LinkOutput {
        switch event {
        case .frame(let frame):
            handle(frame, now: now)
        case .discarded(let error, let count):
            metrics.badFramesReceived += 1
            out.actions.append(.log(.debug, "discarded \(count) bytes from the applicator: \(error)"))
        }
        return take()
    }

    private mutating func handle(_ frame: Frame, now: UInt64) {
        metrics.framesReceived += 1
        unansweredSince = nil
        lastReceivedAt = now
        history.record(.received, frame: frame, at: now)
        if let last = lastDeviceTxSeq {
            let gap = Int(frame.seq &- last &- 1)
            if gap > 0 && gap < 128 { metrics.deviceFramesLost += gap }
        }
        lastDeviceTxSeq = frame.seq

        switch frame.message {
        case .helloReply(let reply):
            handleHelloReply(reply, now: now)
        case .ack(let ack):
            handleAck(ack, now: now)
        case .nak(let nak):
            handleNak(nak, now: now)
        case .dotDone(let done):
            handleDotDone(done, now: now)
        case .status(let status):
            handleStatus(status, now: now)
        case .refused(let refused):
            handleRefused(refused)
        case .spacingReply(let minimum, _):
            handleSpacingReply(minimum, now: now)
        default:
            lost(.protocolViolation("host-only message \(frame.message.type) received"))
        }
        heartbeatWhileAwake(now: now)
    }

    /// With one-shot deadlines, a heartbeat more than half-way to due goes with the pass that
    /// handles a frame from the device instead of waking the driver's thread on its own a little
    /// later — unless the owner is about to send DOTs (its credit reached `dotRefillThreshold`),
    /// which stand in for it. At an applicator's pace, the queue refilled a quarter at a time,
    /// DOT_DONEs come about a lease apart with no DOT after them, and the heartbeat due just
    /// after each was a wake-up of its own (issue 15). A frame sent earlier than due only brings
    /// the next one earlier: every bound of `heartbeatDueAt` holds. An answer to the heartbeat
    /// itself comes well within half the wait, so this never feeds on its own answers.
    private mutating func heartbeatWhileAwake(now: UInt64) {
        guard configuration.deadlines == .exact, started, !closed, !handshaking else { return }
        // Timing first: while DOTs stream it already says no (the last send was just now).
        let due = heartbeatDueAt
        guard due > lastSend, elapsed(now, since: lastSend) >= (due - lastSend) / 2 else { return }
        guard dotCredit < dotRefillThreshold else { return }  // the threshold is at least 1
        sendHeartbeat(now: now)
    }

    private mutating func handleHelloReply(_ reply: HelloReply, now: UInt64) {
        guard handshaking, reply.hostNonce == handshakeNonce else { return }
        guard reply.versionMajor == ProtocolVersion.major else {
            lost(.handshakeFailed(
                "the applicator speaks protocol \(reply.versionMajor).\(reply.versionMinor), this smpctl speaks \(ProtocolVersion.major).\(ProtocolVersion.minor)"))
            return
        }
        let required: Capabilities = [.deduplication, .epochFence, .lease]
        guard reply.capabilities.isSuperset(of: required) else {
            lost(.handshakeFailed("the applicator lacks de-duplication, epoch fences or a lease"))
            return
        }
        if let problem = Self.outOfRange(reply, requestedLeaseMilliseconds: UInt16(clamping: configuration.requestedLease.milliseconds)) {
            lost(.handshakeFailed("the applicator's HELLO_REPLY is outside the protocol's ranges: \(problem); not armed"))
            return
        }
        hello = reply
        // A new host session on the device: what it sent before this HELLO reached it (a STATUS
        // answered to a heartbeat or an earlier HELLO's step) no longer describes it. No DOT
        // until this handshake's STATUS (found by make fuzz: a stale `ready` let DOTs out to a
        // device that was held).
        deviceStatus = nil
        statusWanted = false
        nextSeq = 1
        ackedThrough = 0
        epoch = 0
        creditAtAck = Int(reply.queueCapacity)
        reportCovers = 0
        freedSinceReport = 0
        protocolMinorInUse = min(reply.versionMinor, configuration.protocolMinor)
        lineBudget = LineBudget(configuration: configuration, queueCapacity: Int(reply.queueCapacity),
                                protocolMinor: protocolMinorInUse)
        if srttNanos == 0 { rtoNanos = lineBudget.initialRetransmissionTimeout.nanoseconds }
        outstanding.removeAll()
        outstandingHead = 0
        leaseNanos = UInt64(reply.leaseMilliseconds) * 1_000_000
        heartbeatIntervalNanos = max(leaseNanos / 4, 5_000_000)
        tickOrigin = now
        advanceHandshake(after: .hello, status: nil, now: now)
    }

    /// Starts the step after `done`; a STATUS just received ends the handshake when only the
    /// final STATUS is left.
    private mutating func advanceHandshake(after done: HandshakeStep, status: Status?, now: UInt64) {
        guard let hello else { return }
        var next: HandshakeStep = .status
        if done == .hello, configuration.minimumDotIntervalMilliseconds > 0, hello.capabilities.contains(.pace) {
            next = .pace
        } else if done == .hello || done == .pace, configuration.minimumSpacingMicrometres > 0,
                  hello.capabilities.contains(.spacing) {
            next = .spacing
        }
        if next == .status, status != nil {
            handshakeStep = .hello
            finishHandshake(.success(hello))
            return
        }
        handshakeStep = next
        handshakeAttemptsLeft = configuration.handshakeAttempts
        sendHandshakeStep(now: now)
    }

    private mutating func sendHandshakeStep(now: UInt64) {
        handshakeAttemptsLeft -= 1
        switch handshakeStep {
        case .hello:
            handshakeAttemptsLeft += 1  // sendHello counts its own
            sendHello(now: now)
        case .pace:
            send(Frame(.pace(minimumIntervalMilliseconds: configuration.minimumDotIntervalMilliseconds)), now: now)
        case .spacing:
            send(Frame(.spacing(minimumSpacingMicrometres: configuration.minimumSpacingMicrometres)), now: now)
        case .status:
            send(Frame(.statusRequest), now: now)
        }
    }

    private mutating func handleSpacingReply(_ minimumSpacingMicrometres: UInt32, now: UInt64) {
        guard handshaking, handshakeStep == .spacing,
              minimumSpacingMicrometres >= configuration.minimumSpacingMicrometres else { return }
        advanceHandshake(after: .spacing, status: nil, now: now)
    }

    /// The first HELLO_REPLY field outside the protocol's ranges (firmware-protocol.md,
    /// HELLO_REPLY), or nil. A device that answers outside them cannot be trusted with the
    /// window or the lease: a queue of 0 would leave the host waiting for credit forever, a
    /// lease longer than asked would let the device run on with no heartbeat.
    public static func outOfRange(_ reply: HelloReply, requestedLeaseMilliseconds: UInt16) -> String? {
        if reply.queueCapacity < 1 || reply.queueCapacity > 64 {
            return "queue_capacity \(reply.queueCapacity) (1–64)"
        }
        let leaseCeiling = requestedLeaseMilliseconds == 0 ? 250 : min(max(requestedLeaseMilliseconds, 20), 250)
        if reply.leaseMilliseconds < 20 || reply.leaseMilliseconds > leaseCeiling {
            return "lease_ms \(reply.leaseMilliseconds) (20–\(leaseCeiling): never longer than the \(requestedLeaseMilliseconds) ms asked for)"
        }
        if reply.bootID == 0 { return "boot_id 0 (never 0)" }
        let limits = reply.limits
        if limits.depthMinMicrometres > limits.depthMaxMicrometres {
            return "depth_min_um \(limits.depthMinMicrometres) > depth_max_um \(limits.depthMaxMicrometres)"
        }
        if limits.dwellMinMicroseconds > limits.dwellMaxMicroseconds {
            return "dwell_min_us \(limits.dwellMinMicroseconds) > dwell_max_us \(limits.dwellMaxMicroseconds)"
        }
        if limits.travelSpeedMicrometresPerSecond == 0 { return "travel_speed_um_s 0 (must be > 0)" }
        if limits.travelXMicrometres > UInt32(Int32.max) || limits.travelYMicrometres > UInt32(Int32.max) {
            return "travel \(limits.travelXMicrometres) × \(limits.travelYMicrometres) µm (at most \(Int32.max))"
        }
        return nil
    }

    /// Maps an 8-bit sequence number to the latest 64-bit one at or below `nextSeq - 1`.
    private func widen(_ seq: UInt8) -> UInt64 {
        let top = nextSeq - 1
        let back = UInt64(UInt8(truncatingIfNeeded: top) &- seq)
        return top >= back ? top - back : 0
    }

    private mutating func handleAck(_ ack: Ack, now: UInt64) {
        let seq = widen(ack.ackSeq)
        guard seq > ackedThrough, seq < nextSeq else { return }
        for index in outstandingHead..<outstanding.count where outstanding[index].seq == seq {
            if !outstanding[index].retransmitted { sampleRTT(elapsed(now, since: outstanding[index].sentAt)) }
        }
        ackedThrough = seq
        creditAtAck = Int(ack.freeSlots)
        reportCovers = seq
        freedSinceReport = 0
        if ack.epoch != epoch { wantStatus(now: now) }
    }

    /// The device is not where this host thinks (it fenced on its own, or it is not armed) and
    /// the STATUS that said so may have been lost: ask now, and let the heartbeat ask until a
    /// STATUS comes. At 1.3 or older every heartbeat asks anyway.
    private mutating func wantStatus(now: UInt64) {
        guard !statusWanted, !handshaking else { return }
        statusWanted = true
        if protocolMinorInUse >= 4 { send(Frame(.statusRequest), now: now) }
    }

    private mutating func handleNak(_ nak: Nak, now: UInt64) {
        metrics.naksReceived += 1
        switch nak.reason {
        case .outOfOrder, .badFrame:
            // Fast retransmit, at most once per smoothed RTT (§6.3).
            guard elapsed(now, since: lastFastRetransmit) > max(UInt64(srttNanos), 2_000_000) else { return }
            lastFastRetransmit = now
            retransmit(from: widen(nak.expectedSeq &- 1) + 1, now: now)
        case .queueFull:
            creditAtAck = 0
            reportCovers = ackedThrough
            freedSinceReport = 0
        default:
            // not armed / held: the STATUS that follows the state change fences what is left.
            wantStatus(now: now)
        }
    }

    private mutating func handleDotDone(_ done: DotDone, now: UInt64) {
        var end = outstandingHead
        while end < outstanding.count, UInt8(truncatingIfNeeded: outstanding[end].seq) != done.dotSeq { end += 1 }
        guard end < outstanding.count else { return }  // already confirmed by a STATUS
        guard outstanding[end].dot.dotID == done.dotID else {
            sendEstop(cause: .hostEstop, now: now)
            lost(.protocolViolation(
                "DOT_DONE for dot \(done.dotID) at seq \(done.dotSeq), but that seq carried dot \(outstanding[end].dot.dotID)"))
            return
        }
        // This dot was done after the last report (its DOT_DONE came after it). Earlier ones it
        // confirms lost their DOT_DONE, maybe before the report: they count from the next one.
        if outstanding[end].seq <= reportCovers { freedSinceReport += 1 }
        if let last = lastDoneArrival { doneArrivalIntervals = (doneArrivalIntervals.1, elapsed(now, since: last)) }
        lastDoneArrival = now
        confirmDone(through: end, deviceTime: done.deviceTimeMicroseconds, doneCount: done.doneCount)
    }

    /// Dots run in sequence order, so the device's done_count for each earlier dot follows.
    private mutating func confirmDone(through end: Int, deviceTime: UInt64, doneCount: UInt32) {
        if outstanding[end].seq > ackedThrough { ackedThrough = outstanding[end].seq }
        for index in outstandingHead...end {
            // Earlier dots whose DOT_DONE was lost completed at a time not known here.
            out.actions.append(.event(.dotDone(
                dotID: outstanding[index].dot.dotID, deviceTimeMicroseconds: index == end ? deviceTime : 0,
                deviceDoneCount: doneCount &- UInt32(end - index))))
        }
        outstandingHead = end + 1
        compactOutstanding()
    }

    private mutating func handleStatus(_ status: Status, now: UInt64) {
        let previous = deviceStatus
        deviceStatus = status
        statusWanted = false
        if handshaking {
            if handshakeStep == .pace, status.paceMilliseconds >= configuration.minimumDotIntervalMilliseconds {
                advanceHandshake(after: .pace, status: status, now: now)
            } else if handshakeStep == .status {
                advanceHandshake(after: .status, status: status, now: now)
            }
        }
        creditAtAck = Int(status.freeSlots)
        let acked = widen(status.ackSeq)
        if acked > ackedThrough && acked < nextSeq { ackedThrough = acked }
        // Completions it reports below (lost DOT_DONEs) are in its `free_slots` already.
        reportCovers = min(acked, ackedThrough)
        freedSinceReport = 0

        // Completions the device reports that we have not seen as DOT_DONE (lost frames).
        if status.doneCount > 0, windowCount > 0, (previous.map { status.doneCount > $0.doneCount } ?? true) {
            var end = outstandingHead
            while end < outstanding.count,
                !(UInt8(truncatingIfNeeded: outstanding[end].seq) == status.lastDoneSeq
                    && outstanding[end].dot.dotID == status.lastDoneDotID)
            {
                end += 1
            }
            if end < outstanding.count { confirmDone(through: end, deviceTime: 0, doneCount: status.doneCount) }
        }

        if let pending = pendingCommand, pending.confirmation.isMet(by: status) {
            pendingCommand = nil
            let decision = pendingDecision
            pendingDecision = nil
            switch decision {
            case .arm where !(status.state == .ready || status.state == .running):
                // ARM answered by a hold (no skin contact) or a latch: never resumed from here.
                streaming = false
                out.actions.append(.event(.notTaken(.arm, status)))
            case .clear:
                if disarmPending {
                    disarmPending = false
                    closeLink()
                    out.actions.append(.disarmFinished(true))
                }
            default:
                break
            }
            // The hold an operator's RESUME was waiting for is complete: it goes out once the
            // fence below has returned the dots and the owner has seen them (`settle`).
            resumeAfterFence = resumeQueued && status.state == .held
        }
        if status.state.isLatched {
            latched = true
            streaming = false
        }

        let fenced = status.state == .held || status.state.isLatched
            || (status.state == .disarmed && previous.map { $0.state != .disarmed } == true)
        if fenced && status.needleRetracted && (windowCount > 0 || fencePending) && Self.isNotOlder(status.epoch, than: epoch)
            && (status.state != .held || isAfterEveryDotInFlight(status))
        {
            confirmFence(status)
        }
        if status.state == .held || status.state.isLatched {
            epoch = Self.isNotOlder(status.epoch, than: epoch) ? status.epoch : epoch
        }
        if previous != status { out.actions.append(.event(.deviceStatus(status))) }
        if status.state.isLatched, previous?.state.isLatched != true {
            dumpHistory(reason: "applicator latched \(status.state): \(status.fault)")
        }
    }

    /// The owner has handled the events of the last step. What waited for its reaction goes
    /// out now: the RESUME queued behind a hold the last STATUS confirmed — unless the owner
    /// meanwhile ended the session, held again or e-stopped (as when the link called the owner
    /// from inside that STATUS and looked again after).
    public mutating func settle(now: UInt64) -> LinkOutput {
        if resumeAfterFence {
            resumeAfterFence = false
            if resumeQueued, !closed, !latched {
                resumeQueued = false
                fencePending = false
                sendResume(now: now)
            }
        }
        return take()
    }

    /// A held STATUS speaks for the DOTs in flight only in an epoch newer than theirs (§6.4): every
    /// hold (HOLD, ABORT, the device's own) moves the epoch on, so a `held` in the epoch the dots
    /// went out in was sent before the device took them: a late or repeated frame, or the state
    /// from before the RESUME or HELLO that started the epoch. Taken as a fence, it returned dots
    /// the device went on to inject (make fuzz, the link-machine target). A latch or a disarm
    /// speaks for everything, whatever its epoch: nothing queued outlives either.
    private func isAfterEveryDotInFlight(_ status: Status) -> Bool {
        guard let newest = outstanding.last, windowCount > 0 else { return true }
        return Self.isNewer(status.epoch, than: newest.dot.epoch)
    }

    /// Everything still outstanding after a confirmed fence was not executed (§6.4) — except the
    /// dot an e-stop or abort interrupted, and, after a reboot, everything in flight.
    private mutating func confirmFence(_ status: Status) {
        fencePending = false
        epoch = status.epoch
        guard windowCount > 0 else { return }
        let remaining = inFlight
        outstanding.removeAll(keepingCapacity: true)
        outstandingHead = 0
        ackedThrough = nextSeq - 1
        if status.state == .disarmed {
            out.actions.append(.event(.dotsInDoubt(remaining)))
            return
        }
        // A hold lets the dot in the skin finish (it arrives as DOT_DONE); a latch or an abort
        // cuts it short and names it in current_dot_id.
        let cutShort = status.state.isLatched || status.fault == .hostAbort
        var returned: [DotCommand] = []
        for dot in remaining {
            if cutShort && status.currentDotID != 0 && dot.dotID == status.currentDotID {
                out.actions.append(.event(.dotInterrupted(dotID: dot.dotID)))
            } else {
                returned.append(dot)
            }
        }
        if !returned.isEmpty { out.actions.append(.event(.dotsReturned(returned))) }
    }

    private mutating func handleRefused(_ refused: Refused) {
        out.actions.append(.event(.refused(refused)))
        if refused.state.isLatched {
            latched = true
            streaming = false
        }
    }

    // MARK: - Time: handshake attempts, link loss, retransmission timeout, heartbeat

    /// Time passed: does whatever is due at `now` (see `nextDeadline`).
    public mutating func tick(now t: UInt64) -> LinkOutput {
        guard started, !closed else { return take() }
        // A tick far later than it was due means the host itself stalled: what the device sent
        // meanwhile is still unread, so its silence is counted afresh from now. "Far": as a
        // periodic tick at the heartbeat interval would have seen it (a gap over 4 intervals,
        // at least 100 ms).
        if unansweredSince != nil, let due = nextDeadline,
           elapsed(t, since: due) > max(4 * heartbeatIntervalNanos, 100_000_000) - heartbeatIntervalNanos {
            unansweredSince = t
        }
        lastTickAt = t
        if handshaking {
            if elapsed(t, since: lastSend) >= configuration.handshakeInterval.nanoseconds {
                if handshakeAttemptsLeft <= 0 {
                    let attempts = configuration.handshakeAttempts
                    let why: String = switch handshakeStep {
                    case .hello: "no HELLO reply from \(devicePath) after \(attempts) attempts: is it an smp applicator, and is its firmware running?"
                    case .pace: "the applicator did not confirm a minimum of \(configuration.minimumDotIntervalMilliseconds) ms between dots (PACE) after \(attempts) attempts"
                    case .spacing: "the applicator did not confirm a minimum spacing of \(configuration.minimumSpacingMicrometres) µm (SPACING) after \(attempts) attempts"
                    case .status: "the applicator answered HELLO but sent no STATUS after \(attempts) requests"
                    }
                    lost(.handshakeFailed(why))
                    return take()
                }
                sendHandshakeStep(now: t)
            }
            return take()
        }
        if let since = unansweredSince {
            let silence = elapsed(t, since: since)
            if silence > configuration.linkLossTimeout.nanoseconds {
                lost(.silent(milliseconds: Int(silence / 1_000_000)))
                return take()
            }
        }
        if var pending = pendingCommand, elapsed(t, since: pending.lastSent) >= rtoNanos {
            if let left = pending.attemptsLeft, left <= 0, let decision = pendingDecision {
                giveUp(decision)
                if closed { return take() }
            } else {
                pending.lastSent = t
                pending.attemptsLeft = pending.attemptsLeft.map { $0 - 1 }
                pendingCommand = pending
                send(Frame(pending.message), now: t)
            }
        }
        if let oldest = oldestUnacknowledged, elapsed(t, since: oldest.sentAt) >= rtoNanos {
            // RFC 6298 §5.5: back off.
            rtoNanos = min(rtoNanos * 2, lineBudget.maximumRetransmissionTimeout.nanoseconds)
            metrics.retransmissionTimeoutMicroseconds = Int(rtoNanos / 1000)
            retransmit(from: oldest.seq, now: t)
        }
        // The heartbeat (§6.5): see `heartbeatDueAt`.
        if t >= heartbeatDueAt {
            sendHeartbeat(now: t)
        }
        return take()
    }

    /// HEARTBEAT when both sides speak 1.4 and the device was heard from within the lease (at
    /// most a quarter of the link-loss limit): it renews the lease and the device does not answer,
    /// so a streaming link — whose ACKs and DOT_DONEs show the device alive — carries no STATUS
    /// for it. Otherwise STATUS_REQUEST: its answer shows the device alive and says its state.
    /// Either way the frame counts as sent and unanswered (`unansweredSince`), so a device that
    /// falls silent is found lost as before: the first heartbeat after a lease of silence asks.
    /// Paired, a HEARTBEAT follows in the same write: it keeps the lease if the line loses the
    /// first, and asks nothing a second time.
    private mutating func sendHeartbeat(now: UInt64) {
        let quietWindow = min(leaseNanos, configuration.linkLossTimeout.nanoseconds / 4)
        if protocolMinorInUse >= 4, !statusWanted, let heard = lastReceivedAt, elapsed(now, since: heard) < quietWindow {
            send(Frame(.heartbeat), now: now)
        } else {
            send(Frame(.statusRequest), now: now)
        }
        if heartbeatPaired { send(Frame(.heartbeat), now: now) }
    }

    /// RFC 6298 §2 with Karn's rule (the caller passes only samples of frames sent once).
    private mutating func sampleRTT(_ sampleNanos: UInt64) {
        let r = Double(sampleNanos)
        if srttNanos == 0 {
            srttNanos = r
            rttvarNanos = r / 2
        } else {
            rttvarNanos = 0.75 * rttvarNanos + 0.25 * abs(srttNanos - r)
            srttNanos = 0.875 * srttNanos + 0.125 * r
        }
        let rto = UInt64(srttNanos + max(4 * rttvarNanos, 1_000_000))
        rtoNanos = min(max(rto, lineBudget.minimumRetransmissionTimeout.nanoseconds),
                       lineBudget.maximumRetransmissionTimeout.nanoseconds)
        metrics.smoothedRTTMicroseconds = Int(srttNanos / 1000)
        metrics.retransmissionTimeoutMicroseconds = Int(rtoNanos / 1000)
    }

    /// The current retransmission timeout, nanoseconds.
    public var retransmissionTimeoutNanoseconds: UInt64 { rtoNanos }

    // MARK: - The port

    /// The port's descriptor is closed: by the host (nil) or because the device went away.
    public mutating func portClosed(_ error: SerialPortError?) -> LinkOutput {
        if let error { lost(.disconnected(error)) } else { lost(.closedByHost) }
        return take()
    }

    /// A write of this machine's bytes failed: the link is lost.
    public mutating func writeFailed(_ error: SerialPortError) -> LinkOutput {
        lost(.disconnected(error))
        return take()
    }

    private mutating func lost(_ loss: LinkLoss) {
        guard !closed else { return }
        if case .closedByHost = loss {} else {
            out.actions.append(.log(.error, "link to \(devicePath) lost: \(loss)"))
            dumpHistory(reason: "\(loss)")
        }
        let inDoubt = inFlight
        outstanding.removeAll()
        outstandingHead = 0
        closeLink()
        finishHandshake(.failure(loss))
        if !inDoubt.isEmpty { out.actions.append(.event(.dotsInDoubt(inDoubt))) }
        out.actions.append(.event(.metrics(metrics)))
        out.actions.append(.event(.linkLost(loss)))
    }

    private mutating func dumpHistory(reason: String) {
        out.actions.append(.log(.warning, "last frames on \(devicePath) (\(reason)):\n\(history.dump())"))
    }

    private mutating func take() -> LinkOutput {
        defer { out = LinkOutput() }
        return out
    }

    /// Hands back a step's output once its bytes are written and its actions carried out: the
    /// next step appends into the same storage, so a step that sends a frame allocates nothing
    /// (a fresh buffer grew three times per frame; issue 16). Optional: a driver that keeps its
    /// outputs, or never calls this, gets the same bytes and actions.
    public mutating func recycle(_ output: inout LinkOutput) {
        guard out.bytes.isEmpty, out.actions.isEmpty else { return }
        output.bytes.removeAll(keepingCapacity: true)
        output.actions.removeAll(keepingCapacity: true)
        swap(&out, &output)
    }

    /// Serial-number arithmetic (RFC 1982) on epochs.
    static func isNotOlder(_ a: UInt16, than b: UInt16) -> Bool {
        Int16(bitPattern: a &- b) >= 0
    }

    static func isNewer(_ a: UInt16, than b: UInt16) -> Bool {
        Int16(bitPattern: a &- b) > 0
    }

    /// Monotonic difference that never traps.
    private func elapsed(_ t: UInt64, since earlier: UInt64) -> UInt64 { t > earlier ? t - earlier : 0 }
}

/// A ring of the most recent frames in each direction.
public struct FrameHistory: Sendable {
    public enum Direction: String, Sendable { case sent = "→", received = "←" }
    public struct Entry: Sendable {
        public var direction: Direction
        public var frame: Frame
        public var uptimeNanoseconds: UInt64
    }
    private var sent: [Entry] = []
    private var received: [Entry] = []
    private var sentNext = 0
    private var receivedNext = 0
    public let capacity: Int

    public init(capacity: Int) { self.capacity = capacity }

    mutating func record(_ direction: Direction, frame: Frame, at time: UInt64) {
        let entry = Entry(direction: direction, frame: frame, uptimeNanoseconds: time)
        switch direction {
        case .sent: Self.put(entry, into: &sent, next: &sentNext, capacity: capacity)
        case .received: Self.put(entry, into: &received, next: &receivedNext, capacity: capacity)
        }
    }

    private static func put(_ entry: Entry, into ring: inout [Entry], next: inout Int, capacity: Int) {
        if ring.count < capacity { ring.append(entry) } else { ring[next] = entry }
        next = (next + 1) % capacity
    }

    /// Both directions merged in time order.
    public var entries: [Entry] {
        (sent + received).sorted { $0.uptimeNanoseconds < $1.uptimeNanoseconds }
    }

    /// One line per frame. Written field by field: `"\(message)"` prints through reflection,
    /// ~10 µs a frame, and a dump of 200 frames runs on the link's thread at the moment a
    /// device latches.
    public func dump() -> String {
        var text = ""
        for entry in entries {
            if !text.isEmpty { text += "\n" }
            text += "\(entry.uptimeNanoseconds / 1000) µs \(entry.direction.rawValue) seq \(entry.frame.seq) "
            text += Self.summary(of: entry.frame.message)
        }
        return text
    }

    static func summary(of message: Message) -> String {
        switch message {
        case .hello(let hello):
            return "HELLO v\(hello.versionMajor).\(hello.versionMinor) lease \(hello.requestedLeaseMilliseconds) ms nonce \(hello.hostNonce)"
        case .statusRequest: return "STATUS_REQUEST"
        case .heartbeat: return "HEARTBEAT"
        case .arm: return "ARM"
        case .clear: return "CLEAR"
        case .pace(let interval): return "PACE \(interval) ms"
        case .spacing(let spacing): return "SPACING \(spacing) µm"
        case .dot(let dot):
            return "DOT id \(dot.dotID) epoch \(dot.epoch) x \(dot.xMicrometres) y \(dot.yMicrometres) µm depth \(dot.depthMicrometres) µm dwell \(dot.dwellMicroseconds) µs"
        case .hold(let epoch): return "HOLD epoch \(epoch)"
        case .resume(let epoch, let nextSeq): return "RESUME epoch \(epoch) next seq \(nextSeq)"
        case .abort(let epoch): return "ABORT epoch \(epoch)"
        case .estop(let cause): return "ESTOP \(cause)"
        case .helloReply(let reply):
            return "HELLO_REPLY v\(reply.versionMajor).\(reply.versionMinor) boot \(reply.bootID) queue \(reply.queueCapacity) lease \(reply.leaseMilliseconds) ms nonce \(reply.hostNonce) done \(reply.doneCount) last \(reply.lastDoneDotID)"
        case .ack(let ack): return "ACK seq \(ack.ackSeq) free \(ack.freeSlots) epoch \(ack.epoch)"
        case .nak(let nak): return "NAK expected \(nak.expectedSeq) \(nak.reason) free \(nak.freeSlots)"
        case .dotDone(let done):
            return "DOT_DONE seq \(done.dotSeq) id \(done.dotID) done \(done.doneCount) at \(done.deviceTimeMicroseconds) µs"
        case .status(let status):
            return "STATUS \(status.state) \(status.fault) queue \(status.queueDepth) free \(status.freeSlots) epoch \(status.epoch) ack \(status.ackSeq) last done seq \(status.lastDoneSeq) id \(status.lastDoneDotID) done \(status.doneCount) current \(status.currentDotID) retracted \(status.needleRetracted) pace \(status.paceMilliseconds) ms"
        case .refused(let refused):
            return "REFUSED seq \(refused.seq) id \(refused.dotID) \(refused.code) value \(refused.value) \(refused.state) \(refused.fault)"
        case .spacingReply(let spacing, let ringSize): return "SPACING_REPLY \(spacing) µm ring \(ringSize)"
        }
    }
}
