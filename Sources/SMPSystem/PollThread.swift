import CSMPShim

#if canImport(Glibc)
import Glibc
#endif

/// A dedicated thread blocked in `poll(2)` on a few descriptors, calling back on itself when one
/// is readable: the shortest path from a kernel event to code, with no thread hop between (a
/// Dispatch read source wakes libdispatch's manager thread, which then wakes a worker thread).
/// Made for the interlock lines, whose e-stop edge must reach the applicator's serial fd at once.
///
/// The thread inherits the scheduling policy of the thread that starts it (glibc's default
/// `PTHREAD_INHERIT_SCHED`), so a session at SCHED_FIFO gets a real-time watcher. Given a `cpu`,
/// it keeps to that CPU (`pthread_setaffinity_np`; if the kernel refuses, it runs anywhere, as
/// without one): so a wake-up from that CPU needs no other CPU to wake (the interlock watchers,
/// one per CPU).
///
/// Descriptors are the owner's: this never reads nor closes them. `ignore(_:)` takes one out of
/// the poll set; `onDropped` then says, from the thread, that it is no longer polled, so the owner
/// may close it (closing a descriptor another thread polls would let a reused number be polled).
/// `stop()` ends the thread; `onExit` is its last callback, after which no callback comes and no
/// descriptor is polled. Level-triggered: an owner that does not read a readable descriptor is
/// called again at once, so it must read, or ignore it.
///
/// Also the driver of a serial link (NeedleDriver's `ApplicatorLink`): `wake()` makes the thread
/// call `onWake` (the owner's queue of commands has something), `setWritable(_:_:)` adds POLLOUT
/// for a descriptor with output waiting, `onReady` gets the `revents` of each ready one, and
/// `setDeadline(_:)` makes the thread call `onDeadline` once at an absolute time: the `ppoll`
/// times out then, so a timer costs no descriptor and no system call to re-arm (a timerfd cost
/// the link's thread three at each of its ~60 wake-ups a second at an applicator's pace:
/// `timerfd_settime` at every send, its `read`, its place in every `poll`; issue 15).
///
/// The corresponding C functions are `pthread_create`, `ppoll`, `eventfd` (the wake counter),
/// `read` and `write`.
package final class PollThread: @unchecked Sendable {
    private struct Control {
        var ignored: [Bool]
        var dropReported: [Bool]
        /// POLLOUT wanted as well as POLLIN.
        var writable: [Bool]
        var stopping = false
        /// `wake()` was called since the thread last called `onWake`.
        var wakeRequested = false
        /// The thread polls the wake counter: cleared by the thread as it ends (a poke after
        /// that would wake nothing).
        var wakeOpen = true
    }

    private let name: String
    private let descriptors: [CInt]
    private let cpu: Int?
    private let wakeFD: CInt
    private let control: Locked<Control>
    private let onReady: @Sendable (PollThread, Int, Int16) -> Void
    private let onWake: @Sendable (PollThread) -> Void
    private let onDropped: @Sendable (Int) -> Void
    private let onExit: @Sendable (Errno?) -> Void
    private let onDeadline: @Sendable (PollThread) -> Void
    /// Confined to the thread (its callbacks): when `onDeadline` is due, CLOCK_MONOTONIC ns.
    private var deadline: UInt64?

    /// Starts the thread, named `name` (at most 15 bytes are kept). `onReadable(i)`: descriptor
    /// `descriptors[i]` is readable (or in error/hang-up); `onDropped(i)`: after `ignore(i)`, it is
    /// out of the poll set; `onExit(error)`: the thread ends, after `stop()` (nil) or a failed
    /// `poll` (the error; nothing is polled any more).
    package static func start(
        name: String, descriptors: [CInt], cpu: Int? = nil,
        onReadable: @escaping @Sendable (Int) -> Void,
        onDropped: @escaping @Sendable (Int) -> Void,
        onExit: @escaping @Sendable (Errno?) -> Void
    ) -> Result<PollThread, Errno> {
        start(name: name, descriptors: descriptors, cpu: cpu, onReady: { _, index, _ in onReadable(index) },
              onWake: { _ in }, onDropped: onDropped, onExit: onExit)
    }

    /// Starts the thread, as above; `onReady(thread, i, revents)`: descriptor `descriptors[i]` is
    /// readable, writable (if `setWritable(i, true)`), in error or hung up, as `revents` says;
    /// `onWake(thread)`: after one or more `wake()` calls, once, before the descriptors of that
    /// pass; `onDeadline(thread)`: the time `setDeadline` gave has come, once, after the
    /// descriptors of that pass. All get the thread they run on, so they may stop it or change
    /// its set at once.
    package static func start(
        name: String, descriptors: [CInt], cpu: Int? = nil,
        onReady: @escaping @Sendable (PollThread, Int, Int16) -> Void,
        onWake: @escaping @Sendable (PollThread) -> Void,
        onDeadline: @escaping @Sendable (PollThread) -> Void = { _ in },
        onDropped: @escaping @Sendable (Int) -> Void,
        onExit: @escaping @Sendable (Errno?) -> Void
    ) -> Result<PollThread, Errno> {
        let wakeFD: CInt
        switch Sys.eventDescriptor() {
        case .success(let descriptor): wakeFD = descriptor
        case .failure(let errno): return .failure(errno)
        }
        let thread = PollThread(name: String(name.utf8.prefix(15)) ?? "smp-poll", descriptors: descriptors,
                                cpu: cpu, wakeFD: wakeFD, onReady: onReady, onWake: onWake, onDeadline: onDeadline,
                                onDropped: onDropped, onExit: onExit)
        let context = Unmanaged.passRetained(thread).toOpaque()
        var handle = pthread_t()
        let status = pthread_create(&handle, nil, { context in
            Unmanaged<PollThread>.fromOpaque(context!).takeRetainedValue().run()
            return nil
        }, context)
        guard status == 0 else {
            // The last reference goes with this scope: `deinit` closes the counter.
            Unmanaged<PollThread>.fromOpaque(context).release()
            return .failure(Errno(rawValue: status))
        }
        pthread_detach(handle)
        return .success(thread)
    }

    private init(name: String, descriptors: [CInt], cpu: Int?, wakeFD: CInt,
                 onReady: @escaping @Sendable (PollThread, Int, Int16) -> Void,
                 onWake: @escaping @Sendable (PollThread) -> Void, onDeadline: @escaping @Sendable (PollThread) -> Void,
                 onDropped: @escaping @Sendable (Int) -> Void, onExit: @escaping @Sendable (Errno?) -> Void) {
        self.name = name
        self.descriptors = descriptors
        self.cpu = cpu
        self.wakeFD = wakeFD
        let none = Array(repeating: false, count: descriptors.count)
        self.control = Locked(Control(ignored: none, dropReported: none, writable: none))
        self.onReady = onReady
        self.onWake = onWake
        self.onDeadline = onDeadline
        self.onDropped = onDropped
        self.onExit = onExit
    }

    /// Takes `descriptors[index]` out of the poll set; `onDropped(index)` follows. Any thread,
    /// including inside a callback. Idempotent.
    package func ignore(_ index: Int) {
        poke { control in
            guard !control.ignored[index] else { return false }
            control.ignored[index] = true
            return true
        }
    }

    /// Makes the thread call `onWake` once soon (once for any number of calls before it does).
    /// Any thread, including inside a callback; after the thread ended, nothing.
    package func wake() {
        poke { control in
            guard !control.wakeRequested else { return false }
            control.wakeRequested = true
            return true
        }
    }

    /// Whether `descriptors[index]` is polled for POLLOUT as well as POLLIN, from the next pass
    /// on (call it from a callback, or `wake()` after). Any thread.
    package func setWritable(_ index: Int, _ writable: Bool) {
        poke { control in
            guard control.writable[index] != writable else { return false }
            control.writable[index] = writable
            return true
        }
    }

    /// `onDeadline` once CLOCK_MONOTONIC reaches `nanoseconds` (at once if it has); nil: never.
    /// Replaces the deadline before. Only from the thread's own callbacks: an absolute time, so a
    /// pass that runs late never moves it.
    package func setDeadline(_ nanoseconds: UInt64?) {
        deadline = nanoseconds
    }

    /// Ends the thread; `onExit(nil)` follows. Any thread, including inside a callback. Idempotent.
    package func stop() {
        poke { control in
            guard !control.stopping else { return false }
            control.stopping = true
            return true
        }
    }

    /// Changes the control under its lock and, if `change` says so, wakes the thread's `poll` —
    /// after the lock is released: signalled under it, the woken thread (at once, on the same
    /// CPU, more often than not) blocked on the lock the signaller still held and had to be woken
    /// again, two switches of each thread per hand-over where one would do (issue 15: a DOT
    /// handed from the session to the link's thread, once a dot at an applicator's pace). The
    /// thread reads the control after it wakes, so a signal that lands after it already saw the
    /// change costs at most one empty pass. The counter is closed only in `deinit`: never while a caller,
    /// holding this object, may still signal it (a closed descriptor's number may be reused).
    /// The counter is non-blocking: when it is at its maximum, the thread is woken already.
    private func poke(_ change: (inout Control) -> Bool) {
        let signal = control.withLock { control in change(&control) && control.wakeOpen }
        if signal { _ = Sys.signalEvent(wakeFD) }
    }

    deinit { _ = Sys.close(wakeFD) }

    private func run() {
        _ = smp_thread_set_name(name)
        if let cpu { _ = smp_thread_pin_cpu(CInt(clamping: cpu)) }
        var set: [pollfd] = []
        var indexOfEntry: [Int] = []
        set.reserveCapacity(descriptors.count + 1)
        indexOfEntry.reserveCapacity(descriptors.count + 1)
        var failure: Errno?
        while true {
            let (stopping, woken, ignored, writable, newlyDropped) = control.withLock { control in
                var dropped: [Int] = []
                for index in control.ignored.indices where control.ignored[index] && !control.dropReported[index] {
                    control.dropReported[index] = true
                    dropped.append(index)
                }
                let woken = control.wakeRequested
                control.wakeRequested = false
                return (control.stopping, woken, control.ignored, control.writable, dropped)
            }
            // Not in `poll` now: the dropped descriptors may be closed by the owner from here on.
            for index in newlyDropped { onDropped(index) }
            if stopping { break }
            // Then on to `poll`, not back to the top: wakes that keep coming must not starve the
            // descriptors. What `onWake` changes (stop, ignore, POLLOUT) pokes the wake counter,
            // so that `poll` returns at once and the next pass sees it.
            if woken { onWake(self) }
            set.removeAll(keepingCapacity: true)
            indexOfEntry.removeAll(keepingCapacity: true)
            set.append(pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0))
            indexOfEntry.append(-1)
            for index in descriptors.indices where !ignored[index] {
                let events = writable[index] ? Int16(POLLIN | POLLOUT) : Int16(POLLIN)
                set.append(pollfd(fd: descriptors[index], events: events, revents: 0))
                indexOfEntry.append(index)
            }
            let count = nfds_t(set.count)
            let polled = set.withUnsafeMutableBufferPointer { entries in
                Sys.retryingInterrupts { () -> CInt in
                    // The time left is taken again after an interruption: the deadline is absolute.
                    let left = deadline.map { Int64(clamping: $0 &- min($0, Sys.monotonicNanoseconds())) } ?? -1
                    return smp_ppoll(entries.baseAddress, UInt(count), left)
                }
            }
            if case .failure(let errno) = polled {
                failure = errno
                break
            }
            if set[0].revents != 0 { _ = Sys.takeEventCount(wakeFD) }
            for entry in 1..<set.count where set[entry].revents != 0 {
                let index = indexOfEntry[entry]
                // Ignored meanwhile (by a callback of this pass): no more calls for it.
                if control.withLock({ $0.ignored[index] || $0.stopping }) { continue }
                onReady(self, index, set[entry].revents)
            }
            if let due = deadline, Sys.monotonicNanoseconds() >= due {
                deadline = nil
                if !control.withLock({ $0.stopping }) { onDeadline(self) }
            }
        }
        control.withLock { $0.wakeOpen = false }
        onExit(failure)
    }
}

extension Sys {
    /// The calling thread's name (tests: which thread runs a handler).
    ///
    /// The corresponding C function is `pthread_getname_np`.
    package static func currentThreadName() -> String {
        var buffer = [CChar](repeating: 0, count: 16)
        guard smp_thread_get_name(&buffer, UInt(buffer.count)) == 0 else { return "" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The CPUs the calling thread may run on (its affinity mask), lowest first; empty if the
    /// kernel does not say.
    ///
    /// The corresponding C function is `sched_getaffinity`.
    package static func currentThreadCPUs() -> [Int] {
        var cpus = [CInt](repeating: 0, count: 1024)
        let count = smp_thread_cpus(&cpus, CInt(cpus.count))
        guard count > 0 else { return [] }
        return cpus.prefix(Int(count)).map(Int.init)
    }
}
