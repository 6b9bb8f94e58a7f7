import XCTest

@testable import FirmwareProtocol

/// SplitMix64: small, seeded, reproducible. A failing trial prints its seed.
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

enum RandomMessages {
    static func frame(_ r: inout SeededRandom) -> Frame {
        let type = MessageType.allCases.randomElement(using: &r)!
        return Frame(seq: .random(in: 0...255, using: &r), message(type, &r))
    }

    static func message(_ type: MessageType, _ r: inout SeededRandom) -> Message {
        func u8() -> UInt8 { .random(in: 0...255, using: &r) }
        func u16() -> UInt16 { .random(in: 0...UInt16.max, using: &r) }
        func u32() -> UInt32 { .random(in: 0...UInt32.max, using: &r) }
        func i32() -> Int32 { .random(in: Int32.min...Int32.max, using: &r) }
        func fault() -> FaultCode { FaultCode.allCases.randomElement(using: &r)! }
        func code() -> ErrorCode { ErrorCode.allCases.randomElement(using: &r)! }
        func state() -> DeviceState { DeviceState.allCases.randomElement(using: &r)! }
        switch type {
        case .hello: return .hello(Hello(versionMajor: u8(), versionMinor: u8(), requestedLeaseMilliseconds: u16(), hostNonce: u32()))
        case .statusRequest: return .statusRequest
        case .arm: return .arm
        case .clear: return .clear
        case .pace: return .pace(minimumIntervalMilliseconds: u16())
        case .spacing: return .spacing(minimumSpacingMicrometres: u32())
        case .heartbeat: return .heartbeat
        case .spacingReply: return .spacingReply(minimumSpacingMicrometres: u32(), ringSize: u8())
        case .dot:
            return .dot(DotCommand(dotID: u32(), epoch: u16(), xMicrometres: i32(), yMicrometres: i32(),
                                   depthMicrometres: u16(), dwellMicroseconds: u32()))
        case .hold: return .hold(epoch: u16())
        case .resume: return .resume(epoch: u16(), nextSeq: u8())
        case .abort: return .abort(epoch: u16())
        case .estop: return .estop(cause: EstopCause(rawValue: u8()))  // any byte: every e-stop is obeyed
        case .helloReply:
            let length = Int.random(in: 0...16, using: &r)
            let id = String((0..<length).map { _ in Character(UnicodeScalar(UInt8.random(in: 0x20...0x7E, using: &r))) })
            return .helloReply(HelloReply(
                versionMajor: u8(), versionMinor: u8(), capabilities: Capabilities(rawValue: u32()), bootID: u32(),
                firmwareID: FirmwareID(id), queueCapacity: u8(), leaseMilliseconds: u16(),
                limits: DeviceLimits(depthMinMicrometres: u16(), depthMaxMicrometres: u16(), dwellMinMicroseconds: u32(),
                                     dwellMaxMicroseconds: u32(), travelXMicrometres: u32(), travelYMicrometres: u32(),
                                     travelSpeedMicrometresPerSecond: u32(), descendMicroseconds: u32(),
                                     retractMicroseconds: u32()),
                hostNonce: u32(), doneCount: u32(), lastDoneDotID: u32()))
        case .ack: return .ack(Ack(ackSeq: u8(), freeSlots: u8(), epoch: u16()))
        case .nak: return .nak(Nak(expectedSeq: u8(), reason: code(), freeSlots: u8()))
        case .dotDone: return .dotDone(DotDone(dotSeq: u8(), dotID: u32(), doneCount: u32(), deviceTimeMicroseconds: .random(in: 0...UInt64.max, using: &r)))
        case .status:
            return .status(Status(state: state(), fault: fault(), queueDepth: u8(), freeSlots: u8(), epoch: u16(),
                                  ackSeq: u8(), lastDoneSeq: u8(), lastDoneDotID: u32(), doneCount: u32(),
                                  currentDotID: u32(), needleRetracted: Bool.random(using: &r), paceMilliseconds: u16()))
        case .refused:
            return .refused(Refused(seq: u8(), dotID: u32(), code: code(), value: i32(), state: state(), fault: fault()))
        }
    }
}

final class PropertyTests: XCTestCase {
    func testRandomMessagesRoundTrip() {
        var r = SeededRandom(seed: 0x5EED_0001)
        for trial in 0..<20_000 {
            let frame = RandomMessages.frame(&r)
            let bytes = frame.encoded()
            XCTAssertFalse(bytes.dropLast().contains(0), "trial \(trial): delimiter inside a frame")
            var decoder = FrameDecoder()
            let events = decoder.feed(bytes)
            XCTAssertEqual(events, [.frame(frame)], "trial \(trial)")
            if events != [.frame(frame)] { return }
        }
    }

    /// decode(encode(x)) == x for every message type, and the encoded payload is exactly as long
    /// as the type's declared layout (`Frame.payloadLength(of:)`).
    func testEveryMessageTypeRoundTripsAtItsDeclaredLength() {
        var r = SeededRandom(seed: 0x5EED_0010)
        for type in MessageType.allCases {
            let length = Frame.payloadLength(of: type)
            XCTAssertLessThanOrEqual(length + Frame.overhead, Frame.maximumDecodedLength, "\(type)")
            for trial in 0..<500 {
                let frame = Frame(seq: .random(in: 0...255, using: &r), RandomMessages.message(type, &r))
                let bytes = frame.encoded()
                let raw = COBS.decode(bytes.dropLast())!
                XCTAssertEqual(raw.count, length + Frame.overhead, "\(type) trial \(trial): encoded size")
                XCTAssertEqual(try Frame.decode(raw: raw[...]), frame, "\(type) trial \(trial): decode(encode(x))")
                XCTAssertEqual(try Frame.decode(cobsBlock: bytes.dropLast()), frame, "\(type) trial \(trial)")
            }
        }
    }

    /// Flip 1–8 random bits, overwrite, insert or delete bytes of a valid frame: the decoder must
    /// never produce a frame other than the original (it may only discard).
    func testRandomCorruptionIsNeverDecodedAsAnotherMessage() {
        var r = SeededRandom(seed: 0x5EED_0002)
        var rejected = 0
        let trials = 100_000
        for trial in 0..<trials {
            let frame = RandomMessages.frame(&r)
            var bytes = frame.encoded()
            switch Int.random(in: 0..<4, using: &r) {
            case 0:
                for _ in 0..<Int.random(in: 1...8, using: &r) {
                    bytes[Int.random(in: 0..<bytes.count, using: &r)] ^= 1 << UInt8.random(in: 0...7, using: &r)
                }
            case 1:
                let index = Int.random(in: 0..<bytes.count, using: &r)
                var value = UInt8.random(in: 0...255, using: &r)
                if value == bytes[index] { value &+= 1 }
                bytes[index] = value
            case 2:
                bytes.insert(.random(in: 0...255, using: &r), at: Int.random(in: 0..<bytes.count, using: &r))
            default:
                bytes.remove(at: Int.random(in: 0..<bytes.count, using: &r))
            }
            bytes.append(0)  // make sure a trailing partial block is judged too
            var decoder = FrameDecoder()
            for event in decoder.feed(bytes) {
                if case .frame(let decoded) = event {
                    XCTAssertEqual(decoded, frame, "trial \(trial): corruption decoded as a different message")
                    if decoded != frame { return }
                } else {
                    rejected += 1
                }
            }
        }
        XCTAssertGreaterThan(rejected, trials / 2)
    }

    func testDecoderResynchronisesAfterGarbage() {
        var r = SeededRandom(seed: 0x5EED_0003)
        var stream: [UInt8] = []
        var expected: [Frame] = []
        for _ in 0..<2_000 {
            if Bool.random(using: &r) {
                // Garbage may contain 0x00 and may be longer than a frame.
                stream += (0..<Int.random(in: 1...300, using: &r)).map { _ in UInt8.random(in: 0...255, using: &r) }
                stream.append(0)
            }
            let frame = RandomMessages.frame(&r)
            expected.append(frame)
            stream += frame.encoded()
        }
        var decoder = FrameDecoder()
        var decoded: [Frame] = []
        // Feed in random chunk sizes, as read(2) would deliver them.
        var index = 0
        while index < stream.count {
            let end = min(stream.count, index + Int.random(in: 1...64, using: &r))
            decoder.feed(stream[index..<end]) { if case .frame(let f) = $0 { decoded.append(f) } }
            index = end
        }
        // Garbage that happens to form a valid frame is astronomically unlikely with CRC-32C;
        // every real frame must come through, in order.
        XCTAssertEqual(decoded, expected)
    }

    func testCOBSRoundTripsLongRunsAndZeros() {
        var r = SeededRandom(seed: 0x5EED_0004)
        for _ in 0..<2_000 {
            let input = (0..<Int.random(in: 0...600, using: &r)).map { _ in
                Bool.random(using: &r) ? 0 : UInt8.random(in: 0...255, using: &r)
            }
            var encoded: [UInt8] = []
            COBS.encode(input, into: &encoded)
            XCTAssertFalse(encoded.contains(0))
            XCTAssertEqual(COBS.decode(encoded), input)
        }
    }

    func testOversizedGarbageIsDiscardedWithoutGrowing() {
        var decoder = FrameDecoder()
        let garbage = [UInt8](repeating: 0x55, count: 10_000)
        let events = decoder.feed(garbage + [0] + Frame(.arm).encoded())
        XCTAssertLessThanOrEqual(decoder.pendingByteCount, Frame.maximumEncodedLength)
        XCTAssertEqual(events.last, .frame(Frame(.arm)))
        XCTAssertEqual(events.count, 2)
    }
}
