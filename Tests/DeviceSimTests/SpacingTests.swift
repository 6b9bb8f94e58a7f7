import XCTest
import FirmwareProtocol
@testable import DeviceSim

/// Issue 12, item 10: the device refuses a dot closer than the minimum spacing to any of its most
/// recent skin entries (or to a dot accepted before it that has not run yet): the last line of
/// defence against a dot injected twice.
final class SpacingTests: XCTestCase {
    static let tooCloseCode: UInt8 = 12

    func testTheDevicesOwnMinimumIsThePlanFormatsBuiltInSpacing() {
        XCTAssertEqual(FirmwareConfiguration().minimumSpacingMicrometres, 500)
        XCTAssertEqual(SimulatorOptions().minimumSpacingMicrometres, 500)
        XCTAssertEqual(Firmware.spacingRingSize, 64)
    }

    func assertRefusedTooClose(_ answer: [Message], value: Int32, file: StaticString = #filePath, line: UInt = #line) {
        let refusal = answer.refusals.first
        XCTAssertEqual(refusal?.code.rawValue, Self.tooCloseCode, "REFUSED too_close: \(answer)", file: file, line: line)
        XCTAssertEqual(refusal?.value, value, "the distance in µm", file: file, line: line)
        XCTAssertEqual(refusal?.state, .fault, file: file, line: line)
        XCTAssertEqual(refusal?.fault, .dotOutOfLimits, file: file, line: line)
        XCTAssertTrue(answer.acks.isEmpty, "not accepted", file: file, line: line)
    }

    func testAReplayOfTheSameDotAtTheSameSpotIsRefused() {
        var bench = Bench(spacingOn)
        bench.handshakeAndArm()
        bench.dot(1, id: 7, x: 1_000, y: 2_000)
        bench.runUntilIdle()
        XCTAssertEqual(bench.record.map(\.dotID), [7])
        // A new host session (a resume that wrongly believes dot 7 never ran) sends it again.
        bench.hello(nonce: 2)
        bench.send(.arm)
        let answer = bench.dot(1, id: 7, x: 1_000, y: 2_000)
        assertRefusedTooClose(answer, value: 0)
        bench.runUntilIdle()
        XCTAssertEqual(bench.record.map(\.dotID), [7], "the ground truth has dot 7 once")
        XCTAssertEqual(bench.status.state, .fault)
        XCTAssertEqual(bench.status.fault, .dotOutOfLimits)
    }

    func testADotOneMicrometreInsideTheSpacingIsRefused() {
        var bench = Bench(spacingOn)
        bench.handshakeAndArm()
        bench.dot(1, id: 1, x: 10_000)
        bench.runUntilIdle()
        assertRefusedTooClose(bench.dot(2, id: 2, x: 10_499), value: 499)
        bench.runUntilIdle()
        XCTAssertEqual(bench.record.map(\.dotID), [1], "the refused dot was not injected")
    }

    func testADotTooCloseToOneStillQueuedIsRefused() {
        var bench = Bench(spacingOn)
        bench.handshakeAndArm()
        bench.dot(1, id: 1, x: 10_000)
        bench.dot(2, id: 2, x: 20_000)  // queued behind dot 1, not yet in the skin
        bench.run(until: 250_000)  // dot 1: travel 0–200 ms, descend, dwell 215–315 ms
        assertRefusedTooClose(bench.dot(3, id: 3, x: 20_000, y: 300), value: 300)
        bench.runUntilIdle()
        XCTAssertEqual(bench.record.map(\.dotID), [1], "dot 2 flushed with the latch, dot 3 refused")
        XCTAssertEqual(bench.record.first?.outcome, .interrupted, "the latch cut dot 1 short")
    }

    func testADotExactlyAtTheSpacingIsAccepted() {
        var bench = Bench(spacingOn)
        bench.handshakeAndArm()
        bench.dot(1, id: 1, x: 10_000, y: 10_000)
        bench.runUntilIdle()
        let answer = bench.dot(2, id: 2, x: 10_300, y: 10_400)  // 300² + 400² = 500²
        XCTAssertEqual(answer.acks.map(\.ackSeq), [2])
        XCTAssertTrue(answer.refusals.isEmpty)
        bench.runUntilIdle()
        XCTAssertEqual(bench.record.map(\.dotID), [1, 2])
        XCTAssertEqual(bench.record.map(\.outcome), [.done, .done])
    }

    /// Dot 1 at the origin, then `others` dots elsewhere (all run), then dot 1's spot again.
    func revisit(after others: UInt32) -> [Message] {
        var bench = Bench(spacingOn)
        bench.handshakeAndArm()
        bench.dot(1, id: 1, x: 0, y: 0)
        bench.runUntilIdle()
        var seq: UInt8 = 2
        for index in 0..<others {
            bench.dot(seq, id: 2 + index, x: Int32(index + 1) * 1_000, y: 5_000)
            seq &+= 1
            if bench.status.queueDepth >= 16 { bench.runUntilIdle() }
        }
        bench.runUntilIdle()
        XCTAssertEqual(bench.record.count, Int(others) + 1)
        return bench.dot(seq, id: 1_000, x: 0, y: 0)
    }

    func testTheRingRemembersTheLast64SkinEntries() {
        assertRefusedTooClose(revisit(after: 63), value: 0)
    }

    func testTheRingForgetsAfterItsSize() {
        let answer = revisit(after: 64)
        XCTAssertEqual(answer.acks.count, 1, "64 later skin entries pushed dot 1 out of the ring: \(answer)")
        XCTAssertTrue(answer.refusals.isEmpty)
    }

    // MARK: - SPACING (protocol 1.2, capability bit 6)

    func spacingReply(_ answer: [Message]) -> (micrometres: UInt32, ringSize: UInt8)? {
        for message in answer {
            if case .spacingReply(let micrometres, let ringSize) = message { return (micrometres, ringSize) }
        }
        return nil
    }

    func testSpacingLengthensTheMinimumAndTheReplyConfirmsIt() {
        var bench = Bench(spacingOn)
        bench.handshakeAndArm()
        XCTAssertTrue(bench.firmware.configuration.capabilities.contains(.spacing))
        let reply = spacingReply(bench.send(.spacing(minimumSpacingMicrometres: 1_200)))
        XCTAssertEqual(reply?.micrometres, 1_200)
        XCTAssertEqual(reply?.ringSize, 64)
        bench.dot(1, id: 1, x: 10_000)
        bench.runUntilIdle()
        assertRefusedTooClose(bench.dot(2, id: 2, x: 11_199), value: 1_199)
    }

    func testSpacingShorterThanTheDevicesOwnCannotShortenIt() {
        var bench = Bench(spacingOn)
        bench.handshakeAndArm()
        XCTAssertEqual(spacingReply(bench.send(.spacing(minimumSpacingMicrometres: 100)))?.micrometres, 500)
        bench.dot(1, id: 1, x: 10_000)
        bench.runUntilIdle()
        assertRefusedTooClose(bench.dot(2, id: 2, x: 10_200), value: 200)
    }

    func testHelloForgetsTheSpacingButNotTheSkinEntries() {
        var bench = Bench(spacingOn)
        bench.handshakeAndArm()
        bench.send(.spacing(minimumSpacingMicrometres: 2_000))
        bench.dot(1, id: 1, x: 10_000)
        bench.runUntilIdle()
        bench.hello(nonce: 9)
        XCTAssertEqual(spacingReply(bench.send(.spacing(minimumSpacingMicrometres: 0)))?.micrometres, 500,
                       "HELLO forgot 2 mm; the device's own 500 µm stays")
        XCTAssertEqual(bench.dot(1, id: 2, x: 11_000).acks.count, 1, "1 mm apart: fine under 500 µm")
        assertRefusedTooClose(bench.dot(2, id: 3, x: 10_100), value: 100)
    }

    func testARebootForgetsTheSkinEntries() throws {
        var bench = Bench {
            spacingOn(&$0)
            $0.faults = try! FaultPlan(spec: "reset-at=2")
        }
        bench.handshakeAndArm()
        bench.dot(1, id: 1, x: 10_000)
        bench.runUntilIdle()
        bench.dot(2, id: 2)  // lost with the reset
        bench.hello()
        bench.send(.arm)
        XCTAssertEqual(bench.dot(1, id: 1, x: 10_000).acks.count, 1, "RAM lost: the device cannot know")
    }

    func testRetransmissionsAndFencedDotsAreNotComparedAndNeverRefused() {
        var bench = Bench(spacingOn)
        bench.handshakeAndArm()
        bench.dot(1, id: 1, x: 10_000)
        bench.dot(2, id: 2, x: 20_000)
        XCTAssertEqual(bench.dot(2, id: 2, x: 20_000).acks.map(\.ackSeq), [2], "a retransmission: acknowledged")
        bench.run(until: 250_000)  // dot 1 in the skin (dwell 215–315 ms): HOLD lets it finish, flushes dot 2
        bench.send(.hold(epoch: 1))
        XCTAssertEqual(bench.dot(3, id: 3, x: 20_000).acks.map(\.ackSeq), [3], "fenced (old epoch): never runs")
        bench.runUntilIdle()
        XCTAssertEqual(bench.status.state, .held)
        XCTAssertEqual(bench.send(.resume(epoch: 1, nextSeq: 4)).statuses.last?.state, .ready)
        XCTAssertEqual(bench.dot(4, id: 2, epoch: 1, x: 20_000).acks.map(\.ackSeq), [4],
                       "dot 2 was fenced, never entered the skin: it may be sent again")
        bench.runUntilIdle()
        XCTAssertEqual(bench.record.map(\.dotID), [1, 2])
    }

    func testADeviceWithoutTheCapabilityTreatsSpacingAsAnUnknownType() {
        var bench = Bench { $0.capabilities.remove(.spacing) }
        bench.handshakeAndArm()
        let answer = bench.send(.spacing(minimumSpacingMicrometres: 600))
        XCTAssertEqual(answer.naks.map(\.reason), [.badFrame], "as a protocol 1.1 device")
        XCTAssertNil(spacingReply(answer))
    }
}
