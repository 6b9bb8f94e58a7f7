import FirmwareProtocol
import XCTest

@testable import NeedleDriver

/// Drives `LinkMachine` as `ApplicatorLink` does — one decoded block per step, dots pulled after
/// every input, a tick at every deadline — on virtual time (nanoseconds), with no port, timer or
/// sleep. Keeps what the host wrote (decoded) and every action.
struct VirtualHost {
    var machine: LinkMachine
    var now: UInt64 = 1_000_000_000
    /// Every frame the host wrote, in order, and the bytes.
    var written: [Frame] = []
    var writtenBytes: [UInt8] = []
    /// When each write happened.
    var writeTimes: [UInt64] = []
    /// When each frame of `written` was written.
    var writtenTimes: [UInt64] = []
    var events: [LinkEvent] = []
    var handshake: Result<HelloReply, LinkLoss>?
    var disarmed: Bool?
    var portClosed = false
    var logs: [String] = []
    /// Dots the owner has ready (`dotSource`).
    var source: [DotCommand] = []
    private var wire = FrameDecoder()
    private var deviceTx: UInt8 = 0

    static let nonce: UInt32 = 3_237_998_081  // the golden HELLO's

    init(_ configure: (inout LinkConfiguration) -> Void = { _ in }) {
        var configuration = LinkConfiguration()
        configure(&configuration)
        machine = LinkMachine(configuration: configuration, devicePath: "/dev/test-applicator")
    }

    @discardableResult
    mutating func absorb(_ output: LinkOutput) -> [Frame] {
        writtenBytes += output.bytes
        if !output.bytes.isEmpty { writeTimes.append(now) }
        var frames: [Frame] = []
        for event in wire.feed(output.bytes) {
            guard case .frame(let frame) = event else { XCTFail("host wrote a bad frame"); continue }
            frames.append(frame)
        }
        written += frames
        writtenTimes += frames.map { _ in now }
        for action in output.actions {
            switch action {
            case .event(let event): events.append(event)
            case .handshakeFinished(let result):
                XCTAssertNil(handshake, "the handshake finished twice")
                handshake = result
            case .disarmFinished(let value):
                XCTAssertNil(disarmed, "disarmAndClose answered twice")
                disarmed = value
            case .closePort: portClosed = true
            case .log(_, let message): logs.append(message)
            }
        }
        return frames
    }

    /// The owner's turn after an input: as many dots as the machine takes, once its credit
    /// reaches the refill threshold (as `ApplicatorLink` pulls).
    @discardableResult
    mutating func pull() -> [Frame] {
        let credit = machine.dotCredit
        guard credit >= machine.dotRefillThreshold, !source.isEmpty else { return [] }
        let batch = Array(source.prefix(credit))
        source.removeFirst(batch.count)
        return absorb(machine.send(dots: batch, now: now))
    }

    /// A command, then the pull.
    @discardableResult
    mutating func command(_ input: (inout LinkMachine, UInt64) -> LinkOutput) -> [Frame] {
        step(input) + pull()
    }

    /// One step, then `settle` (the owner has seen its events).
    @discardableResult
    mutating func step(_ input: (inout LinkMachine, UInt64) -> LinkOutput) -> [Frame] {
        absorb(input(&machine, now)) + absorb(machine.settle(now: now))
    }

    /// Bytes from the device, one block per step.
    @discardableResult
    mutating func deliver(_ bytes: [UInt8]) -> [Frame] {
        machine.received(byteCount: bytes.count)
        var decoder = FrameDecoder()
        var frames: [Frame] = []
        for event in decoder.feed(bytes) { frames += step { $0.receive(event, now: $1) } }
        return frames + pull()
    }

    /// One device frame, with the device's transmit counter (or `seq`).
    @discardableResult
    mutating func device(_ message: Message, seq: UInt8? = nil) -> [Frame] {
        deviceTx &+= 1
        return deliver(Frame(seq: seq ?? deviceTx, message).encoded())
    }

    /// Virtual time passes to `time`, with a tick at every deadline on the way.
    @discardableResult
    mutating func advance(to time: UInt64) -> [Frame] {
        var frames: [Frame] = []
        var ticks = 0
        while let deadline = machine.nextDeadline, deadline <= time {
            ticks += 1
            guard ticks < 100_000 else { XCTFail("the deadline does not move: \(deadline)"); break }
            now = max(now, deadline)
            frames += step { $0.tick(now: $1) } + pull()
        }
        now = max(now, time)
        return frames
    }

    @discardableResult
    mutating func advance(by nanoseconds: UInt64) -> [Frame] { advance(to: now + nanoseconds) }

    // MARK: - Scenarios

    /// HELLO → HELLO_REPLY → STATUS_REQUEST → STATUS: the link is up, the device as `state`.
    mutating func handshake(reply: HelloReply = .test(), state: DeviceState = .disarmed) {
        command { $0.connect(nonce: Self.nonce, now: $1) }
        device(.helloReply(reply))
        device(.status(.test(state)))
        if case .success = handshake {} else { XCTFail("handshake: \(String(describing: handshake))") }
    }

    /// Handshake, ARM, STATUS ready, streaming: the dots in `source` start going out.
    mutating func armed(reply: HelloReply = .test(), dots: Int = 0) {
        handshake(reply: reply)
        source = (0..<dots).map { Self.dot($0 + 1) }
        command { $0.arm(now: $1) }
        command { machine, _ in machine.startStreaming() }
        device(.status(.test(.ready)))
    }

    static func dot(_ id: Int) -> DotCommand {
        DotCommand(dotID: UInt32(id), epoch: 0, xMicrometres: Int32(id) * 1000, yMicrometres: 0,
                   depthMicrometres: 800, dwellMicroseconds: 50_000)
    }

    /// The DOT frames among `frames`: (seq, dot id, epoch).
    static func dots(_ frames: [Frame]) -> [(seq: UInt8, id: UInt32, epoch: UInt16)] {
        frames.compactMap { if case .dot(let dot) = $0.message { (seq: $0.seq, id: dot.dotID, epoch: dot.epoch) } else { nil } }
    }

    static func types(_ frames: [Frame]) -> [MessageType] { frames.map(\.message.type) }

    var linkLoss: LinkLoss? {
        events.lazy.compactMap { if case .linkLost(let loss) = $0 { loss } else { nil } }.first
    }

    /// The events but the device's status.
    var fenceEvents: [LinkEvent] {
        events.filter { if case .deviceStatus = $0 { false } else { true } }
    }

    var doneIDs: [UInt32] {
        events.compactMap { if case .dotDone(let id, _, _) = $0 { id } else { nil } }
    }
}

extension HelloReply {
    /// The golden HELLO_REPLY of firmware-protocol.md §8, fields overridable.
    static func test(_ change: (inout HelloReply) -> Void = { _ in }) -> HelloReply {
        var reply = HelloReply(
            versionMajor: 1, versionMinor: 2, capabilities: Capabilities(rawValue: 127), bootID: 305_419_896,
            firmwareID: "smp-sim 1.0", queueCapacity: 32, leaseMilliseconds: 100,
            limits: DeviceLimits(depthMinMicrometres: 200, depthMaxMicrometres: 1500, dwellMinMicroseconds: 20_000,
                                 dwellMaxMicroseconds: 500_000, travelXMicrometres: 150_000, travelYMicrometres: 150_000,
                                 travelSpeedMicrometresPerSecond: 50_000, descendMicroseconds: 15_000, retractMicroseconds: 15_000),
            hostNonce: VirtualHost.nonce, doneCount: 0, lastDoneDotID: 0)
        change(&reply)
        return reply
    }
}

extension Status {
    static func test(_ state: DeviceState, fault: FaultCode = .none, epoch: UInt16 = 0, ackSeq: UInt8 = 0,
                     freeSlots: UInt8 = 32, lastDoneSeq: UInt8 = 0, lastDoneDotID: UInt32 = 0, doneCount: UInt32 = 0,
                     currentDotID: UInt32 = 0, needleRetracted: Bool = true, pace: UInt16 = 0) -> Status {
        Status(state: state, fault: fault, queueDepth: 0, freeSlots: freeSlots, epoch: epoch, ackSeq: ackSeq,
               lastDoneSeq: lastDoneSeq, lastDoneDotID: lastDoneDotID, doneCount: doneCount,
               currentDotID: currentDotID, needleRetracted: needleRetracted, paceMilliseconds: pace)
    }
}

/// Hex bytes as firmware-protocol.md writes them.
func hex(_ text: String) -> [UInt8] {
    text.split(separator: " ").map { UInt8($0, radix: 16)! }
}
