import FirmwareCore
import FirmwareProtocol

/// The firmware's main loop on a board: the same `Firmware` state machine the simulator runs
/// (Sources/FirmwareCore), fed the UART's bytes and the clock, its frames written back, the needle
/// power output following its state. Every buffer is allocated once, at start; the per-frame path
/// reuses them.
struct Application<B: Board> {
    private var board: B
    private var firmware: Firmware
    private let receiveBuffer: UnsafeMutableBufferPointer<UInt8>
    private var transmitBuffer: [UInt8] = []
    private var needlePower = false
    /// The deadline an `advance` was called for (lease expiry, phase end), for the hold latency.
    private var lastDeadline: UInt64 = 0
    /// When the needle power decision for the latest output was made (cycles, µs): the end of the
    /// latencies the trace reports, taken before any trace line is written.
    private var decisionCycles: UInt64 = 0
    private var decisionMicroseconds: UInt64 = 0

    init(board: B, configuration: FirmwareConfiguration) {
        self.board = board
        firmware = Firmware(configuration: configuration, at: board.microseconds())
        receiveBuffer = .allocate(capacity: 256)
        transmitBuffer.reserveCapacity(1024)
    }

    mutating func run() -> Never {
        trace(boot: true)
        // As in the simulator, nothing goes out until the host speaks.
        while true {
            let count = board.receive(into: receiveBuffer)
            if count > 0 {
                let output = firmware.receive(UnsafeBufferPointer(rebasing: receiveBuffer[..<count]),
                                              at: board.microseconds())
                handle(output)
            }
            let pressed = board.estopPressed()
            if pressed != firmware.estopButtonPressed {
                handle(firmware.setEstopButton(pressed: pressed, at: board.microseconds()))
            }
            let contact = board.skinContact()
            if contact != firmware.skinContact {
                handle(firmware.setSkinContact(contact, at: board.microseconds()))
            }
            let now = board.microseconds()
            if let deadline = firmware.nextDeadline, deadline <= now {
                lastDeadline = deadline
                handle(firmware.advance(to: now))
            } else if count == 0 {
                board.idle()  // the next clock tick (1 ms) or a received byte wakes it
            }
        }
    }

    private mutating func handle(_ output: FirmwareOutput) {
        // Safety first: the needle power follows the state before any frame goes out.
        let state = firmware.snapshot.state
        let powered = state == .ready || state == .running
        if powered != needlePower {
            needlePower = powered
            board.setNeedlePower(powered)
        }
        decisionCycles = board.cycles()
        decisionMicroseconds = board.microseconds()
        for event in output.events {
            switch event {
            case .injected(let dot): trace(dot)
            case .stateChanged(let state, let fault): trace(state: state, fault: fault)
            case .dotRefused(_, let dotID, let code, _): trace(refused: dotID, code: code)
            case .frameDiscarded: break
            default: break
            }
        }
        guard !output.frames.isEmpty else { return }
        transmitBuffer.removeAll(keepingCapacity: true)
        for frame in output.frames { frame.encode(into: &transmitBuffer) }
        transmitBuffer.withUnsafeBufferPointer { board.transmit($0) }
    }

    // MARK: - Trace lines (NDJSON on the board's diagnostic channel, for the test rig)

    private func emit(_ build: (inout TraceLine) -> Void) {
        TraceLine.with(build) { board.trace($0) }
    }

    private func trace(boot: Bool) {
        let bootID = firmware.bootID
        emit { line in
            line.text("{\"event\":\"boot\",")
            line.field("boot_id", UInt64(bootID)); line.text(",")
            line.field("static_ram", UInt64(smp_static_ram())); line.text(",")
            line.field("heap_limit", UInt64(smp_heap_limit())); line.text("}")
        }
    }

    /// One line per dot the needle entered the skin for: the firmware's own ground truth, with
    /// some of the keys of the simulator's record (`GroundTruthRecord`; hil/hil_helper.py reads
    /// `dot` and `outcome`).
    private func trace(_ dot: InjectedDot) {
        emit { line in
            line.text("{")
            line.field("dot", UInt64(dot.dotID)); line.text(",")
            line.field("epoch", UInt64(dot.epoch)); line.text(",")
            line.field("dwell_done_us", dot.dwellDeliveredMicroseconds); line.text(",")
            line.field("wall_time_us", dot.wallTimeMicroseconds); line.text(",")
            line.field("boot_id", UInt64(dot.bootID)); line.text(",")
            line.field("done_count", UInt64(dot.doneCount)); line.text(",")
            line.text(dot.outcome == .done ? "\"outcome\":\"done\"}" : "\"outcome\":\"interrupted\"}")
        }
    }

    private func trace(state: DeviceState, fault: FaultCode) {
        let now = decisionMicroseconds, cycles = decisionCycles
        let delimiterCycles = smp_rx_last_delimiter_cycles
        let deadline = lastDeadline
        emit { line in
            line.text("{\"event\":\"state\",\"state\":\"")
            line.text(Self.name(state))
            line.text("\",\"fault\":\"")
            line.text(Self.name(fault))
            line.text("\",")
            line.field("t_us", now); line.text(",")
            line.field("needle_power", needlePower ? 1 : 0); line.text(",")
            if fault == .hostEstop || fault == .dotOutOfLimits {
                // The frame's last byte (its delimiter) entering the UART → the power decision made.
                line.field("rx_to_power_off_cycles", cycles &- delimiterCycles); line.text(",")
            }
            if fault == .leaseExpired {
                line.field("deadline_to_hold_us", now &- deadline); line.text(",")
            }
            line.field("heap_high_water", UInt64(smp_heap_high_water())); line.text(",")
            line.field("stack_high_water", UInt64(smp_stack_high_water())); line.text(",")
            line.field("allocations", UInt64(smp_alloc_count())); line.text(",")
            line.field("rx_overruns", UInt64(board.receiveOverruns())); line.text("}")
        }
    }

    private func trace(refused dotID: UInt32, code: ErrorCode) {
        emit { line in
            line.text("{\"event\":\"refused\",")
            line.field("dot", UInt64(dotID)); line.text(",")
            line.field("code", UInt64(code.rawValue)); line.text("}")
        }
    }

    private static func name(_ state: DeviceState) -> StaticString {
        switch state {
        case .disarmed: "disarmed"
        case .ready: "ready"
        case .running: "running"
        case .held: "held"
        case .estop: "estop"
        case .fault: "fault"
        }
    }

    private static func name(_ fault: FaultCode) -> StaticString {
        switch fault {
        case .none: "none"
        case .estopButton: "estop_button"
        case .hostEstop: "host_estop"
        case .contactLost: "contact_lost"
        case .overDepth: "over_depth"
        case .leaseExpired: "lease_expired"
        case .dotOutOfLimits: "dot_out_of_limits"
        case .hostHold: "host_hold"
        case .hostAbort: "host_abort"
        }
    }
}
