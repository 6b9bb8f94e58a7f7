import XCTest
import Logging
import FirmwareProtocol
@testable import DeviceSim

/// Bytes that arrived in time but were read late (the simulator's thread starved) keep the lease,
/// within the stated bound; a host that really was silent is still held.
final class LateReadCreditTests: XCTestCase {
    private let credit = LateReadCredit(toleranceMicroseconds: 50_000)

    func testBytesReadWithinTheToleranceAfterTheExpiryAreDatedJustBeforeIt() {
        XCTAssertEqual(credit.arrivalTime(readAt: 130_000, lastLookedAt: 20_000, leaseExpiry: 100_000), 99_999)
        XCTAssertEqual(credit.arrivalTime(readAt: 150_000, lastLookedAt: 20_000, leaseExpiry: 100_000), 99_999,
                       "the bound itself still counts")
    }

    func testBytesReadPastTheToleranceAreDatedAtTheRead() {
        XCTAssertEqual(credit.arrivalTime(readAt: 150_001, lastLookedAt: 20_000, leaseExpiry: 100_000), 150_001)
    }

    func testNothingChangesWhenTheExpiryIsNotBetweenTheLastLookAndTheRead() {
        XCTAssertEqual(credit.arrivalTime(readAt: 90_000, lastLookedAt: 20_000, leaseExpiry: 100_000), 90_000,
                       "read before the expiry")
        XCTAssertEqual(credit.arrivalTime(readAt: 120_000, lastLookedAt: 100_000, leaseExpiry: 100_000), 120_000,
                       "the firmware already ran to the expiry: it has been judged")
        XCTAssertEqual(credit.arrivalTime(readAt: 120_000, lastLookedAt: 20_000, leaseExpiry: nil), 120_000,
                       "no lease running")
    }

    func testTheToleranceIsHalfTheLease() {
        XCTAssertEqual(LateReadCredit.forLease(100_000).toleranceMicroseconds, 50_000)
    }

    /// The firmware itself: a heartbeat dated just before the expiry renews the lease; dated at a
    /// read past the tolerance, the device holds.
    func testTheFirmwareKeepsTheLeaseOnCreditedBytesAndHoldsOtherwise() {
        for (readAt, holds) in [(UInt64(320_000), false), (UInt64(400_000), true)] {
            var bench = Bench()
            bench.hello(lease: 250)
            bench.send(.arm)
            let lastLook = bench.firmware.now
            let arrival = LateReadCredit.forLease(bench.firmware.leaseDurationMicroseconds)
                .arrivalTime(readAt: readAt, lastLookedAt: lastLook, leaseExpiry: bench.firmware.leaseExpiry)
            bench.absorb(bench.firmware.receive(Frame(.statusRequest).encoded(), at: arrival))
            bench.absorb(bench.firmware.advance(to: readAt))
            XCTAssertEqual(bench.status.state, holds ? .held : .ready, "read at \(readAt) µs")
        }
    }

    // MARK: - The running simulator, starved

    private func armedSimulator() throws -> (SimulatedApplicator, HostPort) {
        var options = SimulatorOptions()
        options.timeScale = 0
        let simulator = try SimulatedApplicator.start(options, logger: Logger(label: "test.sim"))
        let host = try HostPort(path: simulator.devicePath)
        host.send([helloFrame, Frame(.arm)])  // lease 250 ms: credit up to 125 ms past its expiry
        XCTAssertTrue(host.read { $0.statuses.contains { $0.state == .ready } })
        return (simulator, host)
    }

    /// The simulator's queue blocked for 320 ms right after ARM; the host's heartbeat at 100 ms
    /// waits in the pty. Read ~70 ms after the expiry: in time (the margin is ±55 ms).
    func testAHeartbeatReadLateBecauseTheSimulatorWasStarvedKeepsTheLease() throws {
        let (simulator, host) = try armedSimulator()
        defer { simulator.stop() }
        simulator.asyncOnQueueForTesting { Thread.sleep(forTimeInterval: 0.32) }
        Thread.sleep(forTimeInterval: 0.1)
        host.send([Frame(.statusRequest)])
        Thread.sleep(forTimeInterval: 0.3)
        host.send([Frame(.statusRequest)])
        XCTAssertTrue(host.read { $0.statuses.count >= 3 })
        XCTAssertFalse(host.received.statuses.contains { $0.state == .held }, "\(host.received.statuses)")
        XCTAssertEqual(simulator.status.state, .ready)
        XCTAssertEqual(simulator.lateReadCredits, 1)
    }

    /// The same starvation with a silent host: nothing waits in the pty, the device holds.
    func testASilentHostIsHeldEvenWhileTheSimulatorWasStarved() throws {
        let (simulator, host) = try armedSimulator()
        defer { simulator.stop() }
        simulator.asyncOnQueueForTesting { Thread.sleep(forTimeInterval: 0.32) }
        XCTAssertTrue(host.read { $0.statuses.contains { $0.state == .held && $0.fault == .leaseExpired } })
        XCTAssertEqual(simulator.lateReadCredits, 0)
    }
}
