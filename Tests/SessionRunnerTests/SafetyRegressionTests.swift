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

/// The patient-safety defects an adversarial review found on 7644dbf (issue 12), each driven the
/// way it was found — real sessions over a pty against the simulator, whose ground truth judges.
/// Every test here failed on 7644dbf.
final class SafetyRegressionTests: XCTestCase {
    let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    func temporaryPath() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("smpctl-safety-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir.appendingPathComponent("records.sqlite").path
    }

    func plan(_ count: Int, dwell: Int32 = 60_000) -> Plan {
        Plan(planID: "safety", dots: (0..<count).map {
            PlanDot(id: UInt32($0 + 1), xMicrometres: Int32($0 % 30) * 1000, yMicrometres: Int32($0 / 30) * 1000,
                    depthMicrometres: 700, dwellMicroseconds: dwell, index: $0)
        }, sha256: "h")
    }

    func simulator(timeScale: Double, seed: UInt64 = 1) throws -> SimulatedApplicator {
        var options = SimulatorOptions()
        options.timeScale = timeScale
        options.seed = seed
        let simulator = try SimulatedApplicator.start(options, logger: logger)
        addTeardownBlock { simulator.stop() }
        return simulator
    }

    func recorded(_ store: RecordStore, resume: Int64? = nil, decision: AmbiguousDecision? = nil) -> SessionOptions {
        var options = SessionOptions()
        options.recording = RecordingOptions(store: store, planPath: "/tmp/p.json", planSHA256: "h", operatorName: "tester",
                                             machineID: "m", resumeSessionID: resume, ambiguousDecision: decision)
        return options
    }

    /// Runs on a background thread so a session that never ends fails the test instead of hanging it.
    func run(_ session: Session, on simulator: SimulatedApplicator, timeout: TimeInterval = 60,
             onEvent: @escaping @Sendable (SessionEvent) -> Void = { _ in }) throws -> SessionAccount {
        let box = AccountBox()
        let path = simulator.devicePath
        Thread.detachNewThread {
            box.set(Result { try session.run(devicePath: path, confirm: { _ in true }, onEvent: onEvent) })
        }
        guard let result = box.wait(timeout: timeout) else {
            session.requestAbort(reason: "test timeout")
            XCTFail("the session did not end within \(timeout) s")
            throw CancellationError()
        }
        return try result.get()
    }

    /// Presses the device's e-stop button the first time a dot is in the skin after `afterDone`.
    func pressEstopWhileInSkin(_ simulator: SimulatedApplicator, afterDone: Int) {
        Thread.detachNewThread {
            let deadline = Date().addingTimeInterval(30)
            while Date() < deadline {
                let status = simulator.status
                if status.doneCount >= afterDone && !status.needleRetracted {
                    simulator.pressEstopButton()
                    simulator.releaseEstopButton()
                    return
                }
                usleep(200)
            }
        }
    }

    // MARK: Item 2 — a dot cut short by a latch is never planned again

    func testDotCutShortByADeviceLatchIsRecordedInterruptedAndNeverInjectedAgain() throws {
        let store = try RecordStore(path: try temporaryPath())
        let plan = plan(40, dwell: 300_000)
        let first = try simulator(timeScale: 0.5, seed: 11)
        pressEstopWhileInSkin(first, afterDone: 3)
        let account = try run(Session(plan: plan, options: recorded(store), logger: logger), on: first)
        XCTAssertEqual(account.outcome, .stopped, account.reason ?? "")
        let cut = try XCTUnwrap(first.injectedDots.first { $0.outcome == .interrupted }?.dotID, "no dot was cut short")
        let id = try XCTUnwrap(account.sessionID)
        XCTAssertEqual(account.interrupted, [cut], "the cut-short dot must be recorded interrupted, not in doubt")
        func status(of dot: UInt32) throws -> DotStatus? { try store.dots(session: id).first { $0.dotID == dot }?.status }
        XCTAssertEqual(try status(of: cut), .interrupted)

        // Resume on the still-latched device: nothing settles the cut dot to planned.
        _ = try run(Session(plan: plan, options: recorded(store, resume: id), logger: logger), on: first)
        XCTAssertNotEqual(try status(of: cut), .planned)

        // Power cycle (a new device boot), resume without a decision: refused, the dot named.
        first.stop()
        let second = try simulator(timeScale: 0, seed: 12)
        let refused = try run(Session(plan: plan, options: recorded(store, resume: id), logger: logger), on: second)
        XCTAssertEqual(refused.outcome, .needsDecision, refused.reason ?? "")
        XCTAssertTrue(refused.reason?.contains("\(cut)") ?? false, refused.reason ?? "")
        // The true counts from the records, and the choice to make, named.
        let dotsNow = try store.dots(session: id)
        let done = dotsNow.filter { $0.status == .done }.count
        let notStarted = dotsNow.filter { $0.status == .planned }.count
        XCTAssertGreaterThan(done, 0)
        XCTAssertTrue(refused.reason?.contains(
            "The records of session \(id): \(done) done, 1 in doubt, \(notStarted) not started (of 40)") ?? false,
            refused.reason ?? "")
        XCTAssertTrue(refused.reason?.contains("smpctl resume \(id) --ambiguous skip") ?? false, refused.reason ?? "")
        XCTAssertTrue(second.injectedDots.isEmpty)
        XCTAssertNotEqual(try status(of: cut), .planned)

        // The operator's decision (skip): the rest runs, the cut dot is never injected again.
        let finished = try run(Session(plan: plan, options: recorded(store, resume: id, decision: .skip), logger: logger), on: second)
        XCTAssertEqual(finished.outcome, .completed, finished.reason ?? "")
        XCTAssertFalse(second.injectedDots.contains { $0.dotID == cut }, "the cut-short dot was injected again")
        let everything = (first.injectedDots + second.injectedDots).filter { $0.outcome == .done }.map(\.dotID)
        XCTAssertEqual(everything.count, Set(everything).count, "a dot was injected twice")
        XCTAssertTrue(try store.events(session: id).contains { $0.kind == "operator-decision" })
    }

    /// The path the review took: the latch is reported first by a REFUSED (here a dot outside the
    /// device's limits arriving while another is in the skin; the same as an e-stop that fires as
    /// a frame arrives), and the STATUS naming the cut-short dot comes after it. The session used
    /// to end on the REFUSED and record that dot in doubt; resume then planned it again.
    func testDotCutShortByALatchReportedFirstByREFUSEDIsRecordedInterruptedAndNeverInjectedAgain() throws {
        let store = try RecordStore(path: try temporaryPath())
        var dots = plan(60, dwell: 300_000).dots
        let deep = dots[44]  // sent when the window opens, while an earlier dot is in the skin
        dots[44] = PlanDot(id: deep.id, xMicrometres: deep.xMicrometres, yMicrometres: deep.yMicrometres,
                           depthMicrometres: 1400, dwellMicroseconds: deep.dwellMicroseconds, index: deep.index)
        let plan = Plan(planID: "deep", dots: dots, sha256: "h")
        var simulatorOptions = SimulatorOptions()
        simulatorOptions.timeScale = 0.5
        simulatorOptions.seed = 21
        simulatorOptions.limits.depthMaxMicrometres = 1000
        // Next to no travel: a DOT sent when a slot frees arrives while the next dot descends.
        simulatorOptions.limits.travelSpeedMicrometresPerSecond = 50_000_000
        let first = try SimulatedApplicator.start(simulatorOptions, logger: logger)
        addTeardownBlock { first.stop() }
        let session = Session(plan: plan, options: recorded(store), logger: logger)
        session.skipValidationAfterHandshake = true  // layers 1 and 2 off: the firmware refuses
        session.checkEnvelopeBeforeEncoding = false
        let account = try run(session, on: first)
        XCTAssertEqual(account.outcome, .stopped, account.reason ?? "")
        let cut = try XCTUnwrap(first.injectedDots.first { $0.outcome == .interrupted }?.dotID, "no dot was cut short")
        let id = try XCTUnwrap(account.sessionID)
        XCTAssertEqual(account.interrupted, [cut], "the cut-short dot must be recorded interrupted, not in doubt")
        func status(of dot: UInt32) throws -> DotStatus? { try store.dots(session: id).first { $0.dotID == dot }?.status }
        XCTAssertEqual(try status(of: cut), .interrupted)

        // The plan is mended (the deep dot within the device's limits), the device power-cycled.
        dots[44] = deep
        let mended = Plan(planID: "deep", dots: dots, sha256: "h")
        _ = try run(Session(plan: mended, options: recorded(store, resume: id), logger: logger), on: first)
        XCTAssertNotEqual(try status(of: cut), .planned)
        first.stop()
        simulatorOptions.seed = 22
        let second = try SimulatedApplicator.start(simulatorOptions, logger: logger)
        addTeardownBlock { second.stop() }
        let again = try run(Session(plan: mended, options: recorded(store, resume: id), logger: logger), on: second)
        XCTAssertEqual(again.outcome, .needsDecision, again.reason ?? "")
        XCTAssertFalse(second.injectedDots.contains { $0.dotID == cut }, "the cut-short dot was injected again")
    }

    // MARK: Item 4 — a simulator restarted with the same seed is a new boot

    /// The applicator loses power mid-session (the simulator stops), comes back with the same
    /// seed, and the session is resumed: the dots in flight may have run before the power went,
    /// so they need the operator's decision — never "device boot unchanged; done_count 0 → 0".
    func testResumeAfterAPowerCycleWithTheSameSeedNeverTreatsInFlightDotsAsNotInjected() throws {
        let store = try RecordStore(path: try temporaryPath())
        let plan = plan(80, dwell: 300_000)
        let first = try simulator(timeScale: 0.1, seed: 5)
        // The power goes while the first dot is in the skin: nothing is recorded done yet, so the
        // device's done_count (0) after the restart looks like "none of them ran".
        Thread.detachNewThread {
            let deadline = Date().addingTimeInterval(30)
            while Date() < deadline {
                if !first.status.needleRetracted { first.stop(); return }
                usleep(200)
            }
        }
        let account = try run(Session(plan: plan, options: recorded(store), logger: logger), on: first)
        XCTAssertEqual(account.outcome, .linkLost, account.reason ?? "")
        let id = try XCTUnwrap(account.sessionID)
        let second = try simulator(timeScale: 0, seed: 5)
        XCTAssertNotEqual(first.status.bootID, second.status.bootID, "a new boot must have a new boot id")
        let resumed = try run(Session(plan: plan, options: recorded(store, resume: id), logger: logger), on: second)
        XCTAssertEqual(resumed.outcome, .needsDecision, resumed.reason ?? "")
        let before = Set(first.injectedDots.map(\.dotID))
        let twice = second.injectedDots.map(\.dotID).filter { before.contains($0) }
        XCTAssertTrue(twice.isEmpty, "injected twice: \(twice)")
        XCTAssertTrue(resumed.reason?.contains("may or may not have been injected") ?? false, resumed.reason ?? "")
    }

    // MARK: Item 3 — no skin contact at ARM: the needle never starts by itself

    func testArmWithoutSkinContactWaitsForTheOperatorAndNeverResumesByItself() throws {
        let simulator = try simulator(timeScale: 0.05)
        simulator.setSkinContact(false)
        var options = SessionOptions()
        options.waitForOperatorOnDeviceHold = true
        let session = Session(plan: plan(20), options: options, logger: logger)
        let resumedAt = Tally()
        let held = ManagedFlag()
        let account = try run(session, on: simulator) { event in
            guard case .held = event, held.setOnce() else { return }
            DispatchQueue.global().asyncAfter(deadline: .now() + 0.2) {
                simulator.setSkinContact(true)  // contact returns; nobody has asked to resume yet
                DispatchQueue.global().asyncAfter(deadline: .now() + 0.8) {
                    resumedAt.set(simulator.injectedDots.count)
                    session.requestResume()
                }
            }
        }
        XCTAssertTrue(held.wasSet, "the applicator's hold at ARM was not reported")
        XCTAssertEqual(resumedAt.value, 0, "the needle started before the operator resumed")
        XCTAssertEqual(account.outcome, .completed, account.reason ?? "")
        XCTAssertEqual(simulator.injectedDots.count, 20)
    }

    /// Without an operator to ask, the same hold ends the session held with nothing injected.
    func testArmWithoutSkinContactEndsHeldWhenNobodyCanResume() throws {
        let simulator = try simulator(timeScale: 0.05)
        simulator.setSkinContact(false)
        let session = Session(plan: plan(20), logger: logger)
        let account = try run(session, on: simulator)
        XCTAssertEqual(account.outcome, .held, account.reason ?? "")
        XCTAssertTrue(account.reason?.contains("skin contact lost") ?? false, account.reason ?? "")
        simulator.setSkinContact(true)
        Thread.sleep(forTimeInterval: 0.3)
        XCTAssertTrue(simulator.injectedDots.isEmpty)
    }

    // MARK: Item 15 — a device-side hold waits for the operator

    func testDeviceContactLossHoldWaitsForTheOperatorThenResumesExactlyOnce() throws {
        let simulator = try simulator(timeScale: 0.05)
        var options = SessionOptions()
        options.waitForOperatorOnDeviceHold = true
        let session = Session(plan: plan(60), options: options, logger: logger)
        let lost = ManagedFlag()
        let held = ManagedFlag()
        let still = CountBox()
        let account = try run(session, on: simulator) { event in
            if case .progress(let p) = event, p.done == 15, lost.setOnce() { simulator.setSkinContact(false) }
            guard case .held = event, held.setOnce() else { return }
            DispatchQueue.global().asyncAfter(deadline: .now() + 0.2) {
                still.set(simulator.injectedDots.count)
                simulator.setSkinContact(true)
                DispatchQueue.global().asyncAfter(deadline: .now() + 0.5) {
                    still.check(simulator.injectedDots.count)
                    session.requestResume()
                }
            }
        }
        XCTAssertEqual(account.outcome, .completed, account.reason ?? "")
        XCTAssertTrue(still.stayedStill, "a dot started while held, before the operator resumed")
        let done = simulator.injectedDots.filter { $0.outcome == .done }.map(\.dotID)
        XCTAssertEqual(done.count, 60)
        XCTAssertEqual(Set(done).count, 60, "a dot ran twice")
    }

    /// The operator resumes while contact is still lost: the device does not take it, the link
    /// does not repeat it, and contact coming back later starts nothing.
    func testResumeWhileContactIsStillLostIsNotRepeatedUntilContactReturns() throws {
        let simulator = try simulator(timeScale: 0.05)
        var options = SessionOptions()
        options.waitForOperatorOnDeviceHold = true
        let session = Session(plan: plan(40), options: options, logger: logger)
        let lost = ManagedFlag()
        let holds = Tally()
        let still = CountBox()
        let account = try run(session, on: simulator) { event in
            if case .progress(let p) = event, p.done == 10, lost.setOnce() { simulator.setSkinContact(false) }
            guard case .held = event else { return }
            switch holds.increment() {
            case 1:  // resume at once, contact still lost
                DispatchQueue.global().asyncAfter(deadline: .now() + 0.1) { session.requestResume() }
            case 2:  // the resume was not taken: contact returns, nobody asks
                DispatchQueue.global().asyncAfter(deadline: .now() + 0.1) {
                    still.set(simulator.injectedDots.count)
                    simulator.setSkinContact(true)
                    DispatchQueue.global().asyncAfter(deadline: .now() + 0.6) {
                        still.check(simulator.injectedDots.count)
                        session.requestResume()
                    }
                }
            default:
                break
            }
        }
        XCTAssertEqual(account.outcome, .completed, account.reason ?? "")
        XCTAssertEqual(holds.count, 2, "the resume given while contact was lost must come back as a hold")
        XCTAssertTrue(still.stayedStill, "the needle started when contact returned, with nobody asking")
        XCTAssertEqual(Set(simulator.injectedDots.map(\.dotID)).count, 40)
    }

    // MARK: Item 11 — a resume given before the hold completes is not lost

    func testResumeRequestedBeforeTheHoldCompletesResumesTheSession() throws {
        let simulator = try simulator(timeScale: 0.3)
        let session = Session(plan: plan(30, dwell: 200_000), logger: logger)
        let held = ManagedFlag()
        let account = try run(session, on: simulator) { event in
            if case .progress(let p) = event, p.done == 5, held.setOnce() {
                session.requestHold()
                session.requestResume()  // the dot in the skin is still finishing
            }
        }
        XCTAssertEqual(account.outcome, .completed, account.reason ?? "")
        let done = simulator.injectedDots.filter { $0.outcome == .done }.map(\.dotID)
        XCTAssertEqual(done.count, 30)
        XCTAssertEqual(Set(done).count, 30)
    }

    /// Review of a3f079b: Ctrl-C (hold), the end confirmed (abort), then Enter, in a burst while a
    /// dot is in the skin. The resume used to be taken — audited as the operator's resume of a
    /// session that was ending, and a RESUME queued behind the ABORT's fence.
    func testAResumeAfterAnAbortIsNotTakenNorAudited() throws {
        let store = try RecordStore(path: try temporaryPath())
        let simulator = try simulator(timeScale: 0.5)
        let session = Session(plan: plan(40, dwell: 300_000), options: recorded(store), logger: logger)
        let resumed = ManagedFlag()
        Thread.detachNewThread {
            let deadline = Date().addingTimeInterval(30)
            while Date() < deadline {
                let status = simulator.status
                if status.doneCount >= 3 && !status.needleRetracted {
                    session.requestHold()
                    session.requestAbort(reason: "test")
                    session.requestResume()
                    return
                }
                usleep(200)
            }
        }
        let account = try run(session, on: simulator) { event in
            if case .resumed = event { _ = resumed.setOnce() }
        }
        XCTAssertEqual(account.outcome, .held, account.reason ?? "")
        XCTAssertFalse(resumed.wasSet, "a resume was reported after the abort")
        let kinds = try store.events(session: try XCTUnwrap(account.sessionID)).map(\.kind)
        XCTAssertFalse(kinds.contains("resume"), "\(kinds)")
        let injected = simulator.injectedDots.count
        Thread.sleep(forTimeInterval: 0.3)
        XCTAssertEqual(simulator.injectedDots.count, injected)
        XCTAssertEqual(simulator.status.state, .disarmed)
    }

    // MARK: Item 9 — every end leaves the applicator disarmed

    func testACompletedSessionLeavesTheApplicatorDisarmed() throws {
        let simulator = try simulator(timeScale: 0)
        let account = try run(Session(plan: plan(30), logger: logger), on: simulator)
        XCTAssertEqual(account.outcome, .completed, account.reason ?? "")
        XCTAssertTrue(account.deviceDisarmed)
        XCTAssertEqual(simulator.status.state, .disarmed)
    }

    func testAnAbortedSessionLeavesTheApplicatorDisarmedAndRecordsIt() throws {
        let store = try RecordStore(path: try temporaryPath())
        let simulator = try simulator(timeScale: 0.05)
        let session = Session(plan: plan(60), options: recorded(store), logger: logger)
        let once = ManagedFlag()
        let account = try run(session, on: simulator) { event in
            if case .progress(let p) = event, p.done == 10, once.setOnce() { session.requestAbort(reason: "test") }
        }
        XCTAssertEqual(account.outcome, .held, account.reason ?? "")
        XCTAssertEqual(simulator.status.state, .disarmed)
        XCTAssertTrue(simulator.status.needleRetracted)
        let kinds = try store.events(session: try XCTUnwrap(account.sessionID)).map(\.kind)
        XCTAssertTrue(kinds.contains("device-disarmed"), "\(kinds)")
    }

    // MARK: Item 10 — the runner checks spacing before encoding

    func testRunnerRefusesADotTooCloseToOneAlreadySentEvenIfThePlanCheckWasBypassed() throws {
        let simulator = try simulator(timeScale: 0)
        var dots = plan(20).dots
        let near = dots[12]
        dots[12] = PlanDot(id: near.id, xMicrometres: dots[3].xMicrometres + 100, yMicrometres: dots[3].yMicrometres,
                           depthMicrometres: near.depthMicrometres, dwellMicroseconds: near.dwellMicroseconds, index: near.index)
        // 0.1 mm from dot 4
        let session = Session(plan: Plan(planID: "close", dots: dots), logger: logger)
        session.skipValidationAfterHandshake = true  // layer 1 bypassed: layer 2 must catch it
        let account = try run(session, on: simulator)
        XCTAssertEqual(account.outcome, .held, account.reason ?? "")
        XCTAssertTrue(account.reason?.contains("dot 4") ?? false, account.reason ?? "")
        XCTAssertFalse(simulator.injectedDots.contains { $0.dotID == 13 }, "the too-close dot was injected")
    }

    // MARK: Item 12 — the envelope refusal inside the link's pull does not corrupt the batch

    func testEnvelopeRefusalMidBatchSendsEveryFrameItCountsAndOneAbort() throws {
        var options = SimulatorOptions()
        options.timeScale = 0.05
        options.limits.depthMaxMicrometres = 1000
        let simulator = try SimulatedApplicator.start(options, logger: logger)
        addTeardownBlock { simulator.stop() }
        var dots = plan(30).dots
        let deep = dots[8]  // passes the built-in envelope, not this device's
        dots[8] = PlanDot(id: deep.id, xMicrometres: deep.xMicrometres, yMicrometres: deep.yMicrometres,
                          depthMicrometres: 1200, dwellMicroseconds: deep.dwellMicroseconds, index: deep.index)
        let session = Session(plan: Plan(planID: "deep", dots: dots), logger: logger)
        session.skipValidationAfterHandshake = true
        let lastStatus = StatusBox()
        let account = try run(session, on: simulator) { event in
            if case .deviceStatus(let status) = event { lastStatus.set(status) }
        }
        XCTAssertEqual(account.outcome, .held, account.reason ?? "")
        XCTAssertTrue(account.reason?.contains("dot 9") ?? false, account.reason ?? "")
        XCTAssertFalse(simulator.injectedDots.contains { $0.dotID == 9 })
        // Dots 1–8 were in the batch the refusal interrupted: the link counted them sent, so the
        // device must have received (acknowledged) every one of them before the ABORT.
        XCTAssertEqual(account.metrics.dotFramesSent, 8)
        XCTAssertEqual(lastStatus.value?.ackSeq, 8, "frames counted as sent never reached the device")
        XCTAssertEqual(lastStatus.value?.state, .held)
        let done = simulator.injectedDots.filter { $0.outcome == .done }.map(\.dotID)
        XCTAssertEqual(Set(account.done), Set(done))
    }
}

final class StatusBox: @unchecked Sendable {
    private let lock = NSLock()
    private var status: Status?
    func set(_ value: Status) { lock.withLock { status = value } }
    var value: Status? { lock.withLock { status } }
}

final class AccountBox: @unchecked Sendable {
    private let semaphore = DispatchSemaphore(value: 0)
    private var result: Result<SessionAccount, any Error>?
    func set(_ value: Result<SessionAccount, any Error>) {
        result = value
        semaphore.signal()
    }
    func wait(timeout: TimeInterval) -> Result<SessionAccount, any Error>? {
        semaphore.wait(timeout: .now() + timeout) == .success ? result : nil
    }
}

extension ManagedFlag {
    var wasSet: Bool { !setOnce() }
}

/// A counter and a last value, from any thread.
final class Tally: @unchecked Sendable {
    private let lock = NSLock()
    private var counted = 0
    private var stored: Int?
    func increment() -> Int { lock.withLock { counted += 1; return counted } }
    var count: Int { lock.withLock { counted } }
    func set(_ value: Int) { lock.withLock { stored = value } }
    var value: Int? { lock.withLock { stored } }
}
