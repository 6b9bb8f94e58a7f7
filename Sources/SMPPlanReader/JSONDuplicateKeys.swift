import SMPPlan
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// Finds keys written more than once in the same JSON object.
//
// JSON leaves repeated keys undefined and programs disagree about them: Foundation's JSONDecoder
// keeps one value without a word, Python's json and JavaScript keep the last. A dot with
// `"depth_mm"` twice could show one depth in a reviewer's tool and inject another, so the loader
// refuses such a plan. JSONDecoder cannot tell that a key was repeated, hence this scanner over the
// same bytes, run after JSONDecoder has accepted them.
//
// It trusts nothing: on any input it finishes in one pass without reading outside the buffer, and
// when the bytes are not JSON as it reads them it returns nil, so that the caller refuses the file
// rather than let it through unchecked.
//
// Keys are equal when their bytes are, escapes resolved, as in Python and JavaScript. JSONDecoder
// also merges canonically equivalent keys ("é" written precomposed or not); that cannot change an
// accepted plan, since every key of the format is plain lowercase ASCII and any other key is
// refused as unknown.
//
// It runs on every load, of plans of up to 200,000 dots, and in a debug build every Swift operation
// is a call: so it jumps between the bytes that matter (quotes, brackets, commas in arrays) with
// the C library's strcspn and memchr, keeps its state in plain buffers, and tells a key from a
// string value by the colon after it.

/// One step of a path into a JSON document: an object's key or an array's index. A `CodingKey` so
/// that `PlanText.path` writes it exactly as it writes the decoder's paths (`dots[17].depth_mm`).
package struct JSONPathComponent: CodingKey, Hashable, Sendable {
    package let stringValue: String
    package let intValue: Int?

    init(key: String) {
        stringValue = key
        intValue = nil
    }

    init(index: Int) {
        stringValue = "Index \(index)"
        intValue = index
    }

    package init?(stringValue: String) { self.init(key: stringValue) }
    package init?(intValue: Int) { self.init(index: intValue) }
}

/// A key written more than once in one JSON object.
package struct JSONDuplicateKey: Hashable, Sendable {
    /// From the root to the repeated key, e.g. `dots`, `17`, `depth_mm`. Keys longer than
    /// `JSONDuplicateKeys.maximumKeyLength` bytes are cut short and end in "…".
    package let location: [JSONPathComponent]
    /// How many times the key is written in that object: 2 or more.
    package var occurrences: Int
}

package struct JSONDuplicateKeyScan: Sendable {
    /// Each repeated key once per object, in the order the repeats appear, at most `limit` of them.
    package var duplicates: [JSONDuplicateKey] = []
    /// Repeated keys found beyond `limit`: counted, not listed.
    package var unlisted = 0
}

enum JSONDuplicateKeys {
    /// Twice the nesting JSONDecoder accepts (512), so everything it reads is scanned; the bound
    /// keeps hostile nesting from making every reported path enormous.
    static let maximumDepth = 1_024
    /// Longer keys are shortened in reported paths, so a huge key cannot be copied into every report.
    static let maximumKeyLength = 100
    /// Objects with more keys than this find repeats with a dictionary instead of comparing each key.
    static let linearSearchLimit = 16

    /// Every key repeated within one object of `text` (UTF-8 JSON), each once per object with its
    /// count; after `limit` of them the rest are only counted. Keys are compared after resolving
    /// escapes, byte for byte. Nil when `text` is not JSON as this scanner reads it: brackets that
    /// do not match, a string that does not end, a zero byte outside strings, nesting deeper than
    /// `maximumDepth`. It checks structure only, not the spelling of numbers or literals.
    static func scan(_ text: UnsafeBufferPointer<UInt8>, limit: Int) -> JSONDuplicateKeyScan? {
        guard let base = text.baseAddress, !text.isEmpty else { return JSONDuplicateKeyScan() }
        var scanner = Scanner(bytes: base, count: text.count, limit: max(0, limit))
        defer { scanner.deallocate() }
        return scanner.run() ? scanner.result : nil
    }
}

private struct Scanner {
    /// An object or array being read.
    private struct Container {
        let isObject: Bool
        /// Arrays: the element being read (commas seen).
        var index = 0
        /// Objects: where this object's keys start in the key table.
        let firstKey: Int
        /// Objects: the key (an index into the key table) whose value is being read; -1 before the first.
        var currentKey = -1
        /// Objects: true once `lookups` holds this object's keys.
        var hasLookup = false
    }

    private let bytes: UnsafePointer<UInt8>
    private let end: Int
    private let limit: Int
    private(set) var result = JSONDuplicateKeyScan()

    private let containers: UnsafeMutablePointer<Container>
    private var depth = 0

    // The key table: the keys of the open objects, outermost first, dropped when their object
    // closes. A key's bytes, with escapes resolved, are in the text or in `unescaped`.
    private var keyStarts: UnsafeMutablePointer<UnsafePointer<UInt8>>
    private var keyLengths: UnsafeMutablePointer<Int>
    /// Index in `result.duplicates` once the key is found repeated; -2 past the limit; -1 before.
    private var keyReports: UnsafeMutablePointer<Int>
    private var keyCount = 0
    private var keyCapacity = 64

    /// Keys with escapes, resolved. A key is never longer resolved than written, so the text's size
    /// suffices for all of them and nothing moves; allocated on the first such key.
    private var unescaped: UnsafeMutablePointer<UInt8>?
    private var unescapedCount = 0
    /// For open objects with many keys, by depth: key bytes → index in the key table.
    private var lookups: [Int: [[UInt8]: Int]] = [:]

    /// `bytes[chunkStart..<chunkEnd]` then a zero: strcspn needs one, the text has none.
    private static let chunkSize = 64 * 1024
    private let chunk: UnsafeMutablePointer<UInt8>
    private var chunkStart = 0
    private var chunkEnd = 0

    init(bytes: UnsafePointer<UInt8>, count: Int, limit: Int) {
        self.bytes = bytes
        self.end = count
        self.limit = limit
        containers = .allocate(capacity: JSONDuplicateKeys.maximumDepth)
        keyStarts = .allocate(capacity: keyCapacity)
        keyLengths = .allocate(capacity: keyCapacity)
        keyReports = .allocate(capacity: keyCapacity)
        chunk = .allocate(capacity: Self.chunkSize + 1)
    }

    func deallocate() {
        containers.deallocate()
        keyStarts.deallocate()
        keyLengths.deallocate()
        keyReports.deallocate()
        unescaped?.deallocate()
        chunk.deallocate()
    }

    /// Reads the whole text; false when it is not JSON as this scanner reads it.
    mutating func run() -> Bool {
        // The bytes that matter inside an object, and inside an array or at the top level.
        let objectStops: [CChar] = [0x22, 0x7B, 0x7D, 0x5B, 0x5D, 0]  // " { } [ ]
        let arrayStops: [CChar] = [0x22, 0x7B, 0x7D, 0x5B, 0x5D, 0x2C, 0]  // " { } [ ] ,
        return objectStops.withUnsafeBufferPointer { objectStops in
            arrayStops.withUnsafeBufferPointer { arrayStops in
                run(objectStops: objectStops.baseAddress!, arrayStops: arrayStops.baseAddress!)
            }
        }
    }

    // One loop, the common path without calls: in a debug build a call costs more than the work.
    private mutating func run(objectStops: UnsafePointer<CChar>, arrayStops: UnsafePointer<CChar>) -> Bool {
        let maximumDepth = JSONDuplicateKeys.maximumDepth, linearSearchLimit = JSONDuplicateKeys.linearSearchLimit
        // Plans rarely hold a backslash: without one, no string has escapes to look for.
        let hasBackslashes = memchr(bytes, 0x5C, end) != nil
        var position = 0
        var inObject = false
        var topLevelDone = false
        while true {
            let stops = inObject ? objectStops : arrayStops
            var next = chunkEnd
            if position < chunkEnd {
                next = position + strcspn(UnsafeRawPointer(chunk + (position - chunkStart)).assumingMemoryBound(to: CChar.self), stops)
            }
            if next >= chunkEnd {
                guard let found = nextStop(from: max(position, chunkEnd), among: stops) else { return false }
                next = found
            } else if bytes[next] == 0 {
                return false  // never outside a JSON string; strcspn would stop there
            }
            if next == end { return depth == 0 }
            position = next + 1
            switch bytes[next] {
            case 0x22:  // "
                // The closing quote: the first one not escaped by an odd number of backslashes.
                var close = next
                repeat {
                    guard close + 1 < end, let found = memchr(bytes + close + 1, 0x22, end - close - 1) else { return false }
                    close = UnsafeRawPointer(bytes).distance(to: found)
                    guard hasBackslashes else { break }
                    var backslash = close - 1
                    while backslash > next, bytes[backslash] == 0x5C { backslash -= 1 }
                    if (close - 1 - backslash) & 1 == 0 { break }
                } while true
                position = close + 1
                if position < end, bytes[position] != 0x3A, bytes[position] <= 0x20 {
                    while position < end, bytes[position] == 0x20 || bytes[position] == 0x0A || bytes[position] == 0x0D
                        || bytes[position] == 0x09 {
                        position += 1
                    }
                }
                if position < end, bytes[position] == 0x3A {  // a colon: the string is a key
                    guard inObject else { return false }
                    position += 1
                    var key = bytes + next + 1
                    var length = close - next - 1
                    if hasBackslashes, memchr(key, 0x5C, length) != nil {
                        (key, length) = unescape(from: next + 1, to: close)
                    }
                    let object = depth - 1
                    var earlier = -1
                    if containers[object].hasLookup {
                        earlier = lookUp(key, length, in: object)
                    } else {
                        var index = containers[object].firstKey
                        while index < keyCount {
                            if keyLengths[index] == length, memcmp(keyStarts[index], key, length) == 0 {
                                earlier = index
                                break
                            }
                            index += 1
                        }
                    }
                    if earlier >= 0 {
                        containers[object].currentKey = earlier
                        noteRepeat(of: earlier)
                        continue
                    }
                    if keyCount == keyCapacity { growKeyTable() }
                    keyStarts[keyCount] = key
                    keyLengths[keyCount] = length
                    keyReports[keyCount] = -1
                    containers[object].currentKey = keyCount
                    keyCount += 1
                    if !containers[object].hasLookup, keyCount - containers[object].firstKey > linearSearchLimit {
                        startLookup(for: object)
                    }
                } else if depth == 0 {
                    if topLevelDone { return false }
                    topLevelDone = true
                }
            case 0x7B, 0x5B:  // { [
                if depth == 0 {
                    if topLevelDone { return false }
                    topLevelDone = true
                }
                guard depth < maximumDepth else { return false }
                // A value in an object comes after its key (which also keeps every path defined).
                if inObject, containers[depth - 1].currentKey < 0 { return false }
                inObject = bytes[next] == 0x7B
                containers[depth] = Container(isObject: inObject, firstKey: keyCount)
                depth += 1
            case 0x7D, 0x5D:  // } ]
                guard depth > 0, inObject == (bytes[next] == 0x7D) else { return false }
                depth -= 1
                keyCount = containers[depth].firstKey
                if containers[depth].hasLookup { lookups[depth] = nil }
                inObject = depth > 0 && containers[depth - 1].isObject
            default:  // , in an array
                guard depth > 0 else { return false }
                containers[depth - 1].index += 1
            }
        }
    }

    /// The first byte at or after `position` that is one of `stops`, searching chunk after chunk;
    /// `end` if there is none; nil at a zero byte.
    private mutating func nextStop(from position: Int, among stops: UnsafePointer<CChar>) -> Int? {
        var position = position
        while position < end {
            if position >= chunkEnd {
                chunkStart = position
                chunkEnd = min(end, position + Self.chunkSize)
                memcpy(chunk, bytes + chunkStart, chunkEnd - chunkStart)
                chunk[chunkEnd - chunkStart] = 0
            }
            let found = position + strcspn(UnsafeRawPointer(chunk + (position - chunkStart)).assumingMemoryBound(to: CChar.self), stops)
            if found < chunkEnd { return bytes[found] == 0 ? nil : found }
            position = chunkEnd
        }
        return end
    }

    // MARK: Keys

    /// The earlier key of a large object with these bytes; else -1, and the key is added as the
    /// next one of the key table.
    private mutating func lookUp(_ key: UnsafePointer<UInt8>, _ length: Int, in object: Int) -> Int {
        let written = Array(UnsafeBufferPointer(start: key, count: length))
        if let earlier = lookups[object]?[written] { return earlier }
        lookups[object]?[written] = keyCount
        return -1
    }

    /// Past `linearSearchLimit` keys, comparing a new key with each earlier one would make a huge
    /// object quadratic.
    private mutating func startLookup(for object: Int) {
        var lookup: [[UInt8]: Int] = [:]
        for index in containers[object].firstKey..<keyCount {
            lookup[Array(UnsafeBufferPointer(start: keyStarts[index], count: keyLengths[index]))] = index
        }
        lookups[object] = lookup
        containers[object].hasLookup = true
    }

    private mutating func growKeyTable() {
        func grow<Element>(_ buffer: inout UnsafeMutablePointer<Element>) {
            let larger = UnsafeMutablePointer<Element>.allocate(capacity: keyCapacity * 2)
            larger.moveInitialize(from: buffer, count: keyCount)
            buffer.deallocate()
            buffer = larger
        }
        grow(&keyStarts)
        grow(&keyLengths)
        grow(&keyReports)
        keyCapacity *= 2
    }

    private mutating func noteRepeat(of key: Int) {
        switch keyReports[key] {
        case -1:
            if result.duplicates.count < limit {
                keyReports[key] = result.duplicates.count
                result.duplicates.append(JSONDuplicateKey(location: location(), occurrences: 2))
            } else {
                keyReports[key] = -2
                result.unlisted += 1
            }
        case -2:
            break
        case let report:
            result.duplicates[report].occurrences += 1
        }
    }

    /// The path from the root to the current key of the innermost object.
    private func location() -> [JSONPathComponent] {
        (0..<depth).map { level in
            let container = containers[level]
            guard container.isObject else { return JSONPathComponent(index: container.index) }
            let length = keyLengths[container.currentKey]
            let shown = min(length, JSONDuplicateKeys.maximumKeyLength)
            let name = String(decoding: UnsafeBufferPointer(start: keyStarts[container.currentKey], count: shown), as: UTF8.self)
            return JSONPathComponent(key: length > shown ? name + "…" : name)
        }
    }

    /// The key written at `bytes[start..<stop]` with its escapes resolved, so that
    /// `"depth\u005fmm"` and `"depth_mm"` compare equal. Anything malformed is kept as written.
    private mutating func unescape(from start: Int, to stop: Int) -> (UnsafePointer<UInt8>, Int) {
        if unescaped == nil { unescaped = .allocate(capacity: end) }
        let output = unescaped! + unescapedCount
        var count = 0
        func append(_ byte: UInt8) {
            output[count] = byte
            count += 1
        }
        var index = start
        while index < stop {
            let byte = bytes[index]
            guard byte == 0x5C, index + 1 < stop else {
                append(byte)
                index += 1
                continue
            }
            let escaped = bytes[index + 1]
            index += 2
            switch escaped {
            case 0x22, 0x5C, 0x2F: append(escaped)  // " \ /
            case 0x62: append(0x08)  // b
            case 0x66: append(0x0C)  // f
            case 0x6E: append(0x0A)  // n
            case 0x72: append(0x0D)  // r
            case 0x74: append(0x09)  // t
            case 0x75:  // u
                guard var scalar = hexadecimal(at: index, before: stop) else {
                    append(byte)
                    index -= 1
                    continue
                }
                index += 4
                // A high surrogate followed by `\u` and a low one is a single character.
                if scalar >= 0xD800, scalar <= 0xDBFF, index + 1 < stop, bytes[index] == 0x5C, bytes[index + 1] == 0x75,
                   let low = hexadecimal(at: index + 2, before: stop), low >= 0xDC00, low <= 0xDFFF {
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    index += 6
                }
                // UTF-8; a lone surrogate (JSONDecoder refuses them) gets the three bytes of its
                // number, so that different ones stay different.
                if scalar < 0x80 {
                    append(UInt8(scalar))
                } else if scalar < 0x800 {
                    append(UInt8(0xC0 | scalar >> 6))
                    append(UInt8(0x80 | scalar & 0x3F))
                } else if scalar < 0x10000 {
                    append(UInt8(0xE0 | scalar >> 12))
                    append(UInt8(0x80 | scalar >> 6 & 0x3F))
                    append(UInt8(0x80 | scalar & 0x3F))
                } else {
                    append(UInt8(0xF0 | scalar >> 18))
                    append(UInt8(0x80 | scalar >> 12 & 0x3F))
                    append(UInt8(0x80 | scalar >> 6 & 0x3F))
                    append(UInt8(0x80 | scalar & 0x3F))
                }
            default:
                append(byte)
                index -= 1
            }
        }
        unescapedCount += count
        return (UnsafePointer(output), count)
    }

    /// The four hexadecimal digits at `index`, if all four are there before `limit`.
    private func hexadecimal(at index: Int, before limit: Int) -> UInt32? {
        guard index + 4 <= limit else { return nil }
        var value: UInt32 = 0
        for offset in 0..<4 {
            let byte = bytes[index + offset]
            let digit: UInt8
            if byte >= 0x30, byte <= 0x39 {
                digit = byte - 0x30
            } else if byte >= 0x61, byte <= 0x66 {
                digit = byte - 0x61 + 10
            } else if byte >= 0x41, byte <= 0x46 {
                digit = byte - 0x41 + 10
            } else {
                return nil
            }
            value = value << 4 | UInt32(digit)
        }
        return value
    }
}
