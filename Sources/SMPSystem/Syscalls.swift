// The one layer through which every libc call of smpctl goes: the driver (NeedleDriver), the
// simulator (DeviceSim) and the tests (style of swift-system's Internals/Syscalls.swift and
// swift-nio's System.swift). Rules:
//   • every wrapper returns `Result<_, Errno>`; `errno` is read right after the failing call;
//   • EINTR is retried everywhere except `close` (see there);
//   • `read` and `write` fold EAGAIN/EWOULDBLOCK into `IOResult.wouldBlock`: on a non-blocking
//     descriptor it is an answer, not an error;
//   • EBADF and EFAULT from `read`, `write` and `poll` are bugs (a descriptor used after close, a
//     bad buffer), not I/O conditions: a debug build stops on them, as swift-nio does; a release
//     build returns them, so the session ends through its safe path (`assertIsNotABug`);
//   • the calls on descriptors (and `open`) can be answered by a `SyscallMock` in tests
//     (Mocking.swift), so that the errno paths are unit-tested; off, that costs one relaxed
//     atomic load per call;
//   • nothing here allocates (but the path and link-name strings) or logs; policy (which errno
//     means what) lives in the callers.
// Everything is `package`: for this package's targets, not for its clients.

import CSMPShim
import Synchronization
@_exported import struct SystemPackage.Errno

#if canImport(Glibc)
import Glibc
#else
#error("SMPSystem's Syscalls.swift supports Linux with glibc only")
#endif

/// What a `read` or `write` on a descriptor did.
package enum IOResult: Sendable, Hashable {
    /// `count` bytes (more than 0) were read or written.
    case transferred(Int)
    /// EAGAIN/EWOULDBLOCK, or a `write` that took nothing: wait until the descriptor is ready.
    case wouldBlock
    /// `read` returned 0: end of file (on a tty, the other side hung up).
    case endOfFile
}

/// Namespace for the libc wrappers.
package enum Sys {
    /// The `errno` left by the call that just failed.
    @inline(__always)
    package static var currentErrno: Errno { Errno(rawValue: errno) }

    /// Runs `body` until it returns something other than -1/EINTR.
    ///
    /// A result of -1 is a failure carrying `errno`; any other value is success.
    @inline(__always)
    package static func retryingInterrupts<T: FixedWidthInteger>(_ body: () -> T) -> Result<T, Errno> {
        while true {
            let value = body()
            if value != -1 { return .success(value) }
            let error = currentErrno
            if error == .interrupted { continue }
            return .failure(error)
        }
    }

    /// Opens `path` with `flags` (no `O_CREAT`, so no mode).
    ///
    /// The corresponding C function is `open`.
    package static func open(_ path: String, _ flags: CInt) -> Result<CInt, Errno> {
        path.withCString { cPath in
            retryingInterrupts { SyscallMock.open(path) ?? Glibc.open(cPath, flags) }
        }
    }

    /// Opens `path` with `flags` that include `O_CREAT`: a new file gets `mode` (less the umask).
    ///
    /// The corresponding C function is `open`.
    package static func open(_ path: String, _ flags: CInt, mode: mode_t) -> Result<CInt, Errno> {
        path.withCString { cPath in
            retryingInterrupts { SyscallMock.open(path) ?? Glibc.open(cPath, flags, mode) }
        }
    }

    /// Closes `fd`. EINTR is NOT retried: on Linux the descriptor is released even when
    /// `close` reports EINTR, so a retry could close a descriptor another thread has just
    /// been given. The error is returned for the record only; the fd is gone either way.
    ///
    /// The corresponding C function is `close`.
    package static func close(_ fd: CInt) -> Result<Void, Errno> {
        (SyscallMock.call(.close, fd) ?? Glibc.close(fd)) == -1 ? .failure(currentErrno) : .success(())
    }

    /// Reads at most `buffer.count` bytes (`buffer` must not be empty).
    ///
    /// The corresponding C function is `read`.
    package static func read(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer) -> Result<IOResult, Errno> {
        retryingInterrupts {
            SyscallMock.read(fd, into: buffer) ?? Glibc.read(fd, buffer.baseAddress, buffer.count)
        }.ioResult(read: true)
    }

    /// Writes at most `buffer.count` bytes (`buffer` must not be empty); may write fewer.
    ///
    /// The corresponding C function is `write`.
    package static func write(_ fd: CInt, from buffer: UnsafeRawBufferPointer) -> Result<IOResult, Errno> {
        retryingInterrupts {
            SyscallMock.write(fd, from: buffer) ?? Glibc.write(fd, buffer.baseAddress, buffer.count)
        }.ioResult(read: false)
    }

    /// Whether `fd` refers to a terminal. ENOTTY/EINVAL (the "no" answers) become `false`;
    /// any other errno (EBADF) is a failure.
    ///
    /// The corresponding C function is `isatty`.
    package static func isatty(_ fd: CInt) -> Result<Bool, Errno> {
        if (SyscallMock.call(.isatty, fd) ?? Glibc.isatty(fd)) == 1 { return .success(true) }
        let error = currentErrno
        switch error {
        case .inappropriateIOCTLForDevice, .invalidArgument: return .success(false)
        default: return .failure(error)
        }
    }

    /// Reads the terminal attributes of `fd`.
    ///
    /// The corresponding C function is `tcgetattr`.
    package static func tcgetattr(_ fd: CInt) -> Result<termios, Errno> {
        var attributes = termios()
        return retryingInterrupts {
            SyscallMock.tcgetattr(fd, &attributes) ?? Glibc.tcgetattr(fd, &attributes)
        }.map { _ in attributes }
    }

    /// Sets the terminal attributes of `fd`. Success only means that SOME of the changes were
    /// made: callers read the attributes back and compare.
    ///
    /// The corresponding C function is `tcsetattr`.
    package static func tcsetattr(_ fd: CInt, _ optionalActions: CInt, _ attributes: termios) -> Result<Void, Errno> {
        var attributes = attributes
        return retryingInterrupts {
            SyscallMock.tcsetattr(fd, attributes) ?? Glibc.tcsetattr(fd, optionalActions, &attributes)
        }.map { _ in () }
    }

    /// Discards queued input and/or output (`TCIFLUSH`, `TCOFLUSH`, `TCIOFLUSH`).
    ///
    /// The corresponding C function is `tcflush`.
    package static func tcflush(_ fd: CInt, _ queueSelector: CInt) -> Result<Void, Errno> {
        retryingInterrupts { SyscallMock.call(.tcflush, fd) ?? Glibc.tcflush(fd, queueSelector) }.map { _ in () }
    }

    /// Sets raw mode in `attributes` (no system call; cannot fail).
    ///
    /// The corresponding C function is `cfmakeraw`.
    package static func cfmakeraw(_ attributes: inout termios) {
        Glibc.cfmakeraw(&attributes)
    }

    /// Sets the input speed in `attributes` (a `B…` constant; no system call).
    ///
    /// The corresponding C function is `cfsetispeed`.
    package static func cfsetispeed(_ attributes: inout termios, _ speed: speed_t) -> Result<Void, Errno> {
        retryingInterrupts { Glibc.cfsetispeed(&attributes, speed) }.map { _ in () }
    }

    /// Sets the output speed in `attributes` (a `B…` constant; no system call).
    ///
    /// The corresponding C function is `cfsetospeed`.
    package static func cfsetospeed(_ attributes: inout termios, _ speed: speed_t) -> Result<Void, Errno> {
        retryingInterrupts { Glibc.cfsetospeed(&attributes, speed) }.map { _ in () }
    }

    /// The input speed (`B…` constant) stored in `attributes`.
    ///
    /// The corresponding C function is `cfgetispeed`.
    package static func cfgetispeed(_ attributes: termios) -> speed_t {
        var attributes = attributes
        return Glibc.cfgetispeed(&attributes)
    }

    /// The output speed (`B…` constant) stored in `attributes`.
    ///
    /// The corresponding C function is `cfgetospeed`.
    package static func cfgetospeed(_ attributes: termios) -> speed_t {
        var attributes = attributes
        return Glibc.cfgetospeed(&attributes)
    }

    /// Applies or removes an advisory lock on the open file description of `fd`
    /// (`LOCK_EX | LOCK_NB` fails with EWOULDBLOCK when another description holds it).
    ///
    /// The corresponding C function is `flock`.
    package static func flock(_ fd: CInt, _ operation: CInt) -> Result<Void, Errno> {
        retryingInterrupts { SyscallMock.call(.flock, fd) ?? libcFlock(fd, operation) }.map { _ in () }
    }

    /// Polls one descriptor and returns its `revents` (0 on timeout).
    ///
    /// The corresponding C function is `poll`.
    package static func poll(_ fd: CInt, events: Int16, timeoutMilliseconds: CInt) -> Result<Int16, Errno> {
        var descriptor = pollfd(fd: fd, events: events, revents: 0)
        return retryingInterrupts {
            SyscallMock.poll(&descriptor) ?? Glibc.poll(&descriptor, 1, timeoutMilliseconds)
        }.map { _ in descriptor.revents }.mapError { assertIsNotABug($0, call: "poll") }
    }

    /// Makes further `open`s of the tty fail with EBUSY (not for root).
    ///
    /// The corresponding C function is `ioctl(fd, TIOCEXCL)`, through `smp_tty_set_exclusive`.
    package static func setExclusive(_ fd: CInt) -> Result<Void, Errno> {
        retryingInterrupts { SyscallMock.call(.ioctl, fd) ?? smp_tty_set_exclusive(fd) }.map { _ in () }
    }

    /// Undoes `setExclusive`.
    ///
    /// The corresponding C function is `ioctl(fd, TIOCNXCL)`, through `smp_tty_clear_exclusive`.
    package static func clearExclusive(_ fd: CInt) -> Result<Void, Errno> {
        retryingInterrupts { SyscallMock.call(.ioctl, fd) ?? smp_tty_clear_exclusive(fd) }.map { _ in () }
    }
}

extension Result<Int, Errno> {
    /// A `read` or `write` result as an `IOResult`: EAGAIN/EWOULDBLOCK (one value on Linux) is
    /// `.wouldBlock`, 0 is end of file for `read` and "nothing taken" (`.wouldBlock`) for
    /// `write`; EBADF and EFAULT are bugs (see `assertIsNotABug`).
    @inline(__always)
    fileprivate func ioResult(read: Bool) -> Result<IOResult, Errno> {
        switch self {
        case .success(0): .success(read ? .endOfFile : .wouldBlock)
        case .success(let count): .success(.transferred(count))
        case .failure(.resourceTemporarilyUnavailable): .success(.wouldBlock)
        case .failure(let errno): .failure(assertIsNotABug(errno, call: read ? "read" : "write"))
        }
    }
}

extension Errno {
    /// EIO, ENXIO, ENODEV or EPIPE on an open tty: the other end is gone (a USB device unplugged,
    /// a hung-up port), not a passing failure.
    package var meansHangUp: Bool {
        self == .ioError || self == .noSuchAddressOrDevice || self == .operationNotSupportedByDevice
            || self == .brokenPipe
    }
}

/// EBADF (a descriptor used after it was closed, which may by now be someone else's) and EFAULT
/// (a bad buffer) are bugs in this program, not conditions of the device. A debug build (the
/// tests, the simulator) stops on them, as swift-nio's `preconditionIsNotUnacceptableErrno` does,
/// so the bug is found. A release build does not: a needle controller that dies leaves its
/// needle-power output as the dead process last drove it, while an error here ends the session
/// through its ordinary path — needle power off, CLEAR, the record closed.
@inline(__always)
private func assertIsNotABug(_ errno: Errno, call: StaticString) -> Errno {
    assert(errno != .badFileDescriptor && errno != .badAddress,
           "\(call) failed with \(errno): a descriptor or buffer misused by smpctl")
    return errno
}

/// Inside `Sys`, `flock` names the wrapper and `Glibc.flock` names `struct flock`; out here the
/// function type picks the C function.
private let libcFlock: @convention(c) (CInt, CInt) -> CInt = flock

// MARK: - Pseudo-terminals, descriptors and paths (the simulator)

extension Sys {
    /// A new pseudo-terminal: the master's descriptor (read/write, close-on-exec, not the
    /// controlling terminal) and the path of its slave.
    ///
    /// The corresponding C functions are `posix_openpt`, `grantpt`, `unlockpt` and `ptsname_r`,
    /// through `smp_pty_open` (glibc declares them only under _XOPEN_SOURCE, which Swift's Glibc
    /// module does not define).
    package static func openPseudoTerminal() -> Result<(master: CInt, slavePath: String), Errno> {
        var name = [CChar](repeating: 0, count: 256)
        return retryingInterrupts {
            name.withUnsafeMutableBufferPointer { smp_pty_open($0.baseAddress, UInt($0.count)) }
        }.map { master in
            (master, name.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
        }
    }

    /// Adds `O_NONBLOCK` to the file status flags of `fd`.
    ///
    /// The corresponding C function is `fcntl(fd, F_GETFL)` then `fcntl(fd, F_SETFL, …)`.
    package static func setNonBlocking(_ fd: CInt) -> Result<Void, Errno> {
        retryingInterrupts { SyscallMock.call(.fcntl, fd) ?? fcntl(fd, F_GETFL) }.flatMap { flags in
            retryingInterrupts {
                SyscallMock.call(.fcntl, fd) ?? fcntl(fd, F_SETFL, flags | O_NONBLOCK)
            }.map { _ in () }
        }
    }

    /// A new descriptor (the lowest free number) for the open file description of `fd`,
    /// close-on-exec.
    ///
    /// The corresponding C function is `fcntl(fd, F_DUPFD_CLOEXEC, 0)`.
    package static func duplicate(_ fd: CInt) -> Result<CInt, Errno> {
        retryingInterrupts { SyscallMock.call(.fcntl, fd) ?? fcntl(fd, F_DUPFD_CLOEXEC, 0) }
    }

    /// Whether `path` is a symbolic link (not followed): nil when nothing is there.
    ///
    /// The corresponding C function is `lstat`.
    package static func isSymbolicLink(_ path: String) -> Result<Bool?, Errno> {
        var info = stat()
        switch retryingInterrupts({ lstat(path, &info) }) {
        case .success: return .success(info.st_mode & S_IFMT == S_IFLNK)
        case .failure(.noSuchFileOrDirectory): return .success(nil)
        case .failure(let errno): return .failure(errno)
        }
    }

    /// Where the symbolic link `path` points (its text, not resolved).
    ///
    /// The corresponding C function is `readlink`.
    package static func readLink(_ path: String) -> Result<String, Errno> {
        var buffer = [UInt8](repeating: 0, count: 4096)
        return retryingInterrupts {
            buffer.withUnsafeMutableBytes { readlink(path, $0.baseAddress!, $0.count - 1) }
        }.map { length in String(decoding: buffer[..<length], as: UTF8.self) }
    }

    /// Creates the symbolic link `link` pointing to `target`.
    ///
    /// The corresponding C function is `symlink`.
    package static func symbolicLink(_ link: String, to target: String) -> Result<Void, Errno> {
        retryingInterrupts { symlink(target, link) }.map { _ in () }
    }

    /// Renames `source` to `destination`, atomically replacing what `destination` named.
    ///
    /// The corresponding C function is `rename`.
    package static func rename(_ source: String, to destination: String) -> Result<Void, Errno> {
        retryingInterrupts { Glibc.rename(source, destination) }.map { _ in () }
    }

    /// Removes the directory entry `path` (not a directory).
    ///
    /// The corresponding C function is `unlink`.
    package static func unlink(_ path: String) -> Result<Void, Errno> {
        retryingInterrupts { Glibc.unlink(path) }.map { _ in () }
    }

    /// What the open file `fd` is: type, size.
    ///
    /// The corresponding C function is `fstat`.
    package static func fileStatus(_ fd: CInt) -> Result<stat, Errno> {
        var info = stat()
        return retryingInterrupts { fstat(fd, &info) }.map { _ in info }
    }

    /// What the file at `path` is, following symbolic links: type, size, device and inode.
    ///
    /// The corresponding C function is `stat`.
    package static func pathStatus(_ path: String) -> Result<stat, Errno> {
        var info = stat()
        return path.withCString { cPath in retryingInterrupts { stat(cPath, &info) } }.map { _ in info }
    }

    /// The type of the file system the open file `fd` is on (`f_type`, e.g. `PROC_SUPER_MAGIC`).
    ///
    /// The corresponding C function is `fstatfs`.
    package static func fileSystemType(_ fd: CInt) -> Result<Int, Errno> {
        var type = 0
        return retryingInterrupts { smp_fs_type(fd, &type) }.map { _ in type }
    }

    /// The absolute path `path` resolves to, every symbolic link followed.
    ///
    /// The corresponding C function is `realpath`.
    package static func resolvedPath(_ path: String) -> Result<String, Errno> {
        guard let resolved = realpath(path, nil) else { return .failure(currentErrno) }
        defer { free(resolved) }
        return .success(String(cString: resolved))
    }

    /// This process's id. Cannot fail.
    ///
    /// The corresponding C function is `getpid`.
    package static func processID() -> Int32 { getpid() }

    /// Gives the kernel back the free pages of every malloc arena. After a large temporary
    /// working set (a plan's file and parse, a session's 200,000-row insert) glibc keeps them
    /// mapped: freed inside the heap, not at its top, they stay in the peak RSS, and the session's
    /// threads allocate from their own arenas instead (issue 16). Cannot fail.
    ///
    /// The corresponding C function is `malloc_trim`, through `smp_malloc_trim`.
    package static func releaseFreeHeap() { _ = smp_malloc_trim() }

    /// Caps glibc's malloc arenas. By default each thread that allocates gets an arena of its
    /// own (up to 8 per core), and memory freed in one is never reused by another: a 200,000-dot
    /// simulated session peaked at 68–72 MB RSS, 61 MB with one arena (issue 16). Call before
    /// threads start; false if glibc refused.
    ///
    /// The corresponding C function is `mallopt(M_ARENA_MAX, …)`, through `smp_malloc_arena_max`.
    @discardableResult
    package static func limitMallocArenas(_ arenas: Int32) -> Bool { smp_malloc_arena_max(arenas) == 1 }
}

// MARK: - Pipes, clocks and GPIO (the interlock lines)

extension Sys {
    /// Runs `body` until it returns a non-nil pointer or fails with an errno other than EINTR.
    @inline(__always)
    package static func retryingInterrupts(_ body: () -> OpaquePointer?) -> Result<OpaquePointer, Errno> {
        while true {
            if let pointer = body() { return .success(pointer) }
            let error = currentErrno
            if error == .interrupted { continue }
            return .failure(error)
        }
    }

    /// Creates a pipe whose two ends are non-blocking and close-on-exec.
    ///
    /// The corresponding C function is `pipe2`, through `smp_pipe2`.
    package static func pipe() -> Result<(readEnd: CInt, writeEnd: CInt), Errno> {
        var ends: [CInt] = [-1, -1]
        return retryingInterrupts { smp_pipe2(&ends, O_NONBLOCK | O_CLOEXEC) }.map { _ in (ends[0], ends[1]) }
    }

    /// A non-blocking, close-on-exec event counter descriptor, readable while its count is
    /// not 0: the wake-up of a thread blocked in `poll`.
    ///
    /// The corresponding C function is `eventfd`, through `smp_eventfd_create`.
    package static func eventDescriptor() -> Result<CInt, Errno> {
        retryingInterrupts { smp_eventfd_create() }
    }

    /// Adds 1 to an event counter (`eventDescriptor`): wakes its reader. `.wouldBlock` only when the counter is at its maximum (it is readable
    /// already).
    ///
    /// The corresponding C function is `write` (8 bytes).
    package static func signalEvent(_ fd: CInt) -> Result<IOResult, Errno> {
        var one: UInt64 = 1
        return withUnsafeBytes(of: &one) { write(fd, from: $0) }
    }

    /// A non-blocking, close-on-exec timer descriptor on CLOCK_MONOTONIC (the clock of
    /// `monotonicNanoseconds` and of `DispatchTime`); readable once it has expired.
    ///
    /// The corresponding C function is `timerfd_create`, through `smp_timerfd_create_monotonic`.
    package static func timerDescriptor() -> Result<CInt, Errno> {
        retryingInterrupts { smp_timerfd_create_monotonic() }
    }

    /// Arms `fd` (from `timerDescriptor`) to expire once at `deadlineNanoseconds` of
    /// CLOCK_MONOTONIC, an absolute time, so a late re-arm never shifts later deadlines; a
    /// deadline already past expires at once. Nil disarms it. Replaces any earlier setting.
    ///
    /// The corresponding C function is `timerfd_settime` with `TFD_TIMER_ABSTIME`, through
    /// `smp_timerfd_set_absolute`.
    package static func setTimer(_ fd: CInt, deadlineNanoseconds: UInt64?) -> Result<Void, Errno> {
        // 0 would disarm: a deadline of 0 (long past) is 1 ns instead.
        let value = deadlineNanoseconds.map { max($0, 1) } ?? 0
        return retryingInterrupts { smp_timerfd_set_absolute(fd, value) }.map { _ in () }
    }

    /// Reads and resets the count of an event counter (`eventDescriptor`) or the expirations of
    /// a timer (`timerDescriptor`): `.transferred(count)` with the count, `.wouldBlock` when it
    /// was 0 (a timer re-armed meanwhile, or another reader took it).
    ///
    /// The corresponding C function is `read` (8 bytes).
    package static func takeEventCount(_ fd: CInt) -> Result<IOResult, Errno> {
        var count: UInt64 = 0
        let result = withUnsafeMutableBytes(of: &count) { read(fd, into: $0) }
        if case .success(.transferred) = result { return .success(.transferred(Int(truncatingIfNeeded: count))) }
        return result
    }

    /// Nanoseconds of CLOCK_MONOTONIC: the clock of the kernel's GPIO edge timestamps (uAPI v2,
    /// and v1 since Linux 5.7) and of Dispatch's `DispatchTime` on Linux. Cannot fail for this
    /// clock id.
    ///
    /// The corresponding C function is `clock_gettime`.
    @inline(__always)
    package static func monotonicNanoseconds() -> UInt64 {
        var now = timespec()
        _ = Glibc.clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
    }

    /// The libgpiod API major version the shim was compiled against (1 or 2).
    ///
    /// The corresponding C function is `smp_gpio_api_version`.
    package static func gpioAPIVersion() -> Int { Int(smp_gpio_api_version()) }

    /// Whether the kernel applies an input line's debounce period (libgpiod v2 only).
    ///
    /// The corresponding C function is `smp_gpio_kernel_debounce`.
    package static func gpioKernelDebounce() -> Bool { smp_gpio_kernel_debounce() != 0 }

    /// Opens a GPIO chip by path (/dev/gpiochipN).
    ///
    /// The corresponding C function is `gpiod_chip_open`, through `smp_gpio_chip_open`.
    package static func gpioChipOpen(_ path: String) -> Result<OpaquePointer, Errno> {
        path.withCString { cPath in retryingInterrupts { smp_gpio_chip_open(cPath) } }
    }

    /// Number of lines of an open chip.
    ///
    /// The corresponding C function is `gpiod_chip_num_lines` (v1) or
    /// `gpiod_chip_info_get_num_lines` (v2), through `smp_gpio_chip_num_lines`.
    package static func gpioChipLineCount(_ chip: OpaquePointer) -> Result<Int, Errno> {
        retryingInterrupts { smp_gpio_chip_num_lines(chip) }.map { Int($0) }
    }

    /// Drops the caller's reference to a chip (its requests keep it open).
    ///
    /// The corresponding C function is `gpiod_chip_close`, through `smp_gpio_chip_close`.
    package static func gpioChipClose(_ chip: OpaquePointer) {
        smp_gpio_chip_close(chip)
    }

    /// Requests input lines with both-edge events.
    ///
    /// The corresponding C functions are `gpiod_line_request_both_edges_events_flags` (v1) or
    /// `gpiod_chip_request_lines` (v2), through `smp_gpio_request_inputs`.
    package static func gpioRequestInputs(_ chip: OpaquePointer, consumer: String, lines: [smp_gpio_line_config])
        -> Result<OpaquePointer, Errno>
    {
        consumer.withCString { cConsumer in
            lines.withUnsafeBufferPointer { buffer in
                retryingInterrupts {
                    smp_gpio_request_inputs(chip, cConsumer, buffer.baseAddress, CUnsignedInt(buffer.count))
                }
            }
        }
    }

    /// Requests output lines, driven to their initial values from the start.
    ///
    /// The corresponding C functions are `gpiod_line_request_output_flags` (v1) or
    /// `gpiod_chip_request_lines` (v2), through `smp_gpio_request_outputs`.
    package static func gpioRequestOutputs(_ chip: OpaquePointer, consumer: String, lines: [smp_gpio_line_config])
        -> Result<OpaquePointer, Errno>
    {
        consumer.withCString { cConsumer in
            lines.withUnsafeBufferPointer { buffer in
                retryingInterrupts {
                    smp_gpio_request_outputs(chip, cConsumer, buffer.baseAddress, CUnsignedInt(buffer.count))
                }
            }
        }
    }

    /// The descriptor that becomes readable when an input request has edge events pending. Owned
    /// by the request (closed by `gpioRelease`).
    ///
    /// The corresponding C function is `gpiod_line_request_get_fd` (v2) or an epoll set of
    /// `gpiod_line_event_get_fd` descriptors (v1), through `smp_gpio_request_fd`.
    package static func gpioRequestFD(_ request: OpaquePointer) -> CInt {
        smp_gpio_request_fd(request)
    }

    /// Reads pending edge events without blocking: the count read, 0 when none is pending.
    ///
    /// The corresponding C function is `gpiod_line_event_read_fd_multiple` (v1) or
    /// `gpiod_line_request_read_edge_events` (v2), through `smp_gpio_read_edge_events`.
    package static func gpioReadEdgeEvents(_ request: OpaquePointer, into buffer: UnsafeMutableBufferPointer<smp_gpio_edge_event>)
        -> Result<Int, Errno>
    {
        retryingInterrupts {
            smp_gpio_read_edge_events(request, buffer.baseAddress, CUnsignedInt(buffer.count))
        }.map { Int($0) }
    }

    /// The logical value of line `index` (its position in the request).
    ///
    /// The corresponding C function is `gpiod_line_get_value` (v1) or
    /// `gpiod_line_request_get_value` (v2), through `smp_gpio_get_value`.
    package static func gpioValue(_ request: OpaquePointer, index: Int) -> Result<Bool, Errno> {
        retryingInterrupts { smp_gpio_get_value(request, CUnsignedInt(index)) }.map { $0 != 0 }
    }

    /// Drives output line `index` (its position in the request) to a logical value.
    ///
    /// The corresponding C function is `gpiod_line_set_value` (v1) or
    /// `gpiod_line_request_set_value` (v2), through `smp_gpio_set_value`.
    package static func gpioSetValue(_ request: OpaquePointer, index: Int, active: Bool) -> Result<Void, Errno> {
        retryingInterrupts { smp_gpio_set_value(request, CUnsignedInt(index), active ? 1 : 0) }.map { _ in () }
    }

    /// Releases the lines of a request and closes its descriptors.
    ///
    /// The corresponding C function is `gpiod_line_release` (v1) or `gpiod_line_request_release`
    /// (v2), through `smp_gpio_request_release`.
    package static func gpioRelease(_ request: OpaquePointer) {
        smp_gpio_request_release(request)
    }
}

// MARK: - Unix-domain sockets (the simulator's interlock control)

extension Sys {
    /// `path` as a Unix-domain socket address; nil when it does not fit `sun_path` (with its NUL).
    private static func unixSocketAddress(_ path: String) -> sockaddr_un? {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return nil }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return address
    }

    /// A listening Unix-domain stream socket bound at `path` (non-blocking, close-on-exec,
    /// backlog 4). The socket file gets mode 0600 whatever the umask: only this user may drive
    /// the simulated lines. ENAMETOOLONG when `path` does not fit `sun_path`.
    ///
    /// The corresponding C functions are `socket`, `bind`, `chmod` and `listen`.
    package static func listenUnixSocket(_ path: String) -> Result<CInt, Errno> {
        guard var address = unixSocketAddress(path) else { return .failure(.fileNameTooLong) }
        let type = CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue) | CInt(SOCK_CLOEXEC.rawValue)
        return retryingInterrupts { socket(AF_UNIX, type, 0) }.flatMap { fd in
            let bound = retryingInterrupts {
                withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                    }
                }
            }.flatMap { _ in retryingInterrupts { chmod(path, 0o600) } }
                .flatMap { _ in retryingInterrupts { listen(fd, 4) } }
            if case .failure(let errno) = bound {
                _ = close(fd)
                return .failure(errno)
            }
            return .success(fd)
        }
    }

    /// A connection waiting on the listening socket `fd` (non-blocking, close-on-exec), or nil
    /// when none is (EAGAIN).
    ///
    /// The corresponding C functions are `accept` and `fcntl` (Glibc's Swift module does not
    /// declare `accept4`, a _GNU_SOURCE function).
    package static func accept(_ fd: CInt) -> Result<CInt?, Errno> {
        switch retryingInterrupts({ Glibc.accept(fd, nil, nil) }) {
        case .success(let connection):
            let flagged = retryingInterrupts { fcntl(connection, F_SETFD, FD_CLOEXEC) }
                .flatMap { _ in setNonBlocking(connection) }
            if case .failure(let errno) = flagged {
                _ = close(connection)
                return .failure(errno)
            }
            return .success(connection)
        case .failure(.resourceTemporarilyUnavailable): return .success(nil)
        case .failure(let errno): return .failure(errno)
        }
    }
}

extension Sys {
    /// A blocking Unix-domain stream socket connected to `path` (close-on-exec).
    ///
    /// The corresponding C functions are `socket` and `connect`.
    package static func connectUnixSocket(_ path: String) -> Result<CInt, Errno> {
        guard var address = unixSocketAddress(path) else { return .failure(.fileNameTooLong) }
        let type = CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue)
        return retryingInterrupts { socket(AF_UNIX, type, 0) }.flatMap { fd in
            // connect(2) is not retried after EINTR (it goes on asynchronously): a failure is final.
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            if connected == -1 {
                let errno = currentErrno
                _ = close(fd)
                return .failure(errno)
            }
            return .success(fd)
        }
    }
}

extension Sys {
    /// Blocks `signals` in the calling thread, and so in every thread it starts afterwards. On
    /// Linux a dispatch signal source reads its signal through a signalfd: a thread that does not
    /// block the signal (one of swift-nio's, say) would take it and, the action being SIG_IGN,
    /// drop it — Ctrl-C lost. Call on the main thread before other threads start.
    ///
    /// The corresponding C function is `pthread_sigmask`.
    package static func blockSignals(_ signals: [CInt]) -> Result<Void, Errno> {
        var set = sigset_t()
        sigemptyset(&set)
        for number in signals { sigaddset(&set, number) }
        let status = pthread_sigmask(SIG_BLOCK, &set, nil)
        return status == 0 ? .success(()) : .failure(Errno(rawValue: status))
    }
}
