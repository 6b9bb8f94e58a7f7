// The mock hook of the syscall layer (after swift-system's Internals/Mocking.swift): a test
// adopts descriptors (and paths) into a `SyscallMock`, scripts what the kernel answers on them,
// and reads back the trace of the calls. Every wrapper of `Sys` that works on a descriptor asks
// the mock first, INSIDE its EINTR loop, so a scripted EINTR exercises the real retry and a
// scripted errno the real mapping. Calls on descriptors the mock has not adopted go to the
// kernel, so the rest of a test process (other pseudo-terminals, pipes) is untouched.
//
// Off (no mock installed), a wrapper pays one relaxed atomic load.

import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A scripted kernel for the descriptors it has adopted.
///
/// ```swift
/// let mock = SyscallMock()
/// mock.adopt(fd, path: "/dev/ttyMOCK")
/// mock.script(.read, on: fd, .fails(.interrupted), .reads([0x01]))
/// mock.withInstalled { … code under test … }
/// XCTAssertEqual(mock.count(.read, on: fd), 2)
/// ```
///
/// Defaults once a call's script is used up: `read` fails with EAGAIN, `write` takes every
/// byte, `poll` reports no event, `isatty` says yes, `open` returns the adopted descriptor,
/// `tcgetattr` returns the last attributes `tcsetattr` set (zeroed at first), anything else
/// succeeds (returns 0). `close` of an adopted descriptor closes nothing: the test owns it.
package final class SyscallMock: Sendable {
    /// The wrapped C functions a script can answer.
    package enum Call: String, Sendable, Hashable, CustomStringConvertible {
        case open, close, read, write, poll, isatty, tcgetattr, tcsetattr, tcflush, flock, fcntl, ioctl

        package var description: String { rawValue }
    }

    /// One scripted answer.
    package enum Reply: Sendable, Hashable {
        /// The C function returns this value: a byte count for `read`/`write`, the `revents` for
        /// `poll`, a descriptor for `open`, 1/0 for `isatty`.
        case returns(Int)
        /// `read` only: these bytes are read (as many as fit the buffer).
        case reads([UInt8])
        /// The C function returns -1 with this errno.
        case fails(Errno)
    }

    /// One call that reached the mock.
    package struct Record: Sendable, Hashable {
        package var call: Call
        package var fd: CInt
        /// `write`: the bytes the caller offered.
        package var bytes: [UInt8]
    }

    private struct Descriptor {
        var path: String?
        var scripts: [Call: [Reply]] = [:]
        var attributes = termios()
    }

    private struct State {
        var descriptors: [CInt: Descriptor] = [:]
        var trace: [Record] = []
    }

    private let state = Locked(State())

    package init() {}

    /// Calls on `fd` are answered by this mock from now on; `open(path)` (when given) returns `fd`.
    /// `fd` should be a real descriptor (a socket pair, a pipe) when Dispatch sources watch it.
    package func adopt(_ fd: CInt, path: String? = nil) {
        state.withLock { $0.descriptors[fd] = Descriptor(path: path) }
    }

    /// Appends `replies` to the script of `call` on `fd` (adopted first if it was not).
    package func script(_ call: Call, on fd: CInt, _ replies: Reply...) {
        state.withLock { state in
            state.descriptors[fd, default: Descriptor()].scripts[call, default: []].append(contentsOf: replies)
        }
    }

    /// Every call that reached the mock, in order.
    package var trace: [Record] { state.withLock { $0.trace } }

    /// How many times `call` reached the mock for `fd`.
    package func count(_ call: Call, on fd: CInt) -> Int {
        trace.filter { $0.call == call && $0.fd == fd }.count
    }

    /// The bytes offered to `write` on `fd`, concatenated (a retried write appears twice).
    package func written(on fd: CInt) -> [UInt8] {
        trace.filter { $0.call == .write && $0.fd == fd }.flatMap(\.bytes)
    }

    /// Installs this mock for the duration of `body`. One mock at a time per process.
    package func withInstalled<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        Self.installed.withLock { installed in
            precondition(installed == nil, "a SyscallMock is already installed")
            installed = self
        }
        Self.enabled.store(true, ordering: .releasing)
        defer {
            Self.enabled.store(false, ordering: .releasing)
            Self.installed.withLock { $0 = nil }
        }
        return try body()
    }

    // MARK: - The hooks (called by `Sys`)

    private static let enabled = Atomic(false)
    private static let installed = Locked<SyscallMock?>(nil)

    /// The installed mock when `fd` is one of its descriptors.
    @inline(__always)
    private static func mock(for fd: CInt) -> SyscallMock? {
        guard enabled.load(ordering: .relaxed) else { return nil }
        return installed.withLock { mock in
            mock.flatMap { $0.state.withLock { $0.descriptors[fd] } == nil ? nil : $0 }
        }
    }

    /// Records the call and takes the next reply of its script (nil: the default applies).
    private func next(_ call: Call, _ fd: CInt, bytes: [UInt8] = []) -> Reply? {
        state.withLock { state in
            state.trace.append(Record(call: call, fd: fd, bytes: bytes))
            guard var script = state.descriptors[fd]?.scripts[call], !script.isEmpty else { return nil }
            let reply = script.removeFirst()
            state.descriptors[fd]?.scripts[call] = script
            return reply
        }
    }

    /// The C function's return value for `reply`, setting `errno` for a failure.
    private static func value(of reply: Reply) -> Int {
        switch reply {
        case .returns(let value): return value
        case .reads(let bytes): return bytes.count
        case .fails(let errno):
            Glibc.errno = errno.rawValue
            return -1
        }
    }

    /// A call without data: `close`, `isatty`, `tcflush`, `flock`, `fcntl`, `ioctl`.
    @inline(__always)
    static func call(_ call: Call, _ fd: CInt) -> CInt? {
        guard let mock = mock(for: fd) else { return nil }
        let reply = mock.next(call, fd) ?? .returns(call == .isatty ? 1 : 0)
        if call == .isatty, case .fails(let errno) = reply {
            Glibc.errno = errno.rawValue
            return 0  // isatty's "no" is 0 with errno, never -1
        }
        return CInt(truncatingIfNeeded: value(of: reply))
    }

    @inline(__always)
    static func open(_ path: String) -> CInt? {
        guard enabled.load(ordering: .relaxed) else { return nil }
        let adopted = installed.withLock { mock in
            mock.flatMap { mock in
                mock.state.withLock { $0.descriptors.first { $0.value.path == path }?.key }.map { (mock, $0) }
            }
        }
        guard let (mock, fd) = adopted else { return nil }
        return CInt(truncatingIfNeeded: value(of: mock.next(.open, fd) ?? .returns(Int(fd))))
    }

    @inline(__always)
    static func read(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        guard let mock = mock(for: fd) else { return nil }
        let reply = mock.next(.read, fd) ?? .fails(.resourceTemporarilyUnavailable)
        if case .reads(let bytes) = reply {
            let count = min(bytes.count, buffer.count)
            buffer.copyBytes(from: bytes[..<count])
            return count
        }
        return value(of: reply)
    }

    @inline(__always)
    static func write(_ fd: CInt, from buffer: UnsafeRawBufferPointer) -> Int? {
        guard let mock = mock(for: fd) else { return nil }
        let reply = mock.next(.write, fd, bytes: Array(buffer)) ?? .returns(buffer.count)
        if case .returns(let count) = reply { return min(count, buffer.count) }
        return value(of: reply)
    }

    @inline(__always)
    static func poll(_ descriptor: inout pollfd) -> CInt? {
        guard let mock = mock(for: descriptor.fd) else { return nil }
        let reply = mock.next(.poll, descriptor.fd) ?? .returns(0)
        if case .returns(let revents) = reply {
            descriptor.revents = Int16(truncatingIfNeeded: revents)
            return revents == 0 ? 0 : 1
        }
        return CInt(truncatingIfNeeded: value(of: reply))
    }

    @inline(__always)
    static func tcgetattr(_ fd: CInt, _ attributes: inout termios) -> CInt? {
        guard let mock = mock(for: fd) else { return nil }
        if let reply = mock.next(.tcgetattr, fd) { return CInt(truncatingIfNeeded: value(of: reply)) }
        attributes = mock.state.withLock { $0.descriptors[fd]?.attributes ?? termios() }
        return 0
    }

    @inline(__always)
    static func tcsetattr(_ fd: CInt, _ attributes: termios) -> CInt? {
        guard let mock = mock(for: fd) else { return nil }
        if let reply = mock.next(.tcsetattr, fd) { return CInt(truncatingIfNeeded: value(of: reply)) }
        mock.state.withLock { $0.descriptors[fd]?.attributes = attributes }
        return 0
    }
}
