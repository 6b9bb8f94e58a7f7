import CSMPShim
import Dispatch
import Logging
import SMPSystem
import SystemPackage

/// Interlock lines on real GPIO chips, through libgpiod (v1 or v2, whichever the C shim was
/// compiled against) behind the shim's `smp_gpio_*` API.
///
/// Per chip: one input request (every input line of that chip, both-edge events, each line with
/// its own polarity and bias) whose single event descriptor is watched by the pipeline's poll thread,
/// and one output request. Debounce: with libgpiod v2 the kernel debounces lines that are
/// debounced in both directions; every line with an `immediateLevel` (all interlocks) is
/// debounced here instead, because the kernel's debounce would also delay the stop edge. With
/// libgpiod v1 (no kernel debounce) every line is debounced here. See `GPIOInputPipeline`.
///
/// `@unchecked Sendable`: the mutable state is touched only on `queue`.
public final class LibgpiodBackend: InterlockLineBackend, @unchecked Sendable {
    public let queue: DispatchQueue
    public let inputs: [GPIOInputLine]
    public let outputs: [GPIOOutputLine]
    private let pipeline: GPIOInputPipeline
    private let logger: Logger
    /// Output requests, one per chip, and where each output is: request and position.
    private var outputRequests: [OpaquePointer]
    private let outputLocation: [(request: Int, position: Int)]
    private var closed = false
    private var closeFailures: [GPIOSafeLevelFailure] = []

    /// The libgpiod API major version the shim was compiled against (1 or 2).
    public static var apiVersion: Int { Sys.gpioAPIVersion() }

    private init(queue: DispatchQueue, inputs: [GPIOInputLine], outputs: [GPIOOutputLine], pipeline: GPIOInputPipeline,
                 outputRequests: [OpaquePointer], outputLocation: [(request: Int, position: Int)], logger: Logger) {
        self.queue = queue
        self.inputs = inputs
        self.outputs = outputs
        self.pipeline = pipeline
        self.outputRequests = outputRequests
        self.outputLocation = outputLocation
        self.logger = logger
    }

    deinit {
        // Reached without `close()` only if nothing was started; leave the outputs safe anyway.
        releaseOutputs()
    }

    /// Opens the chips and requests the lines. Outputs are driven to their `safeLevel` from the
    /// moment they are requested (needle power off). Throws naming the chip, the line and, for
    /// access problems, the udev rule and group. Call from any thread; later calls on `queue`.
    /// `healthCheckInterval`: how often one line of each input request is read (one get-value
    /// ioctl) to notice a chip that went away without waking the request's descriptor; nil:
    /// never. The interlocks pass a quarter of the applicator's lease.
    public static func open(
        inputs: [GPIOInputLine], outputs: [GPIOOutputLine], consumer: String = "smpctl",
        healthCheckInterval: Duration? = nil, queue: DispatchQueue, logger: Logger
    ) throws(GPIOError) -> LibgpiodBackend {
        var chips: [(path: String, name: String, handle: OpaquePointer)] = []
        var inputRequests: [OpaquePointer] = []
        var outputRequests: [OpaquePointer] = []
        var succeeded = false
        defer {
            if !succeeded {
                for request in inputRequests { Sys.gpioRelease(request) }
                for request in outputRequests { Sys.gpioRelease(request) }
            }
            for chip in chips { Sys.gpioChipClose(chip.handle) }  // requests keep their own reference
        }

        // Chips in order of first mention.
        var chipOrder: [(path: String, name: String)] = []
        for (path, name) in inputs.map({ ($0.chipPath, $0.chip) }) + outputs.map({ ($0.chipPath, $0.chip) })
        where !chipOrder.contains(where: { $0.path == path }) {
            chipOrder.append((path, name))
        }
        for chip in chipOrder {
            switch Sys.gpioChipOpen(chip.path) {
            case .success(let handle): chips.append((chip.path, chip.name, handle))
            case .failure(let errno): throw GPIOError.opening(chip: chip.name, path: chip.path, errno: errno)
            }
        }

        var streams: [GPIOInputPipeline.Stream] = []
        var pipelineDebounce = inputs.map(\.debounce)
        let kernelDebounce = Sys.gpioKernelDebounce()
        var outputLocation = [(request: Int, position: Int)](repeating: (-1, -1), count: outputs.count)

        for chip in chips {
            let lineCount: Int
            switch Sys.gpioChipLineCount(chip.handle) {
            case .success(let count): lineCount = count
            case .failure(let errno): throw GPIOError.io(operation: "reading the line count", chip: chip.name, errno: errno)
            }

            let chipInputs = inputs.indices.filter { inputs[$0].chipPath == chip.path }
            if !chipInputs.isEmpty {
                var configs: [smp_gpio_line_config] = []
                for index in chipInputs {
                    let line = inputs[index]
                    guard Int(line.lineOffset) < lineCount else {
                        throw GPIOError.lineOutOfRange(name: line.name, chip: chip.name, lineOffset: line.lineOffset,
                                                       lineCount: lineCount)
                    }
                    // The kernel's debounce is symmetric: use it only where that is what is wanted.
                    let inKernel = kernelDebounce && line.immediateLevel == nil && line.debounce > .zero
                    if inKernel { pipelineDebounce[index] = .zero }
                    let microseconds = inKernel ? UInt32(clamping: line.debounce.nanoseconds / 1000) : 0
                    configs.append(smp_gpio_line_config(
                        offset: line.lineOffset, active_low: line.activeLow ? 1 : 0, bias: line.bias.shimValue,
                        debounce_us: microseconds, initial_value: 0))
                }
                let request: OpaquePointer
                switch Sys.gpioRequestInputs(chip.handle, consumer: consumer, lines: configs) {
                case .success(let made): request = made
                case .failure(let errno):
                    throw GPIOError.requesting(chip: chip.name, path: chip.path, offsets: configs.map(\.offset),
                                               operation: "requesting input lines", errno: errno)
                }
                inputRequests.append(request)
                let chipName = chip.name
                streams.append(GPIOInputPipeline.Stream(
                    fd: Sys.gpioRequestFD(request),
                    chip: chipName,
                    lines: chipInputs.map { (inputs[$0].lineOffset, $0) },
                    readEvents: { buffer in Sys.gpioReadEdgeEvents(request, into: buffer) },
                    readLevel: { position in Sys.gpioValue(request, index: position).map { $0 ? .active : .inactive } },
                    release: { Sys.gpioRelease(request) }))
            }

            let chipOutputs = outputs.indices.filter { outputs[$0].chipPath == chip.path }
            if !chipOutputs.isEmpty {
                var configs: [smp_gpio_line_config] = []
                for (position, index) in chipOutputs.enumerated() {
                    let line = outputs[index]
                    guard Int(line.lineOffset) < lineCount else {
                        throw GPIOError.lineOutOfRange(name: line.name, chip: chip.name, lineOffset: line.lineOffset,
                                                       lineCount: lineCount)
                    }
                    configs.append(smp_gpio_line_config(
                        offset: line.lineOffset, active_low: line.activeLow ? 1 : 0, bias: GPIOBias.asIs.shimValue,
                        debounce_us: 0, initial_value: line.safeLevel == .active ? 1 : 0))
                    outputLocation[index] = (outputRequests.count, position)
                }
                switch Sys.gpioRequestOutputs(chip.handle, consumer: consumer, lines: configs) {
                case .success(let request): outputRequests.append(request)
                case .failure(let errno):
                    throw GPIOError.requesting(chip: chip.name, path: chip.path, offsets: configs.map(\.offset),
                                               operation: "requesting output lines", errno: errno)
                }
            }
        }

        let pipeline = GPIOInputPipeline(queue: queue, inputs: inputs, debounce: pipelineDebounce, streams: streams,
                                         healthCheckInterval: healthCheckInterval, logger: logger)
        succeeded = true
        let summary = "\(inputs.count) input(s), \(outputs.count) output(s) on \(chips.count) chip(s)"
        logger.info("GPIO: \(summary), libgpiod v\(Sys.gpioAPIVersion())")
        return LibgpiodBackend(queue: queue, inputs: inputs, outputs: outputs, pipeline: pipeline,
                               outputRequests: outputRequests, outputLocation: outputLocation, logger: logger)
    }

    public func start(onChange: @escaping (GPIOInputChange) -> Void) {
        pipeline.start(onChange: onChange)
    }

    /// The health check, for a thread that wakes anyway to carry (`GPIOInputPipeline`).
    package var healthCheckDuty: any PassDuty { pipeline }

    public func setOutput(_ index: Int, to level: GPIOLevel) throws(GPIOError) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard !closed else { throw .closed }
        let (request, position) = outputLocation[index]
        if case .failure(let errno) = Sys.gpioSetValue(outputRequests[request], index: position, active: level == .active) {
            throw .io(operation: "setting \"\(outputs[index].name)\" \(level)", chip: outputs[index].chip, errno: errno)
        }
    }

    @discardableResult
    public func close(onClosed: (@Sendable () -> Void)?) -> [GPIOSafeLevelFailure] {
        dispatchPrecondition(condition: .onQueue(queue))
        if !closed {
            closed = true
            closeFailures = releaseOutputs()
        }
        pipeline.close(onClosed: onClosed)
        return closeFailures
    }

    /// Drives each output to its safe level, then releases it; returns the outputs that could not
    /// be driven (the caller must make that the session's outcome: the needle power may be on).
    /// The released line keeps its last value on most chips; the wiring must still make
    /// "unpowered" the safe state (a pull-down on the needle-power relay's input), for a crash
    /// releases the line without this.
    @discardableResult
    private func releaseOutputs() -> [GPIOSafeLevelFailure] {
        guard !outputRequests.isEmpty else { return [] }
        var failures: [GPIOSafeLevelFailure] = []
        for (index, output) in outputs.enumerated() {
            let (request, position) = outputLocation[index]
            if case .failure(let errno) = Sys.gpioSetValue(outputRequests[request], index: position,
                                                             active: output.safeLevel == .active) {
                logger.critical("could not drive \"\(output.name)\" to \(output.safeLevel) before release: \(errno)")
                failures.append(GPIOSafeLevelFailure(
                    output: index, name: output.name, chip: output.chip, lineOffset: output.lineOffset,
                    safeLevel: output.safeLevel,
                    error: .io(operation: "setting \"\(output.name)\" \(output.safeLevel) before release",
                               chip: output.chip, errno: errno)))
            }
        }
        for request in outputRequests { Sys.gpioRelease(request) }
        outputRequests = []
        return failures
    }
}
