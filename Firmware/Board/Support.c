// Board support for QEMU mps2-an386 that is not Swift: vector table, reset, SysTick, the
// allocator hooks and semihosting. Built with clang for thumbv7em, linked against newlib-nano
// (Debian's libnewlib-arm-none-eabi) for malloc/free/memalign and mem*, and libgcc for 64-bit
// division; the firmware core uses no floating point at run time.
#include "Board.h"

extern uint32_t __data_start, __data_end, __data_load, __bss_start, __bss_end;
extern uint8_t __heap_start, __stack_limit, __stack_top;
extern int main(int, char **);
void smp_uart0_rx_interrupt(void);  // Swift (QEMUBoard.swift)

volatile uint8_t smp_rx_ring[SMP_RX_RING_SIZE];
volatile uint32_t smp_rx_head, smp_rx_tail, smp_rx_overruns;
volatile uint64_t smp_rx_last_delimiter_cycles;

#define STACK_PAINT 0x5AA5F00Du

// ---- Reset and vectors ------------------------------------------------------------------------

__attribute__((noreturn)) void smp_reset_handler(void) {
    uint32_t *src = &__data_load, *dst = &__data_start;
    while (dst < &__data_end) *dst++ = *src++;
    for (dst = &__bss_start; dst < &__bss_end; ) *dst++ = 0;
    // Paint the stack below the current frame so its high-water mark can be measured.
    uint32_t *sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (uint32_t *p = (uint32_t *)&__stack_limit; p < sp - 16; ) *p++ = STACK_PAINT;
    int status = main(0, 0);
    smp_semihost_exit((uint32_t)status);
}

// A fault (a Swift trap is a `udf`, escalated to HardFault) ends the run: the stacked PC and LR
// go to the diagnostic channel, then semihosting exit 70. Real hardware would reset here with
// the needle power off (it is the reset state of the output).
void smp_fault_report(const uint32_t *frame) {
    static const char hex[] = "0123456789abcdef";
    char text[] = "{\"event\":\"fault\",\"pc\":\"0x00000000\",\"lr\":\"0x00000000\"}\n";
    for (int i = 0; i < 8; i++) {
        text[25 + i] = hex[(frame[6] >> (28 - 4 * i)) & 0xF];
        text[43 + i] = hex[(frame[5] >> (28 - 4 * i)) & 0xF];
    }
    smp_semihost_write(text);
    smp_semihost_exit(70);
}

__attribute__((naked)) static void smp_fault_handler(void) {
    __asm__ volatile("tst lr, #4\n ite eq\n mrseq r0, msp\n mrsne r0, psp\n b smp_fault_report");
}

static void smp_default_handler(void) {
    smp_semihost_write("{\"event\":\"unexpected_interrupt\"}\n");
    smp_semihost_exit(70);
}

static volatile uint32_t systick_ms;
static uint32_t systick_reload;

static void smp_systick_handler(void) { systick_ms++; }

typedef void (*vector_t)(void);
// 16 system exceptions, then the external interrupts of the AN386 (UART0 RX is IRQ 0).
__attribute__((section(".vectors"), used)) const vector_t smp_vectors[16 + 32] = {
    (vector_t)&__stack_top,
    smp_reset_handler,
    smp_fault_handler,     // NMI
    smp_fault_handler,     // HardFault
    smp_fault_handler,     // MemManage
    smp_fault_handler,     // BusFault
    smp_fault_handler,     // UsageFault
    0, 0, 0, 0,
    smp_default_handler,   // SVCall
    smp_default_handler,   // DebugMon
    0,
    smp_default_handler,   // PendSV
    smp_systick_handler,   // SysTick
    [16 + 0] = smp_uart0_rx_interrupt,
    [16 + 1 ... 16 + 31] = smp_default_handler,
};

// ---- Interrupts ------------------------------------------------------------------------------

void smp_irq_disable(void) { __asm__ volatile("cpsid i" ::: "memory"); }
void smp_irq_enable(void) { __asm__ volatile("cpsie i" ::: "memory"); }
void smp_wait_for_interrupt(void) { __asm__ volatile("dsb\n wfi\n isb" ::: "memory"); }
// Device interrupts at a lower priority (0x80) than SysTick (0), which may preempt them.
void smp_nvic_enable(uint32_t irq) {
    volatile uint8_t *ipr = (volatile uint8_t *)0xE000E400u;
    volatile uint32_t *iser = (volatile uint32_t *)0xE000E100u;
    ipr[irq] = 0x80;
    iser[irq / 32] = 1u << (irq % 32);
}

// ---- SysTick: 64-bit cycle counter ------------------------------------------------------------

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)

void smp_systick_start(uint32_t cycles_per_tick) {
    systick_reload = cycles_per_tick - 1;
    SYST_RVR = systick_reload;
    SYST_CVR = 0;
    SYST_CSR = 7;  // processor clock, interrupt, enable
}

// Called with interrupts enabled (SysTick has the highest priority, so it preempts the UART
// handler too): a tick between the two reads of the counter means read again.
uint64_t smp_cycles(void) {
    uint32_t ms, value;
    do {
        ms = systick_ms;
        value = SYST_CVR;
    } while (ms != systick_ms);
    return (uint64_t)ms * (systick_reload + 1) + (systick_reload - value);
}

// ---- Heap: newlib-nano malloc takes memory from _sbrk; the counters wrap its entry points -------

static uint8_t *heap_break = &__heap_start;
static uint32_t heap_high_water, alloc_count;

void *_sbrk(ptrdiff_t increment) {
    uint8_t *previous = heap_break;
    if (increment < 0 || heap_break + increment > &__stack_limit) return (void *)-1;
    heap_break += increment;
    uint32_t used = (uint32_t)(heap_break - &__heap_start);
    if (used > heap_high_water) heap_high_water = used;
    return previous;
}

void *__real_malloc(size_t);
void *__real_calloc(size_t, size_t);
void *__real_realloc(void *, size_t);
void *__wrap_malloc(size_t size) { alloc_count++; return __real_malloc(size); }
void *__wrap_calloc(size_t n, size_t size) { alloc_count++; return __real_calloc(n, size); }
void *__wrap_realloc(void *p, size_t size) { alloc_count++; return __real_realloc(p, size); }
// Embedded Swift allocates with posix_memalign; newlib-nano has memalign.
void *memalign(size_t, size_t);
int posix_memalign(void **out, size_t alignment, size_t size) {
    alloc_count++;
    if (alignment < sizeof(void *)) alignment = sizeof(void *);
    void *p = memalign(alignment, size);
    if (!p) return 12;  // ENOMEM
    *out = p;
    return 0;
}

uint32_t smp_heap_high_water(void) { return heap_high_water; }
uint32_t smp_heap_limit(void) { return (uint32_t)(&__stack_limit - &__heap_start); }
uint32_t smp_alloc_count(void) { return alloc_count; }
uint32_t smp_static_ram(void) { return (uint32_t)((uint8_t *)&__bss_end - (uint8_t *)&__data_start); }
uint32_t smp_stack_high_water(void) {
    const uint32_t *p = (const uint32_t *)&__stack_limit;
    while (p < (const uint32_t *)&__stack_top && *p == STACK_PAINT) p++;
    return (uint32_t)((const uint8_t *)&__stack_top - (const uint8_t *)p);
}

// Hashable's per-process seed (Set/Dictionary in FaultPlan). Nothing here is secret: a fixed
// sequence keeps the image deterministic.
void arc4random_buf(void *buffer, size_t count) {
    static uint32_t state = 0x9E3779B9u;
    uint8_t *out = buffer;
    for (size_t i = 0; i < count; i++) {
        state ^= state << 13; state ^= state >> 17; state ^= state << 5;
        out[i] = (uint8_t)state;
    }
}

// ---- Semihosting (ARM "bkpt 0xab" on M-profile) ---------------------------------------------

static int32_t semihost(uint32_t operation, const void *argument) {
    register uint32_t r0 __asm__("r0") = operation;
    register const void *r1 __asm__("r1") = argument;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return (int32_t)r0;
}

void smp_semihost_write(const char *text) { semihost(0x04, text); }

int32_t smp_semihost_cmdline(char *buffer, uint32_t size) {
    uint32_t block[2] = {(uint32_t)buffer, size};
    return semihost(0x15, block);
}

void smp_semihost_exit(uint32_t code) {
    // SYS_EXIT_EXTENDED is not in the v1 M-profile set QEMU answers for 32-bit: use
    // ADP_Stopped_ApplicationExit with the code in the second word.
    uint32_t block[2] = {0x20026, code};
    semihost(0x18, block);
    for (;;) {}
}
