import Foundation
import Logging
@testable import SessionRunner
import SMPPlan
import XCTest

@testable import SMPStation

/// What the page is sent: the dot map's codes from the session's events, and the server's
/// refusals (token, foreign Host, foreign Origin) over a plain socket.
final class StationStateTests: XCTestCase {
    static func dot(_ id: UInt32, _ x: Int32) -> PlanDot {
        PlanDot(id: id, xMicrometres: x, yMicrometres: 0, depthMicrometres: 800, dwellMicroseconds: 100_000,
                region: "front", index: Int(id) - 1)
    }

    static let plan = Plan(planID: "station-test", dots: (1...6).map { dot($0, Int32($0) * 1_000) })

    static func snapshot(_ state: StationState) throws -> [String: Any] {
        try XCTUnwrap(JSONSerialization.jsonObject(with: Data(state.snapshot().utf8)) as? [String: Any])
    }

    func testEveryDoneDotIsMarkedAndTheNextIsInFlightWhileRunning() throws {
        let state = StationState(plan: Self.plan, sim: true)
        XCTAssertEqual(try Self.snapshot(state)["codes"] as? String, "pppppp")
        state.observe(.armed)
        XCTAssertEqual(try Self.snapshot(state)["codes"] as? String, "fppppp")
        for id: UInt32 in 1...3 {
            state.observe(.progress(SessionProgress(done: Int(id), total: 6, lastDotID: id, region: "front")))
        }
        var snapshot = try Self.snapshot(state)
        XCTAssertEqual(snapshot["codes"] as? String, "dddfpp")
        XCTAssertEqual(snapshot["done"] as? Int, 3)
        XCTAssertEqual(snapshot["phase"] as? String, "running")
        // Held: nothing is in flight; the in-doubt and cut-short dots are marked as such.
        state.observe(.held(reason: "operator hold"))
        state.observe(.dotInterrupted(dotID: 4))
        state.observe(.dotsInDoubt([5]))
        snapshot = try Self.snapshot(state)
        XCTAssertEqual(snapshot["codes"] as? String, "dddxqp")
        XCTAssertEqual(snapshot["phase"] as? String, "held")
        XCTAssertEqual(snapshot["holdReason"] as? String, "operator hold")
        state.observe(.resumed)
        XCTAssertEqual(try Self.snapshot(state)["codes"] as? String, "dddxqf")
    }

    func testAResumedSessionShowsTheDotsOfEarlierRunsAndTheQuestionOpen() throws {
        let state = StationState(plan: Self.plan, sim: false)
        state.markEarlier([(1, .done), (2, .done), (3, .ambiguous), (4, .sent), (5, .skipped)])
        state.setQuestion(.arm)
        state.note("Arm the applicator and start 6 dots? [y/N]")
        let snapshot = try Self.snapshot(state)
        XCTAssertEqual(snapshot["codes"] as? String, "ddqpsp")
        XCTAssertEqual(snapshot["question"] as? String, "arm")
        XCTAssertEqual(snapshot["notes"] as? [String], ["Arm the applicator and start 6 dots? [y/N]"])
    }

    func testOnlyTheKnownCommandsAreTaken() {
        XCTAssertEqual(StationServer.command(#"{"command":"hold"}"#), .hold)
        XCTAssertEqual(StationServer.command(#"{"command":"end"}"#), .end)
        XCTAssertNil(StationServer.command(#"{"command":"estop"}"#))
        XCTAssertNil(StationServer.command("hold"))
    }

    func testTheServerRefusesAWrongTokenAForeignHostAndAForeignOrigin() throws {
        let commands = CommandLog()
        let server = StationServer(
            state: StationState(plan: Self.plan, sim: true),
            configuration: StationConfiguration(host: "127.0.0.1", port: 0, token: "0123456789abcdef"),
            commands: { commands.append($0) }, report: { nil }, logger: Logger(label: "test"))
        let port = try server.start()
        defer { server.stop() }
        func status(_ request: String) throws -> String {
            let response = try RawHTTP.exchange(port: port, request)
            return String(response.split(separator: "\r\n").first ?? "")
        }
        let host = "Host: 127.0.0.1:\(port)"
        XCTAssertTrue(try status("GET /?token=0123456789abcdef HTTP/1.1\r\n\(host)\r\n\r\n").contains(" 200"))
        XCTAssertTrue(try status("GET / HTTP/1.1\r\n\(host)\r\n\r\n").contains(" 403"))
        XCTAssertTrue(try status("GET /?token=0123456789abcdeX HTTP/1.1\r\n\(host)\r\n\r\n").contains(" 403"))
        // DNS rebinding: a loopback station answers only requests that name a loopback host.
        XCTAssertTrue(try status("GET /?token=0123456789abcdef HTTP/1.1\r\nHost: evil.example\r\n\r\n").contains(" 403"))
        let upgrade = "GET /ws?token=0123456789abcdef HTTP/1.1\r\n\(host)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        // Another site's script in the same browser cannot open the page's WebSocket.
        XCTAssertFalse(try status(upgrade + "Origin: http://evil.example\r\n\r\n").contains(" 101"))
        XCTAssertTrue(try status(upgrade + "Origin: http://127.0.0.1:\(port)\r\n\r\n").contains(" 101"))
        XCTAssertEqual(commands.all, [])
    }

    func testAPortInUseIsAnErrorFromStart() throws {
        let first = StationServer(state: StationState(plan: Self.plan, sim: true), configuration: StationConfiguration(port: 0),
                                  commands: { _ in }, report: { nil }, logger: Logger(label: "test"))
        let port = try first.start()
        defer { first.stop() }
        let second = StationServer(state: StationState(plan: Self.plan, sim: true), configuration: StationConfiguration(port: port),
                                   commands: { _ in }, report: { nil }, logger: Logger(label: "test"))
        XCTAssertThrowsError(try second.start()) { error in
            XCTAssertTrue("\(error)".contains("cannot listen on 127.0.0.1:\(port)"), "\(error)")
        }
    }
}

final class CommandLog: @unchecked Sendable {  // `commands` only under `lock`
    private let lock = NSLock()
    private var commands: [StationCommand] = []
    func append(_ command: StationCommand) { lock.withLock { commands.append(command) } }
    var all: [StationCommand] { lock.withLock { commands } }
}

/// One HTTP request over a plain TCP socket, so that Host and Origin can be anything.
enum RawHTTP {
    static func exchange(port: Int, _ request: String) throws -> String {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EIO) }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw POSIXError(.ECONNREFUSED) }
        let bytes = Array(request.utf8)
        guard send(fd, bytes, bytes.count, 0) == bytes.count else { throw POSIXError(.EIO) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = recv(fd, &buffer, buffer.count, 0)
        guard count > 0 else { throw POSIXError(.EIO) }
        return String(decoding: buffer[..<count], as: UTF8.self)
    }
}
