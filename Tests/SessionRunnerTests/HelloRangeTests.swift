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

/// Issue 12, item 8: a device whose HELLO_REPLY is outside the protocol's ranges is refused at
/// the handshake, with nothing armed — it used to be armed and then hang (queue capacity 0) or
/// run with no heartbeat (a 60 s lease granted against 100 ms asked).
final class HelloRangeTests: XCTestCase {
    let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    /// A device that answers HELLO with `reply` (the host's nonce echoed) and everything else with
    /// STATUS (disarmed, or ready after ARM).
    func fakeApplicator(reply template: HelloReply) throws -> ScriptedApplicator {
        nonisolated(unsafe) var armed = false
        return try ScriptedApplicator { frame in
            switch frame.message {
            case .hello(let hello):
                var reply = template
                reply.hostNonce = hello.hostNonce
                return [Frame(.helloReply(reply))]
            default:
                if case .arm = frame.message { armed = true }
                return [Frame(.status(Status(
                    state: armed ? .ready : .disarmed, fault: .none, queueDepth: 0, freeSlots: template.queueCapacity,
                    epoch: 0, ackSeq: 0, lastDoneSeq: 0, lastDoneDotID: 0, doneCount: 0, currentDotID: 0,
                    needleRetracted: true, paceMilliseconds: 60_000)))]
            }
        }
    }

    func reply(queueCapacity: UInt8 = 32, leaseMilliseconds: UInt16 = 100) -> HelloReply {
        HelloReply(capabilities: [.deduplication, .epochFence, .lease, .pace], bootID: 0x1234_5678,
                   firmwareID: "fake 1.0", queueCapacity: queueCapacity, leaseMilliseconds: leaseMilliseconds,
                   limits: DeviceLimits(depthMinMicrometres: 200, depthMaxMicrometres: 1500, dwellMinMicroseconds: 20_000,
                                        dwellMaxMicroseconds: 500_000, travelXMicrometres: 150_000, travelYMicrometres: 150_000,
                                        travelSpeedMicrometresPerSecond: 50_000, descendMicroseconds: 15_000,
                                        retractMicroseconds: 15_000),
                   hostNonce: 0, doneCount: 0, lastDoneDotID: 0)
    }

    func session(against device: ScriptedApplicator) throws -> SessionAccount {
        let plan = Plan(planID: "hello", dots: [PlanDot(id: 1, xMicrometres: 0, yMicrometres: 0, depthMicrometres: 700,
                                                       dwellMicroseconds: 60_000, index: 0)])
        let box = AccountBox()
        let session = Session(plan: plan, logger: logger)
        Thread.detachNewThread {
            box.set(Result { try session.run(devicePath: device.path, confirm: { _ in true }, onEvent: { _ in }) })
        }
        guard let result = box.wait(timeout: 20) else {
            session.requestAbort(reason: "test timeout")
            XCTFail("the session did not end: it armed a device it should have refused")
            throw CancellationError()
        }
        return try result.get()
    }

    func testQueueCapacityZeroIsRefusedAndNothingIsArmed() throws {
        let device = try fakeApplicator(reply: reply(queueCapacity: 0))
        defer { device.stop() }
        let account = try session(against: device)
        XCTAssertEqual(account.outcome, .linkLost, account.reason ?? "")
        XCTAssertTrue(account.reason?.contains("queue_capacity 0 (1–64)") ?? false, account.reason ?? "")
        XCTAssertFalse(device.types.contains(.arm))
        XCTAssertEqual(account.outcome, .linkLost)
    }

    func testALeaseLongerThanAskedIsRefusedAndNothingIsArmed() throws {
        let device = try fakeApplicator(reply: reply(leaseMilliseconds: 60_000))
        defer { device.stop() }
        let account = try session(against: device)
        XCTAssertEqual(account.outcome, .linkLost, account.reason ?? "")
        XCTAssertTrue(account.reason?.contains("lease_ms 60000") ?? false, account.reason ?? "")
        XCTAssertFalse(device.types.contains(.arm))
    }

    func testEveryRangeOfTheReplyIsChecked() {
        XCTAssertNil(ApplicatorLink.outOfRange(reply(), requestedLeaseMilliseconds: 100))
        XCTAssertNotNil(ApplicatorLink.outOfRange(reply(queueCapacity: 65), requestedLeaseMilliseconds: 100))
        XCTAssertNotNil(ApplicatorLink.outOfRange(reply(leaseMilliseconds: 19), requestedLeaseMilliseconds: 100))
        XCTAssertNotNil(ApplicatorLink.outOfRange(reply(leaseMilliseconds: 101), requestedLeaseMilliseconds: 100))
        XCTAssertNil(ApplicatorLink.outOfRange(reply(leaseMilliseconds: 50), requestedLeaseMilliseconds: 100))
        var zeroBoot = reply()
        zeroBoot.bootID = 0
        XCTAssertNotNil(ApplicatorLink.outOfRange(zeroBoot, requestedLeaseMilliseconds: 100))
        var depth = reply()
        depth.limits.depthMinMicrometres = 2000
        XCTAssertNotNil(ApplicatorLink.outOfRange(depth, requestedLeaseMilliseconds: 100))
        var speed = reply()
        speed.limits.travelSpeedMicrometresPerSecond = 0
        XCTAssertNotNil(ApplicatorLink.outOfRange(speed, requestedLeaseMilliseconds: 100))
    }
}
