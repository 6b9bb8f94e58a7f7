// fwclient: a raw protocol client for the firmware test rig (hil/firmware-qemu.sh). It speaks to
// the firmware through the same codec (Sources/FirmwareProtocol, compiled in) but none of the
// host's safety checks, so it can send what smpctl never would: garbage, a dot outside the
// envelope. Each scenario prints one JSON line and exits 0 when the firmware behaved, 1 when not.
//
//   fwclient rtt PTY [COUNT]      HELLO, then COUNT STATUS_REQUEST round trips (figures)
//   fwclient estop PTY            HELLO, ARM, 3 DOTs, ESTOP: state estop/host_estop, no DOT_DONE after
//   fwclient garbage PTY [SEED]   4 KB of random bytes: NAK bad_frame, then a clean HELLO still works
//   fwclient envelope PTY         HELLO, ARM, a DOT 3 mm deep (limit 1.5 mm): REFUSED, fault latched
// Compiled in one module with Sources/FirmwareProtocol/*.swift (Makefile, fwclient): no import.
#if canImport(Glibc)
import Glibc
#endif

struct Failure: Error { let message: String }

final class Link {
    let fd: Int32
    var decoder = FrameDecoder()
    var pending: [Frame] = []
    var discarded = 0

    init(path: String) throws {
        fd = open(path, O_RDWR | O_NOCTTY)
        guard fd >= 0 else { throw Failure(message: "open \(path): errno \(errno)") }
        var tio = termios()
        tcgetattr(fd, &tio)
        cfmakeraw(&tio)
        tcsetattr(fd, TCSANOW, &tio)
        tcflush(fd, TCIOFLUSH)
    }

    func send(_ message: Message, seq: UInt8 = 0) { write(Frame(seq: seq, message).encoded()) }

    func write(_ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n > 0 { offset += n } else if errno != EINTR && errno != EAGAIN { return }
        }
    }

    /// The next frame, or nil after `timeoutMs` of silence.
    func next(timeoutMs: Int32 = 2000) -> Frame? {
        while pending.isEmpty {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, timeoutMs) > 0 else { return nil }
            var buffer = [UInt8](repeating: 0, count: 512)
            let n = read(fd, &buffer, buffer.count)
            guard n > 0 else { return nil }
            decoder.feed(buffer[..<n]) { event in
                switch event {
                case .frame(let frame): pending.append(frame)
                case .discarded: discarded += 1
                }
            }
        }
        return pending.removeFirst()
    }

    /// Frames until one matches `want` (returned) or `timeoutMs` passes (nil).
    func expect(timeoutMs: Int32 = 2000, _ want: (Message) -> Bool) -> Message? {
        while let frame = next(timeoutMs: timeoutMs) {
            if want(frame.message) { return frame.message }
        }
        return nil
    }

    func hello() throws -> HelloReply {
        send(.hello(Hello(requestedLeaseMilliseconds: 250, hostNonce: 0x5EED)))
        guard case .helloReply(let reply)? = expect({ if case .helloReply = $0 { true } else { false } }) else {
            throw Failure(message: "no HELLO_REPLY")
        }
        return reply
    }

    func status() -> Status? {
        send(.statusRequest)
        if case .status(let status)? = expect({ if case .status = $0 { true } else { false } }) { return status }
        return nil
    }

    func arm() throws {
        send(.arm)
        guard case .status(let status)? = expect({ if case .status(let s) = $0, s.state != .disarmed { true } else { false } }),
              status.state == .ready else { throw Failure(message: "ARM did not make the device ready") }
    }
}

func monotonicMicroseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec) / 1000
}

func dot(_ id: UInt32, x: Int32 = 0, depth: UInt16 = 800, dwell: UInt32 = 60_000) -> Message {
    .dot(DotCommand(dotID: id, epoch: 0, xMicrometres: x, yMicrometres: 0, depthMicrometres: depth,
                    dwellMicroseconds: dwell))
}

func json(_ fields: [(String, String)]) -> String {
    "{" + fields.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}"
}

func run(_ arguments: [String]) throws -> Bool {
    guard arguments.count >= 3 else { throw Failure(message: "usage: fwclient rtt|estop|garbage|envelope PTY [N]") }
    let link = try Link(path: arguments[2])
    let number = arguments.count > 3 ? Int(arguments[3]) : nil
    switch arguments[1] {
    case "rtt":
        _ = try link.hello()
        var samples: [UInt64] = []
        for _ in 0..<(number ?? 50) {
            let start = monotonicMicroseconds()
            guard link.status() != nil else { throw Failure(message: "no STATUS") }
            samples.append(monotonicMicroseconds() - start)
        }
        samples.sort()
        print(json([("scenario", "\"rtt\""), ("count", "\(samples.count)"), ("median_us", "\(samples[samples.count / 2])"),
                    ("max_us", "\(samples.last!)")]))
        return true
    case "estop":
        _ = try link.hello()
        try link.arm()
        for i in 1...3 { link.send(dot(UInt32(i), x: Int32(i) * 1000, dwell: 200_000), seq: UInt8(i)) }
        // Protocol 1.3 reports ready → running only when asked (firmware-protocol.md §4 STATUS):
        // the DOTs' ACK, then a STATUS_REQUEST's answer says the first dot is under way.
        guard link.expect(timeoutMs: 2000, { if case .ack = $0 { true } else { false } }) != nil,
              link.status()?.state == .running else {
            throw Failure(message: "the dots did not start")
        }
        let sent = monotonicMicroseconds()
        link.send(.estop(cause: .hostEstop))
        guard case .status(let status)? = link.expect({ if case .status(let s) = $0, s.state == .estop { true } else { false } }) else {
            throw Failure(message: "no STATUS estop after ESTOP")
        }
        let latency = monotonicMicroseconds() - sent
        var lateDone = false
        while let frame = link.next(timeoutMs: 500) { if case .dotDone = frame.message { lateDone = true } }
        let ok = status.fault == .hostEstop && status.needleRetracted && !lateDone
        print(json([("scenario", "\"estop\""), ("state", "\"\(status.state)\""), ("fault", "\"\(status.fault)\""),
                    ("needle_retracted", "\(status.needleRetracted)"), ("dot_done_after_estop", "\(lateDone)"),
                    ("current_dot_id", "\(status.currentDotID)"), ("host_round_trip_us", "\(latency)"), ("ok", "\(ok)")]))
        link.send(.clear)
        return ok
    case "garbage":
        var rng = SystemRandomNumberGenerator()
        var seed = number.map { UInt64(truncatingIfNeeded: $0) } ?? rng.next()
        var bytes: [UInt8] = []
        for _ in 0..<4096 {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            bytes.append(UInt8(truncatingIfNeeded: seed >> 33))
        }
        link.write(bytes)
        link.write([0])
        var naks = 0
        while let frame = link.next(timeoutMs: 1000) { if case .nak(let nak) = frame.message, nak.reason == .badFrame { naks += 1 } }
        let reply = try link.hello()
        let status = link.status()
        let ok = naks > 0 && status?.state == .disarmed && status?.doneCount == reply.doneCount
        print(json([("scenario", "\"garbage\""), ("bytes", "\(bytes.count + 1)"), ("nak_bad_frame", "\(naks)"),
                    ("hello_after", "true"), ("state_after", "\"\(status.map { "\($0.state)" } ?? "none")\""), ("ok", "\(ok)")]))
        return ok
    case "envelope":
        let reply = try link.hello()
        try link.arm()
        let depth = reply.limits.depthMaxMicrometres * 2
        link.send(dot(9001, depth: depth), seq: 1)
        guard case .refused(let refused)? = link.expect({ if case .refused = $0 { true } else { false } }) else {
            throw Failure(message: "no REFUSED for a dot \(depth) µm deep")
        }
        let status = link.status()
        var doneSeen = false
        while let frame = link.next(timeoutMs: 300) { if case .dotDone = frame.message { doneSeen = true } }
        let ok = refused.dotID == 9001 && status?.state == .fault && status?.fault == .dotOutOfLimits && !doneSeen
            && status?.doneCount == reply.doneCount
        print(json([("scenario", "\"envelope\""), ("depth_um", "\(depth)"), ("refused_code", "\"\(refused.code)\""),
                    ("refused_value", "\(refused.value)"), ("state", "\"\(status.map { "\($0.state)" } ?? "none")\""),
                    ("fault", "\"\(status.map { "\($0.fault)" } ?? "none")\""), ("dot_done", "\(doneSeen)"), ("ok", "\(ok)")]))
        link.send(.clear)
        return ok
    default:
        throw Failure(message: "unknown scenario \(arguments[1])")
    }
}

@main
struct FirmwareClient {
    static func main() {
        do {
            exit(try run(CommandLine.arguments) ? 0 : 1)
        } catch let failure as Failure {
            print(json([("error", "\"\(failure.message)\"")]))
            exit(1)
        } catch {
            print(json([("error", "\"\(error)\"")]))
            exit(1)
        }
    }
}
