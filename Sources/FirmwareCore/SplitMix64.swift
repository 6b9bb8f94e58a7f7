/// SplitMix64 (Steele, Lea, Flood 2014; the seeding generator of xoshiro): a tiny, fast,
/// deterministic PRNG. Every random choice the firmware and the simulator make (boot ids, link
/// faults) comes from one of these, so a run is reproducible from its seeds.
public struct SplitMix64: RandomNumberGenerator, Sendable, Hashable {
    public private(set) var state: UInt64

    public init(seed: UInt64) {
        state = seed
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    public mutating func nextUnit() -> Double {
        Double(next() >> 11) * 0x1.0p-53
    }

    /// Uniform in 0..<bound (bound > 0), by multiply-shift (bias below 2^-32 for our bounds).
    public mutating func nextInt(below bound: Int) -> Int {
        precondition(bound > 0)
        return Int((next() >> 32) &* UInt64(bound) >> 32)
    }

    /// A derived, independent stream: a different generator for each purpose keeps each stream's
    /// choices independent of how the others interleave with it.
    public static func stream(seed: UInt64, purpose: UInt64) -> SplitMix64 {
        var mixer = SplitMix64(seed: seed ^ (purpose &* 0xD1B5_4A32_D192_ED03))
        return SplitMix64(seed: mixer.next())
    }
}
