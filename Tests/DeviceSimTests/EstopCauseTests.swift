import XCTest
import FirmwareProtocol
@testable import DeviceSim

/// Issue 12, item 7: an e-stop stops whatever its cause byte says.
final class EstopCauseTests: XCTestCase {
    /// ESTOP with a raw cause byte, CRC correct: built by hand so the codec cannot refuse to send it.
    static func rawEstop(cause: UInt8) -> [UInt8] {
        var raw: [UInt8] = [0x2F, 0x00, cause]
        let crc = CRC32C.checksum(raw)
        raw += [UInt8(crc & 0xFF), UInt8(crc >> 8 & 0xFF), UInt8(crc >> 16 & 0xFF), UInt8(crc >> 24)]
        var wire: [UInt8] = []
        COBS.encode(raw, into: &wire)
        wire.append(0)
        return wire
    }

    func testAnEstopWithAnUnknownCauseLatchesAndCutsTheRunningDotShort() {
        var bench = Bench()
        bench.handshakeAndArm()
        bench.dot(1, id: 1)
        bench.dot(2, id: 2, x: 5_000)
        bench.run(until: 60_000)  // dot 1: descend 0–15 ms, dwell 15–115 ms
        XCTAssertEqual(bench.status.state, .running)
        let answer = bench.sendBytes(Self.rawEstop(cause: 0x77))
        XCTAssertTrue(answer.naks.isEmpty, "not a bad frame: \(answer)")
        let status = answer.statuses.first
        XCTAssertEqual(status?.state, .estop)
        XCTAssertEqual(status?.fault, .hostEstop, "an unknown cause is reported as host_estop")
        XCTAssertEqual(status?.currentDotID, 1)
        XCTAssertEqual(status?.needleRetracted, true)
        XCTAssertEqual(bench.status.queueDepth, 0)
        bench.run(for: 1_000_000)
        XCTAssertEqual(bench.record.map(\.dotID), [1])
        XCTAssertEqual(bench.record.first?.outcome, .interrupted)
        XCTAssertEqual(bench.record.first?.cause, .shutdown(.hostEstop))
        XCTAssertEqual(bench.record.first?.dwellDeliveredMicroseconds, 45_000)
    }

    func testAnEstopWithCauseNoneOrAnyByteLatchesAnArmedDevice() {
        for cause in [0x00, 0x09, 0x80, 0xFF] as [UInt8] {
            var bench = Bench()
            bench.handshakeAndArm()
            bench.sendBytes(Self.rawEstop(cause: cause))
            XCTAssertEqual(bench.status.state, .estop, "cause \(cause)")
            XCTAssertEqual(bench.status.fault, .hostEstop, "cause \(cause)")
        }
    }
}
