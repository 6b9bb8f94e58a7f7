import FirmwareCore

/// Entry point (Support.c's reset handler calls `main`). The QEMU board's semihosting command line
/// (`qemu-system-arm -append "…"`) may set `time-scale-percent=N` (physics at N % of real time;
/// 100 when absent, as on a real applicator) and `entropy=N` (the boot id's source; a real board
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
        configuration.timeScale = Double(percent) / 100
        configuration.bootIDEntropy = entropy
        var application = Application(board: board, configuration: configuration)
        application.run()
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
