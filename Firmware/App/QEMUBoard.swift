import _Volatile

/// QEMU's `mps2-an386` (ARM MPS2 FPGA image AN386: Cortex-M4 at 25 MHz): CMSDK APB UART0 at
/// 0x4000_4000 with its receive interrupt (IRQ 0) filling a ring buffer, SysTick as the clock, the
/// FPGA I/O block's LED 0 as the needle power output and its button 0 as the e-stop input. QEMU
/// models neither a skin-contact sensor nor a pressable button: contact always reads true, the
/// button always released (docs/firmware.md, "What is emulated").
struct QEMUBoard: Board {
    static let coreClockHertz: UInt32 = 25_000_000

    // CMSDK APB UART registers.
    private static let uartData = VolatileMappedRegister<UInt32>(unsafeBitPattern: 0x4000_4000)
    private static let uartState = VolatileMappedRegister<UInt32>(unsafeBitPattern: 0x4000_4004)
    private static let uartControl = VolatileMappedRegister<UInt32>(unsafeBitPattern: 0x4000_4008)
    private static let uartInterruptClear = VolatileMappedRegister<UInt32>(unsafeBitPattern: 0x4000_400C)
    private static let uartBaudDivider = VolatileMappedRegister<UInt32>(unsafeBitPattern: 0x4000_4010)
    private static let stateTxFull: UInt32 = 1 << 0
    private static let stateRxFull: UInt32 = 1 << 1
    private static let stateRxOverrun: UInt32 = 1 << 3
    private static let uart0RxIRQ: UInt32 = 0

    // FPGA I/O: LEDs (bit 0 = needle power), buttons (bit 0 = e-stop).
    private static let fpgaLED = VolatileMappedRegister<UInt32>(unsafeBitPattern: 0x4002_8000)
    private static let fpgaButton = VolatileMappedRegister<UInt32>(unsafeBitPattern: 0x4002_8008)

    private var needlePower = false

    init() {
        Self.fpgaLED.store(0)  // needle power off before anything else
        smp_systick_start(Self.coreClockHertz / 1000)  // 1 ms tick
        Self.uartBaudDivider.store(Self.coreClockHertz / 115_200)
        Self.uartInterruptClear.store(0xF)
        Self.uartControl.store(0b1011)  // TX enable, RX enable, RX interrupt enable
        smp_nvic_enable(Self.uart0RxIRQ)
        smp_irq_enable()
    }

    /// The UART0 receive interrupt: every byte the UART holds goes into the ring. The interrupt
    /// is cleared first, so a byte arriving during the loop raises it again.
    static func receiveInterrupt() {
        uartInterruptClear.store(2)
        var ring = ReceiveRing()
        while uartState.load() & stateRxFull != 0 {
            let byte = UInt8(truncatingIfNeeded: uartData.load())
            ring.push(byte)
            if byte == 0 { smp_rx_last_delimiter_cycles = smp_cycles() }
        }
        if uartState.load() & stateRxOverrun != 0 {
            uartState.store(stateRxOverrun)  // write 1 to clear
            ring.countOverrun()
        }
    }

    mutating func receive(into buffer: UnsafeMutableBufferPointer<UInt8>) -> Int {
        var ring = ReceiveRing()
        return ring.pop(into: buffer)
    }

    mutating func transmit(_ bytes: UnsafeBufferPointer<UInt8>) {
        for byte in bytes {
            while Self.uartState.load() & Self.stateTxFull != 0 {}
            Self.uartData.store(UInt32(byte))
        }
    }

    func microseconds() -> UInt64 { smp_cycles() / UInt64(Self.coreClockHertz / 1_000_000) }

    func cycles() -> UInt64 { smp_cycles() }

    mutating func setNeedlePower(_ on: Bool) {
        guard on != needlePower else { return }
        needlePower = on
        Self.fpgaLED.store(on ? 1 : 0)
    }

    func estopPressed() -> Bool { Self.fpgaButton.load() & 1 != 0 }

    func skinContact() -> Bool { true }

    mutating func idle() {
        smp_irq_disable()
        if ReceiveRing().isEmpty { smp_wait_for_interrupt() }
        smp_irq_enable()
    }

    func trace(_ text: UnsafePointer<CChar>) { smp_semihost_write(text) }

    func receiveOverruns() -> UInt32 { smp_load_u32(&smp_rx_overruns) }
}

@_cdecl("smp_uart0_rx_interrupt")
func uart0ReceiveInterrupt() {
    QEMUBoard.receiveInterrupt()
}

/// The single-producer (interrupt), single-consumer (main loop) receive ring in Support.c's
/// static storage: the interrupt only writes `head`, the main loop only `tail`; both are free
/// running counters, so full is `head − tail == size`. No allocation, no lock.
struct ReceiveRing {
    private static let size = UInt32(SMP_RX_RING_SIZE)

    var isEmpty: Bool { smp_load_u32(&smp_rx_head) == smp_load_u32(&smp_rx_tail) }

    mutating func push(_ byte: UInt8) {
        let head = smp_load_u32(&smp_rx_head)
        guard head &- smp_load_u32(&smp_rx_tail) < Self.size else {
            smp_store_u32(&smp_rx_overruns, smp_load_u32(&smp_rx_overruns) &+ 1)
            return
        }
        withUnsafeMutableBytes(of: &smp_rx_ring) { ring in
            ring[Int(head % Self.size)] = byte
        }
        smp_barrier()
        smp_store_u32(&smp_rx_head, head &+ 1)
    }

    mutating func countOverrun() {
        smp_store_u32(&smp_rx_overruns, smp_load_u32(&smp_rx_overruns) &+ 1)
    }

    mutating func pop(into buffer: UnsafeMutableBufferPointer<UInt8>) -> Int {
        let head = smp_load_u32(&smp_rx_head)
        var tail = smp_load_u32(&smp_rx_tail)
        var count = 0
        smp_barrier()
        withUnsafeBytes(of: &smp_rx_ring) { ring in
            while tail != head && count < buffer.count {
                buffer[count] = ring[Int(tail % Self.size)]
                tail &+= 1
                count += 1
            }
        }
        smp_barrier()
        smp_store_u32(&smp_rx_tail, tail)
        return count
    }
}
