import FirmwareProtocol
import XCTest

@testable import NeedleDriver

/// The device's queue refilled a quarter at a time at an applicator's pace, every freed slot at
/// once faster (`LinkConfiguration.dotRefillFloor`), and the heartbeat that goes with a pass
/// already awake (issue 15's host CPU at 10 dots/s).
final class LinkMachineRefillTests: XCTestCase {
    private let ms: UInt64 = 1_000_000
    private let device14 = HelloReply.test { $0.versionMinor = 4 }

    /// A 1.4 link streaming `dots` with the device's 32-slot queue full: every DOT acknowledged
    /// with no slot free.
    private func fullQueue(dots: Int = 64, _ configure: (inout LinkConfiguration) -> Void = { _ in }) -> VirtualHost {
        var host = VirtualHost {
            $0.deadlines = .exact
            configure(&$0)
        }
        host.armed(reply: device14, dots: dots)
        let sent = VirtualHost.dots(host.written)
        XCTAssertEqual(sent.count, 32, "the queue filled at once")
        host.advance(by: 1 * ms)
        host.device(.ack(Ack(ackSeq: sent.last!.seq, freeSlots: 0, epoch: 0)))
        return host
    }

    /// The device completes the oldest dot not yet done: its DOT_DONE, `period` after `host.now`
    /// (or at `time`).
    private func done(_ host: inout VirtualHost, after period: UInt64 = 0, at time: UInt64? = nil) -> [Frame] {
        host.advance(to: time ?? host.now + period)
        let doneCount = host.doneIDs.count + 1
        let dot = VirtualHost.dots(host.written)[doneCount - 1]
        return host.device(.dotDone(DotDone(dotSeq: dot.seq, dotID: dot.id, doneCount: UInt32(doneCount),
                                            deviceTimeMicroseconds: host.now / 1000)))
    }

    func testTheThresholdLeavesASecondOfWorkQueuedAndAtMostAQuarterOfTheQueueFree() {
        for (period, expected) in [(100 * ms, 8), (50 * ms, 8), (40 * ms, 7), (35 * ms, 3), (20 * ms, 1), (2 * ms, 1)] {
            var host = fullQueue()
            XCTAssertEqual(host.machine.dotRefillThreshold, 1, "no DOT_DONE yet: every slot at once")
            _ = done(&host, after: period)
            _ = done(&host, after: period)
            XCTAssertEqual(host.machine.dotRefillThreshold, 1, "one interval known: not yet")
            _ = done(&host, after: period)
            XCTAssertEqual(host.machine.dotRefillThreshold, expected, "DOT_DONEs \(period / ms) ms apart")
        }
        // The faster of the last two intervals: one slow one (a pause) does not open the refill.
        var host = fullQueue()
        for _ in 0..<3 { _ = done(&host, after: 5 * ms) }
        _ = done(&host, after: 10_000 * ms)
        XCTAssertEqual(host.machine.dotRefillThreshold, 1, "after a pause, the pace before it")
        // Without a floor, every slot at once.
        var unfloored = fullQueue { $0.dotRefillFloor = nil }
        for _ in 0..<4 { _ = done(&unfloored, after: 100 * ms) }
        XCTAssertEqual(unfloored.machine.dotRefillThreshold, 1)
        // A small queue: a quarter of it, never less than one.
        var small = VirtualHost { $0.deadlines = .exact }
        small.armed(reply: HelloReply.test { $0.versionMinor = 4; $0.queueCapacity = 3 }, dots: 8)
        XCTAssertEqual(small.machine.dotRefillThreshold, 1)
    }

    /// At an applicator's pace (a DOT_DONE every 99 ms, the queue full) the owner refills 8
    /// slots at a time in one write, not one DOT after each DOT_DONE; and the heartbeat due just
    /// after each DOT_DONE goes in its pass: two timed writes between DOT_DONEs. (A DOT_DONE
    /// exactly three heartbeat intervals apart — 100 ms at a 100 ms lease — leaves no room:
    /// whether the third is timed or rides the DOT_DONE then depends on which comes first.)
    func testAtAnApplicatorsPaceTheQueueIsRefilledAQuarterAtATimeAndTheHeartbeatRidesTheDone() {
        var host = fullQueue(dots: 200)
        var dotWrites: [Int] = []
        var doneTimes: [UInt64] = []
        let start = host.now
        for index in 1...40 {
            let before = host.written.count
            let frames = done(&host, at: start + UInt64(index) * 99 * ms)
            doneTimes.append(host.now)
            let dots = VirtualHost.dots(frames)
            if !dots.isEmpty { dotWrites.append(dots.count) }
            XCTAssertEqual(VirtualHost.dots(Array(host.written[before...])).count, dots.count, "DOTs only as a DOT_DONE is handled")
            if !dots.isEmpty {
                host.advance(by: 1 * ms)
                host.device(.ack(Ack(ackSeq: dots.last!.seq, freeSlots: 0, epoch: 0)))
            }
        }
        // The first two DOT_DONEs tell the pace: each refilled at once; from then on, 8 at a time.
        XCTAssertEqual(Array(dotWrites.prefix(2)), [1, 1])
        XCTAssertEqual(Set(dotWrites.dropFirst(2)), [8], "\(dotWrites)")
        XCTAssertGreaterThanOrEqual(dotWrites.dropFirst(2).count, 4)
        // Once the pace is known: a write with each DOT_DONE (a heartbeat pair, or the refill),
        // then two timed heartbeat pairs before the next.
        for (previous, next) in zip(doneTimes.dropFirst(3), doneTimes.dropFirst(4)) {
            let writes = host.writeTimes.filter { $0 >= previous && $0 < next }
            XCTAssertEqual(writes.first, previous, "a write as the DOT_DONE is handled")
            XCTAssertEqual(writes.filter { $0 > previous + 1 * ms }.count, 2, "two timed writes before the next DOT_DONE")
        }
        XCTAssertNil(host.linkLoss)
    }

    /// Faster than a second of work in the queue, every freed slot is refilled as its DOT_DONE
    /// comes, as before; the DOTs stand in for the heartbeat, and none goes with the DOT_DONE.
    func testFasterEveryFreedSlotIsRefilledAtOnceWithNoHeartbeatBesideIt() {
        var host = fullQueue(dots: 200)
        for _ in 0..<30 {
            let frames = done(&host, after: 10 * ms)
            XCTAssertEqual(VirtualHost.types(frames), [.dot], "one DOT for the freed slot, nothing else")
            host.advance(by: 1 * ms)
            host.device(.ack(Ack(ackSeq: VirtualHost.dots(frames).last!.seq, freeSlots: 0, epoch: 0)))
        }
        XCTAssertNil(host.linkLoss)
    }
}
