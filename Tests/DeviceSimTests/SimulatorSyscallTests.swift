import SMPSystem
import XCTest

@testable import DeviceSim

#if canImport(Glibc)
import Glibc
#endif

/// The simulator's errno paths, through the syscall layer's mock (real pipe descriptors as keys).
final class SimulatorSyscallTests: XCTestCase {
    private var mock = SyscallMock()
    private var ends: (readEnd: CInt, writeEnd: CInt) = (-1, -1)
    private let path = "/dev/ttyMOCK-sim"

    override func setUpWithError() throws {
        ends = try Sys.pipe().get()
        mock = SyscallMock()
        mock.adopt(ends.readEnd, path: path)
    }

    override func tearDown() {
        _ = Sys.close(ends.readEnd)
        _ = Sys.close(ends.writeEnd)
    }

    func testOpenPortRetriesEINTRAndRefusesALockedPortOrANonTerminal() throws {
        mock.script(.flock, on: ends.readEnd, .fails(.interrupted), .fails(.wouldBlock))
        mock.script(.isatty, on: ends.readEnd, .returns(1), .fails(.inappropriateIOCTLForDevice))
        try mock.withInstalled {
            XCTAssertThrowsError(try PseudoTerminal.openPort(path)) { error in
                XCTAssertEqual(error as? SimulatorError, .portBusy(path))
            }
            XCTAssertThrowsError(try PseudoTerminal.openPort(path)) { error in
                XCTAssertEqual(error as? SimulatorError, .notATerminal(path))
            }
        }
        XCTAssertEqual(mock.count(.flock, on: ends.readEnd), 2, "EINTR on flock is retried")
        XCTAssertEqual(mock.count(.close, on: ends.readEnd), 2, "each refused port is closed")
    }

    func testOpenPortSetsRawModeAndDiscardsStaleBytes() throws {
        let terminal = try mock.withInstalled { try PseudoTerminal.openPort(path) }
        XCTAssertEqual(terminal.master, ends.readEnd)
        XCTAssertTrue(terminal.isPort)
        let attributes = try mock.withInstalled { try Sys.tcgetattr(ends.readEnd).get() }
        XCTAssertNotEqual(attributes.c_cflag & tcflag_t(CLOCAL | CREAD), 0)
        XCTAssertEqual(attributes.c_cflag & tcflag_t(HUPCL), 0)
        XCTAssertEqual(mock.count(.tcflush, on: ends.readEnd), 1)
    }

    func testRecordLineWriteRetriesEINTRAndCountsEIO() throws {
        mock.adopt(ends.writeEnd, path: "/tmp/mock-record.ndjson")
        mock.script(.write, on: ends.writeEnd, .fails(.interrupted), .returns(3), .fails(.ioError))
        let file = try mock.withInstalled { () throws(SimulatorError) -> GroundTruthRecord in
            let file = try GroundTruthRecord(path: "/tmp/mock-record.ndjson")
            file.append(Self.dot)
            file.append(Self.dot)
            file.close()
            return file
        }
        XCTAssertEqual(file.writeErrors, 1, "the first line: EINTR retried, short write finished, then EIO")
        let line = Array(GroundTruthRecord.line(for: Self.dot).utf8) + [0x0A]
        XCTAssertEqual(mock.written(on: ends.writeEnd), line + line + Array(line.dropFirst(3)) + line)
        XCTAssertEqual(file.entries.count, 2, "the in-memory copy keeps both")
    }

    private static let dot = InjectedDot(
        dotID: 1, seq: 1, epoch: 0, xMicrometres: 0, yMicrometres: 0, depthMicrometres: 800,
        dwellMicroseconds: 100_000, dwellDeliveredMicroseconds: 100_000, skinEntrySimulatedMicroseconds: 0,
        simulatedTimeMicroseconds: 130_000, wallTimeMicroseconds: 130_000, bootID: 1, outcome: .done, cause: nil,
        doneCount: 1)
}
