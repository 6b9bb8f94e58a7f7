/// One NDJSON line for the test rig, built in a fixed stack buffer (no allocation) and handed to
/// the board's `trace`. Lines longer than the buffer are cut.
struct TraceLine {
    private static let capacity = 240
    private let buffer: UnsafeMutablePointer<CChar>
    private var count = 0

    init(_ buffer: UnsafeMutablePointer<CChar>) {
        self.buffer = buffer
    }

    /// Writes the line into stack storage and passes it to `body` (e.g. `board.trace`).
    static func with(_ build: (inout TraceLine) -> Void, emit: (UnsafePointer<CChar>) -> Void) {
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: capacity + 2) { storage in
            var line = TraceLine(storage.baseAddress!)
            build(&line)
            line.finish()
            emit(UnsafePointer(storage.baseAddress!))
        }
    }

    @inline(never)
    mutating func text(_ string: StaticString) {
        string.withUTF8Buffer { bytes in
            for byte in bytes { put(byte) }
        }
    }

    @inline(never)
    mutating func number(_ value: UInt64) {
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var n = value, used = 0
        withUnsafeMutableBytes(of: &digits) { d in
            repeat {
                d[used] = UInt8(truncatingIfNeeded: n % 10) + 0x30
                n /= 10
                used += 1
            } while n > 0
            while used > 0 {
                used -= 1
                put(d[used])
            }
        }
    }

    mutating func number(_ value: UInt32) { number(UInt64(value)) }

    /// `"key":value,` for a number.
    @inline(never)
    mutating func field(_ key: StaticString, _ value: UInt64) {
        put(0x22); text(key); put(0x22); put(0x3A)
        number(value)
    }

    private mutating func put(_ byte: UInt8) {
        guard count < Self.capacity else { return }
        buffer[count] = CChar(bitPattern: byte)
        count += 1
    }

    private mutating func finish() {
        buffer[count] = 0x0A
        buffer[count + 1] = 0
    }
}
