// The project's one C shim: what Swift cannot call directly (variadic ioctl) and the libgpiod
// v1/v2 split behind a small prefixed API. gpiod.h stays out of this header on purpose.
#ifndef SMP_SHIM_H
#define SMP_SHIM_H

#ifdef __cplusplus
extern "C" {
#endif

/// ioctl(fd, TIOCEXCL): further open(2)s of the tty fail with EBUSY (except for root).
int smp_tty_set_exclusive(int fd);
/// ioctl(fd, TIOCNXCL).
int smp_tty_clear_exclusive(int fd);
/// ioctl(fd, TIOCOUTQ, &n): bytes still in the tty's output queue.
int smp_tty_output_queue(int fd, int *count);

/// libgpiod API major version this shim was compiled against (1 or 2).
int smp_gpio_api_version(void);

#ifdef __cplusplus
}
#endif
#endif
