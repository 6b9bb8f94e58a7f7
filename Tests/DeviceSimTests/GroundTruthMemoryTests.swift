import DeviceSim
import FirmwareCore
import Foundation
import XCTest

/// `smpctl run --sim` and `smpctl sim` keep the ground truth in the NDJSON file only: the file
/// must get every line all the same.
final class GroundTruthMemoryTests: XCTestCase {
    private func sample(_ id: UInt32) -> InjectedDot {
        InjectedDot(dotID: id, seq: UInt8(truncatingIfNeeded: id), epoch: 0, xMicrometres: 0, yMicrometres: 0,
                    depthMicrometres: 800, dwellMicroseconds: 120_000, dwellDeliveredMicroseconds: 120_000,
                    skinEntrySimulatedMicroseconds: 1, simulatedTimeMicroseconds: 2, wallTimeMicroseconds: 3,
                    bootID: 7, outcome: .done, cause: nil, doneCount: id)
    }

    func testWithoutEntriesInMemoryTheFileStillGetsEveryLine() throws {
        let path = NSTemporaryDirectory() + "ground-truth-\(UUID().uuidString).ndjson"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let record = try GroundTruthRecord(path: path, keepsEntries: false)
        for id in UInt32(1)...50 { record.append(sample(id)) }
        record.close()
        XCTAssertTrue(record.entries.isEmpty)
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.compactMap { GroundTruthRecord.parse(line: String($0)) }, (1...50).map(sample))

        let kept = try GroundTruthRecord(path: nil)
        kept.append(sample(1))
        XCTAssertEqual(kept.entries, [sample(1)], "in memory by default, for in-process tests")
    }
}
