/* Counts malloc/calloc/realloc/posix_memalign calls of a process and prints "MALLOCS n" to stderr
 * at exit: allocations per dot for docs/performance.md.
 *
 *   gcc -O2 -shared -fPIC -o /tmp/bench-malloc-count.so scripts/bench-malloc-count.c
 *   LD_PRELOAD=/tmp/bench-malloc-count.so Benchmarks/.build/release/smp-bench fullpath \
 *       --plan Benchmarks/plans/bench-5k.json --runs 1          # minus the same with --runs 0
 *
 * Child processes inherit LD_PRELOAD and print their own line. The harness reads the running
 * total itself through `bench_malloc_count` (dlsym) to count ARM → end only (issue 16).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern int __libc_posix_memalign(void **, size_t, size_t);
static atomic_ulong count;
void *malloc(size_t n) { atomic_fetch_add_explicit(&count, 1, memory_order_relaxed); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { atomic_fetch_add_explicit(&count, 1, memory_order_relaxed); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { atomic_fetch_add_explicit(&count, 1, memory_order_relaxed); return __libc_realloc(p, n); }
int posix_memalign(void **p, size_t a, size_t n) { atomic_fetch_add_explicit(&count, 1, memory_order_relaxed); void *r = __libc_malloc(n); (void)a; if (a > 16) { free(r); r = aligned_alloc(a, (n + a - 1) / a * a); } *p = r; return r ? 0 : 12; }
unsigned long bench_malloc_count(void) { return atomic_load_explicit(&count, memory_order_relaxed); }
__attribute__((destructor)) static void report(void) { char b[64]; int k = snprintf(b, sizeof b, "MALLOCS %lu\n", (unsigned long)count); write(2, b, k); }
