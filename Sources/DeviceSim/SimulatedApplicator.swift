import Dispatch
import FirmwareProtocol
import Logging
import SMPSystem

/// Options of a simulated applicator: the firmware's own configuration (`firmware`; its fields
/// read and written through this value: `options.timeScale`, `options.faults`, …) and what only
/// the simulator adds around it — where it serves, its ground-truth file, the boot ids' source.
/// Defaults: real time, seed 1, no record file, a new pseudo-terminal and no link to it, the
/// simulator's hardware limits, a queue of 32, firmware id "smp-sim 1.0", no faults.
@dynamicMemberLookup
public struct SimulatorOptions: Sendable {
    /// What the firmware is: limits, pace and spacing floors, queue, id, capabilities, time scale,
    /// seed, faults (`FirmwareConfiguration`). Its `bootIDEntropy` is replaced at start (below).
    public var firmware = FirmwareConfiguration()
    /// Where the boot ids come from (`FirmwareConfiguration.bootIDEntropy`). nil, the default:
    /// drawn from the operating system's random source at start, so two starts never share a
    /// boot id whatever the seed (a host that resumed on a restarted simulator must see a
    /// reboot). Tests that need a reproducible boot id set it.
    public var bootIDEntropy: UInt64? = nil
    /// NDJSON ground-truth file, appended to (see `GroundTruthRecord`).
    public var recordPath: String? = nil
    /// Keep the ground truth in memory too (`injectedDots`), for in-process tests. The CLI turns
    /// it off: nobody reads it there, and it grew with every dot of the session.
    public var keepsGroundTruthInMemory = true
    /// A symbolic link to the slave tty, kept while running (an existing link is replaced, a
    /// regular file is refused), removed on stop. Not with `portPath`.
    public var linkPath: String? = nil
    /// Serve the firmware on this existing tty instead of a new pseudo-terminal: the device's end
    /// of a real serial link, e.g. the USB gadget side `/dev/ttyGS0` whose host side is a
    /// `/dev/ttyACMn` (the hardware-in-the-loop rig, hil/). Opened O_RDWR | O_NOCTTY | O_NONBLOCK
    /// | O_CLOEXEC, locked against a second simulator (flock), raw. `devicePath` is then this path.
    /// A host unplugging shows up on the gadget side as a hang-up (end of file, EIO, POLLHUP) or
    /// just as silence: after a hang-up the simulator closes the port and opens it again every
    /// `portReopenIntervalMicroseconds` until it can (the firmware runs on meanwhile), so a host
    /// that plugs in again finds the device. Not with `linkPath`.
    public var portPath: String? = nil
    /// Pace the wire like an 8N1 UART at this baud (`smpctl sim --baud N`): bytes leave for the
    /// host and reach the firmware at N/10 per second each way, back to back while they wait, a
    /// frame at a time (its last byte's time). nil: as fast as the pseudo-terminal. So a link's
    /// utilisation at 115200 or 921600 can be measured without hardware or a relay.
    public var baud: Int? = nil

    public init() {}

    /// A field of the firmware's configuration, e.g. `options.timeScale`.
    public subscript<Value>(dynamicMember field: WritableKeyPath<FirmwareConfiguration, Value>) -> Value {
        get { firmware[keyPath: field] }
        set { firmware[keyPath: field] = newValue }
    }

    /// The firmware's configuration; `bootIDEntropy` from the OS's random source unless set.
    func firmwareConfiguration() -> FirmwareConfiguration {
        var configuration = firmware
        var system = SystemRandomNumberGenerator()
        configuration.bootIDEntropy = bootIDEntropy ?? system.next()
        return configuration
    }

    func validate() throws(SimulatorError) {
        guard firmware.timeScale.isFinite, firmware.timeScale >= 0 else { throw .invalidOption("timeScale \(firmware.timeScale) must be ≥ 0") }
        if let baud, baud < 300 || baud > 12_000_000 { throw .invalidOption("baud \(baud) must be 300…12000000") }
        guard (1...64).contains(firmware.queueCapacity) else { throw .invalidOption("queueCapacity \(firmware.queueCapacity) must be 1…64") }
        guard firmware.firmwareID.isPrintableASCII else {
            throw .invalidOption("firmwareID must be at most 16 printable ASCII characters")
        }
        if let portPath {
            guard !portPath.isEmpty else { throw .invalidOption("portPath is empty") }
            guard linkPath == nil else {
                throw .invalidOption("portPath and linkPath exclude each other (a link points to a new pseudo-terminal)")
            }
        }
        guard firmware.limits.depthMinMicrometres <= firmware.limits.depthMaxMicrometres,
              firmware.limits.dwellMinMicroseconds <= firmware.limits.dwellMaxMicroseconds else {
            throw .invalidOption("limits: a minimum above its maximum")
        }
    }
}

/// The applicator's firmware (`Firmware`) emulated behind a pseudo-terminal (or, with
/// `SimulatorOptions.portPath`, on an existing tty such as a USB gadget's): a host opens
/// `devicePath` exactly as it would open the real device's tty.
///
/// One serial DispatchQueue owns everything: the pty master descriptor, its read source (read
/// until EAGAIN), the write path (partial writes looped; on EAGAIN a pending buffer drained by a
/// write source on a `dup` of the master, so no descriptor ever has two sources), and ONE timer
/// re-armed at an absolute monotonic deadline: the earliest of the firmware's `nextDeadline`, the
/// release of a delayed frame and a pending reconnection. Each descriptor with a source is closed
/// only in that source's cancel handler. State shared with other threads sits in a `Mutex`,
/// locked on the queue and by the thread-safe snapshots.
///
/// Call `stop()` when done: the sources keep the pty open until then.
public final class SimulatedApplicator: Sendable {
    public let options: SimulatorOptions
    private let queue: DispatchQueue
    private let core: Locked<Core>
    private let record: GroundTruthRecord
    /// Entered when a source is created, left in its cancel handler: `stop()` waits on it.
    private let sourcesDone = DispatchGroup()
    private let logger: Logger
    /// CLOCK_MONOTONIC (Dispatch uptime) at start, the origin of the firmware's wall time.
    private let origin: UInt64

    /// Wall time before a disconnected link (fault `disconnect-at`) comes back as a new pty.
    public static let reconnectDelayMicroseconds: UInt64 = 500_000
    /// With `portPath`: after the port hung up (a host unplugged; or fault `disconnect-at`), how
    /// often the simulator tries to open it again until it can.
    public static let portReopenIntervalMicroseconds: UInt64 = 100_000
    /// Bytes kept for a host that does not read; beyond this, output is dropped (and logged).
    public static let maximumPendingBytes = 1 << 20

    private struct Core {
        var firmware: Firmware
        var link: LinkFaultInjector
        var devicePath: String
        var master: Int32?
        var slave: Int32?
        var readSource: (any DispatchSourceRead)?
        var writeSource: (any DispatchSourceWrite)?
        var timer: (any DispatchSourceTimer)?
        var pending: [UInt8] = []
        var delayed: [(release: UInt64, bytes: [UInt8])] = []
        var droppedOutputBytes = 0
        var reconnectAt: UInt64?
        /// Reopening `portPath` has failed since the last hang-up (logged once, not every try).
        var reopenFailing = false
        /// A cancelled master's read source has not run its cancel handler yet.
        var masterClosing = false
        var stopped = false
        /// Reads whose bytes were dated before the read (LateReadCredit): the simulator was starved.
        var lateReadCredits = 0
        /// Device faults of the plan that fired, by kind (`InjectedFault.rawValue`).
        var deviceFaults: [String: Int] = [:]
        /// With `baud`: bytes read from the host, each block due when its last byte would have
        /// crossed the wire; and when each direction's wire is free again (wall µs).
        var inbound: [(due: UInt64, bytes: [UInt8])] = []
        var inboundWireFree: UInt64 = 0
        var outboundWireFree: UInt64 = 0
    }

    /// Wall µs that `count` bytes take on an 8N1 line at `baud` (10 bits a byte).
    static func wireMicroseconds(_ count: Int, baud: Int) -> UInt64 {
        UInt64(count) * 10_000_000 / UInt64(baud)
    }

    /// Opens the pty (and the link and the record), or the port, and starts the device.
    public static func start(_ options: SimulatorOptions, logger: Logger) throws -> SimulatedApplicator {
        try options.validate()
        let record = try GroundTruthRecord(path: options.recordPath, keepsEntries: options.keepsGroundTruthInMemory)
        let pty = try openTerminal(options)
        let applicator = SimulatedApplicator(options: options, logger: logger, record: record, pty: pty)
        applicator.queue.sync {
            applicator.core.withLock { core in
                applicator.attach(pty, to: &core)
                let timer = DispatchSource.makeTimerSource(flags: .strict, queue: applicator.queue)
                timer.setEventHandler { [weak applicator] in applicator?.timerFired() }
                let group = applicator.sourcesDone
                group.enter()
                timer.setCancelHandler { group.leave() }
                timer.schedule(deadline: .distantFuture, leeway: .nanoseconds(0))
                core.timer = timer
                timer.resume()
                applicator.rearm(&core)
            }
        }
        var metadata: Logger.Metadata = ["device": "\(pty.path)", "boot_id": "\(applicator.status.bootID)",
                                         "time_scale": "\(options.timeScale)", "seed": "\(options.seed)"]
        if options.faults != .none { metadata["faults"] = "\(options.faults)" }
        if options.portPath != nil { metadata["port"] = "existing tty" }
        logger.info("simulated applicator started", metadata: metadata)
        return applicator
    }

    /// The device's end of the link: `portPath` opened, or a new pty (with the link pointed at it).
    private static func openTerminal(_ options: SimulatorOptions) throws(SimulatorError) -> PseudoTerminal {
        if let port = options.portPath {
            return try PseudoTerminal.openPort(port)
        }
        let pty = try PseudoTerminal.open()
        if let link = options.linkPath {
            do {
                try PseudoTerminal.installLink(link, to: pty.path)
            } catch {
                pty.close()
                throw error
            }
        }
        return pty
    }

    private init(options: SimulatorOptions, logger: Logger, record: GroundTruthRecord, pty: PseudoTerminal) {
        self.options = options
        self.logger = logger
        self.record = record
        queue = DispatchQueue(label: "smpctl.devicesim.\(pty.path)")
        origin = DispatchTime.now().uptimeNanoseconds
        core = Locked(Core(firmware: Firmware(configuration: options.firmwareConfiguration(), at: 0),
                          link: LinkFaultInjector(plan: options.faults, seed: options.seed),
                          devicePath: pty.path))
    }

    deinit {
        // Without stop(): release the descriptors at least (the cancel handlers close them).
        core.withLock { core in
            core.timer?.cancel()
            core.readSource?.cancel()
            core.writeSource?.cancel()
            if let slave = core.slave { closeDescriptor(slave) }
        }
    }

    // MARK: - Public API

    /// The slave tty path (e.g. /dev/pts/7), or `portPath`. Changes only when a `disconnect-at`
    /// fault brings the link back as a new pty.
    public var devicePath: String {
        core.withLock { $0.devicePath }
    }

    /// Stops the device: cancels every source (their cancel handlers close the descriptors), waits
    /// for them, removes the link. Synchronous and idempotent; never call it from a handler.
    public func stop() {
        dispatchPrecondition(condition: .notOnQueue(queue))
        let path: String? = queue.sync {
            core.withLock { core -> String? in
                guard !core.stopped else { return nil }
                core.stopped = true
                core.reconnectAt = nil
                core.timer?.cancel()
                core.timer = nil
                detach(&core)
                return core.devicePath
            }
        }
        sourcesDone.wait()
        if let path, let link = options.linkPath {
            PseudoTerminal.removeLink(link, ifPointingTo: path)
        }
        record.close()
        if path != nil { logger.info("simulated applicator stopped") }
    }

    /// A snapshot of the ground truth, thread-safe (empty unless `keepsGroundTruthInMemory`).
    public var injectedDots: [InjectedDot] {
        record.entries
    }

    /// A snapshot of the device, thread-safe.
    public var status: SimulatorSnapshot {
        core.withLock { $0.firmware.snapshot }
    }

    /// How many times bytes read late were dated before the read because they kept the lease
    /// (the simulator's thread was starved; LateReadCredit).
    public var lateReadCredits: Int {
        core.withLock { $0.lateReadCredits }
    }

    /// Link faults applied so far (host → device, device → host).
    public var linkFaultCounters: (toDevice: LinkFaultCounters, toHost: LinkFaultCounters) {
        core.withLock { ($0.link.toDevice, $0.link.toHost) }
    }

    /// Device faults of the plan that fired so far, by kind (`reset`, `estop`, …).
    public var deviceFaultCounts: [String: Int] {
        core.withLock { $0.deviceFaults }
    }

    /// Presses the device's own e-stop button: latched estop (estop_button) at once.
    public func pressEstopButton() {
        drive { firmware, now in firmware.setEstopButton(pressed: true, at: now) }
    }

    /// Releases the button: only makes CLEAR possible; never restarts anything.
    public func releaseEstopButton() {
        drive { firmware, now in firmware.setEstopButton(pressed: false, at: now) }
    }

    /// The skin-contact sensor.
    public func setSkinContact(_ inContact: Bool) {
        drive { firmware, now in firmware.setSkinContact(inContact, at: now) }
    }

    /// Runs `work` on the simulator's queue (tests: starve the simulator as a loaded machine would).
    func asyncOnQueueForTesting(_ work: @escaping @Sendable () -> Void) {
        queue.async(execute: work)
    }

    // MARK: - Queue-confined work

    private func drive(_ input: (inout Firmware, UInt64) -> FirmwareOutput) {
        dispatchPrecondition(condition: .notOnQueue(queue))
        queue.sync {
            core.withLock { core in
                let now = clock()
                let output = input(&core.firmware, now)
                handle(output, at: now, in: &core)
                rearm(&core)
            }
        }
    }

    /// Wall µs since start, on the monotonic clock.
    private func clock() -> UInt64 {
        (DispatchTime.now().uptimeNanoseconds &- origin) / 1000
    }

    private func attach(_ pty: PseudoTerminal, to core: inout Core) {
        core.master = pty.master
        core.slave = pty.slave
        core.devicePath = pty.path
        let master = pty.master
        let source = DispatchSource.makeReadSource(fileDescriptor: master, queue: queue)
        source.setEventHandler { [weak self] in self?.readable() }
        let group = sourcesDone
        group.enter()
        source.setCancelHandler { [weak self] in
            closeDescriptor(master)
            self?.core.withLock { $0.masterClosing = false }
            group.leave()
        }
        core.readSource = source
        source.resume()
    }

    /// Drops the link: cancels the read and write sources (their cancel handlers close the master
    /// and its duplicate), closes the kept slave descriptor, forgets unsent output.
    private func detach(_ core: inout Core) {
        if let source = core.readSource {
            core.masterClosing = true
            source.cancel()
        }
        core.readSource = nil
        core.writeSource?.cancel()
        core.writeSource = nil
        if let slave = core.slave { closeDescriptor(slave) }
        core.slave = nil
        core.master = nil
        core.pending.removeAll()
        core.delayed.removeAll()
        core.inbound.removeAll()
    }

    private func readable() {
        core.withLock { core in
            drainInput(&core)
            rearm(&core)
        }
    }

    /// Reads and handles everything the host has sent so far. Also called before the timer's
    /// deadlines are judged: a real UART's interrupt has taken every byte in as it arrived, so a
    /// lease must never expire on bytes that were already here but not yet read.
    private func drainInput(_ core: inout Core) {
            guard let master = core.master else { return }
            var received: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            var hangUp = false
            reading: while true {
                let cause: String
                switch buffer.withUnsafeMutableBytes({ Sys.read(master, into: $0) }) {
                case .success(.transferred(let count)):
                    received.append(contentsOf: buffer[..<count])
                    continue
                case .success(.wouldBlock):
                    break reading
                case .success(.endOfFile):
                    cause = "end of file"
                case .failure(let errno):
                    cause = "\(errno)"
                }
                // EOF or EIO. A pty master: cannot happen while the slave descriptor is held; treat
                // as a lost link. A port: the host hung up (USB unplugged); reopened later.
                if options.portPath != nil {
                    logger.notice("port hung up (host unplugged?)", metadata: ["device": "\(core.devicePath)", "errno": "\(cause)"])
                } else {
                    logger.error("pty master read failed", metadata: ["errno": "\(cause)"])
                }
                hangUp = true
                break
            }
            let now = clock()
            if !received.isEmpty, let baud = options.baud {
                // The UART: each frame (up to its 0x00) is due when its last byte has crossed.
                var due = max(now, core.inboundWireFree)
                var block: [UInt8] = []
                let bytes = core.link.fromHost(received)
                for (index, byte) in bytes.enumerated() {
                    block.append(byte)
                    guard byte == 0 || index == bytes.count - 1 else { continue }
                    due += Self.wireMicroseconds(block.count, baud: baud)
                    core.inbound.append((due: due, bytes: block))
                    block.removeAll()
                }
                core.inboundWireFree = due
            } else if !received.isEmpty {
                let bytes = core.link.fromHost(received)
                // Bytes read late because this thread was starved may still have kept the lease
                // (LateReadCredit states the bound); the firmware then runs on to `now` at once.
                let arrival = LateReadCredit.forLease(core.firmware.leaseDurationMicroseconds)
                    .arrivalTime(readAt: now, lastLookedAt: core.firmware.now, leaseExpiry: core.firmware.leaseExpiry)
                handle(core.firmware.receive(bytes, at: arrival), at: now, in: &core)
                if arrival < now {
                    core.lateReadCredits += 1
                    handle(core.firmware.advance(to: now), at: now, in: &core)
                }
            }
            feedInbound(&core, at: now)
            if hangUp && core.master != nil {
                disconnect(&core, at: now)
            }
    }

    /// With `baud`: hands the firmware every byte that has crossed the wire by `now`, in one
    /// receive (one read of a UART's buffer), at the time the last of them arrived.
    private func feedInbound(_ core: inout Core, at now: UInt64) {
        var bytes: [UInt8] = []
        var arrival: UInt64 = 0
        var count = 0
        for block in core.inbound {
            guard block.due <= now else { break }
            bytes += block.bytes
            arrival = block.due
            count += 1
        }
        guard count > 0 else { return }
        core.inbound.removeFirst(count)
        handle(core.firmware.receive(bytes, at: max(arrival, core.firmware.now)), at: now, in: &core)
        if arrival < now { handle(core.firmware.advance(to: now), at: now, in: &core) }
    }

    private func timerFired() {
        core.withLock { core in
            guard !core.stopped else { return }
            drainInput(&core)
            let now = clock()
            handle(core.firmware.advance(to: now), at: now, in: &core)
            if let at = core.reconnectAt, at <= now {
                reconnect(&core, at: now)
            }
            flushDelayed(&core, at: now)
            rearm(&core)
        }
    }

    private func rearm(_ core: inout Core) {
        guard let timer = core.timer else { return }
        var deadline = core.firmware.nextDeadline
        func consider(_ time: UInt64?) {
            guard let time else { return }
            deadline = min(deadline ?? time, time)
        }
        consider(core.delayed.first?.release)
        consider(core.inbound.first?.due)
        consider(core.reconnectAt)
        if let deadline {
            timer.schedule(deadline: DispatchTime(uptimeNanoseconds: origin &+ deadline &* 1000),
                           leeway: .microseconds(50))
        } else {
            timer.schedule(deadline: .distantFuture, leeway: .nanoseconds(0))
        }
    }

    private func handle(_ output: FirmwareOutput, at now: UInt64, in core: inout Core) {
        for event in output.events {
            switch event {
            case .injected(let dot):
                record.append(dot)
            case .stateChanged(let state, let fault):
                logger.debug("device state", metadata: ["state": "\(state)", "fault": "\(fault.recordName)"])
            case .frameDiscarded(let error):
                logger.debug("discarded a bad block", metadata: ["error": "\(error)"])
            case .dotFenced(let seq, let dotID):
                logger.debug("fenced a stale-epoch DOT", metadata: ["seq": "\(seq)", "dot": "\(dotID)"])
            case .dotRefused(let seq, let dotID, let code, let value):
                logger.warning("refused a DOT (outside the hardware limits, or too close to a recent one)",
                               metadata: ["seq": "\(seq)", "dot": "\(dotID)", "code": "\(code)", "value": "\(value)"])
            case .underrun:
                break
            case .faultInjected(let fault, let dotID):
                core.deviceFaults[fault.rawValue, default: 0] += 1
                logger.notice("fault injected", metadata: ["fault": "\(fault.rawValue)", "dot": "\(dotID)"])
            case .rebooted(let bootID):
                logger.notice("device rebooted", metadata: ["boot_id": "\(bootID)"])
            case .disconnectRequested:
                disconnect(&core, at: now)
            }
        }
        guard core.master != nil, !output.frames.isEmpty else { return }
        var items = core.link.toHost(output.frames, at: now)
        if let baud = options.baud {
            // The UART: frames leave back to back, each released when its last byte has.
            for index in items.indices {
                let start = max(items[index].release, core.outboundWireFree)
                items[index].release = start + Self.wireMicroseconds(items[index].bytes.count, baud: baud)
                core.outboundWireFree = items[index].release
            }
        }
        core.delayed.append(contentsOf: items)
        flushDelayed(&core, at: now)
    }

    /// Writes the delayed frames that are due, in order.
    private func flushDelayed(_ core: inout Core, at now: UInt64) {
        var due: [UInt8] = []
        var count = 0
        for item in core.delayed {
            guard item.release <= now else { break }
            due.append(contentsOf: item.bytes)
            count += 1
        }
        guard count > 0 else { return }
        core.delayed.removeFirst(count)
        write(due, in: &core)
    }

    private func write(_ bytes: [UInt8], in core: inout Core) {
        guard let master = core.master else { return }
        if !core.pending.isEmpty {
            queuePending(bytes[...], in: &core)
            return
        }
        var offset = 0
        while offset < bytes.count {
            switch bytes.withUnsafeBytes({ Sys.write(master, from: UnsafeRawBufferPointer(rebasing: $0[offset...])) }) {
            case .success(.transferred(let count)):
                offset += count
            case .success(.wouldBlock), .success(.endOfFile):
                queuePending(bytes[offset...], in: &core)
                startWriteSource(&core)
                return
            case .failure(let errno):
                logger.warning("pty master write failed", metadata: ["errno": "\(errno)"])
                if errno.meansHangUp { disconnect(&core, at: clock()) }
                return
            }
        }
    }

    private func queuePending(_ bytes: ArraySlice<UInt8>, in core: inout Core) {
        guard core.pending.count + bytes.count <= Self.maximumPendingBytes else {
            if core.droppedOutputBytes == 0 {
                logger.warning("no host is reading the device; dropping output")
            }
            core.droppedOutputBytes += bytes.count
            return
        }
        core.pending.append(contentsOf: bytes)
    }

    private func startWriteSource(_ core: inout Core) {
        guard core.writeSource == nil, let master = core.master else { return }
        let duplicate: Int32
        switch Sys.duplicate(master) {
        case .success(let fd): duplicate = fd
        case .failure(let errno):
            logger.error("dup of the pty master failed", metadata: ["errno": "\(errno)"])
            return
        }
        let source = DispatchSource.makeWriteSource(fileDescriptor: duplicate, queue: queue)
        source.setEventHandler { [weak self] in self?.writable() }
        let group = sourcesDone
        group.enter()
        source.setCancelHandler {
            closeDescriptor(duplicate)
            group.leave()
        }
        core.writeSource = source
        source.resume()
    }

    private func writable() {
        core.withLock { core in
            guard let master = core.master else { return }
            draining: while !core.pending.isEmpty {
                switch core.pending.withUnsafeBytes({ Sys.write(master, from: $0) }) {
                case .success(.transferred(let count)):
                    core.pending.removeFirst(count)
                case .success(.wouldBlock), .success(.endOfFile):
                    return
                case .failure(let errno):
                    logger.warning("pty master write failed", metadata: ["errno": "\(errno)"])
                    core.pending.removeAll()
                    if errno.meansHangUp {
                        disconnect(&core, at: clock())
                        return
                    }
                    break draining
                }
            }
            core.writeSource?.cancel()
            core.writeSource = nil
        }
    }

    /// Fault `disconnect-at` (or a master or port that hung up): the link goes down; the firmware
    /// runs on. A pty comes back as a new one after `reconnectDelayMicroseconds`; a port is opened
    /// again after `portReopenIntervalMicroseconds`.
    private func disconnect(_ core: inout Core, at now: UInt64) {
        guard core.master != nil else { return }
        logger.notice("link disconnected", metadata: ["device": "\(core.devicePath)"])
        // The link goes with the pty, as udev removes a device's symlink on unplug: kept, it would
        // point at a freed /dev/pts/N that another process's new pty may get (the soak's two
        // trials at once did: one host resumed on the other trial's simulator).
        if options.portPath == nil, let link = options.linkPath {
            PseudoTerminal.removeLink(link, ifPointingTo: core.devicePath)
        }
        detach(&core)
        if !core.stopped {
            let delay = options.portPath != nil ? Self.portReopenIntervalMicroseconds : Self.reconnectDelayMicroseconds
            core.reconnectAt = now &+ delay
        }
    }

    private func reconnect(_ core: inout Core, at now: UInt64) {
        guard !core.masterClosing else {
            core.reconnectAt = now &+ 10_000  // the old master's cancel handler has not run yet
            return
        }
        core.reconnectAt = nil
        do {
            let pty = try Self.openTerminal(options)
            attach(pty, to: &core)
            core.reopenFailing = false
            logger.notice("link reconnected", metadata: ["device": "\(pty.path)"])
        } catch {
            if let port = options.portPath {
                // The port is gone (the gadget was removed) or not usable yet: try again soon.
                if !core.reopenFailing {
                    logger.notice("waiting for the port to come back", metadata: ["device": "\(port)", "error": "\(error)"])
                    core.reopenFailing = true
                }
                core.reconnectAt = now &+ Self.portReopenIntervalMicroseconds
            } else {
                logger.error("cannot reopen the pty", metadata: ["error": "\(error)"])
                core.reconnectAt = now &+ 1_000_000
            }
        }
    }
}
