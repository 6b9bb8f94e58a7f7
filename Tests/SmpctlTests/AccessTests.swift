import Foundation
import XCTest

/// Issue 14, item 5: a plan, machine file or records database that is not a file of data — a
/// device, a FIFO, a link to one — is refused with a clear message and exit 66, at once.
final class AccessTests: XCTestCase {
    func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("smpctl-access-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    func testAPlanOrMachineFileLinkedToADeviceIsRefusedNamingTheTarget() throws {
        let directory = try temporaryDirectory()
        let plan = directory.appendingPathComponent("plan.json").path
        try FileManager.default.createSymbolicLink(atPath: plan, withDestinationPath: "/dev/zero")
        let validated = try CLITests.smpctl(["validate", plan])
        XCTAssertEqual(validated.status, 66, validated.stderr)
        XCTAssertTrue(validated.stderr.contains("it is a symbolic link to /dev/zero; that is a character device, not a regular file; it was not opened"),
                      validated.stderr)

        let machine = directory.appendingPathComponent("machine.toml").path
        XCTAssertEqual(mkfifo(machine, 0o600), 0)
        let run = try CLITests.smpctl(["run", "Examples/hairline.json", "--sim", "--yes", "--config", machine,
                                       "--db", directory.appendingPathComponent("records.sqlite").path])
        XCTAssertEqual(run.status, 66, run.stderr)
        XCTAssertTrue(run.stderr.contains("it is a FIFO (named pipe), not a regular file"), run.stderr)
    }

    /// Before the fix `--db /dev/zero` had SQLite write its migration into the device (exit 74,
    /// "disk I/O error"): now nothing is opened or written, exit 66.
    func testARecordsDatabaseThatIsADeviceOrAFIFOIsRefusedUntouched() throws {
        let directory = try temporaryDirectory()
        let fifo = directory.appendingPathComponent("records.sqlite").path
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        for database in ["/dev/zero", fifo] {
            let run = try CLITests.smpctl(["run", "Examples/hairline.json", "--sim", "--yes", "--json", "--db", database])
            XCTAssertEqual(run.status, 66, "\(database): \(run.stderr)")
            XCTAssertTrue(run.stderr.contains("not a database file; nothing was opened or written"), run.stderr)
            let sessions = try CLITests.smpctl(["sessions", "--db", database])
            XCTAssertEqual(sessions.status, 66, "\(database): \(sessions.stderr)")
        }
    }
}
