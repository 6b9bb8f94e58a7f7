import Foundation
import XCTest

/// Issue 19, item 5: a technician rehearses every interlock hold and resume on the simulator,
/// from a second terminal (`smpctl sim-lines`), while the session runs at its own terminal.
final class SimulatedLinesTests: XCTestCase {
    typealias TerminalRun = TerminalSessionTests.TerminalRun

    func temporaryDirectory() throws -> URL {
        // Short: a Unix socket's path must fit in 108 bytes.
        let url = URL(fileURLWithPath: "/tmp/smpctl-lines-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    func lines(_ socket: String, _ words: String, file: StaticString = #filePath, line: UInt = #line) throws -> CLITests.Result {
        try CLITests.smpctl(["sim-lines", "--socket", socket] + words.split(separator: " ").map(String.init))
    }

    /// The text printed since `mark` (an earlier `run.text.count`).
    func since(_ run: TerminalRun, _ mark: Int) -> String { String(run.text.dropFirst(mark)) }

    func waitFor(_ run: TerminalRun, _ expected: String, after mark: Int, file: StaticString = #filePath, line: UInt = #line) {
        var deadline = Date().addingTimeInterval(60)
        var exited = false
        while !since(run, mark).contains(expected) && Date() < deadline {
            // The process may end before the terminal's last bytes are read: 2 s more for those.
            if !exited && !run.process.isRunning {
                exited = true
                deadline = min(deadline, Date().addingTimeInterval(2))
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        XCTAssertTrue(since(run, mark).contains(expected), "the terminal never showed “\(expected)”:\n\(run.text)",
                      file: file, line: line)
    }

    /// Pedal lifted: held, resume refused until it is pressed again; contact lost: the same;
    /// then the e-stop: the session stops, needle power off, resumable. The progress line stays
    /// on the screen, frozen, while held.
    func testPedalContactAndEstopFromTheControlSocket() throws {
        let directory = try temporaryDirectory()
        let socket = directory.appendingPathComponent("lines.sock").path
        let record = directory.appendingPathComponent("record.ndjson").path
        let run = try TerminalRun([
            "run", "Examples/hairline.json", "--sim", "--time-scale", "1", "--yes", "--record", record,
            "--db", directory.appendingPathComponent("records.sqlite").path, "--interlock-socket", socket,
        ])
        run.waitFor("control socket \(socket)")
        run.waitFor("Dots [")

        let status = try lines(socket, "status")
        XCTAssertEqual(status.status, 0, status.stderr)
        XCTAssertEqual(status.stdout, "estop released, pedal pressed, contact touching\n")

        // The pedal: a hold; Enter refused while it is up; pressed again, Enter resumes.
        var mark = run.text.count
        XCTAssertEqual(try lines(socket, "pedal release").stdout, "foot pedal released\n")
        waitFor(run, "Held. Press Enter to resume", after: mark)
        let held = since(run, mark)
        let question = try XCTUnwrap(held.range(of: "Held. Press Enter to resume"))
        let frozen = try XCTUnwrap(held[..<question.lowerBound].range(of: "Dots [", options: .backwards),
                                   "no progress line above the question:\n\(held)")
        XCTAssertFalse(held[frozen.lowerBound..<question.lowerBound].contains(TerminalSessionTests.consoleKitErase),
                       "the progress line was erased while held:\n\(held)")
        mark = run.text.count
        run.type("\n")
        waitFor(run, "Cannot resume yet: foot pedal \"pedal\" released", after: mark)
        XCTAssertEqual(try lines(socket, "pedal press").stdout, "foot pedal pressed\n")
        mark = run.text.count
        run.type("\n")
        waitFor(run, "Resumed.", after: mark)

        // Skin contact: the same hold and resume.
        mark = run.text.count
        XCTAssertEqual(try lines(socket, "contact lose").stdout, "skin contact lost\n")
        waitFor(run, "Held. Press Enter to resume", after: mark)
        mark = run.text.count
        run.type("\n")
        waitFor(run, "Cannot resume yet: skin contact \"contact\" no contact", after: mark)
        XCTAssertEqual(try lines(socket, "contact restore").stdout, "skin contact made\n")
        mark = run.text.count
        run.type("\n")
        waitFor(run, "Resumed.", after: mark)

        // The e-stop: a stop, not a hold; the session ends resumable (75).
        mark = run.text.count
        XCTAssertEqual(try lines(socket, "estop press").stdout, "e-stop pressed\n")
        waitFor(run, "E-STOP: needle power off", after: mark)
        let exit = run.exitStatus()
        XCTAssertEqual(exit, 75, run.text)
        XCTAssertTrue(run.text.contains("Session STOPPED."), run.text)
        XCTAssertFalse(FileManager.default.fileExists(atPath: socket), "the control socket was left behind")

        let unknown = try lines(socket, "pedal stomp")
        XCTAssertEqual(unknown.status, 69, "the session is gone: nothing to reach")
    }

    /// The commands' answers without a session around them: unknown words name the known ones.
    func testUnknownCommandIsRefusedWithTheList() throws {
        let directory = try temporaryDirectory()
        let socket = directory.appendingPathComponent("lines.sock").path
        let run = try TerminalRun([
            "run", "Examples/hairline.json", "--sim", "--time-scale", "1", "--db",
            directory.appendingPathComponent("records.sqlite").path, "--interlock-socket", socket,
        ])
        run.waitFor("Arm the applicator and start 191 dots?")
        let unknown = try lines(socket, "pedal stomp")
        XCTAssertEqual(unknown.status, 64, unknown.stderr)
        XCTAssertTrue(unknown.stderr.contains("unknown command \"pedal stomp\""), unknown.stderr)
        XCTAssertTrue(unknown.stderr.contains("pedal release"), unknown.stderr)
        run.type("n\n")
        XCTAssertEqual(run.exitStatus(), 75, run.text)
    }
}
