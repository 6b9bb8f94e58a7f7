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

final class RecordStoreTests: XCTestCase {
    func temporaryPath(_ name: String = "records.sqlite") throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("smpctl-records-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir.appendingPathComponent(name).path
    }

    func dots(_ count: Int) -> [PlanDot] {
        (0..<count).map { PlanDot(id: UInt32($0 + 1), xMicrometres: Int32($0 % 100) * 1000, yMicrometres: Int32($0 / 100) * 1000,
                                  depthMicrometres: 800, dwellMicroseconds: 50_000, region: nil, index: $0) }
    }

    func info() -> SessionInfo {
        SessionInfo(planID: "p", planPath: "/tmp/p.json", planSHA256: "abc", operatorName: "tester", machineID: "m",
                    firmwareID: "smp-sim 1.0", bootID: 7, devicePath: "/dev/null")
    }

    func testDatabaseIsCreatedPrivate() throws {
        let path = try temporaryPath()
        _ = try RecordStore(path: path)
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        XCTAssertEqual((attributes[.posixPermissions] as? NSNumber)?.intValue, 0o600)
    }

    /// The folder is created 0700 and every file SQLite makes beside the database (-wal, -shm)
    /// 0600, whatever the umask lets through (022 here, the usual one).
    func testTheFolderAndEveryFileBesideTheDatabaseArePrivate() throws {
        let parent = try temporaryPath("unused")
        let path = (parent as NSString).deletingLastPathComponent + "/new/smpctl/records.sqlite"
        let previous = umask(0o022)
        defer { umask(previous) }
        let store = try RecordStore(path: path)
        _ = try store.createSession(info(), dots: dots(3))
        func mode(_ path: String) throws -> Int {
            try XCTUnwrap((FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? NSNumber)?.intValue)
        }
        XCTAssertEqual(try mode((path as NSString).deletingLastPathComponent), 0o700)
        for file in [path, path + "-wal", path + "-shm"] {
            XCTAssertEqual(try mode(file), 0o600, file)
        }
        XCTAssertEqual(try mode(path + ".owners"), 0o700)
    }

    /// SQLite handed a device writes a database header into it (before the fix, `--db /dev/zero`
    /// ran its migration's COMMIT on the device), and a FIFO can block it: anything but a regular
    /// file is refused before it is opened, links followed.
    func testADeviceAFIFOOrADirectoryIsRefusedAsTheDatabase() throws {
        let path = try temporaryPath()
        let directory = (path as NSString).deletingLastPathComponent
        XCTAssertEqual(mkfifo(path, 0o600), 0)
        try FileManager.default.createSymbolicLink(atPath: directory + "/link.sqlite", withDestinationPath: "/dev/null")
        for (database, what) in [(path, "a FIFO"), ("/dev/null", "a character device"),
                                 (directory + "/link.sqlite", "a character device"), (directory, "a directory")] {
            XCTAssertThrowsError(try RecordStore(path: database), database) { error in
                let error = error as? RecordStoreError
                XCTAssertEqual(error?.kind, .notADatabaseFile, database)
                XCTAssertTrue(error?.message.hasPrefix("it is \(what)") ?? false, "\(String(describing: error))")
            }
        }
    }

    /// The records' timestamps, written by hand, are the ones Foundation's ISO 8601 style wrote
    /// (every record before issue 15's change has them): UTC, milliseconds truncated.
    func testTimestampsAreFoundationsISO8601ToTheMillisecond() {
        let style = Date.ISO8601FormatStyle().year().month().day().timeZone(separator: .omitted)
            .time(includingFractionalSeconds: true).timeSeparator(.colon).dateTimeSeparator(.standard)
        var generator = SystemRandomNumberGenerator()
        var instants: [(seconds: Int, milliseconds: Int)] = [(0, 0), (951_782_400, 999), (1_796_601_599, 1), (4_102_444_799, 500)]
        for _ in 0..<2_000 {
            instants.append((Int.random(in: 0...4_102_444_799, using: &generator), Int.random(in: 0...999, using: &generator)))
        }
        for (seconds, milliseconds) in instants {
            // Half a millisecond in: truncation and rounding give the same digits.
            let date = Date(timeIntervalSince1970: Double(seconds) + (Double(milliseconds) + 0.5) / 1000)
            XCTAssertEqual(RecordStore.timestamp(epochSeconds: seconds, milliseconds: milliseconds),
                           date.formatted(style), "\(seconds).\(milliseconds)")
        }
        XCTAssertEqual(RecordStore.timestamp().count, 24)
    }

    func testEveryCommitIsSynchronousFull() throws {
        let store = try RecordStore(path: try temporaryPath())
        XCTAssertEqual(try store.synchronousMode(), 2, "PRAGMA synchronous must be FULL (2)")
    }

    func testAuditTrailCannotBeAlteredBySQL() throws {
        let store = try RecordStore(path: try temporaryPath())
        let id = try store.createSession(info(), dots: dots(3))
        var batch = RecordBatch()
        batch.events.append(RecordBatch.Event(kind: "override", detail: ["reason": "test"]))
        try store.apply(batch, session: id)
        let before = try store.events(session: id)
        XCTAssertEqual(before.count, 2)
        XCTAssertThrowsError(try store.executeRaw("UPDATE audit SET detail = '{}'")) { error in
            XCTAssertTrue("\(error)".contains("append-only"), "\(error)")
        }
        XCTAssertThrowsError(try store.executeRaw("DELETE FROM audit"))
        XCTAssertThrowsError(try store.executeRaw("DELETE FROM session"))
        XCTAssertThrowsError(try store.executeRaw("DELETE FROM dot"))
        XCTAssertEqual(try store.events(session: id), before)
    }

    func testClaimDoneAndStatusTransitions() throws {
        let store = try RecordStore(path: try temporaryPath())
        let id = try store.createSession(info(), dots: dots(4))
        var claim = RecordBatch()
        claim.claims = [1, 2, 3]
        try store.apply(claim, session: id)
        var done = RecordBatch()
        done.done = [RecordBatch.Done(dotID: 1, deviceDoneCount: 11), RecordBatch.Done(dotID: 2, deviceDoneCount: 12)]
        try store.apply(done, session: id)
        let records = try store.dots(session: id)
        XCTAssertEqual(records.map(\.status), [.done, .done, .sent, .planned])
        XCTAssertEqual(records.map(\.sendOrder), [1, 2, 3, nil])
        XCTAssertEqual(try store.lastDeviceDoneCount(session: id), 12)
        // A dot cannot be done twice, nor claimed when not planned.
        XCTAssertThrowsError(try store.apply(done, session: id))
        XCTAssertThrowsError(try store.apply(claim, session: id))
        XCTAssertEqual(try store.session(id: id)?.done, 2)
    }

    func hello(boot: UInt32, doneCount: UInt32, lastDone: UInt32) -> HelloReply {
        HelloReply(capabilities: [.deduplication, .epochFence, .lease], bootID: boot, firmwareID: "smp-sim 1.0",
                   queueCapacity: 32, leaseMilliseconds: 100, limits: .simulatorDefault, hostNonce: 1,
                   doneCount: doneCount, lastDoneDotID: lastDone)
    }

    /// The device's STATUS after its lease expired: held, nothing cut short.
    func held(currentDot: UInt32 = 0, state: DeviceState = .held, fault: FaultCode = .leaseExpired) -> Status {
        Status(state: state, fault: fault, queueDepth: 0, freeSlots: 32, epoch: 1, ackSeq: 6, lastDoneSeq: 4,
               lastDoneDotID: 4, doneCount: 14, currentDotID: currentDot, needleRetracted: true)
    }

    /// A latch cut dot 3 short after the host died: the device names it; it is never planned.
    func testResumeRecordsTheDotTheDeviceNamesAsCutShortInterrupted() throws {
        let (store, id) = try crashedSession()
        let latched = held(currentDot: 3, state: .estop, fault: .estopButton)
        let refused = try ResumeResolution.resolve(store: store, sessionID: id, hello: hello(boot: 7, doneCount: 12, lastDone: 2),
                                                   status: latched, decision: nil)
        XCTAssertNotNil(refused.refusal, "a cut-short dot needs the operator's decision")
        XCTAssertTrue(refused.statusChanges.contains { $0.0 == .interrupted && $0.1 == [3] })
        XCTAssertTrue(refused.statusChanges.contains { $0.0 == .planned && $0.1 == [4, 5, 6] })
        let skipped = try ResumeResolution.resolve(store: store, sessionID: id, hello: hello(boot: 7, doneCount: 12, lastDone: 2),
                                                   status: latched, decision: .skip)
        XCTAssertEqual(skipped.remaining, [4, 5, 6, 7, 8])
        XCTAssertEqual(skipped.skippedCount, 1)
    }

    /// A redo on the boot that cut the dot would be refused by the device's spacing ring (§6.11)
    /// and latch it: resume says to power-cycle first, and arms nothing.
    func testRedoOnTheSameBootOfASpacingDeviceAsksForAPowerCycleFirst() throws {
        let (store, id) = try crashedSession()
        var spacing = hello(boot: 7, doneCount: 12, lastDone: 2)
        spacing.capabilities.insert(.spacing)
        let latched = held(currentDot: 3, state: .estop, fault: .estopButton)
        let refused = try ResumeResolution.resolve(store: store, sessionID: id, hello: spacing, status: latched, decision: .redo)
        XCTAssertTrue(refused.refusal?.contains("Power-cycle the applicator") ?? false, refused.refusal ?? "")
        var rebooted = hello(boot: 8, doneCount: 0, lastDone: 0)
        rebooted.capabilities.insert(.spacing)
        let redo = try ResumeResolution.resolve(store: store, sessionID: id, hello: rebooted, status: nil, decision: .redo)
        XCTAssertNil(redo.refusal)
    }

    /// A device that can no longer say (cleared, or no STATUS): the next sent dot may have been in
    /// the skin, so it is in doubt — never planned from done_count alone.
    func testResumeNeverPlansTheNextSentDotWithoutTheDevicesProof() throws {
        for status in [held(state: .disarmed, fault: .none), held(currentDot: 9, state: .ready, fault: .none), nil] {
            let (store, id) = try crashedSession()
            let refused = try ResumeResolution.resolve(store: store, sessionID: id, hello: hello(boot: 7, doneCount: 12, lastDone: 2),
                                                       status: status, decision: nil)
            XCTAssertTrue(refused.refusal?.contains("3") ?? false, "\(String(describing: status))")
            XCTAssertTrue(refused.statusChanges.contains { $0.0 == .ambiguous && $0.1 == [3] })
            XCTAssertFalse(refused.statusChanges.contains { $0.0 == .planned && $0.1.contains(3) })
        }
    }

    /// Session with dots 1–2 done (device done_count 12), dots 3–6 sent when the host died.
    func crashedSession() throws -> (RecordStore, Int64) {
        let store = try RecordStore(path: try temporaryPath())
        let id = try store.createSession(info(), dots: dots(8))
        var batch = RecordBatch()
        batch.device = RecordBatch.Device(firmwareID: "smp-sim 1.0", bootID: 7, devicePath: "/dev/null", doneCount: 10)
        batch.claims = [1, 2, 3, 4, 5, 6]
        try store.apply(batch, session: id)
        var done = RecordBatch()
        done.done = [RecordBatch.Done(dotID: 1, deviceDoneCount: 11), RecordBatch.Done(dotID: 2, deviceDoneCount: 12)]
        try store.apply(done, session: id)
        return (store, id)
    }

    func testResumeOnTheSameBootSettlesInFlightDotsExactly() throws {
        let (store, id) = try crashedSession()
        // The device completed 3 and 4 after the host died (done_count 14, last dot 4).
        let resolution = try ResumeResolution.resolve(store: store, sessionID: id,
                                                      hello: hello(boot: 7, doneCount: 14, lastDone: 4), status: held(), decision: nil)
        XCTAssertNil(resolution.refusal)
        XCTAssertEqual(Set(resolution.doneIDs), [1, 2, 3, 4])
        XCTAssertEqual(resolution.remaining, [5, 6, 7, 8])
    }

    func testResumeWithNoFurtherCompletionsReturnsInFlightDotsToPlanned() throws {
        let (store, id) = try crashedSession()
        let resolution = try ResumeResolution.resolve(store: store, sessionID: id,
                                                      hello: hello(boot: 7, doneCount: 12, lastDone: 2), status: held(), decision: nil)
        XCTAssertEqual(resolution.remaining, [3, 4, 5, 6, 7, 8])
    }

    func testResumeAfterADeviceRebootNeedsTheOperatorsDecision() throws {
        let (store, id) = try crashedSession()
        let rebooted = hello(boot: 8, doneCount: 0, lastDone: 0)
        let refused = try ResumeResolution.resolve(store: store, sessionID: id, hello: rebooted, status: held(), decision: nil)
        XCTAssertNotNil(refused.refusal)
        XCTAssertTrue(refused.refusal!.contains("3, 4, 5, 6"), refused.refusal!)
        let skipped = try ResumeResolution.resolve(store: store, sessionID: id, hello: rebooted, status: held(), decision: .skip)
        XCTAssertNil(skipped.refusal)
        XCTAssertEqual(skipped.remaining, [7, 8])
        XCTAssertEqual(skipped.skippedCount, 4)
        XCTAssertTrue(skipped.events.contains { $0.kind == "operator-decision" && $0.detail["decision"] == "skip" })
        let redo = try ResumeResolution.resolve(store: store, sessionID: id, hello: rebooted, status: held(), decision: .redo)
        XCTAssertEqual(redo.remaining, [3, 4, 5, 6, 7, 8])
    }

    /// A lost link marks the dots in flight ambiguous; the device (same boot) still settles them.
    func testDotsInDoubtAfterALinkLossAreSettledByTheSameDevice() throws {
        let (store, id) = try crashedSession()
        var lost = RecordBatch()
        lost.statusChanges = [(.ambiguous, [3, 4, 5, 6])]
        try store.apply(lost, session: id)
        let resolution = try ResumeResolution.resolve(store: store, sessionID: id,
                                                      hello: hello(boot: 7, doneCount: 13, lastDone: 3), status: held(), decision: nil)
        XCTAssertNil(resolution.refusal)
        XCTAssertEqual(Set(resolution.doneIDs), [1, 2, 3])
        XCTAssertEqual(resolution.remaining, [4, 5, 6, 7, 8])
        let rebooted = try ResumeResolution.resolve(store: store, sessionID: id,
                                                    hello: hello(boot: 9, doneCount: 0, lastDone: 0), status: held(), decision: nil)
        XCTAssertNotNil(rebooted.refusal, "a rebooted device cannot settle them")
    }

    func testNumbersThatDoNotLineUpAreAmbiguousNotGuessed() throws {
        let (store, id) = try crashedSession()
        // Same boot, but the device's last dot is not the one the count predicts (another host?).
        let resolution = try ResumeResolution.resolve(store: store, sessionID: id,
                                                      hello: hello(boot: 7, doneCount: 14, lastDone: 99), status: held(), decision: nil)
        XCTAssertNotNil(resolution.refusal)
    }

    func testRecordedSessionOverAPseudoTerminalMatchesTheGroundTruth() throws {
        var options = SimulatorOptions()
        options.timeScale = 0
        let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        let simulator = try SimulatedApplicator.start(options, logger: logger)
        defer { simulator.stop() }
        let store = try RecordStore(path: try temporaryPath())
        let plan = Plan(planID: "recorded", dots: dots(500), sha256: "h")
        var sessionOptions = SessionOptions()
        sessionOptions.recording = RecordingOptions(store: store, planPath: "/tmp/p.json", planSHA256: "h",
                                                    operatorName: "tester", machineID: "m")
        let session = Session(plan: plan, options: sessionOptions, logger: logger)
        let account = try session.run(devicePath: simulator.devicePath, confirm: { _ in true }, onEvent: { _ in })
        XCTAssertEqual(account.outcome, .completed, account.reason ?? "")
        let id = try XCTUnwrap(account.sessionID)
        let recorded = try store.dots(session: id)
        XCTAssertTrue(recorded.allSatisfy { $0.status == .done })
        XCTAssertEqual(try store.session(id: id)?.state, "completed")
        let injected = simulator.injectedDots.filter { $0.outcome == .done }.map(\.dotID)
        XCTAssertEqual(injected.sorted(), recorded.map(\.dotID).sorted())
        XCTAssertEqual(Set(injected).count, injected.count)
        let kinds = try store.events(session: id).map(\.kind)
        XCTAssertEqual(kinds.first, "session-started")
        XCTAssertTrue(kinds.contains("link-metrics"))
        XCTAssertEqual(kinds.last, "session-ended")
        let report = try SessionReport(store: store, sessionID: id)
        XCTAssertTrue(report.html().contains("<td id=\"done\">500 of 500</td>"))
        XCTAssertEqual(report.svg().components(separatedBy: "<circle cx").count - 1, 500 + DotStatus.allCases.count)
    }

    /// Unplug mid-session (the simulator closes its pty), then resume on the replugged device:
    /// every dot exactly once, without asking the operator — the device kept its memory.
    func testLinkLostMidSessionThenResumeInjectsEveryDotExactlyOnce() throws {
        var options = SimulatorOptions()
        options.timeScale = 0.01
        options.faults = try FaultPlan(spec: "disconnect-at=60")
        let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        let simulator = try SimulatedApplicator.start(options, logger: logger)
        defer { simulator.stop() }
        let store = try RecordStore(path: try temporaryPath())
        let plan = Plan(planID: "unplug", dots: dots(150), sha256: "h")
        var sessionOptions = SessionOptions()
        sessionOptions.recording = RecordingOptions(store: store, planPath: "/tmp/p.json", planSHA256: "h",
                                                    operatorName: "tester", machineID: "m")
        let first = try Session(plan: plan, options: sessionOptions, logger: logger)
            .run(devicePath: simulator.devicePath, confirm: { _ in true }, onEvent: { _ in })
        XCTAssertEqual(first.outcome, .linkLost, first.reason ?? "")
        let id = try XCTUnwrap(first.sessionID)
        // The simulator comes back on a new pty after 0.5 s.
        let deadline = Date().addingTimeInterval(10)
        var path = simulator.devicePath
        while Date() < deadline {
            path = simulator.devicePath
            if FileManager.default.fileExists(atPath: path), (try? SerialPort.open(path: path, queue: DispatchQueue(label: "probe"))) != nil { break }
            Thread.sleep(forTimeInterval: 0.1)
        }
        Thread.sleep(forTimeInterval: 0.2)
        sessionOptions.recording?.resumeSessionID = id
        let second = try Session(plan: plan, options: sessionOptions, logger: logger)
            .run(devicePath: simulator.devicePath, confirm: { _ in true }, onEvent: { _ in })
        XCTAssertEqual(second.outcome, .completed, second.reason ?? "")
        let injected = simulator.injectedDots.filter { $0.outcome == .done }.map(\.dotID)
        XCTAssertEqual(injected.count, Set(injected).count, "a dot was injected twice")
        XCTAssertEqual(Set(injected), Set(plan.dots.map(\.id)))
        XCTAssertEqual(try store.session(id: id)?.state, "completed")
    }
}
