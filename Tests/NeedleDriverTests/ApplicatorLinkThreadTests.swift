import DeviceSim
import Dispatch
import FirmwareProtocol
import Foundation
import Logging
import SMPSystem
import XCTest

@testable import NeedleDriver

/// The link's driver against the simulator over a pty: the machine runs on its own I/O thread,
/// completions come on the owner's queue, and the port's descriptor is closed (the path can be
/// opened again) once the thread has ended. (That the heartbeat does not wait for a blocked
/// owner: `HostStallTests`.) Waits are generous; nothing asserts how long anything took.
final class ApplicatorLinkThreadTests: XCTestCase {
    private var logger: Logger { Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }) }

    private final class Box<Value>: @unchecked Sendable {
        private let lock = NSLock()
        private var stored: Value
        init(_ value: Value) { stored = value }
        var value: Value {
            get { lock.withLock { stored } }
            set { lock.withLock { stored = newValue } }
        }
    }

    private func linkThreads() -> Int {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        return tasks.filter {
            (try? String(contentsOfFile: "/proc/self/task/\($0)/comm", encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines) == "smp-link"
        }.count
    }

    private func waitUntil(_ condition: () -> Bool) -> Bool {
        let end = Date().addingTimeInterval(30)
        while !condition() { if Date() > end { return false }; usleep(2_000) }
        return true
    }

    func testTheMachineRunsOnItsOwnThreadWhichEndsBeforeThePortIsFree() throws {
        var options = SimulatorOptions()
        options.timeScale = 0
        let simulator = try SimulatedApplicator.start(options, logger: logger)
        defer { simulator.stop() }
        let queue = DispatchQueue(label: "test.owner")
        let port = try SerialPort.open(path: simulator.devicePath, queue: queue)
        let link = ApplicatorLink(port: port, logger: logger)
        let threadsBefore = linkThreads()

        let handshake = Box<Result<HelloReply, LinkLoss>?>(nil)
        let onOwnerQueue = Box(true)
        queue.sync {
            link.connect { result in
                onOwnerQueue.value = Sys.currentThreadName() != "smp-link"
                dispatchPrecondition(condition: .onQueue(queue))
                handshake.value = result
            }
        }
        XCTAssertTrue(waitUntil { handshake.value != nil })
        guard case .success = handshake.value else { return XCTFail("handshake: \(String(describing: handshake.value))") }
        XCTAssertTrue(onOwnerQueue.value, "completions come on the owner's queue")
        XCTAssertEqual(linkThreads(), threadsBefore + 1, "one I/O thread for the link")

        // Closing: the completion comes once the descriptor is closed and the thread has ended.
        let disarmed = Box<Bool?>(nil)
        queue.sync { link.disarmAndClose { disarmed.value = $0 } }
        XCTAssertTrue(waitUntil { disarmed.value != nil })
        XCTAssertTrue(waitUntil { linkThreads() == threadsBefore }, "the I/O thread has ended")
        let again = try SerialPort.open(path: simulator.devicePath, queue: queue)  // flock released
        queue.sync { again.close() }
    }
}

extension ApplicatorLinkThreadTests {
    /// A connected link its owner lets go of without closing: its I/O thread must not go on
    /// heartbeating for nobody; it closes the port and ends.
    func testALinkLetGoOfEndsItsThreadAndFreesThePort() throws {
        var options = SimulatorOptions()
        options.timeScale = 0
        let simulator = try SimulatedApplicator.start(options, logger: logger)
        defer { simulator.stop() }
        let queue = DispatchQueue(label: "test.owner")
        let threadsBefore = linkThreads()
        let handshook = Box(false)
        do {
            let port = try SerialPort.open(path: simulator.devicePath, queue: queue)
            let link = ApplicatorLink(port: port, logger: logger)
            queue.sync { link.connect { _ in handshook.value = true } }
            XCTAssertTrue(waitUntil { handshook.value })
        }
        XCTAssertTrue(waitUntil { linkThreads() == threadsBefore }, "the I/O thread has ended")
        let path = simulator.devicePath
        XCTAssertTrue(waitUntil {
            guard let port = try? SerialPort.open(path: path, queue: queue) else { return false }
            queue.sync { port.close() }
            return true
        }, "the port is free again")
    }
}
