import Foundation
import SMPSystem
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// The rule for files a person names (docs/reliability.md, "File inputs"): links followed, the
/// target a regular file on a disk file system; anything else refused before it is opened.
final class RegularFileTests: XCTestCase {
    func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "smpctl-regular-file-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    /// Opening a device node acts (a tty raises DTR and resets many boards, a watchdog node arms
    /// the watchdog): one named as a plan is refused without an open(2). Before the fix the reader
    /// opened it and refused it only after fstat.
    func testADeviceNodeIsRefusedWithoutBeingOpened() throws {
        let ends = try Sys.pipe().get()
        defer { _ = Sys.close(ends.readEnd); _ = Sys.close(ends.writeEnd) }
        let mock = SyscallMock()
        mock.adopt(ends.readEnd, path: "/dev/null")
        let result = mock.withInstalled { RegularFile.read(path: "/dev/null", maximumBytes: 1024) }
        XCTAssertEqual(result, .failure(.notRegularFile(kind: "a character device", resolved: nil)))
        XCTAssertEqual(mock.count(.open, on: ends.readEnd), 0, "the device node was opened")
        XCTAssertEqual("\(try XCTUnwrap(result.failure))",
                       "it is a character device, not a regular file; it was not opened")
    }

    /// A link is followed: to a regular file it reads; to a device or a FIFO the refusal names
    /// where it led, so a person sees that `plan.json` was not the file they thought.
    func testASymbolicLinkIsFollowedAndTheRefusalNamesItsTarget() throws {
        let directory = try temporaryDirectory()
        let plan = directory + "/real.json"
        try "{}".write(toFile: plan, atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: directory + "/plan.json", withDestinationPath: plan)
        XCTAssertEqual(RegularFile.read(path: directory + "/plan.json", maximumBytes: 1024), .success(Array("{}".utf8)))

        try FileManager.default.createSymbolicLink(atPath: directory + "/zero.json", withDestinationPath: "/dev/zero")
        let zero = RegularFile.read(path: directory + "/zero.json", maximumBytes: 1024)
        XCTAssertEqual(zero, .failure(.notRegularFile(kind: "a character device", resolved: "/dev/zero")))
        XCTAssertTrue("\(try XCTUnwrap(zero.failure))".hasPrefix("it is a symbolic link to /dev/zero; that is a character device"))

        let fifo = directory + "/fifo"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        try FileManager.default.createSymbolicLink(atPath: directory + "/fifo.json", withDestinationPath: "fifo")
        let resolvedFIFO = try Sys.resolvedPath(fifo).get()
        XCTAssertEqual(RegularFile.read(path: directory + "/fifo.json", maximumBytes: 1024),
                       .failure(.notRegularFile(kind: "a FIFO (named pipe)", resolved: resolvedFIFO)))
        XCTAssertEqual(RegularFile.read(path: fifo, maximumBytes: 1024),
                       .failure(.notRegularFile(kind: "a FIFO (named pipe)", resolved: nil)))
    }

    /// /proc and /sys hold regular files that are kernel interfaces (reading some blocks, reading
    /// others changes something): not a plan, whatever their name. Before the fix they were read.
    func testAFileOfTheKernelIsRefused() throws {
        XCTAssertEqual(RegularFile.read(path: "/proc/self/status", maximumBytes: 1 << 20), .failure(.kernelFile(resolved: nil)))
        let directory = try temporaryDirectory()
        try FileManager.default.createSymbolicLink(atPath: directory + "/plan.json", withDestinationPath: "/proc/version")
        XCTAssertEqual(RegularFile.read(path: directory + "/plan.json", maximumBytes: 1 << 20),
                       .failure(.kernelFile(resolved: "/proc/version")))
        if FileManager.default.fileExists(atPath: "/sys/kernel/mm/transparent_hugepage/enabled") {
            XCTAssertEqual(RegularFile.read(path: "/sys/kernel/mm/transparent_hugepage/enabled", maximumBytes: 1 << 20),
                           .failure(.kernelFile(resolved: nil)))
        }
    }

    /// A sparse 10 GB file is refused from its size alone (nothing read); a directory named as
    /// a file says so.
    func testATenGigabyteFileAndADirectoryAreRefusedAtOnce() throws {
        let directory = try temporaryDirectory()
        let huge = directory + "/huge.json"
        XCTAssertTrue(FileManager.default.createFile(atPath: huge, contents: nil))
        XCTAssertEqual(truncate(huge, 10 * 1024 * 1024 * 1024), 0)
        XCTAssertEqual(RegularFile.read(path: huge, maximumBytes: 1 << 20),
                       .failure(.tooLarge(bytes: 10 * 1024 * 1024 * 1024, maximumBytes: 1 << 20)))
        XCTAssertEqual(RegularFile.read(path: directory, maximumBytes: 1 << 20), .failure(.directory(resolved: nil)))
    }
}

extension Result {
    fileprivate var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
