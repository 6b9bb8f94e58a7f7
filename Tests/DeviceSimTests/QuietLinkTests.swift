import XCTest
import FirmwareProtocol
@testable import DeviceSim

/// Protocol 1.3 (firmware-protocol.md §6.3, §4 STATUS, §6.7.2): one cumulative ACK per block of
/// DOTs decoded together and no STATUS for ready ↔ running alone — only when both sides speak 1.3.
final class QuietLinkTests: XCTestCase {
    private func dots(_ seqs: ClosedRange<UInt8>, epoch: UInt16 = 0) -> [Frame] {
        seqs.map { seq in
            Frame(seq: seq, .dot(DotCommand(dotID: UInt32(seq) + 100, epoch: epoch, xMicrometres: 0, yMicrometres: 0,
                                            depthMicrometres: 800, dwellMicroseconds: 100_000)))
        }
    }

    private func armed(hostMinor: UInt8, deviceMinor: UInt8 = ProtocolVersion.minor,
                       _ configure: (inout FirmwareConfiguration) -> Void = { _ in }) -> Bench {
        var bench = Bench {
            $0.protocolMinor = deviceMinor
            configure(&$0)
        }
        let reply = bench.hello(minor: hostMinor).helloReplies
        XCTAssertEqual(reply.map(\.versionMinor), [deviceMinor], "the device says its own minor")
        bench.send(.arm)
        XCTAssertEqual(bench.status.state, .ready)
        return bench
    }

    func testA13HostGetsOneCumulativeACKForABlockOfDOTs() {
        var bench = armed(hostMinor: 3)
        let answer = bench.send(dots(1...5))
        XCTAssertEqual(answer.acks, [Ack(ackSeq: 5, freeSlots: 27, epoch: 0)], "the last ACK stands for all five")
        XCTAssertEqual(answer.statuses, [], "ready → running is not news at 1.3")
        XCTAssertEqual(bench.status.queueDepth, 5)
    }

    func testAnOlderHostGetsAnACKForEveryDOTAndEveryStatus() {
        for minor: UInt8 in [0, 1, 2] {
            var bench = armed(hostMinor: minor)
            let answer = bench.send(dots(1...5))
            XCTAssertEqual(answer.acks.map(\.ackSeq), [1, 2, 3, 4, 5], "host 1.\(minor)")
            XCTAssertEqual(answer.statuses.map(\.state), [.running], "host 1.\(minor): the state change, as always")
        }
    }

    func testAnOlderDeviceACKsEveryDOTForA13Host() {
        for minor: UInt8 in [1, 2] {
            var bench = armed(hostMinor: 3, deviceMinor: minor)
            let answer = bench.send(dots(1...5))
            XCTAssertEqual(answer.acks.map(\.ackSeq), [1, 2, 3, 4, 5], "device 1.\(minor)")
            XCTAssertEqual(answer.statuses.map(\.state), [.running], "device 1.\(minor)")
        }
    }

    /// The queue running dry between DOTs sends nothing at 1.3; a 1.2 session sees ready and
    /// running again. The heartbeat's answer still shows the state as it is.
    func testTheQueueRunningDryIsNotReportedAt13() {
        for (minor, expected) in [(UInt8(3), [DeviceState]()), (2, [.running, .ready, .running, .ready])] {
            var bench = armed(hostMinor: minor)
            bench.heartbeat = nil
            // One dot each: 15 ms descend, 100 ms dwell, 15 ms retract; the queue runs dry between.
            let first = bench.send(dots(1...1)) + bench.run(for: 140_000)
            XCTAssertEqual(first.dotDones.map(\.dotID), [101], "host 1.\(minor)")
            let second = bench.send(dots(2...2)) + bench.run(for: 140_000)
            XCTAssertEqual(second.dotDones.map(\.dotID), [102], "host 1.\(minor)")
            XCTAssertEqual((first + second).statuses.map(\.state), expected, "host 1.\(minor): unprompted STATUS")
            XCTAssertEqual(bench.send(.statusRequest).statuses.map(\.state), [.ready], "host 1.\(minor): asked, it says")
        }
    }

    /// An ACK owed goes out before any other frame but DOT_DONE, so every frame reads in order.
    func testTheOwedACKPrecedesANAK() {
        var bench = armed(hostMinor: 3)
        let answer = bench.send(dots(1...2) + dots(4...4))
        guard answer.count == 2, case .ack(let ack) = answer[0], case .nak(let nak) = answer[1] else {
            return XCTFail("\(answer)")
        }
        XCTAssertEqual(ack.ackSeq, 2)
        XCTAssertEqual(nak.expectedSeq, 3)
        XCTAssertEqual(nak.reason, .outOfOrder)
    }

    /// A go-back-N resend of DOTs already taken is answered with one ACK, and none runs twice.
    func testDuplicatesInABlockGetOneACKAndNeverRunTwice() {
        var bench = armed(hostMinor: 3)
        bench.send(dots(1...4))
        let answer = bench.send(dots(1...4))
        XCTAssertEqual(answer.acks, [Ack(ackSeq: 4, freeSlots: 28, epoch: 0)])
        bench.runUntilIdle()
        XCTAssertEqual(bench.record.map(\.dotID), [101, 102, 103, 104])
    }

    /// At time scale 0 each dot completes while the block is read: the DOT_DONE of the last DOT
    /// stands for the ACK owed, which is not sent (a fenced DOT after it would need it).
    func testAtInstantPhysicsTheDoneFramesStandForTheACK() {
        var bench = armed(hostMinor: 3) {
            $0.timeScale = 0
            $0.minimumDotIntervalMicroseconds = 0
        }
        let answer = bench.send(dots(1...3))
        XCTAssertEqual(answer.map(\.type), [.dotDone, .dotDone, .dotDone])
        XCTAssertEqual(answer.dotDones.map(\.dotSeq), [1, 2, 3])
        // A stale-epoch DOT after them is accepted (fenced) but never done: its ACK is sent.
        let fenced = bench.send([Frame(seq: 4, .dot(DotCommand(dotID: 104, epoch: 9, xMicrometres: 0, yMicrometres: 0,
                                                               depthMicrometres: 800, dwellMicroseconds: 100_000)))])
        XCTAssertEqual(fenced.acks.map(\.ackSeq), [4])
        XCTAssertEqual(bench.record.map(\.dotID), [101, 102, 103])
    }

    /// A hold is still reported at 1.3: only ready ↔ running is quiet.
    func testAHoldIsStillReported() {
        var bench = armed(hostMinor: 3)
        bench.heartbeat = nil
        bench.send(dots(1...2))
        let answer = bench.send(.hold(epoch: 1)) + bench.run(for: 200_000)
        XCTAssertEqual(answer.statuses.last?.state, .held)
        XCTAssertTrue(answer.statuses.last?.needleRetracted == true)
    }

    // MARK: - 1.4: HEARTBEAT

    /// HEARTBEAT renews the lease and is never answered, in every state: an armed device kept by
    /// HEARTBEATs alone stays ready, and without them holds at the lease as before.
    func testAHeartbeatKeepsTheLeaseAndIsNeverAnswered() {
        var bench = Bench()
        bench.hello(lease: 100, minor: 4)
        bench.send(.arm)
        XCTAssertEqual(bench.status.state, .ready)
        bench.heartbeat = nil
        var answers: [Message] = []
        for _ in 0..<40 {  // one second, a HEARTBEAT every quarter lease
            answers += bench.run(for: 25_000)
            answers += bench.send(.heartbeat)
        }
        XCTAssertEqual(answers, [], "nothing answers a HEARTBEAT")
        XCTAssertEqual(bench.status.state, .ready, "the lease held on HEARTBEATs alone")
        let expiry = bench.run(for: 100_000)
        XCTAssertEqual(expiry.statuses.map(\.fault), [.leaseExpired], "without them it expires as before")
        XCTAssertEqual(bench.send(.heartbeat), [], "held: not answered either")
        bench.send(.estop(cause: .hostEstop))
        XCTAssertEqual(bench.status.state, .estop)
        XCTAssertEqual(bench.send(.heartbeat), [], "latched: no REFUSED for a HEARTBEAT")
        XCTAssertEqual(bench.status.state, .estop, "and nothing restarted")
    }

    /// A device of 1.3 or older does not know the type: the block fails its checks (NAK bad
    /// frame) and the lease is not renewed by it. A 1.4 host never sends it one (§6.7.2).
    func testAnOlderDeviceDoesNotKnowHeartbeat() {
        for minor: UInt8 in [2, 3] {
            var bench = Bench { $0.protocolMinor = minor }
            bench.hello(lease: 100, minor: 4)
            bench.send(.arm)
            bench.heartbeat = nil
            bench.run(for: 60_000)
            let answer = bench.send(.heartbeat)
            XCTAssertEqual(answer.naks.map(\.reason), [.badFrame], "device 1.\(minor)")
            bench.run(for: 50_000)
            XCTAssertEqual(bench.status.fault, .leaseExpired, "device 1.\(minor): the lease ran from the ARM")
        }
    }
}
