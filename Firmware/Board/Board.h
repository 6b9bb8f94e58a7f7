// The C half of the board support (Firmware/Board/Support.c), imported into the Swift application
// as its bridging header: what Swift cannot express on a Cortex-M without a runtime (the vector
// table, the reset path, `wfi`, interrupt masking, semihosting calls, the allocator's counters).
#pragma once
#include <stdint.h>
#include <stddef.h>

// ---- Interrupts, sleep
void smp_irq_disable(void);
void smp_irq_enable(void);
/// Sleeps until an interrupt is pending (also when masked: call with interrupts disabled to avoid
/// the lost-wake-up race, then enable them).
void smp_wait_for_interrupt(void);
void smp_nvic_enable(uint32_t irq);

// ---- Volatile access to RAM shared with interrupt handlers (Swift has no `volatile`)
static inline uint32_t smp_load_u32(const volatile uint32_t *p) { return *p; }
static inline void smp_store_u32(volatile uint32_t *p, uint32_t v) { *p = v; }
static inline uint8_t smp_load_u8(const volatile uint8_t *p) { return *p; }
static inline void smp_store_u8(volatile uint8_t *p, uint8_t v) { *p = v; }
/// Orders the ring's data accesses against its index updates (compiler and memory).
static inline void smp_barrier(void) { __asm__ volatile("dmb" ::: "memory"); }

// ---- UART receive ring (filled by the RX interrupt in Swift, drained by the main loop)
#define SMP_RX_RING_SIZE 512u
extern volatile uint8_t smp_rx_ring[SMP_RX_RING_SIZE];
extern volatile uint32_t smp_rx_head;      // written by the interrupt only
extern volatile uint32_t smp_rx_tail;      // written by the main loop only
extern volatile uint32_t smp_rx_overruns;  // bytes lost: ring full or the UART's own overrun
/// SysTick cycle stamp of the last 0x00 (frame delimiter) received, for latency figures.
extern volatile uint64_t smp_rx_last_delimiter_cycles;

// ---- Clock: SysTick at the core clock, a 1 ms interrupt counting milliseconds
void smp_systick_start(uint32_t cycles_per_tick);
/// Core clock cycles since smp_systick_start (monotonic, 64-bit).
uint64_t smp_cycles(void);

// ---- Allocator statistics (newlib-nano malloc over smp's _sbrk; counters by -Wl,--wrap)
uint32_t smp_heap_high_water(void);   // bytes of heap ever taken from _sbrk
uint32_t smp_heap_limit(void);        // bytes available to the heap
uint32_t smp_alloc_count(void);       // malloc + posix_memalign + calloc + realloc calls
uint32_t smp_stack_high_water(void);  // bytes of stack ever used (painted at reset)
uint32_t smp_static_ram(void);        // .data + .bss

// ---- Semihosting (QEMU -semihosting-config enable=on; a debugger on real hardware)
void smp_semihost_write(const char *text);   // SYS_WRITE0: a NUL-terminated string to the host
int32_t smp_semihost_cmdline(char *buffer, uint32_t size);  // SYS_GET_CMDLINE: 0 on success
void smp_semihost_exit(uint32_t code) __attribute__((noreturn));
