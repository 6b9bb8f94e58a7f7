#ifndef SMP_BENCH_SUPPORT_H
#define SMP_BENCH_SUPPORT_H
#include <stdint.h>
#include <stddef.h>

/// A new pseudo-terminal pair, raw, both ends O_NONBLOCK|O_CLOEXEC unless `blocking`. Returns 0
/// and fills master, slave and path (up to path_len bytes), or -errno.
int bench_open_pty(int *master, int *slave, char *path, size_t path_len, int blocking);

/// Puts `fd` (a tty) in raw 8N1 mode, VMIN 1, VTIME 0. 0 or -errno.
int bench_make_raw(int fd);

/// Sets or clears O_NONBLOCK. 0 or -errno.
int bench_set_nonblocking(int fd, int nonblocking);

/// CLOCK_MONOTONIC in nanoseconds.
uint64_t bench_now_ns(void);

/// Sleeps until the CLOCK_MONOTONIC time `deadline_ns` (absolute).
void bench_sleep_until_ns(uint64_t deadline_ns);

/// This process's user and system CPU time in nanoseconds (getrusage RUSAGE_SELF).
void bench_process_cpu_ns(uint64_t *user_ns, uint64_t *system_ns);

/// This thread's CPU time (CLOCK_THREAD_CPUTIME_ID) in nanoseconds.
uint64_t bench_thread_cpu_ns(void);

/// Keeps the calling thread to the lowest CPU it may run on (pthread_setaffinity_np): that CPU,
/// or -errno.
int bench_pin_thread_to_lowest_cpu(void);

/// Peak resident set of this process (getrusage ru_maxrss) in KiB; of waited-for children with
/// `children` != 0.
long bench_max_rss_kib(int children);

/// Voluntary and involuntary context switches of this process.
void bench_context_switches(long *voluntary, long *involuntary);

/// What one direction of a paced relay did.
typedef struct {
    uint64_t bytes;        ///< bytes delivered
    uint64_t writes;       ///< write(2) calls that delivered bytes
    uint64_t max_backlog;  ///< most bytes waiting for the emulated wire at once
    uint64_t busy_ns;      ///< time the emulated wire was transmitting
    uint64_t max_gap_ns;   ///< longest time between two reads that got bytes (after the first)
} bench_relay_stats;

/// Forwards bytes from `in_fd` to `out_fd` (both non-blocking) as a UART at `bytes_per_second`
/// would: each byte leaves the wire 1/bytes_per_second after the previous one finished (or after
/// it arrived, if the wire was idle), back to back while bytes wait. Bytes are handed over in
/// chunks of at most `granularity_ns` of wire time (a USB-serial adapter's latency timer does the
/// same). `bytes_per_second` <= 0: forward as fast as possible. Runs until *stop becomes
/// non-zero (checked at least every 20 ms) or `in_fd` reports end of file or an error. Returns 0,
/// or -errno of the failing call.
int bench_relay(int in_fd, int out_fd, double bytes_per_second, uint64_t granularity_ns,
                volatile int *stop, bench_relay_stats *stats);

/// The CPU a thread costs that wakes at absolute deadlines `interval_ns` apart (a timed-out
/// ppoll, as the link's thread waits for its heartbeat) and writes `frame_bytes` to a pty, and
/// the CPU of a second thread that a descriptor wakes to read each (poll, then read), over
/// `iterations`: ns per iteration of the first, ns per read of the second. `frame_bytes` 0: the
/// timed wake-up alone (no write, no reader). 0 or -errno.
int bench_wake_cost(int iterations, uint64_t interval_ns, int frame_bytes,
                    double *writer_ns_per_iteration, double *reader_ns_per_read);

#endif
