// pipe2(2) is a GNU extension of <unistd.h>.
#define _GNU_SOURCE
#include "smp_shim.h"
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <sys/ioctl.h>
#include <sys/vfs.h>
#include <termios.h>
#include <unistd.h>
#include <gpiod.h>

int smp_tty_set_exclusive(int fd) { return ioctl(fd, TIOCEXCL); }
int smp_tty_clear_exclusive(int fd) { return ioctl(fd, TIOCNXCL); }
int smp_pipe2(int fds[2], int flags) { return pipe2(fds, flags); }
int smp_malloc_trim(void) { return malloc_trim(0); }
int smp_malloc_arena_max(int arenas) { return mallopt(M_ARENA_MAX, arenas); }
int smp_eventfd_create(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }
int smp_timerfd_create_monotonic(void) { return timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC); }
int smp_timerfd_set_absolute(int fd, uint64_t deadline_ns) {
    struct itimerspec spec = {0};
    spec.it_value.tv_sec = (time_t)(deadline_ns / 1000000000u);
    spec.it_value.tv_nsec = (long)(deadline_ns % 1000000000u);
    return timerfd_settime(fd, TFD_TIMER_ABSTIME, &spec, NULL);
}
int smp_ppoll(struct pollfd *fds, unsigned long count, int64_t timeout_ns) {
    if (timeout_ns < 0) return ppoll(fds, (nfds_t)count, NULL, NULL);
    struct timespec timeout = {(time_t)(timeout_ns / 1000000000), (long)(timeout_ns % 1000000000)};
    return ppoll(fds, (nfds_t)count, &timeout, NULL);
}
// pthread_setname_np is a GNU extension; names of at most 15 bytes (longer ones give ERANGE).
int smp_thread_set_name(const char *name) { return pthread_setname_np(pthread_self(), name); }
int smp_thread_get_name(char *name, unsigned long size) { return pthread_getname_np(pthread_self(), name, size); }
// pthread_setaffinity_np and sched_getaffinity are GNU extensions (cpu_set_t: CPU_SETSIZE 1024).
int smp_thread_pin_cpu(int cpu) {
    if (cpu < 0 || cpu >= CPU_SETSIZE) return EINVAL;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}
int smp_thread_cpus(int *cpus, int capacity) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return -1;
    int count = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && count < capacity; cpu++) {
        if (CPU_ISSET(cpu, &set)) cpus[count++] = cpu;
    }
    return count;
}

int smp_pty_open(char *slave, unsigned long size) {
    int fd = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) return -1;
    if (grantpt(fd) != 0 || unlockpt(fd) != 0 || ptsname_r(fd, slave, size) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

// MARK: - GPIO
//
// Only the v1 header defines GPIOD_LINE_BULK_MAX_LINES: test the header, not pkg-config's version
// (a v2 library can sit next to a v1 .pc file and the reverse). SMP_GPIO_API_VERSION is also what
// scripts/check-gpiod-v2.sh reads back (`cc -E -dM`) to report which API a compile used.
#ifdef GPIOD_LINE_BULK_MAX_LINES
#define SMP_GPIO_API_VERSION 1
#else
#define SMP_GPIO_API_VERSION 2
#endif

int smp_gpio_api_version(void) { return SMP_GPIO_API_VERSION; }
int smp_gpio_kernel_debounce(void) { return SMP_GPIO_API_VERSION == 2; }

struct smp_gpio_chip {
    int references;
    struct gpiod_chip *chip;
};

static void chip_release(smp_gpio_chip *chip) {
    if (--chip->references > 0) return;
    gpiod_chip_close(chip->chip);
    free(chip);
}

// The same call in v1 and v2.
smp_gpio_chip *smp_gpio_chip_open(const char *path) {
    struct gpiod_chip *handle = gpiod_chip_open(path);
    if (!handle) return NULL;
    smp_gpio_chip *chip = calloc(1, sizeof *chip);
    if (!chip) {
        gpiod_chip_close(handle);
        errno = ENOMEM;
        return NULL;
    }
    chip->references = 1;
    chip->chip = handle;
    return chip;
}

void smp_gpio_chip_close(smp_gpio_chip *chip) {
    if (chip) chip_release(chip);
}

/// Makes `fd` non-blocking so that reading an empty event queue returns EAGAIN.
static int set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return -1;
    return fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

/// Orders one batch of events by timestamp (insertion sort: a batch is a few events).
static void sort_events(struct smp_gpio_edge_event *events, unsigned int count) {
    for (unsigned int i = 1; i < count; i++) {
        struct smp_gpio_edge_event event = events[i];
        unsigned int j = i;
        while (j > 0 && events[j - 1].timestamp_ns > event.timestamp_ns) {
            events[j] = events[j - 1];
            j--;
        }
        events[j] = event;
    }
}

static int valid_count(unsigned int count) {
    if (count == 0 || count > SMP_GPIO_MAX_LINES) {
        errno = EINVAL;
        return 0;
    }
    return 1;
}

#if SMP_GPIO_API_VERSION == 1
// ---------------------------------------------------------------------------------------------
// libgpiod v1 (1.6.x). Each event line has its own fd (uAPI v1 line-event requests are per line),
// so an input request gathers them in an epoll set: one descriptor for the caller to watch. Each
// line is requested on its own because polarity and bias differ from line to line (v1 requests
// event lines one by one internally anyway). No debounce in v1: the caller debounces.
#include <sys/epoll.h>

struct smp_gpio_request {
    smp_gpio_chip *chip;
    unsigned int count;
    int is_input;
    int epoll_fd;
    struct gpiod_line *lines[SMP_GPIO_MAX_LINES];
};

int smp_gpio_chip_num_lines(smp_gpio_chip *chip) { return (int)gpiod_chip_num_lines(chip->chip); }

static int v1_flags(const struct smp_gpio_line_config *line, int with_bias) {
    int flags = line->active_low ? GPIOD_LINE_REQUEST_FLAG_ACTIVE_LOW : 0;
    if (with_bias) {
        switch (line->bias) {
        case SMP_GPIO_BIAS_DISABLED: flags |= GPIOD_LINE_REQUEST_FLAG_BIAS_DISABLE; break;
        case SMP_GPIO_BIAS_PULL_UP: flags |= GPIOD_LINE_REQUEST_FLAG_BIAS_PULL_UP; break;
        case SMP_GPIO_BIAS_PULL_DOWN: flags |= GPIOD_LINE_REQUEST_FLAG_BIAS_PULL_DOWN; break;
        default: break;
        }
    }
    return flags;
}

/// Releases the first `requested` lines and the request itself; keeps errno.
static void v1_abandon(smp_gpio_request *request, unsigned int requested) {
    int saved = errno;
    for (unsigned int i = 0; i < requested; i++) gpiod_line_release(request->lines[i]);
    if (request->epoll_fd >= 0) close(request->epoll_fd);
    chip_release(request->chip);
    free(request);
    errno = saved;
}

static smp_gpio_request *v1_request(smp_gpio_chip *chip, const char *consumer,
                                    const struct smp_gpio_line_config *lines, unsigned int count, int is_input) {
    if (!valid_count(count)) return NULL;
    smp_gpio_request *request = calloc(1, sizeof *request);
    if (!request) {
        errno = ENOMEM;
        return NULL;
    }
    chip->references++;
    request->chip = chip;
    request->count = count;
    request->is_input = is_input;
    request->epoll_fd = -1;
    if (is_input) {
        request->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
        if (request->epoll_fd < 0) {
            v1_abandon(request, 0);
            return NULL;
        }
    }
    for (unsigned int i = 0; i < count; i++) {
        struct gpiod_line *line = gpiod_chip_get_line(chip->chip, lines[i].offset);
        if (!line) {
            v1_abandon(request, i);
            return NULL;
        }
        int result = is_input
            ? gpiod_line_request_both_edges_events_flags(line, consumer, v1_flags(&lines[i], 1))
            : gpiod_line_request_output_flags(line, consumer, v1_flags(&lines[i], 0), lines[i].initial_value ? 1 : 0);
        if (result < 0) {
            v1_abandon(request, i);
            return NULL;
        }
        request->lines[i] = line;
        if (is_input) {
            int fd = gpiod_line_event_get_fd(line);
            struct epoll_event watch = { .events = EPOLLIN, .data.u32 = i };
            if (fd < 0 || set_nonblocking(fd) < 0 || epoll_ctl(request->epoll_fd, EPOLL_CTL_ADD, fd, &watch) < 0) {
                v1_abandon(request, i + 1);
                return NULL;
            }
        }
    }
    return request;
}

smp_gpio_request *smp_gpio_request_inputs(smp_gpio_chip *chip, const char *consumer,
                                          const struct smp_gpio_line_config *lines, unsigned int count) {
    return v1_request(chip, consumer, lines, count, 1);
}

smp_gpio_request *smp_gpio_request_outputs(smp_gpio_chip *chip, const char *consumer,
                                           const struct smp_gpio_line_config *lines, unsigned int count) {
    return v1_request(chip, consumer, lines, count, 0);
}

int smp_gpio_request_fd(smp_gpio_request *request) { return request->is_input ? request->epoll_fd : -1; }

int smp_gpio_read_edge_events(smp_gpio_request *request, struct smp_gpio_edge_event *events, unsigned int capacity) {
    if (!request->is_input) {
        errno = EINVAL;
        return -1;
    }
    struct epoll_event ready[SMP_GPIO_MAX_LINES];
    int readyCount = epoll_wait(request->epoll_fd, ready, (int)request->count, 0);
    if (readyCount < 0) return -1;
    unsigned int filled = 0;
    for (int k = 0; k < readyCount && filled < capacity; k++) {
        unsigned int index = ready[k].data.u32;
        int fd = gpiod_line_event_get_fd(request->lines[index]);
        struct gpiod_line_event batch[16];
        unsigned int wanted = capacity - filled < 16 ? capacity - filled : 16;
        int got = gpiod_line_event_read_fd_multiple(fd, batch, wanted);
        if (got < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) continue;
            return -1;
        }
        for (int e = 0; e < got; e++) {
            events[filled].timestamp_ns =
                (uint64_t)batch[e].ts.tv_sec * 1000000000u + (uint64_t)batch[e].ts.tv_nsec;
            events[filled].line_offset = gpiod_line_offset(request->lines[index]);
            events[filled].rising = batch[e].event_type == GPIOD_LINE_EVENT_RISING_EDGE;
            filled++;
        }
    }
    sort_events(events, filled);
    return (int)filled;
}

int smp_gpio_get_value(smp_gpio_request *request, unsigned int index) {
    if (index >= request->count) {
        errno = EINVAL;
        return -1;
    }
    return gpiod_line_get_value(request->lines[index]);
}

int smp_gpio_set_value(smp_gpio_request *request, unsigned int index, int value) {
    if (index >= request->count || request->is_input) {
        errno = EINVAL;
        return -1;
    }
    return gpiod_line_set_value(request->lines[index], value ? 1 : 0);
}

void smp_gpio_request_release(smp_gpio_request *request) {
    if (!request) return;
    v1_abandon(request, request->count);
}

#else
// ---------------------------------------------------------------------------------------------
// libgpiod v2 (2.x): one request per set of lines, one fd, per-line settings, kernel debounce.
// The request's fd is made non-blocking so that reading with nothing pending returns EAGAIN.

struct smp_gpio_request {
    smp_gpio_chip *chip;
    unsigned int count;
    int is_input;
    struct gpiod_line_request *request;
    struct gpiod_edge_event_buffer *buffer;
    unsigned int offsets[SMP_GPIO_MAX_LINES];
};

int smp_gpio_chip_num_lines(smp_gpio_chip *chip) {
    struct gpiod_chip_info *info = gpiod_chip_get_info(chip->chip);
    if (!info) return -1;
    size_t count = gpiod_chip_info_get_num_lines(info);
    gpiod_chip_info_free(info);
    return (int)count;
}

static enum gpiod_line_bias v2_bias(int32_t bias) {
    switch (bias) {
    case SMP_GPIO_BIAS_DISABLED: return GPIOD_LINE_BIAS_DISABLED;
    case SMP_GPIO_BIAS_PULL_UP: return GPIOD_LINE_BIAS_PULL_UP;
    case SMP_GPIO_BIAS_PULL_DOWN: return GPIOD_LINE_BIAS_PULL_DOWN;
    default: return GPIOD_LINE_BIAS_AS_IS;
    }
}

static int v2_configure(struct gpiod_line_settings *settings, const struct smp_gpio_line_config *line, int is_input) {
    gpiod_line_settings_reset(settings);
    gpiod_line_settings_set_active_low(settings, line->active_low != 0);
    if (is_input) {
        if (gpiod_line_settings_set_direction(settings, GPIOD_LINE_DIRECTION_INPUT) < 0) return -1;
        if (gpiod_line_settings_set_edge_detection(settings, GPIOD_LINE_EDGE_BOTH) < 0) return -1;
        if (gpiod_line_settings_set_bias(settings, v2_bias(line->bias)) < 0) return -1;
        if (gpiod_line_settings_set_event_clock(settings, GPIOD_LINE_CLOCK_MONOTONIC) < 0) return -1;
        gpiod_line_settings_set_debounce_period_us(settings, line->debounce_us);
    } else {
        if (gpiod_line_settings_set_direction(settings, GPIOD_LINE_DIRECTION_OUTPUT) < 0) return -1;
        enum gpiod_line_value value = line->initial_value ? GPIOD_LINE_VALUE_ACTIVE : GPIOD_LINE_VALUE_INACTIVE;
        if (gpiod_line_settings_set_output_value(settings, value) < 0) return -1;
    }
    return 0;
}

static smp_gpio_request *v2_request(smp_gpio_chip *chip, const char *consumer,
                                    const struct smp_gpio_line_config *lines, unsigned int count, int is_input) {
    if (!valid_count(count)) return NULL;
    smp_gpio_request *request = calloc(1, sizeof *request);
    struct gpiod_line_settings *settings = gpiod_line_settings_new();
    struct gpiod_line_config *line_config = gpiod_line_config_new();
    struct gpiod_request_config *request_config = gpiod_request_config_new();
    int ok = request && settings && line_config && request_config;
    if (!ok) errno = ENOMEM;
    for (unsigned int i = 0; ok && i < count; i++) {
        request->offsets[i] = lines[i].offset;
        ok = v2_configure(settings, &lines[i], is_input) == 0
            && gpiod_line_config_add_line_settings(line_config, &request->offsets[i], 1, settings) == 0;
    }
    if (ok) {
        gpiod_request_config_set_consumer(request_config, consumer);
        request->request = gpiod_chip_request_lines(chip->chip, request_config, line_config);
        ok = request->request != NULL;
    }
    if (ok && is_input) {
        request->buffer = gpiod_edge_event_buffer_new(SMP_GPIO_MAX_LINES);
        ok = request->buffer != NULL && set_nonblocking(gpiod_line_request_get_fd(request->request)) == 0;
        if (!request->buffer) errno = ENOMEM;
    }
    int saved = errno;
    if (request_config) gpiod_request_config_free(request_config);
    if (line_config) gpiod_line_config_free(line_config);
    if (settings) gpiod_line_settings_free(settings);
    if (!ok) {
        if (request) {
            if (request->buffer) gpiod_edge_event_buffer_free(request->buffer);
            if (request->request) gpiod_line_request_release(request->request);
            free(request);
        }
        errno = saved;
        return NULL;
    }
    chip->references++;
    request->chip = chip;
    request->count = count;
    request->is_input = is_input;
    errno = saved;
    return request;
}

smp_gpio_request *smp_gpio_request_inputs(smp_gpio_chip *chip, const char *consumer,
                                          const struct smp_gpio_line_config *lines, unsigned int count) {
    return v2_request(chip, consumer, lines, count, 1);
}

smp_gpio_request *smp_gpio_request_outputs(smp_gpio_chip *chip, const char *consumer,
                                           const struct smp_gpio_line_config *lines, unsigned int count) {
    return v2_request(chip, consumer, lines, count, 0);
}

int smp_gpio_request_fd(smp_gpio_request *request) {
    return request->is_input ? gpiod_line_request_get_fd(request->request) : -1;
}

int smp_gpio_read_edge_events(smp_gpio_request *request, struct smp_gpio_edge_event *events, unsigned int capacity) {
    if (!request->is_input) {
        errno = EINVAL;
        return -1;
    }
    size_t wanted = capacity < SMP_GPIO_MAX_LINES ? capacity : SMP_GPIO_MAX_LINES;
    if (wanted == 0) return 0;
    int got = gpiod_line_request_read_edge_events(request->request, request->buffer, wanted);
    if (got < 0) return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
    for (int e = 0; e < got; e++) {
        struct gpiod_edge_event *event = gpiod_edge_event_buffer_get_event(request->buffer, (unsigned long)e);
        events[e].timestamp_ns = gpiod_edge_event_get_timestamp_ns(event);
        events[e].line_offset = gpiod_edge_event_get_line_offset(event);
        events[e].rising = gpiod_edge_event_get_event_type(event) == GPIOD_EDGE_EVENT_RISING_EDGE;
    }
    sort_events(events, (unsigned int)got);
    return got;
}

int smp_gpio_get_value(smp_gpio_request *request, unsigned int index) {
    if (index >= request->count) {
        errno = EINVAL;
        return -1;
    }
    enum gpiod_line_value value = gpiod_line_request_get_value(request->request, request->offsets[index]);
    if (value == GPIOD_LINE_VALUE_ERROR) return -1;
    return value == GPIOD_LINE_VALUE_ACTIVE;
}

int smp_gpio_set_value(smp_gpio_request *request, unsigned int index, int value) {
    if (index >= request->count || request->is_input) {
        errno = EINVAL;
        return -1;
    }
    return gpiod_line_request_set_value(request->request, request->offsets[index],
                                        value ? GPIOD_LINE_VALUE_ACTIVE : GPIOD_LINE_VALUE_INACTIVE);
}

void smp_gpio_request_release(smp_gpio_request *request) {
    if (!request) return;
    if (request->buffer) gpiod_edge_event_buffer_free(request->buffer);
    gpiod_line_request_release(request->request);
    chip_release(request->chip);
    free(request);
}
#endif

int smp_fs_type(int fd, long *type) {
    struct statfs info;
    if (fstatfs(fd, &info) != 0) return -1;
    *type = (long)info.f_type;
    return 0;
}
