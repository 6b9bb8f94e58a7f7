import NeedleDriver
import SMPMachine
import XCTest

@testable import SessionRunner
@testable import SMPInterlocks
@testable import smpctl

/// The CLI is the only place that gives outcomes numbers: the sysexits table of `smpctl --help`.
final class ExitStatusTests: XCTestCase {
    func testSerialPortErrorsFollowSysexits() {
        XCTAssertEqual(ExitStatus.of(SerialPortError.noSuchDevice("p")), 69)
        XCTAssertEqual(ExitStatus.of(SerialPortError.busy("p")), 69)
        XCTAssertEqual(ExitStatus.of(SerialPortError.disconnected("p", nil)), 69)
        XCTAssertEqual(ExitStatus.of(SerialPortError.permissionDenied("p")), 77)
        XCTAssertEqual(ExitStatus.of(SerialPortError.io(operation: "read", path: "p", errno: .ioError)), 74)
        XCTAssertEqual(ExitStatus.of(SerialPortError.notATerminal("p")), 74)
        XCTAssertEqual(ExitStatus.of(SerialPortError.unsupportedBaud(1)), 74)
        XCTAssertEqual(ExitStatus.of(SerialPortError.closed), 74)
    }

    func testSessionAccountsFollowSysexits() {
        func account(_ outcome: SessionOutcome) -> SessionAccount {
            SessionAccount(outcome: outcome, reason: nil, total: 1, done: [], interrupted: [], inDoubt: [],
                           notStarted: [1], metrics: LinkMetrics(), firmwareID: nil, elapsedSeconds: 0)
        }
        let expected: [(SessionOutcome, Int32)] = [
            (.completed, 0), (.needsDecision, 64), (.refusedPlan, 65), (.linkLost, 69), (.held, 75),
            (.stopped, 75), (.declined, 75),
        ]
        for (outcome, status) in expected { XCTAssertEqual(ExitStatus.of(account(outcome)), status, "\(outcome)") }
        var failedRecords = account(.completed)
        failedRecords.recordsFailed = true
        XCTAssertEqual(ExitStatus.of(failedRecords), 74)
        // The needle power may still be on: that comes before everything, whatever the outcome.
        var powerOn = failedRecords
        powerOn.needlePowerOffFailure = NeedlePowerOffFailure(output: "needle", chip: "gpiochip0", lineOffset: 1,
                                                             error: .chipNotFound(chip: "gpiochip0", path: "/dev/gpiochip0"))
        XCTAssertEqual(ExitStatus.of(powerOn), 71)
    }

    func testMachineConfigurationErrorsFollowSysexits() {
        XCTAssertThrowsError(try MachineConfigurationLoader.load(path: "/nonexistent/smpctl/machine.toml")) { error in
            XCTAssertEqual((error as? MachineConfigurationError).map(ExitStatus.of), 66)
        }
        XCTAssertThrowsError(try MachineConfigurationLoader.load(text: "[envelope]\nlease_ms = 10\n", sourceName: "t.toml")) { error in
            XCTAssertEqual((error as? MachineConfigurationError).map(ExitStatus.of), 78)
        }
    }
}
