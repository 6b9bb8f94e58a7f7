import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// `[host] realtime_priority`: a session's process under SCHED_FIFO.
///
/// The heartbeat, the serial reads and the interlock lines run on libdispatch's worker threads,
/// which Dispatch cannot place under a real-time policy one queue at a time. Measured on a
/// 2-core machine under `stress-ng --cpu 2`, a session at ordinary priority ends held (lease
/// expired) within a few thousand dots, and the same session with the whole process at
/// SCHED_FIFO 50 completes (docs/performance.md, underruns). So every thread of the process is
/// moved, and the threads created later inherit the policy from their creator (glibc's default
/// `PTHREAD_INHERIT_SCHED`).
enum RealtimeScheduling {
    struct Failure: Error, CustomStringConvertible {
        var errno: CInt
        var priority: Int

        /// Why, in a few words: "this user may not use SCHED_FIFO (Operation not permitted)".
        var reason: String {
            let text = String(cString: strerror(errno))
            return errno == EPERM ? "this user may not use SCHED_FIFO (\(text))" : "SCHED_FIFO could not be set (\(text))"
        }

        var description: String {
            let reason = String(cString: strerror(errno))
            if errno == EPERM {
                return "[host] realtime_priority = \(priority): this process may not use SCHED_FIFO (\(reason)). "
                    + "Allow it for the smp group with a line `@smp - rtprio \(priority)` in "
                    + "/etc/security/limits.d/smp.conf (then log in again), or run under a service with "
                    + "CPUSchedulingPolicy=fifo, or set the key to 0 for ordinary scheduling."
            }
            return "[host] realtime_priority = \(priority): SCHED_FIFO could not be set (\(reason))"
        }
    }

    /// Puts every thread of this process under SCHED_FIFO at `priority`.
    ///
    /// The corresponding C function is `sched_setscheduler`, once per entry of /proc/self/task,
    /// until a pass finds no thread it has not moved (a thread created during a pass by one not
    /// yet moved would otherwise be missed).
    static func apply(priority: Int) throws(Failure) {
        var moved = Set<pid_t>()
        for _ in 0..<8 {
            let threads = Set(((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? [])
                .compactMap { pid_t($0) })
            let fresh = threads.subtracting(moved)
            if fresh.isEmpty { return }
            var parameters = sched_param(sched_priority: CInt(priority))
            for thread in fresh {
                if sched_setscheduler(thread, SCHED_FIFO, &parameters) != 0 {
                    let code = Glibc.errno
                    if code == ESRCH { continue }  // the thread ended meanwhile
                    throw Failure(errno: code, priority: priority)
                }
                moved.insert(thread)
            }
        }
    }
}
