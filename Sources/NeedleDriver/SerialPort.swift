import CSMPShim
import Dispatch
import SMPSystem
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// A raw 8N1 serial link to the applicator, driven by Dispatch sources on one serial queue.
///
/// Lifetime: after `start(…)`, or while a write is pending, the port keeps itself alive until
/// `close()` or until the link ends; `onClosed` is then called once, AFTER the file descriptor
/// has been closed, so reopening the same path from `onClosed` is safe.
///
/// Dispatch notes (Linux):
/// - Never two sources of the same kind on one fd, and never a new source on an fd number
///   before the old sources' cancel handlers have run (swift-corelibs-libdispatch #833: a
///   stale epoll "muxnote" is reused). So the fd is closed only in the read source's cancel
///   handler, which runs only after the write source's cancel handler, and the write source is
///   created once and then suspended/resumed, never re-created.
/// - One read source plus one write source on the same fd is supported: libdispatch's epoll
///   backend keeps one muxnote per fd with separate reader and writer lists and arms EPOLLIN
///   and EPOLLOUT independently (swift-corelibs-libdispatch PR #295, "all write sources of a
///   given fd could be suspended while read sources are active and vice versa").
///
/// `@unchecked Sendable`: every mutable stored property is read and written only on `queue`
/// (enforced with `dispatchPrecondition` in the entry points, and by construction in the
/// source handlers, which Dispatch runs on `queue`); the `let`s are immutable after `open`.
/// `queue` must be a serial queue.
public final class SerialPort: @unchecked Sendable {
    /// The device path given to `open`.
    public let path: String
    /// The baud rate the port was opened with.
    let baud: Int

    /// The serial queue given to `open`: callbacks run on it, and `write`/`close` are called on it.
    public let queue: DispatchQueue
    private let fd: CInt
    /// The termios found at open, restored at close (with CRTSCTS and HUPCL cleared).
    private let originalTermios: termios
    /// Reused by every read; owned by this object.
    private let readBuffer: UnsafeMutableRawBufferPointer

    // Everything below: only on `queue`.
    private enum State {
        /// Opened, `start` not yet run.
        case idle
        /// The read source is live.
        case running
        /// Sources being cancelled; the reason is what `onClosed` will get (nil: `close()`).
        case closing(SerialPortError?)
        /// The fd is closed.
        case closed(SerialPortError?)
        /// The fd belongs to a link's I/O thread (`handOver()`): this object only keeps the
        /// emergency write, and `closeHandedOver()` closes it.
        case handedOver
    }
    private var state: State = .idle
    private var fdIsClosed = false
    private var readSource: (any DispatchSourceRead)?
    private var writeSource: (any DispatchSourceWrite)?
    /// Whether `writeSource` is resumed (it is suspended while nothing is pending).
    private var writeSourceArmed = false
    /// Bytes accepted by `write` but not yet taken by the kernel.
    private var pending = PendingWrites()
    private var onBytes: (@Sendable (UnsafeRawBufferPointer) -> Void)?
    private var onClosed: (@Sendable (SerialPortError?) -> Void)?
    /// The fd for `emergencyWrite` from any thread; nil once the fd is about to close, so a
    /// stop can never be written to a descriptor number the kernel has given to someone else.
    private let emergencyFD: Locked<CInt?>

    static let readBufferSize = 4096
    /// Reads per readable event before yielding the queue to other work (level-triggered, so the
    /// source fires again if more is waiting).
    static let maxReadsPerEvent = 16

    private init(path: String, baud: Int, fd: CInt, originalTermios: termios, queue: DispatchQueue) {
        self.path = path
        self.baud = baud
        self.fd = fd
        self.originalTermios = originalTermios
        self.queue = queue
        self.readBuffer = .allocate(byteCount: Self.readBufferSize, alignment: 16)
        self.emergencyFD = Locked(fd)
    }

    deinit {
        // Reached only when no source holds `self` any more: either `start` never ran and no
        // write was ever pending (fd still open), or the teardown has finished (fd closed).
        emergencyFD.withLock { $0 = nil }
        if !fdIsClosed { Self.restoreAndClose(fd: fd, original: originalTermios) }
        readBuffer.deallocate()
    }

    // MARK: - Opening

    /// Opens `path` as a raw 8N1 serial port at `baud`, exclusively.
    ///
    /// Sets CLOCAL|CREAD, clears HUPCL (closing must never drop DTR and reset the device) and
    /// CRTSCTS, VMIN=1 VTIME=0, verifies the settings by reading them back, and discards stale
    /// input and output. `queue` must be serial; all later callbacks run on it.
    public static func open(
        path: String, baud: Int = 115200, queue: DispatchQueue
    ) throws(SerialPortError) -> SerialPort {
        guard let speed = speedConstants[baud] else { throw .unsupportedBaud(baud) }

        let fd: CInt
        switch Sys.open(path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC) {
        case .success(let descriptor): fd = descriptor
        case .failure(let errno): throw .opening(path, errno: errno)
        }
        var succeeded = false
        var exclusiveSet = false
        defer {
            if !succeeded {
                if exclusiveSet { _ = Sys.clearExclusive(fd) }
                _ = Sys.close(fd)
            }
        }
        func io(_ operation: String, _ errno: Errno) -> SerialPortError {
            .io(operation: operation, path: path, errno: errno)
        }

        switch Sys.isatty(fd) {
        case .success(true): break
        case .success(false): throw .notATerminal(path)
        case .failure(let errno): throw io("isatty", errno)
        }

        // Exclusive access, twice: flock stops cooperating processes (and root, whom TIOCEXCL
        // does not stop); TIOCEXCL stops every later non-root open(2), cooperating or not.
        switch Sys.flock(fd, LOCK_EX | LOCK_NB) {
        case .success: break
        case .failure(.wouldBlock): throw .busy(path)
        case .failure(let errno): throw io("flock", errno)
        }
        switch Sys.setExclusive(fd) {
        case .success: exclusiveSet = true
        case .failure(let errno): throw io("ioctl(TIOCEXCL)", errno)
        }

        let original: termios
        switch Sys.tcgetattr(fd) {
        case .success(let attributes): original = attributes
        case .failure(let errno): throw io("tcgetattr", errno)
        }

        var raw = original
        Sys.cfmakeraw(&raw)
        raw.c_cflag |= tcflag_t(CLOCAL | CREAD)
        raw.c_cflag &= ~(tcflag_t(HUPCL | CSTOPB) | CRTSCTS)
        raw.c_iflag &= ~tcflag_t(IXON | IXOFF | IXANY)
        withUnsafeMutableBytes(of: &raw.c_cc) { cc in
            cc[Int(VMIN)] = 1
            cc[Int(VTIME)] = 0
        }
        if case .failure(let errno) = Sys.cfsetispeed(&raw, speed) { throw io("cfsetispeed", errno) }
        if case .failure(let errno) = Sys.cfsetospeed(&raw, speed) { throw io("cfsetospeed", errno) }
        if case .failure(let errno) = Sys.tcsetattr(fd, TCSANOW, raw) { throw io("tcsetattr", errno) }

        // tcsetattr succeeds if ANY change was made: read back and compare what matters.
        switch Sys.tcgetattr(fd) {
        case .success(let applied):
            if let mismatch = Self.mismatch(requested: raw, applied: applied) {
                throw .settingsNotApplied(path: path, detail: mismatch)
            }
        case .failure(let errno): throw io("tcgetattr", errno)
        }

        if case .failure(let errno) = Sys.tcflush(fd, TCIOFLUSH) { throw io("tcflush", errno) }

        succeeded = true
        return SerialPort(path: path, baud: baud, fd: fd, originalTermios: original, queue: queue)
    }

    /// The standard rates, Int → `B…` constant (B0 is "hang up", not a rate).
    static let speedConstants: [Int: speed_t] = [
        50: speed_t(B50), 75: speed_t(B75), 110: speed_t(B110), 134: speed_t(B134),
        150: speed_t(B150), 200: speed_t(B200), 300: speed_t(B300), 600: speed_t(B600),
        1200: speed_t(B1200), 1800: speed_t(B1800), 2400: speed_t(B2400), 4800: speed_t(B4800),
        9600: speed_t(B9600), 19200: speed_t(B19200), 38400: speed_t(B38400),
        57600: speed_t(B57600), 115200: speed_t(B115200), 230400: speed_t(B230400),
        460800: speed_t(B460800), 500000: speed_t(B500000), 576000: speed_t(B576000),
        921600: speed_t(B921600), 1000000: speed_t(B1000000), 1152000: speed_t(B1152000),
        1500000: speed_t(B1500000), 2000000: speed_t(B2000000), 2500000: speed_t(B2500000),
        3000000: speed_t(B3000000), 3500000: speed_t(B3500000), 4000000: speed_t(B4000000),
    ]

    /// The baud rates `open` accepts, ascending.
    static var supportedBaudRates: [Int] { speedConstants.keys.sorted() }

    /// Describes the first difference that matters between requested and read-back settings.
    static func mismatch(requested: termios, applied: termios) -> String? {
        let cflagMask = tcflag_t(CSIZE | PARENB | CSTOPB | CLOCAL | CREAD | HUPCL) | CRTSCTS
        let lflagMask = tcflag_t(ICANON | ECHO | ECHONL | ISIG | IEXTEN)
        let iflagMask = tcflag_t(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL)
            | tcflag_t(IXON | IXOFF | IXANY)
        let oflagMask = tcflag_t(OPOST)
        let flags: [(name: String, wanted: tcflag_t, got: tcflag_t, mask: tcflag_t)] = [
            ("control", requested.c_cflag, applied.c_cflag, cflagMask),
            ("local", requested.c_lflag, applied.c_lflag, lflagMask),
            ("input", requested.c_iflag, applied.c_iflag, iflagMask),
            ("output", requested.c_oflag, applied.c_oflag, oflagMask),
        ]
        for flag in flags where flag.wanted & flag.mask != flag.got & flag.mask {
            let got = String(flag.got & flag.mask, radix: 16)
            let wanted = String(flag.wanted & flag.mask, radix: 16)
            return "\(flag.name) flags 0x\(got), wanted 0x\(wanted)"
        }
        let requestedCC = withUnsafeBytes(of: requested.c_cc) { ($0[Int(VMIN)], $0[Int(VTIME)]) }
        let appliedCC = withUnsafeBytes(of: applied.c_cc) { ($0[Int(VMIN)], $0[Int(VTIME)]) }
        if requestedCC != appliedCC {
            return "VMIN/VTIME \(appliedCC.0)/\(appliedCC.1), wanted \(requestedCC.0)/\(requestedCC.1)"
        }
        if Sys.cfgetispeed(requested) != Sys.cfgetispeed(applied)
            || Sys.cfgetospeed(requested) != Sys.cfgetospeed(applied)
        {
            return "speed not accepted by the driver"
        }
        return nil
    }

    // MARK: - Reading

    /// Starts the DispatchSourceRead; `onBytes` gets each read's bytes (called on `queue`; the
    /// buffer is valid only during the call); `onClosed` once, with nil after close() or the
    /// error that ended the link (EIO/ENXIO/POLLHUP/EOF mean the device went away:
    /// `.disconnected`). May be called from any thread: the source is started on `queue`.
    /// If the port is already closed, `onClosed` is called (on `queue`) with the reason.
    /// Calling it twice is a programming error.
    public func start(
        onBytes: @escaping @Sendable (UnsafeRawBufferPointer) -> Void,
        onClosed: @escaping @Sendable (SerialPortError?) -> Void
    ) {
        queue.async { self.startOnQueue(onBytes: onBytes, onClosed: onClosed) }
    }

    private func startOnQueue(
        onBytes: @escaping @Sendable (UnsafeRawBufferPointer) -> Void,
        onClosed: @escaping @Sendable (SerialPortError?) -> Void
    ) {
        dispatchPrecondition(condition: .onQueue(queue))
        precondition(self.onClosed == nil && readSource == nil, "SerialPort.start called twice")
        switch state {
        case .idle:
            break
        case .running:
            preconditionFailure("SerialPort.start called twice")
        case .closing:
            self.onClosed = onClosed  // the teardown in progress will call it
            return
        case .closed(let reason):
            onClosed(reason)
            return
        case .handedOver:
            preconditionFailure("SerialPort.start after handOver")
        }
        self.onBytes = onBytes
        self.onClosed = onClosed
        let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        // Strong captures: the cycle self → source → handler → self is what keeps a running
        // port alive; it is broken when the cancel handler runs and `readSource` is cleared.
        source.setEventHandler { self.readAvailable() }
        source.setCancelHandler { self.readSourceCancelled() }
        readSource = source
        state = .running
        source.activate()
    }

    private func readAvailable() {
        guard case .running = state else { return }
        var gotBytes = false
        for _ in 0..<Self.maxReadsPerEvent {
            switch Sys.read(fd, into: readBuffer) {
            case .success(.endOfFile):
                beginTeardown(reason: .disconnected(path, nil))  // hung up
                return
            case .success(.transferred(let count)):
                gotBytes = true
                onBytes?(UnsafeRawBufferPointer(rebasing: readBuffer[..<count]))
                guard case .running = state else { return }  // onBytes may have closed us
            case .success(.wouldBlock):
                if !gotBytes { checkHangUp() }
                return
            case .failure(let errno):
                beginTeardown(reason: .link(path, operation: "read", errno: errno))
                return
            }
        }
    }

    /// The source fired but there was nothing to read: was it POLLHUP/POLLERR?
    private func checkHangUp() {
        switch Sys.poll(fd, events: Int16(POLLIN), timeoutMilliseconds: 0) {
        case .success(let revents):
            if revents & Int16(POLLHUP | POLLERR | POLLNVAL) != 0 {
                beginTeardown(reason: .disconnected(path, nil))
            }
        case .failure(let errno):
            beginTeardown(reason: .link(path, operation: "poll", errno: errno))
        }
    }

    // MARK: - Writing

    /// Must be called on `queue`. Writes all bytes: loops over partial writes; on EAGAIN keeps
    /// the rest in a pending buffer drained by a DispatchSourceWrite (never blocks the queue,
    /// never drops, never reorders). Throws if the port is closed/disconnected: the error
    /// that ended the link, or `.closed` after `close()`. A write error other than EAGAIN ends
    /// the link (`onClosed` gets it too).
    /// Writes `bytes` at once from ANY thread, ahead of whatever `write` has pending: the e-stop
    /// path, which must not wait for the port's queue. The kernel serialises whole write(2) calls
    /// on a tty, so these bytes never land inside another call's bytes; a frame that `write` left
    /// half-written (EAGAIN) may be split, which is why the caller starts with a 0x00 delimiter.
    /// Returns false when the port is closed or the write failed (the caller has other layers:
    /// needle power, the device's lease).
    @discardableResult
    public func emergencyWrite(_ bytes: [UInt8]) -> Bool {
        emergencyFD.withLock { fd in
            guard let fd else { return false }
            var offset = 0
            while offset < bytes.count {
                let result = bytes.withUnsafeBytes { all in
                    Sys.write(fd, from: UnsafeRawBufferPointer(rebasing: all[offset...]))
                }
                guard case .success(.transferred(let count)) = result else { return false }
                offset += count
            }
            return true
        }
    }

    public func write(_ bytes: [UInt8]) throws(SerialPortError) {
        dispatchPrecondition(condition: .onQueue(queue))
        switch state {
        case .idle, .running: break
        case .closing(let reason), .closed(let reason): throw reason ?? .closed
        case .handedOver: throw .closed
        }
        guard !bytes.isEmpty else { return }
        switch pending.write(bytes, to: fd) {
        case .written: break
        case .waiting: armWriteSource()
        case .failed(let errno):
            let error = SerialPortError.link(path, operation: "write", errno: errno)
            beginTeardown(reason: error)
            throw error
        }
    }

    /// The descriptor is closed (its sources' cancel handlers have run). On `queue`; for tests
    /// that own the descriptor and must not close it while a cancel handler still may.
    var descriptorClosed: Bool {
        dispatchPrecondition(condition: .onQueue(queue))
        if case .closed = state { return true }
        return false
    }

    /// Bytes accepted by write() but not yet handed to the kernel. Read on `queue`.
    public var pendingWriteCount: Int {
        dispatchPrecondition(condition: .onQueue(queue))
        return pending.count
    }

    private func armWriteSource() {
        if let source = writeSource {
            if !writeSourceArmed {
                writeSourceArmed = true
                source.resume()
            }
            return
        }
        let source = DispatchSource.makeWriteSource(fileDescriptor: fd, queue: queue)
        source.setEventHandler { self.drainPending() }
        source.setCancelHandler { self.writeSourceCancelled() }
        writeSource = source
        writeSourceArmed = true
        source.activate()
    }

    private func drainPending() {
        switch state {
        case .idle, .running: break
        case .closing, .closed, .handedOver: return
        }
        switch pending.drain(to: fd) {
        case .written: break
        case .waiting: return  // still armed: fires again when writable
        case .failed(let errno):
            beginTeardown(reason: .link(path, operation: "write", errno: errno))
            return
        }
        if writeSourceArmed, let source = writeSource {
            writeSourceArmed = false
            source.suspend()
        }
    }

    // MARK: - Closing

    /// Cancels the sources; the fd is closed ONLY in the read source's cancel handler
    /// (restoring the original termios first). Idempotent. Call on `queue`. Bytes still
    /// pending are discarded; `onClosed(nil)` follows once the fd is closed (unless the link
    /// had already ended, in which case `onClosed` gets that error).
    public func close() {
        dispatchPrecondition(condition: .onQueue(queue))
        switch state {
        case .idle, .running: beginTeardown(reason: nil)
        case .closing, .closed, .handedOver: return
        }
    }

    /// Order: write source cancelled → its cancel handler cancels the read source → the read
    /// source's cancel handler closes the fd and calls `onClosed`. Without sources the fd is
    /// closed at once.
    private func beginTeardown(reason: SerialPortError?) {
        switch state {
        case .idle, .running: break
        case .closing, .closed, .handedOver: return
        }
        state = .closing(reason)
        pending.removeAll()
        if let source = writeSource {
            source.cancel()
            if !writeSourceArmed {
                // A suspended source runs its cancel handler only once resumed; after cancel()
                // its event handler is not called any more.
                writeSourceArmed = true
                source.resume()
            }
        } else {
            cancelReadSource()
        }
    }

    private func writeSourceCancelled() {
        writeSource = nil
        writeSourceArmed = false
        cancelReadSource()
    }

    private func cancelReadSource() {
        if let source = readSource {
            source.cancel()
        } else {
            finishClose()
        }
    }

    private func readSourceCancelled() {
        readSource = nil
        finishClose()
    }

    private func finishClose() {
        guard case .closing(let reason) = state else { return }
        emergencyFD.withLock { $0 = nil }
        Self.restoreAndClose(fd: fd, original: originalTermios)
        fdIsClosed = true
        state = .closed(reason)
        let notify = onClosed
        onClosed = nil
        onBytes = nil
        notify?(reason)
    }

    /// Restores the termios found at open, with CRTSCTS cleared first (so tcsetattr cannot
    /// hang waiting for CTS, as ORSSerialPort does) and HUPCL kept cleared (so the final close
    /// does not drop DTR and reset the device), then clears TIOCEXCL and closes. Failures are
    /// ignored: on a vanished device they are expected (EIO) and nothing else can be done.
    private static func restoreAndClose(fd: CInt, original: termios) {
        var restored = original
        restored.c_cflag &= ~(CRTSCTS | tcflag_t(HUPCL))
        _ = Sys.tcsetattr(fd, TCSANOW, restored)
        _ = Sys.clearExclusive(fd)
        _ = Sys.close(fd)  // also releases the flock
    }

    // MARK: - Handing the descriptor to a link's I/O thread

    /// The descriptor, the termios to restore and the path, for a thread that polls and reads
    /// and writes it itself (`ApplicatorLink`): no Dispatch source is ever made for it, `write`
    /// and `close` here do nothing more, `emergencyWrite` still works until `closeHandedOver()`.
    /// Call on `queue`, before `start` and any `write`; once.
    func handOver() -> CInt {
        dispatchPrecondition(condition: .onQueue(queue))
        guard case .idle = state, pendingWriteCount == 0 else { preconditionFailure("SerialPort.handOver after use") }
        state = .handedOver
        fdIsClosed = true  // from here on the new owner closes it, with closeHandedOver()
        return fd
    }

    /// Closes a handed-over descriptor as `close` would (termios restored, exclusivity and the
    /// lock released), the emergency write first disabled. From the thread that owns it, once,
    /// after it no longer polls it.
    func closeHandedOver() {
        emergencyFD.withLock { $0 = nil }
        Self.restoreAndClose(fd: fd, original: originalTermios)
    }

    // MARK: - For tests and diagnostics

    /// The termios currently in force on the port. Call on `queue`.
    func currentTermios() throws(SerialPortError) -> termios {
        dispatchPrecondition(condition: .onQueue(queue))
        if fdIsClosed { throw .closed }
        switch Sys.tcgetattr(fd) {
        case .success(let attributes): return attributes
        case .failure(let errno): throw .io(operation: "tcgetattr", path: path, errno: errno)
        }
    }
}
