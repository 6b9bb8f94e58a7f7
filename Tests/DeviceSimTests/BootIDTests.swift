import XCTest
import FirmwareProtocol
import Logging
@testable import DeviceSim

/// Issue 12, item 4: a boot id is unique per boot, whatever the seed.
final class BootIDTests: XCTestCase {
    func testTwoSimulatorsStartedWithTheSameSeedReportDifferentBootIDs() throws {
        var options = SimulatorOptions()
        options.timeScale = 0
        options.seed = 42
        let first = try SimulatedApplicator.start(options, logger: Logger(label: "test.sim"))
        defer { first.stop() }
        let second = try SimulatedApplicator.start(options, logger: Logger(label: "test.sim"))
        defer { second.stop() }
        XCTAssertNotEqual(first.status.bootID, 0)
        XCTAssertNotEqual(second.status.bootID, 0)
        XCTAssertNotEqual(first.status.bootID, second.status.bootID,
                          "a restarted simulator with the same seed is a new boot")

        // Over the pty too: the HELLO_REPLY carries it.
        let host = try HostPort(path: second.devicePath)
        host.send([helloFrame], prefix: [0])
        XCTAssertTrue(host.read { !$0.helloReplies.isEmpty })
        XCTAssertEqual(host.received.helloReplies.first?.bootID, second.status.bootID)
    }

    func testAResetAtRebootInTheSimulatorDrawsANewID() throws {
        var options = SimulatorOptions()
        options.timeScale = 0
        options.seed = 42
        options.faults = try FaultPlan(spec: "reset-at=1")
        let simulator = try SimulatedApplicator.start(options, logger: Logger(label: "test.sim"))
        defer { simulator.stop() }
        let before = simulator.status.bootID
        let host = try HostPort(path: simulator.devicePath)
        host.send([helloFrame, Frame(.arm), dotFrame(1, id: 1)], prefix: [0])
        XCTAssertTrue(host.read { $0.statuses.contains { $0.state == .ready } && $0.statuses.last?.state == .disarmed },
                      "the boot announcement after the reset: \(host.received)")
        let after = simulator.status.bootID
        XCTAssertNotEqual(after, before)
        XCTAssertNotEqual(after, 0)
        XCTAssertTrue(simulator.status.state == .disarmed)
    }
}
