import XCTest
import Foundation
import FirmwareProtocol
import Logging
@testable import DeviceSim
#if canImport(Glibc)
import Glibc
#endif

/// The host's end of the pty, opened by hand as a real host would open the device's tty.
final class HostPort {
    let fd: Int32
    private var decoder = FrameDecoder()
    private(set) var received: [Message] = []

    init(path: String) throws {
        fd = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC)
        guard fd >= 0 else { throw SimulatorError.system("open(\(path))", errno: errno) }
        var tio = termios()
        guard tcgetattr(fd, &tio) == 0 else { throw SimulatorError.system("tcgetattr", errno: errno) }
        cfmakeraw(&tio)
        guard tcsetattr(fd, TCSANOW, &tio) == 0 else { throw SimulatorError.system("tcsetattr", errno: errno) }
    }

    deinit { close(fd) }

    func send(_ frames: [Frame], prefix: [UInt8] = []) {
        let bytes = prefix + frames.flatMap { $0.encoded() }
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if written < 0 && errno == EINTR { continue }
            XCTAssertGreaterThan(written, 0)
            if written <= 0 { return }
            offset += written
        }
    }

    /// Waits until the device side hangs up (POLLHUP, EOF or EIO); true if it did.
    func waitForHangUp(timeout: Double = 10) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        var buffer = [UInt8](repeating: 0, count: 4096)
        while deadline.timeIntervalSinceNow > 0 {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 200) > 0 else { continue }
            if poller.revents & Int16(POLLHUP | POLLERR) != 0 { return true }
            let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) }
            if count == 0 || (count < 0 && errno == EIO) { return true }
        }
        return false
    }

    /// Reads until `done(received)` holds or `timeout` seconds pass; true if it held.
    @discardableResult
    func read(timeout: Double = 10, until done: ([Message]) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !done(received) {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { return false }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, Int32(min(left, 0.2) * 1000) + 1)
            if ready <= 0 { continue }
            let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) }
            if count <= 0 { return false }
            for event in decoder.feed(buffer[..<count]) {
                if case .frame(let frame) = event { received.append(frame.message) }
            }
        }
        return true
    }
}

/// A DOT at `x` (default: 1 mm per dot id, so dots keep the device's minimum spacing).
func dotFrame(_ seq: UInt8, id: UInt32, x: Int32? = nil, epoch: UInt16 = 0) -> Frame {
    Frame(seq: seq, .dot(DotCommand(dotID: id, epoch: epoch, xMicrometres: x ?? Int32(id % 100) * 1_000, yMicrometres: 0,
                                    depthMicrometres: 700, dwellMicroseconds: 50_000)))
}

/// A 1.2 host's HELLO: an ACK for every DOT and a STATUS on every state change (what these tests
/// read frame by frame); 1.3's quieter link is QuietLinkTests'.
let helloFrame = Frame(.hello(Hello(versionMinor: 2, requestedLeaseMilliseconds: 250, hostNonce: 0x5EED)))

final class SimulatedApplicatorTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("smp-sim-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    func testHostDrivesTheDeviceOverThePTYAndTheRecordHasEachDotOnce() throws {
        var options = SimulatorOptions()
        options.timeScale = 0
        options.recordPath = directory + "/record.ndjson"
        options.linkPath = directory + "/applicator"
        let simulator = try SimulatedApplicator.start(options, logger: Logger(label: "test.sim"))
        defer { simulator.stop() }
        XCTAssertTrue(simulator.devicePath.hasPrefix("/dev/pts/"))
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: options.linkPath!), simulator.devicePath)

        let host = try HostPort(path: options.linkPath!)
        host.send([helloFrame, Frame(.arm)] + (1...3).map { dotFrame($0, id: 100 + UInt32($0), x: Int32($0) * 1_000) },
                  prefix: [0])
        XCTAssertTrue(host.read { $0.dotDones.count >= 3 }, "received: \(host.received)")
        XCTAssertEqual(host.received.helloReplies.first?.hostNonce, 0x5EED)
        XCTAssertEqual(host.received.acks.map(\.ackSeq), [1, 2, 3])
        XCTAssertEqual(host.received.dotDones.map(\.dotID), [101, 102, 103])

        // Retransmissions: acknowledged, never executed again.
        host.send((1...3).map { dotFrame($0, id: 100 + UInt32($0), x: Int32($0) * 1_000) })
        XCTAssertTrue(host.read { $0.acks.count >= 6 })
        XCTAssertEqual(host.received.acks.suffix(3).map(\.ackSeq), [3, 3, 3])

        // A host can close the port and open it again: the device is still there.
        let second = try HostPort(path: simulator.devicePath)
        second.send([Frame(.statusRequest)])
        XCTAssertTrue(second.read { !$0.statuses.isEmpty })
        XCTAssertEqual(second.received.statuses.first?.doneCount, 3)

        XCTAssertEqual(simulator.status.doneCount, 3)
        XCTAssertEqual(simulator.injectedDots.map(\.dotID), [101, 102, 103])
        simulator.stop()
        XCTAssertFalse(FileManager.default.fileExists(atPath: options.linkPath!), "link removed on stop")
        XCTAssertNil(try? FileManager.default.destinationOfSymbolicLink(atPath: options.linkPath!))
        simulator.stop()  // idempotent

        let lines = try GroundTruthRecord.read(path: options.recordPath!)
        XCTAssertEqual(lines.count, 3)
        let dots = lines.compactMap { $0 }
        XCTAssertEqual(dots.map(\.dotID), [101, 102, 103], "each dot exactly once")
        XCTAssertEqual(dots.map(\.outcome), [.done, .done, .done])
        XCTAssertEqual(Set(dots.map(\.bootID)), [simulator.status.bootID])
    }

    func testEstopButtonAndContactSensorThroughTheRuntime() throws {
        var options = SimulatorOptions()
        options.timeScale = 0
        let simulator = try SimulatedApplicator.start(options, logger: Logger(label: "test.sim"))
        defer { simulator.stop() }
        let host = try HostPort(path: simulator.devicePath)
        host.send([helloFrame])
        XCTAssertTrue(host.read { !$0.helloReplies.isEmpty })
        // Contact lost before ARM: arming holds at once (no race with the real-time lease).
        simulator.setSkinContact(false)
        host.send([Frame(.arm)])
        XCTAssertTrue(host.read { $0.statuses.contains { $0.state == .held } })
        XCTAssertEqual(host.received.statuses.last?.fault, .contactLost)
        XCTAssertEqual(simulator.status.state, .held)
        XCTAssertFalse(simulator.status.skinContact)
        simulator.setSkinContact(true)
        simulator.pressEstopButton()
        XCTAssertEqual(simulator.status.state, .estop)
        XCTAssertTrue(host.read { $0.statuses.contains { $0.fault == .estopButton } })
        host.send([Frame(.clear)])
        XCTAssertTrue(host.read { !$0.refusals.isEmpty })
        XCTAssertEqual(host.received.refusals.first?.code, .shutdown)
        simulator.releaseEstopButton()
        host.send([Frame(.clear)])
        XCTAssertTrue(host.read { $0.statuses.contains { $0.state == .disarmed } })
    }

    func testRealTimeLeaseExpiresWithoutAHeartbeat() throws {
        var options = SimulatorOptions()
        options.timeScale = 0.01
        let simulator = try SimulatedApplicator.start(options, logger: Logger(label: "test.sim"))
        defer { simulator.stop() }
        let host = try HostPort(path: simulator.devicePath)
        host.send([helloFrame, Frame(.arm), dotFrame(1, id: 1)])
        XCTAssertTrue(host.read { $0.statuses.contains { $0.state == .held && $0.fault == .leaseExpired } },
                      "the timer fires the lease without any input")
        XCTAssertEqual(host.received.dotDones.map(\.dotID), [1])
    }

    func testLinkPathRefusesToReplaceARegularFileAndReplacesAStaleLink() throws {
        let file = directory + "/occupied"
        try "keep me".write(toFile: file, atomically: false, encoding: .utf8)
        var options = SimulatorOptions()
        options.linkPath = file
        XCTAssertThrowsError(try SimulatedApplicator.start(options, logger: Logger(label: "test.sim"))) { error in
            XCTAssertEqual(error as? SimulatorError, .linkPathOccupied(file))
        }
        XCTAssertEqual(try String(contentsOfFile: file, encoding: .utf8), "keep me")

        let link = directory + "/stale"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: "/dev/pts/99999")
        options.linkPath = link
        let simulator = try SimulatedApplicator.start(options, logger: Logger(label: "test.sim"))
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: link), simulator.devicePath)
        simulator.stop()
        XCTAssertNil(try? FileManager.default.destinationOfSymbolicLink(atPath: link))
    }

    func testInvalidOptionsAreRejected() {
        var options = SimulatorOptions()
        options.timeScale = -1
        XCTAssertThrowsError(try SimulatedApplicator.start(options, logger: Logger(label: "test.sim")))
        options = SimulatorOptions()
        options.queueCapacity = 0
        XCTAssertThrowsError(try SimulatedApplicator.start(options, logger: Logger(label: "test.sim")))
    }
}

final class RuntimeFaultTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("smp-sim-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// `--baud`: the wire paced like an 8N1 UART (10 bits a byte) both ways. What is checked here
    /// is that a session still works over it, each dot once —
    /// not how long it takes (benchmarks measure; `smpctl sim --baud`).
    func testAPacedWireStillCarriesASessionEachDotOnce() throws {
        XCTAssertEqual(SimulatedApplicator.wireMicroseconds(11_520, baud: 115_200), 1_000_000)
        XCTAssertEqual(SimulatedApplicator.wireMicroseconds(28, baud: 921_600), 303)
        var refused = SimulatorOptions()
        refused.baud = 50
        XCTAssertThrowsError(try SimulatedApplicator.start(refused, logger: Logger(label: "test.sim")))

        var options = SimulatorOptions()
        options.timeScale = 0
        options.minimumDotIntervalMicroseconds = 0
        options.baud = 115_200
        options.recordPath = directory + "/record.ndjson"
        let simulator = try SimulatedApplicator.start(options, logger: Logger(label: "test.sim"))
        defer { simulator.stop() }
        let host = try HostPort(path: simulator.devicePath)
        let hello13 = Frame(.hello(Hello(requestedLeaseMilliseconds: 250, hostNonce: 0x5EED)))
        host.send([hello13, Frame(.arm)] + (1...5).map { dotFrame($0, id: UInt32($0)) }, prefix: [0])
        XCTAssertTrue(host.read { $0.dotDones.count >= 5 }, "received: \(host.received)")
        XCTAssertEqual(host.received.dotDones.map(\.dotID), [1, 2, 3, 4, 5])
        simulator.stop()
        XCTAssertEqual(simulator.injectedDots.map(\.dotID), [1, 2, 3, 4, 5])
    }

    private func start(_ spec: String, link: Bool = false) throws -> SimulatedApplicator {
        var options = SimulatorOptions()
        options.timeScale = 0
        options.seed = 3
        options.faults = try FaultPlan(spec: spec)
        options.recordPath = directory + "/record.ndjson"
        if link { options.linkPath = directory + "/applicator" }
        return try SimulatedApplicator.start(options, logger: Logger(label: "test.sim"))
    }

    func testDisconnectClosesTheMasterAndALinkPointsToTheNewPTY() throws {
        let simulator = try start("disconnect-at=2", link: true)
        defer { simulator.stop() }
        let link = directory + "/applicator"
        let firstPath = simulator.devicePath
        let bootID = simulator.status.bootID
        let host = try HostPort(path: link)
        host.send([helloFrame, Frame(.arm), dotFrame(1, id: 1)], prefix: [0])
        XCTAssertTrue(host.read { $0.dotDones.count == 1 })
        host.send([dotFrame(2, id: 2)])
        XCTAssertTrue(host.waitForHangUp(), "the host sees the device go away")
        // While it is away the link is gone, as udev removes an unplugged device's symlink: it
        // must not point at a freed /dev/pts/N another process's new pty may get.
        if simulator.devicePath == firstPath {
            XCTAssertNil(try? FileManager.default.destinationOfSymbolicLink(atPath: link), "a link to a pty that is gone")
        }

        // The device comes back as a new tty (the old one is still held open by the host here).
        let deadline = Date().addingTimeInterval(10)
        while simulator.devicePath == firstPath && Date() < deadline { usleep(10_000) }
        XCTAssertNotEqual(simulator.devicePath, firstPath)
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: link), simulator.devicePath)

        let again = try HostPort(path: link)
        again.send([Frame(.hello(Hello(requestedLeaseMilliseconds: 250, hostNonce: 77)))], prefix: [0])
        XCTAssertTrue(again.read { !$0.helloReplies.isEmpty })
        let reply = again.received.helloReplies.first
        XCTAssertEqual(reply?.bootID, bootID, "a disconnect is not a reboot")
        XCTAssertEqual(reply?.doneCount, 1)
        again.send([Frame(.statusRequest)])
        XCTAssertTrue(again.read { !$0.statuses.isEmpty })
        XCTAssertEqual(again.received.statuses.last?.state, .held, "the lease expired while the link was down")
        XCTAssertEqual(again.received.statuses.last?.fault, .leaseExpired)
        XCTAssertEqual(simulator.injectedDots.map(\.dotID), [1], "dot 2 was lost with the link")
        simulator.stop()
        XCTAssertNil(try? FileManager.default.destinationOfSymbolicLink(atPath: link))
    }

    func testDuplicatedFramesBothWaysStillRunEachDotOnce() throws {
        let simulator = try start("duplicate=1")
        defer { simulator.stop() }
        let host = try HostPort(path: simulator.devicePath)
        host.send([helloFrame, Frame(.arm)] + (1...3).map { dotFrame($0, id: UInt32($0)) }, prefix: [0])
        XCTAssertTrue(host.read { $0.dotDones.count >= 6 })
        XCTAssertEqual(host.received.dotDones.map(\.dotID), [1, 1, 2, 2, 3, 3], "every device frame arrives twice")
        simulator.stop()
        XCTAssertEqual(simulator.injectedDots.map(\.dotID), [1, 2, 3])
        XCTAssertEqual(try GroundTruthRecord.read(path: directory + "/record.ndjson").compactMap { $0?.dotID }, [1, 2, 3])
        XCTAssertGreaterThan(simulator.linkFaultCounters.toDevice.duplicated, 0)
    }

    func testDelayedAcksKeepTheStreamInOrder() throws {
        let simulator = try start("delay-ack=20ms")
        defer { simulator.stop() }
        let host = try HostPort(path: simulator.devicePath)
        host.send([helloFrame, Frame(.arm), dotFrame(1, id: 1), dotFrame(2, id: 2)], prefix: [0])
        XCTAssertTrue(host.read { $0.dotDones.count >= 2 })
        let kinds = host.received.compactMap { message -> String? in
            switch message {
            case .ack(let ack): "ack\(ack.ackSeq)"
            case .dotDone(let done): "done\(done.dotID)"
            default: nil
            }
        }
        XCTAssertEqual(kinds, ["ack1", "done1", "ack2", "done2"])
        XCTAssertEqual(simulator.linkFaultCounters.toHost.delayedAcks, 2)
    }

    func testCorruptedLinkExecutesNothing() throws {
        let simulator = try start("corrupt=1")
        defer { simulator.stop() }
        let host = try HostPort(path: simulator.devicePath)
        host.send([helloFrame, Frame(.arm), dotFrame(1, id: 1)], prefix: [0])
        let deadline = Date().addingTimeInterval(10)
        while simulator.status.discardedBlocks < 3 && Date() < deadline { usleep(5_000) }
        XCTAssertEqual(simulator.status.discardedBlocks, 3)
        XCTAssertEqual(simulator.status.state, .disarmed)
        XCTAssertTrue(simulator.injectedDots.isEmpty)
    }
}
