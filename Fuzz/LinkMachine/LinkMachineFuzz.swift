// libFuzzer target for the host link machine (`make fuzz`): NeedleDriver's `LinkMachine` wired to
// the real firmware core (FirmwareCore, through DeviceSim) by a wire the input controls. The input
// is a script, one operation per byte (with operands from the next bytes): deliver, corrupt, drop
// or duplicate what either side sent, let time pass, give a host command (arm, stream dots, hold,
// abort, resume, e-stop, end) and — in "liar" runs (first byte odd) — fabricate device frames
// (ACK, NAK, DOT_DONE, STATUS, REFUSED) or raw noise. Then a clean wire lets everything settle.
//
// Checked on every frame the machine sends and every event it reports, beyond "does not crash":
//  - ARM only after the host asked to arm; RESUME only after it asked to arm or resume; CLEAR only
//    after it asked to end; no DOT after an e-stop, nor between a HOLD/ABORT and the host's next
//    arm, resume or start of streaming; DOT ids only from the dots the host gave;
//  - a dot reported done at most once, only if it was sent, never after it was returned, and
//    never returned after it was done;
//  - without lies on the wire (the device is the real firmware): every dot reported done was
//    injected by the firmware, no returned dot (safe to send again) was ever injected, and every
//    injected dot is done, interrupted, in doubt or still in flight (none forgotten).
import DeviceSim
import Foundation
import FirmwareProtocol
import NeedleDriver

#if canImport(Glibc)
import Glibc
#endif

/// LINK_FUZZ_TRACE=1: every step printed (to read a crash input: `link-machine-fuzz CRASH-FILE`).
let tracing = getenv("LINK_FUZZ_TRACE") != nil
func trace(_ text: @autoclosure () -> String) {
    if tracing { FileHandle.standardError.write(Data((text() + "\n").utf8)) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func linkMachineFuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var run = LinkFuzzRun(script: Script(UnsafeBufferPointer(start: data, count: size)))
    run.play()
    return 0
}

struct Script {
    let bytes: UnsafeBufferPointer<UInt8>
    var index = 0
    init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }
    var atEnd: Bool { index >= bytes.count }
    mutating func next() -> UInt8 {
        guard index < bytes.count else { return 0 }
        defer { index += 1 }
        return bytes[index]
    }
    mutating func next32() -> UInt32 {
        UInt32(next()) | UInt32(next()) << 8 | UInt32(next()) << 16 | UInt32(next()) << 24
    }
}

struct LinkFuzzRun {
    var script: Script
    let liar: Bool
    var machine: LinkMachine
    var firmware: Firmware
    /// Host time (ns, the machine's clock); the firmware gets it in µs.
    var now: UInt64 = 1_000_000
    /// Host → device bytes not delivered yet.
    var toDevice: [UInt8] = []
    /// Device → host frames (encoded, with their delimiter) not delivered yet.
    var toHost: [[UInt8]] = []
    var hostDecoder = FrameDecoder()
    var sentDecoder = FrameDecoder()
    var handshakeDone = false
    var closed = false

    // What the host asked for.
    var armAsked = false
    var resumeAsked = false
    var clearAsked = false
    var estopAsked = false
    var fenced = false
    var nextDotID: UInt32 = 1
    var given: Set<UInt32> = []

    // What the machine did and reported, and the firmware's ground truth.
    var sentIDs: Set<UInt32> = []
    var done: Set<UInt32> = []
    var returned: Set<UInt32> = []
    var injected: Set<UInt32> = []
    var inDoubt: Set<UInt32> = []
    var interrupted: Set<UInt32> = []

    init(script: Script) {
        self.script = script
        let mode = self.script.next()
        liar = mode & 1 == 1
        var link = LinkConfiguration()
        if mode & 2 != 0 { link.minimumDotIntervalMilliseconds = 60 }
        if mode & 4 != 0 { link.minimumSpacingMicrometres = 600 }
        // Both timings: the tick grid, and the exact deadlines ApplicatorLink's timerfd uses.
        if mode & 8 != 0 { link.deadlines = .exact }
        machine = LinkMachine(configuration: link, devicePath: "fuzz")
        var device = FirmwareConfiguration()
        device.minimumSpacingMicrometres = 0
        firmware = Firmware(configuration: device, at: now / 1000)
    }

    mutating func play() {
        apply(machine.connect(nonce: 0x5EED_0001, now: now))
        var steps = 0
        while !script.atEnd && steps < 2_000 {
            steps += 1
            step(script.next())
        }
        // A clean wire: everything delivered, time passing, so every answer arrives.
        for _ in 0..<150 {
            deliverToDevice(corrupting: nil)
            while !toHost.isEmpty { deliverToHost() }
            advance(by: 2_000_000)
        }
        if !liar {
            precondition(done.isSubset(of: injected), "reported done, never injected: \(done.subtracting(injected).sorted())")
            precondition(returned.isDisjoint(with: injected),
                         "returned (to be sent again) but injected: \(returned.intersection(injected).sorted())")
            // The host never loses sight of a dot the device injected: it is done, interrupted,
            // in doubt, or still in flight (its DOT_DONE to come) — never silently forgotten,
            // which would leave an injection out of the records.
            let accounted = done.union(interrupted).union(inDoubt).union(machine.inFlight.map(\.dotID))
            precondition(injected.isSubset(of: accounted),
                         "injected but forgotten by the host: \(injected.subtracting(accounted).sorted())")
        }
    }

    mutating func step(_ op: UInt8) {
        trace("op \(op % 10) at \(now / 1_000_000) ms")
        switch op % 10 {
        case 0: deliverToDevice(corrupting: nil)
        case 1: deliverToDevice(corrupting: Int(script.next()))
        case 2: toDevice.removeAll()
        case 3: deliverToHost()
        case 4: if !toHost.isEmpty { toHost.removeFirst() }
        case 5:
            if let first = toHost.first { toHost.insert(first, at: 0) }
            deliverToHost()
        case 6: while !toHost.isEmpty { deliverToHost() }
        case 7: advance(by: (UInt64(script.next()) + 1) * 500_000)
        case 8: command(script.next())
        default: if liar { fabricate(script.next()) } else { noise() }
        }
    }

    // MARK: - The host

    mutating func command(_ code: UInt8) {
        trace(" command \(code % 8)")
        switch code % 8 {
        case 0:
            armAsked = true
            fenced = false
            apply(machine.arm(now: now))
        case 1:
            // Streaming asked for explicitly: the host's own request, like a resume.
            fenced = false
            apply(machine.startStreaming())
            pump(count: Int(script.next() % 8) + 1)
        case 2:
            fenced = true
            apply(machine.hold(now: now))
        case 3:
            fenced = true
            apply(machine.abort(now: now))
        case 4:
            resumeAsked = true
            fenced = false
            apply(machine.resume(now: now))
        case 5:
            estopAsked = true
            apply(machine.estop(cause: .hostEstop, now: now))
        case 6:
            clearAsked = true
            apply(machine.disarmAndClose(now: now))
        default:
            pump(count: Int(script.next() % 8) + 1)
        }
    }

    /// Gives the machine fresh dots, as many as its credit takes (as ApplicatorLink pulls them).
    mutating func pump(count: Int) {
        let take = min(count, machine.dotCredit)
        guard take > 0 else { return }
        var dots: [DotCommand] = []
        for _ in 0..<take {
            let id = nextDotID
            nextDotID += 1
            given.insert(id)
            dots.append(DotCommand(dotID: id, epoch: 0, xMicrometres: Int32(id % 40) * 1_000,
                                   yMicrometres: Int32(id / 40 % 40) * 1_000, depthMicrometres: 800,
                                   dwellMicroseconds: 30_000))
        }
        apply(machine.send(dots: dots, now: now))
    }

    mutating func apply(_ output: LinkOutput) {
        for action in output.actions { if case .event(let event) = action { trace("  event \(event)") } }
        if !output.bytes.isEmpty {
            inspectSent(output.bytes)
            toDevice.append(contentsOf: output.bytes)
        }
        for action in output.actions {
            switch action {
            case .event(let event): inspect(event)
            case .handshakeFinished(let result): if case .success = result { handshakeDone = true }
            case .closePort: closed = true
            case .disarmFinished, .log: break
            }
        }
    }

    mutating func inspectSent(_ bytes: [UInt8]) {
        for event in sentDecoder.feed(bytes) {
            guard case .frame(let frame) = event else {
                preconditionFailure("the machine sent a frame its own decoder refuses: \(event)")
            }
            trace("  host sends \(frame.seq) \(frame.message)")
            switch frame.message {
            case .arm:
                precondition(armAsked, "ARM sent without the host asking")
            case .resume:
                precondition(armAsked || resumeAsked, "RESUME sent without the host asking")
            case .clear:
                precondition(clearAsked, "CLEAR sent without the host asking to end")
            case .dot(let dot):
                precondition(given.contains(dot.dotID), "DOT \(dot.dotID) was never given")
                precondition(!estopAsked, "DOT \(dot.dotID) sent after an e-stop")
                precondition(!fenced, "DOT \(dot.dotID) sent after HOLD/ABORT without a resume")
                sentIDs.insert(dot.dotID)
            default:
                break
            }
        }
    }

    mutating func inspect(_ event: LinkEvent) {
        switch event {
        case .dotDone(let id, _, _):
            precondition(sentIDs.contains(id), "dot \(id) reported done but never sent")
            precondition(!done.contains(id), "dot \(id) reported done twice")
            precondition(!returned.contains(id), "dot \(id) reported done after it was returned")
            done.insert(id)
        case .dotsReturned(let dots):
            for dot in dots {
                precondition(!done.contains(dot.dotID), "dot \(dot.dotID) returned after it was done")
                returned.insert(dot.dotID)
            }
        case .dotsInDoubt(let dots):
            for dot in dots { inDoubt.insert(dot.dotID) }
        case .dotInterrupted(let id):
            interrupted.insert(id)
        default:
            break
        }
    }

    // MARK: - The wire and the device

    mutating func deliverToDevice(corrupting position: Int?) {
        guard !toDevice.isEmpty else { return }
        var bytes = toDevice
        toDevice.removeAll()
        if let position { bytes[position % bytes.count] ^= 0x10 }
        if tracing {
            var decoder = FrameDecoder()
            for event in decoder.feed(bytes) { trace("  device gets \(event)") }
        }
        absorb(firmware.receive(bytes, at: now / 1000))
    }

    mutating func absorb(_ output: FirmwareOutput) {
        for event in output.events { trace("  firmware \(event)") }
        for dot in output.injectedDots { injected.insert(dot.dotID) }
        for frame in output.frames { toHost.append(frame.encoded()) }
    }

    mutating func deliverToHost() {
        guard !toHost.isEmpty else { return }
        if tracing {
            var decoder = FrameDecoder()
            if case .frame(let frame)? = decoder.feed(toHost[0]).first { trace(" device sends \(frame.seq) \(frame.message)") }
        }
        receive(toHost.removeFirst())
    }

    mutating func receive(_ bytes: [UInt8]) {
        guard !closed else { return }
        machine.received(byteCount: bytes.count)
        var events: [FrameDecoder.Event] = []
        hostDecoder.feed(bytes) { events.append($0) }
        for event in events {
            apply(machine.receive(event, now: now))
            apply(machine.settle(now: now))
        }
    }

    mutating func advance(by nanoseconds: UInt64) {
        let end = now + nanoseconds
        while true {
            let due = machine.nextDeadline.map { min($0, end) } ?? end
            now = max(now, due)
            absorb(firmware.advance(to: now / 1000))
            if let deadline = machine.nextDeadline, deadline <= now { apply(machine.tick(now: now)) }
            if now >= end { break }
        }
    }

    /// Line noise (no valid frame: a CRC would have to match).
    mutating func noise() {
        let count = Int(script.next() % 16) + 1
        receive((0..<count).map { _ in script.next() })
    }

    /// A device frame the real device did not send.
    mutating func fabricate(_ kind: UInt8) {
        let seq = script.next()
        let message: Message
        switch kind % 6 {
        case 0:
            message = .ack(Ack(ackSeq: script.next(), freeSlots: script.next() % 40, epoch: UInt16(script.next() % 4)))
        case 1:
            message = .nak(Nak(expectedSeq: script.next(), reason: ErrorCode(rawValue: script.next() % 8) ?? .badFrame,
                               freeSlots: script.next() % 40))
        case 2:
            let pick = script.next()
            let id = sentIDs.isEmpty || pick & 0x80 != 0 ? UInt32(pick) : sentIDs.sorted()[Int(pick) % sentIDs.count]
            message = .dotDone(DotDone(dotSeq: script.next(), dotID: id, doneCount: script.next32() % 64,
                                       deviceTimeMicroseconds: now / 1000))
        case 3:
            let states = DeviceState.allCases
            let faults = FaultCode.allCases
            message = .status(Status(
                state: states[Int(script.next()) % states.count], fault: faults[Int(script.next()) % faults.count],
                queueDepth: script.next() % 40, freeSlots: script.next() % 40, epoch: UInt16(script.next() % 4),
                ackSeq: script.next(), lastDoneSeq: script.next(), lastDoneDotID: UInt32(script.next()),
                doneCount: UInt32(script.next()), currentDotID: UInt32(script.next()),
                needleRetracted: script.next() & 1 == 0))
        case 4:
            let states = DeviceState.allCases
            message = .refused(Refused(seq: script.next(), dotID: UInt32(script.next()),
                                       code: ErrorCode(rawValue: script.next() % 12) ?? .badFrame,
                                       value: Int32(bitPattern: script.next32()),
                                       state: states[Int(script.next()) % states.count], fault: .none))
        default:
            noise()
            return
        }
        trace(" fabricated \(seq) \(message)")
        receive(Frame(seq: seq, message).encoded())
    }
}
