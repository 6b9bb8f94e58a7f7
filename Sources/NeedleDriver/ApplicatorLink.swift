import Dispatch
import FirmwareProtocol
import Logging
import SMPSystem

#if canImport(Glibc)
import Glibc
#endif

/// The driver of the host link: one dedicated I/O thread per applicator, blocked in `ppoll(2)` on
/// the serial fd and a wake eventfd (`PollThread`), runs the protocol machine (`LinkMachine`) on
/// them — the machine decides, the thread carries out: it reads and decodes, writes the
/// machine's bytes, times its `ppoll` out at the machine's next deadline, and closes the port.
/// The heartbeat and the retransmissions therefore go out however busy the owner's queue is, and
/// a quiet link costs no wake-up: the deadline is one-shot, at an absolute time
/// (CLOCK_MONOTONIC), the machine's next deadline only (`.exact` deadlines: the
/// heartbeat a third of the lease after the last frame sent, paired, as §6.5 lets a 1.4 host —
/// a quarter, single, to an older device — a DOT standing in for it).
///
/// The owner (the session) lives on `queue`: every method must be called on it (but
/// `emergencyStop`), every event is delivered on it. What crosses between the two threads is
/// `Sendable` values: commands and dots through one locked inbox plus the thread's eventfd wake;
/// events, completions and a snapshot of the machine's state (what the accessors below return)
/// through `queue`. The thread takes the scheduling policy of the thread that starts it (a
/// session at SCHED_FIFO gets a real-time link, as the e-stop watcher does).
///
/// Order, as when the link ran on the owner's queue: events are delivered after the machine step
/// that produced them, never from inside one; a command the owner gives while handling an event
/// is a step that runs before the I/O thread handles the next received frame — after a frame
/// whose events may call for a reaction (anything but `dotDone` and `metrics`), the thread holds
/// further frames until the owner has seen those events (its timer keeps running: heartbeats and
/// retransmissions do not wait for the owner). Dots are pulled from `dotSource` on `queue`
/// whenever the machine has credit the owner has not used yet; any a fence overtook come back as
/// `dotsReturned` (never sent).
public final class ApplicatorLink: @unchecked Sendable {
    public let queue: DispatchQueue
    public let configuration: LinkConfiguration
    private let port: SerialPort
    private let logger: Logger

    /// Called for every event, on `queue`.
    public var onEvent: (LinkEvent) -> Void = { _ in }
    /// Batches from the I/O thread so far: each is a wake-up of the owner's queue (tests).
    private(set) var batchesDelivered = 0
    /// Pulled whenever the window has room and streaming is allowed. Return nil when there is
    /// nothing to send now. The owner checks each dot against the envelope before returning it.
    public var dotSource: () -> DotCommand? = { nil }

    // MARK: Owner side (on `queue`)

    private var view: Snapshot
    private var lastHistory = FrameHistory(capacity: 100)
    private var handshakeCompletion: ((Result<HelloReply, LinkLoss>) -> Void)?
    private var disarmCompletion: ((Bool) -> Void)?
    /// Dots handed to the I/O thread so far (compared with `view.dotsTaken` for the credit).
    private var dotsHandedOver = 0
    private var delivering = false
    private var pulling = false
    private var deferred: [() -> Void] = []
    private var io: LinkIO?
    private var mailbox: BatchMailbox?
    /// Set once the port's descriptor is closed (and the I/O thread ended): the path may be
    /// opened again.
    private var portIsClosed = false
    private var afterPortClosed: [() -> Void] = []
    /// Work the I/O thread carries in its passes (`carry`).
    private var carried: (any PassDuty)?

    private static let hostEstopBytes: [UInt8] = [0] + LinkMachine.estopBytes(cause: .hostEstop)

    /// `configuration`'s deadlines are made `.exact`: this driver's timer is one-shot.
    public init(port: SerialPort, configuration: LinkConfiguration = LinkConfiguration(), logger: Logger) {
        var configuration = configuration
        configuration.deadlines = .exact
        self.port = port
        self.queue = port.queue
        self.logger = logger
        self.configuration = configuration
        view = Snapshot(machine: LinkMachine(configuration: configuration, devicePath: port.path), dotsTaken: 0)
    }

    /// An owner that lets go of a connected link without closing it: the I/O thread would keep
    /// the device's lease alive with nobody to hear from it, so the link is closed (the device's
    /// lease then expires and it holds, as when the link's timer went away with it before).
    deinit {
        io?.enqueue(.command { machine, _ in machine.close() })
        mailbox?.cancel()
    }

    public var devicePath: String { port.path }
    public var hello: HelloReply? { view.hello }
    public var deviceStatus: Status? { view.deviceStatus }
    public var streaming: Bool { view.streaming }
    public var latched: Bool { view.latched }
    public var metrics: LinkMetrics { view.metrics }
    /// The machine's frame history as of the last event that was not a dot's completion.
    public var history: FrameHistory { lastHistory }
    /// Dots sent and not yet confirmed done or returned, in send order.
    public var inFlight: [DotCommand] { view.inFlight }
    /// True while ARM or RESUME waits for the device's answer: a `held` STATUS then is the
    /// state before the command, not a new hold.
    public var decisionPending: Bool { view.decisionPending }

    /// See `LinkMachine.outOfRange`.
    public static func outOfRange(_ reply: HelloReply, requestedLeaseMilliseconds: UInt16) -> String? {
        LinkMachine.outOfRange(reply, requestedLeaseMilliseconds: requestedLeaseMilliseconds)
    }

    // MARK: - Commands (call on queue)

    /// Makes the I/O thread carry `duty` — the interlocks' health check — in the passes its
    /// heartbeats, a third of the lease apart, cost anyway: at an applicator's pace a thread
    /// wake-up is the host's main cost, and the check wanted its own 40 a second (issue 15).
    /// The thread passes again by the time `duty` asks, and says when it starts and ends (the
    /// duty does its work itself before and after). Call on `queue`, before `connect`.
    package func carry(_ duty: any PassDuty) {
        dispatchPrecondition(condition: .onQueue(queue))
        precondition(io == nil, "ApplicatorLink.carry after connect")
        carried = duty
    }

    /// Starts the I/O thread, sends HELLO until a matching reply arrives (§6.7). Call on `queue`.
    public func connect(completion: @escaping (Result<HelloReply, LinkLoss>) -> Void) {
        dispatchPrecondition(condition: .onQueue(queue))
        precondition(io == nil && !portIsClosed, "ApplicatorLink.connect called twice")
        handshakeCompletion = completion
        let fd = port.handOver()
        let mailbox = BatchMailbox(queue: queue) { [weak self] batch in self?.deliver(batch) }
        self.mailbox = mailbox
        let io = LinkIO(port: port, fd: fd, configuration: configuration, logger: logger, carried: carried,
                        deliver: { batch in mailbox.post(batch) })
        self.io = io
        var rng = SystemRandomNumberGenerator()
        let nonce: UInt32 = rng.next()
        io.enqueue(.command { $0.connect(nonce: nonce, now: $1) })
        if case .failure(let errno) = io.start() {
            logger.error("link to \(port.path): the I/O thread could not start: \(errno)")
        }
    }

    /// See `LinkMachine.arm`.
    public func arm() { command { $0.arm(now: $1) } }

    /// Pull from `dotSource` now (after the owner made more dots available).
    public func pump() {
        dispatchPrecondition(condition: .onQueue(queue))
        guard !pulling, !delivering else { return }
        pullDots()
    }

    /// Begin or continue pulling dots from `dotSource`.
    public func startStreaming() { command { machine, _ in machine.startStreaming() } }

    /// See `LinkMachine.hold`.
    public func hold() { command { $0.hold(now: $1) } }

    /// See `LinkMachine.abort`.
    public func abort() { command { $0.abort(now: $1) } }

    /// See `LinkMachine.resume`.
    public func resume() { command { $0.resume(now: $1) } }

    /// See `LinkMachine.estop`.
    public func estop(cause: FaultCode) { command { $0.estop(cause: cause, now: $1) } }

    /// E-STOP from any thread (an interlock edge): the frame is written straight to the fd, before
    /// anything queued, then the link latches on its I/O thread. Returns whether the bytes were
    /// written. The bytes: 0x00 (ends any half-written frame on the wire) then ESTOP twice.
    @discardableResult
    public func emergencyStop(cause: FaultCode) -> Bool {
        // The interlocks' cause is prepared once: no allocation between the edge and the write.
        let bytes = cause == .hostEstop ? Self.hostEstopBytes : [0] + LinkMachine.estopBytes(cause: cause)
        let written = port.emergencyWrite(bytes)
        queue.async { self.estop(cause: cause) }
        return written
    }

    /// Stops the heartbeat and closes the port. The device's lease then expires and it holds.
    public func close() {
        dispatchPrecondition(condition: .onQueue(queue))
        guard io != nil else { return closeUnconnected() }
        command { machine, _ in machine.close() }
    }

    /// See `LinkMachine.disarmAndClose`. `completion` comes once the port's descriptor is closed,
    /// so the caller may open the path again at once.
    public func disarmAndClose(completion: @escaping @Sendable (Bool) -> Void) {
        dispatchPrecondition(condition: .onQueue(queue))
        if pulling { return deferred.append { self.disarmAndClose(completion: completion) } }
        guard io != nil else {
            closeUnconnected()
            return completion(false)
        }
        disarmCompletion = completion
        command { $0.disarmAndClose(now: $1) }
    }

    /// Never connected: no thread owns the port, so it is closed here.
    private func closeUnconnected() {
        guard !portIsClosed else { return }
        portIsClosed = true
        port.close()
    }

    /// One machine step on the I/O thread; given while `dotSource` runs, after the pulled dots.
    private func command(_ input: @escaping @Sendable (inout LinkMachine, UInt64) -> LinkOutput) {
        dispatchPrecondition(condition: .onQueue(queue))
        if pulling { return deferred.append { self.command(input) } }
        io?.enqueue(.command(input))
    }

    // MARK: - Delivery (on queue)

    /// A batch from the I/O thread: the state after its steps, then its events and completions
    /// in order, then a pull of dots; an awaited batch is answered so the thread goes on with
    /// the frames it held (the owner's commands meanwhile are ahead of the answer in the inbox).
    private func deliver(_ batch: Batch) {
        dispatchPrecondition(condition: .onQueue(queue))
        batchesDelivered += 1
        if let snapshot = batch.snapshot {
            view = snapshot
            if let history = snapshot.history { lastHistory = history }
        }
        delivering = true
        for delivery in batch.deliveries {
            switch delivery {
            case .event(let event):
                onEvent(event)
            case .handshake(let result):
                if let completion = handshakeCompletion {
                    handshakeCompletion = nil
                    completion(result)
                }
            case .disarmed(let disarmed):
                if let completion = disarmCompletion {
                    disarmCompletion = nil
                    whenPortClosed { completion(disarmed) }
                }
            }
        }
        delivering = false
        pullDots()
        if let awaited = batch.awaited { io?.enqueue(.delivered(awaited)) }
        if batch.portClosed {
            portIsClosed = true
            io = nil
            let callbacks = afterPortClosed
            afterPortClosed.removeAll()
            for callback in callbacks { callback() }
        }
    }

    /// Keeps the device queue full from the credits in ACKs (§6.1): as many dots as the machine
    /// has credit for and the owner has not yet handed over, pulled here, sent by the I/O thread
    /// in one write(2) — once the credit reaches the machine's refill threshold (at an
    /// applicator's pace, a quarter of the queue: `LinkConfiguration.dotRefillFloor`).
    private func pullDots() {
        guard let io else { return }
        let credit = view.dotCredit - (dotsHandedOver - view.dotsTaken)
        guard credit >= view.dotRefillThreshold else { return }  // at least 1
        var batch: [DotCommand] = []
        pulling = true
        while batch.count < credit, let dot = dotSource() { batch.append(dot) }
        pulling = false
        if !batch.isEmpty {
            dotsHandedOver += batch.count
            io.enqueue(.dots(batch))
        }
        let commands = deferred
        deferred.removeAll()
        for command in commands { command() }
    }

    /// Runs `body` on `queue` once the port's descriptor is closed — at once if it is.
    private func whenPortClosed(_ body: @escaping () -> Void) {
        if portIsClosed || io == nil { body() } else { afterPortClosed.append(body) }
    }
}

// MARK: - What crosses between the threads

/// The machine's state the owner may read, as of the last batch delivered.
struct Snapshot: Sendable {
    var hello: HelloReply?
    var deviceStatus: Status?
    var streaming: Bool
    var latched: Bool
    var metrics: LinkMetrics
    var inFlight: [DotCommand]
    var decisionPending: Bool
    var dotCredit: Int
    var dotRefillThreshold: Int
    /// Dots the I/O thread has taken from the inbox so far (sent or returned).
    var dotsTaken: Int
    /// Only in batches with an event other than a dot's completion: the I/O thread's next
    /// record would otherwise copy the ring for every frame.
    var history: FrameHistory?

    init(machine: borrowing LinkMachine, dotsTaken: Int, withHistory: Bool = true) {
        hello = machine.hello
        deviceStatus = machine.deviceStatus
        streaming = machine.streaming
        latched = machine.latched
        metrics = machine.metrics
        inFlight = machine.inFlight
        decisionPending = machine.decisionPending
        dotCredit = machine.dotCredit
        dotRefillThreshold = machine.dotRefillThreshold
        self.dotsTaken = dotsTaken
        history = withHistory ? machine.history : nil
    }
}

/// What the owner gives the I/O thread.
enum LinkInput: Sendable {
    case command(@Sendable (inout LinkMachine, UInt64) -> LinkOutput)
    case dots([DotCommand])
    /// The owner has handled the batch with this number.
    case delivered(UInt64)
}

enum Delivery: Sendable {
    case event(LinkEvent)
    case handshake(Result<HelloReply, LinkLoss>)
    case disarmed(Bool)
}

/// What the I/O thread gives the owner, in order.
struct Batch: Sendable {
    var snapshot: Snapshot?
    var deliveries: [Delivery] = []
    /// This batch's number when the thread holds received frames until the owner has seen it.
    var awaited: UInt64?
    /// The last batch: the thread has ended and the port's descriptor is closed.
    var portClosed = false
}

/// Batches from the I/O thread to the owner's queue, in order: a locked list and a user-data
/// dispatch source on the queue. A burst of batches costs the owner one wake-up, and a batch
/// costs no allocation for the hop (a closure per batch cost three: its context, the block and
/// libdispatch's continuation; issue 16). The two lists trade places, keeping their storage.
final class BatchMailbox: @unchecked Sendable {
    private let posted = Locked<[Batch]>([])
    private let source: any DispatchSourceUserDataAdd
    /// Confined to the owner's queue (the source's handler).
    private var taken: [Batch] = []

    /// The source's handler holds the mailbox until `cancel`.
    init(queue: DispatchQueue, deliver: @escaping @Sendable (Batch) -> Void) {
        source = DispatchSource.makeUserDataAddSource(queue: queue)
        source.setEventHandler { [self] in
            var batches = self.taken
            self.taken = []
            self.posted.withLock { swap(&$0, &batches) }
            for batch in batches { deliver(batch) }
            batches.removeAll(keepingCapacity: true)
            self.taken = batches
        }
        source.activate()
    }

    /// From the I/O thread.
    func post(_ batch: Batch) {
        posted.withLock { $0.append(batch) }
        source.add(data: 1)
    }

    /// Batches posted after this are never delivered (the owner is gone).
    func cancel() { source.cancel() }
}

// MARK: - The I/O thread

/// Everything the I/O thread owns: the machine, the decoder, the descriptors and the bytes not
/// yet written. `@unchecked Sendable`: after `start`, every `var` is read and written only on
/// the thread (its callbacks), but `inbox`, which is locked.
final class LinkIO: @unchecked Sendable {
    private static let tty = 0

    private let port: SerialPort
    private let fd: CInt
    private let logger: Logger
    private let deliverToOwner: @Sendable (Batch) -> Void
    private let carried: (any PassDuty)?
    /// The owner's inputs; `ended` once the thread has ended (inputs are then run by the caller).
    private let inbox = Locked<(items: [LinkInput], ended: Bool)>(([], false))
    private let thread = Locked<PollThread?>(nil)

    private var machine: LinkMachine
    private var decoder = FrameDecoder()
    private let readBuffer: UnsafeMutableRawBufferPointer
    /// Decoded blocks not yet given to the machine: held while the owner has not seen a batch.
    private var received: [FrameDecoder.Event] = []
    private var receivedHead = 0
    /// Bytes the machine gave that the kernel has not taken yet.
    private var pending = PendingWrites()
    private var dotsTaken = 0

    private var batch = Batch()
    private var batchNeedsAnswer = false
    private var batchHasHistory = false
    /// The batch holds something the owner must have now; a batch of routine STATUS frames only
    /// waits for the next one that goes (see `isRoutine`).
    private var batchMustGo = false
    /// The last STATUS put in a batch for the owner.
    private var statusToOwner: Status?
    private var batchNumber: UInt64 = 0
    private var awaiting: UInt64?
    /// The credit in the last snapshot sent, and `dotsTaken` then: what the owner believes.
    private var lastCreditSent = 0
    private var dotsTakenAtLastSnapshot = 0
    /// Set once the machine asked to close the port, or the port failed: the thread stops.
    private var stopping = false
    private var closeReason: SerialPortError?

    static let readBufferSize = 4096
    /// Reads per readable event before the thread looks at its other descriptors again.
    static let maxReadsPerEvent = 16

    init(port: SerialPort, fd: CInt, configuration: LinkConfiguration, logger: Logger,
         carried: (any PassDuty)? = nil, deliver: @escaping @Sendable (Batch) -> Void) {
        self.port = port
        self.carried = carried
        self.fd = fd
        self.logger = logger
        self.deliverToOwner = deliver
        machine = LinkMachine(configuration: configuration, devicePath: port.path)
        readBuffer = .allocate(byteCount: Self.readBufferSize, alignment: 16)
    }

    deinit { readBuffer.deallocate() }

    /// Starts the thread. On failure the port is closed and the machine told, as for a port that
    /// failed, so the owner's handshake ends.
    func start() -> Result<Void, Errno> {
        let started = PollThread.start(
            name: "smp-link", descriptors: [fd],
            onReady: { thread, _, revents in self.ready(thread, revents) },
            onWake: { thread in self.takeInbox(thread) },
            onDeadline: { thread in self.deadlineCame(thread) },
            onDropped: { _ in },
            onExit: { error in self.exited(error) })
        switch started {
        case .success(let pollThread):
            thread.withLock { $0 = pollThread }
            carried?.carrierStarted()
            pollThread.wake()
            return .success(())
        case .failure(let errno):
            failWithoutThread(operation: "pthread_create", errno: errno)
            return .failure(errno)
        }
    }

    /// Any thread: adds `input` to the inbox and wakes the I/O thread. Once the thread has
    /// ended, the input is run here on the closed machine (a command then only completes, dots
    /// come back), so a completion the owner waits for still comes.
    func enqueue(_ input: LinkInput) {
        let late = inbox.withLock { inbox -> Bool in
            if inbox.ended { return true }
            inbox.items.append(input)
            return false
        }
        if late { return run([input]) }
        thread.withLock { $0 }?.wake()
    }

    private func failWithoutThread(operation: String, errno: Errno) {
        closeReason = .link(port.path, operation: operation, errno: errno)
        stopping = true  // the steps below write nothing
        port.closeHandedOver()
        run(takeInputs())  // the connect: its handshake then fails with the port's error
        exitedSteps()
    }

    private func takeInputs(ending: Bool = false) -> [LinkInput] {
        inbox.withLock { inbox in
            let taken = inbox.items
            inbox.items.removeAll(keepingCapacity: true)
            if ending && taken.isEmpty { inbox.ended = true }
            return taken
        }
    }

    private func run(_ inputs: [LinkInput]) {
        for input in inputs {
            switch input {
            case .command(let input):
                step(input)
            case .dots(let dots):
                dotsTaken += dots.count
                step { $0.send(dots: dots, now: $1) }
            case .delivered(let number):
                if awaiting == number {
                    awaiting = nil
                    step { $0.settle(now: $1) }
                }
            }
            flush()
        }
    }

    // MARK: On the thread

    private func takeInbox(_ thread: PollThread) {
        run(takeInputs())
        handleReceived()
        settleTurn(thread)
    }

    private func ready(_ thread: PollThread, _ revents: Int16) {
        if revents & Int16(POLLOUT) != 0 { drainPending(thread) }
        if revents & Int16(POLLIN | POLLHUP | POLLERR | POLLNVAL) != 0 { readAvailable() }
        handleReceived()
        settleTurn(thread)
    }

    private func deadlineCame(_ thread: PollThread) {
        if let due = machine.nextDeadline, Sys.monotonicNanoseconds() >= due {
            // An owner that has not answered by a deadline is late (its queue starved): the
            // frames it holds up go to the machine now, so the device's answers are not taken
            // for its silence; the owner sees their events late, as a busy owner would.
            handleReceived(force: true)
            step { $0.tick(now: $1) }
            flush()
        }
        settleTurn(thread)
    }

    /// After each pass: stop if the port is to close, else give the carried duty its turn and
    /// time the thread's `ppoll` out at the earlier of the machine's next deadline and the
    /// duty's (a variable set, not a system call).
    private func settleTurn(_ thread: PollThread) {
        if stopping { return thread.stop() }
        thread.setWritable(Self.tty, pendingCount > 0)
        var deadline = machine.nextDeadline
        if let carried, let due = carried.ride(nowNanoseconds: Sys.monotonicNanoseconds(), carrierDeadline: deadline) {
            deadline = min(deadline ?? due, due)
        }
        thread.setDeadline(deadline)
    }

    private func readAvailable() {
        guard !stopping else { return }
        var gotBytes = false
        for _ in 0..<Self.maxReadsPerEvent {
            switch Sys.read(fd, into: readBuffer) {
            case .success(.endOfFile):
                return fail(.disconnected(port.path, nil))  // hung up
            case .success(.transferred(let count)):
                gotBytes = true
                machine.received(byteCount: count)
                decoder.feed(UnsafeRawBufferPointer(rebasing: readBuffer[..<count])) { received.append($0) }
            case .success(.wouldBlock):
                if !gotBytes { checkHangUp() }
                return
            case .failure(let errno):
                return fail(.link(port.path, operation: "read", errno: errno))
            }
        }
    }

    /// Readable but nothing to read: was it POLLHUP/POLLERR?
    private func checkHangUp() {
        switch Sys.poll(fd, events: Int16(POLLIN), timeoutMilliseconds: 0) {
        case .success(let revents):
            if revents & Int16(POLLHUP | POLLERR | POLLNVAL) != 0 { fail(.disconnected(port.path, nil)) }
        case .failure(let errno):
            fail(.link(port.path, operation: "poll", errno: errno))
        }
    }

    /// Received blocks, one machine step each, until one needs the owner's reaction.
    private func handleReceived(force: Bool = false) {
        while awaiting == nil || force, !stopping, receivedHead < received.count {
            let event = received[receivedHead]
            receivedHead += 1
            step { $0.receive(event, now: $1) }
            flush()
        }
        if receivedHead == received.count {
            received.removeAll(keepingCapacity: true)
            receivedHead = 0
        }
    }

    /// Runs the machine, writes its bytes, collects its actions for the owner.
    private func step(_ input: (inout LinkMachine, UInt64) -> LinkOutput) {
        var output = input(&machine, Sys.monotonicNanoseconds())
        if !output.bytes.isEmpty, !stopping {
            if let error = write(output.bytes) {
                carryOut(output.actions)
                fail(error)
                return carryOut(machine.writeFailed(error).actions)
            }
        }
        carryOut(output.actions)
        machine.recycle(&output)
    }

    private func carryOut(_ actions: [LinkAction]) {
        for action in actions {
            switch action {
            case .event(let event):
                batch.deliveries.append(.event(event))
                if case .deviceStatus(let status) = event {
                    let routine = Self.isRoutine(status, after: statusToOwner)
                    statusToOwner = status
                    if routine { continue }
                }
                batchMustGo = true
                switch event {
                case .dotDone, .metrics: break
                default:
                    batchNeedsAnswer = true
                    batchHasHistory = true
                }
            case .handshakeFinished(let result):
                batch.deliveries.append(.handshake(result))
                batchNeedsAnswer = true
                batchMustGo = true
                statusToOwner = nil
            case .disarmFinished(let disarmed):
                batch.deliveries.append(.disarmed(disarmed))
                batchMustGo = true
            case .closePort:
                stopping = true
            case .log(let level, let message):
                logger.log(level: level, "\(message)")
            }
        }
    }

    /// A STATUS of a device streaming as before: armed, not held (`ready` and `running` alternate
    /// as its queue runs dry between paced dots), the same fault, epoch and pace; only its
    /// counters, current dot and needle (down in each dwell) moved. The owner decides nothing on
    /// it (the session acts on a state, fault or epoch that changed, and on the needle only once
    /// held; its view of the counters comes with the next batch), so it rides with the next
    /// batch that goes instead of costing a batch and an answer of its own: at an applicator's
    /// pace each heartbeat's answer from a 1.3 device is such a STATUS, and each cost the owner a
    /// wake-up and this thread another (issue 15's host CPU at 10 dots/s; a 1.4 device is asked
    /// for none while its ACKs and DOT_DONEs come, §6.5).
    static func isRoutine(_ status: Status, after previous: Status?) -> Bool {
        guard let previous else { return false }
        return status.state.isArmedAndNotHeld && previous.state.isArmedAndNotHeld
            && status.fault == previous.fault && status.epoch == previous.epoch
            && status.paceMilliseconds == previous.paceMilliseconds
    }

    /// Sends what the steps so far collected, with the state after them; also when the credit
    /// grew, so the owner pulls dots. An awaited batch holds the received frames.
    private func flush() {
        let credit = machine.dotCredit
        let believed = lastCreditSent - (dotsTaken - dotsTakenAtLastSnapshot)
        guard batchMustGo || credit > believed || (credit == 0 && believed > 0) else { return }
        lastCreditSent = credit
        dotsTakenAtLastSnapshot = dotsTaken
        batch.snapshot = Snapshot(machine: machine, dotsTaken: dotsTaken, withHistory: batchHasHistory)
        if batchNeedsAnswer {
            batchNumber += 1
            batch.awaited = batchNumber
            awaiting = batchNumber
        }
        deliverToOwner(batch)
        batch = Batch()
        batchNeedsAnswer = false
        batchHasHistory = false
        batchMustGo = false
    }

    /// The port failed: the thread stops, and the machine hears why once it has.
    private func fail(_ error: SerialPortError) {
        if closeReason == nil { closeReason = error }
        stopping = true
        pending.removeAll()
    }

    /// The thread's last callback: nothing polls the descriptors any more, so they are closed,
    /// then the machine is told and the owner gets the last batch.
    private func exited(_ error: Errno?) {
        if let error, closeReason == nil { closeReason = .link(port.path, operation: "poll", errno: error) }
        thread.withLock { $0 = nil }
        carried?.carrierEnded()
        port.closeHandedOver()
        stopping = true
        exitedSteps()
    }

    /// The machine hears that the port is closed, the owner gets the last batch; then the inputs
    /// that came too late for the thread run on the closed machine.
    private func exitedSteps() {
        carryOut(machine.portClosed(closeReason).actions)
        batch.snapshot = Snapshot(machine: machine, dotsTaken: dotsTaken)
        batch.portClosed = true
        deliverToOwner(batch)
        batch = Batch()
        batchNeedsAnswer = false
        batchHasHistory = false
        batchMustGo = false
        awaiting = nil
        // Until the inbox is found empty: from then on the owner runs its late inputs itself.
        while case let inputs = takeInputs(ending: true), !inputs.isEmpty { run(inputs) }
    }

    // MARK: Writing

    private var pendingCount: Int { pending.count }

    /// Writes all `bytes`, or keeps what the kernel did not take for POLLOUT (never blocks,
    /// never drops, never reorders). An error other than EAGAIN is returned: the link ends.
    private func write(_ bytes: [UInt8]) -> SerialPortError? {
        if case .failed(let errno) = pending.write(bytes, to: fd) {
            return .link(port.path, operation: "write", errno: errno)
        }
        return nil
    }

    private func drainPending(_ thread: PollThread) {
        guard !stopping else { return pending.removeAll() }  // nothing more is written once it stops
        if case .failed(let errno) = pending.drain(to: fd) {
            let error = SerialPortError.link(port.path, operation: "write", errno: errno)
            fail(error)
            carryOut(machine.writeFailed(error).actions)
            flush()
        }
    }
}
