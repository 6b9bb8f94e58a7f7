import FirmwareProtocol
import XCTest

@testable import NeedleDriver

/// The host's side of protocol 1.3 and of a line with a byte rate (firmware-protocol.md §6.3):
/// ACK n acknowledges every DOT up to n, whatever arrives around it, and the window and RTO
/// follow the line's byte rate.
final class LinkMachineCumulativeAckTests: XCTestCase {
    /// An ACK for a sequence number never sent acknowledges nothing: the DOTs still wait for
    /// theirs and go again at the RTO.
    func testAnACKForASeqNeverSentAcknowledgesNothing() {
        var host = VirtualHost()
        host.armed(dots: 3)
        XCTAssertEqual(VirtualHost.dots(host.written).map(\.seq), [1, 2, 3])
        host.device(.ack(Ack(ackSeq: 10, freeSlots: 32, epoch: 0)))
        host.device(.ack(Ack(ackSeq: 200, freeSlots: 32, epoch: 0)))
        XCTAssertEqual(host.machine.metrics.retransmissions, 0)
        let resent = host.advance(by: 60_000_000)  // past the initial RTO (50 ms)
        XCTAssertEqual(VirtualHost.dots(resent).map(\.seq), [1, 2, 3], "go-back-N from the oldest")
        // Then one cumulative ACK settles all three: nothing more goes out at the next RTO.
        host.device(.ack(Ack(ackSeq: 3, freeSlots: 29, epoch: 0)))
        let later = host.advance(by: 500_000_000 - 80_000_000)
        XCTAssertEqual(VirtualHost.dots(later).count, 0)
        XCTAssertEqual(host.machine.metrics.retransmissions, 3)
        XCTAssertNil(host.linkLoss)
    }

    /// A NAK starts go-back-N; the device's one cumulative ACK for the resent block ends it, and a
    /// late ACK for the first copies (older) changes nothing.
    func testACumulativeACKAfterAGoBackN() {
        var host = VirtualHost()
        host.armed(dots: 6)
        XCTAssertEqual(VirtualHost.dots(host.written).map(\.seq), [1, 2, 3, 4, 5, 6])
        host.device(.ack(Ack(ackSeq: 2, freeSlots: 30, epoch: 0)))
        let resent = host.device(.nak(Nak(expectedSeq: 3, reason: .outOfOrder, freeSlots: 30)))
        XCTAssertEqual(VirtualHost.dots(resent).map(\.seq), [3, 4, 5, 6], "from expected, once")
        host.device(.ack(Ack(ackSeq: 6, freeSlots: 26, epoch: 0)))
        host.device(.ack(Ack(ackSeq: 4, freeSlots: 28, epoch: 0)))  // a late one: older, ignored
        XCTAssertEqual(VirtualHost.dots(host.advance(by: 400_000_000)).count, 0, "nothing is resent again")
        XCTAssertEqual(host.machine.metrics.retransmissions, 4)
        for seq: UInt8 in 1...6 {
            host.device(.dotDone(DotDone(dotSeq: seq, dotID: UInt32(seq), doneCount: UInt32(seq), deviceTimeMicroseconds: 0)))
        }
        XCTAssertEqual(host.doneIDs, [1, 2, 3, 4, 5, 6], "each once")
    }

    /// A DOT_DONE overtaking the batch's ACK (1.3 at instant physics) acknowledges its DOT; the
    /// ACK after it is then old news.
    func testADoneBeforeItsACKAcknowledges() {
        var host = VirtualHost()
        host.armed(dots: 2)
        host.device(.dotDone(DotDone(dotSeq: 1, dotID: 1, doneCount: 1, deviceTimeMicroseconds: 10)))
        host.device(.dotDone(DotDone(dotSeq: 2, dotID: 2, doneCount: 2, deviceTimeMicroseconds: 20)))
        host.device(.ack(Ack(ackSeq: 2, freeSlots: 32, epoch: 0)))
        XCTAssertEqual(host.doneIDs, [1, 2])
        XCTAssertEqual(VirtualHost.dots(host.advance(by: 300_000_000)).count, 0)
        XCTAssertEqual(host.machine.metrics.retransmissions, 0)
    }

    /// An older device (1.1, 1.2) reports every ready ↔ running flap and ACKs every DOT: the
    /// host streams on as before, each dot done once.
    func testAnOlderDeviceThatSendsStatusAnywayIsReadAsBefore() {
        var host = VirtualHost()
        host.armed(reply: .test { $0.versionMinor = 1 }, dots: 4)
        XCTAssertEqual(VirtualHost.dots(host.written).map(\.seq), [1, 2, 3, 4])
        for seq: UInt8 in 1...4 {
            host.device(.ack(Ack(ackSeq: seq, freeSlots: 32 - seq, epoch: 0)))
            host.device(.status(.test(.running, ackSeq: seq, freeSlots: 32 - seq)))
        }
        for seq: UInt8 in 1...4 {
            host.device(.dotDone(DotDone(dotSeq: seq, dotID: UInt32(seq), doneCount: UInt32(seq), deviceTimeMicroseconds: 0)))
            host.device(.status(.test(.ready, ackSeq: 4, lastDoneSeq: seq, lastDoneDotID: UInt32(seq), doneCount: UInt32(seq))))
        }
        XCTAssertEqual(host.doneIDs, [1, 2, 3, 4])
        XCTAssertEqual(host.machine.metrics.retransmissions, 0)
        XCTAssertEqual(host.machine.dotCredit, 32, "the whole window free again")
        XCTAssertNil(host.linkLoss)
    }

    func testTheLineBudgetFollowsTheByteRate() {
        var configuration = LinkConfiguration()
        let none = LineBudget(configuration: configuration, queueCapacity: 32)
        XCTAssertEqual(none.window, 32)
        XCTAssertEqual(none.minimumRetransmissionTimeout, .milliseconds(25))
        XCTAssertEqual(none.maximumRetransmissionTimeout, .milliseconds(200))
        configuration.lineBytesPerSecond = 11_520  // 115200 baud, 8N1
        let slow = LineBudget(configuration: configuration, queueCapacity: 32)
        XCTAssertEqual(slow.window, 17, "17 × 65 B fit in 100 ms at 11,520 B/s")
        XCTAssertEqual(slow.minimumRetransmissionTimeout, .nanoseconds(25_000_000 + 17 * 65 * 1_000_000_000 / 11_520))
        XCTAssertEqual(slow.maximumRetransmissionTimeout, .nanoseconds(2 * (25_000_000 + 17 * 65 * 1_000_000_000 / 11_520)))
        XCTAssertEqual(slow.initialRetransmissionTimeout, slow.minimumRetransmissionTimeout)
        let older = LineBudget(configuration: configuration, queueCapacity: 32, protocolMinor: 2)
        XCTAssertEqual(older.window, 9, "a 1.2 device's STATUS flaps: 9 × 127 B in 100 ms")
        XCTAssertEqual(older.minimumRetransmissionTimeout, .nanoseconds(25_000_000 + 9 * 127 * 1_000_000_000 / 11_520))
        configuration.lineBytesPerSecond = 92_160  // 921600 baud
        let fast = LineBudget(configuration: configuration, queueCapacity: 32)
        XCTAssertEqual(fast.window, 32, "the device's queue is the limit")
        XCTAssertEqual(fast.minimumRetransmissionTimeout, .nanoseconds(25_000_000 + 32 * 65 * 1_000_000_000 / 92_160))
        XCTAssertEqual(fast.maximumRetransmissionTimeout, .milliseconds(200))
        configuration.lineBytesPerSecond = 300  // absurdly slow: one DOT at a time
        XCTAssertEqual(LineBudget(configuration: configuration, queueCapacity: 32).window, 1)
    }

    /// The machine sends no more than the line's window, and waits the raised floor before
    /// resending: a DOT behind 16 others at 115200 baud is not lost at 50 ms.
    func testASlowLineBoundsTheWindowAndTheRTO() {
        var host = VirtualHost { $0.lineBytesPerSecond = 11_520 }
        host.armed(reply: .test { $0.versionMinor = 3 }, dots: 40)
        XCTAssertEqual(VirtualHost.dots(host.written).count, 17)
        XCTAssertEqual(host.machine.retransmissionTimeoutNanoseconds, 25_000_000 + 17 * 65 * 1_000_000_000 / 11_520)
        XCTAssertEqual(VirtualHost.dots(host.advance(by: 100_000_000)).count, 0, "not resent before the floor")
        host.device(.ack(Ack(ackSeq: 17, freeSlots: 15, epoch: 0)))
        XCTAssertEqual(VirtualHost.dots(host.written).count, 17, "the window is full until DOTs complete")
        host.device(.dotDone(DotDone(dotSeq: 5, dotID: 5, doneCount: 5, deviceTimeMicroseconds: 0)))
        XCTAssertEqual(VirtualHost.dots(host.written).map(\.seq).suffix(5), [18, 19, 20, 21, 22])
        XCTAssertEqual(host.machine.metrics.retransmissions, 0)
    }
}
