/// A decoded frame: header sequence number and message.
///
/// DOT frames carry the host's DOT sequence number (8 bits on the wire, widened to 64 bits on the
/// host); every other host frame carries 0; device frames carry the device's transmit counter,
/// used for loss metrics only.
public struct Frame: Sendable, Hashable {
    public var seq: UInt8
    public var message: Message

    public init(seq: UInt8 = 0, _ message: Message) {
        self.seq = seq
        self.message = message
    }

    /// Frame layout before COBS: type (1) · seq (1) · payload (fixed per type) · CRC-32C (4, LE).
    public static let overhead = 6
    /// Largest decoded frame (HELLO reply).
    public static let maximumDecodedLength = 128
    /// Largest encoded frame including COBS overhead and delimiter.
    public static let maximumEncodedLength = maximumDecodedLength + 2

    /// Payload length of each message type; any other length is a decode error.
    public static func payloadLength(of type: MessageType) -> Int {
        switch type {
        case .hello: 8
        case .statusRequest, .arm, .clear: 0
        case .dot: 20
        case .hold, .abort, .pace: 2
        case .resume: 3
        case .spacing: 4
        case .spacingReply: 5
        case .estop: 1
        case .helloReply: 73
        case .ack: 4
        case .nak: 3
        case .dotDone: 17
        case .status: 23
        case .refused: 12
        }
    }

    /// Wire bytes: COBS(type · seq · payload · CRC-32C) followed by the 0x00 delimiter.
    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(Frame.payloadLength(of: message.type) + Frame.overhead + 3)
        encode(into: &out)
        return out
    }

    /// Appends the wire bytes to `out` (avoids an allocation per frame on the streaming path).
    public func encode(into out: inout [UInt8]) {
        var w = ByteWriter(capacity: Frame.payloadLength(of: message.type) + Frame.overhead)
        w.u8(message.type.rawValue)
        w.u8(seq)
        switch message {
        case .hello(let m):
            w.u8(m.versionMajor); w.u8(m.versionMinor)
            w.u16(m.requestedLeaseMilliseconds); w.u32(m.hostNonce)
        case .statusRequest, .arm, .clear:
            break
        case .dot(let d):
            w.u32(d.dotID); w.u16(d.epoch); w.i32(d.xMicrometres); w.i32(d.yMicrometres)
            w.u16(d.depthMicrometres); w.u32(d.dwellMicroseconds)
        case .hold(let epoch), .abort(let epoch):
            w.u16(epoch)
        case .pace(let milliseconds):
            w.u16(milliseconds)
        case .spacing(let micrometres):
            w.u32(micrometres)
        case .resume(let epoch, let nextSeq):
            w.u16(epoch); w.u8(nextSeq)
        case .estop(let cause):
            w.u8(cause.rawValue)
        case .helloReply(let r):
            w.u8(r.versionMajor); w.u8(r.versionMinor); w.u32(r.capabilities.rawValue); w.u32(r.bootID)
            w.fixedASCII(r.firmwareID, length: 16)
            w.u8(r.queueCapacity); w.u16(r.leaseMilliseconds)
            w.u16(r.limits.depthMinMicrometres); w.u16(r.limits.depthMaxMicrometres)
            w.u32(r.limits.dwellMinMicroseconds); w.u32(r.limits.dwellMaxMicroseconds)
            w.u32(r.limits.travelXMicrometres); w.u32(r.limits.travelYMicrometres)
            w.u32(r.limits.travelSpeedMicrometresPerSecond)
            w.u32(r.limits.descendMicroseconds); w.u32(r.limits.retractMicroseconds)
            w.u32(r.hostNonce); w.u32(r.doneCount); w.u32(r.lastDoneDotID)
        case .ack(let a):
            w.u8(a.ackSeq); w.u8(a.freeSlots); w.u16(a.epoch)
        case .nak(let n):
            w.u8(n.expectedSeq); w.u8(n.reason.rawValue); w.u8(n.freeSlots)
        case .dotDone(let d):
            w.u8(d.dotSeq); w.u32(d.dotID); w.u32(d.doneCount); w.u64(d.deviceTimeMicroseconds)
        case .status(let s):
            w.u8(s.state.rawValue); w.u8(s.fault.rawValue); w.u8(s.queueDepth); w.u8(s.freeSlots)
            w.u16(s.epoch); w.u8(s.ackSeq); w.u8(s.lastDoneSeq); w.u32(s.lastDoneDotID)
            w.u32(s.doneCount); w.u32(s.currentDotID); w.u8(s.needleRetracted ? 1 : 0)
            w.u16(s.paceMilliseconds)
        case .refused(let r):
            w.u8(r.seq); w.u32(r.dotID); w.u8(r.code.rawValue); w.i32(r.value)
            w.u8(r.state.rawValue); w.u8(r.fault.rawValue)
        case .spacingReply(let micrometres, let ringSize):
            w.u32(micrometres); w.u8(ringSize)
        }
        w.u32(CRC32C.checksum(w.bytes))
        COBS.encode(w.bytes, into: &out)
        out.append(0)
    }

    /// Decodes one frame from its COBS block (the bytes between two delimiters, delimiter excluded).
    @inlinable
    public static func decode(cobsBlock: some Collection<UInt8>) throws(DecodeError) -> Frame {
        guard let raw = COBS.decode(cobsBlock) else { throw .cobs }
        return try decode(raw: raw[...])
    }

    /// Decodes one frame from its un-stuffed bytes (type · seq · payload · CRC).
    public static func decode(raw: ArraySlice<UInt8>) throws(DecodeError) -> Frame {
        guard raw.count >= overhead else { throw .tooShort(raw.count) }
        let body = raw.prefix(raw.count - 4)
        var crcReader = ByteReader(raw.suffix(4))
        let stated = try crcReader.u32()
        let computed = CRC32C.checksum(body)
        guard stated == computed else { throw .crcMismatch(expected: stated, actual: computed) }
        guard let type = MessageType(rawValue: body[body.startIndex]) else {
            throw .unknownType(body[body.startIndex])
        }
        let seq = body[body.startIndex + 1]
        let payload = body.dropFirst(2)
        let expected = payloadLength(of: type)
        guard payload.count == expected else {
            throw .wrongLength(type, expected: expected, actual: payload.count)
        }
        var r = ByteReader(payload)
        let message: Message
        switch type {
        case .hello:
            message = .hello(Hello(versionMajor: try r.u8(), versionMinor: try r.u8(),
                                   requestedLeaseMilliseconds: try r.u16(), hostNonce: try r.u32()))
        case .statusRequest: message = .statusRequest
        case .arm: message = .arm
        case .clear: message = .clear
        case .pace: message = .pace(minimumIntervalMilliseconds: try r.u16())
        case .spacing: message = .spacing(minimumSpacingMicrometres: try r.u32())
        case .dot:
            message = .dot(DotCommand(dotID: try r.u32(), epoch: try r.u16(), xMicrometres: try r.i32(),
                                      yMicrometres: try r.i32(), depthMicrometres: try r.u16(),
                                      dwellMicroseconds: try r.u32()))
        case .hold: message = .hold(epoch: try r.u16())
        case .resume: message = .resume(epoch: try r.u16(), nextSeq: try r.u8())
        case .abort: message = .abort(epoch: try r.u16())
        case .estop:
            // Any cause byte: an e-stop must stop whatever its cause says (the one unvalidated field).
            message = .estop(cause: EstopCause(rawValue: try r.u8()))
        case .helloReply:
            let major = try r.u8(), minor = try r.u8()
            let caps = Capabilities(rawValue: try r.u32())
            let boot = try r.u32()
            let firmware = try r.fixedASCII(length: 16)
            let capacity = try r.u8(), lease = try r.u16()
            let limits = DeviceLimits(
                depthMinMicrometres: try r.u16(), depthMaxMicrometres: try r.u16(),
                dwellMinMicroseconds: try r.u32(), dwellMaxMicroseconds: try r.u32(),
                travelXMicrometres: try r.u32(), travelYMicrometres: try r.u32(),
                travelSpeedMicrometresPerSecond: try r.u32(),
                descendMicroseconds: try r.u32(), retractMicroseconds: try r.u32())
            let nonce = try r.u32(), done = try r.u32(), last = try r.u32()
            message = .helloReply(HelloReply(versionMajor: major, versionMinor: minor, capabilities: caps,
                                             bootID: boot, firmwareID: firmware, queueCapacity: capacity,
                                             leaseMilliseconds: lease, limits: limits, hostNonce: nonce,
                                             doneCount: done, lastDoneDotID: last))
        case .ack:
            message = .ack(Ack(ackSeq: try r.u8(), freeSlots: try r.u8(), epoch: try r.u16()))
        case .nak:
            message = .nak(Nak(expectedSeq: try r.u8(), reason: try errorCode(try r.u8(), "reason"),
                               freeSlots: try r.u8()))
        case .dotDone:
            message = .dotDone(DotDone(dotSeq: try r.u8(), dotID: try r.u32(), doneCount: try r.u32(),
                                       deviceTimeMicroseconds: try r.u64()))
        case .status:
            let state = try deviceState(try r.u8())
            let fault = try fault(try r.u8(), "fault")
            let status = Status(state: state, fault: fault, queueDepth: try r.u8(), freeSlots: try r.u8(),
                                epoch: try r.u16(), ackSeq: try r.u8(), lastDoneSeq: try r.u8(),
                                lastDoneDotID: try r.u32(), doneCount: try r.u32(), currentDotID: try r.u32(),
                                needleRetracted: try flag(try r.u8(), "needle_retracted"),
                                paceMilliseconds: try r.u16())
            message = .status(status)
        case .refused:
            message = .refused(Refused(seq: try r.u8(), dotID: try r.u32(), code: try errorCode(try r.u8(), "code"),
                                       value: try r.i32(), state: try deviceState(try r.u8()),
                                       fault: try fault(try r.u8(), "fault")))
        case .spacingReply:
            message = .spacingReply(minimumSpacingMicrometres: try r.u32(), ringSize: try r.u8())
        }
        return Frame(seq: seq, message)
    }

    private static func fault(_ raw: UInt8, _ field: String) throws(DecodeError) -> FaultCode {
        guard let value = FaultCode(rawValue: raw) else { throw .invalidField(field) }
        return value
    }
    private static func errorCode(_ raw: UInt8, _ field: String) throws(DecodeError) -> ErrorCode {
        guard let value = ErrorCode(rawValue: raw) else { throw .invalidField(field) }
        return value
    }
    private static func deviceState(_ raw: UInt8) throws(DecodeError) -> DeviceState {
        guard let value = DeviceState(rawValue: raw) else { throw .invalidField("state") }
        return value
    }
    private static func flag(_ raw: UInt8, _ field: String) throws(DecodeError) -> Bool {
        guard raw <= 1 else { throw .invalidField(field) }
        return raw == 1
    }
}

/// Splits a byte stream into frames. Feed it whatever `read(2)` returned; it yields each decoded
/// frame or the reason a block was discarded.
///
/// Resynchronisation rule: bytes are collected up to a 0x00 delimiter; the block before it is
/// decoded; if that fails, the block is discarded and decoding starts afresh after the delimiter.
/// A block longer than `Frame.maximumEncodedLength` is discarded as it grows, so garbage cannot
/// make the receiver buffer without bound. An empty block (two delimiters in a row) is ignored:
/// senders may send a lone 0x00 to flush a receiver's partial frame.
public struct FrameDecoder: Sendable {
    @usableFromInline var block: [UInt8] = []
    @usableFromInline var overflowed = false

    public init() {
        block.reserveCapacity(Frame.maximumEncodedLength)
    }

    /// Bytes held for an incomplete frame.
    public var pendingByteCount: Int { block.count }

    public enum Event: Sendable, Hashable {
        case frame(Frame)
        case discarded(DecodeError, byteCount: Int)
    }

    /// Feeds bytes and calls `handle` for each complete block, in order.
    @inlinable
    public mutating func feed(_ bytes: some Sequence<UInt8>, _ handle: (Event) -> Void) {
        for byte in bytes {
            if byte == 0 {
                if overflowed {
                    handle(.discarded(.oversized, byteCount: block.count))
                } else if !block.isEmpty {
                    do {
                        handle(.frame(try Frame.decode(cobsBlock: block)))
                    } catch {
                        handle(.discarded(error, byteCount: block.count))
                    }
                }
                block.removeAll(keepingCapacity: true)
                overflowed = false
            } else if !overflowed {
                if block.count >= Frame.maximumEncodedLength {
                    overflowed = true
                } else {
                    block.append(byte)
                }
            }
        }
    }

    /// Convenience for tests: all events from `bytes`.
    @inlinable
    public mutating func feed(_ bytes: some Sequence<UInt8>) -> [Event] {
        var events: [Event] = []
        feed(bytes) { events.append($0) }
        return events
    }
}
