#define _GNU_SOURCE
#include "bench_support.h"
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

int bench_make_raw(int fd) {
    struct termios tio;
    if (tcgetattr(fd, &tio) != 0) return -errno;
    cfmakeraw(&tio);
    tio.c_cflag |= CLOCAL | CREAD;
    tio.c_cflag &= ~HUPCL;
    tio.c_cc[VMIN] = 1;
    tio.c_cc[VTIME] = 0;
    if (tcsetattr(fd, TCSANOW, &tio) != 0) return -errno;
    return 0;
}

int bench_set_nonblocking(int fd, int nonblocking) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return -errno;
    flags = nonblocking ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
    if (fcntl(fd, F_SETFL, flags) != 0) return -errno;
    return 0;
}

int bench_open_pty(int *master, int *slave, char *path, size_t path_len, int blocking) {
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (m < 0) return -errno;
    if (grantpt(m) != 0 || unlockpt(m) != 0) { int e = errno; close(m); return -e; }
    if (ptsname_r(m, path, path_len) != 0) { int e = errno; close(m); return -e; }
    int flags = O_RDWR | O_NOCTTY | O_CLOEXEC | (blocking ? 0 : O_NONBLOCK);
    int s = open(path, flags);
    if (s < 0) { int e = errno; close(m); return -e; }
    int rc = bench_make_raw(s);
    if (rc == 0 && !blocking) rc = bench_set_nonblocking(m, 1);
    if (rc != 0) { close(s); close(m); return rc; }
    *master = m;
    *slave = s;
    return 0;
}

uint64_t bench_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void bench_sleep_until_ns(uint64_t deadline_ns) {
    struct timespec ts = { .tv_sec = (time_t)(deadline_ns / 1000000000ull),
                           .tv_nsec = (long)(deadline_ns % 1000000000ull) };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {}
}

static uint64_t tv_ns(struct timeval tv) {
    return (uint64_t)tv.tv_sec * 1000000000ull + (uint64_t)tv.tv_usec * 1000ull;
}

void bench_process_cpu_ns(uint64_t *user_ns, uint64_t *system_ns) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *user_ns = tv_ns(ru.ru_utime);
    *system_ns = tv_ns(ru.ru_stime);
}

uint64_t bench_thread_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int bench_pin_thread_to_lowest_cpu(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return -errno;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &set)) continue;
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        int status = pthread_setaffinity_np(pthread_self(), sizeof one, &one);
        return status == 0 ? cpu : -status;
    }
    return -EINVAL;
}

long bench_max_rss_kib(int children) {
    struct rusage ru;
    getrusage(children ? RUSAGE_CHILDREN : RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

void bench_context_switches(long *voluntary, long *involuntary) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *voluntary = ru.ru_nvcsw;
    *involuntary = ru.ru_nivcsw;
}

#define RELAY_RING (1u << 20)

int bench_relay(int in_fd, int out_fd, double bytes_per_second, uint64_t granularity_ns,
                volatile int *stop, bench_relay_stats *stats) {
    unsigned char *ring = malloc(RELAY_RING);
    if (!ring) return -ENOMEM;
    size_t head = 0, count = 0;
    const int paced = bytes_per_second > 0;
    const double per_byte = paced ? 1e9 / bytes_per_second : 0;
    size_t chunk = paced ? (size_t)((double)granularity_ns / per_byte) : RELAY_RING;
    if (chunk < 1) chunk = 1;
    double next_done = 0;   /* when the byte at `head` has left the wire (valid while count > 0) */
    double busy_from = 0;
    uint64_t last_read = 0;
    int rc = 0;
    memset(stats, 0, sizeof *stats);
    while (!*stop) {
        uint64_t now = bench_now_ns();
        /* Hand over every byte that has left the wire by now. */
        if (count > 0) {
            size_t due = count;
            if (paced) {
                due = (double)now >= next_done ? (size_t)(((double)now - next_done) / per_byte) + 1 : 0;
                if (due > count) due = count;
            }
            while (due > 0) {
                size_t contiguous = RELAY_RING - head < due ? RELAY_RING - head : due;
                ssize_t n = write(out_fd, ring + head, contiguous);
                if (n < 0) {
                    if (errno == EINTR) continue;
                    if (errno == EAGAIN) break;   /* receiver full: try again at the next turn */
                    rc = -errno;
                    goto done;
                }
                stats->writes++;
                stats->bytes += (uint64_t)n;
                head = (head + (size_t)n) % RELAY_RING;
                count -= (size_t)n;
                due -= (size_t)n;
                if (paced) next_done += per_byte * (double)n;
            }
            if (count == 0 && paced) stats->busy_ns += (uint64_t)(next_done - per_byte - busy_from);
        }
        /* Wait for input, or until the next chunk has left the wire. */
        int64_t wait_ns = 20000000;
        if (count > 0) {
            if (!paced) {
                wait_ns = 100000;    /* receiver was full */
            } else {
                size_t n = count < chunk ? count : chunk;
                double deadline = next_done + per_byte * (double)(n - 1);
                wait_ns = (int64_t)(deadline - (double)bench_now_ns());
                if (wait_ns < 0) wait_ns = 0;
            }
        }
        struct pollfd p = { .fd = in_fd, .events = POLLIN };
        struct timespec ts = { .tv_sec = wait_ns / 1000000000, .tv_nsec = wait_ns % 1000000000 };
        int ready = ppoll(&p, 1, &ts, NULL);
        if (ready < 0) {
            if (errno == EINTR) continue;
            rc = -errno;
            break;
        }
        if (ready == 0) continue;
        if (p.revents & (POLLERR | POLLNVAL)) { rc = -EIO; break; }
        if (p.revents & (POLLIN | POLLHUP)) {
            for (;;) {
                if (count == RELAY_RING) break;
                size_t tail = (head + count) % RELAY_RING;
                size_t space = tail >= head ? RELAY_RING - tail : head - tail;
                if (space > RELAY_RING - count) space = RELAY_RING - count;
                ssize_t n = read(in_fd, ring + tail, space);
                if (n < 0) {
                    if (errno == EINTR) continue;
                    if (errno == EAGAIN) break;
                    if (errno == EIO) goto done;   /* pty: the other side closed */
                    rc = -errno;
                    goto done;
                }
                if (n == 0) goto done;
                {
                    uint64_t t = bench_now_ns();
                    if (last_read != 0 && t - last_read > stats->max_gap_ns) stats->max_gap_ns = t - last_read;
                    last_read = t;
                }
                if (count == 0 && paced) {
                    double t = (double)bench_now_ns();
                    next_done = t + per_byte;
                    busy_from = t;
                }
                count += (size_t)n;
                if (count > stats->max_backlog) stats->max_backlog = count;
            }
        }
    }
done:
    free(ring);
    return rc;
}

// MARK: - Wake-up cost (the CPU row's anchor)

typedef struct {
    int fd;
    volatile int stop;
    uint64_t reads;
    uint64_t cpu_ns;
} wake_reader;

static void *wake_reader_main(void *context) {
    wake_reader *reader = context;
    char buffer[256];
    uint64_t start = bench_thread_cpu_ns();
    while (!reader->stop) {
        struct pollfd entry = {reader->fd, POLLIN, 0};
        int ready = poll(&entry, 1, 50);
        if (ready < 0 && errno != EINTR) break;
        if (ready <= 0) continue;
        ssize_t count = read(reader->fd, buffer, sizeof buffer);
        if (count > 0) reader->reads++;
        else if (count == 0 || (errno != EAGAIN && errno != EINTR)) break;
    }
    reader->cpu_ns = bench_thread_cpu_ns() - start;
    return NULL;
}

int bench_wake_cost(int iterations, uint64_t interval_ns, int frame_bytes,
                    double *writer_ns_per_iteration, double *reader_ns_per_read) {
    int master, slave;
    char path[64];
    int status = bench_open_pty(&master, &slave, path, sizeof path, 0);
    if (status != 0) return status;
    wake_reader reader = {slave, 0, 0, 0};
    pthread_t thread;
    int started = frame_bytes > 0 ? pthread_create(&thread, NULL, wake_reader_main, &reader) : 0;
    if (started != 0) {
        close(master);
        close(slave);
        return -started;
    }
    char frame[64] = {0};
    if (frame_bytes > (int)sizeof frame) frame_bytes = (int)sizeof frame;
    uint64_t deadline = bench_now_ns();
    uint64_t start = bench_thread_cpu_ns();
    for (int i = 0; i < iterations; i++) {
        deadline += interval_ns;
        // Times out at an absolute deadline, as the link's thread waits for its heartbeat.
        struct pollfd entry = {master, 0, 0};
        uint64_t now = bench_now_ns();
        uint64_t left = deadline > now ? deadline - now : 0;
        struct timespec timeout = {(time_t)(left / 1000000000ull), (long)(left % 1000000000ull)};
        ppoll(&entry, 1, &timeout, NULL);
        if (frame_bytes > 0 && write(master, frame, (size_t)frame_bytes) < 0 && errno != EAGAIN) break;
    }
    *writer_ns_per_iteration = (double)(bench_thread_cpu_ns() - start) / iterations;
    if (frame_bytes > 0) {
        bench_sleep_until_ns(bench_now_ns() + 100000000ull);
        reader.stop = 1;
        pthread_join(thread, NULL);
        *reader_ns_per_read = reader.reads > 0 ? (double)reader.cpu_ns / (double)reader.reads : 0;
    } else {
        *reader_ns_per_read = 0;
    }
    close(master);
    close(slave);
    return 0;
}
