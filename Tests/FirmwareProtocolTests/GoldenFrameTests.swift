import Foundation
import XCTest

@testable import FirmwareProtocol

/// The example frames of firmware-protocol.md, section 8. The document is the source of truth for
/// the bytes: this test reads it, so the spec and the codec cannot drift apart.
enum GoldenExamples {
    static let limits = DeviceLimits(
        depthMinMicrometres: 200, depthMaxMicrometres: 1500,
        dwellMinMicroseconds: 20_000, dwellMaxMicroseconds: 500_000,
        travelXMicrometres: 150_000, travelYMicrometres: 150_000,
        travelSpeedMicrometresPerSecond: 50_000,
        descendMicroseconds: 15_000, retractMicroseconds: 15_000)

    static let all: [(name: String, frame: Frame)] = [
        ("HELLO", Frame(.hello(Hello(requestedLeaseMilliseconds: 100, hostNonce: 0xC0FF_EE01)))),
        // Protocols 1.3 and 1.4 changed the version bytes (§6.7.2): an older peer's frames are
        // kept as they were.
        ("HELLO from a 1.3 host", Frame(.hello(Hello(versionMinor: 3, requestedLeaseMilliseconds: 100,
                                                     hostNonce: 0xC0FF_EE01)))),
        ("HELLO from a 1.2 host", Frame(.hello(Hello(versionMinor: 2, requestedLeaseMilliseconds: 100,
                                                     hostNonce: 0xC0FF_EE01)))),
        ("STATUS_REQUEST", Frame(.statusRequest)),
        ("HEARTBEAT (1.4)", Frame(.heartbeat)),
        ("ARM", Frame(.arm)),
        ("CLEAR", Frame(.clear)),
        ("PACE", Frame(.pace(minimumIntervalMilliseconds: 84))),
        ("SPACING", Frame(.spacing(minimumSpacingMicrometres: 600))),
        ("DOT", Frame(seq: 1, .dot(DotCommand(dotID: 42, epoch: 0, xMicrometres: -12_500, yMicrometres: 30_250,
                                              depthMicrometres: 800, dwellMicroseconds: 120_000)))),
        ("DOT seq 0 after wrap", Frame(seq: 0, .dot(DotCommand(dotID: 256, epoch: 3, xMicrometres: 0, yMicrometres: 0,
                                                              depthMicrometres: 500, dwellMicroseconds: 20_000)))),
        ("HOLD", Frame(.hold(epoch: 1))),
        ("RESUME", Frame(.resume(epoch: 1, nextSeq: 10))),
        ("ABORT", Frame(.abort(epoch: 2))),
        ("ESTOP", Frame(.estop(cause: .hostEstop))),
        ("ESTOP unknown cause", Frame(.estop(cause: EstopCause(rawValue: 0x77)))),
        ("HELLO_REPLY", Frame(seq: 1, .helloReply(HelloReply(
            capabilities: [.deduplication, .epochFence, .lease, .contactSensor, .depthSensor, .pace, .spacing],
            bootID: 0x1234_5678, firmwareID: "smp-sim 1.0", queueCapacity: 32, leaseMilliseconds: 100,
            limits: limits, hostNonce: 0xC0FF_EE01, doneCount: 0, lastDoneDotID: 0)))),
        ("HELLO_REPLY from a 1.3 device", Frame(seq: 1, .helloReply(HelloReply(
            versionMinor: 3,
            capabilities: [.deduplication, .epochFence, .lease, .contactSensor, .depthSensor, .pace, .spacing],
            bootID: 0x1234_5678, firmwareID: "smp-sim 1.0", queueCapacity: 32, leaseMilliseconds: 100,
            limits: limits, hostNonce: 0xC0FF_EE01, doneCount: 0, lastDoneDotID: 0)))),
        ("HELLO_REPLY from a 1.2 device", Frame(seq: 1, .helloReply(HelloReply(
            versionMinor: 2,
            capabilities: [.deduplication, .epochFence, .lease, .contactSensor, .depthSensor, .pace, .spacing],
            bootID: 0x1234_5678, firmwareID: "smp-sim 1.0", queueCapacity: 32, leaseMilliseconds: 100,
            limits: limits, hostNonce: 0xC0FF_EE01, doneCount: 0, lastDoneDotID: 0)))),
        ("ACK", Frame(seq: 2, .ack(Ack(ackSeq: 1, freeSlots: 31, epoch: 0)))),
        ("ACK for a block of DOTs 1-5 (1.3)", Frame(seq: 2, .ack(Ack(ackSeq: 5, freeSlots: 27, epoch: 0)))),
        ("NAK", Frame(seq: 3, .nak(Nak(expectedSeq: 5, reason: .outOfOrder, freeSlots: 28)))),
        ("DOT_DONE", Frame(seq: 4, .dotDone(DotDone(dotSeq: 1, dotID: 42, doneCount: 1,
                                                    deviceTimeMicroseconds: 1_234_567)))),
        ("STATUS", Frame(seq: 5, .status(Status(state: .held, fault: .leaseExpired, queueDepth: 0, freeSlots: 32,
                                                epoch: 1, ackSeq: 9, lastDoneSeq: 7, lastDoneDotID: 1007,
                                                doneCount: 7, currentDotID: 0, needleRetracted: true,
                                                paceMilliseconds: 84)))),
        ("REFUSED", Frame(seq: 6, .refused(Refused(seq: 9, dotID: 77, code: .depthOutOfRange, value: 2100,
                                                   state: .fault, fault: .dotOutOfLimits)))),
        ("REFUSED too_close", Frame(seq: 7, .refused(Refused(seq: 12, dotID: 7, code: .tooClose, value: 0,
                                                             state: .fault, fault: .dotOutOfLimits)))),
        ("SPACING_REPLY", Frame(seq: 8, .spacingReply(minimumSpacingMicrometres: 600, ringSize: 64))),
    ]

    static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { String(format: "%02x", $0) }.joined(separator: " ")
    }

    /// name → bytes from the `<!-- golden:begin -->` section of firmware-protocol.md.
    static func fromSpec() throws -> [String: [UInt8]] {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        let text = try String(contentsOf: root.appendingPathComponent("firmware-protocol.md"), encoding: .utf8)
        guard let begin = text.range(of: "<!-- golden:begin -->"), let end = text.range(of: "<!-- golden:end -->")
        else { throw XCTSkip("golden markers missing") }
        var result: [String: [UInt8]] = [:]
        for line in text[begin.upperBound..<end.lowerBound].split(separator: "\n") {
            // - `NAME` — `message` — `hex`
            let parts = line.split(separator: "`", omittingEmptySubsequences: false)
            guard parts.count >= 6 else { continue }
            let bytes = parts[5].split(separator: " ").compactMap { UInt8($0, radix: 16) }
            result[String(parts[1])] = bytes
        }
        return result
    }

    static func specLines() -> String {
        all.map { "- `\($0.name)` — `\(describe($0.frame))` — `\(hex($0.frame.encoded()))`" }
            .joined(separator: "\n")
    }

    static func describe(_ frame: Frame) -> String {
        var text = String(describing: frame.message)
        text = text.replacingOccurrences(of: "FirmwareProtocol.", with: "")
        return "seq \(frame.seq) \(text)"
    }
}

final class GoldenFrameTests: XCTestCase {
    func testCRCCheckValue() {
        XCTAssertEqual(CRC32C.checksum(Array("123456789".utf8)), 0xE306_9283)
    }

    func testSpecHoldsEveryExampleAndTheBytesMatchBothWays() throws {
        if ProcessInfo.processInfo.environment["SMP_PRINT_GOLDEN"] != nil {
            print(GoldenExamples.specLines())
        }
        let spec = try GoldenExamples.fromSpec()
        XCTAssertEqual(Set(spec.keys), Set(GoldenExamples.all.map(\.name)),
                       "firmware-protocol.md §8 and the golden list name different frames")
        for (name, frame) in GoldenExamples.all {
            guard let bytes = spec[name] else { continue }
            XCTAssertEqual(GoldenExamples.hex(frame.encoded()), GoldenExamples.hex(bytes), "encode \(name)")
            var decoder = FrameDecoder()
            XCTAssertEqual(decoder.feed(bytes), [.frame(frame)], "decode \(name)")
        }
    }

    func testEveryMessageTypeHasAGoldenExample() {
        let covered = Set(GoldenExamples.all.map { $0.frame.message.type })
        XCTAssertEqual(covered, Set(MessageType.allCases))
    }

    /// An e-stop is obeyed whatever its cause byte: every byte decodes, re-encodes exactly, and
    /// names the fault a device latches with (unknown and 0 → host_estop).
    func testAnEstopWithAnyCauseByteDecodesAndReencodesExactly() throws {
        for byte in 0...255 as ClosedRange<UInt8> {
            let bytes = Frame(.estop(cause: EstopCause(rawValue: byte))).encoded()
            var decoder = FrameDecoder()
            let events = decoder.feed(bytes)
            guard case .frame(let frame)? = events.first, events.count == 1,
                  case .estop(let cause) = frame.message else {
                return XCTFail("cause \(byte): \(events)")
            }
            XCTAssertEqual(cause.rawValue, byte)
            XCTAssertEqual(frame.encoded(), bytes, "cause \(byte): re-encodes byte for byte")
            let expected = FaultCode(rawValue: byte).flatMap { $0 == .none ? nil : $0 } ?? .hostEstop
            XCTAssertEqual(cause.latchReason, expected, "cause \(byte)")
        }
        XCTAssertEqual(Message.estop(cause: .contactLost), .estop(cause: EstopCause(rawValue: 3)),
                       "a host's FaultCode cause is the same message")
    }

    func testEncodedLengthsMatchTheTable() {
        for (_, frame) in GoldenExamples.all {
            let raw = COBS.decode(frame.encoded().dropLast())!
            XCTAssertEqual(raw.count, Frame.payloadLength(of: frame.message.type) + Frame.overhead)
            XCTAssertLessThanOrEqual(frame.encoded().count, Frame.maximumEncodedLength)
        }
    }
}
