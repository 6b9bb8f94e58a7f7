/// Seeded, reproducible fault injection: which faults the firmware (and, for the link faults,
/// the simulator's runtime) applies. Plain stored values; the SPEC and JSON scenario parsers are
/// host-only and live in DeviceSim (`FaultPlan(spec:)`, `FaultPlan(jsonScenario:)`).
///
/// Written as a SPEC string, items separated by commas (whitespace ignored):
///
/// | item | effect | where |
/// |---|---|---|
/// | `corrupt=RATE` | flip one bit of a frame, with probability RATE per frame | link, both directions |
/// | `drop=RATE` | lose a frame | link, both directions |
/// | `duplicate=RATE` | deliver a frame twice | link, both directions |
/// | `garbage=RATE` | before a frame, 1–16 random bytes then a 0x00 (a block that fails its checks) | link, both directions |
/// | `delay-ack=DURATION` | every ACK the device sends leaves DURATION late (frames stay in order: what follows an ACK waits behind it) | link, device → host |
/// | `stall-at=DOT:DURATION` | when DOT first arrives the device stops reading and writing the link for DURATION (physics and the lease go on); the DOT is handled after the stall | firmware |
/// | `reset-at=DOT` | when DOT first arrives the device reboots: RAM lost (new boot id, queue, sequence and epoch state, done_count 0), the dot in the skin interrupted; the DOT itself is lost; the host must re-handshake | firmware |
/// | `disconnect-at=DOT` | when DOT first arrives the link goes down: the pty master is closed (the host reads EIO/HUP), the DOT is lost; the firmware runs on (its lease expires, it holds); after 0.5 s a new pty appears and `linkPath` points to it | firmware + runtime |
/// | `estop-at=DOT` | when DOT *executes*, halfway through its dwell, the device's e-stop button is pressed and released: a latched estop_button shutdown, DOT cut short (ground truth `interrupted`, STATUS `current_dot_id` = DOT), the queue behind it flushed; CLEAR works at once | firmware |
/// | `contact-loss-at=DOT` | when DOT *executes*, as its travel ends and before it enters the skin, skin contact is lost for a moment: the device holds (contact_lost, epoch + 1), DOT not started (no ground-truth line), the queue behind it fenced; dots before DOT are done | firmware |
/// | `over-depth-at=DOT` | when DOT *executes*, halfway through its dwell, the depth sensor reports over-depth: latched fault over_depth, DOT cut short (`interrupted`, `current_dot_id` = DOT) | firmware |
/// | `ignore-pace-at=DOT` | from the first arrival of DOT on, the device no longer enforces the minimum interval between skin entries (PACE or its own): a firmware bug for the host's pace check to catch | firmware |
/// | `slow=FACTOR` | travel, descend and retract take FACTOR times their declared duration (dwell is exact) | firmware |
///
/// RATE: a probability `0.05` or a percentage `5%`. DURATION: a number with a unit, `30ms`,
/// `1.5s`, `800us`. DOT: a dot id (≥ 1). FACTOR: a number > 0. The `-at` items may repeat; every
/// other item may appear once. Each planned device fault fires once: `reset-at`, `disconnect-at`,
/// `stall-at` and `ignore-pace-at` on the first arrival of DOT's frame (a retransmission does not
/// fire them again); `estop-at`, `contact-loss-at` and `over-depth-at` the first time DOT
/// executes (a DOT fenced or flushed before it ran fires nothing; sent again later, it fires
/// then), which may be a whole queue (up to 64 dots) after its frame arrived. Where in the dot
/// they fire is fixed in simulated time, so a run is the same at every time scale, 0 included.
///
/// A JSON scenario file holds one object with the same keys: numbers or strings as values,
/// a list for several `-at` values, e.g.
/// `{"drop": 0.02, "delay-ack": "30ms", "estop-at": [120, 400], "stall-at": ["50:300ms"]}`.
public struct FaultPlan: Sendable, Hashable {
    public var corruptRate: Double = 0
    public var dropRate: Double = 0
    public var duplicateRate: Double = 0
    public var garbageRate: Double = 0
    public var ackDelayMicroseconds: UInt64 = 0
    /// dot id → stall duration (wall µs).
    public var stallAt: DotStalls = [:]
    public var resetAt: DotIDs = []
    public var disconnectAt: DotIDs = []
    public var estopAt: DotIDs = []
    public var contactLossAt: DotIDs = []
    public var overDepthAt: DotIDs = []
    public var ignorePaceAt: DotIDs = []
    public var slowFactor: Double = 1

    public init() {}

    /// No faults.
    public static let none = FaultPlan()

    /// True when any link fault is planned.
    public var hasLinkFaults: Bool {
        corruptRate > 0 || dropRate > 0 || duplicateRate > 0 || garbageRate > 0 || ackDelayMicroseconds > 0
    }
}

/// A set of dot ids kept sorted in an array: what `FaultPlan` needs of a `Set`, without hashing.
/// A `Set` or `Dictionary` brings the hasher and its floating-point capacity arithmetic into the
/// microcontroller image (~6 KB of flash, docs/firmware.md); a plan holds a handful of ids.
public struct DotIDs: Sendable, Hashable, ExpressibleByArrayLiteral, Sequence {
    private var ids: [UInt32] = []

    public init() {}

    public init(arrayLiteral ids: UInt32...) {
        for id in ids { insert(id) }
    }

    public var isEmpty: Bool { ids.isEmpty }
    public var count: Int { ids.count }

    public func contains(_ id: UInt32) -> Bool { position(of: id).found }

    /// Adds `id`; false when it was already there.
    @discardableResult
    public mutating func insert(_ id: UInt32) -> Bool {
        let (index, found) = position(of: id)
        if !found { ids.insert(id, at: index) }
        return !found
    }

    /// Removes `id`; returns it when it was there.
    @discardableResult
    public mutating func remove(_ id: UInt32) -> UInt32? {
        let (index, found) = position(of: id)
        guard found else { return nil }
        return ids.remove(at: index)
    }

    /// In increasing order.
    public func makeIterator() -> IndexingIterator<[UInt32]> { ids.makeIterator() }

    private func position(of id: UInt32) -> (index: Int, found: Bool) {
        var low = 0, high = ids.count
        while low < high {
            let middle = (low + high) / 2
            if ids[middle] < id { low = middle + 1 } else { high = middle }
        }
        return (low, low < ids.count && ids[low] == id)
    }
}

/// Dot id → duration (µs), sorted by dot id: the `stall-at` map, without hashing (see `DotIDs`).
public struct DotStalls: Sendable, Hashable, ExpressibleByDictionaryLiteral, Sequence {
    private var dots = DotIDs()
    private var durations: [UInt64] = []

    public init() {}

    public init(dictionaryLiteral elements: (UInt32, UInt64)...) {
        for (dot, duration) in elements { self[dot] = duration }
    }

    public var isEmpty: Bool { dots.isEmpty }
    public var count: Int { dots.count }

    public subscript(dot: UInt32) -> UInt64? {
        get { index(of: dot).map { durations[$0] } }
        set {
            if let index = index(of: dot) {
                if let newValue { durations[index] = newValue } else { removeValue(forKey: dot) }
            } else if let newValue {
                dots.insert(dot)
                durations.insert(newValue, at: index(of: dot)!)
            }
        }
    }

    @discardableResult
    public mutating func removeValue(forKey dot: UInt32) -> UInt64? {
        guard let index = index(of: dot) else { return nil }
        dots.remove(dot)
        return durations.remove(at: index)
    }

    /// (dot id, duration) in increasing dot id order.
    public func makeIterator() -> Zip2Sequence<DotIDs, [UInt64]>.Iterator { zip(dots, durations).makeIterator() }

    private func index(of dot: UInt32) -> Int? {
        var index = 0
        for id in dots {
            if id == dot { return index }
            if id > dot { return nil }
            index += 1
        }
        return nil
    }
}
