import Dispatch
import FirmwareProtocol
import Foundation
import Logging
import XCTest

@testable import SMPPlan
@testable import SMPInterlocks
@testable import SMPMachine

/// The interlock state machine, exhaustively (every event in every state, and every reachable
/// state by breadth-first search), then the runtime over the simulated GPIO backend.
final class InterlockTests: XCTestCase {
    private static let timeout: TimeInterval = 30

    // MARK: - The machine: every event in every state

    private static let inputs: [InterlockMachine.Input] = [
        .init(name: "estop", role: .estop), .init(name: "pedal", role: .pedal),
        .init(name: "contact", role: .contact), .init(name: "cartridge", role: .cartridge),
    ]
    private static let estop = 0, pedal = 1, contact = 2, cartridge = 3

    /// Every input read healthy and the link up, then driven to `state` the ordinary way.
    private func machine(in state: InterlockState) -> InterlockMachine {
        var machine = InterlockMachine(inputs: Self.inputs)
        _ = machine.handle(.input(index: Self.estop, reading: .inactive), atNanos: 1)
        for index in [Self.pedal, Self.contact, Self.cartridge] {
            _ = machine.handle(.input(index: index, reading: .active), atNanos: 1)
        }
        _ = machine.handle(.linkUp, atNanos: 1)
        XCTAssertTrue(machine.isHealthy)
        XCTAssertEqual(machine.state, .faulted, "healthy inputs alone never arm")
        switch state {
        case .faulted: break
        case .armed: _ = machine.handle(.operatorReset, atNanos: 2)
        case .held:
            _ = machine.handle(.operatorReset, atNanos: 2)
            _ = machine.handle(.operatorHold, atNanos: 3)
        case .estopped:
            _ = machine.handle(.operatorReset, atNanos: 2)
            _ = machine.handle(.operatorEstop, atNanos: 3)
        }
        XCTAssertEqual(machine.state, state)
        return machine
    }

    private typealias Outcome = (to: InterlockState, actions: InterlockActions)

    /// The specification: for each event, the outcome in each state (every input healthy before).
    private func specification() -> [(InterlockEvent, [InterlockState: Outcome])] {
        let stop: InterlockActions = [.needlePowerOff, .sendEstop]
        let estopAll: [InterlockState: Outcome] = [
            .faulted: (.estopped, stop), .armed: (.estopped, stop), .held: (.estopped, stop), .estopped: (.estopped, stop),
        ]
        let nothing: [InterlockState: Outcome] = [
            .faulted: (.faulted, []), .armed: (.armed, []), .held: (.held, []), .estopped: (.estopped, []),
        ]
        var holdFromArmed = nothing
        holdFromArmed[.armed] = (.held, [.hold])

        var table: [(InterlockEvent, [InterlockState: Outcome])] = [
            (.input(index: Self.estop, reading: .active), estopAll),
            (.input(index: Self.estop, reading: .lost), estopAll),
            (.input(index: Self.estop, reading: .inactive), nothing),
        ]
        for index in [Self.pedal, Self.contact, Self.cartridge] {
            table.append((.input(index: index, reading: .inactive), holdFromArmed))
            table.append((.input(index: index, reading: .lost), estopAll))  // a doubt: the safe state
            table.append((.input(index: index, reading: .active), nothing))
        }
        table += [
            (.operatorReset, [.faulted: (.armed, [.needlePowerOn, .armDevice]), .armed: (.armed, []),
                              .held: (.held, []), .estopped: (.armed, [.needlePowerOn, .armDevice])]),
            (.operatorResume, [.faulted: (.faulted, []), .armed: (.armed, []), .held: (.armed, [.resumeDevice]),
                               .estopped: (.estopped, [])]),
            (.operatorHold, holdFromArmed),
            (.operatorEstop, estopAll),
            (.deviceLatched(.overDepth), [.faulted: (.estopped, [.needlePowerOff]), .armed: (.estopped, [.needlePowerOff]),
                                          .held: (.estopped, [.needlePowerOff]), .estopped: (.estopped, [.needlePowerOff])]),
            (.deviceHeld(.leaseExpired), [.faulted: (.faulted, []), .armed: (.held, []), .held: (.held, []),
                                          .estopped: (.estopped, [])]),
            (.linkUp, nothing),
            (.linkLost, [.faulted: (.faulted, [.needlePowerOff]), .armed: (.faulted, [.needlePowerOff]),
                         .held: (.faulted, [.needlePowerOff]), .estopped: (.estopped, [.needlePowerOff])]),
            (.needlePowerFault, estopAll),
        ]
        return table
    }

    func testEveryEventInEveryState() {
        let table = specification()
        XCTAssertEqual(table.count, 3 + 3 * 3 + 9, "every event kind is in the table")
        for (event, outcomes) in table {
            for state in InterlockState.allCases {
                var machine = machine(in: state)
                let transition = machine.handle(event, atNanos: 42)
                let expected = outcomes[state]!
                XCTAssertEqual(transition.from, state, "\(event) in \(state)")
                XCTAssertEqual(transition.to, expected.to, "\(event) in \(state)")
                XCTAssertEqual(transition.actions, expected.actions, "\(event) in \(state): \(transition.actions)")
                XCTAssertEqual(machine.state, expected.to)
                XCTAssertEqual(transition.timestampNanos, 42)
            }
        }
    }

    func testOperatorCommandsAreRefusedWhileAnythingIsUnhealthy() {
        let unhealthy: [(Int, GPIOInputReading)] = [
            (Self.estop, .active), (Self.estop, .lost), (Self.pedal, .inactive), (Self.pedal, .lost),
            (Self.contact, .inactive), (Self.cartridge, .inactive), (Self.cartridge, .lost),
        ]
        for (index, reading) in unhealthy {
            // Reset from faulted and from estopped.
            for state in [InterlockState.faulted, .estopped] {
                var machine = machine(in: state)
                _ = machine.handle(.input(index: index, reading: reading), atNanos: 5)
                let before = machine.state
                let transition = machine.handle(.operatorReset, atNanos: 6)
                XCTAssertEqual(transition.to, before, "reset with \(Self.inputs[index].name) \(reading)")
                XCTAssertTrue(transition.actions.isEmpty)
                XCTAssertEqual(transition.cause.event, .operatorReset, "a refused reset is still recorded")
                XCTAssertFalse(machine.blockers.isEmpty)
            }
            // Resume from held.
            var held = machine(in: .held)
            _ = held.handle(.input(index: index, reading: reading), atNanos: 5)
            let transition = held.handle(.operatorResume, atNanos: 6)
            XCTAssertNotEqual(transition.to, .armed, "resume with \(Self.inputs[index].name) \(reading)")
        }
    }

    func testNotReadYetAndNoLinkBlockArming() {
        var fresh = InterlockMachine(inputs: Self.inputs)
        XCTAssertEqual(fresh.state, .faulted, "starts faulted")
        XCTAssertEqual(fresh.blockers.count, 5)
        XCTAssertEqual(fresh.handle(.operatorReset, atNanos: 1).to, .faulted)
        XCTAssertTrue(fresh.blockers.contains(.notRead(name: "pedal", role: .pedal)))
        XCTAssertTrue(fresh.blockers.contains(.noLink))

        var noLink = machine(in: .faulted)
        _ = noLink.handle(.linkLost, atNanos: 2)
        XCTAssertEqual(noLink.blockers, [.noLink])
        XCTAssertEqual(noLink.handle(.operatorReset, atNanos: 3).to, .faulted)
        _ = noLink.handle(.linkUp, atNanos: 4)
        XCTAssertEqual(noLink.handle(.operatorReset, atNanos: 5).to, .armed)

        var lineTest = InterlockMachine(inputs: [.init(name: "estop", role: .estop)], requiresLink: false)
        _ = lineTest.handle(.input(index: 0, reading: .inactive), atNanos: 1)
        XCTAssertEqual(lineTest.handle(.operatorReset, atNanos: 2).to, .armed)
    }

    func testNoInputsIsDeveloperModeButStillNeedsTheOperator() {
        var machine = InterlockMachine(inputs: [])
        _ = machine.handle(.linkUp, atNanos: 1)
        XCTAssertEqual(machine.state, .faulted)
        XCTAssertEqual(machine.handle(.operatorReset, atNanos: 2).to, .armed)
    }

    func testEstopReleaseNeverRestartsAnything() {
        var machine = machine(in: .armed)
        _ = machine.handle(.input(index: Self.estop, reading: .active), atNanos: 10)
        let release = machine.handle(.input(index: Self.estop, reading: .inactive), atNanos: 11)
        XCTAssertEqual(release.to, .estopped)
        XCTAssertTrue(release.actions.isEmpty)
        XCTAssertTrue(machine.isHealthy, "healthy again, and still latched")
        for event in [InterlockEvent.linkUp, .operatorResume, .operatorHold, .deviceHeld(.leaseExpired),
                      .input(index: Self.pedal, reading: .active)] {
            XCTAssertEqual(machine.handle(event, atNanos: 12).to, .estopped, "\(event)")
        }
        XCTAssertEqual(machine.handle(.operatorReset, atNanos: 13).to, .armed)
    }

    func testHeldNeverResumesByItself() {
        var machine = machine(in: .armed)
        XCTAssertEqual(machine.handle(.input(index: Self.pedal, reading: .inactive), atNanos: 1).to, .held)
        XCTAssertEqual(machine.handle(.input(index: Self.pedal, reading: .active), atNanos: 2).to, .held)
        XCTAssertTrue(machine.isHealthy)
        XCTAssertEqual(machine.handle(.operatorReset, atNanos: 3).to, .held, "reset is not resume")
        let resume = machine.handle(.operatorResume, atNanos: 4)
        XCTAssertEqual(resume.to, .armed)
        XCTAssertEqual(resume.actions, [.resumeDevice], "needle power stayed on while held")
    }

    func testTransitionsDescribeThemselves() {
        var machine = machine(in: .armed)
        let transition = machine.handle(.input(index: Self.estop, reading: .active), atNanos: 9)
        XCTAssertEqual(transition.cause.event, .input(index: Self.estop, reading: .active))
        XCTAssertEqual(transition.cause.input?.name, "estop")
        XCTAssertEqual(transition.cause.input?.role, .estop)
        XCTAssertEqual(transition.description, "e-stop \"estop\" pressed: armed → estopped; needle power off, send ESTOP")
        XCTAssertEqual(machine.handle(.input(index: Self.pedal, reading: .inactive), atNanos: 10).description,
                       "foot pedal \"pedal\" released: stays estopped")
    }

    // MARK: - The machine: every reachable state (breadth-first)

    private func allEvents() -> [InterlockEvent] {
        var events: [InterlockEvent] = []
        for index in Self.inputs.indices {
            for reading in [GPIOInputReading.active, .inactive, .lost] { events.append(.input(index: index, reading: reading)) }
        }
        return events + [.operatorReset, .operatorResume, .operatorHold, .operatorEstop, .deviceLatched(.estopButton),
                         .deviceHeld(.contactLost), .linkUp, .linkLost, .needlePowerFault]
    }

    func testInvariantsHoldInEveryReachableState() {
        let events = allEvents()
        let start = InterlockMachine(inputs: Self.inputs)
        var seen: Set<InterlockMachine> = [start]
        var queue = [start]
        var transitions = 0
        var reachedArmed = false
        while let machine = queue.popLast() {
            for event in events {
                var next = machine
                let transition = next.handle(event, atNanos: 0)
                transitions += 1
                check(transition, event: event, before: machine, after: next)
                if next.state == .armed { reachedArmed = true }
                if seen.insert(next).inserted { queue.append(next) }
            }
        }
        // 4 states × (4 readings incl. "not read")^4 × link up/down, minus what cannot be reached.
        XCTAssertGreaterThan(seen.count, 500, "the search explored the space")
        XCTAssertTrue(reachedArmed)
        XCTAssertGreaterThan(transitions, 10_000)
    }

    private func check(_ transition: InterlockTransition, event: InterlockEvent, before: InterlockMachine,
                       after: InterlockMachine) {
        let context = "\(event) in \(before.state) (\(before.readings), link \(before.linkIsUp))"
        XCTAssertEqual(transition.from, before.state, context)
        XCTAssertEqual(transition.to, after.state, context)

        // Armed only by the operator, only when healthy; from estopped only by reset, from held
        // only by resume: no path around the operator, no automatic resume.
        if after.state == .armed, before.state != .armed {
            XCTAssertTrue(before.isHealthy, context)
            switch before.state {
            case .faulted, .estopped: XCTAssertEqual(transition.cause.event, .operatorReset, context)
            case .held: XCTAssertEqual(transition.cause.event, .operatorResume, context)
            case .armed: break
            }
        }
        if case .input = event { XCTAssertFalse(after.state == .armed && before.state != .armed, context) }
        // While armed, everything is healthy.
        if after.state == .armed { XCTAssertTrue(after.isHealthy, context) }
        // E-stop line pressed or lost: estopped, power off first, ESTOP sent, from anywhere.
        if case .input(let index, let reading) = event, Self.inputs[index].role == .estop, reading != .inactive {
            XCTAssertEqual(after.state, .estopped, context)
            XCTAssertTrue(transition.actions.isSuperset(of: [.needlePowerOff, .sendEstop]), context)
        }
        // Leaving a powered state for an unpowered one always switches the power off.
        if before.state.needlePowered, !after.state.needlePowered {
            XCTAssertTrue(transition.actions.contains(.needlePowerOff), context)
        }
        // Power on and arming only together, only on the operator's reset.
        if transition.actions.contains(.needlePowerOn) || transition.actions.contains(.armDevice) {
            XCTAssertEqual(transition.actions, [.needlePowerOn, .armDevice], context)
            XCTAssertEqual(transition.cause.event, .operatorReset, context)
        }
        if transition.actions.contains(.resumeDevice) { XCTAssertEqual(transition.cause.event, .operatorResume, context) }
        // Never power on and off at once.
        XCTAssertFalse(transition.actions.contains(.needlePowerOn) && transition.actions.contains(.needlePowerOff), context)
    }

    // MARK: - The runtime over the simulated backend

    private static let configuration = MachineConfiguration(
        inputs: [
            InterlockInput(name: "estop", role: .estop, chip: "gpiochip0", lineOffset: 17, activeLow: false, bias: .pullUp,
                           debounce: .milliseconds(10)),
            InterlockInput(name: "pedal", role: .pedal, chip: "gpiochip0", lineOffset: 27, activeLow: true, bias: .pullUp,
                           debounce: .milliseconds(10)),
        ],
        outputs: [
            InterlockOutput(name: "needle-power", role: .needlePower, chip: "gpiochip0", lineOffset: 24, activeLow: false),
            InterlockOutput(name: "lamp", role: .lamp, chip: "gpiochip0", lineOffset: 25, activeLow: false),
        ])

    /// Everything the handlers saw, with waits on transitions.
    private final class Observed: @unchecked Sendable {
        struct Estop { var cause: FaultCode; var onInterlockQueue: Bool; var needlePowerAtCall: GPIOLevel? }
        private let lock = NSLock()
        private var transitionList: [InterlockTransition] = []
        private var estopList: [Estop] = []
        private var holdList: [InterlockCause] = []
        private var arms = 0, resumes = 0
        private var waiters: [(([InterlockTransition]) -> Bool, XCTestExpectation)] = []

        func locked<T>(_ body: () -> T) -> T {
            lock.lock()
            defer { lock.unlock() }
            return body()
        }
        var transitions: [InterlockTransition] { locked { transitionList } }
        var estops: [Estop] { locked { estopList } }
        var holds: [InterlockCause] { locked { holdList } }
        var armCount: Int { locked { arms } }
        var resumeCount: Int { locked { resumes } }
        func estop(_ value: Estop) { locked { estopList.append(value) } }
        func hold(_ cause: InterlockCause) { locked { holdList.append(cause) } }
        func arm() { locked { arms += 1 } }
        func resume() { locked { resumes += 1 } }

        func transition(_ transition: InterlockTransition) {
            let ready: [XCTestExpectation] = locked {
                transitionList.append(transition)
                let ready = waiters.filter { $0.0(transitionList) }
                waiters.removeAll { waiter in ready.contains { $0.1 === waiter.1 } }
                return ready.map(\.1)
            }
            ready.forEach { $0.fulfill() }
        }

        func expectation(_ description: String, _ condition: @escaping ([InterlockTransition]) -> Bool) -> XCTestExpectation {
            let expectation = XCTestExpectation(description: description)
            let already: Bool = locked {
                if condition(transitionList) { return true }
                waiters.append((condition, expectation))
                return false
            }
            if already { expectation.fulfill() }
            return expectation
        }
    }

    private static let onInterlockQueue = DispatchSpecificKey<Bool>()

    private func start(
        _ configuration: MachineConfiguration = InterlockTests.configuration, initial: [String: GPIOLevel]? = nil,
        linkUp: Bool = true
    ) throws -> (Interlocks, Observed) {
        let interlocks = try Interlocks.open(configuration: configuration, simulated: true,
                                             simulatedInitialLevels: initial, logger: Logger(label: "InterlockTests"))
        interlocks.queue.setSpecific(key: Self.onInterlockQueue, value: true)
        let observed = Observed()
        let simulator = interlocks.simulator
        interlocks.start(handlers: InterlockHandlers(
            onEstop: { cause in
                observed.estop(.init(cause: cause, onInterlockQueue: DispatchQueue.getSpecific(key: Self.onInterlockQueue) == true,
                                     needlePowerAtCall: simulator?.value(of: "needle-power")))
            },
            onHold: { observed.hold($0) },
            onArm: { observed.arm() },
            onResume: { observed.resume() },
            onTransition: { observed.transition($0) }))
        let count = configuration.inputs.count
        wait(for: [observed.expectation("initial readings") { $0.count >= count }], timeout: Self.timeout)
        if linkUp { interlocks.linkUp() }
        return (interlocks, observed)
    }

    /// Does `action`, then waits for a transition after it that satisfies `condition`.
    private func expect(_ observed: Observed, _ description: String, after action: () -> Void,
                        _ condition: @escaping (InterlockTransition) -> Bool) {
        let count = observed.transitions.count
        let expectation = observed.expectation(description) { $0.dropFirst(count).contains(where: condition) }
        action()
        wait(for: [expectation], timeout: Self.timeout)
    }

    private func closeAndWait(_ interlocks: Interlocks) {
        let closed = XCTestExpectation(description: "closed")
        interlocks.close { closed.fulfill() }
        wait(for: [closed], timeout: Self.timeout)
    }

    func testEstopEdgeCutsNeedlePowerBeforeOnEstopOnTheInterlockQueue() throws {
        let (interlocks, observed) = try start()
        defer { closeAndWait(interlocks) }
        let simulator = try XCTUnwrap(interlocks.simulator)
        XCTAssertEqual(simulator.value(of: "needle-power"), .inactive, "off from the start")

        let armed = observed.expectation("armed") { $0.contains { $0.to == .armed } }
        interlocks.operatorReset()
        wait(for: [armed], timeout: Self.timeout)
        XCTAssertEqual(simulator.value(of: "needle-power"), .active)
        XCTAssertEqual(simulator.value(of: "lamp"), .active)
        XCTAssertEqual(observed.armCount, 1)

        let edge = MonotonicClock.nowNanoseconds()
        let stopped = observed.expectation("estopped") { $0.contains { $0.to == .estopped } }
        simulator.set(line: "estop", to: .active, timestampNanos: edge)
        wait(for: [stopped], timeout: Self.timeout)

        let estops = observed.estops
        XCTAssertEqual(estops.count, 1)
        XCTAssertEqual(estops.first?.cause, .hostEstop)
        XCTAssertEqual(estops.first?.onInterlockQueue, true, "called directly on the interlock queue")
        XCTAssertEqual(estops.first?.needlePowerAtCall, .inactive, "needle power was off BEFORE onEstop ran")
        let transition = try XCTUnwrap(observed.transitions.last { $0.to == .estopped })
        XCTAssertEqual(transition.timestampNanos, edge, "the kernel (simulated) edge time is the transition's time")
        XCTAssertEqual(transition.actions, [.needlePowerOff, .sendEstop])
        XCTAssertEqual(simulator.value(of: "lamp"), .inactive)
    }

    func testOperatorFlowHoldResumeAndLatchedEstop() throws {
        let (interlocks, observed) = try start()
        defer { closeAndWait(interlocks) }
        let simulator = try XCTUnwrap(interlocks.simulator)
        expect(observed, "armed", after: { interlocks.operatorReset() }) { $0.to == .armed }

        // Pedal released: hold, power stays on.
        expect(observed, "held", after: { simulator.release(line: "pedal") }) { $0.to == .held }
        XCTAssertEqual(observed.holds.count, 1)
        XCTAssertTrue(observed.holds.first?.isInput("pedal", .inactive) == true, "\(observed.holds)")
        XCTAssertEqual(simulator.value(of: "needle-power"), .active, "a hold keeps power (stop category 2)")

        // Pedal pressed again (after its debounce): healthy, still held.
        expect(observed, "pedal pressed", after: { simulator.press(line: "pedal") }) {
            $0.cause.isInput("pedal", .active)
        }
        XCTAssertEqual(interlocks.status().state, .held, "no automatic resume")
        XCTAssertEqual(observed.resumeCount, 0)

        expect(observed, "resumed", after: { interlocks.operatorResume() }) { $0.to == .armed }
        XCTAssertEqual(observed.resumeCount, 1)

        // E-stop pressed then released: latched.
        expect(observed, "estopped", after: { simulator.press(line: "estop") }) { $0.to == .estopped }
        expect(observed, "e-stop released", after: { simulator.release(line: "estop") }) {
            $0.cause.isInput("estop", .inactive)
        }
        XCTAssertEqual(interlocks.status().state, .estopped, "releasing the e-stop restarts nothing")
        XCTAssertEqual(observed.armCount, 1)
        XCTAssertEqual(simulator.value(of: "needle-power"), .inactive)

        expect(observed, "re-armed", after: { interlocks.operatorReset() }) { $0.to == .armed }
        XCTAssertEqual(observed.armCount, 2)
        XCTAssertEqual(simulator.value(of: "needle-power"), .active)
    }

    func testResetIsRefusedWhileThePedalIsUp() throws {
        let (interlocks, observed) = try start(initial: ["estop": .inactive, "pedal": .inactive])
        defer { closeAndWait(interlocks) }
        expect(observed, "reset recorded", after: { interlocks.operatorReset() }) { $0.cause.event == .operatorReset }
        let status = interlocks.status()
        XCTAssertEqual(status.state, .faulted)
        XCTAssertEqual(status.blockers, [.unhealthy(name: "pedal", role: .pedal, reading: .inactive)])
        XCTAssertEqual(status.blockers.first?.description, "foot pedal \"pedal\" released")
        XCTAssertEqual(observed.armCount, 0)
        XCTAssertEqual(interlocks.simulator?.value(of: "needle-power"), .inactive)
    }

    func testEstopPressedAtStartUpStopsAtOnce() throws {
        let (interlocks, observed) = try start(initial: ["estop": .active, "pedal": .active], linkUp: false)
        defer { closeAndWait(interlocks) }
        let first = try XCTUnwrap(observed.transitions.first)
        XCTAssertTrue(first.cause.isInput("estop", .active), "\(first.cause)")
        XCTAssertEqual(first.to, .estopped)
        XCTAssertEqual(observed.estops.count, 1)
    }

    func testFailingNeedlePowerFailsClosed() throws {
        let (interlocks, observed) = try start()
        defer { closeAndWait(interlocks) }
        interlocks.simulator?.failOutputWrites(with: .ioError)
        expect(observed, "fault", after: { interlocks.operatorReset() }) { $0.cause.event == .needlePowerFault }
        XCTAssertEqual(interlocks.status().state, .estopped)
        XCTAssertTrue(interlocks.status().needlePowerFailed)
        XCTAssertEqual(observed.armCount, 0, "never armed without needle power under control")
        XCTAssertEqual(observed.estops.count, 1)
    }

    func testEstopStillReachesTheApplicatorWhenTheOutputFails() throws {
        let (interlocks, observed) = try start()
        defer { closeAndWait(interlocks) }
        expect(observed, "armed", after: { interlocks.operatorReset() }) { $0.to == .armed }
        interlocks.simulator?.failOutputWrites(with: .ioError)
        expect(observed, "estopped", after: { interlocks.simulator?.press(line: "estop") }) { $0.to == .estopped }
        XCTAssertEqual(observed.estops.count, 1)
    }

    func testLostChipIsAnEstop() throws {
        let (interlocks, observed) = try start()
        defer { closeAndWait(interlocks) }
        expect(observed, "armed", after: { interlocks.operatorReset() }) { $0.to == .armed }
        expect(observed, "estopped", after: { interlocks.simulator?.disconnect(chip: "gpiochip0") }) {
            $0.cause.isInput("estop", .lost)
        }
        XCTAssertEqual(interlocks.status().state, .estopped)
        // Every line of the chip is lost, and each is a stop: one ESTOP each (a repeat changes nothing).
        XCTAssertGreaterThanOrEqual(observed.estops.count, 1)
        expect(observed, "reset", after: { interlocks.operatorReset() }) { $0.cause.event == .operatorReset }
        XCTAssertEqual(interlocks.status().state, .estopped, "a lost line never becomes healthy again")
    }

    func testChipThatVanishesSilentlyIsAnEstopInsideTheLease() throws {
        // The kernel (6.1) does not wake a removed chip's descriptors: only the health check, a
        // read every lease/3, can see it. Armed, needle power on; the chip vanishes.
        XCTAssertEqual(Interlocks.healthCheckInterval(leaseMilliseconds: 100), .microseconds(33_333))
        let (interlocks, observed) = try start()
        defer { closeAndWait(interlocks) }
        expect(observed, "armed", after: { interlocks.operatorReset() }) { $0.to == .armed }
        let before = MonotonicClock.nowNanoseconds()
        // 5 s, not 30: it must come by itself (the descriptor stays silent), and it did not before.
        let stopped = observed.expectation("estopped") { $0.contains {
            $0.cause.isInput("estop", .lost) && $0.to == .estopped } }
        interlocks.simulator?.vanish(chip: "gpiochip0")
        wait(for: [stopped], timeout: 5)
        let transition = try XCTUnwrap(observed.transitions.first { $0.to == .estopped })
        XCTAssertEqual(transition.actions, [.needlePowerOff, .sendEstop])
        XCTAssertEqual("\(transition.cause)", "e-stop \"estop\" line lost")
        XCTAssertGreaterThanOrEqual(observed.estops.count, 1, "ESTOP sent to the applicator")
        XCTAssertEqual(interlocks.status().state, .estopped)
        // The needle-power output was on the vanished chip too: it could not be driven, and that
        // is recorded (the close will say so as well).
        XCTAssertTrue(interlocks.status().needlePowerFailed)
        print("chip vanished → estopped after \(Double(transition.timestampNanos - before) / 1e6) ms (lease 100 ms)")
    }

    func testNeedlePowerOffFailingAtCloseIsReturnedKeptAndSaysCutItByHand() throws {
        let (interlocks, observed) = try start()
        expect(observed, "armed", after: { interlocks.operatorReset() }) { $0.to == .armed }
        let simulator = try XCTUnwrap(interlocks.simulator)
        simulator.failSafeLevelAtClose(output: "needle-power", with: .ioError)
        let closed = XCTestExpectation(description: "closed")
        let failure = try XCTUnwrap(interlocks.closeConfirmingNeedlePowerOff { closed.fulfill() })
        wait(for: [closed], timeout: Self.timeout)
        XCTAssertEqual(failure.output, "needle-power")
        XCTAssertEqual(failure.chip, "gpiochip0")
        XCTAssertEqual(failure.lineOffset, 24)
        XCTAssertTrue("\(failure)".contains("NEEDLE POWER MAY STILL BE ON"), "\(failure)")
        XCTAssertTrue("\(failure)".contains("CUT THE NEEDLE POWER BY HAND"), "\(failure)")
        XCTAssertEqual(simulator.value(of: "needle-power"), .active, "the line is still on")
        XCTAssertEqual(interlocks.needlePowerOffFailure, failure, "kept for whoever asks later")
        XCTAssertEqual(interlocks.closeConfirmingNeedlePowerOff(), failure, "a second close says the same")
        XCTAssertTrue(interlocks.status().needlePowerFailed)
    }

    func testCloseThatSwitchesNeedlePowerOffReportsNoFailure() throws {
        let (interlocks, observed) = try start()
        expect(observed, "armed", after: { interlocks.operatorReset() }) { $0.to == .armed }
        XCTAssertNil(interlocks.closeConfirmingNeedlePowerOff())
        XCTAssertNil(interlocks.needlePowerOffFailure)
        XCTAssertEqual(interlocks.simulator?.value(of: "needle-power"), .inactive)
    }

    func testLinkAndDeviceEvents() throws {
        let (interlocks, observed) = try start()
        defer { closeAndWait(interlocks) }
        expect(observed, "armed", after: { interlocks.operatorReset() }) { $0.to == .armed }
        expect(observed, "device held", after: { interlocks.deviceHeld(.contactLost) }) { $0.to == .held }
        XCTAssertTrue(observed.holds.isEmpty, "the device held on its own: no HOLD to send")
        expect(observed, "faulted", after: { interlocks.linkLost() }) { $0.to == .faulted }
        XCTAssertEqual(interlocks.simulator?.value(of: "needle-power"), .inactive)
        interlocks.linkUp()
        expect(observed, "latched", after: { interlocks.deviceLatched(.overDepth) }) { $0.to == .estopped }
        XCTAssertTrue(observed.estops.isEmpty, "the device is already latched")
    }

    func testDeveloperModeRunsWithoutLines() throws {
        let (interlocks, observed) = try start(.builtIn)
        defer { closeAndWait(interlocks) }
        XCTAssertTrue(interlocks.backend.inputs.isEmpty)
        expect(observed, "armed", after: { interlocks.operatorReset() }) { $0.to == .armed }
        XCTAssertNil(interlocks.status().needlePower)
    }

    func testStatusFromInsideAHandlerDoesNotDeadlock() throws {
        let interlocks = try Interlocks.open(configuration: Self.configuration, simulated: true,
                                             logger: Logger(label: "InterlockTests"))
        defer { closeAndWait(interlocks) }
        let seen = XCTestExpectation(description: "status read on the queue")
        seen.assertForOverFulfill = false
        interlocks.start(handlers: InterlockHandlers(onEstop: { _ in }, onTransition: { _ in
            _ = interlocks.status()
            seen.fulfill()
        }))
        wait(for: [seen], timeout: Self.timeout)
    }

    func testCloseLeavesNeedlePowerOff() throws {
        let (interlocks, observed) = try start()
        expect(observed, "armed", after: { interlocks.operatorReset() }) { $0.to == .armed }
        let simulator = try XCTUnwrap(interlocks.simulator)
        XCTAssertEqual(simulator.value(of: "needle-power"), .active)
        closeAndWait(interlocks)
        XCTAssertEqual(simulator.value(of: "needle-power"), .inactive)
        XCTAssertEqual(simulator.value(of: "lamp"), .inactive)
    }
}

extension InterlockCause {
    /// An input event from the line named `name`, reading `reading`.
    func isInput(_ name: String, _ reading: GPIOInputReading) -> Bool {
        guard case .input(_, let read) = event else { return false }
        return input?.name == name && read == reading
    }
}
