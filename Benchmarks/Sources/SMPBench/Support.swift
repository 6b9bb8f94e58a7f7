import CBenchSupport
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// A distribution of samples: what every figure is reported as.
struct Distribution: Sendable {
    var samples: [Double]

    init(_ samples: [Double]) { self.samples = samples.sorted() }

    func percentile(_ p: Double) -> Double {
        guard !samples.isEmpty else { return .nan }
        // Nearest rank, as HDR histograms and cyclictest report them.
        let rank = Int((p / 100 * Double(samples.count)).rounded(.up))
        return samples[min(max(rank, 1), samples.count) - 1]
    }

    var json: [String: Any] {
        guard !samples.isEmpty else { return ["n": 0] }
        let mean = samples.reduce(0, +) / Double(samples.count)
        var result: [String: Any] = [
            "n": samples.count, "min": samples.first!, "p25": percentile(25), "p50": percentile(50),
            "p75": percentile(75), "max": samples.last!, "mean": mean,
        ]
        if samples.count >= 20 {
            result["p90"] = percentile(90)
            result["p99"] = percentile(99)
        }
        if samples.count <= 20 { result["samples"] = samples }
        return result
    }
}

enum Clock {
    static func now() -> UInt64 { bench_now_ns() }
    static func seconds(since start: UInt64) -> Double { Double(bench_now_ns() &- start) / 1e9 }
}

struct CPUTimes: Sendable {
    var user: UInt64
    var system: UInt64
    static func process() -> CPUTimes {
        var user: UInt64 = 0, system: UInt64 = 0
        bench_process_cpu_ns(&user, &system)
        return CPUTimes(user: user, system: system)
    }
    static func - (a: CPUTimes, b: CPUTimes) -> CPUTimes { CPUTimes(user: a.user &- b.user, system: a.system &- b.system) }
    var total: UInt64 { user + system }
}

func quietLogger(_ label: String) -> Logger {
    Logger(label: label, factory: { _ in SwiftLogNoOpLogHandler() })
}

func note(_ text: String) {
    FileHandle.standardError.write(Data("smp-bench: \(text)\n".utf8))
}

struct BenchFailure: Error, CustomStringConvertible {
    var description: String
    init(_ text: String) { description = text }
}

/// A temporary directory, removed on `remove()`.
struct TemporaryDirectory {
    let path: String
    init() throws {
        var template = Array((NSTemporaryDirectory() + "/smp-bench-XXXXXX").utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
            throw BenchFailure("mkdtemp failed: errno \(errno)")
        }
        path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// Prints one JSON object (the figure's result) on stdout.
func emit(_ object: [String: Any]) throws {
    let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    FileHandle.standardOutput.write(data)
    FileHandle.standardOutput.write(Data("\n".utf8))
}

/// A CPU hog on every core (stress-ng --cpu N, else N × `yes > /dev/null`), stopped by `stop()`.
final class CPUHog {
    private var processes: [Process] = []
    let description: String

    init(cores: Int = ProcessInfo.processInfo.activeProcessorCount) throws {
        // Always at SCHED_OTHER, nice 0, even when this process runs at a real-time priority
        // (`chrt -f 50 smp-bench …`): the hog competes like ordinary work would.
        if let stress = CPUHog.which("stress-ng") {
            let p = Process()
            if let chrt = CPUHog.which("chrt") {
                p.executableURL = URL(fileURLWithPath: chrt)
                p.arguments = ["-o", "0", stress, "--cpu", "\(cores)", "--quiet", "--timeout", "3600s"]
            } else {
                p.executableURL = URL(fileURLWithPath: stress)
                p.arguments = ["--cpu", "\(cores)", "--quiet", "--timeout", "3600s"]
            }
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            processes = [p]
            description = "stress-ng --cpu \(cores)"
        } else {
            // The fallback too: a `yes` forked from a SCHED_FIFO 50 process is FIFO 50 and, one
            // per core, never yields to the session it was meant to load (seen: a run hung).
            for _ in 0..<cores {
                let p = Process()
                if let chrt = CPUHog.which("chrt") {
                    p.executableURL = URL(fileURLWithPath: chrt)
                    p.arguments = ["-o", "0", "/usr/bin/yes"]
                } else {
                    p.executableURL = URL(fileURLWithPath: "/usr/bin/yes")
                }
                p.standardOutput = FileHandle.nullDevice
                try p.run()
                processes.append(p)
            }
            description = "\(cores) × yes > /dev/null"
        }
        Thread.sleep(forTimeInterval: 0.5)  // let it take the cores
    }

    func stop() {
        for p in processes where p.isRunning {
            p.terminate()
            p.waitUntilExit()
        }
        processes.removeAll()
    }

    deinit { stop() }

    static func which(_ name: String) -> String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let path = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }
}

/// Runs a command, returns (exit status, stdout, wall seconds).
@discardableResult
func runCommand(_ path: String, _ arguments: [String], stdin: FileHandle? = nil) throws -> (status: Int32, output: String, seconds: Double) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = arguments
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = FileHandle.nullDevice
    if let stdin { p.standardInput = stdin }
    let start = Clock.now()
    try p.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    let seconds = Clock.seconds(since: start)
    return (p.terminationStatus, String(decoding: data, as: UTF8.self), seconds)
}

/// The load average, for the record of each figure.
func loadAverage() -> String {
    (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?
        .split(separator: " ").prefix(3).joined(separator: " ") ?? "?"
}

/// A preallocated sample array shared between threads that each touch distinct slots (or hand
/// over through a semaphore): no allocation and no lock on the measured path.
final class SampleBuffer: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<UInt64>
    init(capacity: Int) {
        pointer = .allocate(capacity: capacity)
        pointer.initialize(repeating: 0, count: capacity)
    }
    deinit { pointer.deallocate() }
    subscript(index: Int) -> UInt64 {
        get { pointer[index] }
        set { pointer[index] = newValue }
    }
}

/// A flag a C loop polls (`volatile int *`).
final class StopFlag: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<Int32>
    init() {
        pointer = .allocate(capacity: 1)
        pointer.initialize(to: 0)
    }
    deinit { pointer.deallocate() }
}
