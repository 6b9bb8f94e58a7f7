import CSMPShim
import FirmwareProtocol
import Foundation

/// A fake applicator on a real pty whose answers a test scripts: `respond` gets every decoded
/// frame (on the fake's own thread, in order) and returns the frames to send back. It records the
/// message types it received. For device behaviour the simulator cannot produce (replies outside
/// the protocol's ranges, a STATUS lost at a chosen moment).
final class ScriptedApplicator: @unchecked Sendable {
    let master: Int32
    let path: String
    private let lock = NSLock()
    private var received: [MessageType] = []
    private var stopped = false

    init(respond: @escaping @Sendable (Frame) -> [Frame]) throws {
        var name = [CChar](repeating: 0, count: 128)
        master = smp_pty_open(&name, 128)
        guard master >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        path = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        Thread.detachNewThread { [self] in serve(respond) }
    }

    var types: [MessageType] { lock.withLock { received } }

    func stop() {
        lock.withLock { stopped = true }
        close(master)
    }

    /// A plausible reply; tests change the fields they are about.
    static let hello = HelloReply(
        capabilities: [.deduplication, .epochFence, .lease], bootID: 0x1234_5678,
        firmwareID: "fake 1.0", queueCapacity: 32, leaseMilliseconds: 100,
        limits: DeviceLimits(depthMinMicrometres: 200, depthMaxMicrometres: 1500, dwellMinMicroseconds: 20_000,
                             dwellMaxMicroseconds: 500_000, travelXMicrometres: 150_000, travelYMicrometres: 150_000,
                             travelSpeedMicrometresPerSecond: 50_000, descendMicroseconds: 15_000,
                             retractMicroseconds: 15_000),
        hostNonce: 0, doneCount: 0, lastDoneDotID: 0)

    /// The plausible reply to `hello`, with its nonce.
    static func reply(to hello: Hello) -> Frame {
        var reply = Self.hello
        reply.hostNonce = hello.hostNonce
        return Frame(.helloReply(reply))
    }

    private func serve(_ respond: @Sendable (Frame) -> [Frame]) {
        var decoder = FrameDecoder()
        var buffer = [UInt8](repeating: 0, count: 512)
        while !lock.withLock({ stopped }) {
            let count = read(master, &buffer, buffer.count)
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { return }
            var replies: [Frame] = []
            decoder.feed(buffer[..<count]) { event in
                guard case .frame(let frame) = event else { return }
                lock.withLock { received.append(frame.message.type) }
                replies += respond(frame)
            }
            for frame in replies {
                let bytes = frame.encoded()
                _ = bytes.withUnsafeBytes { write(master, $0.baseAddress, $0.count) }
            }
        }
    }
}
