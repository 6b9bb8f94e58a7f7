import Dispatch
import SMPSystem

/// Group commit between the streaming path and the records store.
///
/// The session submits changes from its queue; the journal writes them on its own queue in one
/// transaction per batch (one fsync for many dots) and hands each committed batch back on the
/// session's queue. The session acts on a change — sends a claimed dot, counts a done dot —
/// only after its commit, so the record is always ahead of what the host believes.
///
/// Window of loss: a DOT_DONE received but not yet committed when the host dies (at most
/// `flushIntervalNanoseconds` plus one fsync; a done that comes after a quiet interval is committed at once). Nothing is lost from the record: the dot is still `sent`,
/// and on resume the device's done_count and last completed dot (HELLO reply) settle it.
final class RecordJournal: @unchecked Sendable {
    private let recorder: (any SessionRecorder)?
    private let sessionID: Int64
    private let queue = DispatchQueue(label: "smpctl.records")
    private let target: DispatchQueue
    private let onCommitted: (RecordBatch) -> Void
    private let onFailure: (RecordStoreError) -> Void
    /// Confined to `queue`.
    private var pending = RecordBatch()
    private var flushScheduled = false
    private var failed = false
    private static let flushIntervalNanoseconds: UInt64 = 5_000_000
    /// When the last commit ended (CLOCK_MONOTONIC), confined to `queue`.
    private var lastFlushEnded: UInt64 = 0

    /// What the session submitted and the journal's queue has not taken yet: one hop to that
    /// queue per burst of changes instead of one `async` (and a closure) per dot (issue 16).
    private struct Inbox: Sendable {
        var changes: [(urgent: Bool, change: @Sendable (inout RecordBatch) -> Void)] = []
        var done: [RecordBatch.Done] = []
        /// A `drain` is queued and will take everything added before it runs.
        var scheduled = false
    }
    private let inbox = Locked(Inbox())

    /// `onCommitted` and `onFailure` run on `target` (the session queue).
    init(recorder: (any SessionRecorder)?, sessionID: Int64, target: DispatchQueue,
         onCommitted: @escaping (RecordBatch) -> Void, onFailure: @escaping (RecordStoreError) -> Void) {
        self.recorder = recorder
        self.sessionID = sessionID
        self.target = target
        self.onCommitted = onCommitted
        self.onFailure = onFailure
    }

    /// Adds changes to the next batch. `urgent` commits without waiting for more (claims: the
    /// stream is waiting for them).
    func submit(urgent: Bool = false, _ change: @escaping @Sendable (inout RecordBatch) -> Void) {
        guard recorder != nil else {
            // No records (tests of the link alone): commit is immediate.
            var batch = RecordBatch()
            change(&batch)
            let committed = batch
            target.async { self.onCommitted(committed) }
            return
        }
        enqueue { $0.changes.append((urgent, change)) }
    }

    /// A dot the device reported done, for the next batch (not urgent): the per-dot path.
    func submitDone(_ entry: RecordBatch.Done) {
        guard recorder != nil else {
            var batch = RecordBatch()
            batch.done = [entry]
            let committed = batch
            target.async { self.onCommitted(committed) }
            return
        }
        enqueue { $0.done.append(entry) }
    }

    private func enqueue(_ add: (inout Inbox) -> Void) {
        let wake = inbox.withLock { (inbox: inout Inbox) -> Bool in
            add(&inbox)
            let wake = !inbox.scheduled
            inbox.scheduled = true
            return wake
        }
        if wake { queue.async { self.drain() } }
    }

    /// On `queue`: moves the inbox, in the order submitted, into the pending batch. An urgent
    /// change (a claim) is committed at once and ends its batch, as when every submission was
    /// its own hop: a change submitted after a claim (the end's "back to planned" for dots still
    /// being claimed) must not be applied before it, which `RecordStore.apply`'s fixed order
    /// (status changes, then claims) would do within one batch. The rest within `flushIntervalNanoseconds`.
    /// Done dots go first: each one's claim was committed before it could be sent.
    private func drain() {
        let taken = inbox.withLock { (inbox: inout Inbox) -> Inbox in
            let taken = inbox
            inbox = Inbox()
            return taken
        }
        pending.done.append(contentsOf: taken.done)
        var committedLast = false
        for entry in taken.changes {
            entry.change(&pending)
            committedLast = entry.urgent
            if entry.urgent { flush() }
        }
        if !committedLast, !flushScheduled, !pending.isEmpty {
            if Sys.monotonicNanoseconds() &- lastFlushEnded >= Self.flushIntervalNanoseconds {
                // Nothing was committed for a whole interval: a slow stream (an applicator's
                // real pace, ~10 dots/s) has nothing to group with, and the timer would cost
                // the host two thread wake-ups per dot (issue 15's CPU at 10 dots/s).
                flush()
            } else {
                flushScheduled = true
                queue.asyncAfter(deadline: .now() + .nanoseconds(Int(Self.flushIntervalNanoseconds))) { self.flush() }
            }
        }
    }

    /// Runs `body` on the session's queue once everything submitted before has been committed
    /// (at once without a store). Not after a failed commit: the session is held then.
    func afterCommit(_ body: @escaping @Sendable () -> Void) {
        guard recorder != nil else { return target.async(execute: body) }
        queue.async {
            self.drain()
            self.flush()
            if !self.failed { self.target.async(execute: body) }
        }
    }

    private func flush() {
        flushScheduled = false
        guard let recorder, !pending.isEmpty, !failed else { return }
        let batch = pending
        pending = RecordBatch()
        defer { lastFlushEnded = Sys.monotonicNanoseconds() }
        do {
            try recorder.apply(batch, session: sessionID)
            target.async { self.onCommitted(batch) }
        } catch {
            failed = true
            target.async { self.onFailure(error) }
        }
    }
}
