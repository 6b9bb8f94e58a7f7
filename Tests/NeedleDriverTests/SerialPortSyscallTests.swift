import Dispatch
import Foundation
import SMPSystem
import XCTest

@testable import NeedleDriver

#if canImport(Glibc)
import Glibc
#endif

/// SerialPort's errno paths, through the syscall layer's mock: EINTR retried, EAGAIN waited out,
/// EIO, end of file and POLLHUP ending the link as `.disconnected`. The port's descriptor is one
/// end of a real socket pair, so that Dispatch has something to watch; every call SerialPort makes
/// on it is answered by the mock's script.
final class SerialPortSyscallTests: XCTestCase {
    private let queue = DispatchQueue(label: "SerialPortSyscallTests.port")
    private let path = "/dev/ttyMOCK-serial"
    private var mock = SyscallMock()
    private var port: CInt = -1
    private var peer: CInt = -1
    private static let timeout: TimeInterval = 30

    override func setUpWithError() throws {
        var ends: [CInt] = [-1, -1]
        guard socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0, &ends) == 0 else {
            throw Errno(rawValue: errno)
        }
        (port, peer) = (ends[0], ends[1])
        mock = SyscallMock()
        mock.adopt(port, path: path)
    }

    override func tearDown() {
        close(port)
        close(peer)
    }

    /// Closes `serial` and waits for its sources' cancel handlers, which run after `close()`
    /// returns: one that ran after the mock was uninstalled really closed `port`, which
    /// `tearDown` then closed again — or, the number given meanwhile to the next test's pty,
    /// closed that (SerialPortTests.testBytesFromDeviceArriveInOrder saw its port hang up once,
    /// fifth stop).
    private func closeAndWait(_ serial: SerialPort) {
        queue.sync { serial.close() }
        let deadline = Date().addingTimeInterval(Self.timeout)
        while !queue.sync(execute: { serial.descriptorClosed }) && Date() < deadline { usleep(1_000) }
        XCTAssertTrue(queue.sync { serial.descriptorClosed }, "the port's descriptor was not closed")
    }

    /// Makes the port's descriptor readable for good (the mock never consumes the byte), so the
    /// read source fires and SerialPort reads: what it reads is the mock's script.
    private func makeReadable() {
        var byte: UInt8 = 0
        XCTAssertEqual(Glibc.write(peer, &byte, 1), 1)
    }

    /// Opens the port (mocked), starts it and waits for `onClosed`; returns the bytes and reason.
    private func runUntilClosed() throws -> (bytes: [UInt8], reason: SerialPortError?) {
        let received = Shared<[UInt8]>([])
        let reason = Shared<SerialPortError?>(nil)
        let closed = expectation(description: "onClosed")
        try mock.withInstalled {
            let serial = try SerialPort.open(path: path, queue: queue)
            serial.start(
                onBytes: { bytes in received.withLock { $0.append(contentsOf: bytes) } },
                onClosed: { error in
                    reason.withLock { $0 = error }
                    closed.fulfill()
                })
            makeReadable()
            wait(for: [closed], timeout: Self.timeout)
        }
        return (received.withLock { $0 }, reason.withLock { $0 })
    }

    func testOpenRetriesEINTRAndMapsALockedPortToBusy() throws {
        mock.script(.open, on: port, .fails(.interrupted))
        mock.script(.flock, on: port, .fails(.interrupted), .fails(.wouldBlock))
        try mock.withInstalled {
            XCTAssertThrowsError(try SerialPort.open(path: path, queue: queue)) { error in
                XCTAssertEqual(error as? SerialPortError, .busy(path))
            }
        }
        XCTAssertEqual(mock.count(.open, on: port), 2, "EINTR on open is retried")
        XCTAssertEqual(mock.count(.flock, on: port), 2, "EINTR on flock is retried")
        XCTAssertEqual(mock.count(.close, on: port), 1, "the refused port is closed")
    }

    func testReadRetriesEINTRThenEIOEndsTheLinkAsDisconnected() throws {
        mock.script(.read, on: port, .fails(.interrupted), .reads([1, 2, 3]), .fails(.ioError))
        let (bytes, reason) = try runUntilClosed()
        XCTAssertEqual(bytes, [1, 2, 3])
        XCTAssertEqual(reason, .disconnected(path, .ioError))
        XCTAssertEqual(mock.count(.read, on: port), 3)
        XCTAssertEqual(mock.count(.close, on: port), 1)
    }

    func testReadOfEndOfFileIsAHangUp() throws {
        mock.script(.read, on: port, .reads([7]), .returns(0))
        let (bytes, reason) = try runUntilClosed()
        XCTAssertEqual(bytes, [7])
        XCTAssertEqual(reason, .disconnected(path, nil))
    }

    func testEAGAINWithPOLLHUPIsAHangUp() throws {
        mock.script(.read, on: port, .fails(.resourceTemporarilyUnavailable))
        mock.script(.poll, on: port, .fails(.interrupted), .returns(Int(POLLHUP)))
        let (bytes, reason) = try runUntilClosed()
        XCTAssertEqual(bytes, [])
        XCTAssertEqual(reason, .disconnected(path, nil))
        XCTAssertEqual(mock.count(.poll, on: port), 2, "EINTR on poll is retried")
    }

    func testEAGAINWithoutHangUpKeepsTheLinkOpen() throws {
        // After the scripted replies every read is EAGAIN and every poll quiet: the link stays up
        // (the source fires again and again, since the socket stays readable) until close().
        mock.script(.read, on: port, .reads([5, 6]), .fails(.resourceTemporarilyUnavailable))
        let received = Shared<[UInt8]>([])
        let reason = Shared<SerialPortError??>(nil)
        let gotBytes = expectation(description: "bytes")
        let closed = expectation(description: "onClosed")
        try mock.withInstalled {
            let serial = try SerialPort.open(path: path, queue: queue)
            serial.start(
                onBytes: { bytes in
                    received.withLock { $0.append(contentsOf: bytes) }
                    gotBytes.fulfill()
                },
                onClosed: { error in
                    reason.withLock { $0 = .some(error) }
                    closed.fulfill()
                })
            makeReadable()
            wait(for: [gotBytes], timeout: Self.timeout)
            // Until at least one quiet poll has been answered: the EAGAIN path ran and kept the link.
            let deadline = Date().addingTimeInterval(Self.timeout)
            while mock.count(.poll, on: port) < 2 && Date() < deadline { usleep(1_000) }
            XCTAssertTrue(reason.withLock { $0 } == nil, "EAGAIN must not end the link")
            queue.sync { serial.close() }
            wait(for: [closed], timeout: Self.timeout)
        }
        XCTAssertEqual(received.withLock { $0 }, [5, 6])
        XCTAssertEqual(reason.withLock { $0 }, .some(nil), "closed by close(), not by an error")
    }

    func testWriteRetriesEINTRAndKeepsWhatEAGAINLeftForTheWriteSource() throws {
        mock.script(.write, on: port, .fails(.interrupted), .returns(2), .fails(.wouldBlock))
        try mock.withInstalled {
            let serial = try SerialPort.open(path: path, queue: queue)
            defer { closeAndWait(serial) }
            try queue.sync {
                try serial.write([1, 2, 3, 4, 5])
                XCTAssertEqual(serial.pendingWriteCount, 3, "EAGAIN: the rest waits, nothing is dropped")
            }
            // The socket is writable: the write source drains the rest (the mock takes it all).
            let deadline = Date().addingTimeInterval(Self.timeout)
            while queue.sync(execute: { serial.pendingWriteCount }) > 0 && Date() < deadline { usleep(1_000) }
            XCTAssertEqual(queue.sync { serial.pendingWriteCount }, 0)
        }
        XCTAssertEqual(mock.written(on: port), [1, 2, 3, 4, 5] + [1, 2, 3, 4, 5] + [3, 4, 5] + [3, 4, 5],
                       "interrupted, short, would block, then drained")
    }

    func testWriteEIOEndsTheLinkAsDisconnected() throws {
        mock.script(.write, on: port, .fails(.ioError))
        let reason = Shared<SerialPortError?>(nil)
        let closed = expectation(description: "onClosed")
        try mock.withInstalled {
            let serial = try SerialPort.open(path: path, queue: queue)
            serial.start(onBytes: { _ in }, onClosed: { error in
                reason.withLock { $0 = error }
                closed.fulfill()
            })
            try queue.sync {
                XCTAssertThrowsError(try serial.write([0x00, 0x01])) { error in
                    XCTAssertEqual(error as? SerialPortError, .disconnected(path, .ioError))
                }
            }
            wait(for: [closed], timeout: Self.timeout)
            XCTAssertFalse(serial.emergencyWrite([0]), "nothing is written after the link ended")
        }
        XCTAssertEqual(reason.withLock { $0 }, .disconnected(path, .ioError))
    }

    func testEmergencyWriteRetriesEINTRAndReportsEIO() throws {
        mock.script(.write, on: port, .fails(.interrupted), .returns(1), .fails(.ioError))
        try mock.withInstalled {
            let serial = try SerialPort.open(path: path, queue: queue)
            defer { closeAndWait(serial) }
            XCTAssertFalse(serial.emergencyWrite([0, 0x02]), "EIO after the first byte: reported, not retried")
            XCTAssertTrue(serial.emergencyWrite([0, 0x02]))
        }
        XCTAssertEqual(mock.written(on: port), [0, 0x02, 0, 0x02, 0x02, 0, 0x02])
    }
}

/// A value shared between the test thread and the port's callbacks.
private final class Shared<Value: Sendable>: Sendable {
    private let mutex: Locked<Value>

    init(_ value: Value) { mutex = Locked(value) }

    func withLock<R>(_ body: (inout Value) -> R) -> R { mutex.withLock { body(&$0) } }
}
