import CSMPShim
import Dispatch
import Logging
import SMPSystem
import SystemPackage

/// The input path shared by `LibgpiodBackend` and `SimulatedGPIOBackend`: dedicated threads
/// (`PollThread`, "smp-interlocks", one kept on each CPU) blocked in `poll` on every event
/// descriptor (a libgpiod request's fd, or the simulator's pipe), records of
/// `smp_gpio_edge_event` read into one preallocated buffer, a `LineDebouncer` per line, one
/// DispatchSourceTimer per line for debounce deadlines. Edges are never polled for: the threads
/// wake on edges, the timers on deadlines.
///
/// Why a watcher on every CPU: the kernel delivers a line's edge from the GPIO interrupt's thread
/// (gpiolib-cdev's `edge_irq_thread`, SCHED_FIFO 50) on the CPU that took the interrupt, and a
/// single watcher woken from there runs wherever it ran last: on another CPU, which must first be
/// woken (an idle CPU's exit latency; on a virtual machine, a virtual CPU its host may not be
/// running for milliseconds). With one watcher kept on each CPU, the one on the CPU the edge came
/// in on runs as soon as that CPU is free, which it is, having just taken the interrupt: measured
/// at SCHED_FIFO 50 on 2 CPUs, edge → ESTOP written p99 26–29 µs and max 227–255 µs under
/// `stress-ng --cpu 2`, against 77–82 µs and 0.7–4.4 ms with one watcher; idle p99 56–62 µs
/// against 118–144 (docs/performance.md, ninth stop). Every watcher woken by an
/// edge enters `queue`; the first reads the records, the others find none (the descriptors are
/// non-blocking), so each edge is handled once and in order.
///
/// Health check (`healthCheckInterval`): a chip that goes away does not always wake its descriptor
/// (see docs/machine-config.md, "A chip that disappears"), and a line that is never read again
/// would look healthy for ever. So every `healthCheckInterval` (a third of the applicator's lease)
/// one line of each stream is read — one get-value ioctl through the shim, no allocation — and a
/// stream whose read fails is lost at once, exactly as if its descriptor had reported the error:
/// every line `.lost`, which the interlocks treat as their stop level. Who checks: during a
/// session, the link's I/O thread, in the passes its heartbeats (a third of the lease apart too,
/// paired; a quarter to a 1.3 device) cost anyway — the pipeline is a `PassDuty` it carries
/// (`ApplicatorLink.carry`): a check in its pass when due, or earlier in a pass after which the
/// thread would not pass again in time, so checks stay an interval apart at most without a wake-up
/// of their own. That thread passes at least every third of the lease as long as it keeps the
/// applicator's lease (its heartbeats); if its passes stopped, so would its frames, and the
/// applicator would hold on its own. Before it starts and once it has ended, the first watcher
/// checks, on a timer descriptor it polls, armed an interval after each check (disarmed while the
/// link carries the check: re-armed at every carried check as a backstop, it cost the link's thread
/// as much CPU as the wake-up saved, measured). Before, a Dispatch timer cost three thread wake-ups
/// per check (libdispatch's timer thread, a worker, and back), 40 a second at the default lease: a
/// clinic session's largest cost at an applicator's pace (issue 15: docs/performance.md, tenth
/// stop). Every stream is lost if the first watcher's `poll` fails.
///
/// The latency-critical path (an edge to a line's stop level, e.g. e-stop pressed), no allocation,
/// no thread hop: the kernel wakes the watcher thread's `poll` → `queue.sync` (a serial queue runs
/// a sync block on the calling thread: the watcher thread itself, once the queue is free) →
/// `readable` → `read` of the fd into `events` → `LineDebouncer.edge` (immediate level:
/// `.deliver`) → `onChange` (the owner's handler, on `queue`). With Dispatch read sources the
/// same edge went kernel → libdispatch's manager thread → a worker thread: two wake-ups more, each
/// a scheduling decision on a busy machine (issue 15: the e-stop host path's tail).
///
/// Lifetime: after `start`, the watcher threads and the timers hold the pipeline until `close()`
/// has run and every watcher has ended. A descriptor is released only once no watcher polls it:
/// a lost stream's when the last watcher reports it dropped (or ended), the others when the last
/// watcher has ended (or by `close`/`deinit` when no thread was ever started).
///
/// `@unchecked Sendable`: all mutable state is touched only on `queue` (checked with
/// `dispatchPrecondition` at the entry points; Dispatch runs the handlers on `queue`).
final class GPIOInputPipeline: @unchecked Sendable {
    /// One event descriptor and the lines whose edges it delivers.
    struct Stream {
        let fd: CInt
        /// For messages: the chip the stream belongs to.
        let chip: String
        /// The lines of the stream: their offsets on the chip and their input indices, in the
        /// order `readLevel` numbers them.
        let lines: [(offset: UInt32, input: Int)]
        /// Reads pending records into the buffer without blocking: the count, 0 if none.
        let readEvents: (UnsafeMutableBufferPointer<smp_gpio_edge_event>) -> Result<Int, Errno>
        /// The current logical level of the line at a position in `lines`.
        let readLevel: (Int) -> Result<GPIOLevel, Errno>
        /// Releases the descriptor(s): called exactly once.
        let release: () -> Void
    }

    private enum State { case idle, running, closing, closed }

    let queue: DispatchQueue
    let inputs: [GPIOInputLine]
    private let streams: [Stream]
    private let logger: Logger
    /// Where each input is: stream and position.
    private let location: [(stream: Int, position: Int)]
    private var debouncers: [LineDebouncer]
    private var timers: [(any DispatchSourceTimer)?]
    private let healthCheckNanos: UInt64?
    /// The first watcher's timer descriptor for the health check (nil: no check, or closed once
    /// that watcher has ended).
    private var healthTimer: CInt?
    /// When the last health check was made (CLOCK_MONOTONIC nanoseconds).
    private var lastHealthCheckNanos: UInt64 = 0
    /// Carriers started and not yet ended (`PassDuty`): while any, the first watcher's timer
    /// is disarmed.
    private var carriers = 0
    /// Health checks made by a carrier's passes, and by the first watcher's timer (tests).
    private(set) var healthChecksCarried = 0
    private(set) var healthChecksOwn = 0
    /// The watcher threads, each while it may still call back (nil once it ended).
    private var watchers: [PollThread?] = []
    /// The CPU each watcher was started to keep to (nil: any), in `watchers`' order; for tests
    /// (a CPU the kernel refused leaves that watcher free to run anywhere: `PollThread`).
    private(set) var watcherCPUs: [Int?] = []
    /// The streams the watchers poll, in their descriptor order.
    private var watched: [Int] = []
    /// `stillPolled[w][p]`: watcher `w` polls `watched[p]` (not yet dropped, not ended).
    private var stillPolled: [[Bool]] = []
    private var streamLost: [Bool]
    private var streamReleased: [Bool]
    private var state: State = .idle
    private var onChange: ((GPIOInputChange) -> Void)?
    private var onClosed: (@Sendable () -> Void)?
    /// Reused by every read; owned by this object.
    private let events: UnsafeMutableBufferPointer<smp_gpio_edge_event>

    /// Reads per readable event before yielding the queue (the source is level-triggered).
    static let maxReadsPerEvent = 8

    /// At most this many watchers, on the lowest CPUs this process may run on: an edge that
    /// comes in on a CPU beyond them wakes one on another CPU, as with a single watcher.
    static let maxWatchers = 16

    /// Where the watchers run: one on each CPU the starting thread may run on (its affinity,
    /// which a process under `taskset` narrows), at most `maxWatchers`; one anywhere if there is
    /// a single CPU or the kernel does not say.
    static func watcherPlacement() -> [Int?] {
        let cpus = Sys.currentThreadCPUs()
        return cpus.count > 1 ? cpus.prefix(maxWatchers).map { $0 } : [nil]
    }

    /// `debounce[i]`: the debounce this pipeline applies to input `i` (zero where the kernel
    /// already debounces the line). `healthCheckInterval`: how often each stream is read to check
    /// that its chip is still there; nil: never (the descriptor alone must report a loss).
    init(queue: DispatchQueue, inputs: [GPIOInputLine], debounce: [Duration], streams: [Stream],
         healthCheckInterval: Duration? = nil, logger: Logger) {
        precondition(debounce.count == inputs.count)
        precondition(healthCheckInterval.map { $0 > .zero } ?? true, "a health-check interval must be positive")
        self.healthCheckNanos = healthCheckInterval.map(\.nanoseconds)
        self.queue = queue
        self.inputs = inputs
        self.streams = streams
        self.logger = logger
        var location = [(stream: Int, position: Int)](repeating: (-1, -1), count: inputs.count)
        for (s, stream) in streams.enumerated() {
            for (position, line) in stream.lines.enumerated() { location[line.input] = (s, position) }
        }
        precondition(location.allSatisfy { $0.stream >= 0 }, "every input belongs to a stream")
        self.location = location
        self.debouncers = inputs.indices.map {
            LineDebouncer(debounce: debounce[$0], immediateLevel: inputs[$0].immediateLevel)
        }
        self.timers = Array(repeating: nil, count: inputs.count)
        self.streamLost = Array(repeating: false, count: streams.count)
        self.streamReleased = Array(repeating: false, count: streams.count)
        self.events = .allocate(capacity: Int(SMP_GPIO_MAX_LINES))
        self.events.initialize(repeating: smp_gpio_edge_event())
    }

    deinit {
        // Only reachable without a running watcher: release what it will not.
        for s in streams.indices where !streamReleased[s] { streams[s].release() }
        if let healthTimer { _ = Sys.close(healthTimer) }
        events.deallocate()
    }

    // MARK: - Starting

    func start(onChange: @escaping (GPIOInputChange) -> Void) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard case .idle = state else { preconditionFailure("GPIO backend started twice or after close") }
        state = .running
        self.onChange = onChange

        for index in inputs.indices {
            let timer = DispatchSource.makeTimerSource(queue: queue)
            timer.setEventHandler { self.deadlineReached(index) }
            timer.schedule(deadline: .distantFuture)
            timers[index] = timer
            timer.activate()
        }

        // Initial levels first. The time is taken BEFORE each read: an edge stamped earlier is
        // older than the read and ignored as stale; a later one is processed.
        for index in inputs.indices {
            let (s, position) = location[index]
            if streamLost[s] { continue }
            let before = Sys.monotonicNanoseconds()
            switch streams[s].readLevel(position) {
            case .success(let level):
                deliver(debouncers[index].seed(level, atNanos: before), input: index, isInitial: true)
            case .failure(let errno):
                lose(stream: s, errno: errno, operation: "reading the initial level")
            }
            guard case .running = state else { return }  // the owner may close from onChange
        }

        watched = streams.indices.filter { !streamLost[$0] }
        if !watched.isEmpty, healthCheckNanos != nil {
            switch Sys.timerDescriptor() {
            case .success(let descriptor):
                healthTimer = descriptor
            case .failure(let errno):
                // Without its timer no chip could be found gone: fail closed.
                loseEveryStream(errno: errno, operation: "creating the health check's timer")
                guard case .running = state else { return }
                watched = []
            }
        }
        if !watched.isEmpty {
            // Strong captures: the cycle pipeline → thread → callbacks → pipeline keeps a running
            // pipeline alive; it is broken when the thread ends (`watcherEnded`).
            let queue = self.queue
            let watched = self.watched
            let descriptors = watched.map { streams[$0].fd }
            for cpu in Self.watcherPlacement() {
                let w = watchers.count
                // The first watcher also polls the health check's timer, after the lines.
                let timer = w == 0 ? healthTimer : nil
                let started = PollThread.start(
                    name: "smp-interlocks", descriptors: descriptors + (timer.map { [$0] } ?? []), cpu: cpu,
                    onReadable: { index in
                        if index < watched.count {
                            queue.sync { self.readable(watched[index]) }
                        } else {
                            queue.sync { self.healthTimerExpired() }
                        }
                    },
                    onDropped: { index in queue.async { self.watcherDropped(w, position: index) } },
                    onExit: { error in queue.async { self.watcherEnded(w, error) } })
                switch started {
                case .success(let thread):
                    watchers.append(thread)
                    watcherCPUs.append(cpu)
                    stillPolled.append(Array(repeating: true, count: watched.count))
                    continue
                case .failure(let errno) where !watchers.isEmpty:
                    // Fewer watchers: edges from the other CPUs wake one of these, later.
                    logger.warning(
                        "GPIO lines watched from \(watchers.count) CPU(s) only: starting another watcher failed: \(errno)")
                case .failure(let errno):
                    // The watched streams are exactly those not lost yet.
                    loseEveryStream(errno: errno, operation: "starting the thread that watches the lines")
                    guard case .running = state else { return }
                }
                break
            }
        }

        if let interval = healthCheckNanos, let timer = healthTimer {
            if watchers.isEmpty {
                // No watcher polls it: released now (the lines are lost already).
                _ = Sys.close(timer)
                healthTimer = nil
            } else {
                // The initial levels were just read: the first check is an interval from now.
                lastHealthCheckNanos = Sys.monotonicNanoseconds()
                if carriers == 0 { armHealthTimer(at: lastHealthCheckNanos &+ interval) }
            }
        }
    }

    // MARK: - Health check

    /// The first watcher's timer expired: no carrier checks. On `queue`.
    private func healthTimerExpired() {
        guard let timer = healthTimer else { return }
        switch Sys.takeEventCount(timer) {
        case .success(.transferred):
            break
        case .success:
            return  // disarmed meanwhile as a carrier started (`timerfd_settime` resets the count)
        case .failure(let errno):
            return loseEveryStream(errno: errno, operation: "reading the health check's timer")
        }
        guard let interval = healthCheckNanos, carriers == 0, healthCheckMayGoOn else { return }
        healthChecksOwn += 1
        if checkHealth(at: Sys.monotonicNanoseconds()) { armHealthTimer(at: lastHealthCheckNanos &+ interval) }
    }

    /// A carrier's pass (`ride`): a check when it is due, or early when it would fall due
    /// before the carrier's own next pass and a quarter of an interval has gone since the last
    /// (so checks stay an interval apart at most and cost the carrier no pass of their own
    /// — at an applicator's pace its heartbeats come an interval after each send). On `queue`.
    private func carriedPass(nowNanoseconds now: UInt64, carrierDeadline: UInt64?) -> UInt64? {
        guard let interval = healthCheckNanos, healthTimer != nil, healthCheckMayGoOn else { return nil }
        let due = lastHealthCheckNanos &+ interval
        let needsAPassOfItsOwn = carrierDeadline.map { due < $0 } ?? true
        let early = now >= lastHealthCheckNanos &+ interval / 4 && needsAPassOfItsOwn
        guard now >= due || early else { return due }
        healthChecksCarried += 1
        guard checkHealth(at: now) else { return nil }
        return lastHealthCheckNanos &+ interval
    }

    private func startCarrying() {
        carriers += 1
        if carriers == 1, let timer = healthTimer { _ = Sys.setTimer(timer, deadlineNanoseconds: nil) }
    }

    /// The last carrier ended: the first watcher's timer again, at the time the next check is
    /// due (at once if overdue).
    private func stopCarrying() {
        carriers -= 1
        guard carriers == 0, let interval = healthCheckNanos, healthTimer != nil, healthCheckMayGoOn else { return }
        armHealthTimer(at: max(lastHealthCheckNanos &+ interval, Sys.monotonicNanoseconds()))
    }

    private var healthCheckMayGoOn: Bool {
        guard case .running = state else { return false }
        return streamLost.contains(false)
    }

    /// Reads one line of each stream that is not lost yet; a failed read loses the stream.
    /// False when no check is wanted any more (every stream lost, or the owner closed).
    private func checkHealth(at now: UInt64) -> Bool {
        for s in streams.indices where !streamLost[s] {
            if case .failure(let errno) = streams[s].readLevel(0) {
                lose(stream: s, errno: errno, operation: "checking that the chip is still there")
                guard case .running = state else { return false }  // the owner may close from onChange
            }
        }
        lastHealthCheckNanos = now
        return healthCheckMayGoOn
    }

    private func armHealthTimer(at deadline: UInt64) {
        guard let timer = healthTimer else { return }
        if case .failure(let errno) = Sys.setTimer(timer, deadlineNanoseconds: deadline) {
            // Cannot happen with a valid descriptor; if it did, no check would come: fail closed.
            loseEveryStream(errno: errno, operation: "arming the health check's timer")
        }
    }

    /// Every stream not lost yet is lost (fail closed), stopping if the owner closes meanwhile.
    private func loseEveryStream(errno: Errno, operation: String) {
        for s in streams.indices where !streamLost[s] {
            lose(stream: s, errno: errno, operation: operation)
            guard case .running = state else { return }
        }
    }

    // MARK: - Edges

    private func readable(_ s: Int) {
        guard case .running = state, !streamLost[s] else { return }
        for _ in 0..<Self.maxReadsPerEvent {
            switch streams[s].readEvents(events) {
            case .success(let count):
                for k in 0..<count {
                    edge(events[k], stream: s)
                    guard case .running = state, !streamLost[s] else { return }
                }
                if count < events.count { return }
            case .failure(.resourceTemporarilyUnavailable):
                return
            case .failure(let errno):
                lose(stream: s, errno: errno, operation: "reading edge events")
                return
            }
        }
    }

    @inline(__always)
    private func edge(_ event: smp_gpio_edge_event, stream s: Int) {
        let lines = streams[s].lines
        for line in lines where line.offset == event.line_offset {
            let level: GPIOLevel = event.rising != 0 ? .active : .inactive
            deliver(debouncers[line.input].edge(level, atNanos: event.timestamp_ns), input: line.input, isInitial: false)
            return
        }
    }

    @inline(__always)
    private func deliver(_ decision: LineDebouncer.Decision, input: Int, isInitial: Bool) {
        switch decision {
        case .none:
            break
        case .deliver(let reading, let time):
            onChange?(GPIOInputChange(inputIndex: input, reading: reading, timestampNanos: time, isInitial: isInitial))
        case .wake(let deadline):
            // CLOCK_MONOTONIC nanoseconds are Dispatch's uptime clock on Linux
            // (swift-corelibs-libdispatch, src/shims/time.h), so the kernel's edge time plus the
            // debounce is used as the absolute deadline directly.
            timers[input]?.schedule(deadline: DispatchTime(uptimeNanoseconds: deadline), leeway: .milliseconds(1))
        }
    }

    private func deadlineReached(_ index: Int) {
        guard case .running = state, debouncers[index].deadlineNanos != nil else { return }
        // Edges the kernel already holds come first: one before the deadline cancels the candidate.
        for s in streams.indices where !streamLost[s] {
            readable(s)
            guard case .running = state else { return }
        }
        guard debouncers[index].deadlineNanos != nil else { return }
        let (s, position) = location[index]
        guard !streamLost[s] else { return }
        switch streams[s].readLevel(position) {
        case .success(let level):
            deliver(debouncers[index].deadlineReached(nowNanos: Sys.monotonicNanoseconds(), current: level),
                    input: index, isInitial: false)
        case .failure(let errno):
            lose(stream: s, errno: errno, operation: "reading the level of \"\(inputs[index].name)\"")
        }
    }

    /// A stream cannot be read any more: its lines are reported `.lost` (fail closed) and its
    /// source is cancelled; the descriptor is released in the cancel handler.
    private func lose(stream s: Int, errno: Errno, operation: String) {
        guard !streamLost[s] else { return }
        streamLost[s] = true
        let now = Sys.monotonicNanoseconds()
        for line in streams[s].lines {
            deliver(debouncers[line.input].lost(atNanos: now), input: line.input, isInitial: false)
        }
        let names = streams[s].lines.map { "\"\(inputs[$0.input].name)\"" }.joined(separator: ", ")
        logger.critical(
            "GPIO lines \(names) on \(streams[s].chip) lost while \(operation): \(errno) (errno \(errno.rawValue))")
        // Released once no watcher polls it (`watcherDropped`, from their `onDropped`).
        if let position = watched.firstIndex(of: s) {
            for watcher in watchers { watcher?.ignore(position) }
        }
    }

    // MARK: - Closing

    func close(onClosed: (@Sendable () -> Void)?) {
        dispatchPrecondition(condition: .onQueue(queue))
        switch state {
        case .closing:
            if let onClosed {
                let previous = self.onClosed
                self.onClosed = { previous?(); onClosed() }
            }
            return
        case .closed:
            onClosed?()
            return
        case .idle, .running:
            break
        }
        state = .closing
        self.onClosed = onClosed
        onChange = nil
        for index in timers.indices {
            timers[index]?.cancel()
            timers[index] = nil
        }
        if let timer = healthTimer { _ = Sys.setTimer(timer, deadlineNanoseconds: nil) }
        if watchers.contains(where: { $0 != nil }) {
            // The last `watcherEnded` releases the descriptors and finishes the close.
            for watcher in watchers { watcher?.stop() }
            return
        }
        for s in streams.indices { releaseStream(s) }
        finishClose()
    }

    /// Releases a stream's descriptor(s) once; only when no thread polls it.
    private func releaseStream(_ s: Int) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard !streamReleased[s] else { return }
        streamReleased[s] = true
        streams[s].release()
    }

    /// Watcher `w` no longer polls `watched[position]`; the last one to say so releases it.
    private func watcherDropped(_ w: Int, position: Int) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard stillPolled[w][position] else { return }
        stillPolled[w][position] = false
        if !stillPolled.contains(where: { $0[position] }) { releaseStream(watched[position]) }
    }

    /// Watcher `w` has ended: after `close` (error nil), or because `poll` itself failed, which
    /// loses every stream it still watched (their lines read as lost: fail closed; the other
    /// watchers drop them).
    private func watcherEnded(_ w: Int, _ error: Errno?) {
        dispatchPrecondition(condition: .onQueue(queue))
        watchers[w] = nil
        if w == 0, let timer = healthTimer {
            // Polled by the first watcher only: released once it no longer is.
            _ = Sys.close(timer)
            healthTimer = nil
        }
        if let error, case .running = state {
            // Every stream not lost yet is a watched one.
            loseEveryStream(errno: error, operation: "waiting for edges")
        }
        for position in watched.indices { watcherDropped(w, position: position) }
        if !watchers.contains(where: { $0 != nil }), case .closing = state {
            for s in streams.indices { releaseStream(s) }
            finishClose()
        }
    }

    private func finishClose() {
        state = .closed
        let notify = onClosed
        onClosed = nil
        notify?()
    }
}

extension GPIOInputPipeline: PassDuty {
    package func carrierStarted() { queue.async { self.startCarrying() } }
    package func carrierEnded() { queue.async { self.stopCarrying() } }

    /// A carrier's pass: the health check when due (see the type's comment). Not on `queue`.
    package func ride(nowNanoseconds: UInt64, carrierDeadline: UInt64?) -> UInt64? {
        dispatchPrecondition(condition: .notOnQueue(queue))
        return queue.sync { carriedPass(nowNanoseconds: nowNanoseconds, carrierDeadline: carrierDeadline) }
    }
}
