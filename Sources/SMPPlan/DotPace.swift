import FirmwareProtocol

/// The envelope's dot-rate limit as time between skin entries (a skin entry is the start of a
/// dot's descent), and the runner's two checks of it (firmware-protocol.md §6.10):
///
/// - before arming: the applicator confirmed the pace (PACE, protocol 1.1), or, for one that
///   cannot be paced, the plan's own timing — descend, dwell, retract and the travel between
///   consecutive dots at the declared speed — keeps every pair of dots far enough apart;
/// - while running: the skin entries the applicator's DOT_DONE reports imply are never closer
///   than the limit allows (`Monitor`). A device that breaks it is stopped.
public enum DotPace {
    /// What the host allows for variation in a device's descend and retract times when it
    /// derives skin entries from completion times.
    public static let monitorAllowanceMicroseconds: UInt64 = 1_000

    /// The slowest dot rate the protocol can carry: PACE's `min_dot_interval_ms` is a u16, so one
    /// skin entry per 65.535 s (1000 / 65535 dots per second, exactly 65,535,000 µs apart).
    public static let slowestRate: Double = 1000 / Double(UInt16.max)
    /// `slowestRate` as written in messages and docs/machine-config.md, rounded up so that the
    /// value written there is itself accepted.
    public static let slowestRateText = "0.0152590219"

    /// A dot-rate limit the applicator cannot be given: below `slowestRate`, or not a finite
    /// number. Never clamped to something the protocol can carry — a different limit is not the
    /// one the operator set.
    public struct RateOutOfRange: Error, Sendable, Hashable, CustomStringConvertible {
        public var rate: Double

        public var description: String {
            "the dot-rate limit \(PlanText.number(rate)) dots per second cannot be sent to the applicator: PACE carries "
                + "at most one dot per 65.535 s, so the limit must be a finite number of at least "
                + "\(DotPace.slowestRateText) dots per second (firmware-protocol.md §6.10)"
        }
    }

    /// The shortest time between two skin entries that `envelope` allows, rounded up (µs).
    /// Throws for a rate PACE cannot carry (`slowestRate`), or one that is not a finite number.
    public static func minimumIntervalMicroseconds(_ envelope: SafetyEnvelope) throws(RateOutOfRange) -> UInt64 {
        let rate = envelope.maximumDotsPerSecond
        // `rate >= slowestRate` also refuses NaN, 0 and negatives. Division is monotonic, so
        // any rate at or above `slowestRate` gives at most 65,535,000 µs (exact at the limit).
        guard rate.isFinite, rate >= slowestRate else { throw RateOutOfRange(rate: rate) }
        let interval = (1_000_000 / rate).rounded(.up)
        guard interval >= 1, interval <= Double(UInt16.max) * 1000 else { throw RateOutOfRange(rate: rate) }
        return UInt64(interval)
    }

    /// The same in whole milliseconds, rounded up: PACE's unit. Throws rather than clamp.
    public static func paceMilliseconds(_ envelope: SafetyEnvelope) throws(RateOutOfRange) -> UInt16 {
        let microseconds = try minimumIntervalMicroseconds(envelope)
        guard let milliseconds = UInt16(exactly: (microseconds + 999) / 1000) else {
            throw RateOutOfRange(rate: envelope.maximumDotsPerSecond)
        }
        return milliseconds
    }

    /// The least time physics leaves between the skin entries of `earlier` and `later` when they
    /// run one after the other: `earlier`'s descend, dwell and retract, then the travel at the
    /// declared speed (rounded down: a device is never assumed slower than it says).
    public static func physicalIntervalMicroseconds(from earlier: PlanDot, to later: PlanDot, limits: DeviceLimits) -> UInt64 {
        let dx = Double(Int64(later.xMicrometres) - Int64(earlier.xMicrometres))
        let dy = Double(Int64(later.yMicrometres) - Int64(earlier.yMicrometres))
        let speed = Double(limits.travelSpeedMicrometresPerSecond)
        let travel = speed > 0 ? UInt64(((dx * dx + dy * dy).squareRoot() * 1_000_000 / speed).rounded(.down)) : 0
        return UInt64(limits.descendMicroseconds) + UInt64(max(earlier.dwellMicroseconds, 0))
            + UInt64(limits.retractMicroseconds) + travel
    }

    /// A pair of consecutive dots that could enter the skin closer together than allowed.
    public struct TooFast: Sendable, Hashable, CustomStringConvertible {
        public var earlier: PlanDot
        public var later: PlanDot
        public var intervalMicroseconds: UInt64
        public var minimumMicroseconds: UInt64

        public var description: String {
            "\(later.path) (id \(later.id)) could enter the skin \(PlanText.milli(Int64(clamping: intervalMicroseconds))) ms "
                + "after \(earlier.path) (id \(earlier.id)); the envelope allows no less than "
                + "\(PlanText.milli(Int64(clamping: minimumMicroseconds))) ms"
        }
    }

    /// The first consecutive pair of `dots` (in the order they would run) that physics alone
    /// does not keep `minimumIntervalMicroseconds` apart; nil when every pair is.
    public static func firstPairTooFast(_ dots: [PlanDot], limits: DeviceLimits,
                                        minimumIntervalMicroseconds: UInt64) -> TooFast? {
        guard dots.count > 1 else { return nil }
        for index in 1..<dots.count {
            let interval = physicalIntervalMicroseconds(from: dots[index - 1], to: dots[index], limits: limits)
            if interval < minimumIntervalMicroseconds {
                return TooFast(earlier: dots[index - 1], later: dots[index], intervalMicroseconds: interval,
                               minimumMicroseconds: minimumIntervalMicroseconds)
            }
        }
        return nil
    }

    /// Watches the completions the applicator reports. A DOT_DONE's time is the needle back at
    /// standoff: skin entry + descend + dwell + retract. Descend and retract are the same for
    /// every dot, so the completion time minus the dwell is the skin entry plus a constant, and
    /// the difference of two such values is the interval between two skin entries.
    public struct Monitor: Sendable {
        public let minimumIntervalMicroseconds: UInt64
        private var previous: (dotID: UInt32, entry: UInt64)?

        public init(minimumIntervalMicroseconds: UInt64) {
            self.minimumIntervalMicroseconds = minimumIntervalMicroseconds
        }

        /// A violation, or nil. `deviceTimeMicroseconds` 0 means the time is not known (the dot
        /// was confirmed by a later report): the next pair is then not judged.
        public mutating func completed(dotID: UInt32, dwellMicroseconds: Int32,
                                       deviceTimeMicroseconds: UInt64) -> Violation? {
            guard deviceTimeMicroseconds > 0 else {
                previous = nil
                return nil
            }
            let entry = deviceTimeMicroseconds &- UInt64(max(dwellMicroseconds, 0))
            defer { previous = (dotID, entry) }
            guard let previous, entry >= previous.entry else { return nil }
            let interval = entry - previous.entry
            guard interval + DotPace.monitorAllowanceMicroseconds < minimumIntervalMicroseconds else { return nil }
            return Violation(earlierDotID: previous.dotID, laterDotID: dotID, intervalMicroseconds: interval,
                             minimumMicroseconds: minimumIntervalMicroseconds)
        }
    }

    public struct Violation: Sendable, Hashable, CustomStringConvertible {
        public var earlierDotID: UInt32
        public var laterDotID: UInt32
        public var intervalMicroseconds: UInt64
        public var minimumMicroseconds: UInt64

        public var description: String {
            "the applicator started dot \(laterDotID) \(PlanText.milli(Int64(clamping: intervalMicroseconds))) ms after "
                + "dot \(earlierDotID), faster than the envelope allows (at least "
                + "\(PlanText.milli(Int64(clamping: minimumMicroseconds))) ms apart)"
        }
    }
}
