import FirmwareProtocol
import XCTest

@testable import NeedleDriver

/// Protocol 1.4's HEARTBEAT (firmware-protocol.md §6.5): the heartbeat a device does not answer,
/// sent while the device was heard from within the lease, to a device that speaks 1.4 only.
/// Virtual time, both deadline timings.
final class LinkMachineHeartbeatTests: XCTestCase {
    private let ms: UInt64 = 1_000_000

    private func host(_ deadlines: LinkConfiguration.DeadlineTiming, hostMinor: UInt8 = ProtocolVersion.minor) -> VirtualHost {
        VirtualHost {
            $0.deadlines = deadlines
            $0.protocolMinor = hostMinor
        }
    }

    private let device14 = HelloReply.test { $0.versionMinor = 4 }

    /// An idle link to a 1.4 device: HEARTBEATs while the last STATUS is younger than the lease,
    /// then one STATUS_REQUEST, answered, and HEARTBEATs again. The device is heard from once a
    /// lease and a heartbeat interval at the longest (a quarter on the grid, a third paired);
    /// never found lost.
    func testAnIdleLinkAsksOnceALease() {
        for deadlines in [LinkConfiguration.DeadlineTiming.tickGrid, .exact] {
            var host = host(deadlines)
            host.handshake(reply: device14)
            var heardAt = host.now
            var kinds: [MessageType] = []
            let end = host.now + 3_000 * ms
            while host.now < end {
                let frames = host.advance(to: host.machine.nextDeadline!)
                for frame in frames {
                    kinds.append(frame.message.type)
                    let sinceHeard = host.now - heardAt
                    if frame.message.type == .heartbeat {
                        XCTAssertLessThan(sinceHeard, 100 * ms, "\(deadlines): quiet only within the lease")
                    } else {
                        XCTAssertEqual(frame.message.type, .statusRequest, "\(deadlines)")
                        XCTAssertGreaterThanOrEqual(sinceHeard, 100 * ms - 25 * ms / 8, "\(deadlines): asked only when it must")
                        XCTAssertLessThanOrEqual(sinceHeard, deadlines == .exact ? 100 * ms + 100 * ms / 3 : 125 * ms,
                                                 "\(deadlines): asked within a lease and a heartbeat interval")
                        host.device(.status(.test(.disarmed)))
                        heardAt = host.now
                    }
                }
            }
            XCTAssertNil(host.linkLoss, "\(deadlines)")
            let asked = kinds.filter { $0 == .statusRequest }.count
            let quiet = kinds.filter { $0 == .heartbeat }.count
            XCTAssertGreaterThan(asked, 0, "\(deadlines)")
            XCTAssertGreaterThanOrEqual(quiet, 3 * asked - 3, "\(deadlines): three quiet heartbeats to one asked (\(kinds))")
        }
    }

    /// At an applicator's pace the device's ACKs and DOT_DONEs show it alive: every heartbeat
    /// is a HEARTBEAT and no STATUS is asked for while the dots flow.
    func testAStreamingLinkAsksForNoStatus() {
        var host = host(.exact)
        host.armed(reply: device14)
        let start = host.written.count
        for id in 1...20 {
            host.source = [VirtualHost.dot(id)]
            let sent = VirtualHost.dots(host.pull())
            XCTAssertEqual(sent.map(\.id), [UInt32(id)])
            guard let seq = sent.first?.seq else { return }
            host.advance(by: 1 * ms)
            host.device(.ack(Ack(ackSeq: seq, freeSlots: 31, epoch: 0)))
            host.advance(by: 80 * ms)
            host.device(.dotDone(DotDone(dotSeq: seq, dotID: UInt32(id), doneCount: UInt32(id),
                                         deviceTimeMicroseconds: host.now / 1000)))
            host.advance(by: 19 * ms)
        }
        let kinds = VirtualHost.types(Array(host.written[start...]))
        XCTAssertFalse(kinds.contains(.statusRequest), "\(kinds)")
        XCTAssertGreaterThanOrEqual(kinds.filter { $0 == .heartbeat }.count, 40, "\(kinds)")
        XCTAssertEqual(host.doneIDs, (1...20).map(UInt32.init))
        XCTAssertNil(host.linkLoss)
    }

    /// Older than 1.4 on either side: every heartbeat is a STATUS_REQUEST, as before.
    func testAnOlderPeerGetsStatusRequests() {
        for (hostMinor, deviceMinor) in [(ProtocolVersion.minor, UInt8(3)), (3, 4), (ProtocolVersion.minor, 2)] {
            var host = host(.exact, hostMinor: hostMinor)
            host.handshake(reply: .test { $0.versionMinor = deviceMinor })
            let start = host.written.count
            for _ in 0..<12 {
                host.advance(to: host.machine.nextDeadline!)
                host.device(.status(.test(.disarmed)))
            }
            let kinds = Set(VirtualHost.types(Array(host.written[start...])))
            XCTAssertEqual(kinds, [.statusRequest], "host 1.\(hostMinor), device 1.\(deviceMinor)")
        }
    }

    /// A 1.4 device that falls silent is found lost exactly when an older one is: a HEARTBEAT
    /// is a frame sent and unanswered like any other, and the first heartbeat after a lease of
    /// silence asks.
    func testASilentDeviceIsFoundLostAsBefore() {
        for deadlines in [LinkConfiguration.DeadlineTiming.tickGrid, .exact] {
            var lostAfter: [UInt8: UInt64] = [:]
            for deviceMinor: UInt8 in [3, 4] {
                var host = host(deadlines)
                host.handshake(reply: .test { $0.versionMinor = deviceMinor })
                let heardAt = host.now
                let start = host.written.count
                while host.linkLoss == nil, host.now < heardAt + 2_000 * ms {
                    host.advance(to: host.machine.nextDeadline!)
                }
                guard case .silent? = host.linkLoss else {
                    XCTFail("\(deadlines), device 1.\(deviceMinor): \(String(describing: host.linkLoss))")
                    continue
                }
                lostAfter[deviceMinor] = host.now - heardAt
                let kinds = VirtualHost.types(Array(host.written[start...]))
                XCTAssertTrue(kinds.contains(.statusRequest), "\(deadlines), device 1.\(deviceMinor): the host asked")
            }
            // The silence counts from the first heartbeat after the last frame heard: a quarter
            // lease on the grid and to a 1.3 device, a third paired (1.4); then the 500 ms limit,
            // and on the grid the tick after it.
            let pairedLater = deadlines == .exact ? 4 * (25 * ms) / 3 - 25 * ms : 0
            XCTAssertEqual(lostAfter[4], lostAfter[3].map { $0 + pairedLater }, "\(deadlines)")
            XCTAssertLessThanOrEqual(lostAfter[4] ?? .max, 550 * ms, "\(deadlines)")
        }
    }

    /// The device held on its own and the line lost its STATUS: the ACK of the next DOT carries
    /// the new epoch (or a NAK says `held`), and the host asks at once, then on every heartbeat
    /// until a STATUS comes, instead of streaming on into the fence a lease at a time.
    func testAnACKInAnotherEpochOrANAKHeldMakesTheHostAsk() {
        for answer in ["ack", "nak"] {
            var host = host(.exact)
            host.armed(reply: device14)
            host.source = [VirtualHost.dot(1)]
            guard let seq = VirtualHost.dots(host.pull()).first?.seq else { return XCTFail(answer) }
            host.advance(by: 1 * ms)
            let asked = answer == "ack"
                ? host.device(.ack(Ack(ackSeq: seq, freeSlots: 32, epoch: 1)))
                : host.device(.nak(Nak(expectedSeq: seq, reason: .held, freeSlots: 32)))
            XCTAssertEqual(VirtualHost.types(asked), [.statusRequest], "\(answer): asked at once")
            // (The NAKed DOT goes again at its RTO: the fence is the STATUS's to tell.) Each
            // heartbeat asks, its paired HEARTBEAT does not ask twice.
            let heartbeats = VirtualHost.types(host.advance(by: 60 * ms)).filter { $0 != .dot }
            XCTAssertFalse(heartbeats.isEmpty, answer)
            XCTAssertEqual(heartbeats, Array(repeating: [MessageType.statusRequest, .heartbeat], count: heartbeats.count / 2).flatMap { $0 },
                           "\(answer): and on every heartbeat")
            host.device(.status(.test(.held, fault: .contactLost, epoch: 1, ackSeq: seq, freeSlots: 32)))
            XCTAssertEqual(host.machine.deviceStatus?.state, .held, answer)
            XCTAssertEqual(Set(VirtualHost.types(host.advance(by: 60 * ms))), [.heartbeat], "\(answer): answered, quiet again")
        }
    }

    /// Paired (1.4 on both sides, the default): the heartbeat goes a third of the lease after the
    /// last frame sent, as two frames in one write, the second a HEARTBEAT. To a 1.3 device, or
    /// with `pairedHeartbeat` off: one frame a quarter of the lease after it, as before.
    func testAPairedHeartbeatGoesAThirdOfTheLeaseAfterTheLastFrameAsTwoFramesInOneWrite() {
        for (deviceMinor, paired) in [(UInt8(4), true), (4, false), (3, true)] {
            var host = VirtualHost {
                $0.deadlines = .exact
                $0.pairedHeartbeat = paired
            }
            host.handshake(reply: .test { $0.versionMinor = deviceMinor })
            let label = "device 1.\(deviceMinor), pairedHeartbeat \(paired)"
            let expectPairs = paired && deviceMinor >= 4
            var lastWrite = host.now
            for _ in 0..<12 {
                let writesBefore = host.writeTimes.count
                let frames = host.advance(to: host.machine.nextDeadline!)
                XCTAssertEqual(host.writeTimes.count, writesBefore + 1, "\(label): one write")
                XCTAssertEqual(host.now - lastWrite, expectPairs ? 100 * ms / 3 : 25 * ms, label)
                lastWrite = host.now
                if expectPairs {
                    XCTAssertEqual(frames.count, 2, label)
                    XCTAssertEqual(frames.last?.message.type, .heartbeat, label)
                } else {
                    XCTAssertEqual(frames.count, 1, label)
                }
                host.device(.status(.test(.disarmed)))
            }
            XCTAssertNil(host.linkLoss, label)
        }
    }

    /// A stream of `dots` DOTs each `period` apart (the next sent as the last one's DOT_DONE
    /// comes, its ACK a millisecond after it): when each frame was written, and the writes.
    private func stream(period: UInt64, paired: Bool, dots: Int = 20) -> (times: [UInt64], writes: Int, host: VirtualHost) {
        var host = VirtualHost {
            $0.deadlines = .exact
            $0.pairedHeartbeat = paired
        }
        host.armed(reply: device14)
        let start = host.written.count, writesAtStart = host.writeTimes.count
        for id in 1...dots {
            host.source = [VirtualHost.dot(id)]
            guard let seq = VirtualHost.dots(host.pull()).first?.seq else {
                XCTFail("period \(period): dot \(id) not sent")
                break
            }
            let ackAfter = min(1 * ms, period / 2)
            host.advance(by: ackAfter)
            host.device(.ack(Ack(ackSeq: seq, freeSlots: 31, epoch: 0)))
            host.advance(by: period - ackAfter)
            host.device(.dotDone(DotDone(dotSeq: seq, dotID: UInt32(id), doneCount: UInt32(id),
                                         deviceTimeMicroseconds: host.now / 1000)))
        }
        return (Array(host.writtenTimes[start...]), host.writeTimes.count - writesAtStart, host)
    }

    /// The widest span of four frames in a row: two lost between them, the lease must outlast it.
    private func widestSpanOfFour(_ times: [UInt64]) -> UInt64 {
        guard times.count > 3 else { return 0 }
        return (0..<(times.count - 3)).map { times[$0 + 3] - times[$0] }.max() ?? 0
    }

    /// At an applicator's pace (10 dots/s, a 100 ms lease) paired heartbeats keep §6.5's promise
    /// — any two frames the line loses in a row, the next still comes inside the lease, a third
    /// of it to spare — with two heartbeat writes a dot instead of three (issue 15: a timed
    /// wake-up is the host's main cost at this pace).
    func testAtAnApplicatorsPaceAnyTwoLostFramesLeaveTheLeaseHeldWithFewerWrites() {
        for paired in [true, false] {
            let (times, writes, host) = stream(period: 99 * ms, paired: paired)
            XCTAssertLessThanOrEqual(widestSpanOfFour(times), paired ? 67 * ms : 75 * ms, "paired \(paired): two lost in a row")
            // 20 DOTs and their heartbeats: 2 a dot paired, 3 a dot single.
            XCTAssertEqual(writes, paired ? 60 : 80, "paired \(paired)")
            XCTAssertEqual(host.doneIDs, (1...20).map(UInt32.init))
            XCTAssertNil(host.linkLoss)
        }
    }

    /// Whatever the DOTs' pace, two frames lost in a row leave the next at most three quarters of
    /// the lease after the last received, paired as single: DOTs a little under a third of the
    /// lease apart stand in for every heartbeat, and without the quarter after two lone frames in
    /// a row four of them would span the whole lease (99.9 ms at a 33.3 ms period).
    func testAtAnyPaceTwoLostFramesInARowLeaveTheLeaseAQuarterToSpare() {
        var periods: [UInt64] = Array(stride(from: 5 * ms, through: 200 * ms, by: Int(ms)))
        periods += [25 * ms + ms / 2, 33 * ms + ms / 3, 33 * ms + ms / 2, 66 * ms + 2 * ms / 3]
        for paired in [true, false] {
            var worst: (span: UInt64, period: UInt64) = (0, 0)
            for period in periods {
                let span = widestSpanOfFour(stream(period: period, paired: paired, dots: 12).times)
                if span > worst.span { worst = (span, period) }
            }
            XCTAssertLessThanOrEqual(worst.span, 75 * ms, "paired \(paired): at a period of \(worst.period / 1000) µs")
        }
    }
}
