import Dispatch
import FirmwareProtocol
import Logging

/// The driver of the host link: owns the serial port, the link's queue, one timer and the real
/// clock, and runs the protocol machine (`LinkMachine`) on them — the machine decides, this
/// carries out: it writes the machine's bytes, closes the port, and hands events to the owner.
///
/// Confined to `queue`: every method must be called on it, every event is delivered on it. The
/// streaming path (the runner and this link) is one component on one queue, so a dot goes from
/// the plan to the serial fd without a thread hop.
///
/// Events are delivered after the machine step that produced them, never from inside one; a
/// command the owner gives while handling an event is a new step, whose events follow those
/// already waiting. Bytes read are handled one frame per step, so the owner's reaction to one
/// frame (an e-stop) comes before the next frame is handled, and dots are pulled from
/// `dotSource` once per read, tick or command.
public final class ApplicatorLink: @unchecked Sendable {
    public let queue: DispatchQueue
    public var configuration: LinkConfiguration { machine.configuration }
    private let port: SerialPort
    private let logger: Logger
    private var machine: LinkMachine
    private var decoder = FrameDecoder()

    /// Called for every event, on `queue`.
    public var onEvent: (LinkEvent) -> Void = { _ in }
    /// Pulled whenever the window has room and streaming is allowed. Return nil when there is
    /// nothing to send now. The owner checks each dot against the envelope before returning it.
    public var dotSource: () -> DotCommand? = { nil }

    private var handshakeCompletion: ((Result<HelloReply, LinkLoss>) -> Void)?
    private var disarmCompletion: ((Bool) -> Void)?

    /// Waiting for delivery, in order: events and completions of the steps taken so far.
    private enum Delivery {
        case event(LinkEvent)
        case handshake(Result<HelloReply, LinkLoss>)
        case disarmed(Bool)
    }
    private var deliveries: [Delivery] = []
    private var deliveriesHead = 0
    private var delivering = false
    /// Set for a whole read, tick or command: the steps inside it only queue their deliveries.
    private var inTurn = false
    /// Set while `dotSource` runs: a command the owner gives from inside it waits until the
    /// pulled batch has been handed to the machine (the credit it was pulled for still holds).
    private var pulling = false
    private var deferred: [() -> Void] = []

    private static let hostEstopBytes: [UInt8] = [0] + LinkMachine.estopBytes(cause: .hostEstop)

    private var timer: (any DispatchSourceTimer)?
    private var timerGrid: (origin: UInt64, interval: UInt64)?

    public init(port: SerialPort, configuration: LinkConfiguration = LinkConfiguration(), logger: Logger) {
        self.port = port
        self.queue = port.queue
        self.logger = logger
        machine = LinkMachine(configuration: configuration, devicePath: port.path)
    }

    public var devicePath: String { port.path }
    public var hello: HelloReply? { machine.hello }
    public var deviceStatus: Status? { machine.deviceStatus }
    public var streaming: Bool { machine.streaming }
    public var latched: Bool { machine.latched }
    public var metrics: LinkMetrics { machine.metrics }
    public var history: FrameHistory { machine.history }
    /// Dots sent and not yet confirmed done or returned, in send order.
    public var inFlight: [DotCommand] { machine.inFlight }
    /// True while ARM or RESUME waits for the device's answer: a `held` STATUS then is the
    /// state before the command, not a new hold.
    public var decisionPending: Bool { machine.decisionPending }

    /// See `LinkMachine.outOfRange`.
    public static func outOfRange(_ reply: HelloReply, requestedLeaseMilliseconds: UInt16) -> String? {
        LinkMachine.outOfRange(reply, requestedLeaseMilliseconds: requestedLeaseMilliseconds)
    }

    // MARK: - Commands (call on queue)

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
        let nonce: UInt32 = rng.next()
        command { $0.connect(nonce: nonce, now: $1) }
    }

    /// See `LinkMachine.arm`.
    public func arm() { command { $0.arm(now: $1) } }

    /// Pull from `dotSource` now (after the owner made more dots available).
    public func pump() {
        dispatchPrecondition(condition: .onQueue(queue))
        guard !pulling else { return }
        turn {}
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
    /// anything queued, then the link latches on its queue. Returns whether the bytes were written.
    /// The bytes: 0x00 (ends any half-written frame on the wire) then ESTOP twice.
    @discardableResult
    public func emergencyStop(cause: FaultCode) -> Bool {
        // The interlocks' cause is prepared once: no allocation between the edge and the write.
        let bytes = cause == .hostEstop ? Self.hostEstopBytes : [0] + LinkMachine.estopBytes(cause: cause)
        let written = port.emergencyWrite(bytes)
        queue.async { self.estop(cause: cause) }
        return written
    }

    /// Stops the heartbeat and closes the port. The device's lease then expires and it holds.
    public func close() { command { machine, _ in machine.close() } }

    /// See `LinkMachine.disarmAndClose`. `completion` comes once the port's descriptor is closed,
    /// so the caller may open the path again at once.
    public func disarmAndClose(completion: @escaping @Sendable (Bool) -> Void) {
        dispatchPrecondition(condition: .onQueue(queue))
        if pulling { return deferred.append { self.disarmAndClose(completion: completion) } }
        disarmCompletion = completion
        command { $0.disarmAndClose(now: $1) }
    }

    // MARK: - Running the machine

    /// One machine step on the current time; deferred while `dotSource` runs.
    private func command(_ input: @escaping (inout LinkMachine, UInt64) -> LinkOutput) {
        dispatchPrecondition(condition: .onQueue(queue))
        if pulling { return deferred.append { self.command(input) } }
        turn { step(input) }
    }

    /// A read, tick or command: its steps, their deliveries, then one pull of dots, then the
    /// timer on the machine's next deadline. Nested (a command given while handling an event),
    /// only the steps: the outer turn delivers, pulls and re-arms.
    private func turn(_ body: () -> Void) {
        if inTurn { return body() }
        inTurn = true
        body()
        deliverAndSettle()
        pullDots()
        deliver()
        inTurn = false
        armTimer()
    }

    /// Runs the machine, writes its bytes, carries out its actions; deliveries wait for `deliver`.
    private func step(_ input: (inout LinkMachine, UInt64) -> LinkOutput) {
        let output = input(&machine, now())
        if !output.bytes.isEmpty {
            do {
                try port.write(output.bytes)
            } catch {
                carryOut(output.actions)
                return carryOut(machine.writeFailed(error).actions)
            }
        }
        carryOut(output.actions)
    }

    private func carryOut(_ actions: [LinkAction]) {
        for action in actions {
            switch action {
            case .event(let event): deliveries.append(.event(event))
            case .handshakeFinished(let result): deliveries.append(.handshake(result))
            case .disarmFinished(let disarmed): deliveries.append(.disarmed(disarmed))
            case .closePort:
                timer?.cancel()
                timer = nil
                timerGrid = nil
                port.close()
            case .log(let level, let message): logger.log(level: level, "\(message)")
            }
        }
    }

    /// Delivers, then lets the machine send what waited for the owner's reaction.
    private func deliverAndSettle() {
        deliver()
        step { $0.settle(now: $1) }
        deliver()
    }

    /// Hands the waiting events and completions to the owner, in order. The owner's commands
    /// meanwhile are steps whose deliveries join the end of the line.
    private func deliver() {
        guard !delivering else { return }
        delivering = true
        while deliveriesHead < deliveries.count {
            let delivery = deliveries[deliveriesHead]
            deliveriesHead += 1
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
        deliveries.removeAll(keepingCapacity: true)
        deliveriesHead = 0
        delivering = false
    }

    /// Keeps the device queue full from the credits in ACKs (§6.1): as many dots as the machine
    /// takes, pulled first, then sent in one write(2).
    private func pullDots() {
        let credit = machine.dotCredit
        guard credit > 0 else { return }
        var batch: [DotCommand] = []
        pulling = true
        while batch.count < credit, let dot = dotSource() { batch.append(dot) }
        pulling = false
        if !batch.isEmpty { step { $0.send(dots: batch, now: $1) } }
        let commands = deferred
        deferred.removeAll()
        for command in commands { command() }
    }

    private func receive(_ bytes: UnsafeRawBufferPointer) {
        machine.received(byteCount: bytes.count)
        turn {
            decoder.feed(bytes) { event in
                step { $0.receive(event, now: $1) }
                deliverAndSettle()
            }
        }
    }

    /// One timer on the machine's tick grid: it fires on every grid tick, the machine's next
    /// deadline among them, and is set again only when the grid changes (connect, HELLO_REPLY).
    /// A one-shot timer moved to each next deadline lost the lease more often in the HIL rig's
    /// emulated VM (every move costs a hop to libdispatch's timer thread); the periodic timer is
    /// the one the link always had.
    private func armTimer() {
        guard let grid = machine.tickGrid else {
            timer?.cancel()
            timer = nil
            timerGrid = nil
            return
        }
        if let armed = timerGrid, armed == grid { return }
        timerGrid = grid
        let t = now()
        let first = grid.origin &+ (t > grid.origin ? (t - grid.origin) / grid.interval + 1 : 1) * grid.interval
        let source = timer ?? DispatchSource.makeTimerSource(queue: queue)
        source.schedule(deadline: DispatchTime(uptimeNanoseconds: first), repeating: .nanoseconds(Int(grid.interval)),
                        leeway: .microseconds(500))
        if timer == nil {
            source.setEventHandler { [weak self] in
                guard let self else { return }
                self.turn { self.step { $0.tick(now: $1) } }
            }
            source.activate()
            timer = source
        }
    }

    private func portClosed(_ error: SerialPortError?) {
        portIsClosed = true
        turn { step { machine, _ in machine.portClosed(error) } }
        let callbacks = afterPortClosed
        afterPortClosed.removeAll()
        for callback in callbacks { callback() }
    }

    /// Set once the port's descriptor is closed (its lock released): the path may be opened again.
    private var portIsClosed = false
    private var afterPortClosed: [() -> Void] = []
    private var portStarted = false

    /// Runs `body` on `queue` once the port's descriptor is closed — at once if it is, or if the
    /// port was never started (nothing to wait for).
    private func whenPortClosed(_ body: @escaping () -> Void) {
        if portIsClosed || !portStarted { body() } else { afterPortClosed.append(body) }
    }

    private func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }
}
