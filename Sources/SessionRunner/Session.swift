import SMPSystem
import SMPInterlocks
import SMPPlan
import Dispatch
import FirmwareProtocol
import Logging
import NeedleDriver

/// What a session reports while it runs. Delivered in order on the session's queue.
public enum SessionEvent: Sendable {
    /// After the handshake: what is about to run. Answer `true` from `confirm` to arm.
    case preflight(Preflight)
    case armed
    /// `done` of `total` dots confirmed by the device.
    case progress(SessionProgress)
    case held(reason: String)
    case resumed
    case deviceStatus(Status)
    /// A dot was cut short (e-stop, fault, abort): partially injected, never resent.
    case dotInterrupted(dotID: UInt32)
    /// Dots whose fate the host cannot know (device reboot, link lost mid-dot).
    case dotsInDoubt([UInt32])
    case refused(String)
    case linkMetrics(LinkMetrics)
    /// An interlock transition (e-stop pressed, pedal released, operator reset, …).
    case interlock(InterlockTransition)
    case finished(SessionAccount)
}

/// What the technician sees before arming.
public struct Preflight: Sendable {
    public var planID: String
    public var dotCount: Int
    public var regions: [String: Int]
    public var devicePath: String
    public var firmwareID: String
    public var protocolVersion: String
    public var envelope: SafetyEnvelope
    /// Predicted from the device's declared travel speed, descend and retract times.
    public var estimatedDurationSeconds: Double
    /// The record of this session (nil when records are off).
    public var sessionID: Int64?
    /// Dots done in earlier runs of a resumed session.
    public var alreadyDone: Int
    /// Dots of the plan left out by the operator's decision (`--ambiguous skip`), never sent.
    public var skipped = 0
}

public struct SessionProgress: Sendable {
    public var done: Int
    public var total: Int
    public var lastDotID: UInt32
    public var region: String?
}

/// How a session ended.
public enum SessionOutcome: String, Sendable, Codable {
    /// Every dot confirmed done by the device.
    case completed
    /// Stopped before the end, needle retracted, resumable (hold, interlock, operator).
    case held
    /// Latched e-stop or device fault.
    case stopped
    /// Link lost or device unavailable.
    case linkLost = "link-lost"
    /// The plan did not fit the device's envelope; nothing was armed.
    case refusedPlan = "refused-plan"
    /// The operator declined at the preflight prompt; nothing was armed.
    case declined
    /// Resume needs the operator's decision on dots whose fate is unknown; nothing was armed.
    case needsDecision = "needs-decision"
}

/// The exact account of a session: every plan dot is in exactly one of these lists.
public struct SessionAccount: Sendable {
    public var outcome: SessionOutcome
    public var reason: String?
    public var total: Int
    /// Confirmed done by the device (DOT_DONE or STATUS), in completion order.
    public var done: [UInt32]
    /// Cut short by an e-stop, fault or abort.
    public var interrupted: [UInt32]
    /// In flight when the link or the device's memory was lost.
    public var inDoubt: [UInt32]
    /// Never injected.
    public var notStarted: [UInt32]
    /// Confirmed done by the device after the treatment record stopped being writable: done on
    /// the skin, but the records still hold them as sent (in doubt). Never to be injected again
    /// (`smpctl resume … --ambiguous skip`). Empty unless `recordsFailed`.
    public var doneUnrecorded: [UInt32] = []
    public var metrics: LinkMetrics
    public var firmwareID: String?
    public var elapsedSeconds: Double
    /// The record of this session, when records are kept.
    public var sessionID: Int64?
    /// Done in earlier runs of a resumed session.
    public var previouslyDone = 0
    /// Left out by the operator's decision.
    public var skipped = 0
    /// The treatment record could not be written: the session was held for that reason.
    public var recordsFailed = false
    /// The applicator confirmed, at the end, that it is disarmed (CLEAR answered by STATUS
    /// `disarmed`). False: it was latched (its latch keeps the needle drive off), unreachable,
    /// or did not answer.
    public var deviceDisarmed = false
    /// The needle-power output could not be switched off at the end: it may still be on.
    public var needlePowerOffFailure: NeedlePowerOffFailure?
}

public struct SessionOptions: Sendable {
    public var envelope: SafetyEnvelope = .builtIn
    public var link = LinkConfiguration()
    /// Where the session is recorded; nil only in tests of the streaming path alone.
    public var recording: RecordingOptions?
    /// The machine's interlocks; nil only in tests of the streaming path alone (then the
    /// preflight confirmation arms directly).
    public var interlocks: Interlocks?
    /// A hold the applicator reports on its own (skin contact lost, lease expired) or an ARM or
    /// RESUME it did not take: true keeps the session held until the operator resumes or ends it
    /// (an operator at a terminal: the same flow as the operator's own hold); false ends it held
    /// at once, resumable (no operator to ask). Never resumed by the host on its own.
    public var waitForOperatorOnDeviceHold = false
    public init() {}
}

/// What the operator decided for dots whose fate is unknown (ambiguous or cut short).
public enum AmbiguousDecision: String, Sendable, CaseIterable {
    /// Leave them out: they count as skipped, never injected again.
    case skip
    /// Inject them again: the operator accepts a possible second injection at those spots.
    case redo
}

/// How the session is recorded.
public struct RecordingOptions: Sendable {
    public var recorder: any SessionRecorder
    /// Continue this recorded session instead of starting a new one.
    public var resumeSessionID: Int64?
    public var ambiguousDecision: AmbiguousDecision?
    /// Written to the audit trail when the session starts (e.g. a clinical override and its reason).
    public var auditAtStart: [RecordBatch.Event] = []

    public init(recorder: any SessionRecorder, resumeSessionID: Int64? = nil,
                ambiguousDecision: AmbiguousDecision? = nil) {
        self.recorder = recorder
        self.resumeSessionID = resumeSessionID
        self.ambiguousDecision = ambiguousDecision
    }
}

/// Runs one plan on one applicator: handshake, envelope ∩ device limits, preflight, ARM, stream,
/// exact account. Confined to the link's queue (one component, one queue); the records are
/// written by a `RecordJournal` on its own queue, and the session acts on a change only after
/// it is committed: a dot is claimed durably before it is sent, and counted done only once its
/// DOT_DONE is durable.
public final class Session: @unchecked Sendable {
    public let plan: Plan
    private let options: SessionOptions
    private let logger: Logger
    /// Confined to the session's queue.
    private var link: ApplicatorLink?
    /// What the operator's requests (other threads: signal handlers, the interlock queue) see:
    /// the link once `run` opened it, and a `requestEnd` that came before — taken by `run`, so a
    /// request is never lost between the two.
    private struct Handle {
        var link: ApplicatorLink?
        var earlyEnd: String?
        /// Set by `armAndStream` in the same critical section that finds no `earlyEnd`: an end
        /// requested before arming is seen by arming, or the request sees the arming — never
        /// neither (a Ctrl-C in that moment once printed "nothing was armed" and then armed).
        var armed = false
    }
    private let handle = Locked(Handle())
    /// The link for requests from any thread (they then hop to its queue).
    private var requestLink: ApplicatorLink? { handle.withLock { $0.link } }
    private var journal: RecordJournal?
    private var effectiveEnvelope: SafetyEnvelope
    public private(set) var sessionID: Int64?

    /// Plan dots still to claim, in plan order; `retry` (dots returned by a fence) goes first.
    private var todo: [PlanDot] = []
    private var cursor = 0
    private var retry: [DotCommand] = []
    /// Claims submitted to the journal and not yet committed (at most two batches, in order),
    /// then committed and ready to send.
    private var claiming: [DotCommand] = []
    private var ready: [DotCommand] = []
    private var readyHead = 0
    /// Size of the next claim batch: twice the dots the stream took while the last claim was
    /// being committed (the commit latency as the stream sees it), within `claimBatchRange`. More
    /// is claimed while fewer than two batches' worth are claimed ahead, and a second batch may be
    /// in flight while the first commits, so a slow fsync does not stall the stream. At an
    /// applicator's real pace a commit takes no dots and the batch stays at 32: 64–96 claimed
    /// ahead, as with the fixed batch of 64 before. The cap bounds what a device reboot can leave
    /// `sent` (ambiguous, for the operator) without ever having been sent.
    private var claimBatch = Session.claimBatchRange.lowerBound
    static let claimBatchRange = 32...256
    /// Per claim batch in flight, oldest first: its size and `pulled` when it was submitted.
    private var claimsInFlight: [(count: Int, pulledAtSubmit: Int)] = []
    /// Dots handed to the link so far.
    private var pulled = 0

    private var done: [UInt32] = []
    private var doneSet: Set<UInt32> = []
    private var previouslyDone = 0
    private var skipped = 0
    private var interrupted: [UInt32] = []
    private var inDoubt: [UInt32] = []
    /// The plan's dots by id: the region for progress, the file position for messages.
    private let planDotByID: DotsByID
    private var outcome: SessionOutcome?
    private var reason: String?
    private var startNanos: UInt64 = 0
    private var onEvent: (SessionEvent) -> Void = { _ in }
    private var finished: (SessionAccount) -> Void = { _ in }
    private var holding = false
    private var lastMetrics = LinkMetrics()
    private var lastStatus: Status?
    private var pendingEnd: SessionOutcome?
    /// Set once the device reported ready or running in this session: a `held` seen before that
    /// is the state an earlier host left it in, which arming resumes.
    private var deviceRunning = false
    /// This session sent ARM (once: the operator's confirmation).
    private var armedByUs = false
    private var recordFailure: RecordStoreError?
    /// Layer 2 of the dot-rate limit while running: the skin entries DOT_DONE implies.
    private var paceMonitor: DotPace.Monitor
    /// Layer 2 of the spacing limit: every dot sent or done in this session, by position.
    private var spacing: SpacingLedger
    /// Layer-2 envelope check can be switched off by tests only (`@testable`), to show the
    /// firmware still refuses.
    var checkEnvelopeBeforeEncoding = true
    /// Layer-1 re-validation against the device's limits; tests switch it off to reach layers 2–3.
    var skipValidationAfterHandshake = false

    public init(plan: Plan, options: SessionOptions = SessionOptions(), logger: Logger) {
        self.plan = plan
        var options = options
        // The dot-rate limit goes to the applicator as PACE in the handshake (§6.10). A rate PACE
        // cannot carry ends the session before anything is sent (below); it is never clamped.
        options.link.minimumDotIntervalMilliseconds = (try? DotPace.paceMilliseconds(options.envelope)) ?? .max
        // The minimum spacing goes to the applicator as SPACING (protocol 1.2, §6.11): its ring
        // of recent skin entries is the last line against a dot placed on top of another.
        options.link.minimumSpacingMicrometres = UInt32(clamping: max(options.envelope.minimumSpacingMicrometres, 0))
        paceMonitor = DotPace.Monitor(minimumIntervalMicroseconds:
            (try? DotPace.minimumIntervalMicroseconds(options.envelope)) ?? .max)
        self.options = options
        self.logger = logger
        self.effectiveEnvelope = options.envelope
        spacing = SpacingLedger(minimumMicrometres: options.envelope.minimumSpacingMicrometres, bounds: plan.dots)
        self.todo = plan.dots
        planDotByID = DotsByID(plan.dots)
        do throws(DotPace.RateOutOfRange) {
            _ = try DotPace.paceMilliseconds(options.envelope)
        } catch {
            handle.withLock { $0.earlyEnd = error.description }
        }
    }

    /// Opens `devicePath` and runs the session. `confirm` is asked once with the preflight; it
    /// runs off the session queue and may block (a prompt). Returns when the session has ended.
    public func run(
        devicePath: String, confirm: @escaping @Sendable (Preflight) -> Bool,
        onEvent: @escaping @Sendable (SessionEvent) -> Void
    ) throws(SerialPortError) -> SessionAccount {
        let queue = DispatchQueue(label: "smpctl.session")
        let port = try SerialPort.open(path: devicePath, queue: queue)
        let link = ApplicatorLink(port: port, configuration: options.link, logger: logger)
        let early = handle.withLock { handle -> String? in
            handle.link = link
            return handle.earlyEnd
        }
        let result = ResultBox()
        queue.sync {
            self.link = link
            self.onEvent = onEvent
            self.finished = { account in result.set(account) }
            self.startNanos = DispatchTime.now().uptimeNanoseconds
            if let early {
                self.end(.declined, reason: "\(early); nothing was armed")
            } else {
                self.start(link: link, confirm: confirm)
            }
        }
        return result.wait()
    }

    /// Operator's hold (first Ctrl-C). Safe to call from any thread.
    public func requestHold() {
        if let interlocks = options.interlocks {
            interlocks.operatorHold()  // → onHold, the same path as a released pedal
            return
        }
        holdNow(reason: "operator hold")
    }

    private func holdNow(reason: String) {
        guard let link = requestLink else { return }
        link.queue.async {
            guard self.outcome == nil, !self.holding else { return }
            self.holding = true
            link.hold()
            self.audit("hold", ["cause": reason])
            self.onEvent(.held(reason: reason))
        }
    }

    /// Operator's resume after a hold. With interlocks, only when every input is healthy.
    public func requestResume() {
        if let interlocks = options.interlocks {
            interlocks.operatorResume()  // → onResume when healthy
            return
        }
        resumeNow()
    }

    private func resumeNow() {
        guard let link = requestLink else { return }
        link.queue.async {
            // An end under way (abort, e-stop, a failed record, an envelope refusal) is not
            // resumed: it would be audited as the operator's resume of a session that is ending.
            guard self.outcome == nil, self.holding, self.pendingEnd == nil else { return }
            self.holding = false
            self.audit("resume", ["cause": "operator"])
            self.onEvent(.resumed)
            // RESUME only once everything recorded before it is durable — above all a dot the
            // hold's ABORT or latch cut short: a resume after a crash reads a device that has
            // moved on, and must find that dot `interrupted`, not `sent`.
            let resume: @Sendable () -> Void = { [weak self] in
                guard let self, self.outcome == nil, !self.holding else { return }
                self.link?.resume()
            }
            if let journal = self.journal { journal.afterCommit(resume) } else { resume() }
        }
    }

    /// Operator's abort: end the session held (resumable later), needle retracted.
    public func requestAbort(reason: String) {
        guard let link = requestLink else { return }
        link.queue.async {
            guard self.outcome == nil else { return }
            self.holding = true
            self.reason = reason
            self.audit("abort", ["reason": reason])
            link.abort()
            self.pendingEnd = .held
        }
    }

    /// Ends a held session once the hold is complete (the dot in the skin finished, needle up),
    /// resumable later. Unlike `requestAbort` it never cuts a dot short. An end already under
    /// way (abort, e-stop, `requestEnd`) keeps its own outcome and reason.
    public func requestEndWhenHeld(reason: String) {
        guard let link = requestLink else { return }
        link.queue.async {
            guard self.outcome == nil, self.pendingEnd == nil else { return }
            _ = self.endWhenHeld(reason: reason)
        }
    }

    /// On the queue: the session ends held once the device is held, its needle up and nothing in
    /// flight — at once if it already is (true), else when the STATUS saying so arrives.
    private func endWhenHeld(reason: String) -> Bool {
        self.reason = reason
        pendingEnd = .held
        guard let status = lastStatus, status.state == .held, status.needleRetracted, link?.inFlight.isEmpty == true else {
            return false
        }
        end(.held, reason: reason)
        return true
    }

    /// Ends the session as soon as it is safe, from any thread — for the process being told to
    /// stop (SIGTERM, SIGHUP, its output gone). Before arming it ends at once: nothing was
    /// armed. After, it holds (the dot in the skin finishes, the needle retracts) and then ends
    /// held, resumable. It never cuts a dot short and never overrides a stop already under way.
    public func requestEnd(reason: String) {
        guard !endUnlessArmed(reason: reason), let link = requestLink else { return }
        link.queue.async {
            guard self.outcome == nil else { return }
            guard self.pendingEnd == nil else { return }  // an abort, e-stop or end already ends it
            self.audit("end-requested", ["reason": reason])
            if !self.endWhenHeld(reason: reason) { self.requestHold() }
        }
    }

    /// Ends the session if it has not armed, from any thread, decided at once and atomically
    /// with arming: true — it will not arm and ends (declined, "nothing was armed"); false — it
    /// had armed already, and nothing was done. For the operator's "stop before it starts"
    /// (Ctrl-C at the preflight): the caller's own idea of whether the session armed lags by an
    /// event, so only this answer may back the words "nothing was armed".
    public func endUnlessArmed(reason: String) -> Bool {
        let (link, ends) = handle.withLock { handle -> (ApplicatorLink?, Bool) in
            guard !handle.armed else { return (handle.link, false) }
            if handle.earlyEnd == nil { handle.earlyEnd = reason }
            return (handle.link, true)
        }
        guard ends else { return false }
        // Without a link `run` has not opened the port yet: it ends at once, from `earlyEnd`.
        link?.queue.async {
            guard self.outcome == nil else { return }
            self.end(.declined, reason: "\(reason); nothing was armed")
        }
        return true
    }

    /// E-stop from the host (interlock or operator), from any thread: the ESTOP bytes go straight
    /// to the serial fd from the calling thread, without waiting for the session's queue.
    public func requestEstop(cause: FaultCode) {
        guard let link = requestLink else { return }
        link.emergencyStop(cause: cause)
        link.queue.async {
            // After the record's last batch the session is over: the ESTOP still went out above.
            guard !self.recordClosing else { return }
            self.audit("estop", ["cause": "\(cause)"])
            if self.outcome == nil { self.pendingEnd = .stopped }
        }
    }

    private func start(link: ApplicatorLink, confirm: @escaping @Sendable (Preflight) -> Bool) {
        if let interlocks = options.interlocks {
            // Handlers run on the interlock queue. The e-stop writes to the serial fd from there
            // (no hop); the others go to the session queue.
            interlocks.start(handlers: InterlockHandlers(
                onEstop: { [weak self] cause in self?.requestEstop(cause: cause) },
                onHold: { [weak self] cause in self?.holdNow(reason: "interlock: \(cause)") },
                onArm: { [weak self] in
                    guard let session = self else { return }
                    link.queue.async { session.armAndStream() }
                },
                onResume: { [weak self] in self?.resumeNow() },
                onTransition: { [weak self] transition in
                    guard let session = self else { return }
                    link.queue.async {
                        // The transition that stopped the session (an e-stop line, a lost chip)
                        // often arrives after the applicator's STATUS ended it: it still belongs
                        // in the record, until the record's last batch.
                        guard !session.recordClosing else { return }
                        session.audit("interlock", ["from": "\(transition.from)", "to": "\(transition.to)",
                                                    "cause": "\(transition.cause)"])
                        if session.outcome == nil { session.onEvent(.interlock(transition)) }
                    }
                }))
        }
        link.onEvent = { [weak self] event in self?.handle(event) }
        link.dotSource = { [weak self] in self?.nextDot() }
        // The lines' health check rides the link thread's heartbeat passes (issue 15: a thread
        // wake-up is what costs at an applicator's pace); it checks on its own when that ends.
        if let duty = options.interlocks?.healthCheckDuty { link.carry(duty) }
        link.connect { [weak self] result in
            guard let self else { return }
            switch result {
            case .failure(let loss):
                self.end(.linkLost, reason: "\(loss)")
            case .success(let hello):
                self.handshook(hello, link: link, confirm: confirm)
            }
        }
    }

    private func handshook(_ hello: HelloReply, link: ApplicatorLink, confirm: @escaping @Sendable (Preflight) -> Bool) {
        effectiveEnvelope = options.envelope.intersected(with: hello.limits)
        let issues = skipValidationAfterHandshake
            ? [] : PlanValidator.validate(plan, envelope: effectiveEnvelope).filter { $0.severity == .error }
        if !issues.isEmpty {
            let shown = issues.prefix(20).map { "  \($0)" }.joined(separator: "\n")
            end(.refusedPlan, reason: "the plan does not fit this applicator's limits:\n\(shown)")
            return
        }
        // With PACE the link has had the pace confirmed; without, physics alone must keep it.
        if !hello.capabilities.contains(.pace),
           let tooFast = DotPace.firstPairTooFast(todo, limits: hello.limits,
                                                  minimumIntervalMicroseconds: paceMonitor.minimumIntervalMicroseconds) {
            end(.refusedPlan, reason: "this applicator (protocol \(hello.versionMajor).\(hello.versionMinor)) cannot be paced, "
                + "and the plan's own timing does not keep to \(PlanText.number(effectiveEnvelope.maximumDotsPerSecond)) dots/s: \(tooFast)")
            return
        }
        do {
            try openRecord(hello, link: link)
        } catch let failure as SessionSetupFailure {
            end(failure.outcome, reason: failure.reason)
            return
        } catch let error as RecordStoreError {
            // Nothing was armed. Another process running the session: declined; else the records failed.
            if case .sessionRunning = error.kind { end(.declined, reason: "\(error); nothing was armed or written"); return }
            recordFailure = error
            end(.stopped, reason: "\(error); nothing was armed")
            return
        } catch {
            end(.stopped, reason: "\(error)")
            return
        }
        options.interlocks?.linkUp()
        var regions: [String: Int] = [:]
        for dot in todo { regions[dot.region ?? "(none)", default: 0] += 1 }
        let preflight = Preflight(
            planID: plan.planID, dotCount: todo.count, regions: regions, devicePath: link.devicePath,
            firmwareID: hello.firmwareID.text, protocolVersion: "\(hello.versionMajor).\(hello.versionMinor)",
            envelope: effectiveEnvelope, estimatedDurationSeconds: Self.estimate(todo, limits: hello.limits,
                                                     minimumIntervalMicroseconds: paceMonitor.minimumIntervalMicroseconds),
            sessionID: sessionID, alreadyDone: previouslyDone, skipped: skipped)
        onEvent(.preflight(preflight))
        if todo.isEmpty {
            end(.completed, reason: nil)
            return
        }
        // The prompt blocks: ask it off the session queue, keep the heartbeat running meanwhile.
        DispatchQueue.global().async {
            let accepted = confirm(preflight)
            link.queue.async {
                guard self.outcome == nil else { return }
                guard accepted else {
                    self.end(.declined, reason: "declined at the preflight prompt; nothing was armed")
                    return
                }
                if let interlocks = self.options.interlocks {
                    // The operator's confirmation is the reset of the interlock latch: it arms
                    // (→ onArm) only if every input is healthy and the link is up.
                    interlocks.operatorReset()
                    interlocks.queue.async {
                        let status = interlocks.status()
                        guard status.state != .armed else { return }
                        let blockers = status.blockers.map { "\($0)" }.joined(separator: "; ")
                        link.queue.async {
                            self.end(.declined, reason: "the interlocks did not allow arming: \(blockers.isEmpty ? status.state.description : blockers); nothing was armed")
                        }
                    }
                } else {
                    self.armAndStream()
                }
            }
        }
    }

    /// ARM and start streaming: the preflight was confirmed and the interlocks (if any) armed.
    private func armAndStream() {
        guard outcome == nil, let link, !armedByUs else { return }
        let endRequested = handle.withLock { handle -> String? in
            if handle.earlyEnd == nil { handle.armed = true }
            return handle.earlyEnd
        }
        if let endRequested {  // its own end is queued behind this; end here, before any ARM
            end(.declined, reason: "\(endRequested); nothing was armed")
            return
        }
        armedByUs = true
        audit("armed", [:])
        link.arm()
        onEvent(.armed)
        requestClaims()
        link.startStreaming()
    }

    private struct SessionSetupFailure: Error {
        var outcome: SessionOutcome
        var reason: String
    }

    /// Creates the session's record, or for a resume settles the dots that were in flight from
    /// what the device reports, and builds the list of dots still to do.
    private func openRecord(_ hello: HelloReply, link: ApplicatorLink) throws {
        guard let recording = options.recording else {
            journal = RecordJournal(recorder: nil, sessionID: 0, target: link.queue,
                                    onCommitted: { [weak self] in self?.committed($0) }, onFailure: { _ in })
            return
        }
        var first = RecordBatch()
        first.device = RecordBatch.Device(firmwareID: hello.firmwareID.text, bootID: hello.bootID,
                                          devicePath: link.devicePath, doneCount: hello.doneCount)
        first.events = recording.auditAtStart
        let opened = try recording.recorder.open(RecordOpening(
            plan: plan, hello: hello, status: link.deviceStatus, devicePath: link.devicePath,
            resumeSessionID: recording.resumeSessionID, ambiguousDecision: recording.ambiguousDecision, first: first))
        sessionID = opened.sessionID
        if let refusal = opened.refusal { throw SessionSetupFailure(outcome: .needsDecision, reason: refusal) }
        if let remaining = opened.remaining.map(Set.init) {
            previouslyDone = opened.doneIDs.count
            skipped = opened.skippedCount
            todo = plan.dots.filter { remaining.contains($0.id) }
            for id in opened.doneIDs {
                doneSet.insert(id)
                if let dot = planDotByID[id] { spacing.insert(dotID: id, x: dot.xMicrometres, y: dot.yMicrometres) }
            }
        }
        journal = RecordJournal(
            recorder: recording.recorder, sessionID: opened.sessionID, target: link.queue,
            onCommitted: { [weak self] in self?.committed($0) },
            onFailure: { [weak self] error in self?.recordsFailed(error) })
    }

    // MARK: - Claims: a dot is durably `sent` before it is encoded

    private func requestClaims() {
        guard outcome == nil, pendingEnd == nil, claimsInFlight.count < 2, let journal else { return }
        var batch: [DotCommand] = []
        while batch.count < claimBatch, !retry.isEmpty { batch.append(retry.removeFirst()) }
        while batch.count < claimBatch, cursor < todo.count {
            let dot = todo[cursor]
            cursor += 1
            batch.append(DotCommand(
                dotID: dot.id, epoch: 0, xMicrometres: dot.xMicrometres, yMicrometres: dot.yMicrometres,
                depthMicrometres: UInt16(clamping: dot.depthMicrometres),
                dwellMicroseconds: UInt32(clamping: dot.dwellMicroseconds)))
        }
        guard !batch.isEmpty else { return }
        claiming.append(contentsOf: batch)
        claimsInFlight.append((batch.count, pulled))
        let ids = batch.map(\.dotID)
        journal.submit(urgent: true) { $0.claims.append(contentsOf: ids) }
    }

    /// Layer 2 of the envelope: every dot is checked again just before it is encoded — the values
    /// of the DOT command itself (what goes on the wire), and a dot the plan does not hold is
    /// refused (fail closed).
    private func nextDot() -> DotCommand? {
        guard outcome == nil, pendingEnd == nil else { return nil }
        if ready.count - readyHead + claiming.count < 2 * claimBatch { requestClaims() }
        guard readyHead < ready.count else { return nil }
        let command = ready[readyHead]
        if checkEnvelopeBeforeEncoding, let problem = envelopeProblem(command) {
            logger.critical("dot \(command.dotID) failed the envelope check before encoding: \(problem)")
            reason = "dot \(command.dotID) outside the envelope before encoding: \(problem)"
            audit("envelope-refused", ["dot": "\(command.dotID)", "issue": problem])
            pendingEnd = .held
            // Not from inside the link's pull: it is building a batch (no re-entrancy).
            link?.queue.async { [weak self] in self?.link?.abort() }
            return nil
        }
        spacing.insert(dotID: command.dotID, x: command.xMicrometres, y: command.yMicrometres)
        readyHead += 1
        pulled += 1
        if readyHead > 4096 && readyHead * 2 > ready.count {
            ready.removeFirst(readyHead)
            readyHead = 0
        }
        return command
    }

    private func envelopeProblem(_ command: DotCommand) -> String? {
        guard let planned = planDotByID[command.dotID] else { return "dot \(command.dotID) is not in the plan" }
        let encoded = PlanDot(
            id: command.dotID, xMicrometres: command.xMicrometres, yMicrometres: command.yMicrometres,
            depthMicrometres: Int32(command.depthMicrometres), dwellMicroseconds: Int32(clamping: command.dwellMicroseconds),
            region: planned.region, index: planned.index)
        if let problem = effectiveEnvelope.check(encoded) { return "\(problem)" }
        if let (other, distance) = spacing.conflict(dotID: command.dotID, x: command.xMicrometres, y: command.yMicrometres) {
            return "\(PlanText.milli(Int64(distance.rounded()))) mm from dot \(other), already sent in this session "
                + "(minimum spacing \(PlanText.milli(Int64(spacing.minimumMicrometres))) mm)"
        }
        return nil
    }

    // MARK: - Committed changes

    private func committed(_ batch: RecordBatch) {
        if !batch.claims.isEmpty {
            // Batches commit in the order submitted: this one is the oldest in flight.
            let count = min(batch.claims.count, claiming.count)
            ready.append(contentsOf: claiming[..<count])
            claiming.removeFirst(count)
            if !claimsInFlight.isEmpty {
                let taken = pulled - claimsInFlight.removeFirst().pulledAtSubmit
                claimBatch = min(max(2 * taken, Self.claimBatchRange.lowerBound), Self.claimBatchRange.upperBound)
            }
            if outcome == nil { link?.pump() }
        }
        for entry in batch.done {
            done.append(entry.dotID)
            if outcome == nil {
                onEvent(.progress(SessionProgress(
                    done: done.count + previouslyDone, total: plan.dots.count - skipped, lastDotID: entry.dotID,
                    region: planDotByID[entry.dotID]?.region)))
            }
        }
        if outcome == nil, !batch.done.isEmpty, done.count + previouslyDone + skipped == plan.dots.count {
            end(.completed, reason: nil)
        }
        if let end = batch.end, end.state != "running", let outcome { finish(outcome) }
    }

    /// Every dot was sent and confirmed by the device; only their records are still being
    /// committed. A device hold now (its lease, after the last dot) does not stop the session.
    private var onlyCommitsOutstanding: Bool {
        guard let link else { return false }
        return link.inFlight.isEmpty && cursor >= todo.count && retry.isEmpty && claiming.isEmpty
            && readyHead >= ready.count
    }

    private func recordsFailed(_ error: RecordStoreError) {
        recordFailure = error
        logger.critical("\(error)")
        guard outcome == nil else {
            if deviceDisarmed != nil { finish(outcome!) }  // else the end's last step finishes it
            return
        }
        // Without a durable record no further dot may be injected.
        holding = true
        pendingEnd = .held
        reason = "the treatment record could not be written (\(error)); session held"
        link?.hold()
    }

    private func audit(_ kind: String, _ detail: [String: String]) {
        journal?.submit { $0.events.append(RecordBatch.Event(kind: kind, detail: detail)) }
    }

    // MARK: - Link events

    private func handle(_ event: LinkEvent) {
        guard outcome == nil else { return returnedAfterTheEnd(event) }
        switch event {
        case .dotDone(let id, let time, let count):
            guard doneSet.insert(id).inserted else {
                // The protocol makes this impossible; if it happens the accounting is broken.
                logger.critical("dot \(id) reported done twice")
                link?.estop(cause: .hostEstop)
                end(.stopped, reason: "dot \(id) reported done twice: stopped for safety")
                return
            }
            // The plan's last dot is committed at once: the session completes on that commit.
            journal?.submitDone(RecordBatch.Done(dotID: id, deviceDoneCount: count),
                                urgent: doneSet.count + skipped >= plan.dots.count)
            // A dot done after our ARM proves the device armed and running, as a `ready` or
            // `running` STATUS would: a resumed session on a device still armed from the run
            // before may see none (its ARM's answer repeats the handshake's `ready`, and a 1.3
            // device is quiet about ready ↔ running), and without this a reset or a hold of the
            // device then ended nothing: the session waited for ever (soak, fifth stop).
            if armedByUs { deviceRunning = true }
            if let dwell = planDotByID[id]?.dwellMicroseconds,
               let violation = paceMonitor.completed(dotID: id, dwellMicroseconds: dwell, deviceTimeMicroseconds: time),
               pendingEnd != .stopped {
                // The applicator broke a limit it had confirmed: latch it, as for any doubt.
                logger.critical("\(violation)")
                audit("pace-violated", ["earlier": "\(violation.earlierDotID)", "later": "\(violation.laterDotID)",
                                        "interval_us": "\(violation.intervalMicroseconds)",
                                        "minimum_us": "\(violation.minimumMicroseconds)"])
                reason = "\(violation): stopped for safety"
                pendingEnd = .stopped
                link?.estop(cause: .hostEstop)
            }
        case .dotsReturned(let dots):
            // Fenced before they started: back to planned, sent again first after resume.
            retry.insert(contentsOf: dots, at: 0)
            let unsent = ready[readyHead...]
            retry.append(contentsOf: unsent)
            ready.removeAll()
            readyHead = 0
            let ids = dots.map(\.dotID) + unsent.map(\.dotID)
            journal?.submit { $0.statusChanges.append((.planned, ids)) }
            if let pendingEnd {
                // After the STATUS that confirmed the fence has been handled (it follows in the
                // same read), so the device's final state is reported before the session ends.
                link?.queue.async { [weak self] in self?.end(pendingEnd, reason: self?.reason) }
            }
        case .dotInterrupted(let id):
            interrupted.append(id)
            journal?.submit {
                $0.statusChanges.append((.interrupted, [id]))
                $0.events.append(RecordBatch.Event(kind: "dot-interrupted", detail: ["dot": "\(id)"]))
            }
            onEvent(.dotInterrupted(dotID: id))
        case .dotsInDoubt(let dots):
            let ids = dots.map(\.dotID)
            inDoubt.append(contentsOf: ids)
            journal?.submit {
                $0.statusChanges.append((.ambiguous, ids))
                $0.events.append(RecordBatch.Event(kind: "dots-in-doubt", detail: ["dots": ids.map(String.init).joined(separator: ",")]))
            }
            onEvent(.dotsInDoubt(ids))
        case .deviceStatus(let status):
            if status.state != lastStatus?.state || status.fault != lastStatus?.fault {
                onEvent(.deviceStatus(status))
                // ready ↔ running flips with every dot when the queue runs dry: not worth a row.
                let routine = (status.state == .ready || status.state == .running)
                    && (lastStatus?.state == .ready || lastStatus?.state == .running) && status.fault == .none
                if !routine {
                    audit("device-state", ["state": status.state.description, "fault": "\(status.fault)",
                                           "done_count": "\(status.doneCount)"])
                }
            }
            lastStatus = status
            if armedByUs && (status.state == .ready || status.state == .running) { deviceRunning = true }
            if status.state.isLatched { options.interlocks?.deviceLatched(status.fault) }
            if status.state == .disarmed && deviceRunning {
                // Armed a moment ago, disarmed now: the applicator rebooted and lost its queue.
                end(.stopped, reason: "the applicator reset (it lost its memory): the dots in flight are in doubt")
            } else if status.state.isLatched {
                // A stop the runner asked for keeps its reason (the latch is its consequence).
                let latched = "applicator \(status.state): \(status.fault)"
                end(.stopped, reason: pendingEnd == .stopped ? reason.map { "\($0) (\(latched))" } ?? latched : latched)
            } else if status.state == .held && status.needleRetracted && (deviceRunning || pendingEnd != nil) {
                if let pendingEnd {
                    end(pendingEnd, reason: reason)
                } else if !holding && !onlyCommitsOutstanding && link?.decisionPending != true
                            && status.fault != .hostHold && status.fault != .hostAbort {
                    // The applicator held on its own (contact lost, lease expired): the same
                    // hold as the operator's, resolved only by the operator.
                    deviceHeld("applicator held: \(status.fault)", fault: status.fault)
                }
            }
        case .refused(let refused):
            let text = "applicator refused dot \(refused.dotID): \(refused.code) (value \(refused.value)); now \(refused.state), \(refused.fault)"
            onEvent(.refused(text))
            audit("refused", ["dot": "\(refused.dotID)", "code": "\(refused.code)", "value": "\(refused.value)"])
            if refused.state.isLatched, pendingEnd != .stopped {
                // The session ends on the latched STATUS that follows: it names the dot the latch
                // cut short (current_dot_id), which must be recorded interrupted, never in doubt
                // with the dots that were fenced.
                reason = text
                pendingEnd = .stopped
            }
        case .notTaken(let command, let status):
            guard let status, !status.state.isLatched else { return }  // a latch ends it on its STATUS
            let what = command == .arm ? "did not arm" : "did not resume"
            deviceHeld("the applicator \(what): \(status.state), \(status.fault)", fault: status.fault)
        case .metrics(let metrics):
            lastMetrics = metrics
            onEvent(.linkMetrics(metrics))
        case .linkLost(let loss):
            options.interlocks?.linkLost()
            end(.linkLost, reason: "\(loss)")
        }
    }

    /// After the end only one event still changes the record: dots the link gives back unsent.
    /// The session pulls dots for the link's credit; when it ends before the link's thread has
    /// taken them (a held STATUS read just after the ACK that gave the credit), the thread finds
    /// no credit and returns them — before it answers the end's CLEAR, so before the record's
    /// last batch. They never left the host: back to planned, as `end` does with the dots it
    /// still holds. (Dropped, they stayed `sent` and every resume asked about them: the soak's
    /// trial fault-contact-loss-at-1007, fifth stop.) A dot already counted in doubt stays so.
    private func returnedAfterTheEnd(_ event: LinkEvent) {
        guard case .dotsReturned(let dots) = event, !recordClosing else { return }
        let ids = dots.map(\.dotID).filter { !doneSet.contains($0) && !inDoubt.contains($0) }
        guard !ids.isEmpty else { return }
        journal?.submit(urgent: true) { $0.statusChanges.append((.planned, ids)) }
    }

    /// A hold the applicator reports, or an ARM/RESUME it did not take: held until the operator
    /// decides (or ended held when nobody can be asked). The host never resumes it on its own.
    private func deviceHeld(_ text: String, fault: FaultCode) {
        guard outcome == nil else { return }
        holding = true
        options.interlocks?.deviceHeld(fault)
        audit("device-hold", ["reason": text])
        onEvent(.held(reason: text))
        if !options.waitForOperatorOnDeviceHold {
            // The account is exact and `smpctl resume` continues it.
            end(.held, reason: text)
        }
    }

    /// Ends the session: closes the link, records the outcome, and reports the account once the
    /// record has committed everything before it.
    private func end(_ outcome: SessionOutcome, reason: String?) {
        guard self.outcome == nil else { return }
        self.outcome = outcome
        self.reason = reason
        guard let link else { return }
        lastMetrics = link.metrics
        // Dots still in flight at the end are in doubt unless the device settled them.
        let stillInFlight = link.inFlight.map(\.dotID)
        if outcome != .completed, !stillInFlight.isEmpty {
            inDoubt.append(contentsOf: stillInFlight)
            journal?.submit { $0.statusChanges.append((.ambiguous, stillInFlight)) }
        }
        // Needle power off and lines released, whatever the outcome; if it cannot be switched
        // off, that is part of the outcome (`finish` reads it back into the account).
        if let failure = options.interlocks?.closeConfirmingNeedlePowerOff() {
            audit("needle-power-off-failed", ["output": failure.output, "error": "\(failure.error)",
                                              "message": "\(failure)"])
        }
        // Claimed but never sent: back to planned.
        // Written before the CLEAR: a host that dies while the device answers it must not leave
        // dots that never left the host as `sent` (a resume would then ask about them).
        let unsent = claiming.map(\.dotID) + ready[readyHead...].map(\.dotID) + retry.map(\.dotID)
        if !unsent.isEmpty { journal?.submit(urgent: true) { $0.statusChanges.append((.planned, unsent)) } }
        // The applicator is left disarmed (CLEAR, §6.9.7), then the port closes; the record's
        // last batch says whether the device confirmed it.
        link.disarmAndClose { [weak self] disarmed in
            guard let self else { return }
            self.link?.queue.async { self.closeRecord(outcome: outcome, deviceDisarmed: disarmed) }
        }
    }

    /// The session's last batch, once the applicator has answered (or not) the CLEAR.
    private func closeRecord(outcome: SessionOutcome, deviceDisarmed: Bool) {
        self.deviceDisarmed = deviceDisarmed
        recordClosing = true
        guard let journal else {
            finish(outcome)
            return
        }
        let metrics = lastMetrics
        let state = outcome.rawValue
        let reason = self.reason
        let deviceState = link?.deviceStatus.map { "\($0.state)" } ?? "unknown"
        journal.submit(urgent: true) { batch in
            batch.events.append(RecordBatch.Event(kind: "link-metrics", detail: [
                "frames_sent": "\(metrics.framesSent)", "frames_received": "\(metrics.framesReceived)",
                "retransmissions": "\(metrics.retransmissions)", "bad_frames": "\(metrics.badFramesReceived)",
                "srtt_us": "\(metrics.smoothedRTTMicroseconds)"]))
            batch.events.append(RecordBatch.Event(
                kind: deviceDisarmed ? "device-disarmed" : "device-not-disarmed", detail: ["device_state": deviceState]))
            batch.events.append(RecordBatch.Event(kind: "session-ended", detail: ["outcome": state, "reason": reason ?? ""]))
            batch.end = RecordBatch.End(state: state, reason: reason)
        }
        if recordFailure != nil { finish(outcome) }
    }

    /// The applicator confirmed it was left disarmed at the end (nil before the end).
    private var deviceDisarmed: Bool?
    /// Set when the record's last batch is submitted: nothing is audited after it.
    private var recordClosing = false

    private var finishedOnce = false

    private func finish(_ outcome: SessionOutcome) {
        guard !finishedOnce else { return }
        finishedOnce = true
        // The account is final: the session's ownership goes (another process may resume it).
        if let sessionID { options.recording?.recorder.release(session: sessionID) }
        var accounted = doneSet
        accounted.formUnion(interrupted)
        accounted.formUnion(inDoubt)
        let notStarted = todo.lazy.map(\.id).filter { !accounted.contains($0) }
        // DOT_DONEs whose record never committed (the records failed): done, but not in `done`,
        // which lists only what the records hold; without this list they fell out of the account.
        let recorded = Set(done)
        let doneUnrecorded = todo.lazy.map(\.id).filter { self.doneSet.contains($0) && !recorded.contains($0) }
        var account = SessionAccount(
            outcome: outcome, reason: reason, total: plan.dots.count, done: done, interrupted: interrupted,
            inDoubt: inDoubt, notStarted: Array(notStarted), metrics: lastMetrics,
            firmwareID: link?.hello?.firmwareID.text,
            elapsedSeconds: Double(DispatchTime.now().uptimeNanoseconds - startNanos) / 1e9)
        account.sessionID = sessionID
        account.doneUnrecorded = Array(doneUnrecorded)
        account.deviceDisarmed = deviceDisarmed ?? false
        account.previouslyDone = previouslyDone
        account.skipped = skipped
        if let recordFailure {
            if account.reason?.contains(recordFailure.description) != true {
                account.reason = (account.reason.map { $0 + "; " } ?? "") + "\(recordFailure)"
            }
            account.recordsFailed = true
        }
        if let failure = options.interlocks?.needlePowerOffFailure {
            account.needlePowerOffFailure = failure
            account.reason = (account.reason.map { $0 + "; " } ?? "") + "\(failure)"
        }
        onEvent(.linkMetrics(lastMetrics))
        onEvent(.finished(account))
        finished(account)
    }

    /// Sum of travel + descend + dwell + retract over the plan, from the device's own timing.
    public static func estimate(_ dots: [PlanDot], limits: DeviceLimits, minimumIntervalMicroseconds: UInt64 = 0) -> Double {
        var seconds = 0.0
        var x = 0.0, y = 0.0
        let speed = max(Double(limits.travelSpeedMicrometresPerSecond), 1)
        let fixed = Double(limits.descendMicroseconds + limits.retractMicroseconds) / 1e6
        let pace = Double(minimumIntervalMicroseconds) / 1e6
        for dot in dots {
            let dx = Double(dot.xMicrometres) - x, dy = Double(dot.yMicrometres) - y
            seconds += max((dx * dx + dy * dy).squareRoot() / speed + fixed + Double(dot.dwellMicroseconds) / 1e6, pace)
            x = Double(dot.xMicrometres)
            y = Double(dot.yMicrometres)
        }
        return seconds
    }
}

/// One-shot hand-over of the account from the session queue to the caller's thread.
private final class ResultBox: @unchecked Sendable {
    private let semaphore = DispatchSemaphore(value: 0)
    private var account: SessionAccount?
    func set(_ value: SessionAccount) {
        account = value
        semaphore.signal()
    }
    func wait() -> SessionAccount {
        semaphore.wait()
        return account!
    }
}
