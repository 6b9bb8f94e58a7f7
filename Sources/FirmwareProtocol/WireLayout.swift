/// One pass over a payload's fields in wire order: the vocabulary message layouts are written in.
///
/// Each message declares its payload once, as a function generic over a walker that names every
/// field with its kind and its name in firmware-protocol.md §4 (`WirePayload.walkFields`, and
/// `Message.walkPayload` for the payloads that are not a struct of their own). The walkers below
/// derive the rest from that one declaration: `LengthCounter` the payload length,
/// `PayloadWriter` the bytes, `PayloadReader` the value (bounds-checked, every field validated).
/// This is Klipper's `src/command.c` pattern (one format per message, generic encode and decode)
/// with the field list checked by the compiler instead of parsed from a string.
///
/// Field kinds: u8, u16, u32, u64, i32 (little-endian, any value); `raw` (a `RawRepresentable`
/// whose raw value is the wire integer: a value its `init(rawValue:)` refuses is an invalid field,
/// so an enum-as-u8 is validated and an option set or `EstopCause` takes any value); `flag`
/// (u8, 0 or 1); `ascii` (printable ASCII, NUL-padded to 16 bytes: a `FirmwareID`).
///
/// Walkers are concrete value types used through generics only (no existentials), and the
/// writer and reader work on caller-provided buffers: encoding and decoding allocate nothing.
protocol WireWalker {
    /// `Never` for the walkers that cannot fail (length, write), `DecodeError` for the reader.
    associatedtype Failure: Error

    /// A little-endian integer field of `T.bitWidth / 8` bytes.
    mutating func integer<T: FixedWidthInteger>(_ value: inout T, _ name: StaticString) throws(Failure)
    /// A field whose wire value is `value.rawValue`; the reader refuses what `init(rawValue:)` refuses.
    mutating func raw<R: RawRepresentable>(_ value: inout R, _ name: StaticString) throws(Failure)
        where R.RawValue: FixedWidthInteger
    /// A u8 that is 0 (false) or 1 (true); the reader refuses any other byte.
    mutating func flag(_ value: inout Bool, _ name: StaticString) throws(Failure)
    /// `FirmwareID.fieldLength` bytes of printable ASCII, NUL-padded.
    mutating func ascii(_ value: inout FirmwareID, _ name: StaticString) throws(Failure)
}

extension WireWalker {
    // The spec's names for the integer kinds: a layout reads like the tables of firmware-protocol.md
    // §4, and the compiler checks each kind against the property's type.
    mutating func u8(_ value: inout UInt8, _ name: StaticString) throws(Failure) { try integer(&value, name) }
    mutating func u16(_ value: inout UInt16, _ name: StaticString) throws(Failure) { try integer(&value, name) }
    mutating func u32(_ value: inout UInt32, _ name: StaticString) throws(Failure) { try integer(&value, name) }
    mutating func u64(_ value: inout UInt64, _ name: StaticString) throws(Failure) { try integer(&value, name) }
    mutating func i32(_ value: inout Int32, _ name: StaticString) throws(Failure) { try integer(&value, name) }
}

/// A payload struct with a declared wire layout.
protocol WirePayload {
    /// Every field zero (empty text, first case): the value the reader fills in.
    init()
    /// The layout: every field, in wire order, with its kind and its name in firmware-protocol.md.
    mutating func walkFields<W: WireWalker>(_ walker: inout W) throws(W.Failure)
}

/// Counts a layout's bytes.
struct LengthCounter: WireWalker {
    typealias Failure = Never
    var count = 0

    mutating func integer<T: FixedWidthInteger>(_ value: inout T, _ name: StaticString) {
        count += T.bitWidth / 8
    }
    mutating func raw<R: RawRepresentable>(_ value: inout R, _ name: StaticString) where R.RawValue: FixedWidthInteger {
        count += R.RawValue.bitWidth / 8
    }
    mutating func flag(_ value: inout Bool, _ name: StaticString) { count += 1 }
    mutating func ascii(_ value: inout FirmwareID, _ name: StaticString) { count += FirmwareID.fieldLength }
}

/// Writes fields little-endian into a buffer the caller sized from the layout (overrunning it is
/// a programming error and traps).
struct PayloadWriter: WireWalker {
    typealias Failure = Never
    let buffer: UnsafeMutableBufferPointer<UInt8>
    private(set) var count = 0

    init(_ buffer: UnsafeMutableBufferPointer<UInt8>) { self.buffer = buffer }

    /// The bytes written so far.
    var written: UnsafeBufferPointer<UInt8> { UnsafeBufferPointer(rebasing: buffer[..<count]) }

    mutating func byte(_ value: UInt8) {
        precondition(count < buffer.count, "PayloadWriter: layout longer than its buffer")
        buffer[count] = value
        count += 1
    }
    mutating func integer<T: FixedWidthInteger>(_ value: inout T, _ name: StaticString) {
        let bits = UInt64(truncatingIfNeeded: value)
        for index in 0..<(T.bitWidth / 8) { byte(UInt8(truncatingIfNeeded: bits >> (8 * index))) }
    }
    mutating func raw<R: RawRepresentable>(_ value: inout R, _ name: StaticString) where R.RawValue: FixedWidthInteger {
        var rawValue = value.rawValue
        integer(&rawValue, name)
    }
    mutating func flag(_ value: inout Bool, _ name: StaticString) { byte(value ? 1 : 0) }
    mutating func ascii(_ value: inout FirmwareID, _ name: StaticString) {
        for index in 0..<FirmwareID.fieldLength { byte(value[index]) }
    }
}

/// Reads fields little-endian from a buffer; every read is bounds-checked (`DecodeError.truncated`)
/// and every validated kind refused as `DecodeError.invalidField(name)`.
struct PayloadReader: WireWalker {
    typealias Failure = DecodeError
    let bytes: UnsafeBufferPointer<UInt8>
    private(set) var index = 0

    init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    var remaining: Int { bytes.count - index }

    mutating func byte() throws(DecodeError) -> UInt8 {
        guard index < bytes.count else { throw .truncated }
        defer { index += 1 }
        return bytes[index]
    }
    mutating func integer<T: FixedWidthInteger>(_ value: inout T, _ name: StaticString) throws(DecodeError) {
        guard remaining >= T.bitWidth / 8 else { throw .truncated }
        var bits: UInt64 = 0
        for shift in 0..<(T.bitWidth / 8) { bits |= UInt64(try byte()) << (8 * shift) }
        value = T(truncatingIfNeeded: bits)
    }
    mutating func raw<R: RawRepresentable>(_ value: inout R, _ name: StaticString) throws(DecodeError)
        where R.RawValue: FixedWidthInteger {
        var rawValue: R.RawValue = 0
        try integer(&rawValue, name)
        guard let decoded = R(rawValue: rawValue) else { throw invalid(name) }
        value = decoded
    }
    mutating func flag(_ value: inout Bool, _ name: StaticString) throws(DecodeError) {
        let raw = try byte()
        guard raw <= 1 else { throw invalid(name) }
        value = raw == 1
    }
    mutating func ascii(_ value: inout FirmwareID, _ name: StaticString) throws(DecodeError) {
        guard remaining >= FirmwareID.fieldLength else { throw .truncated }
        // The text ends at the first NUL; what follows it is not read (nor kept).
        var id = FirmwareID()
        var ended = false
        for offset in 0..<FirmwareID.fieldLength {
            let unit = bytes[index + offset]
            if unit == 0 { ended = true }
            if ended { continue }
            guard unit >= 0x20 && unit < 0x7F else { throw invalid(name) }
            id[offset] = unit
        }
        index += FirmwareID.fieldLength
        value = id
    }
}

/// A field name for `DecodeError.invalidField` (a `StaticString`: nothing is built).
private func invalid(_ name: StaticString) -> DecodeError {
    .invalidField(WireFieldName(stringLiteral: name))
}
