// The project's one C shim: what Swift cannot call directly (variadic ioctl) and the libgpiod
// v1/v2 split behind a small prefixed API. gpiod.h stays out of this header on purpose.
#ifndef SMP_SHIM_H
#define SMP_SHIM_H

#include <poll.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// ioctl(fd, TIOCEXCL): further open(2)s of the tty fail with EBUSY (except for root).
int smp_tty_set_exclusive(int fd);
/// ioctl(fd, TIOCNXCL).
int smp_tty_clear_exclusive(int fd);
int smp_tty_output_queue(int fd, int *count);
/// pipe2(fds, flags): glibc declares it only with _GNU_SOURCE, which Swift's Glibc module lacks.
int smp_pipe2(int fds[2], int flags);
/// malloc_trim(0) (<malloc.h>, not in Swift's Glibc module): 1 if memory went back to the kernel.
int smp_malloc_trim(void);
/// mallopt(M_ARENA_MAX, arenas): 1 on success, 0 on error.
int smp_malloc_arena_max(int arenas);
/// eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC): the fd, or -1 and errno.
int smp_eventfd_create(void);
/// timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC): the fd, or -1 and errno.
int smp_timerfd_create_monotonic(void);
/// timerfd_settime(fd, TFD_TIMER_ABSTIME, …) one-shot at `deadline_ns` of CLOCK_MONOTONIC; 0 disarms.
int smp_timerfd_set_absolute(int fd, uint64_t deadline_ns);
/// ppoll(fds, count, timeout, NULL) (a GNU extension of <poll.h>): waits at most `timeout_ns`
/// nanoseconds, for ever when it is negative.
int smp_ppoll(struct pollfd *fds, unsigned long count, int64_t timeout_ns);
/// Names the calling thread (at most 15 bytes): pthread_setname_np. 0 or an errno value.
int smp_thread_set_name(const char *name);
/// The calling thread's name: pthread_getname_np. 0 or an errno value.
int smp_thread_get_name(char *name, unsigned long size);
/// Keeps the calling thread on one CPU: pthread_setaffinity_np. 0 or an errno value.
int smp_thread_pin_cpu(int cpu);
/// The CPUs the calling thread may run on, lowest first, at most `capacity` of them:
/// sched_getaffinity(0, …). Their count, or -1 with errno set.
int smp_thread_cpus(int *cpus, int capacity);
/// posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC), grantpt, unlockpt and ptsname_r in one call (Swift's
/// Glibc module does not declare them): the master's fd, the slave's path in `slave`; -1 and errno.
int smp_pty_open(char *slave, unsigned long size);
/// fstatfs(fd)'s f_type in `type` (Swift's Glibc module does not declare sys/vfs.h); -1 and errno.
int smp_fs_type(int fd, long *type);

// MARK: - GPIO (libgpiod v1 or v2, chosen when this file's .c is compiled)
//
// Conventions: every function that can fail returns NULL or -1 and leaves `errno` set (EINTR is
// passed through: the caller retries). Values and edges are LOGICAL: with active_low set, "1" /
// "rising" mean the line became active, whatever the voltage. The objects are not thread-safe:
// use each chip and request from one thread (one serial dispatch queue) at a time.

/// libgpiod API major version this shim was compiled against (1 or 2).
int smp_gpio_api_version(void);

/// 1 when `debounce_us` of an input line is applied by the kernel (libgpiod v2, uAPI v2);
/// 0 when it is ignored (libgpiod v1: the caller debounces).
int smp_gpio_kernel_debounce(void);

/// Most lines in one request (libgpiod v1's GPIOD_LINE_BULK_MAX_LINES).
#define SMP_GPIO_MAX_LINES 64

/// Bias of an input line (`smp_gpio_line_config.bias`).
#define SMP_GPIO_BIAS_AS_IS 0
#define SMP_GPIO_BIAS_DISABLED 1
#define SMP_GPIO_BIAS_PULL_UP 2
#define SMP_GPIO_BIAS_PULL_DOWN 3

/// One line of a request.
struct smp_gpio_line_config {
    /// Line offset on the chip.
    uint32_t offset;
    /// Nonzero: the line is active when low.
    int32_t active_low;
    /// SMP_GPIO_BIAS_*; inputs only.
    int32_t bias;
    /// Inputs only: kernel debounce period in microseconds (v2 only; see smp_gpio_kernel_debounce).
    uint32_t debounce_us;
    /// Outputs only: the logical value driven from the moment of the request (0 or 1).
    int32_t initial_value;
};

/// One edge event. 16 bytes, no padding; the simulated GPIO backend writes records of exactly
/// this layout to its pipe, so both backends share one reader.
struct smp_gpio_edge_event {
    /// Kernel timestamp of the edge, CLOCK_MONOTONIC, nanoseconds.
    uint64_t timestamp_ns;
    /// Offset of the line on its chip.
    uint32_t line_offset;
    /// 1: the line became active (logical rising edge); 0: it became inactive.
    uint32_t rising;
};

/// An open GPIO chip (reference-counted: requests keep their chip open).
typedef struct smp_gpio_chip smp_gpio_chip;
/// A set of requested lines, all inputs or all outputs, on one chip.
typedef struct smp_gpio_request smp_gpio_request;

/// Opens the chip at `path` (/dev/gpiochipN). NULL with errno on failure (ENOENT: no such chip;
/// EACCES: permission; ENOTTY/ENODEV: not a GPIO chip).
smp_gpio_chip *smp_gpio_chip_open(const char *path);
/// Number of lines of the chip, or -1 with errno.
int smp_gpio_chip_num_lines(smp_gpio_chip *chip);
/// Drops the caller's reference; requests made from the chip stay valid until released.
void smp_gpio_chip_close(smp_gpio_chip *chip);

/// Requests `count` (1…SMP_GPIO_MAX_LINES) input lines with both-edge events, each with its own
/// polarity, bias and (v2) debounce. NULL with errno on failure (EBUSY: a line is in use).
smp_gpio_request *smp_gpio_request_inputs(smp_gpio_chip *chip, const char *consumer,
                                          const struct smp_gpio_line_config *lines, unsigned int count);
/// Requests `count` output lines driven to their `initial_value` from the start.
smp_gpio_request *smp_gpio_request_outputs(smp_gpio_chip *chip, const char *consumer,
                                           const struct smp_gpio_line_config *lines, unsigned int count);

/// The one non-blocking descriptor that becomes readable when an edge event of an input request
/// is pending (v2: the request's fd; v1: an epoll set of the per-line event fds). Owned by the
/// request: never close it, it is closed by smp_gpio_request_release. -1 for output requests.
int smp_gpio_request_fd(smp_gpio_request *request);

/// Reads the pending edge events of an input request into `events` (at most `capacity`), in
/// timestamp order. Never blocks: returns the number read, 0 when none is pending, -1 with errno
/// when the lines cannot be read any more (ENODEV: chip removed).
int smp_gpio_read_edge_events(smp_gpio_request *request, struct smp_gpio_edge_event *events,
                              unsigned int capacity);

/// Logical value (0 or 1) of line `index` (position in the request), or -1 with errno.
int smp_gpio_get_value(smp_gpio_request *request, unsigned int index);
/// Sets output line `index` (position in the request) to the logical `value`. 0, or -1 with errno.
int smp_gpio_set_value(smp_gpio_request *request, unsigned int index, int value);

/// Releases the lines, closes the request's descriptors and drops its chip reference.
void smp_gpio_request_release(smp_gpio_request *request);

#ifdef __cplusplus
}
#endif
#endif
