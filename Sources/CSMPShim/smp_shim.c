#include "smp_shim.h"
#include <sys/ioctl.h>
#include <termios.h>
#include <gpiod.h>

int smp_tty_set_exclusive(int fd) { return ioctl(fd, TIOCEXCL); }
int smp_tty_clear_exclusive(int fd) { return ioctl(fd, TIOCNXCL); }
int smp_tty_output_queue(int fd, int *count) { return ioctl(fd, TIOCOUTQ, count); }

// Only the v1 header defines GPIOD_LINE_BULK_MAX_LINES: test the header, not pkg-config.
#ifdef GPIOD_LINE_BULK_MAX_LINES
int smp_gpio_api_version(void) { return 1; }
#else
int smp_gpio_api_version(void) { return 2; }
#endif
