// The one layer through which every libc call of NeedleDriver goes (style of swift-system's
// Internals/Syscalls.swift). Rules:
//   • every wrapper returns `Result<_, Errno>`; `errno` is read right after the failing call;
//   • EINTR is retried everywhere except `close` (see there);
//   • nothing here allocates or logs; policy (which errno means what) lives in the callers.
// Nothing in this file is public.

import CSMPShim
import SystemPackage

#if canImport(Glibc)
import Glibc
#else
#error("NeedleDriver's Syscalls.swift supports Linux with glibc only")
#endif

/// Namespace for the libc wrappers.
enum Sys {
    /// The `errno` left by the call that just failed.
    @inline(__always)
    static var currentErrno: Errno { Errno(rawValue: errno) }

    /// Runs `body` until it returns something other than -1/EINTR.
    ///
    /// A result of -1 is a failure carrying `errno`; any other value is success.
    @inline(__always)
    static func retryingInterrupts<T: FixedWidthInteger>(_ body: () -> T) -> Result<T, Errno> {
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
    static func open(_ path: String, _ flags: CInt) -> Result<CInt, Errno> {
        path.withCString { cPath in
            retryingInterrupts { Glibc.open(cPath, flags) }
        }
    }

    /// Closes `fd`. EINTR is NOT retried: on Linux the descriptor is released even when
    /// `close` reports EINTR, so a retry could close a descriptor another thread has just
    /// been given. The error is returned for the record only; the fd is gone either way.
    ///
    /// The corresponding C function is `close`.
    static func close(_ fd: CInt) -> Result<Void, Errno> {
        Glibc.close(fd) == -1 ? .failure(currentErrno) : .success(())
    }

    /// Reads at most `buffer.count` bytes. `.success(0)` is end of file.
    ///
    /// The corresponding C function is `read`.
    static func read(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer) -> Result<Int, Errno> {
        retryingInterrupts { Glibc.read(fd, buffer.baseAddress, buffer.count) }
    }

    /// Writes at most `buffer.count` bytes; may write fewer.
    ///
    /// The corresponding C function is `write`.
    static func write(_ fd: CInt, from buffer: UnsafeRawBufferPointer) -> Result<Int, Errno> {
        retryingInterrupts { Glibc.write(fd, buffer.baseAddress, buffer.count) }
    }

    /// Whether `fd` refers to a terminal. ENOTTY/EINVAL (the "no" answers) become `false`;
    /// any other errno (EBADF) is a failure.
    ///
    /// The corresponding C function is `isatty`.
    static func isatty(_ fd: CInt) -> Result<Bool, Errno> {
        if Glibc.isatty(fd) == 1 { return .success(true) }
        let error = currentErrno
        switch error {
        case .inappropriateIOCTLForDevice, .invalidArgument: return .success(false)
        default: return .failure(error)
        }
    }

    /// Reads the terminal attributes of `fd`.
    ///
    /// The corresponding C function is `tcgetattr`.
    static func tcgetattr(_ fd: CInt) -> Result<termios, Errno> {
        var attributes = termios()
        return retryingInterrupts { Glibc.tcgetattr(fd, &attributes) }.map { _ in attributes }
    }

    /// Sets the terminal attributes of `fd`. Success only means that SOME of the changes were
    /// made: callers read the attributes back and compare.
    ///
    /// The corresponding C function is `tcsetattr`.
    static func tcsetattr(_ fd: CInt, _ optionalActions: CInt, _ attributes: termios) -> Result<Void, Errno> {
        var attributes = attributes
        return retryingInterrupts { Glibc.tcsetattr(fd, optionalActions, &attributes) }.map { _ in () }
    }

    /// Discards queued input and/or output (`TCIFLUSH`, `TCOFLUSH`, `TCIOFLUSH`).
    ///
    /// The corresponding C function is `tcflush`.
    static func tcflush(_ fd: CInt, _ queueSelector: CInt) -> Result<Void, Errno> {
        retryingInterrupts { Glibc.tcflush(fd, queueSelector) }.map { _ in () }
    }

    /// Sets raw mode in `attributes` (no system call; cannot fail).
    ///
    /// The corresponding C function is `cfmakeraw`.
    static func cfmakeraw(_ attributes: inout termios) {
        Glibc.cfmakeraw(&attributes)
    }

    /// Sets the input speed in `attributes` (a `B…` constant; no system call).
    ///
    /// The corresponding C function is `cfsetispeed`.
    static func cfsetispeed(_ attributes: inout termios, _ speed: speed_t) -> Result<Void, Errno> {
        retryingInterrupts { Glibc.cfsetispeed(&attributes, speed) }.map { _ in () }
    }

    /// Sets the output speed in `attributes` (a `B…` constant; no system call).
    ///
    /// The corresponding C function is `cfsetospeed`.
    static func cfsetospeed(_ attributes: inout termios, _ speed: speed_t) -> Result<Void, Errno> {
        retryingInterrupts { Glibc.cfsetospeed(&attributes, speed) }.map { _ in () }
    }

    /// The input speed (`B…` constant) stored in `attributes`.
    ///
    /// The corresponding C function is `cfgetispeed`.
    static func cfgetispeed(_ attributes: termios) -> speed_t {
        var attributes = attributes
        return Glibc.cfgetispeed(&attributes)
    }

    /// The output speed (`B…` constant) stored in `attributes`.
    ///
    /// The corresponding C function is `cfgetospeed`.
    static func cfgetospeed(_ attributes: termios) -> speed_t {
        var attributes = attributes
        return Glibc.cfgetospeed(&attributes)
    }

    /// Applies or removes an advisory lock on the open file description of `fd`
    /// (`LOCK_EX | LOCK_NB` fails with EWOULDBLOCK when another description holds it).
    ///
    /// The corresponding C function is `flock`.
    static func flock(_ fd: CInt, _ operation: CInt) -> Result<Void, Errno> {
        retryingInterrupts { libcFlock(fd, operation) }.map { _ in () }
    }

    /// Polls one descriptor and returns its `revents` (0 on timeout).
    ///
    /// The corresponding C function is `poll`.
    static func poll(_ fd: CInt, events: Int16, timeoutMilliseconds: CInt) -> Result<Int16, Errno> {
        var descriptor = pollfd(fd: fd, events: events, revents: 0)
        return retryingInterrupts { Glibc.poll(&descriptor, 1, timeoutMilliseconds) }
            .map { _ in descriptor.revents }
    }

    /// Makes further `open`s of the tty fail with EBUSY (not for root).
    ///
    /// The corresponding C function is `ioctl(fd, TIOCEXCL)`, through `smp_tty_set_exclusive`.
    static func setExclusive(_ fd: CInt) -> Result<Void, Errno> {
        retryingInterrupts { smp_tty_set_exclusive(fd) }.map { _ in () }
    }

    /// Undoes `setExclusive`.
    ///
    /// The corresponding C function is `ioctl(fd, TIOCNXCL)`, through `smp_tty_clear_exclusive`.
    static func clearExclusive(_ fd: CInt) -> Result<Void, Errno> {
        retryingInterrupts { smp_tty_clear_exclusive(fd) }.map { _ in () }
    }

    /// Bytes still in the tty driver's output queue (written, not yet sent on the wire).
    ///
    /// The corresponding C function is `ioctl(fd, TIOCOUTQ)`, through `smp_tty_output_queue`.
    static func outputQueueCount(_ fd: CInt) -> Result<Int, Errno> {
        var count: CInt = 0
        return retryingInterrupts { smp_tty_output_queue(fd, &count) }.map { _ in Int(count) }
    }
}

/// Inside `Sys`, `flock` names the wrapper and `Glibc.flock` names `struct flock`; out here the
/// function type picks the C function.
private let libcFlock: @convention(c) (CInt, CInt) -> CInt = flock

// MARK: - Pipes, clocks and GPIO (the interlock lines)

extension Sys {
    /// Runs `body` until it returns a non-nil pointer or fails with an errno other than EINTR.
    @inline(__always)
    static func retryingInterrupts(_ body: () -> OpaquePointer?) -> Result<OpaquePointer, Errno> {
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
    static func pipe() -> Result<(readEnd: CInt, writeEnd: CInt), Errno> {
        var ends: [CInt] = [-1, -1]
        return retryingInterrupts { smp_pipe2(&ends, O_NONBLOCK | O_CLOEXEC) }.map { _ in (ends[0], ends[1]) }
    }

    /// Nanoseconds of CLOCK_MONOTONIC: the clock of the kernel's GPIO edge timestamps (uAPI v2,
    /// and v1 since Linux 5.7) and of Dispatch's `DispatchTime` on Linux. Cannot fail for this
    /// clock id.
    ///
    /// The corresponding C function is `clock_gettime`.
    @inline(__always)
    static func monotonicNanoseconds() -> UInt64 {
        var now = timespec()
        _ = Glibc.clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
    }

    /// The libgpiod API major version the shim was compiled against (1 or 2).
    ///
    /// The corresponding C function is `smp_gpio_api_version`.
    static func gpioAPIVersion() -> Int { Int(smp_gpio_api_version()) }

    /// Whether the kernel applies an input line's debounce period (libgpiod v2 only).
    ///
    /// The corresponding C function is `smp_gpio_kernel_debounce`.
    static func gpioKernelDebounce() -> Bool { smp_gpio_kernel_debounce() != 0 }

    /// Opens a GPIO chip by path (/dev/gpiochipN).
    ///
    /// The corresponding C function is `gpiod_chip_open`, through `smp_gpio_chip_open`.
    static func gpioChipOpen(_ path: String) -> Result<OpaquePointer, Errno> {
        path.withCString { cPath in retryingInterrupts { smp_gpio_chip_open(cPath) } }
    }

    /// Number of lines of an open chip.
    ///
    /// The corresponding C function is `gpiod_chip_num_lines` (v1) or
    /// `gpiod_chip_info_get_num_lines` (v2), through `smp_gpio_chip_num_lines`.
    static func gpioChipLineCount(_ chip: OpaquePointer) -> Result<Int, Errno> {
        retryingInterrupts { smp_gpio_chip_num_lines(chip) }.map { Int($0) }
    }

    /// Drops the caller's reference to a chip (its requests keep it open).
    ///
    /// The corresponding C function is `gpiod_chip_close`, through `smp_gpio_chip_close`.
    static func gpioChipClose(_ chip: OpaquePointer) {
        smp_gpio_chip_close(chip)
    }

    /// Requests input lines with both-edge events.
    ///
    /// The corresponding C functions are `gpiod_line_request_both_edges_events_flags` (v1) or
    /// `gpiod_chip_request_lines` (v2), through `smp_gpio_request_inputs`.
    static func gpioRequestInputs(_ chip: OpaquePointer, consumer: String, lines: [smp_gpio_line_config])
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
    static func gpioRequestOutputs(_ chip: OpaquePointer, consumer: String, lines: [smp_gpio_line_config])
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
    static func gpioRequestFD(_ request: OpaquePointer) -> CInt {
        smp_gpio_request_fd(request)
    }

    /// Reads pending edge events without blocking: the count read, 0 when none is pending.
    ///
    /// The corresponding C function is `gpiod_line_event_read_fd_multiple` (v1) or
    /// `gpiod_line_request_read_edge_events` (v2), through `smp_gpio_read_edge_events`.
    static func gpioReadEdgeEvents(_ request: OpaquePointer, into buffer: UnsafeMutableBufferPointer<smp_gpio_edge_event>)
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
    static func gpioValue(_ request: OpaquePointer, index: Int) -> Result<Bool, Errno> {
        retryingInterrupts { smp_gpio_get_value(request, CUnsignedInt(index)) }.map { $0 != 0 }
    }

    /// Drives output line `index` (its position in the request) to a logical value.
    ///
    /// The corresponding C function is `gpiod_line_set_value` (v1) or
    /// `gpiod_line_request_set_value` (v2), through `smp_gpio_set_value`.
    static func gpioSetValue(_ request: OpaquePointer, index: Int, active: Bool) -> Result<Void, Errno> {
        retryingInterrupts { smp_gpio_set_value(request, CUnsignedInt(index), active ? 1 : 0) }.map { _ in () }
    }

    /// Releases the lines of a request and closes its descriptors.
    ///
    /// The corresponding C function is `gpiod_line_release` (v1) or `gpiod_line_request_release`
    /// (v2), through `smp_gpio_request_release`.
    static func gpioRelease(_ request: OpaquePointer) {
        smp_gpio_request_release(request)
    }
}
