import XCTest
import Foundation
import FirmwareProtocol
@testable import DeviceSim

final class GroundTruthRecordTests: XCTestCase {
    private func sample(_ id: UInt32, outcome: InjectedDot.Outcome = .done, cause: Interruption? = nil) -> InjectedDot {
        Self.sample(id, outcome: outcome, cause: cause)
    }

    private static func sample(_ id: UInt32, outcome: InjectedDot.Outcome = .done, cause: Interruption? = nil) -> InjectedDot {
        InjectedDot(dotID: id, seq: UInt8(truncatingIfNeeded: id), epoch: 2, xMicrometres: -12_500, yMicrometres: 30_250,
                    depthMicrometres: 800, dwellMicroseconds: 120_000, dwellDeliveredMicroseconds: 120_000,
                    skinEntrySimulatedMicroseconds: 650_771, simulatedTimeMicroseconds: 785_771,
                    wallTimeMicroseconds: 15_716, bootID: 305_419_896, outcome: outcome, cause: cause, doneCount: 1)
    }

    func testLineFormatIsStableAndParses() {
        XCTAssertEqual(
            GroundTruthRecord.line(for: sample(42)),
            #"{"dot":42,"seq":42,"epoch":2,"x_um":-12500,"y_um":30250,"depth_um":800,"dwell_us":120000,"#
                + #""dwell_done_us":120000,"entry_sim_time_us":650771,"sim_time_us":785771,"wall_time_us":15716,"#
                + #""boot_id":305419896,"done_count":1,"outcome":"done"}"#)
        for dot in [sample(1), sample(2, outcome: .interrupted, cause: .abort),
                    sample(3, outcome: .interrupted, cause: .reset),
                    sample(4, outcome: .interrupted, cause: .shutdown(.estopButton)),
                    sample(5, outcome: .interrupted, cause: .shutdown(.dotOutOfLimits))] {
            XCTAssertEqual(GroundTruthRecord.parse(line: GroundTruthRecord.line(for: dot)), dot)
        }
        XCTAssertTrue(GroundTruthRecord.line(for: sample(4, outcome: .interrupted, cause: .shutdown(.estopButton)))
            .hasSuffix(#","outcome":"interrupted","cause":"estop_button"}"#))
        XCTAssertNil(GroundTruthRecord.parse(line: "{\"dot\":1}"))
        XCTAssertNil(GroundTruthRecord.parse(line: "not json"))
    }

    func testAppendsWholeLinesFromSeveralWritersAndKeepsThemInMemory() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("smp-record-\(UUID()).ndjson").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try "{\"dot\":9,\"existing\":true}\n".write(toFile: path, atomically: false, encoding: .utf8)
        let first = try GroundTruthRecord(path: path)
        let second = try GroundTruthRecord(path: path)  // another simulator appending to the same file
        DispatchQueue.concurrentPerform(iterations: 200) { index in
            (index.isMultiple(of: 2) ? first : second).append(Self.sample(UInt32(index + 1)))
        }
        first.close()
        second.close()
        first.close()  // idempotent
        XCTAssertEqual(first.entries.count + second.entries.count, 200)
        XCTAssertEqual(first.writeErrors, 0)
        let lines = try GroundTruthRecord.read(path: path)
        XCTAssertEqual(lines.count, 201)
        XCTAssertNil(lines[0], "the existing line is kept (and is not one of ours)")
        let dots = lines.dropFirst().compactMap { $0 }
        XCTAssertEqual(dots.count, 200, "every line whole")
        XCTAssertEqual(Set(dots.map(\.dotID)), Set(1...200))
    }

    func testInMemoryRecordNeedsNoFile() throws {
        let record = try GroundTruthRecord(path: nil)
        record.append(sample(1))
        XCTAssertEqual(record.entries, [sample(1)])
    }

    func testUnwritablePathThrows() {
        XCTAssertThrowsError(try GroundTruthRecord(path: "/nonexistent-dir/record.ndjson"))
    }
}
