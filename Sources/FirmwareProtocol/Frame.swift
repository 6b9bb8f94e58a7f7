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
    /// Bound on a decoded frame, the size of the encoder's scratch buffer (the largest frame,
    /// HELLO_REPLY, is 79 bytes).
    public static let maximumDecodedLength = 128
    /// Largest encoded frame including COBS overhead and delimiter.
    public static let maximumEncodedLength = maximumDecodedLength + 2

    /// Payload length of each message type, from its declared layout (`Message.walkPayload`);
    /// any other length is a decode error.
    public static func payloadLength(of type: MessageType) -> Int {
        var message = Message.zero(type)
        var counter = LengthCounter()
        message.walkPayload(&counter)
        return counter.count
    }

    /// Wire bytes: COBS(type · seq · payload · CRC-32C) followed by the 0x00 delimiter.
    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(Frame.payloadLength(of: message.type) + Frame.overhead + 3)
        encode(into: &out)
        return out
    }

    /// Appends the wire bytes to `out`. The frame is assembled on the stack, so this allocates
    /// nothing once `out` has the capacity (the streaming path reuses one buffer).
    public func encode(into out: inout [UInt8]) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: Frame.maximumDecodedLength) { buffer in
            var w = PayloadWriter(buffer)
            w.byte(message.type.rawValue)
            w.byte(seq)
            var payload = message
            payload.walkPayload(&w)
            var crc = CRC32C.checksum(w.written)
            w.u32(&crc, "crc32c")
            COBS.encode(w.written, into: &out)
        }
        out.append(0)
    }

    /// Decodes one frame from its COBS block (the bytes between two delimiters, delimiter excluded).
    /// Un-stuffs onto the stack (a block never decodes to more bytes than it has): no allocation.
    @inlinable
    public static func decode(cobsBlock: some Collection<UInt8>) throws(DecodeError) -> Frame {
        try withUnsafeTemporaryAllocation(of: UInt8.self, capacity: cobsBlock.count) { raw throws(DecodeError) in
            guard let count = COBS.decode(cobsBlock, into: raw) else { throw .cobs }
            return try decode(rawBytes: UnsafeBufferPointer(rebasing: raw[..<count]))
        }
    }

    /// Decodes one frame from its un-stuffed bytes (type · seq · payload · CRC).
    public static func decode(raw: ArraySlice<UInt8>) throws(DecodeError) -> Frame {
        try raw.withUnsafeBufferPointer { bytes throws(DecodeError) in try decode(rawBytes: bytes) }
    }

    /// Checks, in order: length, CRC, type, the type's payload length, then every field
    /// (`PayloadReader`); the first failure is the error.
    @usableFromInline
    static func decode(rawBytes raw: UnsafeBufferPointer<UInt8>) throws(DecodeError) -> Frame {
        guard raw.count >= overhead else { throw .tooShort(raw.count) }
        let body = UnsafeBufferPointer(rebasing: raw[..<(raw.count - 4)])
        var crcReader = PayloadReader(UnsafeBufferPointer(rebasing: raw[(raw.count - 4)...]))
        var stated: UInt32 = 0
        try crcReader.u32(&stated, "crc32c")
        let computed = CRC32C.checksum(body)
        guard stated == computed else { throw .crcMismatch(expected: stated, actual: computed) }
        guard let type = MessageType(rawValue: body[0]) else { throw .unknownType(body[0]) }
        let payload = UnsafeBufferPointer(rebasing: body[2...])
        let expected = payloadLength(of: type)
        guard payload.count == expected else {
            throw .wrongLength(type, expected: expected, actual: payload.count)
        }
        var reader = PayloadReader(payload)
        var message = Message.zero(type)
        try message.walkPayload(&reader)
        return Frame(seq: body[1], message)
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
