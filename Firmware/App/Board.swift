/// What the firmware needs from the hardware it runs on, and nothing more. The QEMU board
/// (`QEMUBoard`, mps2-an386) is the first implementation; docs/firmware.md says what a port to a
/// real part must provide. Used as a generic constraint, never as an existential (Embedded Swift
/// has no non-class `any P`).
protocol Board {
    /// Moves received bytes (in order, none lost) from the UART's receive buffer into `buffer`;
    /// returns how many. Never blocks.
    mutating func receive(into buffer: UnsafeMutableBufferPointer<UInt8>) -> Int
    /// Sends `bytes` on the UART, in order; may block until the transmitter takes them.
    mutating func transmit(_ bytes: UnsafeBufferPointer<UInt8>)
    /// Monotonic time since boot, µs.
    func microseconds() -> UInt64
    /// Core clock cycles since boot (for latency figures only).
    func cycles() -> UInt64
    /// Needle power output: false must de-energise the needle drive at once.
    mutating func setNeedlePower(_ on: Bool)
    /// The applicator's own e-stop button (true = pressed).
    func estopPressed() -> Bool
    /// The skin-contact sensor (true = in contact).
    func skinContact() -> Bool
    /// Sleeps until an interrupt (a received byte, the clock tick) unless bytes are waiting.
    mutating func idle()
    /// A diagnostic line for the test rig (semihosting on QEMU; nothing or a debug UART elsewhere).
    /// `text` is NUL-terminated.
    func trace(_ text: UnsafePointer<CChar>)
    /// Bytes the receive path lost (ring full, UART overrun) since boot.
    func receiveOverruns() -> UInt32
}
