import CBenchSupport
import DeviceSim
import Foundation
import SessionRunner
import SMPRecords
import SMPPlan
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Full path: runner → driver → pty → simulator at instant physics (time scale 0), records on.
enum FullPath {
    static func run(_ args: Arguments) throws {
        let planPath = try args.string("plan")
        let runs = try args.int("runs", default: 5)
        let records = !args.flag("no-records")
        let timeScale = try args.double("time-scale", default: 0)
        let plan = try loadPlan(planPath)
        var streaming: [Double] = [], overall: [Double] = [], cpuPerDot: [Double] = []
        var userShare: [Double] = [], switchesPerDot: [Double] = [], auditPerDot: [Double] = []
        var auditKinds: [String: Int] = [:]
        var mallocsPerDot: [Double] = [], commitsPerRun: [Double] = []
        // The simulator in its own process: what this process counts (CPU, allocations) is the
        // host's path alone.
        let separate = args.flag("device-process")
        // A longer lease for runs under strace, whose every syscall is slower (issue 15).
        let lease = args.string("lease-ms", default: nil).flatMap { Int($0) }
        for r in 0..<runs {
            let directory = try TemporaryDirectory()
            defer { directory.remove() }
            let result: SessionRun
            if separate {
                let child = try SimulatorChild(timeScale: timeScale, nice: nil)
                do {
                    result = try runSession(plan: plan, planPath: planPath, devicePath: child.devicePath,
                                            recordsDirectory: records ? directory.path : nil, leaseMilliseconds: lease)
                } catch {
                    _ = try? child.stop()
                    throw error
                }
                _ = try child.stop()
            } else {
                let sim = try startSimulator(timeScale: timeScale, seed: UInt64(r + 1))
                defer { sim.stop() }
                result = try runSession(plan: plan, planPath: planPath, devicePath: sim.devicePath,
                                        recordsDirectory: records ? directory.path : nil, leaseMilliseconds: lease)
            }
            let dots = Double(result.account.done.count)
            if let mallocs = result.mallocsAfterArm { mallocsPerDot.append(Double(mallocs) / dots) }
            commitsPerRun.append(Double(result.recordCommits))
            streaming.append(result.streamingRate)
            overall.append(result.overallRate)
            cpuPerDot.append(Double(result.cpu.total) / dots / 1000)
            userShare.append(Double(result.cpu.user) / Double(max(result.cpu.total, 1)))
            switchesPerDot.append(Double(result.voluntarySwitches + result.involuntarySwitches) / dots)
            if records, let id = result.account.sessionID {
                // What the record holds per dot beyond the dot rows: the audit trail.
                let events = try RecordStore(path: directory.path + "/records.sqlite").events(session: id)
                auditPerDot.append(Double(events.count) / dots)
                if r == 0 { for event in events { auditKinds[event.kind, default: 0] += 1 } }
            }
            note(String(format: "fullpath run %d: %.0f dots/s streaming, %.0f overall, %.1f µs CPU/dot (%@), %d record commits%@, load %@",
                        r + 1, result.streamingRate, result.overallRate, cpuPerDot.last!,
                        separate ? "host only" : "host+sim", result.recordCommits,
                        result.mallocsAfterArm.map { String(format: ", %.1f mallocs/dot after ARM", Double($0) / dots) } ?? "",
                        loadAverage()))
        }
        try emit([
            "figure": "fullpath", "plan": planPath, "dots": plan.dots.count, "records": records, "time_scale": timeScale,
            "simulator": separate ? "own process (CPU and allocations: the host alone)" : "in this process",
            "record_commits": Distribution(commitsPerRun).json,
            "mallocs_per_dot_after_arm": mallocsPerDot.isEmpty
                ? ("not counted (run under LD_PRELOAD=bench-malloc-count.so)" as Any) : (Distribution(mallocsPerDot).json as Any),
            "dots_per_second_streaming": Distribution(streaming).json,
            "dots_per_second_overall": Distribution(overall).json,
            "cpu_us_per_dot_host_and_sim": Distribution(cpuPerDot).json,
            "cpu_user_fraction": Distribution(userShare).json,
            "context_switches_per_dot": Distribution(switchesPerDot).json,
            "audit_events_per_dot": Distribution(auditPerDot).json, "audit_events_first_run_by_kind": auditKinds,
            "goal_dots_per_second": 40_000, "load_average_after": loadAverage(),
        ])
    }
}

/// A relay between the host's pty and the simulator's, pacing bytes at a baud rate both ways.
final class PacedLink: @unchecked Sendable {
    let hostPath: String
    private let hostMaster: Int32
    private let hostSlaveKept: Int32
    private let deviceFD: Int32
    private let stopFlag = StopFlag()
    private var toDevice = bench_relay_stats()
    private var toHost = bench_relay_stats()
    private var errors: [Int32] = [0, 0]
    private let done = DispatchGroup()

    /// `baud` 0: no pacing. 10 bits per byte on the wire (8N1).
    init(devicePath: String, baud: Int, granularityMicroseconds: Int) throws {
        var master: Int32 = -1, slave: Int32 = -1
        var name = [CChar](repeating: 0, count: 256)
        let rc = bench_open_pty(&master, &slave, &name, name.count, 0)
        guard rc == 0 else { throw BenchFailure("openpty: errno \(-rc)") }
        hostMaster = master
        hostSlaveKept = slave  // held so the master never reads EIO while no host has it open
        hostPath = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let fd = open(devicePath, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw BenchFailure("open \(devicePath): errno \(errno)") }
        guard bench_make_raw(fd) == 0 else { throw BenchFailure("raw \(devicePath)") }
        deviceFD = fd
        let rate = baud > 0 ? Double(baud) / 10 : 0
        let granularity = UInt64(granularityMicroseconds) * 1000
        let stop = stopFlag
        for direction in 0..<2 {
            done.enter()
            let thread = Thread { [self] in
                var stats = bench_relay_stats()
                let (from, to) = direction == 0 ? (self.hostMaster, self.deviceFD) : (self.deviceFD, self.hostMaster)
                let result = bench_relay(from, to, rate, granularity, stop.pointer, &stats)
                if direction == 0 { self.toDevice = stats } else { self.toHost = stats }
                self.errors[direction] = result
                self.done.leave()
            }
            thread.name = direction == 0 ? "relay→device" : "relay→host"
            thread.start()
        }
    }

    /// Stops both directions; returns (to device, to host).
    func stop() throws -> (toDevice: bench_relay_stats, toHost: bench_relay_stats) {
        stopFlag.pointer.pointee = 1
        done.wait()
        close(hostMaster)
        close(hostSlaveKept)
        close(deviceFD)
        if errors.contains(where: { $0 != 0 }) { throw BenchFailure("relay failed: \(errors)") }
        return (toDevice, toHost)
    }
}

/// Link utilisation: the same session through a relay that paces bytes at 115200 or 921600 baud.
enum LinkUtilisation {
    /// DOT frame on the wire: 20 payload + 6 header/CRC = 26, + 1 COBS code + 1 delimiter.
    static let dotFrameBytes = 28.0

    static func run(_ args: Arguments) throws {
        let planPath = try args.string("plan")
        let baud = try args.int("baud", default: 115_200)
        let runs = try args.int("runs", default: 3)
        let granularity = try args.int("granularity-us", default: 250)
        let timeScale = try args.double("time-scale", default: 0)
        let records = !args.flag("no-records")
        let plan = try loadPlan(planPath)
        let theoretical = Double(baud) / 10 / dotFrameBytes
        var rates: [Double] = [], ratios: [Double] = []
        var downPerDot: [Double] = [], upPerDot: [Double] = [], upBusy: [Double] = [], downBusy: [Double] = []
        var outcomes: [String] = [], retransmissionsPerDot: [Double] = [], srtt: [Double] = []
        var hostGap: [Double] = [], deviceGap: [Double] = []
        let hog = args.flag("hog") ? try CPUHog() : nil
        defer { hog?.stop() }
        for r in 0..<runs {
            let directory = try TemporaryDirectory()
            defer { directory.remove() }
            let sim = try startSimulator(timeScale: timeScale, seed: UInt64(r + 1))
            defer { sim.stop() }
            let link = try PacedLink(devicePath: sim.devicePath, baud: baud, granularityMicroseconds: granularity)
            let result: SessionRun
            do {
                // A run that does not complete (the device held: lease expired) is reported, not fatal.
                // The host knows the line's byte rate, as it does for a UART (firmware-protocol.md §6.3).
                result = try runSession(plan: plan, planPath: planPath, devicePath: link.hostPath,
                                        recordsDirectory: records ? directory.path : nil, requireCompletion: false,
                                        lineBytesPerSecond: baud / 10)
            } catch {
                _ = try? link.stop()
                throw error
            }
            let (down, up) = try link.stop()
            let dots = Double(result.account.done.count)
            let streamingSeconds = Double(result.finished &- result.armed) / 1e9
            let account = result.account
            outcomes.append(account.outcome == .completed ? "completed"
                : "\(account.outcome.rawValue) after \(account.done.count) of \(plan.dots.count): \(account.reason ?? "")")
            retransmissionsPerDot.append(Double(account.metrics.retransmissions) / max(dots, 1))
            hostGap.append(Double(down.max_gap_ns) / 1e6)
            deviceGap.append(Double(up.max_gap_ns) / 1e6)
            srtt.append(Double(account.metrics.smoothedRTTMicroseconds) / 1000)
            rates.append(result.streamingRate)
            ratios.append(theoretical > 0 ? result.streamingRate / theoretical : 0)
            downPerDot.append(Double(down.bytes) / dots)
            upPerDot.append(Double(up.bytes) / dots)
            upBusy.append(Double(up.busy_ns) / 1e9 / result.wallSeconds)
            downBusy.append(Double(down.busy_ns) / 1e9 / result.wallSeconds)
            note(String(format: "link %d baud run %d: %.1f dots/s = %.1f %% of %.1f DOT frames/s; bytes/dot host→device %.1f, device→host %.1f; %.2f retransmissions/dot, SRTT %.0f ms; longest silence host→device %.1f ms, device→host %.1f ms; %.1f s streaming; %@",
                        baud, r + 1, result.streamingRate, 100 * ratios.last!, theoretical, downPerDot.last!,
                        upPerDot.last!, retransmissionsPerDot.last!, srtt.last!, hostGap.last!, deviceGap.last!, streamingSeconds, outcomes.last!))
        }
        try emit([
            "figure": "link", "plan": planPath, "dots": plan.dots.count, "baud": baud, "records": records,
            "outcomes": outcomes, "completed_runs": outcomes.filter { $0 == "completed" }.count, "runs": runs,
            "retransmissions_per_dot": Distribution(retransmissionsPerDot).json,
            "smoothed_rtt_ms_at_end": Distribution(srtt).json, "hog": hog?.description ?? "none",
            "longest_silence_host_to_device_ms": Distribution(hostGap).json,
            "longest_silence_device_to_host_ms": Distribution(deviceGap).json,
            "granularity_us": granularity,
            "theoretical_dot_frames_per_second": theoretical,  // 0: unpaced (--baud 0)
            "dots_per_second": Distribution(rates).json,
            "utilisation": Distribution(ratios).json,
            "bytes_per_dot_host_to_device": Distribution(downPerDot).json,
            "bytes_per_dot_device_to_host": Distribution(upPerDot).json,
            "wire_busy_fraction_host_to_device": Distribution(downBusy).json,
            "wire_busy_fraction_device_to_host": Distribution(upBusy).json,
            "goal_utilisation": 0.9, "load_average_after": loadAverage(),
        ])
    }
}

/// Underruns: device queue empty while the host streams, real physics ×50, with or without a hog.
enum Underruns {
    static func run(_ args: Arguments) throws {
        let planPath = try args.string("plan")
        let runs = try args.int("runs", default: 1)
        let timeScale = try args.double("time-scale", default: 0.02)
        let lease = try args.int("lease-ms", default: 100)
        let plan = try loadPlan(planPath)
        let hog = args.flag("hog") ? try CPUHog() : nil
        defer { hog?.stop() }
        var during: [Double] = [], total: [Double] = [], rates: [Double] = [], doneFraction: [Double] = []
        var outcomes: [String] = []
        let separate = args.flag("device-process")
        let deviceNice = args.string("device-nice", default: nil).flatMap { Int($0) }
        for r in 0..<runs {
            let directory = try TemporaryDirectory()
            defer { directory.remove() }
            let final: Int
            let seen: [(underruns: Int, done: UInt32)]
            let result: SessionRun
            if separate {
                let child = try SimulatorChild(timeScale: timeScale, nice: deviceNice)
                do {
                    result = try runSession(plan: plan, planPath: planPath, devicePath: child.devicePath,
                                            recordsDirectory: directory.path, leaseMilliseconds: lease,
                                            requireCompletion: false)
                } catch {
                    _ = try? child.stop()
                    throw error
                }
                Thread.sleep(forTimeInterval: 0.3)  // past one lease: the end-of-plan drain is counted
                let report = try child.stop()
                final = report["underruns"] as? Int ?? -1
                seen = (report["events"] as? [[Int]] ?? []).map { (underruns: $0[0], done: UInt32($0[1])) }
            } else {
                let sim = try startSimulator(timeScale: timeScale, seed: UInt64(r + 1))
                defer { sim.stop() }
                let watcher = UnderrunWatcher(sim)
                // A session that does not complete (the device held: lease expired) is a result here.
                result = try runSession(plan: plan, planPath: planPath, devicePath: sim.devicePath,
                                        recordsDirectory: directory.path, leaseMilliseconds: lease,
                                        requireCompletion: false)
                Thread.sleep(forTimeInterval: 0.3)  // past one lease: the end-of-plan drain is counted
                seen = watcher.stop()
                final = sim.status.underruns
            }
            // The drain after the last dot is counted by the simulator by design (Firmware.underruns).
            let atEnd = seen.filter { Int($0.done) >= plan.dots.count }.count
            let whileStreaming = max(final - atEnd, 0)
            let account = result.account
            let outcome = account.outcome == .completed ? "completed"
                : "\(account.outcome.rawValue) after \(account.done.count) of \(plan.dots.count): \(account.reason ?? "")"
            outcomes.append(outcome)
            doneFraction.append(Double(account.done.count) / Double(plan.dots.count))
            during.append(Double(whileStreaming))
            total.append(Double(final))
            rates.append(result.streamingRate)
            note("underruns run \(r + 1)\(hog != nil ? " (hog: \(hog!.description))" : "")\(separate ? ", simulator in its own process" + (deviceNice.map { " at nice \($0)" } ?? "") : ""), lease \(lease) ms: \(outcome); \(final) underruns counted, \(whileStreaming) while streaming; at done counts \(seen.map { $0.done }.prefix(20)); \(String(format: "%.0f", result.streamingRate)) dots/s; load \(loadAverage())")
        }
        try emit([
            "figure": "underruns", "plan": planPath, "dots": plan.dots.count, "time_scale": timeScale,
            "hog": hog?.description ?? "none", "lease_ms": lease, "outcomes": outcomes,
            "simulator": separate ? "own process" + (deviceNice.map { " at nice \($0)" } ?? "") : "in the host process",
            "completed_runs": outcomes.filter { $0 == "completed" }.count, "runs": runs,
            "fraction_done": Distribution(doneFraction).json,
            "underruns_while_streaming": Distribution(during).json,
            "underruns_counted_by_simulator": Distribution(total).json,
            "dots_per_second": Distribution(rates).json,
            "goal": 0, "load_average_after": loadAverage(),
        ])
    }
}

/// The simulator alone in a process (for `cpu`: the host's CPU must not include the device's).
/// `--no-underrun-watch`: without the watcher's thread, which wakes every millisecond on the
/// host's own cores — a device has a CPU of its own, and `cpu` reads no underruns.
enum SimulatorProcess {
    static func run(_ args: Arguments) throws {
        let sim = try startSimulator(timeScale: try args.double("time-scale", default: 1), seed: 1)
        let watcher = args.flag("no-underrun-watch") ? nil : UnderrunWatcher(sim)
        FileHandle.standardOutput.write(Data((sim.devicePath + "\n").utf8))
        _ = FileHandle.standardInput.readDataToEndOfFile()  // until the parent closes our stdin
        let seen = watcher?.stop() ?? []
        let report: [String: Any] = ["underruns": sim.status.underruns, "done": Int(sim.status.doneCount),
                                     "events": seen.map { [$0.underruns, Int($0.done)] }]
        sim.stop()
        let data = try JSONSerialization.data(withJSONObject: report)
        FileHandle.standardOutput.write(data)
        FileHandle.standardOutput.write(Data("\n".utf8))
    }
}

/// Samples the simulator's underrun counter every millisecond, noting the done count at each.
final class UnderrunWatcher: Sendable {
    private let watching = Atomic<Bool>(true)
    private let events = Mutex<[(underruns: Int, done: UInt32)]>([])
    private let finished = DispatchSemaphore(value: 0)

    init(_ sim: SimulatedApplicator) {
        let thread = Thread { [self] in
            var last = 0
            while watching.load(ordering: .relaxed) {
                let status = sim.status
                if status.underruns != last {
                    last = status.underruns
                    events.withLock { $0.append((status.underruns, status.doneCount)) }
                }
                usleep(1000)
            }
            finished.signal()
        }
        thread.start()
    }

    func stop() -> [(underruns: Int, done: UInt32)] {
        watching.store(false, ordering: .relaxed)
        finished.wait()
        return events.withLock { $0 }
    }
}

/// A simulator in a child process (optionally at another nice level): the device has its own CPU
/// in reality, so a hog on the host's cores must not starve the device model itself.
final class SimulatorChild {
    let devicePath: String
    private let process = Process()
    private let input = Pipe(), output = Pipe()

    init(timeScale: Double, nice: Int?) throws {
        let me = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        if let nice {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/nice")
            process.arguments = ["-n", "\(nice)", me, "sim", "--time-scale", "\(timeScale)"]
        } else {
            process.executableURL = URL(fileURLWithPath: me)
            process.arguments = ["sim", "--time-scale", "\(timeScale)"]
        }
        process.standardOutput = output
        process.standardInput = input
        try process.run()
        devicePath = try SimulatorChild.line(output.fileHandleForReading)
    }

    private static func line(_ handle: FileHandle) throws -> String {
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = handle.availableData
            if chunk.isEmpty { throw BenchFailure("the simulator process ended early") }
            line.append(chunk)
        }
        return String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Stops the child; returns its report (underruns, done, events).
    func stop() throws -> [String: Any] {
        try input.fileHandleForWriting.close()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw BenchFailure("no report from the simulator process")
        }
        return object
    }
}

/// Host CPU per second of session at ~10 dots/s real time: the host process alone (the simulator
/// runs in a child process), records on.
enum HostCPU {
    static func run(_ args: Arguments) throws {
        let planPath = try args.string("plan")
        let runs = try args.int("runs", default: 3)
        let lease = try args.int("lease-ms", default: 100)
        // A host that speaks an older minor (the heartbeat's STATUS answers of 1.3, say).
        let protocolMinor = try args.string("protocol-minor", default: nil).map { text in
            guard let minor = UInt8(text) else { throw BenchFailure("--protocol-minor \(text): not a minor version") }
            return minor
        }
        let plan = try loadPlan(planPath)
        // The simulator: another process (spawned here), or one already running (--device).
        var child: Process?
        var childInput: Pipe?
        defer {
            try? childInput?.fileHandleForWriting.close()
            child?.waitUntilExit()
        }
        let devicePath: String
        if let given = args.string("device", default: nil) {
            devicePath = given
        } else {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
            process.arguments = ["sim", "--time-scale", "1", "--no-underrun-watch"]
            let output = Pipe(), input = Pipe()
            process.standardOutput = output
            process.standardInput = input
            try process.run()
            child = process
            childInput = input
            var line = Data()
            while !line.contains(UInt8(ascii: "\n")) {
                let chunk = output.fileHandleForReading.availableData
                if chunk.isEmpty { throw BenchFailure("the simulator process ended without a device path") }
                line.append(chunk)
            }
            devicePath = String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        var percent: [Double] = [], rates: [Double] = [], cpuMsPerSecond: [Double] = [], walls: [Double] = []
        var userShare: [Double] = []
        for r in 0..<runs {
            let directory = try TemporaryDirectory()
            defer { directory.remove() }
            // --interlocks: the lines a clinic session watches (simulated), as `smpctl run` opens them.
            let interlocks = args.flag("interlocks") ? try simulatedInterlocks(leaseMilliseconds: lease) : nil
            let result = try runSession(plan: plan, planPath: planPath, devicePath: devicePath,
                                        recordsDirectory: args.flag("no-records") ? nil : directory.path,
                                        leaseMilliseconds: lease, protocolMinor: protocolMinor, interlocks: interlocks)
            let share = Double(result.cpu.total) / Double(result.finished &- result.started)
            percent.append(100 * share)
            cpuMsPerSecond.append(share * 1000)
            rates.append(Double(result.account.done.count) / result.wallSeconds)
            walls.append(result.wallSeconds)
            userShare.append(Double(result.cpu.user) / Double(max(result.cpu.total, 1)))
            // The start (handshake, record creation, preflight) apart from the streaming and end.
            let beforeArm = result.cpuBeforeArm.map { Double($0.total) / 1e6 } ?? .nan
            let afterArmSeconds = Double(result.finished &- result.armed) / 1e9
            let afterArm = result.cpuBeforeArm.map { Double((result.cpu - $0).total) / 1e6 / afterArmSeconds } ?? .nan
            note(String(format: "cpu (lease \(lease) ms, protocol 1.\(protocolMinor ?? SessionOptions().link.protocolMinor)) run %d: %.3f %% of a core (%.2f ms CPU per s; user %.0f %%) over %.1f s at %.1f dots/s; %.2f ms CPU before ARM, %.2f ms per s from ARM; %d record commits; %d voluntary + %d involuntary switches; load %@",
                        r + 1, percent.last!, cpuMsPerSecond.last!, 100 * userShare.last!, result.wallSeconds,
                        rates.last!, beforeArm, afterArm, result.recordCommits, result.voluntarySwitches,
                        result.involuntarySwitches, loadAverage()))
        }
        try emit([
            "figure": "cpu", "plan": planPath, "dots": plan.dots.count, "time_scale": 1, "lease_ms": lease,
            "protocol_minor": Int(protocolMinor ?? SessionOptions().link.protocolMinor),
            "interlocks": args.flag("interlocks"),
            "host_cpu_percent_of_one_core": Distribution(percent).json,
            "host_cpu_ms_per_second": Distribution(cpuMsPerSecond).json,
            "cpu_user_fraction": Distribution(userShare).json,
            "dots_per_second": Distribution(rates).json, "session_seconds": Distribution(walls).json,
            "goal_percent": 0.5, "load_average_after": loadAverage(),
        ])
    }
}

/// The anchor of the host-CPU row: what this machine charges for the wake-ups a link at an
/// applicator's pace cannot avoid, measured by a loop in C that does nothing else (as cyclictest
/// anchors the e-stop rows). A lease of L ms wants a write from the host every L/3 (a DOT, or a
/// paired heartbeat: §6.5), each a thread woken at its deadline to write it; at 10 dots/s the
/// device answers with an ACK and a DOT_DONE per dot, each a thread woken by the descriptor to
/// read it. The floor: 3000/L timed wake-ups with a write, and 20 woken reads, per second; and,
/// beside it, with single heartbeats a quarter apart as before the pairing (4000/L).
enum WakeCost {
    static func run(_ args: Arguments) throws {
        let runs = try args.int("runs", default: 3)
        let iterations = try args.int("iterations", default: 400)
        let lease = try args.int("lease-ms", default: 100)
        // The heartbeat as smpctl sends it to a 1.4 device: paired, a third of the lease after the
        // last send (two 8-byte frames in one write); and single a quarter apart, as before.
        let quarter = UInt64(lease) * 1_000_000 / 4, third = UInt64(lease) * 1_000_000 / 3
        var timedOnly: [Double] = [], timedWrite: [Double] = [], woken: [Double] = [], floor: [Double] = []
        var pairedWrite: [Double] = [], pairedFloor: [Double] = []
        for r in 0..<runs {
            var writer = 0.0, reader = 0.0
            var status = bench_wake_cost(Int32(iterations), quarter, 0, &writer, &reader)
            guard status == 0 else { throw BenchFailure("bench_wake_cost: errno \(-status)") }
            timedOnly.append(writer / 1000)
            status = bench_wake_cost(Int32(iterations), quarter, 8, &writer, &reader)
            guard status == 0 else { throw BenchFailure("bench_wake_cost: errno \(-status)") }
            timedWrite.append(writer / 1000)
            woken.append(reader / 1000)
            floor.append((4000.0 / Double(lease) * timedWrite.last! + 20 * woken.last!) / 10_000)
            status = bench_wake_cost(Int32(iterations), third, 16, &writer, &reader)
            guard status == 0 else { throw BenchFailure("bench_wake_cost: errno \(-status)") }
            pairedWrite.append(writer / 1000)
            pairedFloor.append((3000.0 / Double(lease) * pairedWrite.last! + 20 * reader / 1000) / 10_000)
            note(String(format: "wake-cost run %d: a timed ppoll wake-up %.1f µs of CPU, with an 8-byte pty write %.1f µs, with a 16-byte one %.1f µs; a thread woken by the pty to read %.1f µs; floor of a link at 10 dots/s, lease \(lease) ms: %.3f %% of a core paired, %.3f %% single a quarter apart; load %@",
                        r + 1, timedOnly.last!, timedWrite.last!, pairedWrite.last!, woken.last!, pairedFloor.last!,
                        floor.last!, loadAverage()))
        }
        try emit([
            "figure": "wake-cost", "lease_ms": lease, "iterations": iterations,
            "timed_wake_us": Distribution(timedOnly).json,
            "timed_wake_and_write_us": Distribution(timedWrite).json,
            "woken_read_us": Distribution(woken).json,
            "timed_wake_and_paired_write_us": Distribution(pairedWrite).json,
            "link_floor_percent_of_one_core": Distribution(pairedFloor).json,
            "link_floor_quarter_percent_of_one_core": Distribution(floor).json,
            "load_average_after": loadAverage(),
        ])
    }
}
