/// Debounce of one input line, as a pure value: edges and deadlines in, decisions out. No clock,
/// no I/O; the pipeline (`GPIOInputPipeline`) owns the timer and reads the line.
///
/// Rules:
/// - An edge TO `immediateLevel` (the stop level) is accepted at once: a stop is never delayed,
///   and a bounce can only ever stop the machine, not start it.
/// - Any other new level is accepted only if it still holds `debounce` after its edge: a candidate
///   is started with a deadline `edge time + debounce`, cancelled by an edge back to the accepted
///   level before the deadline, and confirmed at the deadline against the line's actual level.
/// - Edges older than the newest one seen are stale (e.g. queued by the kernel before the initial
///   read) and ignored. `lost` is final.
struct LineDebouncer: Sendable, Hashable {
    /// What the caller must do.
    enum Decision: Sendable, Hashable {
        /// Nothing to report; no timer needed.
        case none
        /// Report this reading with this timestamp.
        case deliver(GPIOInputReading, timestampNanos: UInt64)
        /// Wake up at this CLOCK_MONOTONIC deadline and call `deadlineReached`.
        case wake(atNanos: UInt64)
    }

    let debounceNanos: UInt64
    let immediateLevel: GPIOLevel?
    /// The reported reading; nil until `seed`.
    private(set) var accepted: GPIOInputReading?
    /// The newest level seen on the line and the time of its edge.
    private(set) var raw: GPIOLevel?
    private(set) var rawSinceNanos: UInt64 = 0
    /// Deadline of the pending candidate (`raw`), if any.
    private(set) var deadlineNanos: UInt64?

    init(debounce: Duration, immediateLevel: GPIOLevel?) {
        self.debounceNanos = debounce.nanoseconds
        self.immediateLevel = immediateLevel
    }

    /// The level read when the line was opened: reported as it is.
    mutating func seed(_ level: GPIOLevel, atNanos time: UInt64) -> Decision {
        raw = level
        rawSinceNanos = time
        deadlineNanos = nil
        accepted = GPIOInputReading(level)
        return .deliver(GPIOInputReading(level), timestampNanos: time)
    }

    /// An edge to `level` at `time` (kernel timestamp).
    mutating func edge(_ level: GPIOLevel, atNanos time: UInt64) -> Decision {
        if accepted == .lost { return .none }
        if raw != nil, time < rawSinceNanos { return .none }  // stale
        raw = level
        rawSinceNanos = time
        let reading = GPIOInputReading(level)
        if accepted == reading {
            deadlineNanos = nil  // back to the accepted level before the deadline: a bounce
            return .none
        }
        if level == immediateLevel || debounceNanos == 0 {
            deadlineNanos = nil
            accepted = reading
            return .deliver(reading, timestampNanos: time)
        }
        let deadline = time &+ debounceNanos
        deadlineNanos = deadline
        return .wake(atNanos: deadline)
    }

    /// The timer fired at `now`; `current` is the line's level read just now (after every
    /// pending edge has been processed).
    mutating func deadlineReached(nowNanos now: UInt64, current: GPIOLevel) -> Decision {
        guard let deadline = deadlineNanos, accepted != .lost else { return .none }
        if current != raw {
            // The level changed without an edge reaching us (kernel queue overflow): treat the
            // read as an edge now.
            return edge(current, atNanos: max(now, rawSinceNanos))
        }
        if now < deadline { return .wake(atNanos: deadline) }
        deadlineNanos = nil
        let reading = GPIOInputReading(current)
        accepted = reading
        return .deliver(reading, timestampNanos: rawSinceNanos)
    }

    /// The line cannot be read any more.
    mutating func lost(atNanos time: UInt64) -> Decision {
        if accepted == .lost { return .none }
        accepted = .lost
        deadlineNanos = nil
        return .deliver(.lost, timestampNanos: time)
    }
}
