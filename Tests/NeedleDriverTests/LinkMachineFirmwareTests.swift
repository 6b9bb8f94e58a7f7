import DeviceSim
import FirmwareProtocol
import XCTest

@testable import NeedleDriver

/// The host's link machine against the firmware core — two pure machines — on one virtual
/// clock, over a simulated wire that drops and corrupts frames both ways. No pty, no sleep: a
/// whole session in milliseconds of real time.
final class LinkMachineFirmwareTests: XCTestCase {
    func testAWholeSessionOverALossyWireInjectsEveryDotExactlyOnce() {
        for seed in 1...4 as ClosedRange<UInt64> {
            var loop = Loop(seed: seed, dots: 300, dropRate: 0.04, corruptRate: 0.02)
            loop.run()
            let ids = (1...300).map(UInt32.init)
            XCTAssertNil(loop.failure, "seed \(seed)")
            XCTAssertEqual(loop.host.doneIDs.sorted(), ids, "seed \(seed): the host's account, each dot once")
            let done = loop.injected.filter { $0.outcome == .done }.map(\.dotID)
            XCTAssertEqual(done.sorted(), ids, "seed \(seed): the device's ground truth, each dot once")
            XCTAssertTrue(loop.injected.allSatisfy { $0.outcome == .done }, "seed \(seed): nothing cut short")
            XCTAssertEqual(loop.host.disarmed, true, "seed \(seed): CLEAR confirmed at the end")
            XCTAssertGreaterThan(loop.host.machine.metrics.retransmissions, 0, "seed \(seed): the loss was felt")
            XCTAssertGreaterThan(loop.host.machine.metrics.badFramesReceived, 0, "seed \(seed)")
        }
    }

    func testAPerfectWireNeedsNoRetransmission() {
        var loop = Loop(seed: 9, dots: 200, dropRate: 0, corruptRate: 0)
        loop.run()
        XCTAssertNil(loop.failure)
        XCTAssertEqual(loop.host.doneIDs, (1...200).map(UInt32.init), "in plan order")
        XCTAssertEqual(loop.host.machine.metrics.retransmissions, 0)
        XCTAssertEqual(loop.host.disarmed, true)
    }

    /// Version negotiation (firmware-protocol.md §6.7.2), both ways: a 1.3 host with a 1.1 or
    /// 1.2 device, and a 1.1 or 1.2 host with a 1.3 device, over a lossy wire — each dot once.
    func testOlderPeersOnEitherSideStillInjectEveryDotExactlyOnce() {
        for (hostMinor, deviceMinor) in [(UInt8(3), UInt8(1)), (3, 2), (1, 3), (2, 3), (3, 3)] {
            var loop = Loop(seed: 5, dots: 150, dropRate: 0.03, corruptRate: 0.02,
                            device: { $0.protocolMinor = deviceMinor }, link: { $0.protocolMinor = hostMinor })
            loop.run()
            let label = "host 1.\(hostMinor), device 1.\(deviceMinor)"
            XCTAssertNil(loop.failure, label)
            XCTAssertEqual(loop.host.machine.hello?.versionMinor, deviceMinor, label)
            XCTAssertEqual(loop.host.doneIDs.sorted(), (1...150).map(UInt32.init), label)
            XCTAssertEqual(loop.injected.filter { $0.outcome == .done }.map(\.dotID).sorted(), (1...150).map(UInt32.init), label)
            XCTAssertEqual(loop.host.disarmed, true, label)
        }
    }

    /// Over a line paced like a UART at 115200 baud (8N1), the link saturated (instant physics,
    /// no pace): with the line's byte rate the host never retransmits spuriously; without it
    /// (the 25 ms floor, a 32-DOT window) it does. At 1.3 the device sends fewer ACKs than DOTs.
    func testASlowUARTCausesNoSpuriousGoBackN() {
        func run(knowsRate: Bool, minor: UInt8 = ProtocolVersion.minor) -> Loop {
            var loop = Loop(seed: 3, dots: 400, dropRate: 0, corruptRate: 0, bytesPerSecond: 11_520,
                            device: { $0.timeScale = 0; $0.minimumDotIntervalMicroseconds = 0; $0.protocolMinor = minor },
                            link: { if knowsRate { $0.lineBytesPerSecond = 11_520 } })
            loop.run()
            return loop
        }
        let paced = run(knowsRate: true)
        XCTAssertNil(paced.failure)
        XCTAssertEqual(paced.host.doneIDs, (1...400).map(UInt32.init))
        XCTAssertEqual(paced.host.machine.metrics.retransmissions, 0, "no spurious go-back-N")
        XCTAssertLessThan(paced.acksToHost, 400, "one ACK per block of DOTs, not per DOT")
        let blind = run(knowsRate: false)
        XCTAssertNil(blind.failure)
        XCTAssertEqual(blind.host.doneIDs.sorted(), (1...400).map(UInt32.init), "still each once")
        XCTAssertGreaterThan(blind.host.machine.metrics.retransmissions, 0, "the test can see the problem")
        let older = run(knowsRate: true, minor: 2)
        XCTAssertNil(older.failure)
        XCTAssertEqual(older.acksToHost, 400, "a 1.2 device: an ACK per DOT")
        XCTAssertEqual(older.host.machine.metrics.retransmissions, 0)
    }

    /// A session at an applicator's pace (the device's own pace, 100 ms between dots: DOTs a
    /// lease apart and paired heartbeats between them) over a wire that loses two host frames in
    /// a row every few frames, at every offset: the device's lease never expires (§6.5: three in
    /// a row must be lost), and every dot is injected once. The real firmware core judges it.
    func testTwoHostFramesLostInARowAtAnApplicatorsPaceNeverExpireTheLease() {
        for offset in 0..<7 {
            var loop = Loop(seed: 11, dots: 40, dropRate: 0, corruptRate: 0, device: {
                $0.timeScale = 1
                $0.minimumDotIntervalMicroseconds = 100_000
            })
            loop.dropToDevice = { index in index >= offset && (index - offset) % 7 < 2 }
            loop.run()
            let label = "offset \(offset)"
            XCTAssertNil(loop.failure, label)
            XCTAssertGreaterThan(loop.framesToDeviceSinceArm, 100, "\(label): the stream was long enough to lose some")
            XCTAssertEqual(loop.leaseExpiries, 0, "\(label): the lease held")
            XCTAssertEqual(loop.injected.filter { $0.outcome == .done }.map(\.dotID).sorted(), (1...40).map(UInt32.init), label)
            XCTAssertEqual(loop.host.disarmed, true, label)
        }
    }

    /// At an applicator's pace the owner refills the device's queue a quarter at a time
    /// (`LinkConfiguration.dotRefillFloor`): against the real firmware core, every dot is
    /// injected once, the queue never runs dry, and the device ACKs (and the host writes DOTs)
    /// a fraction as often as when every freed slot is refilled at once.
    func testRefillingAQuarterOfTheQueueAtATimeInjectsEveryDotOnceAndNeverRunsDry() {
        var runs: [(acks: Int, dotWrites: Int)] = []
        for floor in [Duration?.none, .seconds(1)] {
            // A UART at 115200 baud: each write arrives as one read, its DOTs ACKed together.
            var loop = Loop(seed: 5, dots: 80, dropRate: 0, corruptRate: 0, bytesPerSecond: 11_520, device: {
                $0.timeScale = 1
                $0.minimumDotIntervalMicroseconds = 100_000
            }, link: { $0.deadlines = .exact; $0.dotRefillFloor = floor })
            loop.run()
            let label = "floor \(String(describing: floor))"
            XCTAssertNil(loop.failure, label)
            XCTAssertEqual(loop.injected.filter { $0.outcome == .done }.map(\.dotID).sorted(), (1...80).map(UInt32.init), label)
            XCTAssertEqual(loop.firmware.underruns, 0, "\(label): the queue never ran dry")
            XCTAssertEqual(loop.leaseExpiries, 0, label)
            let dotTimes = Set(zip(loop.host.written, loop.host.writtenTimes).filter { $0.0.message.type == .dot }.map(\.1))
            runs.append((loop.acksToHost, dotTimes.count))
        }
        XCTAssertGreaterThanOrEqual(runs[0].dotWrites, 80 - 32, "every freed slot at once: a write per DOT_DONE: \(runs)")
        XCTAssertLessThanOrEqual(runs[1].dotWrites, 2 + (80 - 32) / 8 + 2, "a quarter at a time")
        XCTAssertLessThan(runs[1].acks * 3, runs[0].acks, "the device ACKs a fraction as often: \(runs)")
    }

    /// The session as the owner would run it: arm after the handshake, put returned dots back
    /// first, resume a device that held on its own (a lost heartbeat can let its lease expire),
    /// CLEAR once every dot is done.
    struct Loop {
        var host = VirtualHost()
        var firmware: Firmware
        var rng: SplitMix64
        let dropRate: Double
        let corruptRate: Double
        let total: Int
        var toDevice: [(at: UInt64, bytes: [UInt8])] = []
        var toHost: [(at: UInt64, bytes: [UInt8])] = []
        var injected: [InjectedDot] = []
        var failure: String?
        /// ACK frames the device sent.
        var acksToHost = 0
        /// Host → device frames sent since ARM, and which of them the wire loses (by that count).
        var framesToDeviceSinceArm = 0
        var dropToDevice: ((Int) -> Bool)?
        /// Every STATUS the host was told of whose fault was a lease that expired.
        var leaseExpiries = 0
        /// A UART's byte rate both ways (nil: frames arrive one by one after `latency`): each
        /// write's bytes leave after the ones before it and arrive together (one read).
        let bytesPerSecond: Int?
        private var wireFree: (toDevice: UInt64, toHost: UInt64) = (0, 0)
        private var seenEvents = 0
        private var hostBytesSeen = 0
        private var armed = false
        private var ending = false
        private let origin: UInt64
        private let latency: UInt64 = 300_000

        init(seed: UInt64, dots: Int, dropRate: Double, corruptRate: Double, bytesPerSecond: Int? = nil,
             device: (inout FirmwareConfiguration) -> Void = { _ in }, link: (inout LinkConfiguration) -> Void = { _ in }) {
            var configuration = FirmwareConfiguration()
            configuration.timeScale = 0.02
            configuration.bootIDEntropy = seed
            device(&configuration)
            firmware = Firmware(configuration: configuration, at: 0)
            host = VirtualHost(link)
            self.bytesPerSecond = bytesPerSecond
            rng = SplitMix64(seed: seed)
            self.dropRate = dropRate
            self.corruptRate = corruptRate
            total = dots
            origin = host.now
            host.source = (1...dots).map { id in
                DotCommand(dotID: UInt32(id), epoch: 0, xMicrometres: Int32(id % 20) * 1000, yMicrometres: Int32(id / 20) * 1000,
                           depthMicrometres: 800, dwellMicroseconds: 30_000)
            }
        }

        mutating func run() {
            host.command { $0.connect(nonce: VirtualHost.nonce, now: $1) }
            afterHostStep()
            let limit = host.now + 600_000_000_000
            while failure == nil, host.now < limit, !(host.portClosed && toDevice.isEmpty) {
                let deviceDue = firmware.nextDeadline.map { origin + $0 * 1000 }
                let next = [host.machine.nextDeadline, deviceDue, toDevice.first?.at, toHost.first?.at]
                    .compactMap { $0 }.min()
                guard let next else { break }
                host.now = max(host.now, next)
                if let arrival = toDevice.first, arrival.at <= host.now {
                    toDevice.removeFirst()
                    fromDevice(firmware.receive(arrival.bytes, at: deviceTime))
                } else if let arrival = toHost.first, arrival.at <= host.now {
                    toHost.removeFirst()
                    host.deliver(arrival.bytes)
                    afterHostStep()
                } else if let due = deviceDue, due <= host.now {
                    fromDevice(firmware.advance(to: deviceTime))
                } else {
                    host.step { $0.tick(now: $1) }
                    host.pull()
                    afterHostStep()
                }
            }
            if failure == nil, !host.portClosed { failure = "did not finish: \(host.doneIDs.count) of \(total) done" }
        }

        private var deviceTime: UInt64 { (host.now - origin) / 1000 }

        private mutating func fromDevice(_ output: FirmwareOutput) {
            injected += output.injectedDots
            acksToHost += output.frames.filter { $0.message.type == .ack }.count
            send(output.bytes, toDevice: false)
        }

        /// The host's new bytes onto the wire, then the owner's reaction to its new events.
        private mutating func afterHostStep() {
            while true {
                send(Array(host.writtenBytes[hostBytesSeen...]), toDevice: true)
                hostBytesSeen = host.writtenBytes.count
                guard seenEvents < host.events.count || (!armed && host.handshake != nil) else { return }
                react()
            }
        }

        private mutating func react() {
            if !armed, case .success = host.handshake {
                armed = true
                host.command { $0.arm(now: $1) }
                host.command { machine, _ in machine.startStreaming() }
            } else if !armed {
                failure = "handshake: \(String(describing: host.handshake))"
            }
            while seenEvents < host.events.count {
                let event = host.events[seenEvents]
                seenEvents += 1
                switch event {
                case .dotsReturned(let dots): host.source.insert(contentsOf: dots, at: 0)
                case .dotsInDoubt, .dotInterrupted, .refused, .linkLost: failure = "\(event)"
                case .deviceStatus(let status) where status.state == .held && status.needleRetracted && !ending:
                    if status.fault == .leaseExpired { leaseExpiries += 1 }
                    if !host.machine.decisionPending { host.command { $0.resume(now: $1) } }
                case .notTaken(.resume, _):
                    host.command { $0.resume(now: $1) }
                default: break
                }
            }
            if !ending, host.doneIDs.count == total {
                ending = true
                host.command { $0.disarmAndClose(now: $1) }
            }
        }

        /// Whole frames onto the wire, each dropped or corrupted at the given rates.
        private mutating func send(_ bytes: [UInt8], toDevice: Bool) {
            if let bytesPerSecond {
                guard !bytes.isEmpty else { return }
                let start = max(host.now, toDevice ? wireFree.toDevice : wireFree.toHost)
                let done = start + UInt64(bytes.count) * 1_000_000_000 / UInt64(bytesPerSecond)
                if toDevice {
                    wireFree.toDevice = done
                    self.toDevice.append((at: done + latency, bytes: bytes))
                } else {
                    wireFree.toHost = done
                    toHost.append((at: done + latency, bytes: bytes))
                }
                return
            }
            for var frame in bytes.split(separator: 0, omittingEmptySubsequences: false).dropLast().map(Array.init) {
                frame.append(0)
                if toDevice, armed {
                    framesToDeviceSinceArm += 1
                    if dropToDevice?(framesToDeviceSinceArm - 1) == true { continue }
                }
                if rng.nextUnit() < dropRate { continue }
                if rng.nextUnit() < corruptRate, frame.count > 1 {
                    frame[rng.nextInt(below: frame.count - 1)] ^= UInt8(1 + rng.nextInt(below: 255))
                }
                if toDevice { self.toDevice.append((at: host.now + latency, bytes: frame)) } else {
                    toHost.append((at: host.now + latency, bytes: frame))
                }
            }
        }
    }
}
