import CSMPShim
import Dispatch
import Logging
import SMPSystem
import Synchronization
import SystemPackage

/// Interlock lines without hardware, for tests and `--sim`, through THE SAME event path as real
/// chips: per chip a non-blocking pipe stands in for the libgpiod request's descriptor; `press`,
/// `release`, `set` and `bounce` write `smp_gpio_edge_event` records (16 bytes, the shim's own
/// layout) to it from the calling thread, and the pipe's read end is watched by the same
/// `GPIOInputPipeline` (its poll thread, debounce timers) as a libgpiod request's fd.
/// `disconnect(chip:)` closes a pipe's write end: the reader sees end-of-file, as when a chip is
/// removed, and the lines are reported `.lost`. `vanish(chip:)` removes a chip the other way a
/// kernel may: its descriptor stays silent (no wake-up, no end-of-file) while every read of its
/// lines fails with ENODEV; only the periodic health check can notice that.
///
/// Outputs are recorded; read them back with `value(of:)`.
public final class SimulatedGPIOBackend: InterlockLineBackend, @unchecked Sendable {
    public let queue: DispatchQueue
    public let inputs: [GPIOInputLine]
    public let outputs: [GPIOOutputLine]
    private let pipeline: GPIOInputPipeline
    private let lines: SimulatedLines
    /// The chip (pipe) of each input.
    private let streamOfInput: [Int]
    private let chipPaths: [String]
    private var closed = false
    private var closeFailures: [GPIOSafeLevelFailure] = []

    /// Creates one pipe per chip. `initialLevels` (by input name) are the levels the lines read
    /// at start; unnamed inputs start at their stop level (`immediateLevel`, else inactive), i.e.
    /// e-stop pressed and pedal released until a test or the operator says otherwise.
    ///
    /// `healthCheckInterval`: how often each chip's lines are read to check that the chip is
    /// still there (see `GPIOInputPipeline`); nil: never.
    public init(inputs: [GPIOInputLine], outputs: [GPIOOutputLine], initialLevels: [String: GPIOLevel] = [:],
                healthCheckInterval: Duration? = nil, queue: DispatchQueue, logger: Logger) throws(GPIOError) {
        self.queue = queue
        self.inputs = inputs
        self.outputs = outputs

        var chipPaths: [String] = []
        var streamOfInput: [Int] = []
        for input in inputs {
            if let s = chipPaths.firstIndex(of: input.chipPath) {
                streamOfInput.append(s)
            } else {
                streamOfInput.append(chipPaths.count)
                chipPaths.append(input.chipPath)
            }
        }
        var pipes: [(readEnd: CInt, writeEnd: CInt)] = []
        for path in chipPaths {
            switch Sys.pipe() {
            case .success(let ends): pipes.append(ends)
            case .failure(let errno):
                for ends in pipes {
                    _ = Sys.close(ends.readEnd)
                    _ = Sys.close(ends.writeEnd)
                }
                throw .io(operation: "creating the simulated chip's pipe", chip: path, errno: errno)
            }
        }

        let lines = SimulatedLines(
            physical: inputs.map { initialLevels[$0.name] ?? $0.immediateLevel ?? .inactive },
            outputs: outputs.map(\.safeLevel),
            writeEnds: pipes.map(\.writeEnd),
            inputChips: inputs.map(\.chipPath),
            outputChips: outputs.map(\.chipPath))
        self.lines = lines
        self.streamOfInput = streamOfInput
        self.chipPaths = chipPaths

        var streams: [GPIOInputPipeline.Stream] = []
        for (s, path) in chipPaths.enumerated() {
            let readEnd = pipes[s].readEnd
            let members = inputs.indices.filter { streamOfInput[$0] == s }
            streams.append(GPIOInputPipeline.Stream(
                fd: readEnd,
                chip: path,
                lines: members.map { (inputs[$0].lineOffset, $0) },
                readEvents: { buffer in
                    // A vanished chip: what was written is drained, the read fails as the kernel's.
                    if lines.isVanished(path) {
                        _ = Sys.read(readEnd, into: UnsafeMutableRawBufferPointer(buffer))
                        return .failure(.operationNotSupportedByDevice)
                    }
                    return Self.readRecords(readEnd, into: buffer)
                },
                readLevel: { position in lines.readLevel(of: members[position]) },
                release: {
                    _ = Sys.close(readEnd)
                    lines.closeWriteEnd(s)
                }))
        }
        pipeline = GPIOInputPipeline(queue: queue, inputs: inputs, debounce: inputs.map(\.debounce), streams: streams,
                                     healthCheckInterval: healthCheckInterval, logger: logger)
    }

    /// Reads whole records from the pipe. End of file (the write end closed) reads as ENODEV,
    /// what a removed chip gives; a partial record (cannot happen: records are written whole,
    /// atomically) as EIO.
    private static func readRecords(_ fd: CInt, into buffer: UnsafeMutableBufferPointer<smp_gpio_edge_event>)
        -> Result<Int, Errno>
    {
        let recordSize = MemoryLayout<smp_gpio_edge_event>.stride
        switch Sys.read(fd, into: UnsafeMutableRawBufferPointer(buffer)) {
        case .success(.endOfFile): return .failure(.operationNotSupportedByDevice)
        case .success(.wouldBlock): return .success(0)
        case .success(.transferred(let bytes)) where bytes % recordSize != 0: return .failure(.ioError)
        case .success(.transferred(let bytes)): return .success(bytes / recordSize)
        case .failure(let errno): return .failure(errno)
        }
    }

    // MARK: - InterlockLineBackend

    public func start(onChange: @escaping (GPIOInputChange) -> Void) {
        pipeline.start(onChange: onChange)
    }

    /// The health check, for a thread that wakes anyway to carry (`GPIOInputPipeline`).
    package var healthCheckDuty: any PassDuty { pipeline }

    /// Health checks made so far: in a carrier's passes, and by the first watcher's own timer;
    /// on `queue`, for tests.
    var healthChecks: (carried: Int, own: Int) {
        dispatchPrecondition(condition: .onQueue(queue))
        return (pipeline.healthChecksCarried, pipeline.healthChecksOwn)
    }

    /// The CPU each of the pipeline's watcher threads was started to keep to (nil: any); on
    /// `queue`, for tests.
    var watcherCPUs: [Int?] {
        dispatchPrecondition(condition: .onQueue(queue))
        return pipeline.watcherCPUs
    }

    public func setOutput(_ index: Int, to level: GPIOLevel) throws(GPIOError) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard !closed else { throw .closed }
        if let errno = lines.setOutput(index, to: level) {
            throw .io(operation: "setting \"\(outputs[index].name)\" \(level)", chip: outputs[index].chip, errno: errno)
        }
    }

    @discardableResult
    public func close(onClosed: (@Sendable () -> Void)?) -> [GPIOSafeLevelFailure] {
        dispatchPrecondition(condition: .onQueue(queue))
        if !closed {
            closed = true
            for (index, output) in outputs.enumerated() {
                // Never fails unless a test made it (`failSafeLevelAtClose`) or the chip vanished.
                if let errno = lines.setOutput(index, to: output.safeLevel, closing: true) {
                    closeFailures.append(GPIOSafeLevelFailure(
                        output: index, name: output.name, chip: output.chip, lineOffset: output.lineOffset,
                        safeLevel: output.safeLevel,
                        error: .io(operation: "setting \"\(output.name)\" \(output.safeLevel) before release",
                                   chip: output.chip, errno: errno)))
                }
            }
        }
        pipeline.close(onClosed: onClosed)
        return closeFailures
    }

    // MARK: - Driving the simulated lines (any thread)

    /// The line becomes active now (a button pressed, the pedal pressed, contact made, the
    /// cartridge inserted).
    @discardableResult
    public func press(line name: String) -> Bool { set(line: name, to: .active) }

    /// The line becomes inactive now.
    @discardableResult
    public func release(line name: String) -> Bool { set(line: name, to: .inactive) }

    /// The line changes to `level`, with the edge stamped `timestampNanos` (CLOCK_MONOTONIC,
    /// default now). Returns false if the chip is disconnected or the backend closed.
    @discardableResult
    public func set(line name: String, to level: GPIOLevel, timestampNanos: UInt64? = nil) -> Bool {
        let index = inputIndexOrTrap(name)
        let time = timestampNanos ?? Sys.monotonicNanoseconds()
        return lines.write(stream: streamOfInput[index], input: index, finalLevel: level,
                           records: [record(index, level, time)])
    }

    /// A bouncing contact: edges to each of `levels` in turn, `spacing` apart, starting now, written
    /// in ONE write(2) so they reach the reader together. The line ends at the last level.
    @discardableResult
    public func bounce(line name: String, levels: [GPIOLevel], spacing: Duration) -> Bool {
        precondition(!levels.isEmpty && levels.count <= 256, "1…256 edges per bounce (PIPE_BUF)")
        let index = inputIndexOrTrap(name)
        let start = Sys.monotonicNanoseconds()
        let step = spacing.nanoseconds
        let records = levels.enumerated().map { record(index, $0.element, start + UInt64($0.offset) * step) }
        return lines.write(stream: streamOfInput[index], input: index, finalLevel: levels[levels.count - 1],
                           records: records)
    }

    /// The chip goes away and its descriptor wakes the reader: the next read fails with ENODEV
    /// and every line of that chip is reported `.lost`. `chip` as in the configuration
    /// ("gpiochip0").
    ///
    /// Not by closing the pipe's write end: a pipe at end-of-file reports POLLHUP for ever (with
    /// the Dispatch read sources used before the poll thread, cancelling one while epoll kept
    /// reporting its descriptor crashed libdispatch's manager thread now and then:
    /// swift-corelibs-libdispatch #949). One wake-up byte, drained by the failing read, leaves
    /// nothing pending when the stream is dropped — as with a real removed chip, whose descriptor
    /// reports nothing (docs/hil.md).
    public func disconnect(chip: String) {
        let path = GPIOChip.path(of: chip)
        guard let s = chipPaths.firstIndex(of: path) else {
            preconditionFailure("no simulated chip \(chip)")
        }
        lines.vanish(chipPath: path)
        lines.wake(stream: s)
    }

    /// The chip goes away without its descriptor telling anyone: the pipe stays open and silent
    /// (no end-of-file, no wake-up), while every read of its lines and every write to its outputs
    /// fails with ENODEV from now on — a kernel that does not wake the readers of a removed
    /// chip. Only the pipeline's health check can notice it. `chip` as in the configuration.
    public func vanish(chip: String) {
        let path = GPIOChip.path(of: chip)
        precondition(chipPaths.contains(path) || outputs.contains { $0.chipPath == path }, "no simulated chip \(chip)")
        lines.vanish(chipPath: path)
    }

    /// Makes every later `setOutput` fail with `errno` (nil: succeed again).
    public func failOutputWrites(with errno: Errno?) { lines.setOutputFailure(errno) }

    /// Test hook: when the backend closes, driving `output` to its safe level fails with `errno`
    /// and the output keeps its level (a relay driver that stopped answering). Only for tests
    /// of what a session does then; nothing in the product calls it.
    package func failSafeLevelAtClose(output name: String, with errno: Errno) {
        guard let index = outputIndex(named: name) else { preconditionFailure("no simulated output \(name)") }
        lines.setCloseFailure(index, errno)
    }

    /// The level an output was last driven to.
    public func value(of output: String) -> GPIOLevel {
        guard let index = outputIndex(named: output) else { preconditionFailure("no simulated output \(output)") }
        return lines.outputLevel(index)
    }

    /// The level a simulated input line is at now (what `press`/`release` last set).
    public func level(of input: String) -> GPIOLevel {
        lines.physicalLevel(of: inputIndexOrTrap(input))
    }

    private func inputIndexOrTrap(_ name: String) -> Int {
        guard let index = inputIndex(named: name) else { preconditionFailure("no simulated input line \(name)") }
        return index
    }

    private func record(_ index: Int, _ level: GPIOLevel, _ time: UInt64) -> smp_gpio_edge_event {
        smp_gpio_edge_event(timestamp_ns: time, line_offset: inputs[index].lineOffset, rising: level == .active ? 1 : 0)
    }
}

/// The simulated lines' shared state: written from any thread (`press`) and read on the
/// backend's queue (`readLevel`, `setOutput`), so it is behind a mutex. A pipe's write end is
/// closed under the same mutex, so a writer never uses a closed (possibly reused) descriptor.
private final class SimulatedLines: Sendable {
    private struct State {
        var physical: [GPIOLevel]
        var outputs: [GPIOLevel]
        /// -1 once closed.
        var writeEnds: [CInt]
        var outputFailure: Errno?
        /// Injected failures of the close path, by output.
        var closeFailures: [Int: Errno] = [:]
        /// Chips (paths) that have vanished.
        var vanished: Set<String> = []
    }
    private let state: Locked<State>
    private let inputChips: [String]
    private let outputChips: [String]

    init(physical: [GPIOLevel], outputs: [GPIOLevel], writeEnds: [CInt], inputChips: [String], outputChips: [String]) {
        state = Locked(State(physical: physical, outputs: outputs, writeEnds: writeEnds, outputFailure: nil))
        self.inputChips = inputChips
        self.outputChips = outputChips
    }

    func physicalLevel(of input: Int) -> GPIOLevel { state.withLock { $0.physical[input] } }
    func outputLevel(_ index: Int) -> GPIOLevel { state.withLock { $0.outputs[index] } }
    func setOutputFailure(_ errno: Errno?) { state.withLock { $0.outputFailure = errno } }
    func setCloseFailure(_ index: Int, _ errno: Errno) { state.withLock { $0.closeFailures[index] = errno } }
    func vanish(chipPath: String) { state.withLock { _ = $0.vanished.insert(chipPath) } }
    func isVanished(_ chipPath: String) -> Bool { state.withLock { $0.vanished.contains(chipPath) } }

    /// Makes the stream's descriptor readable (one byte) whatever the chip's state.
    func wake(stream: Int) {
        state.withLock { state in
            let fd = state.writeEnds[stream]
            guard fd >= 0 else { return }
            var byte: UInt8 = 0
            _ = withUnsafeBytes(of: &byte) { Sys.write(fd, from: $0) }
        }
    }

    /// What reading the line gives: its level, or ENODEV once its chip has vanished.
    func readLevel(of input: Int) -> Result<GPIOLevel, Errno> {
        state.withLock { state in
            state.vanished.contains(inputChips[input]) ? .failure(.operationNotSupportedByDevice) : .success(state.physical[input])
        }
    }

    /// nil on success, else the errno: ENODEV once the chip has vanished; the injected failure
    /// (`failOutputWrites` while running, `failSafeLevelAtClose` when `closing`).
    func setOutput(_ index: Int, to level: GPIOLevel, closing: Bool = false) -> Errno? {
        state.withLock { state in
            if state.vanished.contains(outputChips[index]) { return .operationNotSupportedByDevice }
            if closing, let failure = state.closeFailures[index] { return failure }
            if !closing, let failure = state.outputFailure { return failure }
            state.outputs[index] = level
            return nil
        }
    }

    func write(stream: Int, input: Int, finalLevel: GPIOLevel, records: [smp_gpio_edge_event]) -> Bool {
        state.withLock { state in
            let fd = state.writeEnds[stream]
            guard fd >= 0, !state.vanished.contains(inputChips[input]) else { return false }
            // Up to PIPE_BUF bytes are written atomically: the reader never sees part of a record.
            // The level changes under the same lock, so `readLevel` never sees one without the other.
            let result = records.withUnsafeBytes { Sys.write(fd, from: $0) }
            guard case .success(.transferred(let written)) = result,
                  written == records.count * MemoryLayout<smp_gpio_edge_event>.stride else { return false }
            state.physical[input] = finalLevel
            return true
        }
    }

    func closeWriteEnd(_ stream: Int) {
        state.withLock { state in
            let fd = state.writeEnds[stream]
            guard fd >= 0 else { return }
            state.writeEnds[stream] = -1
            _ = Sys.close(fd)
        }
    }
}
