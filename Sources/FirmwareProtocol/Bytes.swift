/// Little-endian field writer used by the message encoder.
@usableFromInline
struct ByteWriter {
    @usableFromInline var bytes: [UInt8]

    @inlinable init(capacity: Int) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    @inlinable mutating func u8(_ value: UInt8) { bytes.append(value) }
    @inlinable mutating func u16(_ value: UInt16) {
        bytes.append(UInt8(truncatingIfNeeded: value))
        bytes.append(UInt8(truncatingIfNeeded: value >> 8))
    }
    @inlinable mutating func u32(_ value: UInt32) {
        for shift in stride(from: 0, to: 32, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) }
    }
    @inlinable mutating func u64(_ value: UInt64) {
        for shift in stride(from: 0, to: 64, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
    }
    @inlinable mutating func i32(_ value: Int32) { u32(UInt32(bitPattern: value)) }
    @inlinable mutating func fixedASCII(_ text: String, length: Int) {
        var utf8 = Array(text.utf8.prefix(length))
        utf8.append(contentsOf: repeatElement(0, count: length - utf8.count))
        bytes.append(contentsOf: utf8)
    }
}

/// Little-endian field reader; every read is bounds-checked and fails as `DecodeError.truncated`.
struct ByteReader {
    let bytes: ArraySlice<UInt8>
    var index: Int

    init(_ bytes: ArraySlice<UInt8>) {
        self.bytes = bytes
        self.index = bytes.startIndex
    }

    var remaining: Int { bytes.endIndex - index }

    mutating func u8() throws(DecodeError) -> UInt8 {
        guard index < bytes.endIndex else { throw .truncated }
        defer { index += 1 }
        return bytes[index]
    }
    mutating func u16() throws(DecodeError) -> UInt16 {
        UInt16(try u8()) | UInt16(try u8()) << 8
    }
    mutating func u32() throws(DecodeError) -> UInt32 {
        UInt32(try u16()) | UInt32(try u16()) << 16
    }
    mutating func u64() throws(DecodeError) -> UInt64 {
        UInt64(try u32()) | UInt64(try u32()) << 32
    }
    mutating func i32() throws(DecodeError) -> Int32 { Int32(bitPattern: try u32()) }
    mutating func fixedASCII(length: Int) throws(DecodeError) -> String {
        guard remaining >= length else { throw .truncated }
        let field = bytes[index..<(index + length)]
        index += length
        let text = field.prefix { $0 != 0 }
        guard text.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else { throw .invalidField("firmware_id") }
        return String(decoding: text, as: UTF8.self)
    }
}
