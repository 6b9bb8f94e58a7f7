import Foundation
import SMPSystem
import XCTest

/// The watcher thread: callbacks on the thread itself, a descriptor dropped before the owner may
/// close it, nothing after the exit, its own pipe closed by then. Waits are generous; nothing
/// asserts how long anything took.
final class PollThreadTests: XCTestCase {
    private static let timeout: TimeInterval = 30

    /// What the callbacks saw, in order, and on which thread.
    private final class Journal: @unchecked Sendable {
        private let lock = NSLock()
        private var entries: [String] = []
        private var threads: Set<String> = []
        private var waiters: [(([String]) -> Bool, XCTestExpectation)] = []

        func add(_ entry: String) {
            lock.lock()
            entries.append(entry)
            threads.insert(Sys.currentThreadName())
            let snapshot = entries
            let ready = waiters.filter { $0.0(snapshot) }
            waiters.removeAll { waiter in ready.contains { $0.1 === waiter.1 } }
            lock.unlock()
            ready.forEach { $0.1.fulfill() }
        }

        var all: [String] { lock.withLock { entries } }
        var threadNames: Set<String> { lock.withLock { threads } }

        func when(_ condition: @escaping ([String]) -> Bool) -> XCTestExpectation {
            let expectation = XCTestExpectation(description: "journal")
            lock.lock()
            if condition(entries) {
                lock.unlock()
                expectation.fulfill()
            } else {
                waiters.append((condition, expectation))
                lock.unlock()
            }
            return expectation
        }
    }

    private func openDescriptors() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").sorted().map {
            "\($0) → \((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\($0)")) ?? "?")"
        }
    }

    private static func write(_ fd: CInt) {
        var byte: UInt8 = 7
        _ = withUnsafeBytes(of: &byte) { Sys.write(fd, from: $0) }
    }

    private static func drain(_ fd: CInt) {
        var buffer = [UInt8](repeating: 0, count: 16)
        while case .success(.transferred) = buffer.withUnsafeMutableBytes({ Sys.read(fd, into: $0) }) {}
    }

    func testReadableDescriptorsCallBackOnTheNamedThreadUntilDroppedAndStopped() throws {
        let journal = Journal()
        let before = try openDescriptors()
        let first = try Sys.pipe().get(), second = try Sys.pipe().get()
        let thread = try PollThread.start(
            name: "smp-test-watch", descriptors: [first.readEnd, second.readEnd],
            onReadable: { index in
                Self.drain(index == 0 ? first.readEnd : second.readEnd)
                journal.add("readable \(index)")
            },
            onDropped: { journal.add("dropped \($0)") },
            onExit: { journal.add("exit \($0.map { "\($0)" } ?? "nil")") }
        ).get()

        Self.write(second.writeEnd)
        wait(for: [journal.when { $0.contains("readable 1") }], timeout: Self.timeout)
        Self.write(first.writeEnd)
        wait(for: [journal.when { $0.contains("readable 0") }], timeout: Self.timeout)

        thread.ignore(1)
        wait(for: [journal.when { $0.contains("dropped 1") }], timeout: Self.timeout)
        // No longer polled: the owner may close it now, and its bytes wake nothing.
        Self.write(second.writeEnd)
        _ = Sys.close(second.readEnd)
        Self.write(first.writeEnd)
        wait(for: [journal.when { $0.filter { $0 == "readable 0" }.count == 2 }], timeout: Self.timeout)

        thread.stop()
        thread.stop()  // idempotent
        wait(for: [journal.when { $0.contains("exit nil") }], timeout: Self.timeout)
        thread.ignore(0)  // after the exit: nothing happens, nothing is written anywhere
        Self.write(first.writeEnd)
        XCTAssertEqual(journal.all.last, "exit nil", "nothing after the exit: \(journal.all)")
        XCTAssertEqual(journal.all.filter { $0 == "readable 1" }.count, 1, "\(journal.all)")
        XCTAssertEqual(journal.threadNames, ["smp-test-watch"], "every callback on the watcher thread")

        for fd in [first.readEnd, first.writeEnd, second.writeEnd] { _ = Sys.close(fd) }
        // Pipes only: the thread's wake counter is an eventfd, and libdispatch opens eventfds of
        // its own now and then, so those cannot be counted here.
        let pipes = { (descriptors: [String]) in descriptors.filter { $0.contains("pipe:") } }
        XCTAssertEqual(pipes(try openDescriptors()), pipes(before), "no pipe left open")
    }

    /// A callback may stop the thread or drop its own descriptor (the interlock pipeline loses a
    /// stream from inside its read).
    func testACallbackMayDropItsOwnDescriptorAndStopTheThread() throws {
        let pipe = try Sys.pipe().get()
        defer { _ = Sys.close(pipe.readEnd); _ = Sys.close(pipe.writeEnd) }
        let journal = Journal()
        let box = Locked<PollThread?>(nil)
        let thread = try PollThread.start(
            name: "smp-test-self", descriptors: [pipe.readEnd],
            onReadable: { index in
                // Not read: level-triggered, it would be called again at once were it not dropped.
                journal.add("readable \(index)")
                box.withLock { $0 }?.ignore(index)
                box.withLock { $0 }?.stop()
            },
            onDropped: { journal.add("dropped \($0)") },
            onExit: { _ in journal.add("exit") }
        ).get()
        box.withLock { $0 = thread }
        Self.write(pipe.writeEnd)
        wait(for: [journal.when { $0.contains("exit") }], timeout: Self.timeout)
        XCTAssertEqual(journal.all, ["readable 0", "dropped 0", "exit"])
    }
    /// The wake counter is closed once nobody holds the thread any more (it is signalled outside
    /// the lock, so it cannot be closed while a holder may still signal it): a process that
    /// starts and ends a thread per session — the station, all day — does not keep one open for
    /// each. libdispatch opens eventfds of its own now and then, hence the slack.
    func testAThreadLetGoOfClosesItsWakeCounter() throws {
        let eventfds = { try self.openDescriptors().filter { $0.contains("eventfd") }.count }
        let before = try eventfds()
        let pipe = try Sys.pipe().get()
        defer { _ = Sys.close(pipe.readEnd); _ = Sys.close(pipe.writeEnd) }
        for round in 0..<40 {
            let journal = Journal()
            let thread = try PollThread.start(
                name: "smp-test-fd", descriptors: [pipe.readEnd],
                onReadable: { _ in }, onDropped: { _ in }, onExit: { _ in journal.add("exit") }
            ).get()
            thread.wake()
            thread.stop()
            thread.wake()  // after the stop: harmless, whichever comes first
            wait(for: [journal.when { $0.contains("exit") }], timeout: Self.timeout)
            XCTAssertEqual(journal.all, ["exit"], "round \(round)")
        }
        // The thread's own last reference goes just after its exit callback.
        let deadline = Date().addingTimeInterval(Self.timeout)
        while try eventfds() > before + 5, Date() < deadline { usleep(10_000) }
        XCTAssertLessThanOrEqual(try eventfds(), before + 5, "40 threads started and let go")
    }
}
