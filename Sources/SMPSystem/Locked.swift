#if canImport(Glibc)
import Glibc
#endif

/// A value behind a `pthread_mutex_t`: what every cross-thread field of smpctl is kept in.
///
/// Not `Synchronization.Mutex`: on Linux that one parks on a futex directly, which
/// ThreadSanitizer does not see, so a contended hand-off between two threads is reported as a
/// data race that is not one (`make test-tsan` would be noise). `pthread_mutex_lock` is
/// intercepted by TSan and is the same futex underneath when uncontended.
package final class Locked<Value: ~Copyable>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private var value: Value

    package init(_ value: consuming sending Value) {
        self.value = value
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        let status = pthread_mutex_init(mutex, nil)
        precondition(status == 0, "pthread_mutex_init failed: \(status)")
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` with the value, the lock held. The corresponding C functions are
    /// `pthread_mutex_lock` and `pthread_mutex_unlock`.
    package func withLock<Result: ~Copyable, Failure: Error>(
        _ body: (inout sending Value) throws(Failure) -> sending Result
    ) throws(Failure) -> sending Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
