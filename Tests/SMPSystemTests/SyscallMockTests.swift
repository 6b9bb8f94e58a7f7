import SMPSystem
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// The errno paths of the syscall layer, through its mock: what the wrappers retry, fold and
/// report, whatever the kernel of the test machine would do.
final class SyscallMockTests: XCTestCase {
    private var mock = SyscallMock()
    /// A real pipe: its numbers are the adopted descriptors (the mock never closes them).
    private var readEnd: CInt = -1
    private var writeEnd: CInt = -1

    override func setUpWithError() throws {
        let ends = try Sys.pipe().get()
        (readEnd, writeEnd) = (ends.readEnd, ends.writeEnd)
        mock = SyscallMock()
        mock.adopt(readEnd, path: "/dev/ttyMOCK0")
        mock.adopt(writeEnd)
    }

    override func tearDown() {
        _ = Sys.close(readEnd)
        _ = Sys.close(writeEnd)
    }

    private func read(_ fd: CInt, capacity: Int = 16) -> (Result<IOResult, Errno>, [UInt8]) {
        var buffer = [UInt8](repeating: 0, count: capacity)
        let result = mock.withInstalled { buffer.withUnsafeMutableBytes { Sys.read(fd, into: $0) } }
        if case .success(.transferred(let count)) = result { return (result, Array(buffer[..<count])) }
        return (result, [])
    }

    private func write(_ fd: CInt, _ bytes: [UInt8]) -> Result<IOResult, Errno> {
        mock.withInstalled { bytes.withUnsafeBytes { Sys.write(fd, from: $0) } }
    }

    func testReadRetriesEINTR() {
        mock.script(.read, on: readEnd, .fails(.interrupted), .fails(.interrupted), .reads([1, 2, 3]))
        let (result, bytes) = read(readEnd)
        XCTAssertEqual(result, .success(.transferred(3)))
        XCTAssertEqual(bytes, [1, 2, 3])
        XCTAssertEqual(mock.count(.read, on: readEnd), 3, "two EINTRs, then the read")
    }

    func testWriteRetriesEINTRAndReportsShortWrites() {
        mock.script(.write, on: writeEnd, .fails(.interrupted), .returns(2))
        XCTAssertEqual(write(writeEnd, [9, 8, 7]), .success(.transferred(2)))
        XCTAssertEqual(mock.written(on: writeEnd), [9, 8, 7, 9, 8, 7], "the interrupted write was offered again")
    }

    func testEAGAINIsWouldBlockNotAnError() {
        mock.script(.read, on: readEnd, .fails(.resourceTemporarilyUnavailable))
        XCTAssertEqual(read(readEnd).0, .success(.wouldBlock))
        mock.script(.write, on: writeEnd, .fails(.wouldBlock), .returns(0))
        XCTAssertEqual(write(writeEnd, [1]), .success(.wouldBlock), "EWOULDBLOCK is EAGAIN on Linux")
        XCTAssertEqual(write(writeEnd, [1]), .success(.wouldBlock), "a write that takes nothing")
        XCTAssertEqual(mock.count(.read, on: readEnd) + mock.count(.write, on: writeEnd), 3, "never retried")
    }

    func testReadOfZeroIsEndOfFile() {
        mock.script(.read, on: readEnd, .returns(0))
        XCTAssertEqual(read(readEnd).0, .success(.endOfFile))
    }

    func testEIOIsReportedNotRetried() {
        mock.script(.read, on: readEnd, .fails(.ioError))
        XCTAssertEqual(read(readEnd).0, .failure(.ioError))
        mock.script(.write, on: writeEnd, .fails(.noSuchAddressOrDevice))
        XCTAssertEqual(write(writeEnd, [1]), .failure(.noSuchAddressOrDevice))
        XCTAssertEqual(mock.count(.read, on: readEnd), 1)
        XCTAssertEqual(mock.count(.write, on: writeEnd), 1)
    }

    func testPollReportsHangUpAndRetriesEINTR() {
        mock.script(.poll, on: readEnd, .fails(.interrupted), .returns(Int(POLLHUP)))
        let revents = mock.withInstalled { Sys.poll(readEnd, events: Int16(POLLIN), timeoutMilliseconds: 0) }
        XCTAssertEqual(revents, .success(Int16(POLLHUP)))
        XCTAssertEqual(mock.count(.poll, on: readEnd), 2)
    }

    func testCloseIsNotRetriedOnEINTR() {
        mock.script(.close, on: writeEnd, .fails(.interrupted))
        XCTAssertEqual(mock.withInstalled { Sys.close(writeEnd) }.map { true }, .failure(.interrupted))
        XCTAssertEqual(mock.count(.close, on: writeEnd), 1, "Linux released the descriptor even so")
    }

    func testOpenOfAnAdoptedPathRetriesEINTR() {
        mock.script(.open, on: readEnd, .fails(.interrupted))
        XCTAssertEqual(mock.withInstalled { Sys.open("/dev/ttyMOCK0", O_RDWR) }, .success(readEnd))
        XCTAssertEqual(mock.count(.open, on: readEnd), 2)
        mock.script(.open, on: readEnd, .fails(.resourceBusy))
        XCTAssertEqual(mock.withInstalled { Sys.open("/dev/ttyMOCK0", O_RDWR) }, .failure(.resourceBusy))
    }

    func testIsattyNoAnswersAreFalseOtherErrnosFailures() {
        mock.script(.isatty, on: readEnd, .fails(.inappropriateIOCTLForDevice), .fails(.ioError))
        XCTAssertEqual(mock.withInstalled { Sys.isatty(readEnd) }, .success(false))
        XCTAssertEqual(mock.withInstalled { Sys.isatty(readEnd) }, .failure(.ioError))
        XCTAssertEqual(mock.withInstalled { Sys.isatty(readEnd) }, .success(true), "the default")
    }

    func testTermiosSetIsReadBack() throws {
        var attributes = termios()
        attributes.c_cflag = tcflag_t(CLOCAL | CREAD)
        try mock.withInstalled {
            try Sys.tcsetattr(readEnd, TCSANOW, attributes).get()
            XCTAssertEqual(try Sys.tcgetattr(readEnd).get().c_cflag, attributes.c_cflag)
        }
        mock.script(.tcsetattr, on: readEnd, .fails(.interrupted), .fails(.ioError))
        XCTAssertEqual(mock.withInstalled { Sys.tcsetattr(readEnd, TCSANOW, attributes) }.map { true }, .failure(.ioError))
    }

    func testDescriptorsNotAdoptedReachTheKernel() throws {
        let other = try Sys.pipe().get()
        defer {
            _ = Sys.close(other.readEnd)
            _ = Sys.close(other.writeEnd)
        }
        try mock.withInstalled {
            XCTAssertEqual(try [UInt8]([42]).withUnsafeBytes { try Sys.write(other.writeEnd, from: $0).get() },
                           .transferred(1))
            var buffer = [UInt8](repeating: 0, count: 4)
            XCTAssertEqual(try buffer.withUnsafeMutableBytes { try Sys.read(other.readEnd, into: $0).get() },
                           .transferred(1))
            XCTAssertEqual(buffer[0], 42)
            XCTAssertEqual(try buffer.withUnsafeMutableBytes { try Sys.read(other.readEnd, into: $0).get() },
                           .wouldBlock, "the real kernel's EAGAIN, folded the same way")
        }
        XCTAssertTrue(mock.trace.isEmpty)
    }

    func testWithoutTheMockInstalledScriptsAreIgnored() {
        mock.script(.read, on: readEnd, .fails(.ioError))
        var buffer = [UInt8](repeating: 0, count: 4)
        XCTAssertEqual(buffer.withUnsafeMutableBytes { Sys.read(readEnd, into: $0) }, .success(.wouldBlock),
                       "the real, empty, non-blocking pipe")
        XCTAssertTrue(mock.trace.isEmpty)
    }
}
