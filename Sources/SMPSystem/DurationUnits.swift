extension Duration {
    /// Whole nanoseconds, negative durations as 0: the unit of the monotonic clock and of
    /// Dispatch deadlines.
    package var nanoseconds: UInt64 {
        let (seconds, attoseconds) = components
        return UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds)) / 1_000_000_000
    }

    /// Whole milliseconds, negative durations as 0.
    package var milliseconds: Int64 { Int64(nanoseconds / 1_000_000) }
}
