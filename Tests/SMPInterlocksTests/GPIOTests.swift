import CSMPShim
import Dispatch
import Foundation
import Logging
import SMPSystem
import SystemPackage
import XCTest

@testable import SMPInterlocks

/// GPIO: the debounce rules as a pure value (virtual time, exact), the simulated backend through
/// its pipe and DispatchSourceRead (explicit edge timestamps; waits are generous and nothing
/// asserts how long anything took), and the libgpiod backend where no chip exists.
final class GPIOTests: XCTestCase {
    private static let timeout: TimeInterval = 30
    private let logger = Logger(label: "GPIOTests")
    private let ms: UInt64 = 1_000_000

    // MARK: - LineDebouncer (pure, virtual time)

    func testEdgeToTheStopLevelIsDeliveredAtOnceWithItsTimestamp() {
        var debouncer = LineDebouncer(debounce: .milliseconds(20), immediateLevel: .active)
        XCTAssertEqual(debouncer.seed(.inactive, atNanos: 1_000), .deliver(.inactive, timestampNanos: 1_000))
        XCTAssertEqual(debouncer.edge(.active, atNanos: 5_000), .deliver(.active, timestampNanos: 5_000))
        XCTAssertNil(debouncer.deadlineNanos)
    }

    func testEdgeAwayFromTheStopLevelWaitsForTheDebounce() {
        var debouncer = LineDebouncer(debounce: .milliseconds(20), immediateLevel: .active)
        _ = debouncer.seed(.active, atNanos: 0)
        XCTAssertEqual(debouncer.edge(.inactive, atNanos: 100 * ms), .wake(atNanos: 120 * ms))
        // The timer fired early (or another line's timer ran first): not yet.
        XCTAssertEqual(debouncer.deadlineReached(nowNanos: 119 * ms, current: .inactive), .wake(atNanos: 120 * ms))
        // Held for the whole debounce: delivered, stamped with the edge's time.
        XCTAssertEqual(debouncer.deadlineReached(nowNanos: 120 * ms, current: .inactive),
                       .deliver(.inactive, timestampNanos: 100 * ms))
        XCTAssertEqual(debouncer.accepted, .inactive)
    }

    func testBounceShorterThanTheDebounceIsIgnored() {
        var debouncer = LineDebouncer(debounce: .milliseconds(20), immediateLevel: .active)
        _ = debouncer.seed(.active, atNanos: 0)
        XCTAssertEqual(debouncer.edge(.inactive, atNanos: 100 * ms), .wake(atNanos: 120 * ms))
        XCTAssertEqual(debouncer.edge(.active, atNanos: 102 * ms), .none, "back to the accepted level: a bounce")
        XCTAssertNil(debouncer.deadlineNanos)
        XCTAssertEqual(debouncer.deadlineReached(nowNanos: 120 * ms, current: .active), .none)
        XCTAssertEqual(debouncer.accepted, .active)
    }

    func testEachBounceRestartsTheDebounce() {
        var debouncer = LineDebouncer(debounce: .milliseconds(20), immediateLevel: .inactive)  // a pedal
        _ = debouncer.seed(.inactive, atNanos: 0)
        XCTAssertEqual(debouncer.edge(.active, atNanos: 10 * ms), .wake(atNanos: 30 * ms))
        XCTAssertEqual(debouncer.edge(.inactive, atNanos: 11 * ms), .none)
        XCTAssertEqual(debouncer.edge(.active, atNanos: 15 * ms), .wake(atNanos: 35 * ms))
        XCTAssertEqual(debouncer.deadlineReached(nowNanos: 30 * ms, current: .active), .wake(atNanos: 35 * ms))
        XCTAssertEqual(debouncer.deadlineReached(nowNanos: 35 * ms, current: .active),
                       .deliver(.active, timestampNanos: 15 * ms))
    }

    func testBounceTowardsTheStopLevelStopsAtTheFirstEdge() {
        var debouncer = LineDebouncer(debounce: .milliseconds(20), immediateLevel: .active)  // an e-stop
        _ = debouncer.seed(.inactive, atNanos: 0)
        XCTAssertEqual(debouncer.edge(.active, atNanos: 50 * ms), .deliver(.active, timestampNanos: 50 * ms))
        XCTAssertEqual(debouncer.edge(.inactive, atNanos: 51 * ms), .wake(atNanos: 71 * ms))
        XCTAssertEqual(debouncer.edge(.active, atNanos: 52 * ms), .none)
        XCTAssertEqual(debouncer.deadlineReached(nowNanos: 71 * ms, current: .active), .none)
    }

    func testSymmetricDebounceDelaysBothDirections() {
        var debouncer = LineDebouncer(debounce: .milliseconds(5), immediateLevel: nil)
        _ = debouncer.seed(.inactive, atNanos: 0)
        XCTAssertEqual(debouncer.edge(.active, atNanos: 10 * ms), .wake(atNanos: 15 * ms))
        XCTAssertEqual(debouncer.deadlineReached(nowNanos: 15 * ms, current: .active), .deliver(.active, timestampNanos: 10 * ms))
        XCTAssertEqual(debouncer.edge(.inactive, atNanos: 20 * ms), .wake(atNanos: 25 * ms))
    }

    func testZeroDebounceDeliversEveryChange() {
        var debouncer = LineDebouncer(debounce: .zero, immediateLevel: nil)
        _ = debouncer.seed(.inactive, atNanos: 0)
        XCTAssertEqual(debouncer.edge(.active, atNanos: 1), .deliver(.active, timestampNanos: 1))
        XCTAssertEqual(debouncer.edge(.active, atNanos: 2), .none, "same level again")
        XCTAssertEqual(debouncer.edge(.inactive, atNanos: 3), .deliver(.inactive, timestampNanos: 3))
    }

    func testEdgesOlderThanTheInitialReadAreStale() {
        var debouncer = LineDebouncer(debounce: .zero, immediateLevel: .active)
        _ = debouncer.seed(.inactive, atNanos: 1_000)
        XCTAssertEqual(debouncer.edge(.active, atNanos: 999), .none, "queued before the read: the read is newer")
        XCTAssertEqual(debouncer.accepted, .inactive)
    }

    func testALevelChangeWithoutAnEdgeIsCaughtAtTheDeadline() {
        // A kernel queue overflow can lose edges: the deadline's read of the level is the truth.
        var debouncer = LineDebouncer(debounce: .milliseconds(20), immediateLevel: .inactive)
        _ = debouncer.seed(.inactive, atNanos: 0)
        XCTAssertEqual(debouncer.edge(.active, atNanos: 10 * ms), .wake(atNanos: 30 * ms))
        XCTAssertEqual(debouncer.deadlineReached(nowNanos: 30 * ms, current: .inactive), .none,
                       "the line is back at the accepted level: nothing happened")
        XCTAssertEqual(debouncer.accepted, .inactive)
    }

    func testLostIsFinal() {
        var debouncer = LineDebouncer(debounce: .milliseconds(20), immediateLevel: .active)
        _ = debouncer.seed(.inactive, atNanos: 0)
        XCTAssertEqual(debouncer.lost(atNanos: 7), .deliver(.lost, timestampNanos: 7))
        XCTAssertEqual(debouncer.lost(atNanos: 8), .none)
        XCTAssertEqual(debouncer.edge(.active, atNanos: 9), .none)
        XCTAssertEqual(debouncer.accepted, .lost)
    }

    // MARK: - Simulated backend: the real event path over a pipe

    private func lines(debounce: Duration = .milliseconds(50)) -> [GPIOInputLine] {
        [
            GPIOInputLine(name: "estop", chip: "gpiochip0", lineOffset: 17, activeLow: false, bias: .pullUp,
                          debounce: debounce, immediateLevel: .active),
            GPIOInputLine(name: "pedal", chip: "gpiochip0", lineOffset: 27, activeLow: true, bias: .pullUp,
                          debounce: debounce, immediateLevel: .inactive),
            GPIOInputLine(name: "contact", chip: "gpiochip1", lineOffset: 3, activeLow: false, bias: .asIs,
                          debounce: debounce, immediateLevel: .inactive),
        ]
    }

    private let outputs = [
        GPIOOutputLine(name: "needle", chip: "gpiochip0", lineOffset: 22, activeLow: false),
        GPIOOutputLine(name: "lamp", chip: "gpiochip1", lineOffset: 5, activeLow: true),
    ]

    /// Collects changes delivered on the backend's queue; waits for a condition on them.
    private final class Changes: @unchecked Sendable {
        private let lock = NSLock()
        private var items: [GPIOInputChange] = []
        private var waiters: [(([GPIOInputChange]) -> Bool, XCTestExpectation)] = []

        func append(_ change: GPIOInputChange) {
            lock.lock()
            items.append(change)
            let snapshot = items
            let ready = waiters.filter { $0.0(snapshot) }
            waiters.removeAll { waiter in ready.contains { $0.1 === waiter.1 } }
            lock.unlock()
            ready.forEach { $0.1.fulfill() }
        }

        var all: [GPIOInputChange] {
            lock.lock()
            defer { lock.unlock() }
            return items
        }

        func expectation(_ description: String, _ condition: @escaping ([GPIOInputChange]) -> Bool) -> XCTestExpectation {
            let expectation = XCTestExpectation(description: description)
            lock.lock()
            if condition(items) {
                lock.unlock()
                expectation.fulfill()
                return expectation
            }
            waiters.append((condition, expectation))
            lock.unlock()
            return expectation
        }
    }

    private func startSimulated(
        debounce: Duration = .milliseconds(50), initial: [String: GPIOLevel] = [:], healthCheck: Duration? = nil
    ) throws -> (SimulatedGPIOBackend, Changes, DispatchQueue) {
        let queue = DispatchQueue(label: "GPIOTests.backend")
        let backend = try SimulatedGPIOBackend(inputs: lines(debounce: debounce), outputs: outputs,
                                               initialLevels: initial, healthCheckInterval: healthCheck,
                                               queue: queue, logger: logger)
        let changes = Changes()
        queue.sync { backend.start { change in changes.append(change) } }
        return (backend, changes, queue)
    }

    private func close(_ backend: SimulatedGPIOBackend, _ queue: DispatchQueue) {
        let closed = XCTestExpectation(description: "closed")
        queue.sync { _ = backend.close { closed.fulfill() } }
        wait(for: [closed], timeout: Self.timeout)
    }

    private func readings(_ changes: [GPIOInputChange], input: Int) -> [GPIOInputReading] {
        changes.filter { $0.inputIndex == input }.map(\.reading)
    }

    func testInitialLevelsComeFirst() throws {
        let (backend, changes, queue) = try startSimulated(initial: ["estop": .inactive, "pedal": .active])
        defer { close(backend, queue) }
        let initial = changes.all
        XCTAssertEqual(initial.map(\.inputIndex), [0, 1, 2])
        XCTAssertTrue(initial.allSatisfy(\.isInitial))
        // estop as given, pedal as given, contact not given: its stop level (inactive).
        XCTAssertEqual(initial.map(\.reading), [.inactive, .active, .inactive])
    }

    func testPressTravelsThroughThePipeAndIsNotDebouncedTowardsStop() throws {
        let (backend, changes, queue) = try startSimulated(debounce: .seconds(5), initial: ["estop": .inactive])
        defer { close(backend, queue) }
        let stamp = MonotonicClock.nowNanoseconds()
        XCTAssertTrue(backend.set(line: "estop", to: .active, timestampNanos: stamp))
        // With a 5 s debounce, delivery well inside the 30 s timeout shows no debounce was applied
        // (this is not a timing assertion: it would take 5 s otherwise, still inside it; the
        // timestamp below is what proves the edge itself was delivered).
        wait(for: [changes.expectation("e-stop pressed") { self.readings($0, input: 0).count == 2 }],
                   timeout: Self.timeout)
        let pressed = changes.all.last { $0.inputIndex == 0 }
        XCTAssertEqual(pressed?.reading, .active)
        XCTAssertEqual(pressed?.timestampNanos, stamp, "the edge's own timestamp travels with it")
        XCTAssertEqual(pressed?.isInitial, false)
        XCTAssertEqual(backend.level(of: "estop"), .active)
    }

    /// The e-stop edge is handled on the watcher thread that `poll` woke, inside the backend's
    /// queue (a sync block runs on the caller's thread): no hop to a Dispatch worker between the
    /// kernel's edge and the handler that writes ESTOP.
    func testAnEdgeIsHandledOnTheWatcherThreadWithoutAHop() throws {
        let queue = DispatchQueue(label: "GPIOTests.backend")
        let backend = try SimulatedGPIOBackend(inputs: lines(debounce: .seconds(5)), outputs: outputs,
                                               initialLevels: ["estop": .inactive], healthCheckInterval: nil,
                                               queue: queue, logger: logger)
        defer { close(backend, queue) }
        let changes = Changes()
        let threads = Locked<[String]>([])
        queue.sync {
            backend.start { change in
                dispatchPrecondition(condition: .onQueue(queue))
                if !change.isInitial { threads.withLock { $0.append(Sys.currentThreadName()) } }
                changes.append(change)
            }
        }
        XCTAssertTrue(backend.set(line: "estop", to: .active, timestampNanos: MonotonicClock.nowNanoseconds()))
        wait(for: [changes.expectation("e-stop pressed") { self.readings($0, input: 0).count == 2 }],
             timeout: Self.timeout)
        XCTAssertEqual(threads.withLock { $0 }, ["smp-interlocks"])
    }

    /// One watcher is kept on each CPU, so that an edge delivered on a CPU wakes a watcher there
    /// (which CPU wins a race is the scheduler's: not asserted). Edges written from every CPU,
    /// woken watchers on all of them: each edge is handled exactly once, in order, with its own
    /// timestamp, on a watcher kept to one CPU.
    func testAWatcherOnEachCPUHandlesEveryEdgeOnceAndInOrder() throws {
        let cpus = Sys.currentThreadCPUs()
        guard cpus.count > 1 else { throw XCTSkip("one CPU: one watcher, anywhere") }
        let queue = DispatchQueue(label: "GPIOTests.backend")
        let backend = try SimulatedGPIOBackend(inputs: lines(debounce: .zero), outputs: outputs,
                                               initialLevels: ["estop": .inactive], healthCheckInterval: nil,
                                               queue: queue, logger: logger)
        defer { close(backend, queue) }
        let changes = Changes()
        let handlerCPUs = Locked<Set<[Int]>>([])
        queue.sync {
            backend.start { change in
                if !change.isInitial { handlerCPUs.withLock { _ = $0.insert(Sys.currentThreadCPUs()) } }
                changes.append(change)
            }
        }
        XCTAssertEqual(queue.sync { backend.watcherCPUs }, cpus.prefix(GPIOInputPipeline.maxWatchers).map { $0 })

        // A writer kept to each CPU in turn, 40 edges each; one edge at a time, so the order is known.
        let perCPU = 40
        var written: [UInt64] = []
        for cpu in cpus.prefix(4) {
            let done = DispatchSemaphore(value: 0)
            let stamps = Locked<[UInt64]>([])
            let before = changes.all.count
            let writer = Thread {
                XCTAssertEqual(smp_thread_pin_cpu(CInt(cpu)), 0)
                for k in 0..<perCPU {
                    let stamp = MonotonicClock.nowNanoseconds()
                    stamps.withLock { $0.append(stamp) }
                    XCTAssertTrue(backend.set(line: "estop", to: k % 2 == 0 ? .active : .inactive, timestampNanos: stamp))
                    let delivered = changes.expectation("edge \(k) from CPU \(cpu)") { $0.count >= before + k + 1 }
                    _ = XCTWaiter.wait(for: [delivered], timeout: Self.timeout)
                }
                done.signal()
            }
            writer.start()
            done.wait()
            written += stamps.withLock { $0 }
        }
        let edges = changes.all.filter { !$0.isInitial && $0.inputIndex == 0 }
        XCTAssertEqual(edges.map(\.timestampNanos), written, "every edge once, in order, with its own timestamp")
        XCTAssertEqual(edges.map(\.reading), written.indices.map { ($0 % perCPU) % 2 == 0 ? .active : .inactive })
        let seen = handlerCPUs.withLock { $0 }
        XCTAssertFalse(seen.isEmpty)
        for mask in seen {
            XCTAssertEqual(mask.count, 1, "a watcher that keeps to no single CPU handled an edge: \(mask)")
            XCTAssertTrue(cpus.contains(mask[0]))
        }
    }

    func testBouncesShorterThanTheDebounceAreIgnored() throws {
        // The e-stop is pressed; its release bounces: released, pressed, released, pressed — all
        // within 3 ms, far less than the 50 ms debounce — and stays pressed. Then it is really
        // released. Only that release may come out.
        let (backend, changes, queue) = try startSimulated(initial: ["estop": .active])
        defer { close(backend, queue) }
        XCTAssertTrue(backend.bounce(line: "estop", levels: [.inactive, .active, .inactive, .active], spacing: .milliseconds(1)))
        let release = MonotonicClock.nowNanoseconds() + 10 * ms
        XCTAssertTrue(backend.set(line: "estop", to: .inactive, timestampNanos: release))
        wait(for: [changes.expectation("released") { self.readings($0, input: 0).count >= 2 }], timeout: Self.timeout)
        let estop = changes.all.filter { $0.inputIndex == 0 }
        XCTAssertEqual(estop.map(\.reading), [.active, .inactive])
        XCTAssertEqual(estop.last?.timestampNanos, release, "stamped with the edge that held, not a bounce")
    }

    func testABounceThatSettlesIsDeliveredOnceStampedWithTheLastEdge() throws {
        // The pedal is pressed with a bouncing contact: pressed, released, pressed (1 ms apart).
        let (backend, changes, queue) = try startSimulated(initial: ["pedal": .inactive])
        defer { close(backend, queue) }
        let before = MonotonicClock.nowNanoseconds()
        XCTAssertTrue(backend.bounce(line: "pedal", levels: [.active, .inactive, .active], spacing: .milliseconds(1)))
        wait(for: [changes.expectation("pressed") { self.readings($0, input: 1).count >= 2 }], timeout: Self.timeout)
        let pedal = changes.all.filter { $0.inputIndex == 1 }
        XCTAssertEqual(pedal.map(\.reading), [.inactive, .active])
        let stamp = try XCTUnwrap(pedal.last?.timestampNanos)
        XCTAssertGreaterThanOrEqual(stamp, before + 2 * ms, "the third edge, 2 ms after the first")
    }

    func testBounceTowardsStopStopsAtOnceThenSettles() throws {
        // A released e-stop chatters: pressed, released, pressed, released. The first press is
        // reported at once (fail closed); the final release only after it held.
        let (backend, changes, queue) = try startSimulated(initial: ["estop": .inactive])
        defer { close(backend, queue) }
        XCTAssertTrue(backend.bounce(line: "estop", levels: [.active, .inactive, .active, .inactive], spacing: .milliseconds(1)))
        wait(for: [changes.expectation("settled") { self.readings($0, input: 0).count >= 3 }], timeout: Self.timeout)
        XCTAssertEqual(readings(changes.all, input: 0), [.inactive, .active, .inactive])
    }

    func testDisconnectedChipReportsItsLinesLost() throws {
        let (backend, changes, queue) = try startSimulated(initial: ["estop": .inactive, "pedal": .active])
        defer { close(backend, queue) }
        let open = try openDescriptorCount()
        backend.disconnect(chip: "gpiochip0")
        wait(for: [changes.expectation("lost") { items in
            items.contains { $0.inputIndex == 0 && $0.reading == .lost } && items.contains { $0.inputIndex == 1 && $0.reading == .lost }
        }], timeout: Self.timeout)
        XCTAssertFalse(changes.all.contains { $0.inputIndex == 2 && $0.reading == .lost }, "gpiochip1 is still there")
        // Its pipe is closed once every watcher (one per CPU) has stopped polling it, the
        // backend still running.
        let deadline = Date().addingTimeInterval(Self.timeout)
        while try openDescriptorCount() > open - 2, Date() < deadline { usleep(1_000) }
        XCTAssertEqual(try openDescriptorCount(), open - 2, "the lost chip's pipe (both ends) is released")
        XCTAssertFalse(backend.press(line: "estop"), "nothing can be written to a removed chip")
        // gpiochip1 still works.
        backend.press(line: "contact")
        wait(for: [changes.expectation("contact") { self.readings($0, input: 2).count >= 2 }], timeout: Self.timeout)
    }

    // MARK: - A chip that vanishes without waking its descriptor (kernel 6.1: docs/hil.md)

    func testVanishedChipWhoseDescriptorStaysSilentIsFoundByTheHealthCheck() throws {
        // Lease 100 ms → a check every 25 ms. The descriptor never fires: only the check can see it.
        let (backend, changes, queue) = try startSimulated(initial: ["estop": .inactive, "pedal": .active],
                                                           healthCheck: .milliseconds(25))
        defer { close(backend, queue) }
        let before = MonotonicClock.nowNanoseconds()
        backend.vanish(chip: "gpiochip0")
        // Generous: the point is that it comes at all (it never did before the health check); the
        // timestamp below says when.
        wait(for: [changes.expectation("lost") { items in
            items.contains { $0.inputIndex == 0 && $0.reading == .lost } && items.contains { $0.inputIndex == 1 && $0.reading == .lost }
        }], timeout: 5)
        let lost = try XCTUnwrap(changes.all.first { $0.inputIndex == 0 && $0.reading == .lost })
        XCTAssertGreaterThanOrEqual(lost.timestampNanos, before)
        XCTAssertFalse(changes.all.contains { $0.inputIndex == 2 && $0.reading == .lost }, "gpiochip1 is still there")
        XCTAssertFalse(backend.press(line: "estop"), "nothing reaches a vanished chip")
        XCTAssertThrowsError(try queue.sync { try backend.setOutput(0, to: .active) }, "its outputs are gone too")
        // gpiochip1 still works and is still checked.
        backend.press(line: "contact")
        wait(for: [changes.expectation("contact") { self.readings($0, input: 2).count >= 2 }], timeout: Self.timeout)
    }

    /// A simulated backend with a health check every `healthCheck`, recording the thread each
    /// `.lost` is delivered on (the thread that made the check that found it).
    private func startRecordingLossThreads(
        healthCheck: Duration
    ) throws -> (SimulatedGPIOBackend, Changes, DispatchQueue, Locked<[String]>) {
        let queue = DispatchQueue(label: "GPIOTests.backend")
        let backend = try SimulatedGPIOBackend(inputs: lines(debounce: .milliseconds(50)), outputs: outputs,
                                               initialLevels: ["estop": .inactive], healthCheckInterval: healthCheck,
                                               queue: queue, logger: logger)
        let changes = Changes()
        let threads = Locked<[String]>([])
        queue.sync {
            backend.start { change in
                if change.reading == .lost { threads.withLock { $0.append(Sys.currentThreadName()) } }
                changes.append(change)
            }
        }
        return (backend, changes, queue, threads)
    }

    /// Both lines of gpiochip0 (estop, pedal) reported lost.
    private func waitForGpiochip0Lost(_ changes: Changes) {
        wait(for: [changes.expectation("gpiochip0 lost") { items in
            items.contains { $0.inputIndex == 0 && $0.reading == .lost } && items.contains { $0.inputIndex == 1 && $0.reading == .lost }
        }], timeout: 5)
    }

    /// With no carrier, the check is timed by the first watcher's own timer, not a Dispatch timer
    /// (three thread wake-ups per check, 40 a second at the default lease: issue 15), so the loss
    /// it finds is delivered on that watcher's thread; and it keeps checking the other chip.
    func testWithoutACarrierTheHealthCheckRunsOnAWatcherThreadAndGoesOnForTheOtherChip() throws {
        let (backend, changes, queue, threads) = try startRecordingLossThreads(healthCheck: .milliseconds(25))
        defer { close(backend, queue) }
        backend.vanish(chip: "gpiochip0")
        waitForGpiochip0Lost(changes)
        XCTAssertEqual(threads.withLock { $0 }, ["smp-interlocks", "smp-interlocks"])
        backend.vanish(chip: "gpiochip1")
        wait(for: [changes.expectation("gpiochip1 lost") { self.readings($0, input: 2).contains(.lost) }], timeout: 5)
        XCTAssertEqual(threads.withLock { $0 }, Array(repeating: "smp-interlocks", count: 3))
    }

    /// A carrier (the link's I/O thread in a session) makes the checks in its own passes, and
    /// the watcher none while it carries; once the carrier has ended, the watcher's timer takes
    /// over, and a vanished chip is still found.
    func testACarriersPassesMakeTheChecksAndTheWatcherTakesOverWhenTheyStop() throws {
        let (backend, changes, queue, lossThreads) = try startRecordingLossThreads(healthCheck: .milliseconds(100))
        defer { close(backend, queue) }
        let duty = backend.healthCheckDuty
        let carrying = Locked(true)
        let passes = Locked<[UInt64?]>([])
        duty.carrierStarted()
        let carrier = Thread {
            _ = smp_thread_set_name("test-carrier")
            while carrying.withLock({ $0 }) {
                let due = duty.ride(nowNanoseconds: MonotonicClock.nowNanoseconds(), carrierDeadline: nil)
                passes.withLock { $0.append(due) }
                usleep(10_000)
            }
        }
        carrier.start()
        Thread.sleep(forTimeInterval: 0.6)
        let whileCarried = queue.sync { backend.healthChecks }
        XCTAssertGreaterThanOrEqual(whileCarried.carried, 4, "with no pass of its own planned, the carrier checks every quarter interval or more: ~20 in 0.6 s")
        XCTAssertEqual(whileCarried.own, 0, "the watcher does not check while the carrier does")
        XCTAssertTrue(passes.withLock { $0 }.allSatisfy { $0 != nil }, "the carrier is told when to pass again")
        // A chip that vanishes while carried is found in a carrier's pass.
        backend.vanish(chip: "gpiochip1")
        wait(for: [changes.expectation("gpiochip1 lost") { self.readings($0, input: 2).contains(.lost) }], timeout: 5)
        XCTAssertEqual(lossThreads.withLock { $0 }, ["test-carrier"])
        // The carrier stops (the link's thread ended): the watcher's timer goes on alone.
        carrying.withLock { $0 = false }
        Thread.sleep(forTimeInterval: 0.05)
        duty.carrierEnded()
        let before = queue.sync { backend.healthChecks }
        backend.vanish(chip: "gpiochip0")
        waitForGpiochip0Lost(changes)
        XCTAssertEqual(lossThreads.withLock { $0 }, ["test-carrier", "smp-interlocks", "smp-interlocks"])
        XCTAssertEqual(queue.sync { backend.healthChecks }.carried, before.carried)
        XCTAssertGreaterThan(queue.sync { backend.healthChecks }.own, 0)
        // Every chip lost: nothing left to check, and the carrier is told so.
        XCTAssertNil(duty.ride(nowNanoseconds: MonotonicClock.nowNanoseconds(), carrierDeadline: nil))
    }

    /// The carrier's timing, on the carrier's clock: a check when due, or early when it would
    /// otherwise fall due before the carrier's own next pass (a quarter interval after the last
    /// at the earliest); never more than an interval apart; a pass of its own asked for only
    /// when a check is needed before the carrier's next and it is too soon to make it now.
    func testACarrierChecksWhenDueOrEarlyInsteadOfAPassOfItsOwn() throws {
        let queue = DispatchQueue(label: "GPIOTests.backend")
        let backend = try SimulatedGPIOBackend(inputs: lines(debounce: .milliseconds(50)), outputs: outputs,
                                               initialLevels: ["estop": .inactive], healthCheckInterval: .milliseconds(100),
                                               queue: queue, logger: logger)
        defer { close(backend, queue) }
        let duty = backend.healthCheckDuty
        duty.carrierStarted()
        queue.sync { backend.start { _ in } }
        let ms: UInt64 = 1_000_000
        let t0 = MonotonicClock.nowNanoseconds()  // just after the start's check
        func carried() -> Int { queue.sync { backend.healthChecks.carried } }
        // Due at ~t0 + 100; the carrier passes at t0 + 30 anyway: nothing now.
        let first = try XCTUnwrap(duty.ride(nowNanoseconds: t0 + 5 * ms, carrierDeadline: t0 + 30 * ms))
        XCTAssertLessThanOrEqual(first, t0 + 100 * ms)
        XCTAssertGreaterThan(first, t0 + 99 * ms)
        XCTAssertEqual(carried(), 0)
        // The carrier's next pass would come after the due time: the check now, early.
        XCTAssertEqual(duty.ride(nowNanoseconds: t0 + 30 * ms, carrierDeadline: t0 + 130 * ms), t0 + 130 * ms)
        XCTAssertEqual(carried(), 1)
        // Again after the due time, but too soon after the last: a pass of its own, at the due time.
        XCTAssertEqual(duty.ride(nowNanoseconds: t0 + 40 * ms, carrierDeadline: t0 + 140 * ms), t0 + 130 * ms)
        XCTAssertEqual(carried(), 1)
        // Due: checked, whatever the carrier plans.
        XCTAssertEqual(duty.ride(nowNanoseconds: t0 + 130 * ms, carrierDeadline: t0 + 135 * ms), t0 + 230 * ms)
        XCTAssertEqual(carried(), 2)
        // No pass planned by the carrier: early as soon as a quarter interval has gone.
        XCTAssertEqual(duty.ride(nowNanoseconds: t0 + 150 * ms, carrierDeadline: nil), t0 + 230 * ms)
        XCTAssertEqual(duty.ride(nowNanoseconds: t0 + 155 * ms, carrierDeadline: nil), t0 + 255 * ms)
        XCTAssertEqual(carried(), 3)
        XCTAssertEqual(queue.sync { backend.healthChecks.own }, 0, "the watcher does not check while carried")
        duty.carrierEnded()
    }

    func testWithoutTheHealthCheckAVanishedChipIsNotNoticed() throws {
        // What the health check is for: the same removal with no check stays silent.
        let (backend, changes, queue) = try startSimulated(initial: ["estop": .inactive])
        defer { close(backend, queue) }
        backend.vanish(chip: "gpiochip0")
        Thread.sleep(forTimeInterval: 0.3)
        XCTAssertFalse(changes.all.contains { $0.reading == .lost })
    }

    func testSafeLevelFailingAtCloseIsReturnedAndTheOutputKeepsItsLevel() throws {
        let (backend, _, queue) = try startSimulated()
        try queue.sync { try backend.setOutput(0, to: .active) }
        backend.failSafeLevelAtClose(output: "needle", with: .ioError)
        let closed = XCTestExpectation(description: "closed")
        let failures = queue.sync { backend.close { closed.fulfill() } }
        wait(for: [closed], timeout: Self.timeout)
        XCTAssertEqual(failures.map(\.name), ["needle"])
        XCTAssertEqual(failures.first?.error, .io(operation: "setting \"needle\" inactive before release", chip: "gpiochip0",
                                                  errno: .ioError))
        XCTAssertEqual(backend.value(of: "needle"), .active, "the line was never driven off")
        XCTAssertEqual(backend.value(of: "lamp"), .inactive, "the other output was")
        XCTAssertEqual(queue.sync { backend.close() }.map(\.name), ["needle"], "a later close says the same")
    }

    func testOutputsStartSafeCanBeDrivenAndAreMadeSafeOnClose() throws {
        let (backend, _, queue) = try startSimulated()
        XCTAssertEqual(backend.value(of: "needle"), .inactive)
        XCTAssertEqual(backend.value(of: "lamp"), .inactive)
        try queue.sync { try backend.setOutput(0, to: .active) }
        XCTAssertEqual(backend.value(of: "needle"), .active)
        backend.failOutputWrites(with: .ioError)
        XCTAssertThrowsError(try queue.sync { try backend.setOutput(1, to: .active) }) { error in
            guard case .io(_, let chip, let errno)? = error as? GPIOError else { return XCTFail("\(error)") }
            XCTAssertEqual(chip, "gpiochip1")
            XCTAssertEqual(errno, .ioError)
        }
        close(backend, queue)
        XCTAssertEqual(backend.value(of: "needle"), .inactive, "close drives every output to its safe level")
        XCTAssertThrowsError(try queue.sync { try backend.setOutput(0, to: .active) }) { error in
            XCTAssertEqual(error as? GPIOError, .closed)
        }
    }

    func testCloseClosesEveryDescriptor() throws {
        let before = try openDescriptorCount()
        do {
            let (backend, _, queue) = try startSimulated()
            XCTAssertGreaterThan(try openDescriptorCount(), before, "two pipes are open")
            close(backend, queue)
        }
        XCTAssertEqual(try openDescriptorCount(), before)
    }

    private func openDescriptorCount() throws -> Int {
        try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count
    }

    // MARK: - libgpiod backend (no /dev/gpiochip here)

    func testShimIsBuiltAgainstLibgpiodV1Here() {
        // This machine has libgpiod 1.6.3; scripts/check-gpiod-v2.sh compiles the v2 path.
        XCTAssertEqual(smp_gpio_api_version(), 1)
        XCTAssertEqual(LibgpiodBackend.apiVersion, 1)
        XCTAssertEqual(GPIOChip.libgpiodAPIVersion, 1)
        XCTAssertFalse(GPIOChip.kernelDebounceAvailable, "v1 has no kernel debounce: lines are debounced in Swift")
    }

    func testEdgeRecordIsSixteenBytes() {
        XCTAssertEqual(MemoryLayout<smp_gpio_edge_event>.size, 16)
        XCTAssertEqual(MemoryLayout<smp_gpio_edge_event>.stride, 16)
    }

    func testMissingChipIsAClearErrorNamingTheChipAndTheUdevRule() throws {
        let input = GPIOInputLine(name: "estop", chip: "gpiochip99", lineOffset: 4, activeLow: false, bias: .pullUp,
                                  debounce: .milliseconds(10), immediateLevel: .active)
        XCTAssertThrowsError(try LibgpiodBackend.open(inputs: [input], outputs: [], queue: DispatchQueue(label: "t"),
                                                      logger: logger)) { error in
            XCTAssertEqual(error as? GPIOError, .chipNotFound(chip: "gpiochip99", path: "/dev/gpiochip99"))
            let text = "\(error)"
            XCTAssertTrue(text.contains("\"gpiochip99\""), text)
            XCTAssertTrue(text.contains("/dev/gpiochip99"), text)
            XCTAssertTrue(text.contains("70-smp-applicator.rules (the smpctl package does"), text)
            XCTAssertTrue(text.contains("`smp`"), text)
            XCTAssertTrue(text.contains("gpiodetect"), text)
        }
    }

    func testMissingOutputChipIsReportedToo() {
        let output = GPIOOutputLine(name: "needle", chip: "/dev/gpiochip42", lineOffset: 1, activeLow: false)
        XCTAssertThrowsError(try LibgpiodBackend.open(inputs: [], outputs: [output], queue: DispatchQueue(label: "t"),
                                                      logger: logger)) { error in
            XCTAssertEqual(error as? GPIOError, .chipNotFound(chip: "/dev/gpiochip42", path: "/dev/gpiochip42"))
        }
    }

    func testSomethingThatIsNotAGPIOChip() {
        let input = GPIOInputLine(name: "estop", chip: "/dev/null", lineOffset: 0, activeLow: false, bias: .asIs,
                                  debounce: .zero, immediateLevel: .active)
        XCTAssertThrowsError(try LibgpiodBackend.open(inputs: [input], outputs: [], queue: DispatchQueue(label: "t"),
                                                      logger: logger)) { error in
            XCTAssertEqual(error as? GPIOError, .notAGPIOChip(chip: "/dev/null", path: "/dev/null"))
            XCTAssertTrue("\(error)".contains("gpiodetect"))
        }
    }

    func testPermissionDeniedNamesTheUdevRuleAndGroup() {
        let error = GPIOError.opening(chip: "gpiochip0", path: "/dev/gpiochip0", errno: .permissionDenied)
        XCTAssertEqual(error, .permissionDenied(chip: "gpiochip0", path: "/dev/gpiochip0"))
        XCTAssertTrue(error.description.contains("70-smp-applicator.rules (the smpctl package does"), error.description)
        XCTAssertTrue(error.description.contains("group `smp`"))
    }

    func testNoLinesOpensNothingAndCloses() throws {
        let queue = DispatchQueue(label: "GPIOTests.empty")
        let backend = try LibgpiodBackend.open(inputs: [], outputs: [], queue: queue, logger: logger)
        let closed = XCTestExpectation(description: "closed")
        queue.sync {
            backend.start { _ in XCTFail("no lines, no changes") }
            backend.close { closed.fulfill() }
        }
        wait(for: [closed], timeout: Self.timeout)
    }

    func testChipNames() {
        XCTAssertEqual(GPIOChip.path(of: "gpiochip0"), "/dev/gpiochip0")
        XCTAssertEqual(GPIOChip.path(of: "/dev/gpiochip3"), "/dev/gpiochip3")
    }
}
