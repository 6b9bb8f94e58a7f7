import Foundation
import SMPSystem
import XCTest

/// The timerfd and eventfd wrappers, and the poll thread's wake and POLLOUT: what the link's
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

    /// An absolute deadline already past expires at once; one in the future does not until then;
    /// re-arming replaces it; nil disarms.
    func testATimerExpiresOnceAtItsAbsoluteDeadline() throws {
        let fd = try Sys.timerDescriptor().get()
        defer { _ = Sys.close(fd) }
        let now = Sys.monotonicNanoseconds()
        try Sys.setTimer(fd, deadlineNanoseconds: now - 1_000).get()
        XCTAssertEqual(try Sys.poll(fd, events: Int16(POLLIN), timeoutMilliseconds: 10_000).get() & Int16(POLLIN), Int16(POLLIN))
        XCTAssertEqual(try Sys.takeEventCount(fd).get(), .transferred(1))
        XCTAssertEqual(try Sys.takeEventCount(fd).get(), .wouldBlock, "one-shot: no second expiry")

        try Sys.setTimer(fd, deadlineNanoseconds: now + 3_600_000_000_000).get()  // an hour from now
        XCTAssertEqual(try Sys.poll(fd, events: Int16(POLLIN), timeoutMilliseconds: 0).get(), 0)
        try Sys.setTimer(fd, deadlineNanoseconds: 0).get()  // long past: at once
        XCTAssertEqual(try Sys.poll(fd, events: Int16(POLLIN), timeoutMilliseconds: 10_000).get() & Int16(POLLIN), Int16(POLLIN))
        try Sys.setTimer(fd, deadlineNanoseconds: nil).get()  // disarmed: the expiry is gone too
        XCTAssertEqual(try Sys.takeEventCount(fd).get(), .wouldBlock)
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
