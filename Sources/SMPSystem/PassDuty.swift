/// Periodic work that rides the passes of a thread that wakes anyway, instead of waking a thread
/// of its own. At an applicator's pace a wake-up is the host's main cost: on the 2-CPU test VM a
/// `ppoll` that times out costs ~50 µs of CPU, a thread woken by a descriptor ~30 µs
/// (`smp-bench wake-cost`), and the interlocks' health check, every quarter of the lease, was 40
/// of them a second beside the link thread's heartbeats at the same interval (issue 15,
/// docs/performance.md, tenth stop: −0.1 % of a core at 10 dots/s).
///
/// The carrier (the link's I/O thread: `ApplicatorLink.carry(_:)`) says `carrierStarted()` as its
/// thread starts, calls `ride(nowNanoseconds:carrierDeadline:)` at the end of each of its passes,
/// saying when it would pass next for its own reasons, passes again no later than the time the
/// duty returns, and says `carrierEnded()` once it will pass no more. The duty decides whether
/// its work is due, and does it early rather than cost the carrier a pass of its own; it does
/// the work itself whenever no carrier has started or after the last one ended.
package protocol PassDuty: AnyObject, Sendable {
    /// A carrier's thread has started and will `ride` in its passes. Any thread.
    func carrierStarted()
    /// That carrier will pass no more (its thread ended). Any thread.
    func carrierEnded()

    /// Does the work if it is due, or would fall due before `carrierDeadline` (the carrier's own
    /// next pass; nil: none planned); returns when the carrier must pass again at the latest,
    /// CLOCK_MONOTONIC nanoseconds; nil: no need.
    func ride(nowNanoseconds: UInt64, carrierDeadline: UInt64?) -> UInt64?
}
