// JSON numbers → Double, exactly as `Double(_:)` reads the same text (correctly rounded), but
// without making a String for the common case.
//
// The fast path is Clinger's: when the significant digits form an integer m ≤ 2^53 and the
// decimal exponent e is within ±22, both m and 10^|e| are exact Doubles, so the single IEEE
// multiplication or division m × 10^e, m / 10^-e rounds once, correctly. A plan's numbers
// (`-76.779`, `145.105`, `120`) are all of this kind. Anything else (more digits, a large
// exponent) goes to `Double(_:)` itself.
//
// The reader refuses (returns nil for) what Foundation's JSONDecoder would not turn into a
// finite Double: infinity after rounding (`1e400`), a non-zero number that rounds to zero
// (`1e-400`), a zero with an exponent (`0e2`, which this Foundation refuses); and, to stay on the safe side of the slow path, subnormal results. Those go to the
// slow reader, which reports them.

package enum PlainNumber {
    /// 10^0 ... 10^22: every one is exactly a Double.
    private static let powersOfTen: [Double] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ]

    /// The JSON number (RFC 8259 grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`) at
    /// the start of `count` bytes: its value and how many bytes it takes. Nil when the bytes do
    /// not start with such a number, or it is not a finite normal Double or zero (see above).
    /// What follows the number is the caller's to check.
    @inline(__always)
    package static func parse(_ start: UnsafePointer<UInt8>, _ count: Int) -> (Double, Int)? {
        var index = 0
        var negative = false
        if index < count, start[index] == 0x2D {  // -
            negative = true
            index += 1
        }
        guard index < count else { return nil }
        var mantissa: UInt64 = 0
        /// Significant digits in `mantissa` (leading zeros not counted).
        var digits = 0
        /// Non-zero... any digit beyond the 19 that fit: the fast path no longer applies.
        var truncated = false
        var exponent = 0

        let first = start[index]
        if first == 0x30 {
            index += 1
            if index < count, start[index] &- 0x30 < 10 { return nil }  // a leading zero
        } else if first &- 0x31 < 9 {
            while index < count {
                let digit = start[index] &- 0x30
                guard digit < 10 else { break }
                if digits < 19 {
                    mantissa = mantissa &* 10 &+ UInt64(digit)
                    digits += 1
                } else {
                    truncated = true
                    exponent += 1
                }
                index += 1
            }
        } else {
            return nil
        }

        if index < count, start[index] == 0x2E {  // .
            index += 1
            let fractionStart = index
            while index < count {
                let digit = start[index] &- 0x30
                guard digit < 10 else { break }
                if digits < 19 {
                    mantissa = mantissa &* 10 &+ UInt64(digit)
                    if mantissa != 0 { digits += 1 }
                    exponent -= 1
                } else {
                    truncated = true
                }
                index += 1
            }
            guard index > fractionStart else { return nil }
        }

        if index < count, start[index] | 0x20 == 0x65 {  // e E
            index += 1
            var exponentNegative = false
            if index < count, start[index] == 0x2B || start[index] == 0x2D {
                exponentNegative = start[index] == 0x2D
                index += 1
            }
            let exponentStart = index
            var written = 0
            while index < count {
                let digit = start[index] &- 0x30
                guard digit < 10 else { break }
                if written < 1_000_000 { written = written * 10 + Int(digit) }
                index += 1
            }
            guard index > exponentStart else { return nil }
            // Foundation's JSONDecoder refuses a zero with an exponent (`0e2`, `-0.0E20`): leave
            // those to it, so that it reports them as before.
            if mantissa == 0 { return nil }
            exponent += exponentNegative ? -written : written
        }

        var value: Double
        if !truncated, mantissa <= 1 << 53, exponent >= -22, exponent <= 22 {
            value = exponent < 0 ? Double(mantissa) / powersOfTen[-exponent] : Double(mantissa) * powersOfTen[exponent]
            if negative { value = -value }
            return (value, index)
        }
        // Not trivially exact: the standard library's correctly rounded conversion of the text.
        guard let converted = Double(String(decoding: UnsafeBufferPointer(start: start, count: index), as: UTF8.self)) else {
            return nil
        }
        value = converted
        let isZero = mantissa == 0 && !truncated
        guard value.isFinite, value.isNormal || (value == 0 && isZero) else { return nil }
        return (value, index)
    }

    /// `parse` over a whole string: nil unless all of it is one plain number. For tests and fuzzing.
    package static func parse(_ text: String) -> Double? {
        var text = text
        return text.withUTF8 { buffer -> Double? in
            guard let base = buffer.baseAddress, let (value, length) = parse(base, buffer.count),
                  length == buffer.count else { return nil }
            return value
        }
    }
}
