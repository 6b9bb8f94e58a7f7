import SMPPlan
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// Stage 1 of loading, the fast way: one pass over the file's UTF-8 bytes straight into the
// `RawPlanDocument` the resolver reads, with no JSON tree, no per-dot dictionary and no copy of
// the text (strings are made from the bytes in place, a region name repeated from the previous
// dot shares its storage).
//
// It reads only *plain* plans: strict RFC 8259 JSON, an object holding only the format's keys,
// each once, with values of the right JSON type; strings without escapes or control characters,
// valid UTF-8; numbers a finite, non-underflowing Double. For such a file the Foundation decoder
// (`PlanDecoding`) finds no shape problem at all, so the two produce the same raw document and
// the resolver the same plan, warnings and value errors (same paths, values, limits). On the
// first byte that is not plain it stops and says so; the caller then reads the file with
// `PlanDecoding`, which words every shape error (wrong type, unknown or repeated key, a number
// out of range, not JSON at line and column) exactly as before. That slow path only runs for a
// file that will be refused or that uses a rare feature (escapes, a byte order mark, UTF-16).
// `make fuzz` and `PlanReaderDifferentialTests` compare the two readers' verdicts.

/// Why the fast reader stopped: the file is not a plain plan (see above). Carries nothing; the
/// slow path explains.
struct NotPlainPlan: Error {}

enum PlanJSONReader {
    /// The raw document of a plain plan, or nil when the bytes are not one (then use `PlanDecoding`).
    static func read(_ bytes: UnsafeRawBufferPointer) -> RawPlanDocument? {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return nil }
        var cursor = ByteCursor(base: base.assumingMemoryBound(to: UInt8.self), end: bytes.count)
        do {
            let document = try cursor.document()
            return document
        } catch {
            return nil
        }
    }
}

// Key bytes as little-endian integers, compared in one load instead of byte by byte.
private enum Key {
    static func word(_ text: StaticString) -> UInt64 {
        var value: UInt64 = 0
        text.withUTF8Buffer { buffer in
            for (offset, byte) in buffer.enumerated() { value |= UInt64(byte) << (8 * UInt64(offset)) }
        }
        return value
    }

    static let id = word("id"), xMillimetres = word("x_mm"), yMillimetres = word("y_mm")
    static let depth = word("depth_mm"), dwell = word("dwell_ms"), region = word("region")
}

private struct ByteCursor {
    let base: UnsafePointer<UInt8>
    let end: Int
    var position = 0
    /// The last region read: the next dot usually names the same one, and then shares its String.
    var lastRegionStart: UnsafePointer<UInt8>?
    var lastRegionLength = 0
    var lastRegion = ""

    init(base: UnsafePointer<UInt8>, end: Int) {
        self.base = base
        self.end = end
    }

    // MARK: Structure

    @inline(__always)
    mutating func skipWhitespace() {
        while position < end {
            let byte = base[position]
            guard byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 else { return }
            position += 1
        }
    }

    /// Skips whitespace and returns the next byte (not consumed); throws at the end.
    @inline(__always)
    mutating func peek() throws(NotPlainPlan) -> UInt8 {
        skipWhitespace()
        guard position < end else { throw NotPlainPlan() }
        return base[position]
    }

    @inline(__always)
    mutating func expect(_ byte: UInt8) throws(NotPlainPlan) {
        guard try peek() == byte else { throw NotPlainPlan() }
        position += 1
    }

    /// After a member or an element: true for a comma (more follow), false for `close`.
    @inline(__always)
    mutating func more(close: UInt8) throws(NotPlainPlan) -> Bool {
        let byte = try peek()
        position += 1
        if byte == 0x2C { return true }
        if byte == close { return false }
        throw NotPlainPlan()
    }

    /// Opens an object: true when it has members (positioned at the first key), false for `{}`.
    mutating func openObject() throws(NotPlainPlan) -> Bool {
        try expect(0x7B)
        if try peek() == 0x7D {
            position += 1
            return false
        }
        return true
    }

    /// The next key's bytes (no escapes) and its colon. The bytes are the text's own.
    @inline(__always)
    mutating func key() throws(NotPlainPlan) -> (UnsafePointer<UInt8>, Int) {
        let (start, length, plain) = try stringBytes()
        guard plain else { throw NotPlainPlan() }
        try expect(0x3A)
        return (start, length)
    }

    /// The bytes between the quotes of the string at the cursor, and whether they are all ASCII.
    /// Escapes and control characters are not plain.
    @inline(__always)
    mutating func stringBytes() throws(NotPlainPlan) -> (UnsafePointer<UInt8>, Int, Bool) {
        try expect(0x22)
        let start = position
        var ascii = true
        while position < end {
            let byte = base[position]
            if byte == 0x22 {
                position += 1
                return (base + start, position - 1 - start, ascii)
            }
            if byte == 0x5C || byte < 0x20 { throw NotPlainPlan() }
            if byte >= 0x80 { ascii = false }
            position += 1
        }
        throw NotPlainPlan()
    }

    mutating func string() throws(NotPlainPlan) -> String {
        let (start, length, ascii) = try stringBytes()
        return try Self.makeString(start, length, ascii: ascii)
    }

    static func makeString(_ start: UnsafePointer<UInt8>, _ length: Int, ascii: Bool) throws(NotPlainPlan) -> String {
        let buffer = UnsafeBufferPointer(start: start, count: length)
        let text = String(decoding: buffer, as: UTF8.self)
        // Invalid UTF-8 decodes with replacement characters, so the bytes differ from the text's.
        if !ascii, !text.utf8.elementsEqual(buffer) { throw NotPlainPlan() }
        return text
    }

    /// A region name: the previous dot's String again when the bytes are the same.
    mutating func region() throws(NotPlainPlan) -> String {
        let (start, length, ascii) = try stringBytes()
        if let last = lastRegionStart, length == lastRegionLength, memcmp(last, start, length) == 0 {
            return lastRegion
        }
        lastRegion = try Self.makeString(start, length, ascii: ascii)
        lastRegionStart = start
        lastRegionLength = length
        return lastRegion
    }

    /// The key at `start` as a little-endian word when it is 1...8 bytes long, else 0.
    @inline(__always)
    static func word(_ start: UnsafePointer<UInt8>, _ length: Int) -> UInt64 {
        guard length >= 1, length <= 8 else { return 0 }
        var value: UInt64 = 0
        for offset in 0..<length { value |= UInt64(start[offset]) << (8 * UInt64(offset)) }
        return value
    }

    static func matches(_ start: UnsafePointer<UInt8>, _ length: Int, _ text: StaticString) -> Bool {
        length == text.utf8CodeUnitCount && memcmp(start, text.utf8Start, length) == 0
    }

    /// Marks `bit` as read in `seen`; a key written twice is not plain.
    @inline(__always)
    static func once(_ bit: UInt32, _ seen: inout UInt32) throws(NotPlainPlan) {
        guard seen & bit == 0 else { throw NotPlainPlan() }
        seen |= bit
    }

    // MARK: Numbers

    mutating func number() throws(NotPlainPlan) -> Double {
        skipWhitespace()
        guard let (value, length) = PlainNumber.parse(base + position, end - position) else { throw NotPlainPlan() }
        position += length
        return value
    }

    // MARK: The document

    mutating func document() throws(NotPlainPlan) -> RawPlanDocument {
        var document = RawPlanDocument()
        var seen: UInt32 = 0
        if try openObject() {
            repeat {
                let (start, length) = try key()
                if Self.matches(start, length, "dots") {
                    try Self.once(1, &seen)
                    document.dots = .present(try dots())
                } else if Self.matches(start, length, "format") {
                    try Self.once(2, &seen)
                    document.format = .present(try string())
                } else if Self.matches(start, length, "plan_id") {
                    try Self.once(4, &seen)
                    document.planID = .present(try string())
                } else if Self.matches(start, length, "defaults") {
                    try Self.once(8, &seen)
                    document.defaults = .present(try defaults())
                } else if Self.matches(start, length, "client") {
                    try Self.once(16, &seen)
                    document.client = .present(try client())
                } else if Self.matches(start, length, "session") {
                    try Self.once(32, &seen)
                    document.session = .present(try session())
                } else if Self.matches(start, length, "design") {
                    try Self.once(64, &seen)
                    document.design = .present(try design())
                } else {
                    throw NotPlainPlan()
                }
            } while try more(close: 0x7D)
        }
        skipWhitespace()
        guard position == end else { throw NotPlainPlan() }
        return document
    }

    mutating func defaults() throws(NotPlainPlan) -> RawDefaults {
        var defaults = RawDefaults()
        var seen: UInt32 = 0
        guard try openObject() else { return defaults }
        repeat {
            let (start, length) = try key()
            if Self.matches(start, length, "depth_mm") {
                try Self.once(1, &seen)
                defaults.depthMillimetres = .present(try number())
            } else if Self.matches(start, length, "dwell_ms") {
                try Self.once(2, &seen)
                defaults.dwellMilliseconds = .present(try number())
            } else {
                throw NotPlainPlan()
            }
        } while try more(close: 0x7D)
        return defaults
    }

    mutating func client() throws(NotPlainPlan) -> RawClient {
        var client = RawClient()
        var seen: UInt32 = 0
        guard try openObject() else { return client }
        repeat {
            let (start, length) = try key()
            if Self.matches(start, length, "reference") {
                try Self.once(1, &seen)
                client.reference = .present(try string())
            } else if Self.matches(start, length, "hair_transplant_date") {
                try Self.once(2, &seen)
                client.hairTransplantDate = .present(try string())
            } else {
                throw NotPlainPlan()
            }
        } while try more(close: 0x7D)
        return client
    }

    mutating func session() throws(NotPlainPlan) -> RawSession {
        var session = RawSession()
        var seen: UInt32 = 0
        guard try openObject() else { return session }
        repeat {
            let (start, length) = try key()
            if Self.matches(start, length, "number") {
                try Self.once(1, &seen)
                session.number = .present(try number())
            } else if Self.matches(start, length, "of") {
                try Self.once(2, &seen)
                session.of = .present(try number())
            } else if Self.matches(start, length, "date") {
                try Self.once(4, &seen)
                session.date = .present(try string())
            } else {
                throw NotPlainPlan()
            }
        } while try more(close: 0x7D)
        return session
    }

    mutating func design() throws(NotPlainPlan) -> RawPlanDesign {
        var design = RawPlanDesign()
        var seen: UInt32 = 0
        guard try openObject() else { return design }
        repeat {
            let (start, length) = try key()
            if Self.matches(start, length, "design_id") {
                try Self.once(1, &seen)
                design.designID = .present(try string())
            } else if Self.matches(start, length, "after") {
                try Self.once(2, &seen)
                var sources: [RawDesignSource?] = []
                try expect(0x5B)
                if try peek() == 0x5D {
                    position += 1
                } else {
                    repeat { sources.append(try designSource()) } while try more(close: 0x5D)
                }
                design.after = .present(sources)
            } else {
                throw NotPlainPlan()
            }
        } while try more(close: 0x7D)
        return design
    }

    mutating func designSource() throws(NotPlainPlan) -> RawDesignSource {
        var source = RawDesignSource()
        var seen: UInt32 = 0
        guard try openObject() else { return source }
        repeat {
            let (start, length) = try key()
            if Self.matches(start, length, "plan_id") {
                try Self.once(1, &seen)
                source.planID = .present(try string())
            } else if Self.matches(start, length, "plan_sha256") {
                try Self.once(2, &seen)
                source.planSHA256 = .present(try string())
            } else if Self.matches(start, length, "record_session") {
                try Self.once(4, &seen)
                source.recordSession = .present(try number())
            } else if Self.matches(start, length, "dots") {
                try Self.once(8, &seen)
                source.dots = .present(try number())
            } else {
                throw NotPlainPlan()
            }
        } while try more(close: 0x7D)
        return source
    }

    // MARK: Dots, the hot path

    mutating func dots() throws(NotPlainPlan) -> [RawDot] {
        var dots: [RawDot] = []
        try expect(0x5B)
        if try peek() == 0x5D {
            position += 1
            return dots
        }
        // A dot takes at least ~40 bytes of text: reserve for that many, at most what remains.
        dots.reserveCapacity(min(1 << 20, (end - position) / 48 + 1))
        repeat { dots.append(try dot()) } while try more(close: 0x5D)
        return dots
    }

    @inline(__always)
    mutating func dot() throws(NotPlainPlan) -> RawDot {
        var dot = RawDot()
        var seen: UInt32 = 0
        guard try openObject() else { return dot }
        repeat {
            let (start, length) = try key()
            switch Self.word(start, length) {
            case Key.id:
                try Self.once(1, &seen)
                dot.id = .present(try number())
            case Key.xMillimetres:
                try Self.once(2, &seen)
                dot.xMillimetres = .present(try number())
            case Key.yMillimetres:
                try Self.once(4, &seen)
                dot.yMillimetres = .present(try number())
            case Key.depth:
                try Self.once(8, &seen)
                dot.depthMillimetres = .present(try number())
            case Key.dwell:
                try Self.once(16, &seen)
                dot.dwellMilliseconds = .present(try number())
            case Key.region:
                try Self.once(32, &seen)
                dot.region = .present(try region())
            default:
                throw NotPlainPlan()
            }
        } while try more(close: 0x7D)
        return dot
    }
}
