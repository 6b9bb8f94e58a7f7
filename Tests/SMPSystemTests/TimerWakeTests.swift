import Foundation
import SMPSystem
import XCTest

/// The eventfd wrapper, and the poll thread's wake, deadline and POLLOUT: what the link's
/// I/O thread is built from. Waits are generous; nothing asserts how long anything took.
final class TimerWakeTests: XCTestCase {
    private static let timeout: TimeInterval = 30

    /// Lines, in order, from any thread.
    private final class Journal: @unchecked Sendable {
        private let lock = NSLock()
        private var entries: [String] = []
        func add(_ entry: String) { lock.withLock { entries.append(entry) } }
        var all: [String] { lock.withLock { entries } }
    }

    private func waitUntil(_ condition: () -> Bool) {
        let end = Date().addingTimeInterval(Self.timeout)
        while !condition() && Date() < end { usleep(1_000) }
    }

    func testAnEventCounterCountsAndResets() throws {
        let fd = try Sys.eventDescriptor().get()
        defer { _ = Sys.close(fd) }
        XCTAssertEqual(try Sys.takeEventCount(fd).get(), .wouldBlock, "0: nothing to take, never blocks")
        _ = try Sys.signalEvent(fd).get()
        _ = try Sys.signalEvent(fd).get()
        XCTAssertEqual(try Sys.takeEventCount(fd).get(), .transferred(2))
        XCTAssertEqual(try Sys.takeEventCount(fd).get(), .wouldBlock)
    }

    /// The poll thread's deadline: one already past comes at once, once; one an hour away does
    /// not come; a new one replaces it; nil clears it. Set from the thread's own callbacks.
    func testADeadlineComesOnceAtItsAbsoluteTime() throws {
        let journal = Journal()
        let step = Locked(0)
        let thread = try PollThread.start(
            name: "smp-test-time", descriptors: [],
            onReady: { _, _, _ in },
            onWake: { thread in
                let now = Sys.monotonicNanoseconds()
                switch step.withLock({ $0 += 1; return $0 }) {
                case 1: thread.setDeadline(now - 1_000)  // past: at once
                case 2: thread.setDeadline(now + 3_600_000_000_000)  // an hour away
                case 3: thread.setDeadline(now + 3_600_000_000_000); thread.setDeadline(now + 20_000_000)  // replaced
                case 4: thread.setDeadline(now + 20_000_000); thread.setDeadline(nil)  // cleared
                default: thread.stop()
                }
                journal.add("wake")
            },
            onDeadline: { _ in journal.add("deadline \(Sys.currentThreadName())") },
            onDropped: { _ in },
            onExit: { journal.add("exit \($0.map { "\($0)" } ?? "nil")") }
        ).get()
        let deadline = "deadline smp-test-time"
        for expected in [["wake", deadline], ["wake"], ["wake", deadline], ["wake"]] {
            let before = journal.all.count
            thread.wake()
            waitUntil { journal.all.count >= before + expected.count }
            usleep(100_000)  // long enough for a deadline that should not come to show
            XCTAssertEqual(Array(journal.all[before...]), expected, "after wake \(step.withLock { $0 })")
        }
        thread.wake()
        waitUntil { journal.all.last == "exit nil" }
    }

    /// `wake()` from another thread gives one `onWake` on the poll thread, which may stop it;
    /// `setWritable` adds POLLOUT for a descriptor.
    func testWakeCallsOnWakeAndSetWritableAddsPOLLOUT() throws {
        let journal = Journal()
        let pipe = try Sys.pipe().get()
        defer { _ = Sys.close(pipe.readEnd); _ = Sys.close(pipe.writeEnd) }
        let thread = try PollThread.start(
            name: "smp-test-wake", descriptors: [pipe.writeEnd],
            onReady: { thread, index, revents in
                journal.add("ready \(index) \(revents & Int16(POLLOUT) != 0 ? "out" : "-") \(Sys.currentThreadName())")
                thread.setWritable(index, false)  // once is enough: level-triggered
            },
            onWake: { thread in
                journal.add("wake \(Sys.currentThreadName())")
                if journal.all.filter({ $0.hasPrefix("wake") }).count == 2 { thread.stop() }
            },
            onDropped: { _ in },
            onExit: { journal.add("exit \($0.map { "\($0)" } ?? "nil")") }
        ).get()
        thread.wake()
        waitUntil { journal.all.contains("wake smp-test-wake") }
        XCTAssertFalse(journal.all.contains { $0.hasPrefix("ready") }, "a write end is not polled for POLLIN only")
        thread.setWritable(0, true)
        waitUntil { journal.all.contains("ready 0 out smp-test-wake") }
        thread.wake()
        waitUntil { journal.all.last == "exit nil" }
        XCTAssertEqual(journal.all, ["wake smp-test-wake", "ready 0 out smp-test-wake", "wake smp-test-wake", "exit nil"])
        thread.wake()  // after the exit: nothing
        XCTAssertEqual(journal.all.last, "exit nil")
    }
}
