import XCTest
import FirmwareProtocol
@testable import DeviceSim

/// A host stand-in for driving `Firmware` with virtual time: it encodes frames, feeds them at the
/// bench's `now`, decodes every byte the firmware sends back and keeps the ground truth.
struct Bench {
    var firmware: Firmware
    var now: UInt64 = 0
    var decoder = FrameDecoder()
    /// Every message the device sent, in order.
    var received: [Message] = []
    /// Ground truth (the firmware's `.injected` events), in order.
    var record: [InjectedDot] = []
    var events: [FirmwareEvent] = []
    /// Heartbeat period used by `run(until:)`; nil = no heartbeat.
    var heartbeat: UInt64? = 50_000
    private var lastSent: UInt64 = 0

    /// The spacing check is off here (`minimumSpacingMicrometres` 0): most tests stack their dots
    /// on one spot (no travel, so exact timings), which the check would refuse. The tests of the
    /// check and of the device faults turn it on (`spacingOn`).
    init(_ configure: (inout FirmwareConfiguration) -> Void = { _ in }) {
        var configuration = FirmwareConfiguration()
        configuration.minimumSpacingMicrometres = 0
        configure(&configuration)
        firmware = Firmware(configuration: configuration, at: 0)
    }

    @discardableResult
    mutating func absorb(_ output: FirmwareOutput, file: StaticString = #filePath, line: UInt = #line) -> [Message] {
        var messages: [Message] = []
        for event in decoder.feed(output.bytes) {
            switch event {
            case .frame(let frame): messages.append(frame.message)
            case .discarded(let error, _): XCTFail("device sent a bad frame: \(error)", file: file, line: line)
            }
        }
        received.append(contentsOf: messages)
        record.append(contentsOf: output.injectedDots)
        events.append(contentsOf: output.events)
        return messages
    }

    @discardableResult
    mutating func sendBytes(_ bytes: [UInt8]) -> [Message] {
        lastSent = now
        return absorb(firmware.receive(bytes, at: now))
    }

    @discardableResult
    mutating func send(_ message: Message, seq: UInt8 = 0) -> [Message] {
        sendBytes(Frame(seq: seq, message).encoded())
    }

    @discardableResult
    mutating func send(_ frames: [Frame]) -> [Message] {
        sendBytes(frames.flatMap { $0.encoded() })
    }

    @discardableResult
    mutating func hello(lease: UInt16 = 250, nonce: UInt32 = 0xC0FF_EE01, major: UInt8 = 1, minor: UInt8 = 0) -> [Message] {
        send(.hello(Hello(versionMajor: major, versionMinor: minor, requestedLeaseMilliseconds: lease, hostNonce: nonce)))
    }

    /// HELLO then ARM; asserts the device is ready.
    mutating func handshakeAndArm(file: StaticString = #filePath, line: UInt = #line) {
        hello()
        send(.arm)
        XCTAssertEqual(firmware.snapshot.state, .ready, file: file, line: line)
    }

    @discardableResult
    mutating func dot(_ seq: UInt8, id: UInt32, epoch: UInt16 = 0, x: Int32 = 0, y: Int32 = 0,
                      depth: UInt16 = 800, dwell: UInt32 = 100_000) -> [Message] {
        send(.dot(DotCommand(dotID: id, epoch: epoch, xMicrometres: x, yMicrometres: y,
                             depthMicrometres: depth, dwellMicroseconds: dwell)), seq: seq)
    }

    /// Advances virtual time to `time`, stopping at every firmware deadline, sending a
    /// STATUS_REQUEST heartbeat whenever `heartbeat` has passed since the last frame.
    @discardableResult
    mutating func run(until time: UInt64) -> [Message] {
        var messages: [Message] = []
        while now < time {
            var next = time
            if let deadline = firmware.nextDeadline, deadline > now { next = min(next, deadline) }
            if let heartbeat { next = min(next, max(lastSent + heartbeat, now + 1)) }
            now = next
            messages += absorb(firmware.advance(to: now))
            if let heartbeat, now >= lastSent + heartbeat {
                messages += send(.statusRequest)
            }
        }
        return messages
    }

    @discardableResult
    mutating func run(for duration: UInt64) -> [Message] {
        run(until: now + duration)
    }

    /// Runs (with heartbeat) until the device has nothing left to execute, at most `limit`.
    @discardableResult
    mutating func runUntilIdle(limit: UInt64 = 60_000_000) -> [Message] {
        var messages: [Message] = []
        let end = now + limit
        while now < end {
            let snapshot = firmware.snapshot
            if snapshot.queueDepth == 0 && snapshot.needleRetracted && snapshot.state != .running { break }
            messages += run(for: 10_000)
        }
        return messages
    }

    var status: SimulatorSnapshot { firmware.snapshot }
}

extension Array where Element == Message {
    var acks: [Ack] { compactMap { if case .ack(let a) = $0 { a } else { nil } } }
    var naks: [Nak] { compactMap { if case .nak(let n) = $0 { n } else { nil } } }
    var dotDones: [DotDone] { compactMap { if case .dotDone(let d) = $0 { d } else { nil } } }
    var statuses: [Status] { compactMap { if case .status(let s) = $0 { s } else { nil } } }
    var refusals: [Refused] { compactMap { if case .refused(let r) = $0 { r } else { nil } } }
    var helloReplies: [HelloReply] { compactMap { if case .helloReply(let r) = $0 { r } else { nil } } }
}

/// The device's default minimum spacing (500 µm), for benches that test with it on.
func spacingOn(_ configuration: inout FirmwareConfiguration) {
    configuration.minimumSpacingMicrometres = FirmwareConfiguration().minimumSpacingMicrometres
}

/// Simulated duration of one dot with the default limits: travel + descend + dwell + retract.
func dotDuration(travel: UInt64, dwell: UInt64 = 100_000) -> UInt64 {
    travel + 15_000 + dwell + 15_000
}
