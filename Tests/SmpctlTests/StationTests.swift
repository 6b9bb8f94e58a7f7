import Foundation
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// The technician station (`smpctl run --station`): its refusals, and one whole simulated
/// session driven through the page in headless Chromium (scripts/station-browser-test.py).
final class StationTests: XCTestCase {
    /// Another address than loopback without a token: refused as a usage error, nothing opened.
    func testAnotherAddressWithoutATokenIsRefusedWith64() throws {
        let result = try CLITests.smpctl(["run", "Examples/hairline.json", "--sim", "--yes", "--station",
                                          "--station-address", "0.0.0.0"])
        XCTAssertEqual(result.status, 64, result.stderr)
        XCTAssertTrue(result.stderr.contains("--station-token"), result.stderr)
        XCTAssertFalse(result.stdout.contains("armed"), result.stdout)
    }

    func testAShortTokenAndStationOptionsWithoutStationAreRefused() throws {
        let short = try CLITests.smpctl(["run", "Examples/hairline.json", "--sim", "--yes", "--station",
                                         "--station-address", "0.0.0.0", "--station-token", "short"])
        XCTAssertEqual(short.status, 64, short.stderr)
        XCTAssertTrue(short.stderr.contains("16 characters"), short.stderr)
        let alone = try CLITests.smpctl(["run", "Examples/hairline.json", "--sim", "--yes", "--station-port", "9000"])
        XCTAssertEqual(alone.status, 64, alone.stderr)
        XCTAssertTrue(alone.stderr.contains("apply with --station"), alone.stderr)
    }

    /// A port in use: a clear error, exit 69, and the session never started (no simulator record,
    /// no preflight, nothing armed).
    func testAPortInUseEndsTheRunWith69BeforeAnythingIsSent() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { generic -> Bool in
                bind(fd, generic, length) == 0 && listen(fd, 1) == 0 && getsockname(fd, generic, &length) == 0
            }
        }
        XCTAssertTrue(bound)
        let port = Int(UInt16(bigEndian: address.sin_port))
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("smpctl-station-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let record = directory.appendingPathComponent("truth.ndjson").path
        let result = try CLITests.smpctl(["run", "Examples/hairline.json", "--sim", "--yes", "--json", "--station",
                                          "--station-port", "\(port)", "--record", record])
        XCTAssertEqual(result.status, 69, result.stderr)
        XCTAssertTrue(result.stderr.contains("cannot listen on 127.0.0.1:\(port)"), result.stderr)
        XCTAssertTrue(result.stderr.contains("nothing was sent"), result.stderr)
        XCTAssertFalse(result.stdout.contains("\"preflight\""), result.stdout)
        let injected = (try? String(contentsOfFile: record, encoding: .utf8)) ?? ""
        XCTAssertFalse(injected.contains("\"dot\""), injected)
    }

    /// Start, arm from the page, dots filling in, Hold (the applicator's own STATUS says held),
    /// Resume confirmed, the end summary and the report, Ctrl-C: in headless Chromium, with a
    /// screenshot checked at each step. Skipped without Chromium unless SMP_REQUIRE_CHROMIUM=1.
    func testAWholeSimulatedSessionThroughTheStationInChromium() throws {
        let script = CLITests.repositoryRoot.appendingPathComponent("scripts/station-browser-test.py")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script.path, "--smpctl", CLITests.binary.path]
        process.environment = CLITests.environment
        process.currentDirectoryURL = CLITests.repositoryRoot
        let err = Pipe()
        process.standardError = err
        process.standardOutput = FileHandle.standardError
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let output = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        if process.terminationStatus == 77 {
            let message = "no chromium on PATH"
            if ProcessInfo.processInfo.environment["SMP_REQUIRE_CHROMIUM"] == "1" {
                XCTFail("SMP_REQUIRE_CHROMIUM=1 but " + message)
                return
            }
            throw XCTSkip(message + "; set SMP_REQUIRE_CHROMIUM=1 to make this a failure")
        }
        XCTAssertEqual(process.terminationStatus, 0, output)
        XCTAssertTrue(output.contains("station-browser-test: passed"), output)
    }
}
