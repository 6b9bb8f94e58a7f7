import FirmwareCore
import FirmwareProtocol

/// Entry point (Support.c's reset handler calls `main`). The QEMU board's semihosting command line
/// (`qemu-system-arm -append "…"`) may set `time-scale-percent=N` (physics at N % of real time,
/// N one of 50, 25, 20, 10, 5, 2, 1; otherwise real time, as on a real applicator) and `entropy=N` (the boot id's source; a real board
/// uses its hardware RNG or unique id and a boot counter).
@main
struct FirmwareMain {
    static func main() {
        let board = QEMUBoard()
        var configuration = FirmwareConfiguration()
        configuration.firmwareID = "smp-mps2 1.0"
        var percent: UInt64 = 100
        var entropy: UInt64 = smp_cycles()
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: 96) { buffer in
            guard smp_semihost_cmdline(buffer.baseAddress!, 95) == 0 else { return }
            buffer[95] = 0
            if let value = CommandLine.value(of: "time-scale-percent=", in: buffer) { percent = value }
            if let value = CommandLine.value(of: "entropy=", in: buffer) { entropy ^= value }
        }
        configuration.timeScale = timeScale(percent: percent)
        configuration.bootIDEntropy = entropy
        var application = Application(board: board, configuration: configuration)
        application.run()
    }
}

/// The physics time scale for `time-scale-percent=N`: literals only, so no soft-float operation is
/// linked for it (the core reads a `Double` from its bits). Other values run in real time.
private func timeScale(percent: UInt64) -> Double {
    switch percent {
    case 50: 0.5
    case 25: 0.25
    case 20: 0.2
    case 10: 0.1
    case 5: 0.05
    case 2: 0.02
    case 1: 0.01
    default: 1
    }
}

/// `key=NUMBER` in a NUL-terminated, space-separated command line.
enum CommandLine {
    static func value(of key: StaticString, in line: UnsafeMutableBufferPointer<CChar>) -> UInt64? {
        let keyLength = key.utf8CodeUnitCount
        var start = 0
        while start < line.count, line[start] != 0 {
            var matches = true
            for i in 0..<keyLength where start + i >= line.count || UInt8(bitPattern: line[start + i]) != key.utf8Start[i] {
                matches = false
                break
            }
            if matches {
                var value: UInt64 = 0, i = start + keyLength, digits = 0
                while i < line.count, line[i] >= 0x30, line[i] <= 0x39 {
                    value = value &* 10 &+ UInt64(line[i] - 0x30)
                    i += 1
                    digits += 1
                }
                return digits > 0 ? value : nil
            }
            while start < line.count, line[start] != 0, line[start] != 0x20 { start += 1 }
            while start < line.count, line[start] == 0x20 { start += 1 }
        }
        return nil
    }
}
