import Dispatch
import Foundation
import SMPSystem
import SystemPackage
import XCTest

@testable import NeedleDriver

#if canImport(Glibc)
import Glibc
#endif

/// SerialPort over a real pseudo-terminal: the port opens the slave side, the test plays the
/// applicator on the master side. Timeouts are generous and nothing asserts timing.
final class SerialPortTests: XCTestCase {
    private let queue = DispatchQueue(label: "SerialPortTests.port")
    private static let timeout: TimeInterval = 30

    // MARK: - Opening

    func testOpenSetsRawModeAndClearsHUPCL() throws {
        let pty = try PseudoTerminal()
        let port = try SerialPort.open(path: pty.slavePath, queue: queue)
        defer { queue.sync { port.close() } }
        XCTAssertEqual(port.path, pty.slavePath)

        let attributes = try queue.sync { try port.currentTermios() }
        XCTAssertEqual(attributes.c_cflag & tcflag_t(HUPCL), 0, "HUPCL set: closing would drop DTR")
        XCTAssertEqual(attributes.c_cflag & CRTSCTS, 0, "no hardware flow control")
        XCTAssertNotEqual(attributes.c_cflag & tcflag_t(CLOCAL), 0)
        XCTAssertNotEqual(attributes.c_cflag & tcflag_t(CREAD), 0)
        XCTAssertEqual(attributes.c_cflag & tcflag_t(CSIZE), tcflag_t(CS8))
        XCTAssertEqual(attributes.c_lflag & tcflag_t(ICANON | ECHO | ISIG), 0, "raw mode")
        XCTAssertEqual(attributes.c_oflag & tcflag_t(OPOST), 0, "raw mode")
        let (vmin, vtime) = withUnsafeBytes(of: attributes.c_cc) { ($0[Int(VMIN)], $0[Int(VTIME)]) }
        XCTAssertEqual(vmin, 1)
        XCTAssertEqual(vtime, 0)
        var copy = attributes
        XCTAssertEqual(cfgetospeed(&copy), speed_t(B115200))
    }

    func testOpenAtOtherStandardBaud() throws {
        let pty = try PseudoTerminal()
        let port = try SerialPort.open(path: pty.slavePath, baud: 9600, queue: queue)
        defer { queue.sync { port.close() } }
        var attributes = try queue.sync { try port.currentTermios() }
        XCTAssertEqual(cfgetispeed(&attributes), speed_t(B9600))
        XCTAssertEqual(cfgetospeed(&attributes), speed_t(B9600))
    }

    func testUnsupportedBaud() throws {
        let pty = try PseudoTerminal()
        XCTAssertThrowsError(try SerialPort.open(path: pty.slavePath, baud: 12345, queue: queue)) { error in
            XCTAssertEqual(error as? SerialPortError, .unsupportedBaud(12345))
        }
        XCTAssertThrowsError(try SerialPort.open(path: pty.slavePath, baud: 0, queue: queue)) { error in
            XCTAssertEqual(error as? SerialPortError, .unsupportedBaud(0))
        }
    }

    func testSecondOpenOfSamePathIsBusy() throws {
        let pty = try PseudoTerminal()
        let first = try SerialPort.open(path: pty.slavePath, queue: queue)
        XCTAssertThrowsError(try SerialPort.open(path: pty.slavePath, queue: queue)) { error in
            XCTAssertEqual(error as? SerialPortError, .busy(pty.slavePath))
        }
        // The failed attempt must not have disturbed the holder's exclusivity.
        XCTAssertThrowsError(try SerialPort.open(path: pty.slavePath, queue: queue)) { error in
            XCTAssertEqual(error as? SerialPortError, .busy(pty.slavePath))
        }
        queue.sync { first.close() }  // never started: the fd is closed right here
        let again = try SerialPort.open(path: pty.slavePath, queue: queue)
        queue.sync { again.close() }
    }

    func testRegularFileIsNotATerminal() throws {
        let path = NSTemporaryDirectory() + "smpctl-serial-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data("not a tty".utf8)))
        defer { unlink(path) }
        XCTAssertThrowsError(try SerialPort.open(path: path, queue: queue)) { error in
            XCTAssertEqual(error as? SerialPortError, .notATerminal(path))
        }
        XCTAssertThrowsError(try SerialPort.open(path: "/dev/null", queue: queue)) { error in
            XCTAssertEqual(error as? SerialPortError, .notATerminal("/dev/null"))
        }
    }

    func testMissingPathIsNoSuchDevice() {
        let path = "/dev/ttyACM-smpctl-test-does-not-exist"
        XCTAssertThrowsError(try SerialPort.open(path: path, queue: queue)) { error in
            XCTAssertEqual(error as? SerialPortError, .noSuchDevice(path))
        }
    }

    func testUnreadableFileIsPermissionDenied() throws {
        try XCTSkipIf(geteuid() == 0, "root opens a mode-000 file; testOpenErrnoMapping covers EACCES")
        let path = NSTemporaryDirectory() + "smpctl-serial-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        XCTAssertTrue(
            FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0]))
        defer { unlink(path) }
        XCTAssertThrowsError(try SerialPort.open(path: path, queue: queue)) { error in
            XCTAssertEqual(error as? SerialPortError, .permissionDenied(path))
        }
    }

    func testOpenDiscardsStaleInput() throws {
        let pty = try PseudoTerminal()
        pty.write(Array("stale bytes from before open".utf8))
        let port = try SerialPort.open(path: pty.slavePath, queue: queue)
        let received = ByteCollector()
        let fresh = Array("fresh".utf8)
        let arrived = expectation(description: "fresh bytes")
        port.start(
            onBytes: { bytes in if received.append(bytes) >= fresh.count { arrived.fulfill() } },
            onClosed: { _ in })
        pty.write(fresh)
        wait(for: [arrived], timeout: Self.timeout)
        XCTAssertEqual(received.bytes, fresh)
        queue.sync { port.close() }
    }

    // MARK: - Data both ways

    func testBytesFromDeviceArriveInOrder() throws {
        let pty = try PseudoTerminal()
        let port = try SerialPort.open(path: pty.slavePath, queue: queue)
        let payload = pseudoRandomBytes(count: 256 * 1024, seed: 7)
        let received = ByteCollector()
        let done = expectation(description: "all bytes received")
        let closed = expectation(description: "onClosed")
        port.start(
            onBytes: { bytes in if received.append(bytes) == payload.count { done.fulfill() } },
            onClosed: { reason in
                XCTAssertNil(reason)
                closed.fulfill()
            })
        // The device writes from its own thread; the master blocks while the slave is full.
        let writer = Thread { pty.write(payload) }
        writer.start()
        wait(for: [done], timeout: Self.timeout)
        XCTAssertEqual(received.bytes, payload)
        queue.sync { port.close() }
        wait(for: [closed], timeout: Self.timeout)
    }

    func testSmallWriteReachesDevice() throws {
        let pty = try PseudoTerminal()
        let port = try SerialPort.open(path: pty.slavePath, queue: queue)
        defer { queue.sync { port.close() } }
        // NUL, LF, CR, XON, XOFF, ^C, DEL, 0xFF, "A": a cooked tty would alter or eat most of them.
        let message: [UInt8] = [0x00, 0x0A, 0x0D, 0x11, 0x13, 0x03, 0x7F, 0xFF, 0x41]
        try queue.sync { try port.write(message) }
        XCTAssertEqual(pty.read(count: message.count, timeout: Self.timeout), message, "raw: no translation")
        XCTAssertEqual(queue.sync { port.pendingWriteCount }, 0)
    }

    func testLargeWritesUsePendingBufferAndKeepOrder() throws {
        let pty = try PseudoTerminal()
        let port = try SerialPort.open(path: pty.slavePath, queue: queue)
        defer { queue.sync { port.close() } }
        // Started, so a read source and the write source share the fd while the device talks back.
        let incoming = pseudoRandomBytes(count: 128 * 1024, seed: 4)
        let received = ByteCollector()
        let allIncoming = expectation(description: "device bytes received")
        port.start(
            onBytes: { bytes in if received.append(bytes) == incoming.count { allIncoming.fulfill() } },
            onClosed: { _ in })
        let first = pseudoRandomBytes(count: 1024 * 1024, seed: 1)
        let second: [UInt8] = [1, 2, 3]
        let third = pseudoRandomBytes(count: 256 * 1024, seed: 2)

        let pendingAfterFirst = try queue.sync {
            try port.write(first)
            let pendingNow = port.pendingWriteCount
            try port.write(second)
            try port.write(third)
            XCTAssertEqual(port.pendingWriteCount, pendingNow + second.count + third.count)
            return pendingNow
        }
        // Nobody reads the master yet, so a pty (a few KiB of buffer) cannot take 1 MiB.
        XCTAssertGreaterThan(pendingAfterFirst, 0, "EAGAIN path not exercised")
        XCTAssertLessThan(pendingAfterFirst, first.count)

        let talker = Thread { pty.write(incoming) }
        talker.start()
        let expected = first + second + third
        let written = pty.read(count: expected.count, timeout: Self.timeout)
        XCTAssertEqual(written.count, expected.count)
        XCTAssertTrue(written == expected, "bytes lost or reordered")
        XCTAssertEqual(queue.sync { port.pendingWriteCount }, 0)
        wait(for: [allIncoming], timeout: Self.timeout)
        XCTAssertTrue(received.bytes == incoming, "device bytes lost or reordered")

        // After draining, the (suspended) write source must come back for the next EAGAIN.
        let fourth = pseudoRandomBytes(count: 512 * 1024, seed: 3)
        try queue.sync { try port.write(fourth) }
        XCTAssertTrue(pty.read(count: fourth.count, timeout: Self.timeout) == fourth)
    }

    // MARK: - Closing and unplugging

    func testCloseCallsOnClosedOnceWithNilAndIsIdempotent() throws {
        let pty = try PseudoTerminal()
        let port = try SerialPort.open(path: pty.slavePath, queue: queue)
        let closed = expectation(description: "onClosed")
        closed.assertForOverFulfill = true
        port.start(
            onBytes: { _ in },
            onClosed: { reason in
                XCTAssertNil(reason)
                closed.fulfill()
            })
        queue.sync {
            port.close()
            port.close()
        }
        wait(for: [closed], timeout: Self.timeout)
        queue.sync { port.close() }
        XCTAssertThrowsError(try queue.sync { try port.write([1]) }) { error in
            XCTAssertEqual(error as? SerialPortError, .closed)
        }
        // onClosed runs after the fd is closed: reopening right away must work.
        let again = try SerialPort.open(path: pty.slavePath, queue: queue)
        queue.sync { again.close() }
    }

    func testCloseRestoresOriginalTermiosButKeepsHUPCLCleared() throws {
        let pty = try PseudoTerminal()
        let before = try pty.slaveTermios()
        XCTAssertNotEqual(before.c_lflag & tcflag_t(ICANON), 0, "a fresh pty slave is canonical")
        let port = try SerialPort.open(path: pty.slavePath, queue: queue)
        queue.sync { port.close() }
        let after = try pty.slaveTermios()
        XCTAssertEqual(after.c_lflag & tcflag_t(ICANON | ECHO), before.c_lflag & tcflag_t(ICANON | ECHO))
        XCTAssertEqual(after.c_cflag & tcflag_t(HUPCL), 0)
    }

    func testStartAfterCloseReportsClosed() throws {
        let pty = try PseudoTerminal()
        let port = try SerialPort.open(path: pty.slavePath, queue: queue)
        queue.sync { port.close() }
        let closed = expectation(description: "onClosed")
        port.start(onBytes: { _ in XCTFail("no bytes after close") }, onClosed: { reason in
            XCTAssertNil(reason)
            closed.fulfill()
        })
        wait(for: [closed], timeout: Self.timeout)
    }

    func testDroppingAnUnstartedPortReleasesIt() throws {
        let pty = try PseudoTerminal()
        do {
            _ = try SerialPort.open(path: pty.slavePath, queue: queue)
        }
        let again = try SerialPort.open(path: pty.slavePath, queue: queue)
        queue.sync { again.close() }
    }

    func testUnplugDeliversDisconnected() throws {
        let pty = try PseudoTerminal()
        let path = pty.slavePath
        let port = try SerialPort.open(path: path, queue: queue)
        let closed = expectation(description: "onClosed")
        let reasonBox = ReasonBox()
        port.start(onBytes: { _ in }, onClosed: { reason in
            reasonBox.set(reason)
            closed.fulfill()
        })
        pty.closeMaster()  // the device goes away
        wait(for: [closed], timeout: Self.timeout)
        guard case .disconnected(let reportedPath, _)? = reasonBox.get() else {
            return XCTFail("expected .disconnected, got \(String(describing: reasonBox.get()))")
        }
        XCTAssertEqual(reportedPath, path)
        XCTAssertThrowsError(try queue.sync { try port.write([1]) }) { error in
            guard case .disconnected? = error as? SerialPortError else {
                return XCTFail("expected .disconnected, got \(error)")
            }
        }
        queue.sync { port.close() }  // harmless after the link ended
    }

    func testUnplugWithWritePendingDeliversDisconnected() throws {
        let pty = try PseudoTerminal()
        let port = try SerialPort.open(path: pty.slavePath, queue: queue)
        let closed = expectation(description: "onClosed")
        let reasonBox = ReasonBox()
        port.start(onBytes: { _ in }, onClosed: { reason in
            reasonBox.set(reason)
            closed.fulfill()
        })
        try queue.sync {
            try port.write(pseudoRandomBytes(count: 1024 * 1024, seed: 9))
            XCTAssertGreaterThan(port.pendingWriteCount, 0)
        }
        pty.closeMaster()
        wait(for: [closed], timeout: Self.timeout)
        guard case .disconnected? = reasonBox.get() else {
            return XCTFail("expected .disconnected, got \(String(describing: reasonBox.get()))")
        }
        XCTAssertEqual(queue.sync { port.pendingWriteCount }, 0)
    }

    // MARK: - Errors

    func testOpenErrnoMapping() {
        let path = "/dev/ttyACM0"
        XCTAssertEqual(SerialPortError.opening(path, errno: .permissionDenied), .permissionDenied(path))
        XCTAssertEqual(SerialPortError.opening(path, errno: .notPermitted), .permissionDenied(path))
        XCTAssertEqual(SerialPortError.opening(path, errno: .noSuchFileOrDirectory), .noSuchDevice(path))
        XCTAssertEqual(SerialPortError.opening(path, errno: .noSuchAddressOrDevice), .noSuchDevice(path))
        XCTAssertEqual(
            SerialPortError.opening(path, errno: .operationNotSupportedByDevice), .noSuchDevice(path))
        XCTAssertEqual(SerialPortError.opening(path, errno: .resourceBusy), .busy(path))
        XCTAssertEqual(SerialPortError.opening(path, errno: .isDirectory), .notATerminal(path))
        XCTAssertEqual(
            SerialPortError.opening(path, errno: .tooManyOpenFiles),
            .io(operation: "open", path: path, errno: .tooManyOpenFiles))

        XCTAssertEqual(
            SerialPortError.link(path, operation: "read", errno: .ioError), .disconnected(path, .ioError))
        XCTAssertEqual(
            SerialPortError.link(path, operation: "read", errno: .noSuchAddressOrDevice),
            .disconnected(path, .noSuchAddressOrDevice))
        XCTAssertEqual(
            SerialPortError.link(path, operation: "write", errno: .badFileDescriptor),
            .io(operation: "write", path: path, errno: .badFileDescriptor))
    }

    func testDescriptionsSayTheFix() {
        XCTAssertEqual(
            SerialPortError.permissionDenied("/dev/ttyACM0").description,
            "Permission denied opening /dev/ttyACM0. Install the udev rule 70-smp-applicator.rules "
                + "(the smpctl package does; from source: `sudo make install-udev`) and add yourself to "
                + "the group `smp` (`sudo usermod -aG smp $USER`, then log in again).")
        let busy = SerialPortError.busy("/dev/ttyACM0").description
        XCTAssertTrue(busy.contains("in use by another process (another smpctl?)"), busy)
        XCTAssertTrue(busy.contains("`fuser /dev/ttyACM0`"), busy)
        let missing = SerialPortError.noSuchDevice("/dev/ttyACM0").description
        XCTAssertTrue(missing.contains("cable"), missing)
        XCTAssertTrue(missing.contains("`smpctl devices`"), missing)
        let gone = SerialPortError.disconnected("/dev/ttyACM0", .ioError).description
        XCTAssertTrue(gone.contains("/dev/ttyACM0") && gone.contains("USB cable"), gone)
        XCTAssertTrue(SerialPortError.unsupportedBaud(12345).description.contains("115200"))
        let io = SerialPortError.io(operation: "tcsetattr", path: "/dev/ttyACM0", errno: .ioError).description
        XCTAssertTrue(io.contains("tcsetattr") && io.contains("errno 5"), io)
    }

    func testSettingsMismatchIsDetected() {
        var requested = termios()
        cfmakeraw(&requested)
        requested.c_cflag |= tcflag_t(CLOCAL | CREAD)
        XCTAssertNil(SerialPort.mismatch(requested: requested, applied: requested))
        var applied = requested
        applied.c_cflag |= tcflag_t(HUPCL)
        XCTAssertNotNil(SerialPort.mismatch(requested: requested, applied: applied))
        applied = requested
        applied.c_lflag |= tcflag_t(ECHO)
        XCTAssertNotNil(SerialPort.mismatch(requested: requested, applied: applied))
        applied = requested
        _ = cfsetospeed(&applied, speed_t(B9600))
        _ = cfsetospeed(&requested, speed_t(B115200))
        XCTAssertNotNil(SerialPort.mismatch(requested: requested, applied: applied))
    }
}

// MARK: - Helpers

/// The applicator's side of a pseudo-terminal.
///
/// `@unchecked Sendable`: `master` changes only in `closeMaster()`, which tests call when no other
/// thread uses it; reading and writing the fd from two threads at once is fine for the kernel.
private final class PseudoTerminal: @unchecked Sendable {
    private(set) var master: CInt
    let slavePath: String

    init() throws {
        (master, slavePath) = try Sys.openPseudoTerminal().get()
    }

    deinit { closeMaster() }

    /// Unplugs the device.
    func closeMaster() {
        if master >= 0 {
            Glibc.close(master)
            master = -1
        }
    }

    /// Blocking write of all bytes (the master fd is blocking).
    func write(_ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { all in
                Glibc.write(master, all.baseAddress! + offset, all.count - offset)
            }
            if written < 0 {
                if errno == EINTR { continue }
                return
            }
            offset += written
        }
    }

    /// Reads until `count` bytes arrived or `timeout` passed; returns what arrived.
    func read(count: Int, timeout: TimeInterval) -> [UInt8] {
        var result: [UInt8] = []
        result.reserveCapacity(count)
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        let deadline = Date().addingTimeInterval(timeout)
        while result.count < count {
            let remainingMS = Int32(max(0, deadline.timeIntervalSinceNow) * 1000)
            if remainingMS == 0 { break }
            var descriptor = pollfd(fd: master, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, remainingMS)
            if ready < 0 && errno == EINTR { continue }
            if ready <= 0 { break }
            let wanted = min(chunk.count, count - result.count)
            let got = chunk.withUnsafeMutableBytes { Glibc.read(master, $0.baseAddress!, wanted) }
            if got < 0 && errno == EINTR { continue }
            if got <= 0 { break }
            result.append(contentsOf: chunk[..<got])
        }
        return result
    }

    /// The slave's termios, seen through a fresh fd (root ignores TIOCEXCL; tests only).
    func slaveTermios() throws -> termios {
        let fd = Glibc.open(slavePath, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw Errno(rawValue: errno) }
        defer { Glibc.close(fd) }
        var attributes = termios()
        guard tcgetattr(fd, &attributes) == 0 else { throw Errno(rawValue: errno) }
        return attributes
    }
}

/// Bytes collected from `onBytes` (called on the port's queue, read from the test thread).
private final class ByteCollector: @unchecked Sendable {  // guarded by `lock`
    private let lock = NSLock()
    private var storage: [UInt8] = []

    /// Appends and returns the new total.
    func append(_ bytes: UnsafeRawBufferPointer) -> Int {
        lock.lock()
        defer { lock.unlock() }
        storage.append(contentsOf: bytes)
        return storage.count
    }

    var bytes: [UInt8] {
        lock.lock()
        defer { lock.unlock() }
        return storage
    }
}

private final class ReasonBox: @unchecked Sendable {  // guarded by `lock`
    private let lock = NSLock()
    private var reason: SerialPortError?

    func set(_ value: SerialPortError?) {
        lock.lock()
        reason = value
        lock.unlock()
    }

    func get() -> SerialPortError? {
        lock.lock()
        defer { lock.unlock() }
        return reason
    }
}

/// Deterministic bytes without a short period, so a dropped or reordered chunk shows.
private func pseudoRandomBytes(count: Int, seed: UInt64) -> [UInt8] {
    var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    return (0..<count).map { _ in
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return UInt8(truncatingIfNeeded: state >> 32)
    }
}

/// The e-stop path writes from any thread, ahead of pending output, and never after close.
final class EmergencyWriteTests: XCTestCase {
    func testEmergencyWriteFromAnotherThreadArrivesAndIsRefusedAfterClose() throws {
        let (master, path) = try Sys.openPseudoTerminal().get()
        defer { close(master) }
        var raw = termios()
        tcgetattr(master, &raw)
        cfmakeraw(&raw)
        tcsetattr(master, TCSANOW, &raw)
        let queue = DispatchQueue(label: "test.port")
        let port = try SerialPort.open(path: path, queue: queue)
        let written = DispatchQueue.global().sync { port.emergencyWrite([0, 0x02, 0x2F, 0x06]) }
        XCTAssertTrue(written)
        var buffer = [UInt8](repeating: 0, count: 16)
        var pollfd = pollfd(fd: master, events: Int16(POLLIN), revents: 0)
        XCTAssertEqual(poll(&pollfd, 1, 5_000), 1)
        let count = read(master, &buffer, buffer.count)
        XCTAssertEqual(Array(buffer[..<max(count, 0)]), [0, 0x02, 0x2F, 0x06])
        let closed = expectation(description: "closed")
        queue.async {
            port.start(onBytes: { _ in }, onClosed: { _ in closed.fulfill() })
            port.close()
        }
        wait(for: [closed], timeout: 10)
        XCTAssertFalse(port.emergencyWrite([0]), "an emergency write after close must be refused")
    }
}
