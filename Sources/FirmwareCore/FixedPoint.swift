/// Integer arithmetic for the firmware's physics, so the state machine needs no floating point:
/// on a Cortex-M4 without an FPU every `Double` operation is a soft-float library call (~4 KB of
/// flash, docs/firmware.md). The configuration keeps its `Double` fields (`timeScale`,
/// `FaultPlan.slowFactor`); they are converted once, at init, from their bits.
enum FixedPoint {
    static let million: UInt64 = 1_000_000

    /// `value × 1,000,000` rounded to the nearest integer (halves up), read from the bits of the
    /// `Double` (no floating-point operation); 0 for a negative, zero or non-finite value, and
    /// saturated at `UInt64.max`.
    static func partsPerMillion(_ value: Double) -> UInt64 {
        let bits = value.bitPattern
        let exponentBits = (bits >> 52) & 0x7FF
        guard bits >> 63 == 0, exponentBits != 0x7FF, bits != 0 else { return 0 }
        var significand = bits & ((1 << 52) - 1)
        let exponent: Int  // value = significand × 2^exponent
        if exponentBits == 0 {
            exponent = -1074
        } else {
            significand |= 1 << 52
            exponent = Int(exponentBits) - 1075
        }
        let (high, low) = significand.multipliedFullWidth(by: million)  // < 2^73
        if exponent >= 0 {
            guard high == 0, exponent < 64, low <= UInt64.max >> exponent else { return .max }
            return low << exponent
        }
        let shift = -exponent
        guard shift < 128 else { return 0 }
        // (high, low) >> shift, then + the last bit shifted out (round half up).
        var result: UInt64, roundBit: UInt64
        if shift < 64 {
            guard high >> shift == 0 else { return .max }
            result = (low >> shift) | (shift == 0 ? 0 : high << (64 - shift))
            roundBit = (low >> (shift - 1)) & 1
        } else {
            result = high >> (shift - 64)
            roundBit = shift == 64 ? low >> 63 : (high >> (shift - 65)) & 1
        }
        return result + roundBit
    }

    /// `value × ppm / 1,000,000`, rounded half up or up; exact (no intermediate overflow for
    /// `ppm` below 1.8 × 10¹³), saturated at `UInt64.max`.
    static func scale(_ value: UInt64, partsPerMillion ppm: UInt64, roundingUp: Bool) -> UInt64 {
        let whole = (value / million).multipliedReportingOverflow(by: ppm)
        let rest = (value % million) * ppm + (roundingUp ? million - 1 : million / 2)
        let sum = whole.partialValue.addingReportingOverflow(rest / million)
        return whole.overflow || sum.overflow ? .max : sum.partialValue
    }

    /// ⌊a × b / c⌋ for c > 0 and b ≤ c (a fraction of `a`). Exact while a × b fits 64 bits
    /// (phase durations of hours); beyond that both factors lose low bits first.
    static func fraction(_ a: UInt64, times b: UInt64, over c: UInt64) -> UInt64 {
        var a = a, b = b, c = c
        while a.multipliedReportingOverflow(by: b).overflow {
            a >>= 1
            b >>= 1
            c = max(c >> 2, 1)
        }
        return a * b / c
    }

    /// `delta × numerator / denominator` rounded half away from zero (denominator > 0,
    /// |numerator| ≤ denominator): a point part way along a straight move.
    static func along(_ delta: Int64, _ numerator: UInt64, over denominator: UInt64) -> Int64 {
        let magnitude = fraction(delta.magnitude, times: numerator, over: denominator)
        let remainder = delta.magnitude.multipliedReportingOverflow(by: numerator).overflow
            ? 0 : delta.magnitude * numerator - magnitude * denominator
        let rounded = magnitude + (remainder * 2 >= denominator ? 1 : 0)
        return delta < 0 ? -Int64(rounded) : Int64(rounded)
    }

    /// ⌊√value⌋, digit by digit: no division, no floating point.
    static func squareRoot(_ value: UInt64) -> UInt64 {
        var remainder = value, root: UInt64 = 0, bit: UInt64 = 1 << 62
        while bit > remainder { bit >>= 2 }
        while bit != 0 {
            if remainder >= root + bit {
                remainder -= root + bit
                root = (root >> 1) + bit
            } else {
                root >>= 1
            }
            bit >>= 2
        }
        return root
    }

    /// ⌈√(d² × 10¹²) / speed⌉ = ⌈distance (µm) × 10⁶ / speed (µm/s)⌉ µs, exact, for a squared
    /// distance `squared` (µm²) and speed > 0. The ceiling of √(d² × 10¹²) divided by the speed
    /// and rounded up is the exact result (no integer lies between the root and its ceiling).
    static func travelMicroseconds(squaredDistance squared: UInt64, speed: UInt64) -> UInt64 {
        let target = squared.multipliedFullWidth(by: million * million)  // d² × 10¹² (128 bits)
        func atLeastTarget(_ root: UInt64) -> Bool {
            let square = root.multipliedFullWidth(by: root)
            return square.high > target.high || (square.high == target.high && square.low >= target.low)
        }
        // √(d²) lies in [s, s + 1), so the ceiling root lies in [10⁶ s, 10⁶ (s + 1)].
        let floorRoot = squareRoot(squared)
        var low = floorRoot * million, high = (floorRoot + 1) * million
        if atLeastTarget(low) { high = low }
        while high - low > 1 {  // invariant: low² < target ≤ high²
            let middle = low + (high - low) / 2
            if atLeastTarget(middle) { high = middle } else { low = middle }
        }
        return (high + speed - 1) / speed
    }
}
