import Dispatch
import FirmwareProtocol
import Logging

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

    public init() {}
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

/// What the link tells its owner. Delivered on the link's queue, in order.
public enum LinkEvent: Sendable, Hashable {
    case handshake(HelloReply)
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

/// The host side of the applicator protocol: handshake, reliable in-order delivery of DOT frames
/// within the device's window, heartbeat inside the lease, epoch fences, latched shutdown.
///
/// Confined to `queue`: every method must be called on it, every event is delivered on it. The
/// streaming path (the runner and this link) is one component on one queue, so a dot goes from
/// the plan to the serial fd without a thread hop.
public final class ApplicatorLink: @unchecked Sendable {
    public let queue: DispatchQueue
    public let configuration: LinkConfiguration
    private let port: SerialPort
    private var logger: Logger

    /// Called for every event, on `queue`.
    public var onEvent: (LinkEvent) -> Void = { _ in }
    /// Pulled whenever the window has room and streaming is allowed. Return nil when there is
    /// nothing to send now. The owner checks each dot against the envelope before returning it.
    public var dotSource: () -> DotCommand? = { nil }

    // Handshake
    public private(set) var hello: HelloReply?
    private var handshakeNonce: UInt32 = 0
    private var handshakeAttemptsLeft = 0
    /// The steps after HELLO_REPLY (§6.7.3), each repeated until the device confirms it: PACE
    /// (its STATUS shows the pace), SPACING (its SPACING_REPLY shows the spacing), and last a
    /// STATUS, so the owner knows the device's state (held, latched, the cut-short dot) before
    /// it decides anything — a resume settles its record from it.
    private enum HandshakeStep { case hello, pace, spacing, status }
    private var handshakeStep = HandshakeStep.hello
    private var handshakeCompletion: ((Result<HelloReply, LinkLoss>) -> Void)?

    // Sequencing (firmware-protocol.md §6.1–6.3)
    private struct Outstanding {
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
    private var lastFastRetransmit: UInt64 = 0
    private var consecutiveTimeouts = 0

    // Device state as last reported
    public private(set) var deviceStatus: Status?
    private var epoch: UInt16 = 0
    private var lastDeviceTxSeq: UInt8?

    // Commands awaiting confirmation by STATUS
    private struct PendingCommand {
        var message: Message
        var lastSent: UInt64
        var confirmed: (Status) -> Bool
        /// Transmissions left, for the commands that must not outlive the operator's decision
        /// (ARM, RESUME, CLEAR): a RESUME repeated until the device takes it would resume the
        /// moment a device-side cause (contact lost) went away, with nobody asked. Nil: repeated
        /// until confirmed (HOLD, ABORT, ESTOP — the safe direction).
        var attemptsLeft: Int?
    }
    private var pendingCommand: PendingCommand?
    /// Transmissions of ARM, RESUME or CLEAR before the link gives up (`notTaken`): enough to
    /// cover lost frames, never so many that a device-side cause could clear meanwhile unseen.
    static let decisionAttempts = 4
    /// An operator's RESUME given while the HOLD before it is not yet confirmed: sent, with the
    /// new epoch, once the hold is.
    private var resumeQueued = false
    /// Set while `dotSource` runs: a command the owner gives from inside it is deferred until the
    /// batch being built has been written (no re-entrancy into the transmit buffer).
    private var pullingDots = false
    /// Called once when CLEAR at the end has been answered (true: the device reported disarmed)
    /// or given up (false), then the port is closed.
    private var disarmCompletion: ((Bool) -> Void)?
    /// True from HOLD/ABORT/ESTOP until the fence is confirmed; no DOT is sent meanwhile.
    private var fencePending = false
    /// Streaming is allowed only when armed and not held; set by the owner.
    public private(set) var streaming = false
    /// Set by a latched state or a local e-stop; a latched device is never armed again by this link.
    public private(set) var latched = false

    // Timing
    private var srttNanos: Double = 0
    private var rttvarNanos: Double = 0
    private var rtoNanos: UInt64
    /// When the first frame sent since the last valid one received left: the device's silence
    /// is counted from there. Nil while nothing is unanswered — a host that sends nothing (its
    /// queue blocked by a long write, its process starved) cannot blame the device for quiet.
    private var unansweredSince: UInt64?
    private var lastTick: UInt64?
    private var lastSend: UInt64 = 0
    private var heartbeatTimer: (any DispatchSourceTimer)?
    private var heartbeatIntervalNanos: UInt64 = 25_000_000

    public private(set) var metrics = LinkMetrics()
    private var decoder = FrameDecoder()
    private var txBuffer: [UInt8] = []
    private var closed = false

    /// The last 100 frames each way, dumped to the log on any fault (Klipper's practice).
    public private(set) var history = FrameHistory(capacity: 100)

    public init(port: SerialPort, configuration: LinkConfiguration = LinkConfiguration(), logger: Logger) {
        self.port = port
        self.queue = port.queue
        self.configuration = configuration
        self.logger = logger
        self.rtoNanos = configuration.initialRetransmissionTimeout.nanoseconds
        txBuffer.reserveCapacity(4096)
    }

    public var devicePath: String { port.path }

    // MARK: - Handshake

    /// Starts reading, sends HELLO until a matching reply arrives (§6.7). Call on `queue`.
    public func connect(completion: @escaping (Result<HelloReply, LinkLoss>) -> Void) {
        dispatchPrecondition(condition: .onQueue(queue))
        handshakeCompletion = completion
        portStarted = true
        port.start(
            onBytes: { [weak self] bytes in self?.receive(bytes) },
            onClosed: { [weak self] error in
                guard let self else { return }
                self.queue.async { self.portClosed(error) }
            })
        var rng = SystemRandomNumberGenerator()
        handshakeNonce = rng.next()
        handshakeAttemptsLeft = configuration.handshakeAttempts
        send(raw: [0])  // flush a half-received frame in the device
        sendHello()
        startHeartbeat()
    }

    private func sendHello() {
        handshakeAttemptsLeft -= 1
        let lease = UInt16(clamping: configuration.requestedLease.milliseconds)
        send(Frame(.hello(Hello(requestedLeaseMilliseconds: lease, hostNonce: handshakeNonce))))
    }

    private func finishHandshake(_ result: Result<HelloReply, LinkLoss>) {
        guard let completion = handshakeCompletion else { return }
        handshakeCompletion = nil
        completion(result)
    }

    // MARK: - Commands (call on queue)

    /// ARM at the start of a session (the operator confirmed the preflight). A device found
    /// `held` — its lease expired when an earlier host went away — is resumed instead, which is
    /// the same operator decision; a latched device is left alone (CLEAR needs its own action).
    /// Sent a bounded number of times: if the device does not become ready (it holds at once
    /// without skin contact, §6.9.8), the link reports `notTaken` and waits for the operator.
    public func arm() {
        dispatchPrecondition(condition: .onQueue(queue))
        guard !latched, !closed else { return }
        if let status = deviceStatus, status.state == .held {
            epoch = status.epoch
            fencePending = false
            sendDecision(.resume(epoch: status.epoch, nextSeq: UInt8(truncatingIfNeeded: nextSeq)), kind: .arm) { [epoch = status.epoch] in
                ($0.state == .ready || $0.state == .running) && $0.epoch == epoch
            }
        } else {
            // Any answer is ARM's answer: ready, or held at once (no contact), or latched.
            sendDecision(.arm, kind: .arm) { $0.state != .disarmed }
        }
    }

    /// Pull from `dotSource` now (after the owner made more dots available).
    public func pump() {
        dispatchPrecondition(condition: .onQueue(queue))
        fill()
    }

    /// Begin or continue pulling dots from `dotSource`.
    public func startStreaming() {
        dispatchPrecondition(condition: .onQueue(queue))
        streaming = true
        fill()
    }

    /// HOLD: the dot in the skin finishes, everything queued is fenced and returned (§6.4).
    public func hold() {
        dispatchPrecondition(condition: .onQueue(queue))
        guard !closed else { return }
        if pullingDots { return queue.async { self.hold() } }
        streaming = false
        fencePending = true
        resumeQueued = false
        let target = epoch &+ 1
        sendCommand(.hold(epoch: target)) { [weak self] status in
            status.state == .held && status.needleRetracted && self?.isNotOlder(status.epoch, than: target) == true
        }
    }

    /// ABORT: as HOLD, but the dot in the skin is abandoned at once.
    public func abort() {
        dispatchPrecondition(condition: .onQueue(queue))
        guard !closed else { return }
        if pullingDots { return queue.async { self.abort() } }
        streaming = false
        fencePending = true
        resumeQueued = false
        let target = epoch &+ 1
        sendCommand(.abort(epoch: target)) { [weak self] status in
            (status.state == .held || status.state.isLatched) && status.needleRetracted
                && self?.isNotOlder(status.epoch, than: target) == true
        }
    }

    /// RESUME after a hold (the operator's decision); streaming restarts when the device reports
    /// `ready`. Given while the hold is still under way it waits for the hold's confirmation and
    /// goes out with the new epoch (a RESUME with the old epoch would be ignored). Sent a bounded
    /// number of times: a device still held by its own cause (contact lost) answers `notTaken`.
    public func resume() {
        dispatchPrecondition(condition: .onQueue(queue))
        guard !latched, !closed else { return }
        if pullingDots { return queue.async { self.resume() } }
        if fencePending {
            resumeQueued = true
            return
        }
        sendResume()
    }

    private func sendResume() {
        let resumeEpoch = epoch
        sendDecision(.resume(epoch: resumeEpoch, nextSeq: UInt8(truncatingIfNeeded: nextSeq)), kind: .resume) { status in
            (status.state == .ready || status.state == .running) && status.epoch == resumeEpoch
        }
        streaming = true
    }

    /// E-STOP: written at once, twice (a corrupted single frame must not delay it), repeated
    /// every RTO until the device confirms. Latches the link: no DOT is sent on it again.
    public func estop(cause: FaultCode) {
        dispatchPrecondition(condition: .onQueue(queue))
        latched = true
        streaming = false
        fencePending = true
        let frame = Frame(.estop(cause: cause))
        txBuffer.removeAll(keepingCapacity: true)
        frame.encode(into: &txBuffer)
        frame.encode(into: &txBuffer)
        flushTx()
        pendingCommand = PendingCommand(message: frame.message, lastSent: now()) { $0.state.isLatched }
    }

    /// E-STOP from any thread (an interlock edge): the frame is written straight to the fd, before
    /// anything queued, then the link latches on its queue. Returns whether the bytes were written.
    /// The bytes: 0x00 (ends any half-written frame on the wire) then ESTOP twice.
    @discardableResult
    public func emergencyStop(cause: FaultCode) -> Bool {
        var bytes: [UInt8] = [0]
        let frame = Frame(.estop(cause: cause))
        frame.encode(into: &bytes)
        frame.encode(into: &bytes)
        let written = port.emergencyWrite(bytes)
        queue.async { self.estop(cause: cause) }
        return written
    }

    /// Stops the heartbeat and closes the port. The device's lease then expires and it holds.
    public func close() {
        dispatchPrecondition(condition: .onQueue(queue))
        guard !closed else { return }
        if pullingDots { return queue.async { self.close() } }
        closed = true
        heartbeatTimer?.cancel()
        heartbeatTimer = nil
        port.close()
        if let completion = disarmCompletion {
            disarmCompletion = nil
            whenPortClosed { completion(false) }
        }
    }

    /// The end of a session (§6.9.7): CLEAR, so the device is left disarmed (needle power off)
    /// rather than held or ready, then close. Sent unless the device is latched — it keeps its
    /// latch (its needle drive is already off; leaving it is the operator's action) — or a dot is
    /// still in flight. A last STATUS `running` with nothing in flight is stale (the `ready` after
    /// the last DOT_DONE was lost on the line): CLEAR goes all the same — a device really running
    /// ignores it (§6.9.7), one that is ready disarms. `completion(true)`
    /// once a STATUS shows `disarmed`; `completion(false)` when CLEAR was not sent or not
    /// confirmed after its attempts. Either comes once the port's descriptor is closed, so the
    /// caller may open the path again at once. Streaming has stopped before.
    public func disarmAndClose(completion: @escaping @Sendable (Bool) -> Void) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard !closed else { return whenPortClosed { completion(false) } }
        if pullingDots { return queue.async { self.disarmAndClose(completion: completion) } }
        streaming = false
        resumeQueued = false
        guard let status = deviceStatus, hello != nil, !latched,
              (status.needleRetracted && (status.state == .ready || status.state == .held || status.state == .disarmed))
                || (status.state == .running && inFlight.isEmpty) else {
            close()
            return whenPortClosed { completion(false) }
        }
        if status.state == .disarmed {
            close()
            return whenPortClosed { completion(true) }
        }
        disarmCompletion = completion
        sendDecision(.clear, kind: .clear) { $0.state == .disarmed }
    }

    /// Dots sent and not yet confirmed done or returned, in send order.
    public var inFlight: [DotCommand] { outstanding[outstandingHead...].map(\.dot) }

    // MARK: - Sending

    private func sendCommand(_ message: Message, confirmed: @escaping (Status) -> Bool) {
        pendingCommand = PendingCommand(message: message, lastSent: now(), confirmed: confirmed, attemptsLeft: nil)
        send(Frame(message))
    }

    /// What a bounded command stands for when it is given up (`notTaken`).
    private enum Decision { case arm, resume, clear }

    /// ARM, RESUME or CLEAR: an operator's (or the session end's) one decision, repeated only to
    /// cover a lost frame.
    private func sendDecision(_ message: Message, kind: Decision, confirmed: @escaping (Status) -> Bool) {
        pendingCommand = PendingCommand(message: message, lastSent: now(), confirmed: confirmed,
                                        attemptsLeft: Self.decisionAttempts - 1)
        pendingDecision = kind
        send(Frame(message))
    }

    private var pendingDecision: Decision?

    /// True while ARM or RESUME waits for the device's answer: a `held` STATUS then is the
    /// state before the command, not a new hold.
    public var decisionPending: Bool {
        guard let pendingCommand else { return resumeQueued }
        return pendingCommand.attemptsLeft != nil || resumeQueued
    }

    /// The device did not take ARM, RESUME or CLEAR after every attempt.
    private func giveUp(_ decision: Decision) {
        pendingCommand = nil
        pendingDecision = nil
        switch decision {
        case .arm, .resume:
            streaming = false
            onEvent(.notTaken(decision == .arm ? .arm : .resume, deviceStatus))
        case .clear:
            close()
        }
    }

    private func send(_ frame: Frame) {
        txBuffer.removeAll(keepingCapacity: true)
        frame.encode(into: &txBuffer)
        history.record(.sent, frame: frame, at: now())
        flushTx()
    }

    private func send(raw: [UInt8]) {
        txBuffer.removeAll(keepingCapacity: true)
        txBuffer.append(contentsOf: raw)
        flushTx()
    }

    private func flushTx() {
        guard !closed, !txBuffer.isEmpty else { return }
        do {
            try port.write(txBuffer)
            metrics.framesSent += 1
            metrics.bytesSent += txBuffer.count
            lastSend = now()
            if unansweredSince == nil { unansweredSince = lastSend }
        } catch {
            lost(.disconnected(error))
        }
    }

    private var windowCount: Int { outstanding.count - outstandingHead }

    private var canSendDot: Bool {
        guard streaming, !fencePending, !latched, !closed, let hello else { return false }
        guard let state = deviceStatus?.state, state == .ready || state == .running else { return false }
        if windowCount >= Int(hello.queueCapacity) { return false }
        let sentAfterAck = Int(nextSeq - 1 - ackedThrough)
        return creditAtAck - sentAfterAck > 0
    }

    /// Keeps the device queue full from the credits in ACKs (§6.1). Several DOT frames go out in
    /// one write(2).
    private func fill() {
        guard canSendDot else { return }
        txBuffer.removeAll(keepingCapacity: true)
        let sentAt = now()
        var count = 0
        pullingDots = true
        defer { pullingDots = false }
        while canSendDot, var dot = dotSource() {
            dot.epoch = epoch
            let frame = Frame(seq: UInt8(truncatingIfNeeded: nextSeq), .dot(dot))
            frame.encode(into: &txBuffer)
            history.record(.sent, frame: frame, at: sentAt)
            outstanding.append(Outstanding(seq: nextSeq, dot: dot, sentAt: sentAt, retransmitted: false))
            nextSeq += 1
            count += 1
        }
        guard count > 0 else { return }
        compactOutstanding()
        metrics.dotFramesSent += count
        flushTx()
        metrics.framesSent += count - 1
    }

    /// Resends every unacknowledged DOT from `fromSeq` (go-back-N).
    private func retransmit(from fromSeq: UInt64) {
        guard !fencePending, !latched, !closed else { return }
        txBuffer.removeAll(keepingCapacity: true)
        let sentAt = now()
        var count = 0
        for index in outstandingHead..<outstanding.count where outstanding[index].seq >= fromSeq
            && outstanding[index].seq > ackedThrough
        {
            outstanding[index].retransmitted = true
            outstanding[index].sentAt = sentAt
            let entry = outstanding[index]
            let frame = Frame(seq: UInt8(truncatingIfNeeded: entry.seq), .dot(entry.dot))
            frame.encode(into: &txBuffer)
            history.record(.sent, frame: frame, at: sentAt)
            count += 1
        }
        guard count > 0 else { return }
        metrics.retransmissions += count
        flushTx()
        metrics.framesSent += count - 1
    }

    private func compactOutstanding() {
        if outstandingHead > 64 && outstandingHead * 2 > outstanding.count {
            outstanding.removeFirst(outstandingHead)
            outstandingHead = 0
        }
    }

    // MARK: - Receiving

    private func receive(_ bytes: UnsafeRawBufferPointer) {
        metrics.bytesReceived += bytes.count
        decoder.feed(bytes) { event in
            switch event {
            case .frame(let frame):
                self.handle(frame)
            case .discarded(let error, let count):
                self.metrics.badFramesReceived += 1
                self.logger.debug("discarded \(count) bytes from the applicator: \(error)")
            }
        }
        if !closed { fill() }
    }

    private func handle(_ frame: Frame) {
        metrics.framesReceived += 1
        unansweredSince = nil
        history.record(.received, frame: frame, at: now())
        if let last = lastDeviceTxSeq {
            let gap = Int(frame.seq &- last &- 1)
            if gap > 0 && gap < 128 { metrics.deviceFramesLost += gap }
        }
        lastDeviceTxSeq = frame.seq

        switch frame.message {
        case .helloReply(let reply):
            handleHelloReply(reply)
        case .ack(let ack):
            handleAck(ack)
        case .nak(let nak):
            handleNak(nak)
        case .dotDone(let done):
            handleDotDone(done)
        case .status(let status):
            handleStatus(status)
        case .refused(let refused):
            handleRefused(refused)
        case .spacingReply(let minimum, _):
            handleSpacingReply(minimum)
        default:
            lost(.protocolViolation("host-only message \(frame.message.type) received"))
        }
    }

    private func handleHelloReply(_ reply: HelloReply) {
        guard handshakeCompletion != nil, reply.hostNonce == handshakeNonce else { return }
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
        nextSeq = 1
        ackedThrough = 0
        epoch = 0
        creditAtAck = Int(reply.queueCapacity)
        outstanding.removeAll()
        outstandingHead = 0
        let lease = UInt64(reply.leaseMilliseconds) * 1_000_000
        heartbeatIntervalNanos = max(lease / 4, 5_000_000)
        startHeartbeat()
        onEvent(.handshake(reply))
        advanceHandshake(after: .hello, status: nil)
    }

    /// Starts the step after `done`; a STATUS just received ends the handshake when only the
    /// final STATUS is left.
    private func advanceHandshake(after done: HandshakeStep, status: Status?) {
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
        sendHandshakeStep()
    }

    private func sendHandshakeStep() {
        handshakeAttemptsLeft -= 1
        switch handshakeStep {
        case .hello:
            handshakeAttemptsLeft += 1  // sendHello counts its own
            sendHello()
        case .pace:
            send(Frame(.pace(minimumIntervalMilliseconds: configuration.minimumDotIntervalMilliseconds)))
        case .spacing:
            send(Frame(.spacing(minimumSpacingMicrometres: configuration.minimumSpacingMicrometres)))
        case .status:
            send(Frame(.statusRequest))
        }
    }

    private func handleSpacingReply(_ minimumSpacingMicrometres: UInt32) {
        guard handshakeCompletion != nil, handshakeStep == .spacing,
              minimumSpacingMicrometres >= configuration.minimumSpacingMicrometres else { return }
        advanceHandshake(after: .spacing, status: nil)
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

    private func handleAck(_ ack: Ack) {
        let seq = widen(ack.ackSeq)
        guard seq > ackedThrough, seq < nextSeq else { return }
        let t = now()
        for index in outstandingHead..<outstanding.count where outstanding[index].seq == seq {
            if !outstanding[index].retransmitted { sampleRTT(elapsed(t, since: outstanding[index].sentAt)) }
        }
        ackedThrough = seq
        creditAtAck = Int(ack.freeSlots)
        consecutiveTimeouts = 0
    }

    private func handleNak(_ nak: Nak) {
        metrics.naksReceived += 1
        switch nak.reason {
        case .outOfOrder, .badFrame:
            let t = now()
            guard elapsed(t, since: lastFastRetransmit) > max(UInt64(srttNanos), 2_000_000) else { return }
            lastFastRetransmit = t
            retransmit(from: widen(nak.expectedSeq &- 1) + 1)
        case .queueFull:
            creditAtAck = 0
        default:
            // not armed / held: the STATUS that follows the state change fences what is left.
            break
        }
    }

    private func handleDotDone(_ done: DotDone) {
        var end = outstandingHead
        while end < outstanding.count, UInt8(truncatingIfNeeded: outstanding[end].seq) != done.dotSeq { end += 1 }
        guard end < outstanding.count else { return }  // already confirmed by a STATUS
        guard outstanding[end].dot.dotID == done.dotID else {
            estop(cause: .hostEstop)
            lost(.protocolViolation(
                "DOT_DONE for dot \(done.dotID) at seq \(done.dotSeq), but that seq carried dot \(outstanding[end].dot.dotID)"))
            return
        }
        confirmDone(through: end, deviceTime: done.deviceTimeMicroseconds, doneCount: done.doneCount)
    }

    /// Dots run in sequence order, so the device's done_count for each earlier dot follows.
    private func confirmDone(through end: Int, deviceTime: UInt64, doneCount: UInt32) {
        if outstanding[end].seq > ackedThrough { ackedThrough = outstanding[end].seq }
        for index in outstandingHead...end {
            // Earlier dots whose DOT_DONE was lost completed at a time not known here.
            onEvent(.dotDone(dotID: outstanding[index].dot.dotID, deviceTimeMicroseconds: index == end ? deviceTime : 0,
                             deviceDoneCount: doneCount &- UInt32(end - index)))
        }
        outstandingHead = end + 1
        compactOutstanding()
    }

    private func handleStatus(_ status: Status) {
        var resumeAfterFence = false
        let previous = deviceStatus
        deviceStatus = status
        if handshakeCompletion != nil {
            if handshakeStep == .pace, status.paceMilliseconds >= configuration.minimumDotIntervalMilliseconds {
                advanceHandshake(after: .pace, status: status)
            } else if handshakeStep == .status {
                advanceHandshake(after: .status, status: status)
            }
        }
        creditAtAck = Int(status.freeSlots)
        let acked = widen(status.ackSeq)
        if acked > ackedThrough && acked < nextSeq { ackedThrough = acked }

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

        if let pending = pendingCommand, pending.confirmed(status) {
            pendingCommand = nil
            let decision = pendingDecision
            pendingDecision = nil
            switch decision {
            case .arm where !(status.state == .ready || status.state == .running):
                // ARM answered by a hold (no skin contact) or a latch: never resumed from here.
                streaming = false
                onEvent(.notTaken(.arm, status))
            case .clear:
                if let completion = disarmCompletion {
                    disarmCompletion = nil
                    close()
                    whenPortClosed { completion(true) }
                }
            default:
                break
            }
            // The hold an operator's RESUME was waiting for is complete: it goes out once the
            // fence below has returned the dots.
            resumeAfterFence = resumeQueued && status.state == .held
        }
        if status.state.isLatched {
            latched = true
            streaming = false
        }

        let fenced = status.state == .held || status.state.isLatched
            || (status.state == .disarmed && previous.map { $0.state != .disarmed } == true)
        if fenced && status.needleRetracted && (windowCount > 0 || fencePending) && isNotOlder(status.epoch, than: epoch) {
            confirmFence(status)
        }
        if status.state == .held || status.state.isLatched {
            epoch = isNotOlder(status.epoch, than: epoch) ? status.epoch : epoch
        }
        if previous != status { onEvent(.deviceStatus(status)) }
        if status.state.isLatched, previous?.state.isLatched != true {
            dumpHistory(reason: "applicator latched \(status.state): \(status.fault)")
        }
        if resumeAfterFence, resumeQueued, !closed, !latched {
            resumeQueued = false
            fencePending = false
            sendResume()
        }
    }

    /// Everything still outstanding after a confirmed fence was not executed (§6.4) — except the
    /// dot an e-stop or abort interrupted, and, after a reboot, everything in flight.
    private func confirmFence(_ status: Status) {
        fencePending = false
        epoch = status.epoch
        guard windowCount > 0 else { return }
        let remaining = outstanding[outstandingHead...].map(\.dot)
        outstanding.removeAll(keepingCapacity: true)
        outstandingHead = 0
        ackedThrough = nextSeq - 1
        if status.state == .disarmed {
            onEvent(.dotsInDoubt(remaining))
            return
        }
        // A hold lets the dot in the skin finish (it arrives as DOT_DONE); a latch or an abort
        // cuts it short and names it in current_dot_id.
        let cutShort = status.state.isLatched || status.fault == .hostAbort
        var returned: [DotCommand] = []
        for dot in remaining {
            if cutShort && status.currentDotID != 0 && dot.dotID == status.currentDotID {
                onEvent(.dotInterrupted(dotID: dot.dotID))
            } else {
                returned.append(dot)
            }
        }
        if !returned.isEmpty { onEvent(.dotsReturned(returned)) }
    }

    private func handleRefused(_ refused: Refused) {
        onEvent(.refused(refused))
        if refused.state.isLatched {
            latched = true
            streaming = false
        }
    }

    // MARK: - Heartbeat, retransmission timeout, link loss

    private func startHeartbeat() {
        heartbeatTimer?.cancel()
        let timer = DispatchSource.makeTimerSource(queue: queue)
        let interval = DispatchTimeInterval.nanoseconds(Int(heartbeatIntervalNanos))
        timer.schedule(deadline: .now() + interval, repeating: interval, leeway: .microseconds(500))
        timer.setEventHandler { [weak self] in self?.tick() }
        heartbeatTimer = timer
        timer.resume()
    }

    private func tick() {
        guard !closed else { return }
        let t = now()
        // A tick far later than its period means the host itself stalled: what the device sent
        // meanwhile is still unread, so its silence is counted afresh from now.
        if let previous = lastTick, elapsed(t, since: previous) > max(4 * heartbeatIntervalNanos, 100_000_000),
           unansweredSince != nil {
            unansweredSince = t
        }
        lastTick = t
        if handshakeCompletion != nil {
            if elapsed(t, since: lastSend) >= configuration.handshakeInterval.nanoseconds {
                if handshakeAttemptsLeft <= 0 {
                    let attempts = configuration.handshakeAttempts
                    let why: String = switch handshakeStep {
                    case .hello: "no HELLO reply from \(port.path) after \(attempts) attempts: is it an smp applicator, and is its firmware running?"
                    case .pace: "the applicator did not confirm a minimum of \(configuration.minimumDotIntervalMilliseconds) ms between dots (PACE) after \(attempts) attempts"
                    case .spacing: "the applicator did not confirm a minimum spacing of \(configuration.minimumSpacingMicrometres) µm (SPACING) after \(attempts) attempts"
                    case .status: "the applicator answered HELLO but sent no STATUS after \(attempts) requests"
                    }
                    lost(.handshakeFailed(why))
                    return
                }
                sendHandshakeStep()
            }
            return
        }
        if let since = unansweredSince {
            let silence = elapsed(t, since: since)
            if silence > configuration.linkLossTimeout.nanoseconds {
                lost(.silent(milliseconds: Int(silence / 1_000_000)))
                return
            }
        }
        if var pending = pendingCommand, elapsed(t, since: pending.lastSent) >= rtoNanos {
            if let left = pending.attemptsLeft, left <= 0, let decision = pendingDecision {
                giveUp(decision)
                if closed { return }
            } else {
                pending.lastSent = t
                pending.attemptsLeft = pending.attemptsLeft.map { $0 - 1 }
                pendingCommand = pending
                send(Frame(pending.message))
            }
        }
        if windowCount > 0, let oldest = outstanding[outstandingHead...].first(where: { $0.seq > ackedThrough }),
            elapsed(t, since: oldest.sentAt) >= rtoNanos
        {
            consecutiveTimeouts += 1
            rtoNanos = min(rtoNanos * 2, configuration.maximumRetransmissionTimeout.nanoseconds)
            retransmit(from: oldest.seq)
        }
        if elapsed(t, since: lastSend) >= heartbeatIntervalNanos - heartbeatIntervalNanos / 8 {
            send(Frame(.statusRequest))
        }
        metrics.smoothedRTTMicroseconds = Int(srttNanos / 1000)
        metrics.retransmissionTimeoutMicroseconds = Int(rtoNanos / 1000)
        fill()
    }

    /// RFC 6298 §2 with Karn's rule (the caller passes only samples of frames sent once).
    private func sampleRTT(_ sampleNanos: UInt64) {
        let r = Double(sampleNanos)
        if srttNanos == 0 {
            srttNanos = r
            rttvarNanos = r / 2
        } else {
            rttvarNanos = 0.75 * rttvarNanos + 0.25 * abs(srttNanos - r)
            srttNanos = 0.875 * srttNanos + 0.125 * r
        }
        let rto = UInt64(srttNanos + max(4 * rttvarNanos, 1_000_000))
        rtoNanos = min(max(rto, configuration.minimumRetransmissionTimeout.nanoseconds),
                       configuration.maximumRetransmissionTimeout.nanoseconds)
    }

    private func portClosed(_ error: SerialPortError?) {
        portIsClosed = true
        if let error { lost(.disconnected(error)) } else { lost(.closedByHost) }
        let callbacks = afterPortClosed
        afterPortClosed.removeAll()
        for callback in callbacks { callback() }
    }

    /// Set once the port's descriptor is closed (its lock released): the path may be opened again.
    private var portIsClosed = false
    private var afterPortClosed: [() -> Void] = []

    /// Runs `body` on `queue` once the port's descriptor is closed — at once if it is, or if the
    /// port was never started (nothing to wait for).
    private func whenPortClosed(_ body: @escaping () -> Void) {
        if portIsClosed || !portStarted { body() } else { afterPortClosed.append(body) }
    }
    private var portStarted = false

    private func lost(_ loss: LinkLoss) {
        guard !closed else { return }
        if case .closedByHost = loss {} else {
            logger.error("link to \(port.path) lost: \(loss)")
            dumpHistory(reason: "\(loss)")
        }
        let inDoubt = inFlight
        outstanding.removeAll()
        outstandingHead = 0
        close()
        finishHandshake(.failure(loss))
        if !inDoubt.isEmpty { onEvent(.dotsInDoubt(inDoubt)) }
        onEvent(.metrics(metrics))
        onEvent(.linkLost(loss))
    }

    private func dumpHistory(reason: String) {
        logger.warning("last frames on \(port.path) (\(reason)):\n\(history.dump())")
    }

    private func isNotOlder(_ a: UInt16, than b: UInt16) -> Bool {
        Int16(bitPattern: a &- b) >= 0
    }

    private func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// Monotonic difference that never traps: a timestamp taken later in the same tick can be
    /// newer than `t`.
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

    public func dump() -> String {
        entries.map { "\($0.uptimeNanoseconds / 1000) µs \($0.direction.rawValue) seq \($0.frame.seq) \($0.frame.message)" }
            .joined(separator: "\n")
    }
}
