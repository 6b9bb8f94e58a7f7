import FirmwareProtocol
import XCTest

@testable import NeedleDriver

/// `.exact` deadlines, the timing of `ApplicatorLink`'s one-shot timerfd: no tick grid; the
/// heartbeat a quarter of the lease (§6.5; or `heartbeatLeaseDivisor`) after the last frame sent,
/// any frame standing in for it; every other timeout at its own time. Virtual time only.
final class LinkMachineExactDeadlineTests: XCTestCase {
    private let ms: UInt64 = 1_000_000

    private func host(lease: UInt16 = 100, divisor: UInt64 = 4) -> VirtualHost {
        VirtualHost {
            $0.requestedLease = .milliseconds(Int(lease))
            $0.deadlines = .exact
            $0.heartbeatLeaseDivisor = divisor
        }
    }

    /// Nothing else to send: one STATUS_REQUEST every quarter lease (or half, if asked), no
    /// wake-up between.
    func testHeartbeatAtAFractionOfTheLeaseAfterTheLastSend() {
        for (lease, divisor) in [(100, 4), (40, 4), (250, 4), (100, 2), (250, 2)] as [(UInt16, UInt64)] {
            var host = host(lease: lease, divisor: divisor)
            host.handshake(reply: .test { $0.leaseMilliseconds = lease })
            let start = host.writeTimes.count
            let end = host.now + 2_000 * ms
            var wakeUps = 0
            while host.now < end {
                let deadline = host.machine.nextDeadline!
                XCTAssertEqual(deadline, host.writeTimes.last! + UInt64(lease) * ms / divisor, "lease \(lease): nothing earlier is due")
                let frames = host.advance(to: deadline)
                wakeUps += 1
                XCTAssertEqual(VirtualHost.types(frames), [.statusRequest], "lease \(lease)")
                host.device(.status(.test(.disarmed)))
            }
            let times = host.writeTimes[(start - 1)...]
            let gaps = Set(zip(times.dropFirst(), times).map { $0 - $1 })
            XCTAssertEqual(gaps, [UInt64(lease) * ms / divisor], "lease \(lease) / \(divisor)")
            XCTAssertEqual(wakeUps, times.count - 1, "one wake-up per heartbeat")
            XCTAssertNil(host.linkLoss)
        }
    }

    /// A DOT sent is a heartbeat: the next STATUS_REQUEST waits half a lease after it.
    func testADotStandsInForTheHeartbeat() {
        var host = host(divisor: 2)
        host.armed(dots: 0)
        host.device(.status(.test(.ready)))
        host.advance(by: 30 * ms)
        host.source = [VirtualHost.dot(1)]
        host.pull()
        let sentAt = host.now
        XCTAssertEqual(host.writeTimes.last, sentAt)
        host.device(.ack(Ack(ackSeq: 1, freeSlots: 31, epoch: 0)))
        XCTAssertEqual(host.machine.nextDeadline, sentAt + 50 * ms)
        XCTAssertTrue(host.advance(to: sentAt + 50 * ms - 1).isEmpty, "nothing before half the lease")
        XCTAssertEqual(VirtualHost.types(host.advance(to: sentAt + 50 * ms)), [.statusRequest])
    }

    /// An RTO is acted on at its own time, not on the next grid tick.
    func testTheRetransmissionTimeoutIsExact() {
        var host = host(lease: 250)  // the heartbeat 62.5 ms after a send: after the RTO
        host.handshake(reply: .test { $0.leaseMilliseconds = 250 })
        host.now += 10 * ms
        host.command { $0.arm(now: $1) }  // RTO 50 ms
        let sentAt = host.now
        XCTAssertEqual(host.machine.nextDeadline, sentAt + 50 * ms)
        host.advance(to: sentAt + 50 * ms - 1)
        XCTAssertEqual(host.written.filter { $0.message == .arm }.count, 1)
        host.advance(to: sentAt + 50 * ms)
        XCTAssertEqual(host.written.filter { $0.message == .arm }.count, 2)
        XCTAssertEqual(host.writeTimes.last, sentAt + 50 * ms)
    }

    /// What is overdue and cannot be done (a DOT's retransmission behind a fence) waits the
    /// minimum RTO, never a spin of wake-ups at the same time.
    func testAnOverdueRetransmissionBehindAFenceDoesNotSpin() {
        var host = host()
        host.armed(dots: 2)
        host.command { $0.hold(now: $1) }  // the fence: DOTs are not resent until it is confirmed
        let before = host.machine.nextDeadline!
        host.advance(by: 300 * ms)  // advance(to:) fails the test if the deadline does not move
        XCTAssertGreaterThan(host.machine.nextDeadline ?? .max, before)
        XCTAssertTrue(VirtualHost.dots(host.written).count == 2, "no DOT resent behind the fence")
    }
}
