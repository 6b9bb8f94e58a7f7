import Dispatch
import SMPSystem

/// Group commit between the streaming path and the records store.
///
/// The session submits changes from its queue; the journal writes them on its own queue in one
/// transaction per batch (one fsync for many dots) and hands each committed batch back on the
/// session's queue. The session acts on a change — sends a claimed dot, counts a done dot —
/// only after its commit, so the record is always ahead of what the host believes.
///
/// A claim (and any change submitted `urgent`) is committed at once, with everything before it:
/// the stream waits for it. A done dot waits at most `doneCommitLag` (1 s) for others to share
/// its commit, and no more than `doneCommitLimit` (16) wait: at an applicator's pace (~10 dots/s)
/// each commit costs the host ~0.5 ms of CPU whatever it holds (its wake-ups, not its fsync), and
/// the commits were most of the host's CPU (issue 15: 250 ms, four a second, kept the host at
/// 0.7–0.8 % of a core; 1 s, 0.45–0.55 %). A done that waits costs nothing but that wait (the dot
/// was injected; its record says `sent` meanwhile). The last dot of the plan is committed at once.
///
/// Window of loss: the DOT_DONEs of the last `doneCommitLag` (at most `doneCommitLimit` of them)
/// plus one fsync, when the host dies. Nothing is lost from the record: those dots are still
/// `sent`, and on resume the device's done_count and last completed dot (HELLO reply) settle them;
/// if the device lost its count too (both powered off), they are `ambiguous`, never sent again
/// without the operator's decision — as every dot in flight then is (up to the device's queue, 32
/// dots: three seconds at 10 dots/s), so at an applicator's pace the limit bounds what the lag
/// adds to that: 16 dots. Faster than commits land (time scale 0), dones that arrive while a
/// commit is being written wait for the next, so the window is the commit's latency times the
/// rate: one `make soak` power-cycle trial, killed 0.6 s in, left 162 (docs/performance.md,
/// eleventh stop).
final class RecordJournal: @unchecked Sendable {
    private let recorder: (any SessionRecorder)?
    private let sessionID: Int64
    private let queue = DispatchQueue(label: "smpctl.records")
    private let target: DispatchQueue
    private let onCommitted: (RecordBatch) -> Void
    private let onFailure: (RecordStoreError) -> Void
    /// Confined to `queue`.
    private var pending = RecordBatch()
    private var failed = false
    /// How long a done dot waits for others to share its commit (see the type's comment).
    static let defaultDoneCommitLag: DispatchTimeInterval = .seconds(1)
    private let doneCommitLag: DispatchTimeInterval
    /// How many done dots may wait: the next is committed at once with them.
    static let defaultDoneCommitLimit = 16
    private let doneCommitLimit: Int

    /// What the session submitted and the journal's queue has not taken yet: one hop to that
    /// queue per burst of changes instead of one `async` (and a closure) per dot (issue 16).
    private struct Inbox: Sendable {
        var changes: [(urgent: Bool, change: @Sendable (inout RecordBatch) -> Void)] = []
        var done: [RecordBatch.Done] = []
        /// A done to commit at once (the plan's last).
        var doneUrgent = false
        /// Done dots submitted and not yet in a commit (here or pending on `queue`).
        var doneUncommitted = 0
        /// A `drain` is queued and will take everything added before it runs.
        var scheduled = false
        /// A timed flush is due on `queue` (within `doneCommitLag`) and takes what is here then:
        /// a done added meanwhile needs no hop of its own — one wake-up of the journal per
        /// commit instead of one per dot.
        var flushDue = false
    }
    private let inbox = Locked(Inbox())

    /// `onCommitted` and `onFailure` run on `target` (the session queue).
    init(recorder: (any SessionRecorder)?, sessionID: Int64, target: DispatchQueue,
         doneCommitLag: DispatchTimeInterval = RecordJournal.defaultDoneCommitLag,
         doneCommitLimit: Int = RecordJournal.defaultDoneCommitLimit,
         onCommitted: @escaping (RecordBatch) -> Void, onFailure: @escaping (RecordStoreError) -> Void) {
        self.recorder = recorder
        self.doneCommitLag = doneCommitLag
        self.doneCommitLimit = max(doneCommitLimit, 1)
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
        enqueue { inbox in
            inbox.changes.append((urgent, change))
            return urgent
        }
    }

    /// A dot the device reported done: the per-dot path. It waits up to `doneCommitLag` for
    /// others, unless `urgent` (the plan's last dot: the session completes on its commit) or
    /// `doneCommitLimit` are waiting with it.
    func submitDone(_ entry: RecordBatch.Done, urgent: Bool = false) {
        guard recorder != nil else {
            var batch = RecordBatch()
            batch.done = [entry]
            let committed = batch
            target.async { self.onCommitted(committed) }
            return
        }
        let limit = doneCommitLimit
        enqueue { inbox in
            inbox.done.append(entry)
            inbox.doneUncommitted += 1
            if urgent || inbox.doneUncommitted >= limit { inbox.doneUrgent = true }
            return inbox.doneUrgent
        }
    }

    /// `add` returns whether what it added must be committed at once.
    private func enqueue(_ add: (inout Inbox) -> Bool) {
        let wake = inbox.withLock { (inbox: inout Inbox) -> Bool in
            let urgent = add(&inbox)
            guard !inbox.scheduled, urgent || !inbox.flushDue else { return false }
            inbox.scheduled = true
            return true
        }
        if wake { queue.async { self.drain() } }
    }

    /// On `queue`: moves the inbox, in the order submitted, into the pending batch. An urgent
    /// change (a claim) is committed at once and ends its batch, as when every submission was
    /// its own hop: a change submitted after a claim (the end's "back to planned" for dots still
    /// being claimed) must not be applied before it, which `RecordStore.apply`'s fixed order
    /// (status changes, then claims) would do within one batch. The rest within `doneCommitLag`.
    /// Done dots go first: each one's claim was committed before it could be sent.
    private func drain() {
        take(endingTimedFlush: false)
        guard !pending.isEmpty else { return }
        let schedule = inbox.withLock { (inbox: inout Inbox) -> Bool in
            guard !inbox.flushDue else { return false }
            inbox.flushDue = true
            return true
        }
        if schedule { queue.asyncAfter(deadline: .now() + doneCommitLag) { self.timedFlush() } }
    }

    private func timedFlush() {
        take(endingTimedFlush: true)
        flush()
    }

    /// Takes the inbox into `pending`, committing at each urgent change (and at an urgent done).
    private func take(endingTimedFlush: Bool) {
        let taken = inbox.withLock { (inbox: inout Inbox) -> Inbox in
            let taken = inbox
            inbox.changes = []
            inbox.done = []
            inbox.doneUrgent = false
            inbox.scheduled = false
            if endingTimedFlush { inbox.flushDue = false }
            return taken
        }
        pending.done.append(contentsOf: taken.done)
        var committedLast = false
        for entry in taken.changes {
            entry.change(&pending)
            committedLast = entry.urgent
            if entry.urgent { flush() }
        }
        if taken.doneUrgent, !committedLast { flush() }
    }

    /// Runs `body` on the session's queue once everything submitted before has been committed
    /// (at once without a store). Not after a failed commit: the session is held then.
    func afterCommit(_ body: @escaping @Sendable () -> Void) {
        guard recorder != nil else { return target.async(execute: body) }
        queue.async {
            self.take(endingTimedFlush: false)
            self.flush()
            if !self.failed { self.target.async(execute: body) }
        }
    }

    private func flush() {
        guard let recorder, !pending.isEmpty, !failed else { return }
        let batch = pending
        pending = RecordBatch()
        if !batch.done.isEmpty { inbox.withLock { $0.doneUncommitted -= batch.done.count } }
        do {
            try recorder.apply(batch, session: sessionID)
            target.async { self.onCommitted(batch) }
        } catch {
            failed = true
            target.async { self.onFailure(error) }
        }
    }
}
