import SMPSystem
import Dispatch
import FirmwareProtocol
import XCTest

@testable import SessionRunner
@testable import SMPPlan
@testable import SMPPlanReader
@testable import SMPInterlocks
@testable import SMPRecords
@testable import SMPMachine
@testable import SMPRender
@testable import smpctl

/// The hand-over from the session's queue to the reporter's: order kept, nothing but "where it
/// is now" events dropped, and a busy reporter costs one pending event per kind, not one per dot.
final class EventRelayTests: XCTestCase {
    /// A relay whose reporter queue is suspended (busy) until `release()`, and what it delivered.
    final class Harness: Sendable {
        final class Log: Sendable {
            let lines = Locked<[String]>([])
        }

        let queue = DispatchQueue(label: "test.reporter")
        let log = Log()
        let relay: EventRelay

        init() {
            let log = self.log
            relay = EventRelay(queue: queue) { event in log.lines.withLock { $0.append(Self.describe(event)) } }
            queue.suspend()
        }

        var delivered: [String] { log.lines.withLock { $0 } }

        func release() -> [String] {
            queue.resume()
            queue.sync {}
            return delivered
        }

        static func describe(_ event: SessionEvent) -> String {
            switch event {
            case .progress(let p): "progress \(p.done)"
            case .deviceStatus(let s): "device \(s.state)\(s.fault == .none ? "" : " \(s.fault)")"
            case .held(let reason): "held \(reason)"
            case .resumed: "resumed"
            case .armed: "armed"
            case .dotInterrupted(let id): "interrupted \(id)"
            default: "other"
            }
        }
    }

    static func progress(_ done: Int) -> SessionEvent {
        .progress(SessionProgress(done: done, total: 1000, lastDotID: UInt32(done), region: nil))
    }

    static func device(_ state: DeviceState, _ fault: FaultCode = .none) -> SessionEvent {
        .deviceStatus(Status(state: state, fault: fault, queueDepth: 0, freeSlots: 32, epoch: 0, ackSeq: 0,
                             lastDoneSeq: 0, lastDoneDotID: 0, doneCount: 0, currentDotID: 0, needleRetracted: true))
    }

    func testAnIdleReporterGetsEveryEventInOrder() {
        let harness = Harness()
        harness.queue.resume()
        let events = [Self.device(.ready), Self.progress(1), Self.device(.running), Self.progress(2), Self.device(.ready)]
        for event in events {
            harness.relay.send(event)
            harness.queue.sync {}
        }
        harness.queue.suspend()
        XCTAssertEqual(harness.release(), ["device ready", "progress 1", "device running", "progress 2", "device ready"])
    }

    func testABusyReporterGetsTheLatestProgressAndDeviceStateOnly() {
        let harness = Harness()
        harness.relay.send(.armed)
        for done in 1...10_000 {
            harness.relay.send(Self.device(.running))
            harness.relay.send(Self.progress(done))
            harness.relay.send(Self.device(.ready))
        }
        XCTAssertEqual(harness.release(), ["armed", "progress 10000", "device ready"])
    }

    func testEventsThatMustBeSeenAreNeverDroppedNorOvertaken() {
        let harness = Harness()
        harness.relay.send(Self.progress(1))
        harness.relay.send(Self.device(.running))
        harness.relay.send(Self.progress(2))
        harness.relay.send(.held(reason: "pedal"))
        harness.relay.send(Self.device(.held))
        harness.relay.send(Self.progress(3))
        harness.relay.send(.dotInterrupted(dotID: 7))
        harness.relay.send(Self.device(.estop, .hostEstop))
        harness.relay.send(Self.device(.estop, .hostEstop))
        // progress 2 replaced 1 (nothing that must be seen between them); the hold, the held
        // state, the cut-short dot and both latched states all arrive, and progress 3 stays
        // before the interruption it preceded.
        XCTAssertEqual(harness.release(), [
            "device running", "progress 2", "held pedal", "device held", "progress 3", "interrupted 7",
            "device estop e-stop from the host", "device estop e-stop from the host",
        ])
    }

    func testAFlipAndItsFlipBackCoalescedAreNotShownAsAChange() {
        let harness = Harness()
        harness.queue.resume()
        harness.relay.send(Self.device(.ready))
        harness.queue.sync {}
        harness.queue.suspend()
        harness.relay.send(Self.device(.running))
        harness.relay.send(Self.device(.ready))
        harness.relay.send(Self.progress(1))
        XCTAssertEqual(harness.release(), ["device ready", "progress 1"])
    }

    func testEverythingSentBeforeABarrierIsDeliveredByIt() {
        let harness = Harness()
        harness.queue.resume()
        let sender = DispatchQueue(label: "test.session")
        sender.sync {
            for done in 1...5_000 { harness.relay.send(Self.progress(done)) }
            harness.relay.send(.resumed)
        }
        harness.queue.sync {}  // what Run does before printing the summary
        XCTAssertEqual(harness.delivered.last, "resumed")
        XCTAssertEqual(harness.delivered.filter { $0.hasPrefix("progress") }.last, "progress 5000")
    }
}
