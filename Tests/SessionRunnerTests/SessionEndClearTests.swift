import CSMPShim
import FirmwareProtocol
import Foundation
import Logging
import NeedleDriver
import XCTest

@testable import SessionRunner

/// Review of a3f079b: the end of a session sends CLEAR whatever the last STATUS the host saw
/// (firmware-protocol.md §6.9, 7: "it sends CLEAR … whatever the outcome"; the device ignores
/// CLEAR while it is really running). The link skipped CLEAR when that STATUS said `running` —
/// which it does whenever the final `ready` STATUS was lost on the line: a completed session over
/// a lossy link then left the applicator armed (ready, then held by its lease: needle power on).
final class SessionEndClearTests: XCTestCase {
    let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    /// Runs DOTs at once; the STATUS it sends for a DOT says `running` (needle in the skin), then
    /// DOT_DONE — and the `ready` STATUS after it is lost: after its first DOT it answers nothing
    /// but CLEAR (STATUS `disarmed`).
    final class LossyEndApplicator: @unchecked Sendable {
        let master: Int32
        let path: String
        private let lock = NSLock()
        private var received: [MessageType] = []
        private var stopped = false

        init() throws {
            var name = [CChar](repeating: 0, count: 128)
            master = smp_pty_open(&name, 128)
            guard master >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
            path = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            Thread.detachNewThread { [self] in serve() }
        }

        var types: [MessageType] { lock.withLock { received } }

        func stop() {
            lock.withLock { stopped = true }
            close(master)
        }

        static let hello = HelloReply(
            capabilities: [.deduplication, .epochFence, .lease], bootID: 0x1234_5678,
            firmwareID: "fake 1.0", queueCapacity: 32, leaseMilliseconds: 100,
            limits: DeviceLimits(depthMinMicrometres: 200, depthMaxMicrometres: 1500, dwellMinMicroseconds: 20_000,
                                 dwellMaxMicroseconds: 500_000, travelXMicrometres: 150_000, travelYMicrometres: 150_000,
                                 travelSpeedMicrometresPerSecond: 50_000, descendMicroseconds: 15_000,
                                 retractMicroseconds: 15_000),
            hostNonce: 0, doneCount: 0, lastDoneDotID: 0)

        private func status(_ state: DeviceState, ack: UInt8 = 0, done: UInt32 = 0, last: UInt32 = 0,
                            current: UInt32 = 0, retracted: Bool = true) -> Frame {
            Frame(.status(Status(state: state, fault: .none, queueDepth: current == 0 ? 0 : 1, freeSlots: 32, epoch: 0,
                                 ackSeq: ack, lastDoneSeq: done == 0 ? 0 : ack, lastDoneDotID: last, doneCount: done,
                                 currentDotID: current, needleRetracted: retracted, paceMilliseconds: 0)))
        }

        private func serve() {
            var decoder = FrameDecoder()
            var buffer = [UInt8](repeating: 0, count: 512)
            var state = DeviceState.disarmed
            var silent = false
            while !lock.withLock({ stopped }) {
                let count = read(master, &buffer, buffer.count)
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { return }
                var replies: [Frame] = []
                decoder.feed(buffer[..<count]) { event in
                    guard case .frame(let frame) = event else { return }
                    lock.withLock { received.append(frame.message.type) }
                    switch frame.message {
                    case .hello(let hello):
                        var reply = Self.hello
                        reply.hostNonce = hello.hostNonce
                        replies.append(Frame(.helloReply(reply)))
                    case .arm:
                        state = .ready
                        replies.append(status(state))
                    case .dot(let dot) where state == .ready && !silent:
                        let seq = frame.seq
                        replies.append(Frame(.ack(Ack(ackSeq: seq, freeSlots: 31, epoch: 0))))
                        replies.append(status(.running, ack: seq, current: dot.dotID, retracted: false))
                        replies.append(Frame(.dotDone(DotDone(dotSeq: seq, dotID: dot.dotID, doneCount: 1,
                                                              deviceTimeMicroseconds: 100_000))))
                        silent = true  // the `ready` STATUS that follows is lost, and every later answer but CLEAR's
                    case .clear where state == .ready || state == .held:
                        state = .disarmed
                        replies.append(status(state, done: 1))
                    default:
                        if !silent { replies.append(status(state)) }
                    }
                }
                for frame in replies {
                    let bytes = frame.encoded()
                    _ = bytes.withUnsafeBytes { write(master, $0.baseAddress, $0.count) }
                }
            }
        }
    }

    func testACompletedSessionWhoseLastStatusSaidRunningStillClearsTheApplicator() throws {
        let device = try LossyEndApplicator()
        defer { device.stop() }
        let plan = Plan(planID: "clear", dots: [PlanDot(id: 1, xMicrometres: 0, yMicrometres: 0, depthMicrometres: 700,
                                                       dwellMicroseconds: 60_000, index: 0)])
        let box = AccountBox()
        let session = Session(plan: plan, logger: logger)
        Thread.detachNewThread {
            box.set(Result { try session.run(devicePath: device.path, confirm: { _ in true }, onEvent: { _ in }) })
        }
        guard let result = box.wait(timeout: 20) else {
            session.requestAbort(reason: "test timeout")
            XCTFail("the session did not end")
            throw CancellationError()
        }
        let account = try result.get()
        XCTAssertEqual(account.outcome, .completed, account.reason ?? "")
        XCTAssertTrue(device.types.contains(.clear), "no CLEAR at the end: the applicator was left armed (\(device.types))")
        XCTAssertTrue(account.deviceDisarmed, "the applicator's STATUS disarmed was not taken")
    }
}
