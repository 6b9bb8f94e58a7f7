import DeviceSim
import Dispatch
import FirmwareProtocol
import Foundation
import Logging
import SMPSystem
import XCTest

@testable import NeedleDriver

/// The link's driver against the simulator over a pty: the machine runs on its own I/O thread,
/// completions come on the owner's queue, and the port's descriptor is closed (the path can be
/// opened again) once the thread has ended. (That the heartbeat does not wait for a blocked
/// owner: `HostStallTests`.) Waits are generous; nothing asserts how long anything took.
final class ApplicatorLinkThreadTests: XCTestCase {
    private var logger: Logger { Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }) }

    private final class Box<Value>: @unchecked Sendable {
        private let lock = NSLock()
        private var stored: Value
        init(_ value: Value) { stored = value }
        var value: Value {
            get { lock.withLock { stored } }
            set { lock.withLock { stored = newValue } }
        }
    }

    private func linkThreads() -> Int {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        return tasks.filter {
            (try? String(contentsOfFile: "/proc/self/task/\($0)/comm", encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines) == "smp-link"
        }.count
    }

    /// The link threads now, once those an earlier test let go of have ended: a link's
    /// completion comes from its thread's last callback, so the thread may still be returning
    /// when the next test starts (seen under ASan: a count of 1 before a connect).
    private func linkThreadsOnceEarlierOnesEnded() -> Int {
        _ = waitUntil { linkThreads() == 0 }
        return linkThreads()
    }

    private func waitUntil(_ condition: () -> Bool) -> Bool {
        let end = Date().addingTimeInterval(30)
        while !condition() { if Date() > end { return false }; usleep(2_000) }
        return true
    }

    func testTheMachineRunsOnItsOwnThreadWhichEndsBeforeThePortIsFree() throws {
        var options = SimulatorOptions()
        options.timeScale = 0
        let simulator = try SimulatedApplicator.start(options, logger: logger)
        defer { simulator.stop() }
        let queue = DispatchQueue(label: "test.owner")
        let port = try SerialPort.open(path: simulator.devicePath, queue: queue)
        let link = ApplicatorLink(port: port, logger: logger)
        let threadsBefore = linkThreadsOnceEarlierOnesEnded()

        let handshake = Box<Result<HelloReply, LinkLoss>?>(nil)
        let onOwnerQueue = Box(true)
        queue.sync {
            link.connect { result in
                onOwnerQueue.value = Sys.currentThreadName() != "smp-link"
                dispatchPrecondition(condition: .onQueue(queue))
                handshake.value = result
            }
        }
        XCTAssertTrue(waitUntil { handshake.value != nil })
        guard case .success = handshake.value else { return XCTFail("handshake: \(String(describing: handshake.value))") }
        XCTAssertTrue(onOwnerQueue.value, "completions come on the owner's queue")
        XCTAssertEqual(linkThreads(), threadsBefore + 1, "one I/O thread for the link")

        // Closing: the completion comes once the descriptor is closed and the thread has ended.
        let disarmed = Box<Bool?>(nil)
        queue.sync { link.disarmAndClose { disarmed.value = $0 } }
        XCTAssertTrue(waitUntil { disarmed.value != nil })
        XCTAssertTrue(waitUntil { linkThreads() == threadsBefore }, "the I/O thread has ended")
        let again = try SerialPort.open(path: simulator.devicePath, queue: queue)  // flock released
        queue.sync { again.close() }
    }
}

extension ApplicatorLinkThreadTests {
    /// A connected link its owner lets go of without closing: its I/O thread must not go on
    /// heartbeating for nobody; it closes the port and ends.
    func testALinkLetGoOfEndsItsThreadAndFreesThePort() throws {
        var options = SimulatorOptions()
        options.timeScale = 0
        let simulator = try SimulatedApplicator.start(options, logger: logger)
        defer { simulator.stop() }
        let queue = DispatchQueue(label: "test.owner")
        let threadsBefore = linkThreadsOnceEarlierOnesEnded()
        let handshook = Box(false)
        do {
            let port = try SerialPort.open(path: simulator.devicePath, queue: queue)
            let link = ApplicatorLink(port: port, logger: logger)
            queue.sync { link.connect { _ in handshook.value = true } }
            XCTAssertTrue(waitUntil { handshook.value })
        }
        XCTAssertTrue(waitUntil { linkThreads() == threadsBefore }, "the I/O thread has ended")
        let path = simulator.devicePath
        XCTAssertTrue(waitUntil {
            guard let port = try? SerialPort.open(path: path, queue: queue) else { return false }
            queue.sync { port.close() }
            return true
        }, "the port is free again")
    }
}

extension ApplicatorLinkThreadTests {
    /// The heartbeat's STATUS answers of a device streaming as before (issue 15): they cost the
    /// owner no batch of their own and the thread no wait for an answer; they reach the owner
    /// with the next batch, in order. A STATUS that changes what the owner acts on (here `held`)
    /// still reaches it at once, though no other frame follows it. A 1.3 host, whose every
    /// heartbeat is answered (a 1.4 link asks once a lease when nothing else came).
    func testRoutineStatusesRideWithTheNextBatchAndAHoldArrivesAtOnce() throws {
        var options = SimulatorOptions()
        options.timeScale = 1  // real time: heartbeats between the dots
        let simulator = try SimulatedApplicator.start(options, logger: logger)
        defer { simulator.stop() }
        let queue = DispatchQueue(label: "test.owner")
        let port = try SerialPort.open(path: simulator.devicePath, queue: queue)
        var configuration = LinkConfiguration()
        configuration.protocolMinor = 3
        let link = ApplicatorLink(port: port, configuration: configuration, logger: logger)
        let handshake = Box<Result<HelloReply, LinkLoss>?>(nil)
        let events = Box<[LinkEvent]>([])
        // More dots than the test waits for: the device's queue stays full, as in a session.
        let dotCount: UInt32 = 16
        var dots = (1...4 * dotCount).map {
            DotCommand(dotID: $0, epoch: 0, xMicrometres: Int32($0) * 2_000, yMicrometres: 0,
                       depthMicrometres: 800, dwellMicroseconds: 60_000)
        }
        queue.sync {
            link.onEvent = { events.value.append($0) }
            link.dotSource = { dots.isEmpty ? nil : dots.removeFirst() }
            link.connect { handshake.value = $0 }
        }
        XCTAssertTrue(waitUntil { handshake.value != nil })
        guard case .success = handshake.value else { return XCTFail("handshake: \(String(describing: handshake.value))") }
        queue.sync {
            link.arm()
            link.startStreaming()
        }
        func done() -> [UInt32] {
            events.value.compactMap { if case .dotDone(let id, _, _) = $0 { id } else { nil } }
        }
        XCTAssertTrue(waitUntil { done().count >= Int(dotCount) }, "done: \(done())")
        XCTAssertEqual(Array(done().prefix(Int(dotCount))), Array(1...dotCount))
        // Between the dots came the heartbeat's answers (the needle down, then up): with a batch
        // each, the owner would have had more batches than statuses.
        let (batches, statuses) = queue.sync {
            (link.batchesDelivered, events.value.filter { if case .deviceStatus = $0 { true } else { false } }.count)
        }
        XCTAssertLessThan(batches, statuses, "routine STATUS frames had batches of their own")

        // In order: no status the owner saw says fewer dots done than a DOT_DONE before it.
        var doneSoFar: UInt32 = 0
        for event in events.value {
            switch event {
            case .dotDone(_, _, let count): doneSoFar = max(doneSoFar, count)
            case .deviceStatus(let status):
                XCTAssertGreaterThanOrEqual(status.doneCount, doneSoFar, "a status delivered after a later DOT_DONE")
                doneSoFar = max(doneSoFar, status.doneCount)
            default: break
            }
        }

        queue.sync { link.hold() }
        XCTAssertTrue(waitUntil {
            events.value.contains { if case .deviceStatus(let status) = $0 { status.state == .held } else { false } }
        }, "the held STATUS reaches the owner without another frame behind it")
        let closed = Box<Bool?>(nil)
        queue.sync { link.disarmAndClose { closed.value = $0 } }
        XCTAssertTrue(waitUntil { closed.value != nil })
    }

    func testOnlyAStatusOfADeviceStreamingAsBeforeIsRoutine() {
        func status(_ state: DeviceState, fault: FaultCode = .none, epoch: UInt16 = 2, done: UInt32 = 5,
                    retracted: Bool = true, pace: UInt16 = 84) -> Status {
            Status(state: state, fault: fault, queueDepth: 1, freeSlots: 31, epoch: epoch, ackSeq: 3, lastDoneSeq: 2,
                   lastDoneDotID: done, doneCount: done, currentDotID: 0, needleRetracted: retracted, paceMilliseconds: pace)
        }
        let running = status(.running)
        XCTAssertTrue(LinkIO.isRoutine(status(.running, done: 9), after: running), "counters only")
        XCTAssertTrue(LinkIO.isRoutine(status(.ready, done: 9), after: running), "the queue ran dry")
        XCTAssertTrue(LinkIO.isRoutine(running, after: status(.ready)))
        XCTAssertTrue(LinkIO.isRoutine(status(.running, retracted: false), after: running), "the needle down in a dwell")
        XCTAssertFalse(LinkIO.isRoutine(running, after: nil), "the first after a handshake")
        for changed in [status(.held), status(.estop, fault: .hostEstop), status(.disarmed), status(.running, epoch: 3),
                        status(.running, fault: .contactLost), status(.running, pace: 100), status(.held, retracted: false)] {
            XCTAssertFalse(LinkIO.isRoutine(changed, after: running), "\(changed)")
            XCTAssertFalse(LinkIO.isRoutine(running, after: changed), "\(changed)")
        }
    }
}
