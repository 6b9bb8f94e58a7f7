import XCTest
import FirmwareProtocol
@testable import DeviceSim

final class FirmwareTests: XCTestCase {
    // MARK: - Handshake

    func testHandshakeRepliesWithLimitsNonceAndClampedLease() {
        var bench = Bench()
        let reply = bench.hello(lease: 100, nonce: 0xDEAD_BEEF).helloReplies
        XCTAssertEqual(reply.count, 1)
        guard let reply = reply.first else { return }
        XCTAssertEqual(reply.versionMajor, 1)
        XCTAssertEqual(reply.versionMinor, ProtocolVersion.minor)
        XCTAssertEqual(reply.capabilities, [.deduplication, .epochFence, .lease, .contactSensor, .depthSensor, .pace, .spacing])
        XCTAssertEqual(reply.capabilities.rawValue, 127)
        XCTAssertEqual(reply.firmwareID, "smp-sim 1.0")
        XCTAssertEqual(reply.queueCapacity, 32)
        XCTAssertEqual(reply.leaseMilliseconds, 100)
        XCTAssertEqual(reply.limits, .simulatorDefault)
        XCTAssertEqual(reply.hostNonce, 0xDEAD_BEEF)
        XCTAssertEqual(reply.doneCount, 0)
        XCTAssertEqual(reply.lastDoneDotID, 0)
        XCTAssertNotEqual(reply.bootID, 0)
        XCTAssertEqual(bench.status.state, .disarmed, "HELLO never arms")

        for (requested, granted) in [(0, 100), (10, 20), (20, 20), (250, 250), (1000, 250), (60, 60)] as [(UInt16, UInt16)] {
            XCTAssertEqual(bench.hello(lease: requested).helloReplies.first?.leaseMilliseconds, granted, "requested \(requested)")
        }
    }

    /// The pure core is deterministic given its injected entropy, and the seed plays no part.
    func testBootIDIsDeterministicGivenItsEntropyAndIndependentOfTheSeed() throws {
        func bench(entropy: UInt64, seed: UInt64) -> Bench {
            Bench {
                $0.bootIDEntropy = entropy
                $0.seed = seed
            }
        }
        XCTAssertEqual(bench(entropy: 7, seed: 1).status.bootID, bench(entropy: 7, seed: 1).status.bootID)
        XCTAssertEqual(bench(entropy: 7, seed: 1).status.bootID, bench(entropy: 7, seed: 2).status.bootID,
                       "the seed does not choose the boot id")
        XCTAssertNotEqual(bench(entropy: 7, seed: 1).status.bootID, bench(entropy: 8, seed: 1).status.bootID)

        // Reboots within one firmware draw fresh ids, reproducibly from the same entropy.
        func bootIDs(entropy: UInt64) throws -> [UInt32] {
            var bench = Bench {
                $0.bootIDEntropy = entropy
                $0.faults = try! FaultPlan(spec: "reset-at=1,reset-at=2,reset-at=3")
            }
            var ids = [bench.status.bootID]
            for id in 1...3 as ClosedRange<UInt32> {
                bench.hello()
                bench.send(.arm)
                bench.dot(1, id: id)
                ids.append(bench.status.bootID)
            }
            return ids
        }
        let ids = try bootIDs(entropy: 7)
        XCTAssertEqual(Set(ids).count, 4, "every reboot a new id: \(ids)")
        XCTAssertFalse(ids.contains(0))
        XCTAssertEqual(try bootIDs(entropy: 7), ids)
    }

    func testArmNeedsAHelloOfMajorVersionOne() {
        var bench = Bench()
        var refusal = bench.send(.arm).refusals.first
        XCTAssertEqual(refusal?.code, .versionMismatch)
        XCTAssertEqual(refusal?.value, 0)
        XCTAssertEqual(bench.status.state, .disarmed)

        bench.hello(major: 2)
        refusal = bench.send(.arm).refusals.first
        XCTAssertEqual(refusal?.code, .versionMismatch)
        XCTAssertEqual(refusal?.value, 2)

        bench.hello()
        let answer = bench.send(.arm)
        XCTAssertTrue(answer.refusals.isEmpty)
        XCTAssertEqual(answer.statuses.last?.state, .ready)
    }

    func testDotWhileDisarmedIsNakedNotArmed() {
        var bench = Bench()
        bench.hello()
        let nak = bench.dot(1, id: 1).naks.first
        XCTAssertEqual(nak?.reason, .notArmed)
        XCTAssertEqual(nak?.expectedSeq, 1)
        bench.send(.arm)
        XCTAssertEqual(bench.dot(1, id: 1).acks.first?.ackSeq, 1, "the NAKed seq was not consumed")
    }

    // MARK: - Execution

    func testDotsExecuteInOrderWithSimulatedTime() {
        var bench = Bench()
        bench.handshakeAndArm()
        let acks = bench.send([
            Frame(seq: 1, .dot(DotCommand(dotID: 11, epoch: 0, xMicrometres: 5_000, yMicrometres: 0, depthMicrometres: 800, dwellMicroseconds: 100_000))),
            Frame(seq: 2, .dot(DotCommand(dotID: 12, epoch: 0, xMicrometres: 5_000, yMicrometres: 10_000, depthMicrometres: 900, dwellMicroseconds: 100_000))),
            Frame(seq: 3, .dot(DotCommand(dotID: 13, epoch: 0, xMicrometres: 0, yMicrometres: 10_000, depthMicrometres: 1000, dwellMicroseconds: 200_000))),
        ]).acks
        XCTAssertEqual(acks.map(\.ackSeq), [1, 2, 3])
        XCTAssertEqual(acks.map(\.freeSlots), [31, 30, 29])
        XCTAssertEqual(bench.status.state, .running)

        bench.runUntilIdle()
        // 5 mm at 50 mm/s = 100 ms; then 10 mm = 200 ms; then 5 mm = 100 ms.
        let done1 = dotDuration(travel: 100_000)
        let done2 = done1 + dotDuration(travel: 200_000)
        let done3 = done2 + dotDuration(travel: 100_000, dwell: 200_000)
        let dones = bench.received.dotDones
        XCTAssertEqual(dones.map(\.dotID), [11, 12, 13])
        XCTAssertEqual(dones.map(\.dotSeq), [1, 2, 3])
        XCTAssertEqual(dones.map(\.doneCount), [1, 2, 3])
        XCTAssertEqual(dones.map(\.deviceTimeMicroseconds), [done1, done2, done3])
        XCTAssertEqual(bench.record.map(\.dotID), [11, 12, 13])
        XCTAssertEqual(bench.record.map(\.simulatedTimeMicroseconds), [done1, done2, done3])
        XCTAssertEqual(bench.record.map(\.outcome), [.done, .done, .done])
        XCTAssertEqual(bench.record.map(\.depthMicrometres), [800, 900, 1000])
        XCTAssertEqual(bench.record.map(\.dwellDeliveredMicroseconds), [100_000, 100_000, 200_000])
        XCTAssertEqual(bench.record[0].skinEntrySimulatedMicroseconds, 100_000)
        XCTAssertEqual(bench.record.map(\.wallTimeMicroseconds), [done1, done2, done3], "time scale 1: wall = simulated")
        XCTAssertEqual(bench.status.state, .ready)
        XCTAssertEqual(bench.status.doneCount, 3)
        XCTAssertEqual(bench.received.statuses.last?.state, .ready)
    }

    func testTimeScaleShortensWallTimeButNotSimulatedTime() {
        var bench = Bench { $0.timeScale = 0.02 }
        bench.handshakeAndArm()
        bench.dot(1, id: 1, x: 5_000)
        bench.dot(2, id: 2, x: 5_000, y: 10_000)
        // Wall: 2 ms travel, 0.3 ms descend, 2 ms dwell, 0.3 ms retract.
        XCTAssertEqual(bench.firmware.nextDeadline, 2_000)
        bench.runUntilIdle()
        XCTAssertEqual(bench.record.map(\.simulatedTimeMicroseconds),
                       [dotDuration(travel: 100_000), dotDuration(travel: 100_000) + dotDuration(travel: 200_000)])
        XCTAssertEqual(bench.record.map(\.wallTimeMicroseconds), [4_600, 4_600 + 6_600])
    }

    func testInstantTimeScaleCompletesWithinTheCall() {
        var bench = Bench { $0.timeScale = 0 }
        bench.handshakeAndArm()
        let answer = bench.dot(1, id: 5, x: 100_000)
        XCTAssertEqual(answer.acks.count, 1)
        XCTAssertEqual(answer.dotDones.map(\.dotID), [5])
        XCTAssertEqual(answer.dotDones.first?.deviceTimeMicroseconds, dotDuration(travel: 2_000_000))
        XCTAssertEqual(bench.status.state, .ready)
    }

    // MARK: - De-duplication

    func testDuplicatesAndRetransmissionsNeverExecuteTwice() {
        var bench = Bench()
        bench.handshakeAndArm()
        bench.dot(1, id: 101)
        // The same frame again (a duplicated frame) and again later (a retransmission).
        XCTAssertEqual(bench.dot(1, id: 101).acks.first?.ackSeq, 1)
        bench.dot(2, id: 102)
        bench.dot(3, id: 103)
        let retransmitted = bench.send((1...3).map { seq in
            Frame(seq: seq, .dot(DotCommand(dotID: 100 + UInt32(seq), epoch: 0, xMicrometres: 0, yMicrometres: 0,
                                            depthMicrometres: 800, dwellMicroseconds: 100_000)))
        })
        XCTAssertEqual(retransmitted.acks.map(\.ackSeq), [3, 3, 3], "duplicates are answered with expected − 1")
        bench.run(for: 150_000)
        bench.dot(2, id: 102)  // a late copy while dot 102 runs
        bench.runUntilIdle()
        bench.dot(3, id: 103)  // after everything ran
        bench.runUntilIdle()
        XCTAssertEqual(bench.record.map(\.dotID), [101, 102, 103])
        XCTAssertEqual(bench.received.dotDones.map(\.dotID), [101, 102, 103])
        XCTAssertEqual(bench.status.doneCount, 3)
    }

    func testSequenceWrapsAroundThroughZero() {
        var bench = Bench { $0.timeScale = 0 }
        bench.handshakeAndArm()
        var seq: UInt8 = 1
        for id in 1...300 as ClosedRange<UInt32> {
            XCTAssertEqual(bench.dot(seq, id: id).acks.first?.ackSeq, seq)
            seq &+= 1
        }
        XCTAssertEqual(bench.dot(0, id: 256).acks.first?.ackSeq, 44, "seq 0 of the second lap is a duplicate now")
        XCTAssertEqual(bench.record.count, 300)
        XCTAssertEqual(Set(bench.record.map(\.dotID)).count, 300)
    }

    func testGapIsNakedOutOfOrder() {
        var bench = Bench()
        bench.handshakeAndArm()
        bench.dot(1, id: 1)
        let nak = bench.dot(3, id: 3).naks.first
        XCTAssertEqual(nak?.reason, .outOfOrder)
        XCTAssertEqual(nak?.expectedSeq, 2)
        XCTAssertEqual(nak?.freeSlots, 31)
        bench.dot(2, id: 2)
        bench.dot(3, id: 3)
        bench.runUntilIdle()
        XCTAssertEqual(bench.record.map(\.dotID), [1, 2, 3])
    }

    func testQueueFullIsNaked() {
        var bench = Bench { $0.queueCapacity = 4 }
        bench.handshakeAndArm()
        for seq in 1...4 as ClosedRange<UInt8> {
            XCTAssertEqual(bench.dot(seq, id: UInt32(seq)).acks.first?.freeSlots, 4 - seq)
        }
        let nak = bench.dot(5, id: 5).naks.first
        XCTAssertEqual(nak?.reason, .queueFull)
        XCTAssertEqual(nak?.expectedSeq, 5)
        XCTAssertEqual(nak?.freeSlots, 0)
        bench.run(for: dotDuration(travel: 0))  // the first dot completes
        XCTAssertEqual(bench.dot(5, id: 5).acks.first?.ackSeq, 5)
        bench.runUntilIdle()
        XCTAssertEqual(bench.record.map(\.dotID), [1, 2, 3, 4, 5])
    }

    // MARK: - Epochs

    func testHoldFencesTheQueueAndLetsTheInSkinDotFinish() {
        var bench = Bench()
        bench.handshakeAndArm()
        for seq in 1...3 as ClosedRange<UInt8> { bench.dot(seq, id: UInt32(seq)) }
        bench.run(until: 50_000)  // dot 1 is in its dwell (15 ms … 115 ms)
        let answer = bench.send(.hold(epoch: 1)).statuses
        XCTAssertEqual(answer.count, 1)
        XCTAssertEqual(answer.first?.state, .running, "not held until the needle is at standoff")
        XCTAssertEqual(answer.first?.epoch, 1)
        XCTAssertEqual(answer.first?.needleRetracted, false)
        XCTAssertEqual(answer.first?.currentDotID, 1)
        XCTAssertEqual(answer.first?.queueDepth, 1, "the queue is flushed at once")

        let later = bench.run(until: 300_000)
        let doneIndex = later.firstIndex { if case .dotDone = $0 { true } else { false } }
        let heldIndex = later.firstIndex { if case .status(let s) = $0 { s.state == .held } else { false } }
        XCTAssertNotNil(doneIndex)
        XCTAssertNotNil(heldIndex)
        if let doneIndex, let heldIndex { XCTAssertLessThan(doneIndex, heldIndex, "DOT_DONE before STATUS held") }
        XCTAssertEqual(later.dotDones.map(\.dotID), [1])
        XCTAssertEqual(later.dotDones.first?.deviceTimeMicroseconds, dotDuration(travel: 0))
        let held = later.statuses.first { $0.state == .held }
        XCTAssertEqual(held?.fault, .hostHold)
        XCTAssertEqual(held?.needleRetracted, true)
        XCTAssertEqual(held?.queueDepth, 0)
        XCTAssertEqual(held?.lastDoneSeq, 1)
        XCTAssertEqual(bench.record.map(\.dotID), [1])

        // A HOLD that is not newer changes nothing.
        let repeated = bench.send(.hold(epoch: 1)).statuses
        XCTAssertEqual(repeated.first?.state, .held)
        XCTAssertEqual(repeated.first?.epoch, 1)
        XCTAssertEqual(bench.send(.hold(epoch: 0)).statuses.first?.epoch, 1)
        bench.runUntilIdle()
        XCTAssertEqual(bench.record.map(\.dotID), [1])
    }

    func testStaleEpochDotAfterHoldIsConsumedAndNeverExecuted() {
        var bench = Bench()
        bench.handshakeAndArm()
        bench.dot(1, id: 1)
        bench.dot(2, id: 2)
        bench.send(.hold(epoch: 1))
        bench.runUntilIdle()
        XCTAssertEqual(bench.status.state, .held)
        // Seq 3 of epoch 0 was in flight before the fence.
        let ack = bench.dot(3, id: 3, epoch: 0).acks.first
        XCTAssertEqual(ack?.ackSeq, 3, "a fenced DOT consumes its sequence number")
        XCTAssertEqual(ack?.epoch, 1)
        XCTAssertTrue(bench.events.contains(.dotFenced(seq: 3, dotID: 3)))
        // Current epoch while held: NAK held, not consumed.
        let nak = bench.dot(4, id: 4, epoch: 1).naks.first
        XCTAssertEqual(nak?.reason, .held)
        XCTAssertEqual(nak?.expectedSeq, 4)
        bench.runUntilIdle()
        XCTAssertEqual(bench.record.map(\.dotID), [1], "dot 2 was fenced in the queue, dot 3 on arrival")
    }

    func testResumeWithCurrentEpochAndNextSeq() {
        var bench = Bench()
        bench.handshakeAndArm()
        bench.dot(1, id: 1)
        bench.dot(2, id: 2)
        // Seqs 3 and 4 are lost on the link.
        bench.send(.hold(epoch: 1))
        bench.runUntilIdle()
        XCTAssertEqual(bench.send(.resume(epoch: 0, nextSeq: 5)).statuses.first?.state, .held, "wrong epoch: ignored")
        XCTAssertEqual(bench.send(.resume(epoch: 1, nextSeq: 1)).statuses.first?.state, .held,
                       "next_seq behind expected would reuse accepted numbers: ignored")
        let resumed = bench.send(.resume(epoch: 1, nextSeq: 5)).statuses.first
        XCTAssertEqual(resumed?.state, .ready)
        XCTAssertEqual(resumed?.fault, FaultCode.none)
        XCTAssertEqual(resumed?.ackSeq, 4, "expected jumped to next_seq")
        // A stale copy of seq 3 (epoch 0) now is a duplicate: acknowledged, never executed.
        XCTAssertEqual(bench.dot(3, id: 3).acks.first?.ackSeq, 4)
        XCTAssertEqual(bench.dot(5, id: 2, epoch: 1).acks.first?.ackSeq, 5)
        bench.runUntilIdle()
        XCTAssertEqual(bench.record.map(\.dotID), [1, 2])
        XCTAssertEqual(bench.record.map(\.epoch), [0, 1])
    }

    func testARepeatedResumeNeverRewindsTheSequence() {
        var bench = Bench()
        bench.handshakeAndArm()
        bench.dot(1, id: 1)
        bench.send(.hold(epoch: 1))
        bench.runUntilIdle()
        bench.send(.resume(epoch: 1, nextSeq: 2))
        bench.dot(2, id: 2, epoch: 1)
        bench.dot(3, id: 3, epoch: 1)
        // The host's repeat of the RESUME (its STATUS was slow) arrives late.
        let repeated = bench.send(.resume(epoch: 1, nextSeq: 2)).statuses.first
        XCTAssertEqual(repeated?.ackSeq, 3, "expected not moved back to 2")
        XCTAssertEqual(bench.dot(2, id: 2, epoch: 1).acks.first?.ackSeq, 3, "so a retransmission stays a duplicate")
        bench.runUntilIdle()
        XCTAssertEqual(bench.record.map(\.dotID), [1, 2, 3])
    }

    func testAbortInterruptsTheDotInTheSkin() {
        var bench = Bench()
        bench.handshakeAndArm()
        bench.dot(1, id: 1)
        bench.dot(2, id: 2)
        bench.run(until: 50_000)
        let status = bench.send(.abort(epoch: 1)).statuses.first
        XCTAssertEqual(status?.state, .held)
        XCTAssertEqual(status?.fault, .hostAbort)
        XCTAssertEqual(status?.currentDotID, 1)
        XCTAssertEqual(status?.needleRetracted, true)
        XCTAssertEqual(status?.queueDepth, 0)
        XCTAssertEqual(status?.epoch, 1)
        bench.runUntilIdle()
        XCTAssertTrue(bench.received.dotDones.isEmpty)
        XCTAssertEqual(bench.record.count, 1)
        XCTAssertEqual(bench.record.first?.outcome, .interrupted)
        XCTAssertEqual(bench.record.first?.cause, .abort)
        XCTAssertEqual(bench.record.first?.dwellDeliveredMicroseconds, 35_000)
        XCTAssertEqual(bench.record.first?.simulatedTimeMicroseconds, 50_000)
        XCTAssertEqual(bench.status.doneCount, 0)
        // RESUME clears the interrupted dot id and runs again.
        XCTAssertEqual(bench.send(.resume(epoch: 1, nextSeq: 3)).statuses.first?.currentDotID, 0)
        bench.dot(3, id: 1, epoch: 1)
        bench.runUntilIdle()
        XCTAssertEqual(bench.record.map(\.outcome), [.interrupted, .done])
    }

    func testAbortDuringTravelRecordsNothing() {
        var bench = Bench()
        bench.handshakeAndArm()
        bench.dot(1, id: 1, x: 50_000)  // 1 s of travel
        bench.run(until: 500_000)
        let status = bench.send(.abort(epoch: 1)).statuses.first
        XCTAssertEqual(status?.currentDotID, 0, "a dot in its travel phase was not started")
        bench.runUntilIdle()
        XCTAssertTrue(bench.record.isEmpty)
    }

    // MARK: - Lease

    func testLeaseExpiryFinishesTheInSkinDotThenHolds() {
        var bench = Bench()
        bench.heartbeat = nil
        bench.hello(lease: 100)
        bench.send(.arm)
        bench.dot(1, id: 1, dwell: 500_000)
        bench.dot(2, id: 2)
        XCTAssertEqual(bench.firmware.nextDeadline, 15_000)
        bench.run(until: 100_000)  // the lease expires now, in dot 1's dwell
        XCTAssertEqual(bench.status.state, .running)
        XCTAssertEqual(bench.status.epoch, 1)
        XCTAssertEqual(bench.status.queueDepth, 1)
        bench.run(until: 1_000_000)
        XCTAssertEqual(bench.received.dotDones.map(\.dotID), [1])
        XCTAssertEqual(bench.received.dotDones.first?.deviceTimeMicroseconds, dotDuration(travel: 0, dwell: 500_000))
        let held = bench.received.statuses.first { $0.state == .held }
        XCTAssertEqual(held?.fault, .leaseExpired)
        XCTAssertEqual(held?.epoch, 1)
        XCTAssertEqual(bench.record.map(\.dotID), [1])
        XCTAssertEqual(bench.record.first?.outcome, .done)
        XCTAssertNil(bench.firmware.nextDeadline, "held: nothing due, never resumes by itself")
        XCTAssertEqual(bench.send(.resume(epoch: 1, nextSeq: 3)).statuses.first?.state, .ready)
    }

    func testLeaseExpiryDuringTravelDoesNotStartTheDot() {
        var bench = Bench()
        bench.heartbeat = nil
        bench.hello(lease: 100)
        bench.send(.arm)
        bench.dot(1, id: 1, x: 50_000)
        bench.run(until: 2_000_000)
        XCTAssertEqual(bench.status.state, .held)
        XCTAssertEqual(bench.status.fault, .leaseExpired)
        XCTAssertTrue(bench.record.isEmpty)
        XCTAssertTrue(bench.received.dotDones.isEmpty)
    }

    func testHeartbeatKeepsTheLeaseAndReadyDeviceHoldsWithoutIt() {
        var bench = Bench()
        bench.hello(lease: 100)
        bench.send(.arm)
        bench.run(for: 1_000_000)  // heartbeat every 50 ms
        XCTAssertEqual(bench.status.state, .ready)
        bench.heartbeat = nil
        bench.run(for: 100_000)
        XCTAssertEqual(bench.status.state, .held)
        XCTAssertEqual(bench.status.fault, .leaseExpired)
    }

    // MARK: - Latched shutdown

    func testHostEstopLatchesAndRefusesEverythingElse() {
        var bench = Bench()
        bench.handshakeAndArm()
        bench.dot(1, id: 1)
        bench.dot(2, id: 2)
        bench.run(until: 60_000)
        let status = bench.send(.estop(cause: .hostEstop)).statuses.first
        XCTAssertEqual(status?.state, .estop)
        XCTAssertEqual(status?.fault, .hostEstop)
        XCTAssertEqual(status?.currentDotID, 1)
        XCTAssertEqual(status?.needleRetracted, true)
        XCTAssertEqual(bench.record.first?.outcome, .interrupted)
        XCTAssertEqual(bench.record.first?.cause, .shutdown(.hostEstop))
        XCTAssertEqual(bench.record.first?.dwellDeliveredMicroseconds, 45_000)

        let refusedMessages: [(Message, UInt8)] = [
            (.arm, 0), (.hold(epoch: 5), 0), (.resume(epoch: 0, nextSeq: 3), 0), (.abort(epoch: 5), 0),
            (.dot(DotCommand(dotID: 3, epoch: 0, xMicrometres: 0, yMicrometres: 0, depthMicrometres: 800, dwellMicroseconds: 100_000)), 3),
        ]
        for (message, seq) in refusedMessages {
            let refusal = bench.send(message, seq: seq).refusals.first
            XCTAssertEqual(refusal?.code, .shutdown, "\(message)")
            XCTAssertEqual(refusal?.state, .estop)
            XCTAssertEqual(refusal?.fault, .hostEstop)
            XCTAssertEqual(refusal?.seq, seq)
        }
        XCTAssertEqual(bench.send(.statusRequest).statuses.first?.state, .estop)
        XCTAssertEqual(bench.send(.estop(cause: .contactLost)).statuses.first?.fault, .hostEstop, "first reason kept")
        let reply = bench.hello(nonce: 99)
        XCTAssertEqual(reply.helloReplies.first?.hostNonce, 99)
        XCTAssertEqual(bench.status.state, .estop, "HELLO does not leave the latch")

        XCTAssertEqual(bench.send(.clear).statuses.first?.state, .disarmed)
        XCTAssertEqual(bench.send(.arm).statuses.first?.state, .ready)
        bench.dot(1, id: 10)
        bench.runUntilIdle()
        XCTAssertEqual(bench.record.map(\.outcome), [.interrupted, .done])
        XCTAssertEqual(bench.record.map(\.dotID), [1, 10])
    }

    func testEstopButtonBlocksClearWhilePressed() {
        var bench = Bench()
        bench.handshakeAndArm()
        bench.dot(1, id: 1)
        bench.run(until: 20_000)
        let pressed = bench.absorb(bench.firmware.setEstopButton(pressed: true, at: bench.now)).statuses.first
        XCTAssertEqual(pressed?.state, .estop)
        XCTAssertEqual(pressed?.fault, .estopButton)
        XCTAssertEqual(bench.record.first?.cause, .shutdown(.estopButton))

        let refusal = bench.send(.clear).refusals.first
        XCTAssertEqual(refusal?.code, .shutdown)
        XCTAssertEqual(refusal?.fault, .estopButton)
        XCTAssertEqual(bench.status.state, .estop)

        let released = bench.absorb(bench.firmware.setEstopButton(pressed: false, at: bench.now))
        XCTAssertTrue(released.isEmpty, "releasing the button restarts nothing")
        XCTAssertEqual(bench.status.state, .estop)
        XCTAssertEqual(bench.send(.arm).refusals.first?.code, .shutdown, "CLEAR first")
        XCTAssertEqual(bench.send(.clear).statuses.first?.state, .disarmed)
        XCTAssertEqual(bench.send(.arm).statuses.first?.state, .ready)
    }

    func testEstopDuringRetractCompletesTheDot() {
        var bench = Bench()
        bench.handshakeAndArm()
        bench.dot(1, id: 1)
        bench.run(until: 120_000)  // retract: 115 ms … 130 ms
        let answer = bench.send(.estop(cause: .hostEstop))
        XCTAssertEqual(answer.dotDones.map(\.dotID), [1], "the dwell was complete")
        XCTAssertEqual(answer.statuses.first?.currentDotID, 0)
        XCTAssertEqual(bench.record.first?.outcome, .done)
    }

    func testDotsOutsideTheHardwareLimitsAreRefusedAndLatch() {
        let cases: [(String, DotCommand, ErrorCode, Int32)] = [
            ("depth below", dot(depth: 199), .depthOutOfRange, 199),
            ("depth above", dot(depth: 1501), .depthOutOfRange, 1501),
            ("dwell below", dot(dwell: 19_999), .dwellOutOfRange, 19_999),
            ("dwell above", dot(dwell: 500_001), .dwellOutOfRange, 500_001),
            ("dwell huge", dot(dwell: .max), .dwellOutOfRange, .max),
            ("x above", dot(x: 150_001), .travelOutOfRange, 150_001),
            ("x below", dot(x: -150_001), .travelOutOfRange, -150_001),
            ("x min", dot(x: .min), .travelOutOfRange, .min),
            ("y above", dot(y: 150_001), .travelOutOfRange, 150_001),
            ("y below", dot(y: -150_001), .travelOutOfRange, -150_001),
        ]
        for (name, command, code, value) in cases {
            var bench = Bench()
            bench.handshakeAndArm()
            bench.dot(1, id: 1)
            bench.run(until: 50_000)  // dot 1 in the skin
            let answer = bench.send(.dot(command), seq: 2)
            let refusal = answer.refusals.first
            XCTAssertEqual(refusal?.seq, 2, name)
            XCTAssertEqual(refusal?.dotID, command.dotID, name)
            XCTAssertEqual(refusal?.code, code, name)
            XCTAssertEqual(refusal?.value, value, name)
            XCTAssertEqual(refusal?.state, .fault, name)
            XCTAssertEqual(refusal?.fault, .dotOutOfLimits, name)
            XCTAssertEqual(answer.statuses.last?.state, .fault, name)
            XCTAssertTrue(answer.acks.isEmpty, name)
            bench.runUntilIdle()
            XCTAssertFalse(bench.record.contains { $0.dotID == command.dotID }, "\(name): nothing injected")
            XCTAssertEqual(bench.record.map(\.outcome), [.interrupted], "\(name): the dot in the skin is cut off")
            XCTAssertEqual(bench.dot(2, id: 3).refusals.first?.code, .shutdown, name)
            XCTAssertEqual(bench.status.fault, .dotOutOfLimits, name)
        }
        // The limits themselves are inside.
        var bench = Bench { $0.timeScale = 0 }
        bench.handshakeAndArm()
        let edges = [dot(depth: 200, dwell: 20_000, x: 150_000, y: -150_000), dot(depth: 1500, dwell: 500_000, x: -150_000, y: 150_000)]
        for (index, command) in edges.enumerated() {
            XCTAssertEqual(bench.send(.dot(command), seq: UInt8(index + 1)).acks.count, 1)
        }
        XCTAssertEqual(bench.record.count, 2)
    }

    func testOutOfLimitsDotIsRefusedEvenWhileDisarmedOrAsADuplicate() {
        var bench = Bench()
        bench.hello()
        XCTAssertEqual(bench.send(.dot(dot(depth: 5000)), seq: 1).refusals.first?.code, .depthOutOfRange)
        XCTAssertEqual(bench.status.state, .fault)

        var second = Bench()
        second.handshakeAndArm()
        second.dot(1, id: 1)
        XCTAssertEqual(second.send(.dot(dot(depth: 5000)), seq: 1).refusals.first?.code, .depthOutOfRange)
        XCTAssertEqual(second.status.state, .fault)
    }

    // MARK: - Framing

    func testCorruptedFrameIsNakedBadFrameAndNothingExecutes() {
        var bench = Bench()
        bench.handshakeAndArm()
        var bytes = Frame(seq: 1, .dot(dot(depth: 800))).encoded()
        let index = bytes.count - 3
        bytes[index] ^= bytes[index] == 1 ? 0x02 : 0x01  // never 0: one block, one NAK
        let nak = bench.sendBytes(bytes).naks.first
        XCTAssertEqual(nak?.reason, .badFrame)
        XCTAssertEqual(nak?.expectedSeq, 1)
        // Garbage then a delimiter, an oversized block, an unknown type with a good CRC.
        XCTAssertEqual(bench.sendBytes([0x55, 0x66, 0x77, 0x00]).naks.map(\.reason), [.badFrame])
        XCTAssertEqual(bench.sendBytes([UInt8](repeating: 0x41, count: 400) + [0]).naks.map(\.reason), [.badFrame])
        var raw: [UInt8] = [0x7E, 0]
        let crc = CRC32C.checksum(raw)
        raw += [UInt8(crc & 0xFF), UInt8(crc >> 8 & 0xFF), UInt8(crc >> 16 & 0xFF), UInt8(crc >> 24)]
        var encoded: [UInt8] = []
        COBS.encode(raw, into: &encoded)
        XCTAssertEqual(bench.sendBytes(encoded + [0]).naks.map(\.reason), [.badFrame])
        // Empty blocks are ignored.
        XCTAssertTrue(bench.sendBytes([0, 0, 0]).isEmpty)
        bench.runUntilIdle()
        XCTAssertTrue(bench.record.isEmpty)
        XCTAssertEqual(bench.status.discardedBlocks, 4)
        XCTAssertEqual(bench.dot(1, id: 1).acks.first?.ackSeq, 1, "the corrupted DOT did not consume seq 1")
    }

    func testAFrameSplitAcrossReadsIsReassembled() {
        var bench = Bench { $0.timeScale = 0 }
        bench.handshakeAndArm()
        let bytes = Frame(seq: 1, .dot(dot(depth: 800))).encoded()
        XCTAssertTrue(bench.sendBytes(Array(bytes[..<7])).isEmpty)
        XCTAssertEqual(bench.sendBytes(Array(bytes[7...])).acks.count, 1)
    }

    func testDeviceFramesEchoedBackAreIgnored() {
        var bench = Bench()
        bench.hello()
        let echoed = bench.sendBytes(Frame(seq: 3, .ack(Ack(ackSeq: 1, freeSlots: 2, epoch: 0))).encoded())
        XCTAssertTrue(echoed.isEmpty)
        XCTAssertEqual(bench.firmware.ignoredFrames, 1)
    }

    // MARK: - HELLO mid-session

    func testHelloMidQueueHoldsFirstThenReplies() {
        var bench = Bench()
        bench.handshakeAndArm()
        for seq in 1...3 as ClosedRange<UInt8> { bench.dot(seq, id: UInt32(seq)) }
        bench.run(until: 50_000)
        XCTAssertTrue(bench.hello(nonce: 7).helloReplies.isEmpty, "the reply waits for the needle")
        let later = bench.run(until: 400_000)
        let doneIndex = later.firstIndex { if case .dotDone = $0 { true } else { false } }
        let replyIndex = later.firstIndex { if case .helloReply = $0 { true } else { false } }
        XCTAssertNotNil(doneIndex)
        XCTAssertNotNil(replyIndex)
        if let doneIndex, let replyIndex { XCTAssertLessThan(doneIndex, replyIndex) }
        let reply = later.helloReplies.first
        XCTAssertEqual(reply?.hostNonce, 7)
        XCTAssertEqual(reply?.doneCount, 1)
        XCTAssertEqual(reply?.lastDoneDotID, 1)
        XCTAssertEqual(bench.status.state, .held)
        XCTAssertEqual(bench.status.fault, .hostHold)
        XCTAssertEqual(bench.status.epoch, 0)
        XCTAssertEqual(bench.record.map(\.dotID), [1])

        XCTAssertEqual(bench.dot(1, id: 10).naks.first?.reason, .held)
        XCTAssertEqual(bench.send(.resume(epoch: 0, nextSeq: 1)).statuses.first?.state, .ready)
        XCTAssertEqual(bench.dot(1, id: 10).acks.first?.ackSeq, 1, "a new session starts at seq 1")
        bench.runUntilIdle()
        XCTAssertEqual(bench.record.map(\.dotID), [1, 10])
    }

    func testHelloWhileIdleKeepsTheStateAndResetsSequenceAndEpoch() {
        var bench = Bench { $0.timeScale = 0 }
        bench.handshakeAndArm()
        bench.dot(1, id: 1)
        bench.dot(2, id: 2)
        bench.hello(nonce: 5)
        XCTAssertEqual(bench.status.state, .ready)
        XCTAssertEqual(bench.dot(1, id: 3).acks.first?.ackSeq, 1)
        XCTAssertEqual(bench.record.map(\.dotID), [1, 2, 3])
    }

    // MARK: - Contact sensor and other states

    func testContactLossHoldsAndBlocksResume() {
        var bench = Bench()
        bench.handshakeAndArm()
        bench.dot(1, id: 1)
        bench.dot(2, id: 2)
        bench.run(until: 50_000)
        bench.absorb(bench.firmware.setSkinContact(false, at: bench.now))
        XCTAssertEqual(bench.status.epoch, 1)
        bench.run(until: 300_000)
        XCTAssertEqual(bench.status.state, .held)
        XCTAssertEqual(bench.status.fault, .contactLost)
        XCTAssertEqual(bench.record.map(\.dotID), [1])
        XCTAssertEqual(bench.send(.resume(epoch: 1, nextSeq: 3)).statuses.first?.state, .held)
        bench.absorb(bench.firmware.setSkinContact(true, at: bench.now))
        XCTAssertEqual(bench.status.state, .held, "regaining contact resumes nothing")
        XCTAssertEqual(bench.send(.resume(epoch: 1, nextSeq: 3)).statuses.first?.state, .ready)
    }

    func testClearDisarmsFromReadyAndHeldButNotWhileRunning() {
        var bench = Bench()
        bench.handshakeAndArm()
        bench.dot(1, id: 1)
        XCTAssertEqual(bench.send(.clear).statuses.first?.state, .running)
        bench.runUntilIdle()
        XCTAssertEqual(bench.send(.clear).statuses.first?.state, .disarmed)
    }

    func testUnderrunsCountAQueueRunningDryWhileTheHostStreams() {
        var bench = Bench()
        bench.hello(lease: 250)
        bench.send(.arm)
        bench.dot(1, id: 1)
        bench.run(for: 200_000)  // dot 1 done at 130 ms, the host's last DOT 130 ms before: starved
        XCTAssertEqual(bench.status.underruns, 1)
        bench.run(for: 500_000)
        bench.dot(2, id: 2)
        bench.dot(3, id: 3)
        bench.run(for: 1_000_000)
        XCTAssertEqual(bench.status.underruns, 1, "dot 3 completes 260 ms after the last DOT arrived: no underrun")
    }

    func testUnpromptedStatusOnEveryStateChange() {
        var bench = Bench { $0.timeScale = 0 }
        bench.heartbeat = nil
        bench.hello()
        bench.send(.arm)
        let answer = bench.dot(1, id: 1)
        XCTAssertEqual(answer.statuses.map(\.state), [.running, .ready])
        XCTAssertEqual(bench.events.filter { if case .stateChanged = $0 { true } else { false } }.count, 3)
    }

    func testEpochSerialArithmetic() {
        XCTAssertTrue(Firmware.isNewer(1, than: 0))
        XCTAssertTrue(Firmware.isNewer(0, than: 65_535))
        XCTAssertFalse(Firmware.isNewer(0, than: 0))
        XCTAssertFalse(Firmware.isNewer(0, than: 1))
        XCTAssertFalse(Firmware.isNewer(0x8000, than: 0))
    }

    private func dot(depth: UInt16 = 800, dwell: UInt32 = 100_000, x: Int32 = 0, y: Int32 = 0) -> DotCommand {
        DotCommand(dotID: 77, epoch: 0, xMicrometres: x, yMicrometres: y, depthMicrometres: depth, dwellMicroseconds: dwell)
    }
}
