import FirmwareProtocol

/// How many link faults were applied, per direction.
public struct LinkFaultCounters: Sendable, Hashable {
    public var corrupted = 0
    public var dropped = 0
    public var duplicated = 0
    public var garbageBlocks = 0
    public var delayedAcks = 0

    public init() {}
}

/// The link faults of a `FaultPlan` (corrupt, drop, duplicate, garbage on both directions,
/// delay-ack on device → host), as a pure, seeded value: the same plan, seed and traffic always
/// give the same faults. The runtime passes every byte through it.
///
/// Faults apply per frame: host → device bytes are cut at each 0x00 delimiter (a block still
/// waiting for its delimiter is held, up to `Frame.maximumEncodedLength` bytes, then passed
/// through untouched); device → host frames come whole from the firmware. Empty blocks (a lone
/// 0x00) pass untouched. Per block, in this order: garbage (1–16 random bytes and a 0x00 before
/// it: a block of its own that fails its checks), drop, corrupt (one random bit of one random
/// byte of the block, the delimiter excluded), duplicate (the block, corrupted or not, twice).
/// Each direction draws from its own generator, so one direction's traffic never changes the
/// other's faults.
public struct LinkFaultInjector: Sendable {
    public let plan: FaultPlan
    public private(set) var toDevice = LinkFaultCounters()
    public private(set) var toHost = LinkFaultCounters()
    private var hostRNG: SplitMix64
    private var deviceRNG: SplitMix64
    private var partial: [UInt8] = []
    private var lastRelease: UInt64 = 0

    public init(plan: FaultPlan, seed: UInt64) {
        self.plan = plan
        hostRNG = SplitMix64.stream(seed: seed, purpose: 2)
        deviceRNG = SplitMix64.stream(seed: seed, purpose: 3)
    }

    /// Host → device: the bytes the firmware receives instead of `bytes`.
    public mutating func fromHost(_ bytes: some Sequence<UInt8>) -> [UInt8] {
        guard plan.hasLinkFaults else { return Array(bytes) }
        var out: [UInt8] = []
        for byte in bytes {
            partial.append(byte)
            if byte == 0 {
                Self.mangle(partial, plan: plan, rng: &hostRNG, counters: &toDevice, into: &out)
                partial.removeAll(keepingCapacity: true)
            } else if partial.count > Frame.maximumEncodedLength {
                out.append(contentsOf: partial)  // no delimiter in sight: not a frame, pass it on
                partial.removeAll(keepingCapacity: true)
            }
        }
        return out
    }

    /// Device → host: each frame's wire bytes after the faults, with the wall time at which they
    /// may be written (`now`, or later for a delayed ACK; never earlier than what precedes them).
    public mutating func toHost(_ frames: [Frame], at now: UInt64) -> [(release: UInt64, bytes: [UInt8])] {
        var result: [(release: UInt64, bytes: [UInt8])] = []
        for frame in frames {
            var bytes: [UInt8] = []
            if plan.hasLinkFaults {
                Self.mangle(frame.encoded(), plan: plan, rng: &deviceRNG, counters: &toHost, into: &bytes)
            } else {
                frame.encode(into: &bytes)
            }
            var release = now
            if case .ack = frame.message, plan.ackDelayMicroseconds > 0 {
                release = now &+ plan.ackDelayMicroseconds
                toHost.delayedAcks += 1
            }
            release = max(release, lastRelease)
            lastRelease = release
            if !bytes.isEmpty { result.append((release, bytes)) }
        }
        return result
    }

    private static func mangle(_ block: [UInt8], plan: FaultPlan, rng: inout SplitMix64,
                               counters: inout LinkFaultCounters, into out: inout [UInt8]) {
        guard block.count > 1 else {
            out.append(contentsOf: block)
            return
        }
        // Always draw the four decisions so the stream stays aligned whatever the rates.
        let garbage = rng.nextUnit() < plan.garbageRate
        let drop = rng.nextUnit() < plan.dropRate
        let corrupt = rng.nextUnit() < plan.corruptRate
        let duplicate = rng.nextUnit() < plan.duplicateRate
        if garbage {
            counters.garbageBlocks += 1
            for _ in 0...rng.nextInt(below: 16) { out.append(UInt8(truncatingIfNeeded: rng.next())) }
            out.append(0)
        }
        if drop {
            counters.dropped += 1
            return
        }
        var frame = block
        if corrupt {
            counters.corrupted += 1
            let index = rng.nextInt(below: frame.count - 1)
            frame[index] ^= UInt8(1) << UInt8(rng.nextInt(below: 8))
        }
        out.append(contentsOf: frame)
        if duplicate {
            counters.duplicated += 1
            out.append(contentsOf: frame)
        }
    }
}
