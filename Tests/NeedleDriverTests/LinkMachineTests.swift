import FirmwareProtocol
import XCTest

@testable import NeedleDriver

/// The host link's protocol machine on virtual time: every input carries its `now`, nothing
/// sleeps, nothing touches a port. Device frames are built with the codec or taken from the
/// golden frames of firmware-protocol.md §8.
final class LinkMachineTests: XCTestCase {
    private let ms: UInt64 = 1_000_000

    // MARK: - Frame history

    func testTheFrameHistoryDumpsBothDirectionsInTimeOrderWithEachFramesFields() {
        var history = FrameHistory(capacity: 2)
        history.record(.sent, frame: Frame(seq: 1, .dot(DotCommand(dotID: 7, epoch: 2, xMicrometres: -1_500, yMicrometres: 2_000,
                                                                    depthMicrometres: 800, dwellMicroseconds: 30_000))), at: 1_000)
        history.record(.received, frame: Frame(seq: 9, .status(.test(.estop, fault: .hostEstop, epoch: 2))), at: 3_000)
        history.record(.sent, frame: Frame(seq: 2, .hold(epoch: 2)), at: 2_000)
        history.record(.sent, frame: Frame(seq: 3, .estop(cause: .hostEstop)), at: 4_000)
        let lines = history.dump().split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 3, "the ring keeps two sent frames: the DOT is gone")
        XCTAssertEqual(lines[0], "2 µs → seq 2 HOLD epoch 2")
        XCTAssertTrue(lines[1].hasPrefix("3 µs ← seq 9 STATUS \(DeviceState.estop) \(FaultCode.hostEstop) "), lines[1])
        XCTAssertTrue(lines[1].contains("epoch 2"), lines[1])
        XCTAssertTrue(lines[2].hasPrefix("4 µs → seq 3 ESTOP "), lines[2])
        XCTAssertEqual(FrameHistory.summary(of: .dot(DotCommand(dotID: 7, epoch: 2, xMicrometres: -1_500, yMicrometres: 2_000,
                                                                 depthMicrometres: 800, dwellMicroseconds: 30_000))),
                       "DOT id 7 epoch 2 x -1500 y 2000 µm depth 800 µm dwell 30000 µs")
    }

    // MARK: - Handshake (§6.7)

    func testHandshakeFlushesThenHelloPaceSpacingAndEndsWithAStatus() throws {
        var host = VirtualHost {
            $0.minimumDotIntervalMilliseconds = 84
            $0.minimumSpacingMicrometres = 600
        }
        host.command { $0.connect(nonce: VirtualHost.nonce, now: $1) }
        XCTAssertEqual(host.writtenBytes, [0] + hex("02 01 04 01 04 64 09 01 ee ff c0 8a 25 9f 04 00"),
                       "0x00, then the golden HELLO")

        // The golden HELLO_REPLY (capabilities 127: pace and spacing) → PACE.
        let before = host.writtenBytes.count
        host.deliver(hex("06 81 01 01 02 7f 01 01 10 78 56 34 12 73 6d 70 2d 73 69 6d 20 31 2e 30 01 01 01 01 03 20 64 02 c8 05 dc 05 20 4e 01 04 20 a1 07 04 f0 49 02 04 f0 49 02 03 50 c3 01 03 98 3a 01 03 98 3a 01 05 01 ee ff c0 01 01 01 01 01 01 01 05 27 f5 90 a4 00"))
        XCTAssertEqual(Array(host.writtenBytes[before...]), hex("02 05 02 54 05 d5 86 58 60 00"), "the golden PACE 84")

        // A STATUS with a shorter pace does not confirm it; PACE is repeated at the interval.
        XCTAssertTrue(host.device(.status(.test(.disarmed, pace: 50))).isEmpty)
        XCTAssertEqual(VirtualHost.types(host.advance(by: 100 * ms)), [.pace])
        XCTAssertEqual(VirtualHost.types(host.device(.status(.test(.disarmed, pace: 84)))), [.spacing])
        XCTAssertEqual(host.written.last.map { Array($0.encoded()) }, hex("02 06 03 58 02 01 05 0f 34 ba c5 00"))

        // A smaller spacing does not confirm; the golden SPACING_REPLY (600) does → STATUS_REQUEST.
        XCTAssertTrue(host.device(.spacingReply(minimumSpacingMicrometres: 500, ringSize: 64)).isEmpty)
        let spacingDone = host.deliver(hex("05 87 08 58 02 01 06 40 de f2 bb b0 00"))
        XCTAssertEqual(spacingDone.map { $0.encoded() }, [hex("02 02 05 3c 47 24 d6 00")], "the golden STATUS_REQUEST")
        XCTAssertNil(host.handshake, "the handshake ends with a STATUS only")

        host.device(.status(.test(.held, fault: .leaseExpired, epoch: 3)))
        XCTAssertEqual(host.handshake, .success(.test()))
        XCTAssertEqual(host.machine.deviceStatus?.state, .held, "the owner sees the device's state first")
        XCTAssertEqual(host.events.last, .deviceStatus(.test(.held, fault: .leaseExpired, epoch: 3)))
    }

    func testNoPaceOrSpacingToADeviceWithoutTheCapability() {
        var host = VirtualHost {
            $0.minimumDotIntervalMilliseconds = 84
            $0.minimumSpacingMicrometres = 600
        }
        host.command { $0.connect(nonce: VirtualHost.nonce, now: $1) }
        let next = host.device(.helloReply(.test { $0.capabilities = [.deduplication, .epochFence, .lease] }))
        XCTAssertEqual(VirtualHost.types(next), [.statusRequest])
    }

    func testAReplyWithAnotherNonceIsIgnored() {
        var host = VirtualHost()
        host.command { $0.connect(nonce: VirtualHost.nonce, now: $1) }
        XCTAssertTrue(host.device(.helloReply(.test { $0.hostNonce &+= 1 })).isEmpty)
        XCTAssertNil(host.handshake)
        XCTAssertNil(host.machine.hello)
    }

    /// Each repeated HELLO has a nonce of its own and only the reply to the latest counts: the
    /// device's frames before that reply may come from before the latest HELLO reached it (which
    /// then restarts its session and resets its epoch). Found by make fuzz (link-machine-fuzz,
    /// the seed Fuzz/corpus-link/late-hello-reply): a `held` from between the two HELLOs fenced
    /// dots 1-5 as never run, and the device, restarted by the second HELLO, ran them.
    func testOnlyTheReplyToTheLatestHelloEndsTheHandshake() {
        var host = VirtualHost()
        host.command { $0.connect(nonce: VirtualHost.nonce, now: $1) }
        host.advance(by: 100 * ms)
        let nonces = host.written.compactMap { if case .hello(let hello) = $0.message { hello.hostNonce } else { nil } }
        XCTAssertEqual(nonces.count, 2)
        XCTAssertEqual(nonces.first, VirtualHost.nonce, "the first HELLO carries the owner's nonce (the golden frame)")
        XCTAssertNotEqual(nonces[0], nonces[1], "the repetition has its own")

        XCTAssertTrue(host.device(.helloReply(.test())).isEmpty, "the reply to the first HELLO: ignored")
        XCTAssertNil(host.machine.hello)
        host.device(.status(.test(.held, fault: .leaseExpired, epoch: 1)))  // from before the second HELLO
        XCTAssertEqual(VirtualHost.types(host.device(.helloReply(.test { $0.hostNonce = nonces[1] }))), [.statusRequest])
        XCTAssertNil(host.machine.deviceStatus, "what came before the reply is not the new session's")
        host.device(.status(.test(.held, fault: .leaseExpired)))
        XCTAssertEqual(host.handshake, .success(.test { $0.hostNonce = nonces[1] }))
        XCTAssertEqual(host.machine.deviceStatus, .test(.held, fault: .leaseExpired))
    }

    func testHandshakeGivesUpAfterTwentyHellos() {
        var host = VirtualHost()
        let start = host.now
        host.command { $0.connect(nonce: VirtualHost.nonce, now: $1) }
        host.advance(by: 10_000 * ms)
        XCTAssertEqual(host.written.filter { $0.message.type == .hello }.count, 20)
        guard case .failure(.handshakeFailed(let why)) = host.handshake else { return XCTFail("\(String(describing: host.handshake))") }
        XCTAssertTrue(why.contains("after 20 attempts"), why)
        XCTAssertEqual(host.writeTimes.last, start + 1900 * ms, "one HELLO every 100 ms")
        XCTAssertTrue(host.portClosed)
        XCTAssertNil(host.machine.nextDeadline)
    }

    /// Every HELLO_REPLY field outside its range (firmware-protocol.md, HELLO_REPLY) ends the
    /// handshake, closes the port and arms nothing.
    func testEachOutOfRangeHelloReplyFieldFailsTheHandshake() {
        let cases: [(String, (inout HelloReply) -> Void)] = [
            ("queue_capacity 0", { $0.queueCapacity = 0 }),
            ("queue_capacity 65", { $0.queueCapacity = 65 }),
            ("lease_ms 19", { $0.leaseMilliseconds = 19 }),
            ("lease_ms 101", { $0.leaseMilliseconds = 101 }),
            ("boot_id 0", { $0.bootID = 0 }),
            ("depth_min_um 1600 > depth_max_um 1500", { $0.limits.depthMinMicrometres = 1600 }),
            ("dwell_min_us 600000 > dwell_max_us 500000", { $0.limits.dwellMinMicroseconds = 600_000 }),
            ("travel_speed_um_s 0", { $0.limits.travelSpeedMicrometresPerSecond = 0 }),
            ("travel 2147483648 × 150000", { $0.limits.travelXMicrometres = UInt32(Int32.max) + 1 }),
            ("travel 150000 × 2147483648", { $0.limits.travelYMicrometres = UInt32(Int32.max) + 1 }),
            ("speaks protocol 2.0", { $0.versionMajor = 2; $0.versionMinor = 0 }),
            ("lacks de-duplication", { $0.capabilities = [.deduplication, .epochFence] }),
        ]
        for (expected, change) in cases {
            var host = VirtualHost()
            host.command { $0.connect(nonce: VirtualHost.nonce, now: $1) }
            let after = host.device(.helloReply(.test(change)))
            XCTAssertTrue(after.isEmpty, expected)
            guard case .failure(.handshakeFailed(let why)) = host.handshake else {
                XCTFail("\(expected): \(String(describing: host.handshake))")
                continue
            }
            XCTAssertTrue(why.contains(expected), "\(expected): \(why)")
            XCTAssertTrue(host.portClosed, expected)
            XCTAssertNil(host.machine.hello, expected)
            host.command { $0.arm(now: $1) }
            XCTAssertFalse(host.written.contains { $0.message.type == .arm }, expected)
        }
        // The edges are in range.
        for change in [{ $0.queueCapacity = 1 }, { $0.queueCapacity = 64 }, { $0.leaseMilliseconds = 20 }] as [(inout HelloReply) -> Void] {
            var host = VirtualHost()
            host.handshake(reply: .test(change))
        }
    }

    // MARK: - Go-back-N, the window, the RTO (§6.1, §6.3)

    func testGoBackNResendsFromTheNAKsExpectedSeqAtMostOncePerSmoothedRTT() {
        var host = VirtualHost()
        host.armed(dots: 5)
        XCTAssertEqual(VirtualHost.dots(host.written).map(\.seq), [1, 2, 3, 4, 5], "five DOTs in one write")
        host.advance(by: 1 * ms)
        host.device(.ack(Ack(ackSeq: 1, freeSlots: 31, epoch: 0)))
        // DOT 2 was lost: the device NAKs out_of_order expecting 2.
        let resent = host.device(.nak(Nak(expectedSeq: 2, reason: .outOfOrder, freeSlots: 31)))
        XCTAssertEqual(VirtualHost.dots(resent).map(\.seq), [2, 3, 4, 5])
        XCTAssertEqual(VirtualHost.dots(resent).map(\.id), [2, 3, 4, 5])
        XCTAssertEqual(host.machine.metrics.retransmissions, 4)
        host.advance(by: ms / 2)
        XCTAssertTrue(host.device(.nak(Nak(expectedSeq: 2, reason: .outOfOrder, freeSlots: 31))).isEmpty,
                      "fast retransmit at most once per smoothed RTT (2 ms at least)")
        host.advance(by: 2 * ms)
        XCTAssertEqual(VirtualHost.dots(host.device(.nak(Nak(expectedSeq: 2, reason: .outOfOrder, freeSlots: 31)))).map(\.seq),
                       [2, 3, 4, 5])
        host.device(.ack(Ack(ackSeq: 5, freeSlots: 27, epoch: 0)))
        XCTAssertTrue(host.device(.nak(Nak(expectedSeq: 6, reason: .outOfOrder, freeSlots: 27))).filter { $0.message.type == .dot }.isEmpty,
                      "nothing unacknowledged from 6")
    }

    func testTheOldestUnacknowledgedDOTTimesOutAndEverythingAfterItIsResent() {
        var host = VirtualHost()
        host.armed(dots: 3)
        let sentAt = host.now
        XCTAssertEqual(host.machine.retransmissionTimeoutNanoseconds, 50 * ms, "initial RTO")
        host.device(.ack(Ack(ackSeq: 1, freeSlots: 31, epoch: 0)))
        let resent = host.advance(to: sentAt + 50 * ms)
        XCTAssertEqual(VirtualHost.dots(resent).map(\.seq), [2, 3], "go-back-N from the oldest unacknowledged")
        XCTAssertEqual(host.machine.nextDeadline.map { $0 <= host.now + 25 * ms }, true)
    }

    /// The 8-bit sequence numbers wrap; the host widens each one to the DOT it stands for.
    func testSequenceNumbersWrapAndAreWidenedToTheRightDot() {
        var host = VirtualHost()
        host.armed(dots: 600)
        var doneCount: UInt32 = 0
        var rounds = 0
        while !host.source.isEmpty || !host.machine.inFlight.isEmpty {
            rounds += 1
            guard rounds < 100 else { return XCTFail("stuck with \(host.machine.inFlight.count) in flight") }
            let inFlight = host.machine.inFlight
            XCTAssertLessThanOrEqual(inFlight.count, 32, "never more than the device's queue")
            let lastSeq = VirtualHost.dots(host.written).last!.seq
            host.advance(by: ms)
            host.device(.ack(Ack(ackSeq: lastSeq, freeSlots: 0, epoch: 0)))
            // Every DOT_DONE but the last of the round is lost: the last confirms them all.
            doneCount += UInt32(inFlight.count)
            host.device(.dotDone(DotDone(dotSeq: lastSeq, dotID: inFlight.last!.dotID, doneCount: doneCount,
                                         deviceTimeMicroseconds: UInt64(doneCount) * 1000)))
            host.device(.status(.test(.ready, ackSeq: lastSeq, freeSlots: 32, lastDoneSeq: lastSeq,
                                       lastDoneDotID: inFlight.last!.dotID, doneCount: doneCount)))
        }
        XCTAssertEqual(host.doneIDs, (1...600).map(UInt32.init), "each dot done once, in order")
        let sent = VirtualHost.dots(host.written)
        XCTAssertEqual(sent.map(\.id), (1...600).map(UInt32.init), "no retransmission needed")
        XCTAssertEqual(sent.map(\.seq), (1...600).map { UInt8(truncatingIfNeeded: $0) })
        XCTAssertEqual(host.machine.metrics.retransmissions, 0)
    }

    /// The window opens as far as the device's credit (ACK `free_slots` minus what was sent
    /// after it) and its queue capacity allow.
    func testTheWindowFollowsTheCreditAndTheQueueCapacity() {
        var host = VirtualHost()
        host.handshake(reply: .test { $0.queueCapacity = 4 })
        host.source = (1...20).map(VirtualHost.dot)
        host.command { $0.arm(now: $1) }
        host.command { machine, _ in machine.startStreaming() }
        XCTAssertEqual(VirtualHost.dots(host.device(.status(.test(.ready, freeSlots: 2)))).map(\.id), [1, 2], "credit 2")
        XCTAssertEqual(VirtualHost.dots(host.device(.ack(Ack(ackSeq: 1, freeSlots: 3, epoch: 0)))).map(\.id), [3, 4],
                       "3 free after seq 1, one (seq 2) already sent after it")
        XCTAssertTrue(host.device(.ack(Ack(ackSeq: 4, freeSlots: 10, epoch: 0))).isEmpty, "the window is the queue capacity, 4")
        XCTAssertEqual(VirtualHost.dots(host.device(.dotDone(DotDone(dotSeq: 2, dotID: 2, doneCount: 2, deviceTimeMicroseconds: 9)))).map(\.id),
                       [5, 6], "two done (one by a later report): the window opens by two")
        XCTAssertEqual(host.doneIDs, [1, 2])
        XCTAssertEqual(host.events.first { if case .dotDone = $0 { true } else { false } }, .dotDone(dotID: 1, deviceTimeMicroseconds: 0, deviceDoneCount: 1),
                       "an earlier dot confirmed by a later DOT_DONE has no time")
        // queue_full: no credit until the next ACK.
        host.device(.nak(Nak(expectedSeq: 7, reason: .queueFull, freeSlots: 0)))
        XCTAssertTrue(host.device(.dotDone(DotDone(dotSeq: 3, dotID: 3, doneCount: 3, deviceTimeMicroseconds: 10))).isEmpty)
    }

    /// A DOT_DONE frees its dot's slot (§6.1): the next DOT goes at once, not after the next
    /// report. Only the dot it names counts: earlier ones whose DOT_DONE was lost may have been
    /// done before the report, which counted their slots free already.
    func testADotDoneFreesOneSlotAtOnceAndOnlyForTheDotItNames() {
        var host = VirtualHost()
        host.armed(reply: .test { $0.queueCapacity = 4 }, dots: 20)
        XCTAssertEqual(VirtualHost.dots(host.written).map(\.id), [1, 2, 3, 4], "the queue's capacity")
        XCTAssertTrue(host.device(.ack(Ack(ackSeq: 4, freeSlots: 0, epoch: 0))).isEmpty, "the queue is full")
        XCTAssertEqual(VirtualHost.dots(host.device(.dotDone(DotDone(dotSeq: 1, dotID: 1, doneCount: 1, deviceTimeMicroseconds: 1)))).map(\.id),
                       [5], "dot 1's slot is free: dot 5 goes with its DOT_DONE")
        XCTAssertTrue(host.device(.ack(Ack(ackSeq: 5, freeSlots: 0, epoch: 0))).isEmpty)
        // Dot 2's DOT_DONE is lost; dot 3's confirms both but frees one slot only.
        XCTAssertEqual(VirtualHost.dots(host.device(.dotDone(DotDone(dotSeq: 3, dotID: 3, doneCount: 3, deviceTimeMicroseconds: 3)))).map(\.id),
                       [6], "one slot, though two dots were confirmed")
        XCTAssertEqual(host.doneIDs, [1, 2, 3])
        // The next report says what is free: the window (capacity 4, dots 4–6 in flight) takes one.
        XCTAssertEqual(VirtualHost.dots(host.device(.status(.test(.running, ackSeq: 6, freeSlots: 2, lastDoneSeq: 3,
                                                                  lastDoneDotID: 3, doneCount: 3)))).map(\.id), [7])
        XCTAssertLessThanOrEqual(host.machine.inFlight.count, 4, "never more than the device's queue")
        XCTAssertEqual(host.machine.metrics.retransmissions, 0)
    }

    // MARK: - RTO, RFC 6298

    func testRTOFollowsRFC6298WithKarnsRuleBackoffAndClamps() {
        var host = VirtualHost()
        host.armed()
        func sample(_ id: Int, after delay: UInt64) {
            host.source = [VirtualHost.dot(id)]
            host.pull()
            host.advance(by: delay)
            host.device(.ack(Ack(ackSeq: UInt8(id), freeSlots: 31, epoch: 0)))
        }
        // First sample R = 10 ms: SRTT = R, RTTVAR = R/2, RTO = SRTT + 4·RTTVAR = 30 ms.
        sample(1, after: 10 * ms)
        XCTAssertEqual(host.machine.metrics.smoothedRTTMicroseconds, 10_000)
        XCTAssertEqual(host.machine.retransmissionTimeoutNanoseconds, 30 * ms)
        // Second sample R' = 2 ms: RTTVAR = ¾·5 + ¼·|10 − 2| = 5.75, SRTT = ⅞·10 + ⅛·2 = 9 → 32 ms.
        sample(2, after: 2 * ms)
        XCTAssertEqual(host.machine.metrics.smoothedRTTMicroseconds, 9_000)
        XCTAssertEqual(host.machine.retransmissionTimeoutNanoseconds, 32 * ms)

        // Timeout: the DOT is resent and the RTO doubles, up to 200 ms.
        host.source = [VirtualHost.dot(3)]
        host.pull()
        let sentAt = host.now
        var resentAt: [UInt64] = []
        var timeouts: [UInt64] = []
        while timeouts.count < 4 {
            let frames = host.advance(to: host.machine.nextDeadline!)
            if !VirtualHost.dots(frames).isEmpty {
                resentAt.append(host.now - sentAt)
                timeouts.append(host.machine.retransmissionTimeoutNanoseconds)
            }
            host.device(.status(.test(.running, ackSeq: 2, freeSlots: 30)))  // keeps the link alive, no ACK of 3
        }
        // Checked on the heartbeat's tick grid (25 ms): at the first tick once 32 ms have passed.
        XCTAssertGreaterThanOrEqual(resentAt.first ?? 0, 32 * ms)
        XCTAssertLessThan(resentAt.first ?? .max, 32 * ms + 25 * ms)
        XCTAssertEqual(timeouts.prefix(3), [64 * ms, 128 * ms, 200 * ms])
        // Karn's rule: the ACK of a resent DOT is no sample.
        host.advance(by: ms)
        host.device(.ack(Ack(ackSeq: 3, freeSlots: 31, epoch: 0)))
        XCTAssertEqual(host.machine.metrics.smoothedRTTMicroseconds, 9_000, "no sample from a retransmitted frame")
        XCTAssertEqual(host.machine.retransmissionTimeoutNanoseconds, 200 * ms, "kept backed off until a new sample")
    }

    /// Timeouts are seen on the heartbeat's tick grid, as the periodic tick always saw them: an
    /// RTO due between two ticks acts on the next one.
    func testTimeoutsAreSeenOnTheHeartbeatTickGrid() {
        var host = VirtualHost()
        host.handshake()  // the grid: every 25 ms from the HELLO_REPLY
        let origin = host.now
        host.now += 10 * ms
        host.command { $0.arm(now: $1) }  // RTO 50 ms: due at 60 ms, seen at the 75 ms tick
        host.advance(to: origin + 74 * ms)
        XCTAssertEqual(host.written.filter { $0.message == .arm }.count, 1)
        host.advance(to: origin + 75 * ms)
        XCTAssertEqual(host.written.filter { $0.message == .arm }.count, 2)
        XCTAssertEqual(host.writeTimes.last, origin + 75 * ms)
    }

    func testRTOIsClampedTo25To200Milliseconds() {
        for (sample, rto) in [(1 * ms, 25 * ms), (150 * ms, 200 * ms)] {
            var host = VirtualHost()
            host.armed(dots: 1)
            host.now += sample
            host.device(.ack(Ack(ackSeq: 1, freeSlots: 31, epoch: 0)))
            XCTAssertEqual(host.machine.retransmissionTimeoutNanoseconds, rto, "sample \(sample)")
        }
    }

    // MARK: - Fences and epochs (§6.4)

    func testHoldFencesWhatIsQueuedAndTheDotsGoAgainInTheNewEpoch() {
        var host = VirtualHost()
        host.armed(dots: 4)
        host.device(.ack(Ack(ackSeq: 4, freeSlots: 28, epoch: 0)))
        host.device(.dotDone(DotDone(dotSeq: 1, dotID: 1, doneCount: 1, deviceTimeMicroseconds: 1)))
        XCTAssertEqual(host.command { $0.hold(now: $1) }.map(\.message), [.hold(epoch: 1)])
        host.source = [VirtualHost.dot(5)]
        XCTAssertEqual(host.machine.dotCredit, 0, "no DOT while the fence is pending")
        // The dot in the skin finishes while the device is still running: not a fence.
        host.device(.status(.test(.running, epoch: 1, ackSeq: 4, needleRetracted: false)))
        host.device(.dotDone(DotDone(dotSeq: 2, dotID: 2, doneCount: 2, deviceTimeMicroseconds: 2)))
        XCTAssertEqual(host.machine.inFlight.map(\.dotID), [3, 4])
        host.device(.status(.test(.held, fault: .hostHold, epoch: 1, ackSeq: 4, lastDoneSeq: 2, lastDoneDotID: 2, doneCount: 2)))
        XCTAssertTrue(host.events.contains(.dotsReturned([VirtualHost.dot(3), VirtualHost.dot(4)])), "\(host.events)")
        XCTAssertTrue(host.machine.inFlight.isEmpty)
        XCTAssertFalse(host.machine.decisionPending)

        // RESUME(1, next seq 5); the owner puts the returned dots back first; they go in epoch 1.
        XCTAssertEqual(host.command { $0.resume(now: $1) }.map(\.message), [.resume(epoch: 1, nextSeq: 5)])
        host.source = [VirtualHost.dot(3), VirtualHost.dot(4), VirtualHost.dot(5)]
        let resent = VirtualHost.dots(host.device(.status(.test(.ready, epoch: 1, ackSeq: 4, lastDoneSeq: 2, lastDoneDotID: 2, doneCount: 2))))
        XCTAssertEqual(resent.map(\.id), [3, 4, 5])
        XCTAssertEqual(resent.map(\.seq), [5, 6, 7], "sequence numbers are never reused")
        XCTAssertEqual(resent.map(\.epoch), [1, 1, 1])

        // A late STATUS from the old epoch fences nothing.
        host.device(.status(.test(.held, fault: .hostHold, epoch: 0, ackSeq: 4, lastDoneSeq: 2, lastDoneDotID: 2, doneCount: 2)))
        XCTAssertEqual(host.machine.inFlight.map(\.dotID), [3, 4, 5], "a stale epoch's STATUS is no fence")
    }

    func testAbortAndALatchNameTheDotCutShortAndReturnTheRest() {
        var host = VirtualHost()
        host.armed(dots: 3)
        XCTAssertEqual(host.command { $0.abort(now: $1) }.map(\.message), [.abort(epoch: 1)])
        host.device(.status(.test(.held, fault: .hostAbort, epoch: 1, ackSeq: 3, currentDotID: 1)))
        XCTAssertEqual(host.fenceEvents, [.dotInterrupted(dotID: 1), .dotsReturned([VirtualHost.dot(2), VirtualHost.dot(3)])])

        var latched = VirtualHost()
        latched.armed(dots: 3)
        latched.device(.status(.test(.estop, fault: .estopButton, ackSeq: 3, currentDotID: 2)))
        XCTAssertEqual(latched.fenceEvents, [.dotInterrupted(dotID: 2), .dotsReturned([VirtualHost.dot(1), VirtualHost.dot(3)])])
        XCTAssertTrue(latched.machine.latched)
        latched.source = [VirtualHost.dot(4)]
        XCTAssertEqual(latched.machine.dotCredit, 0)
        XCTAssertTrue(latched.command { $0.arm(now: $1) }.isEmpty, "a latched device is never armed by the link")
    }

    func testADeviceFoundDisarmedAfterRunningLeavesTheDotsInFlightInDoubt() {
        var host = VirtualHost()
        host.armed(dots: 2)
        host.device(.status(.test(.disarmed)))
        XCTAssertTrue(host.events.contains(.dotsInDoubt([VirtualHost.dot(1), VirtualHost.dot(2)])))
    }

    func testEstopGoesTwiceAndIsRepeatedUntilTheDeviceLatches() {
        var host = VirtualHost()
        host.armed(dots: 2)
        let frames = host.command { $0.estop(cause: .hostEstop, now: $1) }
        XCTAssertEqual(frames.map(\.message), [.estop(cause: .hostEstop), .estop(cause: .hostEstop)])
        XCTAssertEqual(VirtualHost.types(host.advance(by: 50 * ms)).filter { $0 == .estop }, [.estop], "again at the RTO")
        host.device(.status(.test(.estop, fault: .hostEstop, ackSeq: 2)))
        XCTAssertTrue(host.events.contains(.dotsReturned([VirtualHost.dot(1), VirtualHost.dot(2)])))
        XCTAssertTrue(VirtualHost.types(host.advance(by: 200 * ms)).allSatisfy { $0 == .statusRequest })
    }

    // MARK: - Lease heartbeat, link loss, unplug (§6.5, §6.3)

    func testHeartbeatWellInsideTheLeaseWhenNothingElseIsSent() {
        for lease in [100, 40, 250] as [UInt16] {
            var host = VirtualHost { $0.requestedLease = .milliseconds(Int(lease)) }
            host.handshake(reply: .test { $0.leaseMilliseconds = lease })
            let start = host.writeTimes.count
            let end = host.now + 2_000 * ms
            while host.now < end {
                let frames = host.advance(to: host.machine.nextDeadline!)
                XCTAssertEqual(VirtualHost.types(frames), [.statusRequest], "lease \(lease)")
                host.device(.status(.test(.disarmed)))
            }
            let times = host.writeTimes[(start - 1)...]
            let gaps = zip(times.dropFirst(), times).map { $0 - $1 }
            XCTAssertEqual(gaps.max(), max(UInt64(lease) * ms / 4, 5 * ms), "lease \(lease): a quarter of it")
            XCTAssertLessThan(gaps.max()!, UInt64(lease) * ms / 2)
            XCTAssertNil(host.linkLoss)
        }
    }

    func testSilenceAfterAnUnansweredFrameLosesTheLink() {
        var host = VirtualHost()
        host.armed(dots: 2)
        let lastHeard = host.now
        host.advance(by: 2_000 * ms)
        guard case .silent(let silence) = host.linkLoss else { return XCTFail("\(host.events)") }
        XCTAssertTrue((500...525).contains(silence), "over 500 ms, seen on the next 25 ms tick: \(silence)")
        XCTAssertEqual(host.now - lastHeard, 2_000 * ms)
        XCTAssertTrue(host.events.contains(.dotsInDoubt([VirtualHost.dot(1), VirtualHost.dot(2)])))
        XCTAssertTrue(host.portClosed)
    }

    func testAHostStallIsNotTakenForASilentDevice() {
        var host = VirtualHost()
        host.armed(dots: 1)
        // The host's own queue blocked for a second: its next tick is far past due.
        host.now += 1_000 * ms
        host.absorb(host.machine.tick(now: host.now))
        XCTAssertNil(host.linkLoss, "counted afresh from the late tick")
        host.advance(by: 400 * ms)
        XCTAssertNil(host.linkLoss)
        host.advance(by: 200 * ms)
        XCTAssertNotNil(host.linkLoss)
    }

    func testUnplugAndWriteFailureLoseTheLinkWithTheDotsInFlightInDoubt() {
        let gone = SerialPortError.disconnected("/dev/test-applicator", nil)
        for input in [{ $0.portClosed(gone) }, { $0.writeFailed(gone) }] as [(inout LinkMachine) -> LinkOutput] {
            var host = VirtualHost()
            host.armed(dots: 3)
            host.absorb(input(&host.machine))
            XCTAssertEqual(host.events.suffix(3), [.dotsInDoubt((1...3).map(VirtualHost.dot)), .metrics(host.machine.metrics),
                                                 .linkLost(.disconnected(gone))])
            XCTAssertTrue(host.portClosed)
            XCTAssertNil(host.machine.nextDeadline)
            XCTAssertTrue(host.machine.inFlight.isEmpty)
        }
        // Closed by the host: no loss reported.
        var host = VirtualHost()
        host.armed(dots: 1)
        host.command { machine, _ in machine.close() }
        host.absorb(host.machine.portClosed(nil))
        XCTAssertNil(host.linkLoss)
    }

    // MARK: - NAK reasons (§7) and other device answers

    func testEveryNAKReason() {
        for reason in ErrorCode.allCases {
            var host = VirtualHost()
            host.armed(dots: 3)
            host.advance(by: 5 * ms)
            host.device(.ack(Ack(ackSeq: 1, freeSlots: 31, epoch: 0)))
            host.source = [VirtualHost.dot(4)]
            let answer = host.device(.nak(Nak(expectedSeq: 2, reason: reason, freeSlots: 31)))
            XCTAssertEqual(host.machine.metrics.naksReceived, 1)
            switch reason {
            case .badFrame, .outOfOrder:
                XCTAssertEqual(VirtualHost.dots(answer).map(\.seq), [2, 3, 4], "\(reason): resent from expected, then the new one")
            case .queueFull:
                XCTAssertTrue(answer.isEmpty, "\(reason): no credit until the next ACK")
                XCTAssertEqual(host.machine.dotCredit, 0)
                XCTAssertEqual(VirtualHost.dots(host.device(.ack(Ack(ackSeq: 3, freeSlots: 29, epoch: 0)))).map(\.seq), [4])
            default:
                // not_armed, held, stale_epoch and the REFUSED codes: the STATUS that follows
                // the device's state change settles what is in flight.
                XCTAssertEqual(VirtualHost.dots(answer).map(\.seq), [4], "\(reason): nothing resent")
                XCTAssertEqual(host.machine.inFlight.count, 4, "\(reason)")
            }
        }
    }

    func testARefusedDotLatchesTheLinkAndTheDeviceIsNotCleared() {
        var host = VirtualHost()
        host.armed(dots: 2)
        let refused = Refused(seq: 2, dotID: 2, code: .depthOutOfRange, value: 2100, state: .fault, fault: .dotOutOfLimits)
        host.device(.refused(refused))
        XCTAssertEqual(host.events.last, .refused(refused))
        XCTAssertTrue(host.machine.latched)
        host.device(.status(.test(.fault, fault: .dotOutOfLimits, ackSeq: 1, currentDotID: 1)))
        XCTAssertTrue(host.command { $0.disarmAndClose(now: $1) }.isEmpty, "no CLEAR to a latched device")
        XCTAssertEqual(host.disarmed, false)
        XCTAssertTrue(host.portClosed)
    }

    func testADotDoneForAnotherDotStopsTheDeviceAndLosesTheLink() {
        var host = VirtualHost()
        host.armed(dots: 2)
        let frames = host.device(.dotDone(DotDone(dotSeq: 1, dotID: 99, doneCount: 1, deviceTimeMicroseconds: 1)))
        XCTAssertEqual(frames.map(\.message), [.estop(cause: .hostEstop), .estop(cause: .hostEstop)])
        guard case .protocolViolation = host.linkLoss else { return XCTFail("\(host.events)") }
        XCTAssertTrue(host.events.contains(.dotsInDoubt([VirtualHost.dot(1), VirtualHost.dot(2)])))

        var echo = VirtualHost()
        echo.handshake()
        echo.device(.hello(Hello(requestedLeaseMilliseconds: 100, hostNonce: 1)))
        guard case .protocolViolation = echo.linkLoss else { return XCTFail("\(echo.events)") }
    }

    // MARK: - One decision, one command (§6.7.6)

    func testArmIsSentFourTimesAtMostThenNotTaken() {
        var host = VirtualHost()
        host.handshake()
        host.command { $0.arm(now: $1) }
        host.advance(by: 400 * ms)
        XCTAssertEqual(host.written.filter { $0.message == .arm }.count, LinkMachine.decisionAttempts)
        XCTAssertEqual(host.events.last, .notTaken(.arm, .test(.disarmed)))
        XCTAssertFalse(host.machine.decisionPending)
    }

    func testArmAnsweredByAHoldIsNotTakenAtOnce() {
        var host = VirtualHost()
        host.handshake()
        host.command { $0.arm(now: $1) }
        XCTAssertTrue(host.machine.decisionPending)
        let held = Status.test(.held, fault: .contactLost, epoch: 1)
        host.device(.status(held))
        XCTAssertEqual(host.events.suffix(2), [.notTaken(.arm, held), .deviceStatus(held)])
        XCTAssertEqual(host.written.filter { $0.message == .arm }.count, 1)
        XCTAssertFalse(host.machine.streaming)
    }

    func testArmingADeviceFoundHeldResumesItAsTheSameDecision() {
        var host = VirtualHost()
        host.handshake(state: .disarmed)
        host.device(.status(.test(.held, fault: .leaseExpired, epoch: 7)))
        XCTAssertEqual(host.command { $0.arm(now: $1) }.map(\.message), [.resume(epoch: 7, nextSeq: 1)])
        host.advance(by: 400 * ms)
        XCTAssertEqual(host.written.filter { $0.message == .resume(epoch: 7, nextSeq: 1) }.count, 4)
        XCTAssertEqual(host.events.last, .notTaken(.arm, .test(.held, fault: .leaseExpired, epoch: 7)))
    }

    func testResumeIsSentFourTimesAtMostThenNotTaken() {
        var host = VirtualHost()
        host.armed(dots: 1)
        host.command { $0.hold(now: $1) }
        host.device(.status(.test(.held, fault: .hostHold, epoch: 1, ackSeq: 1)))
        host.command { $0.resume(now: $1) }
        host.advance(by: 400 * ms)
        XCTAssertEqual(host.written.filter { $0.message == .resume(epoch: 1, nextSeq: 2) }.count, 4)
        XCTAssertEqual(host.events.last, .notTaken(.resume, .test(.held, fault: .hostHold, epoch: 1, ackSeq: 1)))
        XCTAssertFalse(host.machine.streaming, "never resumed by the link on its own")
    }

    /// RESUME tells the device which seq comes next and it skips to it: given while dots are still
    /// in flight (no hold under way), it would skip any the device never took, and the next
    /// DOT_DONE would confirm them as done. So the hold goes first and the resume waits for it.
    /// Found by make fuzz (link-machine-fuzz, the seed Fuzz/corpus-link/resume-skips-in-flight).
    func testAResumeWithDotsInFlightFencesThemFirst() {
        var host = VirtualHost()
        host.armed(dots: 3)
        XCTAssertEqual(VirtualHost.dots(host.written).map(\.id), [1, 2, 3])
        let frames = host.command { $0.resume(now: $1) }
        XCTAssertEqual(frames.map(\.message), [.hold(epoch: 1)], "no RESUME over dots in flight")
        XCTAssertTrue(host.machine.decisionPending)
        let after = host.device(.status(.test(.held, fault: .hostHold, epoch: 1, ackSeq: 0)))
        XCTAssertTrue(host.events.contains(.dotsReturned([VirtualHost.dot(1), VirtualHost.dot(2), VirtualHost.dot(3)])))
        XCTAssertEqual(after.map(\.message), [.resume(epoch: 1, nextSeq: 4)], "then the resume, past settled dots only")
        XCTAssertFalse(host.events.contains { if case .dotDone = $0 { true } else { false } })
    }

    /// A `held` in the epoch the dots went out in was sent before the device took them (every hold
    /// moves the epoch on, §6.4): here the device's answer to the handshake, arriving again late.
    /// Taken as a fence it returned dots 1–3 as never run while the device ran them, and the
    /// session would have sent them again. Found by make fuzz (link-machine-fuzz, the seed
    /// Fuzz/corpus-link/stale-held-status-fence).
    func testAHeldStatusInTheDotsOwnEpochIsNoFence() {
        var host = VirtualHost()
        host.handshake(state: .held)
        host.source = (1...3).map(VirtualHost.dot)
        XCTAssertEqual(host.command { $0.arm(now: $1) }.map(\.message), [.resume(epoch: 0, nextSeq: 1)])
        host.command { machine, _ in machine.startStreaming() }
        XCTAssertEqual(VirtualHost.dots(host.device(.status(.test(.ready)))).map(\.id), [1, 2, 3])

        host.device(.status(.test(.held)))  // the handshake's STATUS, repeated on the line
        XCTAssertEqual(host.machine.inFlight.map(\.dotID), [1, 2, 3], "a held STATUS from before the dots is no fence")
        XCTAssertFalse(host.events.contains { if case .dotsReturned = $0 { true } else { false } })
        host.device(.dotDone(DotDone(dotSeq: 1, dotID: 1, doneCount: 1, deviceTimeMicroseconds: 1)))
        XCTAssertEqual(host.doneIDs, [1])

        // The device's own hold moves the epoch on: that one fences what is left.
        host.device(.status(.test(.held, fault: .leaseExpired, epoch: 1, ackSeq: 3, lastDoneSeq: 1, lastDoneDotID: 1, doneCount: 1)))
        XCTAssertTrue(host.events.contains(.dotsReturned([VirtualHost.dot(2), VirtualHost.dot(3)])), "\(host.events)")
        XCTAssertTrue(host.machine.inFlight.isEmpty)
    }

    /// A STATUS the device sent before this HELLO's reply (to an earlier HELLO, or before the
    /// link was lost) does not describe the device in the new host session: no DOT goes out on it.
    /// Found by make fuzz with the test above: a stale `ready` let DOTs out to a held device.
    func testAStatusFromBeforeTheHelloReplyLetsNoDotOut() {
        var host = VirtualHost()
        host.command { $0.connect(nonce: VirtualHost.nonce, now: $1) }
        host.device(.status(.test(.ready)))  // from before the reply
        host.device(.helloReply(.test()))
        XCTAssertNil(host.machine.deviceStatus, "forgotten with the new host session")
        host.source = (1...3).map(VirtualHost.dot)
        host.command { $0.arm(now: $1) }
        host.command { machine, _ in machine.startStreaming() }
        XCTAssertEqual(host.machine.dotCredit, 0, "no DOT before the handshake's STATUS")
        XCTAssertTrue(VirtualHost.dots(host.written).isEmpty)

        host.device(.status(.test(.held, fault: .leaseExpired)))
        if case .success = host.handshake {} else { XCTFail("handshake: \(String(describing: host.handshake))") }
        XCTAssertTrue(VirtualHost.dots(host.written).isEmpty, "the device is held: still no DOT")
        XCTAssertEqual(host.machine.dotCredit, 0)
    }

    func testAResumeGivenBeforeTheHoldIsConfirmedGoesOutWithTheNewEpoch() {
        var host = VirtualHost()
        host.armed(dots: 2)
        host.command { $0.hold(now: $1) }
        XCTAssertTrue(host.command { $0.resume(now: $1) }.isEmpty, "waits for the hold's STATUS")
        XCTAssertTrue(host.machine.decisionPending)
        let frames = host.device(.status(.test(.held, fault: .hostHold, epoch: 1, ackSeq: 2)))
        XCTAssertEqual(frames.map(\.message), [.resume(epoch: 1, nextSeq: 3)])
        XCTAssertTrue(host.events.contains(.dotsReturned([VirtualHost.dot(1), VirtualHost.dot(2)])))
        host.source = [VirtualHost.dot(1), VirtualHost.dot(2)]
        XCTAssertEqual(VirtualHost.dots(host.device(.status(.test(.ready, epoch: 1, ackSeq: 2)))).map(\.epoch), [1, 1])
    }

    /// The owner sees the hold's STATUS before the queued RESUME goes out: ending the session
    /// on it leaves the device held and then cleared, never resumed in between.
    func testAQueuedResumeWaitsForTheOwnersReactionToTheHoldsStatus() {
        var host = VirtualHost()
        host.armed(dots: 2)
        host.command { $0.hold(now: $1) }
        host.command { $0.resume(now: $1) }
        var decoder = FrameDecoder()
        let held = Frame(seq: 9, .status(.test(.held, fault: .hostHold, epoch: 1, ackSeq: 2))).encoded()
        let before = host.written.count
        for event in decoder.feed(held) { host.absorb(host.machine.receive(event, now: host.now)) }
        XCTAssertEqual(host.written.count, before, "nothing before the owner has seen the STATUS")
        host.command { $0.disarmAndClose(now: $1) }  // the owner ends the session on it
        XCTAssertEqual(host.written[before...].map(\.message), [.clear])
    }

    func testTheSessionEndsWithClearAndTheAnswerComesWithTheClose() {
        var host = VirtualHost()
        host.armed()
        XCTAssertEqual(host.command { $0.disarmAndClose(now: $1) }.map(\.message), [.clear])
        XCTAssertNil(host.disarmed)
        host.device(.status(.test(.disarmed)))
        XCTAssertEqual(host.disarmed, true)
        XCTAssertTrue(host.portClosed)

        var ignored = VirtualHost()
        ignored.armed()
        ignored.command { $0.disarmAndClose(now: $1) }
        ignored.advance(by: 400 * ms)
        XCTAssertEqual(ignored.written.filter { $0.message == .clear }.count, 4)
        XCTAssertEqual(ignored.disarmed, false)
        XCTAssertTrue(ignored.portClosed)

        var inFlight = VirtualHost()
        inFlight.armed(dots: 1)
        inFlight.device(.status(.test(.running, ackSeq: 1, needleRetracted: false)))
        XCTAssertTrue(inFlight.command { $0.disarmAndClose(now: $1) }.isEmpty, "not while a dot is in the skin")
        XCTAssertEqual(inFlight.disarmed, false)
    }
}
