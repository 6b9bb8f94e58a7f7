/// The HELLO_REPLY firmware id: the wire field's 16 bytes held in place, printable ASCII up to the
/// first NUL. A value, not a `String`: the firmware image then carries none of String's machinery
/// (about 9 KB of a 64 KB flash, docs/firmware.md "Sizes and RAM budget"). The host reads it as
/// `text`; a literal longer than 16 bytes is cut, as the wire field cuts it.
public struct FirmwareID: Sendable, Hashable, ExpressibleByStringLiteral, CustomStringConvertible,
    CustomDebugStringConvertible {
    /// The wire field's length in bytes (firmware-protocol.md §4 HELLO_REPLY).
    public static let fieldLength = 16
    // The field's bytes, little-endian: byte i is bits 8·i … 8·i+7 of `low` (i < 8) or `high`.
    private var low: UInt64 = 0
    private var high: UInt64 = 0

    public init() {}

    public init(stringLiteral value: StaticString) {
        self.init()
        value.withUTF8Buffer { bytes in
            for index in 0..<min(bytes.count, Self.fieldLength) { self[index] = bytes[index] }
        }
    }

    /// Host side: the first 16 bytes of `text`'s UTF-8 (the codec sends what it holds; a
    /// non-ASCII byte is refused by the receiving decoder).
    public init(_ text: String) {
        self.init()
        var index = 0
        for unit in text.utf8 {
            guard index < Self.fieldLength else { break }
            self[index] = unit
            index += 1
        }
    }

    /// Byte `index` of the field (0 past the text).
    public subscript(index: Int) -> UInt8 {
        get {
            precondition(index >= 0 && index < Self.fieldLength, "FirmwareID: index out of range")
            let word = index < 8 ? low : high
            return UInt8(truncatingIfNeeded: word >> UInt64(8 * (index % 8)))
        }
        set {
            precondition(index >= 0 && index < Self.fieldLength, "FirmwareID: index out of range")
            let shift = UInt64(8 * (index % 8))
            let cleared = ~(UInt64(0xFF) << shift)
            if index < 8 {
                low = (low & cleared) | (UInt64(newValue) << shift)
            } else {
                high = (high & cleared) | (UInt64(newValue) << shift)
            }
        }
    }

    /// Bytes before the first NUL: the text's length.
    public var count: Int {
        var index = 0
        while index < Self.fieldLength, self[index] != 0 { index += 1 }
        return index
    }

    /// Every byte of the text is printable ASCII (what the decoder accepts).
    public var isPrintableASCII: Bool {
        for index in 0..<count where self[index] < 0x20 || self[index] >= 0x7F { return false }
        return true
    }

    /// The text (host side only: the firmware never builds it).
    public var text: String {
        String(decoding: (0..<count).map { self[$0] }, as: UTF8.self)
    }

    public var description: String { text }
    /// Quoted, as the `String` it replaced printed inside a message (the golden lines).
    public var debugDescription: String { "\"\(text)\"" }
}

/// A payload field's name in firmware-protocol.md §4, as `DecodeError.invalidField` carries it: a
/// `StaticString` (no String built when the firmware refuses a frame) that the host prints and
/// compares as text. It prints as the `String` it replaced did, so error texts are unchanged.
public struct WireFieldName: Sendable, Hashable, ExpressibleByStringLiteral, CustomStringConvertible,
    CustomDebugStringConvertible {
    public let name: StaticString

    public init(stringLiteral value: StaticString) { name = value }

    public static func == (a: WireFieldName, b: WireFieldName) -> Bool {
        a.name.withUTF8Buffer { x in b.name.withUTF8Buffer { y in x.elementsEqual(y) } }
    }

    public func hash(into hasher: inout Hasher) {
        name.withUTF8Buffer { bytes in
            hasher.combine(bytes.count)
            for byte in bytes { hasher.combine(byte) }
        }
    }

    public var description: String { name.withUTF8Buffer { String(decoding: $0, as: UTF8.self) } }
    public var debugDescription: String { "\"\(description)\"" }
}
