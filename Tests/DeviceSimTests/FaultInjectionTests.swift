import XCTest
import FirmwareProtocol
@testable import DeviceSim

final class LinkFaultInjectorTests: XCTestCase {
    private let frames: [Frame] = (1...50).map { seq in
        Frame(seq: UInt8(seq), .dot(DotCommand(dotID: UInt32(seq), epoch: 0, xMicrometres: Int32(seq) * 100,
                                               yMicrometres: 0, depthMicrometres: 800, dwellMicroseconds: 50_000)))
    }

    private var wire: [UInt8] { frames.flatMap { $0.encoded() } }

    private func decode(_ bytes: [UInt8]) -> (frames: [Frame], bad: Int) {
        var decoder = FrameDecoder()
        var good: [Frame] = []
        var bad = 0
        for event in decoder.feed(bytes) {
            switch event {
            case .frame(let frame): good.append(frame)
            case .discarded: bad += 1
            }
        }
        return (good, bad)
    }

    func testNoPlanPassesBytesUntouched() {
        var link = LinkFaultInjector(plan: .none, seed: 1)
        XCTAssertEqual(link.fromHost(wire), wire)
        let out = link.toHost(frames, at: 7)
        XCTAssertEqual(out.flatMap(\.bytes), wire)
        XCTAssertTrue(out.allSatisfy { $0.release == 7 })
    }

    func testSameSeedSameFaultsOtherSeedOtherFaults() throws {
        let plan = try FaultPlan(spec: "corrupt=0.2,drop=0.2,duplicate=0.2,garbage=0.2")
        var first = LinkFaultInjector(plan: plan, seed: 9)
        var second = LinkFaultInjector(plan: plan, seed: 9)
        var third = LinkFaultInjector(plan: plan, seed: 10)
        let a = first.fromHost(wire), b = second.fromHost(wire), c = third.fromHost(wire)
        XCTAssertEqual(a, b)
        XCTAssertNotEqual(a, c)
        XCTAssertEqual(first.toDevice, second.toDevice)
        XCTAssertGreaterThan(first.toDevice.dropped, 0)
        XCTAssertGreaterThan(first.toDevice.duplicated, 0)
        XCTAssertGreaterThan(first.toDevice.corrupted, 0)
        XCTAssertGreaterThan(first.toDevice.garbageBlocks, 0)
        // Fed in odd pieces, the same bytes give the same faults (faults apply per frame).
        var pieces = LinkFaultInjector(plan: plan, seed: 9)
        var out: [UInt8] = []
        var index = 0
        while index < wire.count {
            let end = min(wire.count, index + 7)
            out += pieces.fromHost(wire[index..<end])
            index = end
        }
        XCTAssertEqual(out, a)
        // The device → host direction has its own generator: host traffic does not shift it.
        var quiet = LinkFaultInjector(plan: plan, seed: 9)
        XCTAssertEqual(quiet.toHost(frames, at: 0).flatMap(\.bytes), first.toHost(frames, at: 0).flatMap(\.bytes))
    }

    func testEachKindAtRateOne() throws {
        var drop = LinkFaultInjector(plan: try FaultPlan(spec: "drop=1"), seed: 1)
        XCTAssertEqual(drop.fromHost(wire), [])
        XCTAssertTrue(drop.toHost(frames, at: 0).isEmpty)
        XCTAssertEqual(drop.toDevice.dropped, 50)

        var duplicate = LinkFaultInjector(plan: try FaultPlan(spec: "duplicate=1"), seed: 1)
        XCTAssertEqual(decode(duplicate.fromHost(wire)).frames, frames.flatMap { [$0, $0] })
        XCTAssertEqual(decode(duplicate.toHost(frames, at: 0).flatMap(\.bytes)).frames.count, 100)

        var corrupt = LinkFaultInjector(plan: try FaultPlan(spec: "corrupt=1"), seed: 1)
        let corrupted = decode(corrupt.fromHost(wire))
        XCTAssertTrue(corrupted.frames.isEmpty, "CRC-32C catches every single-bit error")
        XCTAssertGreaterThanOrEqual(corrupted.bad, 50)
        XCTAssertTrue(decode(corrupt.toHost(frames, at: 0).flatMap(\.bytes)).frames.isEmpty)

        var garbage = LinkFaultInjector(plan: try FaultPlan(spec: "garbage=1"), seed: 1)
        let withGarbage = decode(garbage.fromHost(wire))
        XCTAssertEqual(withGarbage.frames, frames, "garbage sits between frames and never costs one")
        XCTAssertGreaterThanOrEqual(withGarbage.bad, 50)
        XCTAssertEqual(decode(garbage.toHost(frames, at: 0).flatMap(\.bytes)).frames, frames)
    }

    func testDelayAckDelaysAcksAndKeepsOrder() throws {
        var link = LinkFaultInjector(plan: try FaultPlan(spec: "delay-ack=30ms"), seed: 1)
        let out = link.toHost([
            Frame(seq: 0, .status(Status(state: .ready, fault: .none, queueDepth: 0, freeSlots: 32, epoch: 0, ackSeq: 0,
                                         lastDoneSeq: 0, lastDoneDotID: 0, doneCount: 0, currentDotID: 0, needleRetracted: true))),
            Frame(seq: 1, .ack(Ack(ackSeq: 1, freeSlots: 31, epoch: 0))),
            Frame(seq: 2, .dotDone(DotDone(dotSeq: 1, dotID: 1, doneCount: 1, deviceTimeMicroseconds: 5))),
        ], at: 1_000)
        XCTAssertEqual(out.map(\.release), [1_000, 31_000, 31_000], "what follows an ACK waits behind it")
        XCTAssertEqual(link.toHost([Frame(seq: 3, .nak(Nak(expectedSeq: 2, reason: .badFrame, freeSlots: 31)))], at: 2_000)
            .map(\.release), [31_000], "never overtakes an earlier frame")
        XCTAssertEqual(link.toHost([Frame(seq: 4, .nak(Nak(expectedSeq: 2, reason: .badFrame, freeSlots: 31)))], at: 40_000)
            .map(\.release), [40_000])
        XCTAssertEqual(link.toHost.delayedAcks, 1)
    }
}

final class DeviceFaultTests: XCTestCase {
    private func bench(_ spec: String, timeScale: Double = 1) throws -> Bench {
        let plan = try FaultPlan(spec: spec)
        var bench = Bench {
            $0.faults = plan
            $0.timeScale = timeScale
        }
        bench.handshakeAndArm()
        return bench
    }

    func testResetLosesRAMAndInterruptsTheDotInTheSkin() throws {
        var bench = try bench("reset-at=3")
        let oldBoot = bench.status.bootID
        bench.dot(1, id: 1)
        bench.dot(2, id: 2)
        bench.run(until: 50_000)
        let answer = bench.dot(3, id: 3)
        XCTAssertTrue(answer.acks.isEmpty, "the DOT is lost with the reset")
        XCTAssertTrue(answer.dotDones.isEmpty)
        XCTAssertEqual(answer.statuses.map(\.state), [.disarmed], "boot announcement")
        XCTAssertEqual(answer.statuses.first?.doneCount, 0)
        let snapshot = bench.status
        XCTAssertNotEqual(snapshot.bootID, oldBoot)
        XCTAssertEqual(snapshot.state, .disarmed)
        XCTAssertEqual(snapshot.doneCount, 0)
        XCTAssertEqual(snapshot.queueDepth, 0)
        XCTAssertEqual(snapshot.epoch, 0)
        XCTAssertTrue(bench.events.contains(.rebooted(bootID: snapshot.bootID)))
        XCTAssertEqual(bench.record.count, 1)
        XCTAssertEqual(bench.record.first?.outcome, .interrupted)
        XCTAssertEqual(bench.record.first?.cause, .reset)
        XCTAssertEqual(bench.record.first?.bootID, oldBoot)

        XCTAssertEqual(bench.dot(4, id: 4).naks.first?.reason, .notArmed)
        XCTAssertEqual(bench.send(.arm).refusals.first?.code, .versionMismatch, "the host must re-handshake")
        let reply = bench.hello(nonce: 2).helloReplies.first
        XCTAssertEqual(reply?.bootID, snapshot.bootID)
        XCTAssertEqual(reply?.doneCount, 0)
        bench.send(.arm)
        bench.dot(1, id: 3)  // the reset fires once: dot 3 now runs
        bench.runUntilIdle()
        XCTAssertEqual(bench.record.map(\.dotID), [1, 3])
        XCTAssertEqual(bench.record.last?.bootID, snapshot.bootID)
    }

    /// Deterministic given the firmware's boot-id entropy (the bench's default): the simulator's
    /// runtime supplies fresh entropy at every start (BootIDTests).
    func testResetIsReproducibleGivenTheBootIDEntropy() throws {
        var first = try bench("reset-at=1", timeScale: 0)
        var second = try bench("reset-at=1", timeScale: 0)
        first.dot(1, id: 1)
        second.dot(1, id: 1)
        XCTAssertEqual(first.status.bootID, second.status.bootID)
    }

    func testStallHoldsTheLinkThenCatchesUp() throws {
        var bench = try bench("stall-at=2:100ms")
        bench.heartbeat = nil
        bench.dot(1, id: 1)
        XCTAssertTrue(bench.dot(2, id: 2).isEmpty, "no ACK during the stall")
        bench.now = 50_000
        XCTAssertTrue(bench.send(.statusRequest).isEmpty, "nothing read or written during the stall")
        XCTAssertEqual(bench.firmware.nextDeadline, 100_000, "the physics continue (dot 1 still runs) but the link stalls")
        let after = bench.run(until: 100_000)
        XCTAssertEqual(after.acks.map(\.ackSeq), [2], "the stalled DOT is handled after the stall")
        XCTAssertEqual(after.statuses.count, 1, "the STATUS_REQUEST is answered after the stall")
        XCTAssertTrue(bench.events.contains(.faultInjected(.stall, dotID: 2)))
        bench.heartbeat = 50_000
        bench.runUntilIdle()
        XCTAssertEqual(bench.record.map(\.dotID), [1, 2])
    }

    func testAStallLongerThanTheLeaseHoldsAndFencesTheStalledDot() throws {
        var bench = try bench("stall-at=2:400ms")
        bench.heartbeat = nil
        bench.dot(1, id: 1)
        bench.dot(2, id: 2)
        let after = bench.run(until: 1_000_000)
        XCTAssertEqual(bench.status.state, .held)
        XCTAssertEqual(bench.status.fault, .leaseExpired)
        XCTAssertEqual(after.acks.map(\.ackSeq), [2], "fenced: acknowledged, never executed")
        XCTAssertEqual(bench.record.map(\.dotID), [1])
    }

    func testEstopAtPressesTheButtonHalfwayThroughItsDotsDwell() throws {
        var bench = try bench("estop-at=2")
        bench.dot(1, id: 1)
        let answer = bench.dot(2, id: 2, x: 5_000)
        XCTAssertEqual(answer.acks.map(\.ackSeq), [2], "accepted: the fault belongs to the dot's execution")
        // Dot 1: 0–130 ms. Dot 2: travel 100 ms, descend 15 ms, dwell from 245 ms: 50 ms in, the button.
        bench.run(until: 294_000)
        XCTAssertEqual(bench.status.state, .running)
        bench.run(until: 295_000)
        XCTAssertEqual(bench.status.state, .estop)
        XCTAssertEqual(bench.status.fault, .estopButton)
        XCTAssertEqual(bench.status.currentDotID, 2)
        XCTAssertFalse(bench.status.estopButtonPressed, "pressed and released")
        XCTAssertEqual(bench.record.map(\.outcome), [.done, .interrupted])
        XCTAssertEqual(bench.record.last?.cause, .shutdown(.estopButton))
        XCTAssertEqual(bench.record.last?.dwellDeliveredMicroseconds, 50_000)
        XCTAssertEqual(bench.record.last?.simulatedTimeMicroseconds, 295_000)
        XCTAssertEqual(bench.send(.clear).statuses.first?.state, .disarmed, "the button was released")
        bench.hello()
        bench.send(.arm)
        bench.dot(1, id: 2, x: 10_000)
        bench.runUntilIdle()
        XCTAssertEqual(bench.status.state, .ready, "fires once")
        XCTAssertEqual(bench.record.map(\.outcome), [.done, .interrupted, .done])
    }

    func testContactLossAtHoldsAsItsDotsTravelEnds() throws {
        var bench = try bench("contact-loss-at=2")
        bench.dot(1, id: 1)
        XCTAssertEqual(bench.dot(2, id: 2, x: 5_000).acks.first?.ackSeq, 2, "accepted: fires when dot 2 runs")
        bench.dot(3, id: 3, x: 10_000)
        // Dot 1: 0–130 ms; dot 2's travel ends at 230 ms, where contact is lost for a moment.
        bench.run(until: 229_000)
        XCTAssertEqual(bench.status.state, .running)
        bench.run(until: 230_000)
        XCTAssertEqual(bench.status.state, .held)
        XCTAssertEqual(bench.status.fault, .contactLost)
        XCTAssertEqual(bench.status.epoch, 1)
        XCTAssertEqual(bench.status.queueDepth, 0, "dot 3 fenced")
        XCTAssertEqual(bench.status.currentDotID, 0, "dot 2 never entered the skin")
        XCTAssertTrue(bench.status.needleRetracted)
        XCTAssertTrue(bench.status.skinContact, "a momentary loss")
        XCTAssertEqual(bench.record.map(\.dotID), [1])
        XCTAssertEqual(bench.send(.resume(epoch: 1, nextSeq: 4)).statuses.first?.state, .ready)
        bench.dot(4, id: 2, epoch: 1, x: 5_000)
        bench.runUntilIdle()
        XCTAssertEqual(bench.record.map(\.dotID), [1, 2], "fires once")
        XCTAssertEqual(bench.status.state, .ready)
    }

    func testOverDepthAtTripsHalfwayThroughItsDotsDwell() throws {
        var bench = try bench("over-depth-at=2")
        bench.dot(1, id: 1)
        XCTAssertEqual(bench.dot(2, id: 2, x: 5_000).acks.map(\.ackSeq), [2])
        bench.run(until: 1_000_000)
        XCTAssertEqual(bench.status.state, .fault)
        XCTAssertEqual(bench.status.fault, .overDepth)
        XCTAssertEqual(bench.status.currentDotID, 2)
        XCTAssertEqual(bench.record.map(\.outcome), [.done, .interrupted])
        XCTAssertEqual(bench.record.last?.cause, .shutdown(.overDepth))
        XCTAssertEqual(bench.record.last?.dwellDeliveredMicroseconds, 50_000)
        let refusal = bench.dot(3, id: 3).refusals.first
        XCTAssertEqual(refusal?.code, .shutdown)
        XCTAssertEqual(refusal?.fault, .overDepth)
        XCTAssertEqual(bench.send(.clear).statuses.first?.state, .disarmed)
        XCTAssertEqual(bench.send(.arm).statuses.first?.state, .ready)
    }

    func testDisconnectAtAsksTheRuntimeToDropTheLinkAndLosesTheDot() throws {
        var bench = try bench("disconnect-at=2", timeScale: 0)
        bench.dot(1, id: 1)
        let answer = bench.dot(2, id: 2)
        XCTAssertTrue(answer.isEmpty)
        XCTAssertTrue(bench.events.contains(.disconnectRequested))
        XCTAssertEqual(bench.dot(2, id: 2).acks.first?.ackSeq, 2, "a retransmission gets through: fires once")
        XCTAssertEqual(bench.record.map(\.dotID), [1, 2])
    }

    func testSlowStretchesMotionButNotTheDwell() throws {
        var bench = try bench("slow=2")
        bench.dot(1, id: 1, x: 5_000)
        bench.runUntilIdle()
        XCTAssertEqual(bench.record.first?.simulatedTimeMicroseconds, 200_000 + 30_000 + 100_000 + 30_000)
        XCTAssertEqual(bench.record.first?.dwellDeliveredMicroseconds, 100_000)
    }
}

/// A small go-back-N host (sections 6.1–6.3) against the firmware through a faulty link, in
/// virtual time: whatever the link corrupts, drops, duplicates or delays, every dot runs exactly once.
final class ExactlyOnceTests: XCTestCase {
    private struct Outstanding { var seq: UInt64 }

    func testEveryDotRunsExactlyOnceOverAFaultyLink() throws {
        let plan = try FaultPlan(spec: "corrupt=0.05,drop=0.1,duplicate=0.1,garbage=0.05,delay-ack=3ms")
        for seed in 1...4 as ClosedRange<UInt64> {
            try runSession(plan: plan, seed: seed, dots: 300)
        }
    }

    private func runSession(plan: FaultPlan, seed: UInt64, dots total: UInt64) throws {
        var configuration = FirmwareConfiguration()
        configuration.timeScale = 0.01
        configuration.queueCapacity = 16
        configuration.faults = plan
        configuration.seed = seed
        var firmware = Firmware(configuration: configuration)
        var link = LinkFaultInjector(plan: plan, seed: seed)
        var now: UInt64 = 0
        var inFlight: [(release: UInt64, bytes: [UInt8])] = []
        var decoder = FrameDecoder()
        var record: [InjectedDot] = []

        var handshaken = false, armed = false
        var base: UInt64 = 1, next: UInt64 = 1  // oldest unacknowledged, next to send
        var freeSlots: UInt64 = 16, ackAnchor: UInt64 = 0
        var lastProgress: UInt64 = 0, lastTransmit: UInt64 = 0, lastFastRetransmit: UInt64 = 0, lastControl: UInt64 = 0
        var doneCount: UInt32 = 0
        var nakCount = 0, timeouts = 0
        let nonce = UInt32(truncatingIfNeeded: seed &* 7919)

        func transmit(_ frame: Frame) {
            lastTransmit = now
            let output = firmware.receive(link.fromHost(frame.encoded()), at: now)
            record += output.injectedDots
            inFlight += link.toHost(output.frames, at: now)
        }
        func dotFrame(_ sequence: UInt64) -> Frame {
            Frame(seq: UInt8(truncatingIfNeeded: sequence),
                  .dot(DotCommand(dotID: UInt32(sequence), epoch: 0,
                                  xMicrometres: Int32(sequence % 100) * 1_000 - 50_000,
                                  yMicrometres: Int32(sequence / 100) * 1_000,
                                  depthMicrometres: 800, dwellMicroseconds: 50_000)))
        }
        /// The outstanding sequence number in `range` whose low byte is `wire`.
        func widen(_ wire: UInt8, in range: ClosedRange<UInt64>) -> UInt64? {
            range.reversed().first { UInt8(truncatingIfNeeded: $0) == wire }
        }

        while now < 120_000_000 && doneCount < total {
            now += 500
            let output = firmware.advance(to: now)
            record += output.injectedDots
            inFlight += link.toHost(output.frames, at: now)
            let due = inFlight.prefix { $0.release <= now }
            inFlight.removeFirst(due.count)
            for event in decoder.feed(due.flatMap(\.bytes)) {
                guard case .frame(let frame) = event else { continue }
                switch frame.message {
                case .helloReply(let reply) where reply.hostNonce == nonce:
                    handshaken = true
                    freeSlots = UInt64(reply.queueCapacity)
                case .status(let status):
                    if status.state == .ready || status.state == .running { armed = true }
                    XCTAssertFalse(status.state == .held || status.state.isLatched, "seed \(seed): \(status)")
                    doneCount = max(doneCount, status.doneCount)
                    // STATUS carries ack_seq and free_slots too: the credit must not depend on ACKs
                    // alone (with a full queue and nothing unacknowledged, no ACK ever comes).
                    if let acked = widen(status.ackSeq, in: (base - 1)...(next - 1)), acked >= ackAnchor {
                        ackAnchor = acked
                        freeSlots = UInt64(status.freeSlots)
                        if acked + 1 > base { base = acked + 1; lastProgress = now }
                    }
                case .ack(let ack):
                    guard base > 0, let acked = widen(ack.ackSeq, in: (base - 1)...(next - 1)) else { break }
                    if acked + 1 > base {
                        base = acked + 1
                        lastProgress = now
                    }
                    if acked >= ackAnchor {
                        ackAnchor = acked
                        freeSlots = UInt64(ack.freeSlots)
                    }
                case .nak(let nak):
                    nakCount += 1
                    guard let expected = widen(nak.expectedSeq, in: base...next) else { break }
                    if expected > base { base = expected; lastProgress = now }
                    if nak.reason == .queueFull || now - lastFastRetransmit >= 5_000 {
                        next = base  // go back N
                        lastFastRetransmit = now
                    }
                case .dotDone(let done):
                    doneCount = max(doneCount, done.doneCount)
                default:
                    break
                }
            }
            if !handshaken {
                if now - lastControl >= 100_000 || lastControl == 0 {
                    lastControl = now
                    transmit(Frame(.hello(Hello(requestedLeaseMilliseconds: 250, hostNonce: nonce))))
                }
                continue
            }
            if !armed {
                if now - lastControl >= 50_000 {
                    lastControl = now
                    transmit(Frame(.arm))
                } else if now - lastTransmit >= 20_000 {
                    transmit(Frame(.statusRequest))  // the heartbeat runs from the handshake on
                }
                continue
            }
            if base < next && now - lastProgress > 50_000 {
                next = base  // retransmission timeout: resend everything unacknowledged
                lastProgress = now
                timeouts += 1
            }
            while next <= total && next - base < 16 && (next - 1 - ackAnchor) < freeSlots {
                transmit(dotFrame(next))
                next += 1
            }
            if now - lastTransmit >= 20_000 {
                transmit(Frame(.statusRequest))
            }
        }
        XCTAssertEqual(doneCount, UInt32(total), "seed \(seed): the session completed")
        XCTAssertEqual(record.count, Int(total), "seed \(seed)")
        XCTAssertEqual(record.map(\.dotID), (1...UInt32(total)).map { $0 }, "seed \(seed): in order, each once")
        XCTAssertTrue(record.allSatisfy { $0.outcome == .done }, "seed \(seed)")
        XCTAssertGreaterThan(nakCount, 0, "seed \(seed): the link did misbehave")
        XCTAssertGreaterThan(link.toDevice.dropped + link.toHost.dropped, 0)
        XCTAssertGreaterThan(link.toDevice.duplicated + link.toHost.duplicated, 0)
        _ = timeouts
    }
}
