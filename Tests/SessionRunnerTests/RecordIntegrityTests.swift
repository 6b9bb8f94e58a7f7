import DeviceSim
import FirmwareProtocol
import Foundation
import Logging
import NeedleDriver
import XCTest

@testable import SessionRunner
@testable import SMPPlan
@testable import SMPPlanReader
@testable import SMPInterlocks
@testable import SMPRecords
@testable import SMPMachine
@testable import SMPRender

/// Issue 21: the records' promises against other processes and the file system — one live owner
/// per session, the file at the path is the file written, a newer schema is refused, no status
/// is guessed, and a records error is said once.
final class RecordIntegrityTests: XCTestCase {
    var logger: Logger { Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }) }

    func temporaryPath() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("smpctl-integrity-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir.appendingPathComponent("records.sqlite").path
    }

    func dots(_ count: Int) -> [PlanDot] {
        (0..<count).map { PlanDot(id: UInt32($0 + 1), xMicrometres: Int32($0 % 100) * 1000, yMicrometres: Int32($0 / 100) * 1000,
                                  depthMicrometres: 800, dwellMicroseconds: 50_000, region: nil, index: $0) }
    }

    func info() -> SessionInfo {
        SessionInfo(planID: "p", planPath: "/tmp/p.json", planSHA256: "abc", operatorName: "tester", machineID: "m",
                    firmwareID: "smp-sim 1.0", bootID: 7, devicePath: "/dev/null")
    }

    func hello(boot: UInt32) -> HelloReply {
        HelloReply(capabilities: [.deduplication, .epochFence, .lease], bootID: boot, firmwareID: "smp-sim 1.0",
                   queueCapacity: 32, leaseMilliseconds: 100, limits: .simulatorDefault, hostNonce: 1,
                   doneCount: 0, lastDoneDotID: 0)
    }

    /// Thread-safe box for what a session's event handler saw.
    final class Box<Value>: @unchecked Sendable {
        private let lock = NSLock()
        private var value: Value
        init(_ value: Value) { self.value = value }
        func update<R>(_ body: (inout Value) -> R) -> R { lock.withLock { body(&value) } }
        var current: Value { lock.withLock { value } }
    }

    /// Runs a recorded session of `count` dots on the in-process simulator; `atDone` runs once,
    /// on the session's queue (so the session cannot move on meanwhile), when `when` dots are done.
    func recordedSession(path: String, count: Int = 300, when: Int = 20,
                         atDone: @escaping @Sendable (_ sessionID: Int64) -> Void) throws -> SessionAccount {
        var options = SimulatorOptions()
        options.timeScale = 0
        let simulator = try SimulatedApplicator.start(options, logger: logger)
        defer { simulator.stop() }
        let store = try RecordStore(path: path)
        var sessionOptions = SessionOptions()
        sessionOptions.recording = RecordingOptions(store: store, planPath: "/tmp/p.json", planSHA256: "h",
                                                    operatorName: "tester", machineID: "m")
        let session = Session(plan: Plan(planID: "integrity", dots: dots(count), sha256: "h"), options: sessionOptions,
                              logger: logger)
        let id = Box<Int64?>(nil)
        let fired = Box(false)
        return try session.run(devicePath: simulator.devicePath, confirm: { _ in true }, onEvent: { event in
            switch event {
            case .preflight(let preflight): id.update { $0 = preflight.sessionID }
            case .progress(let progress) where progress.done >= when:
                guard fired.update({ was in defer { was = true }; return !was }), let session = id.current else { return }
                atDone(session)
            default: break
            }
        })
    }

    // MARK: 1. One live owner per session

    /// A resume (here: a second store on the same file, as another process would open it) must
    /// not settle, and nothing may write, the dots of a session another owner is running.
    func testASecondStoreCannotSettleOrWriteASessionThatIsRunning() throws {
        let path = try temporaryPath()
        let attempts = Box<[String]>([])
        let hello = hello(boot: 99)
        let account = try recordedSession(path: path) { id in
            do {
                let other = try RecordStore(path: path)
                do {
                    let resolution = try ResumeResolution.resolve(store: other, sessionID: id, hello: hello, status: nil,
                                                                  decision: .skip)
                    attempts.update { $0.append("resolve settled \(resolution.statusChanges.count) change(s)") }
                } catch {
                    attempts.update { $0.append("resolve refused: \(error)") }
                }
                do {
                    var batch = RecordBatch()
                    batch.statusChanges = [(.skipped, [250, 251])]
                    try other.apply(batch, session: id)
                    attempts.update { $0.append("apply wrote") }
                } catch {
                    attempts.update { $0.append("apply refused: \(error)") }
                }
            } catch {
                attempts.update { $0.append("open failed: \(error)") }
            }
        }
        XCTAssertEqual(account.outcome, .completed, account.reason ?? "")
        let id = try XCTUnwrap(account.sessionID)
        let expected = "session \(id) is running in process \(getpid())"
        XCTAssertEqual(attempts.current.count, 2, "\(attempts.current)")
        for attempt in attempts.current {
            XCTAssertTrue(attempt.contains("refused") && attempt.contains(expected), "\(attempt)")
        }
        let records = try RecordStore(path: path).dots(session: id)
        XCTAssertEqual(records.filter { $0.status != .done }.map(\.dotID), [], "the running session's record was changed")
    }

    /// Once the owner has finished (its account final), another store may take the session.
    func testAFinishedSessionCanBeTakenByAnotherStore() throws {
        let path = try temporaryPath()
        let account = try recordedSession(path: path, count: 50, when: 1000) { _ in }
        let id = try XCTUnwrap(account.sessionID)
        let other = try RecordStore(path: path)
        XCTAssertNoThrow(try ResumeResolution.resolve(store: other, sessionID: id, hello: hello(boot: 7), status: nil, decision: nil))
    }

    /// Every spelling of the database's path finds the same owner, a symbolic link included.
    func testTheOwnerIsFoundThroughASymbolicLinkToTheDatabase() throws {
        let path = try temporaryPath()
        let owner = try RecordStore(path: path)
        let id = try owner.createSession(info(), dots: dots(3))
        let link = (path as NSString).deletingLastPathComponent + "/link.sqlite"
        XCTAssertEqual(symlink(path, link), 0)
        let other = try RecordStore(path: link)
        XCTAssertThrowsError(try other.takeOwnership(of: id)) { error in
            XCTAssertTrue("\(error)".contains("session \(id) is running in process \(getpid())"), "\(error)")
        }
        owner.releaseOwnership(of: id)
        XCTAssertNoThrow(try other.takeOwnership(of: id))
        XCTAssertNoThrow(try other.apply({ var batch = RecordBatch(); batch.claims = [1]; return batch }(), session: id))
    }

    // MARK: 2. The file at the path is the file written

    static let databaseMoved = "the database file was deleted, renamed or replaced while in use"

    func assertHeldForRecords(_ account: SessionAccount, path: String, saying expected: String = databaseMoved,
                              file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(account.outcome, .held, account.reason ?? "", file: file, line: line)
        XCTAssertTrue(account.recordsFailed, account.reason ?? "", file: file, line: line)
        XCTAssertTrue(account.recordsFailed, file: file, line: line)
        let reason = account.reason ?? ""
        XCTAssertTrue(reason.contains(expected), reason, file: file, line: line)
        XCTAssertEqual(reason.components(separatedBy: "treatment records at \(path)").count - 1, 1,
                       "the records error is said more than once: \(reason)", file: file, line: line)
        XCTAssertLessThan(account.done.count, 300, file: file, line: line)
    }

    func testDeletingTheDatabaseDuringASessionHoldsItWithRecordsFailed() throws {
        let path = try temporaryPath()
        let account = try recordedSession(path: path) { _ in
            for suffix in ["", "-wal", "-shm"] { unlink(path + suffix) }
        }
        assertHeldForRecords(account, path: path)
    }

    func testRenamingTheDatabaseDuringASessionHoldsIt() throws {
        let path = try temporaryPath()
        let account = try recordedSession(path: path) { _ in
            rename(path, path + ".moved")
        }
        assertHeldForRecords(account, path: path)
    }

    func testReplacingTheDatabaseDuringASessionHoldsIt() throws {
        let path = try temporaryPath()
        let account = try recordedSession(path: path) { _ in
            let replacement = path + ".other"
            _ = FileManager.default.createFile(atPath: replacement, contents: Data())
            rename(replacement, path)
        }
        assertHeldForRecords(account, path: path)
    }

    /// The committed pages live in the -wal until a checkpoint: losing it loses them.
    func testDeletingTheWriteAheadLogDuringASessionHoldsIt() throws {
        let path = try temporaryPath()
        let account = try recordedSession(path: path) { _ in unlink(path + "-wal") }
        assertHeldForRecords(account, path: path, saying: "its write-ahead log \(path)-wal was deleted or replaced while in use")
    }

    // MARK: 3. A newer schema is refused; no status is guessed

    func testADatabaseWrittenByANewerSmpctlIsRefusedNamingThePathAndBothSchemaVersions() throws {
        let path = try temporaryPath()
        let store = try RecordStore(path: path)
        _ = try store.createSession(info(), dots: dots(3))
        try store.executeRaw("""
            INSERT INTO grdb_migrations (identifier) VALUES ('v2');
            ALTER TABLE session ADD COLUMN future TEXT;
            """)
        XCTAssertThrowsError(try RecordStore(path: path)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("treatment records at \(path)"), text)
            XCTAssertTrue(text.contains("schema v2"), text)
            XCTAssertTrue(text.contains("schema v1"), text)
            XCTAssertTrue(text.contains("upgrade smpctl"), text)
        }
    }

    func testAnUnknownDotStatusIsAnErrorNamingTheSessionTheDotAndTheValue() throws {
        let path = try temporaryPath()
        let store = try RecordStore(path: path)
        let id = try store.createSession(info(), dots: dots(3))
        try store.executeRaw("""
            PRAGMA ignore_check_constraints = ON;
            UPDATE dot SET status = 'frozen' WHERE dot_id = 2;
            PRAGMA ignore_check_constraints = OFF;
            """)
        XCTAssertThrowsError(try store.dots(session: id)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("session \(id)"), text)
            XCTAssertTrue(text.contains("dot 2"), text)
            XCTAssertTrue(text.contains("'frozen'"), text)
        }
    }

    // MARK: 4. One clear message

    func testAnErrorFromInsideARecordsWriteIsReportedOnce() throws {
        let path = try temporaryPath()
        let store = try RecordStore(path: path)
        let id = try store.createSession(info(), dots: dots(3))
        var claim = RecordBatch()
        claim.claims = [1]
        try store.apply(claim, session: id)
        var done = RecordBatch()
        done.done = [RecordBatch.Done(dotID: 1, deviceDoneCount: 1)]
        try store.apply(done, session: id)
        XCTAssertThrowsError(try store.apply(done, session: id)) { error in
            XCTAssertEqual("\(error)", "treatment records at \(path): dot 1 reported done but was not in flight")
        }
    }
}
