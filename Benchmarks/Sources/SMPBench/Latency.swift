import CBenchSupport
import FirmwareProtocol
import Foundation
import NeedleDriver
import SessionRunner
import SMPMachine
import SMPInterlocks
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// E-stop latency, the whole host path: a simulated e-stop line's edge written
/// (SimulatedGPIOBackend.press: one write(2) of an edge record to the line's pipe) → the interlock
/// runtime (read source, debouncer, InterlockMachine, needle power off) → `onEstop`, wired as
/// the session wires it (Session.requestEstop → ApplicatorLink.emergencyStop →
/// SerialPort.emergencyWrite: 0x00 + ESTOP twice, written from the interlock queue). Measured:
/// t(emergencyStop returned) − t(before the line write), and t(first byte readable at the
/// pty's other end, the device's side) − t(before the line write). Beside it, in the same
/// invocation and under the same load: cyclictest.
enum EstopLatency {
    static func run(_ args: Arguments) throws {
        let trials = try args.int("trials", default: 10_000)
        let hog = args.flag("hog") ? try CPUHog() : nil
        defer { hog?.stop() }

        // The applicator's tty: the host opens the slave with SerialPort, as it would the real
        // device; the master side is read by a thread that stamps each arrival.
        var master: Int32 = -1, slave: Int32 = -1
        var name = [CChar](repeating: 0, count: 256)
        guard bench_open_pty(&master, &slave, &name, name.count, 1) == 0 else { throw BenchFailure("openpty") }
        let portQueue = DispatchQueue(label: "smp-bench.port")
        let port = try SerialPort.open(path: String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self), queue: portQueue)
        let link = ApplicatorLink(port: port, logger: quietLogger("smp-bench.link"))

        // Per trial: 0x00 + 2 × ESTOP straight from the interlock thread (emergencyWrite). The
        // link is never connected, so its own latch (a step on its I/O thread, which would send
        // ESTOP twice more) writes nothing since the link got that thread.
        var estop: [UInt8] = []
        Frame(.estop(cause: .hostEstop)).encode(into: &estop)
        let bytesPerTrial = 1 + 2 * estop.count

        let written = SampleBuffer(capacity: trials + 1)
        let arrived = SampleBuffer(capacity: trials + 1)
        let pressed = SampleBuffer(capacity: trials + 1)
        let estopSignal = DispatchSemaphore(value: 0)
        let transitionSignal = DispatchSemaphore(value: 0)
        let trialIndex = Atomic<Int>(0)
        let received = Atomic<Int>(0)
        let failedWrites = Atomic<Int>(0)

        let readerDone = DispatchSemaphore(value: 0)
        let readerMaster = master
        let reader = Thread {
            var buffer = [UInt8](repeating: 0, count: 4096)
            var total = 0
            var next = 0
            while total < trials * bytesPerTrial {
                let n = read(readerMaster, &buffer, buffer.count)
                if n <= 0 { if n < 0 && errno == EINTR { continue }; break }
                let now = bench_now_ns()
                total += n
                while next < trials, total > next * bytesPerTrial {
                    arrived[next] = now
                    next += 1
                }
                received.store(total, ordering: .releasing)
            }
            readerDone.signal()
        }
        reader.start()

        let estopInput = InterlockInput(name: "estop", role: .estop, chip: "gpiochip0", lineOffset: 0,
                                        activeLow: false, bias: .disabled, debounce: .zero)
        let needle = InterlockOutput(name: "needle", role: .needlePower, chip: "gpiochip0", lineOffset: 1,
                                     activeLow: false)
        let configuration = MachineConfiguration(inputs: [estopInput], outputs: [needle])
        let interlocks = try Interlocks.open(configuration: configuration, simulated: true, requiresLink: false,
                                             simulatedInitialLevels: ["estop": .inactive],
                                             logger: quietLogger("smp-bench.interlocks"))
        guard let lines = interlocks.simulator else { throw BenchFailure("no simulated backend") }
        interlocks.start(handlers: InterlockHandlers(
            onEstop: { cause in
                let ok = link.emergencyStop(cause: cause)
                let t = bench_now_ns()
                written[trialIndex.load(ordering: .relaxed)] = t
                if !ok { failedWrites.add(1, ordering: .relaxed) }
                estopSignal.signal()
            },
            onTransition: { _ in transitionSignal.signal() }))
        transitionSignal.wait()  // the initial level
        // This thread writes the line's edge: it stands in for the GPIO interrupt's thread, which
        // delivers a real line's edge (gpiolib-cdev's `edge_irq_thread`): at the process's
        // policy (under `chrt -f 50`, SCHED_FIFO 50 as every interrupt thread), and kept to one
        // CPU, as the kernel keeps an interrupt's thread to the interrupt's CPU
        // (`irq_thread_check_affinity`). --edge-unpinned: free to move, as before 2026-12-07 —
        // then the woken watcher kept to this CPU makes the scheduler push the writer to the
        // other CPU (`check_preempt_equal_prio`) while it holds the simulated chip's lock, which
        // the watcher needs to turn the needle off: what no interrupt thread does.
        let edgeCPU: Int32? = args.flag("edge-unpinned") ? nil : bench_pin_thread_to_lowest_cpu()
        if let edgeCPU, edgeCPU < 0 { throw BenchFailure("pthread_setaffinity_np: errno \(-edgeCPU)") }

        var rng = SystemRandomNumberGenerator()
        for index in 0..<trials {
            trialIndex.store(index, ordering: .relaxed)
            let t0 = bench_now_ns()
            pressed[index] = t0
            guard lines.press(line: "estop") else { throw BenchFailure("press failed") }
            estopSignal.wait()
            transitionSignal.wait()
            guard lines.release(line: "estop") else { throw BenchFailure("release failed") }
            transitionSignal.wait()
            portQueue.sync {}  // the link's own latch step has run
            var spins = 0
            while received.load(ordering: .acquiring) < (index + 1) * bytesPerTrial {
                usleep(50)
                spins += 1
                if spins > 40_000 { throw BenchFailure("trial \(index): the ESTOP bytes did not arrive") }
            }
            usleep(UInt32.random(in: 100...400, using: &rng))  // no phase lock with any timer
        }
        readerDone.wait()
        let closed = DispatchSemaphore(value: 0)
        interlocks.close { closed.signal() }
        closed.wait()
        portQueue.sync { link.close() }
        close(master)
        close(slave)
        if failedWrites.load(ordering: .relaxed) > 0 {
            throw BenchFailure("\(failedWrites.load(ordering: .relaxed)) emergency writes failed")
        }

        var toWrite: [Double] = [], toArrival: [Double] = []
        for index in 0..<trials {
            toWrite.append(Double(written[index] &- pressed[index]) / 1000)
            toArrival.append(Double(arrived[index] &- pressed[index]) / 1000)
        }
        let write = Distribution(toWrite), arrival = Distribution(toArrival)
        // The worst trials with their CLOCK_MONOTONIC times, to find them in a trace
        // (`perf record -k CLOCK_MONOTONIC -e 'sched:*' …`).
        for index in toWrite.indices.sorted(by: { toWrite[$0] > toWrite[$1] }).prefix(try args.int("worst", default: 0)) {
            note(String(format: "estop trial %d: %.1f µs, line written at %.6f s, ESTOP written at %.6f s (CLOCK_MONOTONIC)",
                        index, toWrite[index], Double(pressed[index]) / 1e9, Double(written[index]) / 1e9))
        }
        note(String(format: "estop%@: line written → ESTOP written p50 %.1f µs, p99 %.1f µs, max %.1f µs; → readable at the device end p50 %.1f, p99 %.1f, max %.1f; load %@",
                    hog != nil ? " (hog)" : "", write.percentile(50), write.percentile(99), write.samples.last!,
                    arrival.percentile(50), arrival.percentile(99), arrival.samples.last!, loadAverage()))

        var result: [String: Any] = [
            "figure": "estop", "trials": trials, "hog": hog?.description ?? "none",
            "edge_writer_cpu": edgeCPU.map { "\($0)" } ?? "any",
            "line_to_estop_written_us": write.json, "line_to_estop_readable_us": arrival.json,
            "load_average_after": loadAverage(),
        ]
        if args.flag("cyclictest") { result["cyclictest"] = try cyclictest() }
        try emit(result)
    }

    /// `cyclictest -m -p 80 -i 200 -l 20000` with a histogram, so that p50/p99 can be read.
    static func cyclictest() throws -> [String: Any] {
        guard let path = CPUHog.which("cyclictest") else { return ["error": "cyclictest not installed (apt-get install rt-tests)"] }
        let arguments = ["-m", "-p", "80", "-i", "200", "-l", "20000", "-q", "-h", "5000"]
        let (status, output, _) = try runCommand(path, arguments)
        guard status == 0 else { return ["error": "cyclictest exited \(status)", "command": "cyclictest " + arguments.joined(separator: " ")] }
        var samples: [Double] = []
        var maximum: Double?
        var overflows = 0
        for line in output.split(separator: "\n") {
            if line.hasPrefix("# Max Latencies:") {
                maximum = line.split(separator: " ").last.flatMap { Double($0) }
            } else if line.hasPrefix("# Histogram Overflows:") {
                overflows = line.split(separator: " ").last.flatMap { Int($0) } ?? 0
            } else if !line.hasPrefix("#") {
                let fields = line.split(separator: " ").compactMap { Int($0) }
                if fields.count >= 2, fields[1] > 0 {
                    samples.append(contentsOf: repeatElement(Double(fields[0]), count: fields[1]))
                }
            }
        }
        let distribution = Distribution(samples)
        note(String(format: "cyclictest: p50 %.0f µs, p99 %.0f µs, max %.0f µs (%d samples)",
                    distribution.percentile(50), distribution.percentile(99), maximum ?? .nan, samples.count))
        var json = distribution.json
        json["samples"] = nil
        if let maximum { json["max"] = maximum }
        json["histogram_overflows"] = overflows
        json["command"] = "cyclictest " + arguments.joined(separator: " ")
        return json
    }
}

/// Plan load + validate of the 200,000-dot plan, against Python's json.load of the same file,
/// interleaved in the same run.
enum PlanLoad {
    static func run(_ args: Arguments) throws {
        let planPath = try args.string("plan")
        let runs = try args.int("runs", default: 7)
        let smpctl = args.string("smpctl", default: nil)
        guard let python = CPUHog.which("python3") else { throw BenchFailure("python3 not found") }
        let size = (try FileManager.default.attributesOfItem(atPath: planPath)[.size] as? Int) ?? 0
        let pythonProcess = ["-c", "import json,sys; json.load(open(sys.argv[1]))", planPath]
        let pythonInner = ["-c", "import json,sys,time; t=time.perf_counter(); json.load(open(sys.argv[1])); print(time.perf_counter()-t)", planPath]
        var loader: [Double] = [], pyWall: [Double] = [], pyInner: [Double] = [], validate: [Double] = []
        var ratio: [Double] = [], processRatio: [Double] = [], innerRatio: [Double] = []
        var dots = 0
        _ = try loadPlan(planPath)  // warm the page cache and the code
        for r in 0..<runs {
            let (s1, _, pySeconds) = try runCommand(python, pythonProcess)
            guard s1 == 0 else { throw BenchFailure("python3 json.load failed") }
            let start = Clock.now()
            let plan = try loadPlan(planPath)
            let seconds = Clock.seconds(since: start)
            dots = plan.dots.count
            let (s2, inner, _) = try runCommand(python, pythonInner)
            guard s2 == 0, let innerSeconds = Double(inner.trimmingCharacters(in: .whitespacesAndNewlines)) else {
                throw BenchFailure("python3 json.load (timed inside) failed")
            }
            loader.append(seconds * 1000)
            pyWall.append(pySeconds * 1000)
            pyInner.append(innerSeconds * 1000)
            ratio.append(seconds / pySeconds)
            innerRatio.append(seconds / innerSeconds)
            var line = String(format: "planload run %d: PlanLoader.load %.0f ms; python3 -c json.load %.0f ms (json.load alone %.0f ms): ratio %.2f",
                              r + 1, seconds * 1000, pySeconds * 1000, innerSeconds * 1000, seconds / pySeconds)
            if let smpctl {
                let (s3, _, validateSeconds) = try runCommand(smpctl, ["validate", planPath])
                guard s3 == 0 else { throw BenchFailure("smpctl validate exited \(s3)") }
                validate.append(validateSeconds * 1000)
                processRatio.append(validateSeconds / pySeconds)
                line += String(format: "; smpctl validate process %.0f ms (ratio %.2f)", validateSeconds * 1000, validateSeconds / pySeconds)
            }
            note(line + "; load \(loadAverage())")
        }
        var result: [String: Any] = [
            "figure": "planload", "plan": planPath, "dots": dots, "bytes": size,
            "planloader_load_ms": Distribution(loader).json,
            "python_json_load_process_ms": Distribution(pyWall).json,
            "python_json_load_only_ms": Distribution(pyInner).json,
            "ratio_load_to_python_process": Distribution(ratio).json,
            "ratio_load_to_python_json_load_only": Distribution(innerRatio).json,
            "python_command": "python3 -c 'import json,sys; json.load(open(sys.argv[1]))' PLAN",
            "goal_ratio": 1.0, "load_average_after": loadAverage(),
        ]
        if smpctl != nil {
            result["smpctl_validate_process_ms"] = Distribution(validate).json
            result["ratio_validate_process_to_python_process"] = Distribution(processRatio).json
        }
        try emit(result)
    }
}
