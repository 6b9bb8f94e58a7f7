import Dispatch
import Foundation
import Hummingbird
import HummingbirdWebSocket
import Logging
import SMPSystem

/// What a page may ask for. The CLI carries each out through the operator console — the same
/// entry points as the terminal's keys, with the same rules — so the page is another face of the
/// session, never a second controller.
public enum StationCommand: String, Sendable, CaseIterable {
    /// The preflight's second, deliberate confirmation: arm and start.
    case arm
    /// The preflight answered no.
    case decline
    /// Hold (as the first Ctrl-C).
    case hold
    /// Resume after a hold, confirmed on the page (as Enter at the terminal's question).
    case resume
    /// End the session, confirmed on the page (as Ctrl-C twice and "y").
    case end
}

/// Where the station listens.
public struct StationConfiguration: Sendable {
    public var host: String
    /// 0: any free port (the one bound is returned by `start`).
    public var port: Int
    /// When set, every request must carry `?token=` with it (required off loopback).
    public var token: String?

    public init(host: String = "127.0.0.1", port: Int = 8470, token: String? = nil) {
        self.host = host
        self.port = port
        self.token = token
    }

    /// 127.0.0.0/8, ::1 and localhost: reachable from this computer only.
    public static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }
}

public struct StationError: Error, CustomStringConvertible {
    public var description: String
}

/// The station's web server (Hummingbird on swift-nio's event loops, its own threads): the page,
/// the report, and a WebSocket per open page carrying the state out and commands in.
///
/// Only `Sendable` values cross: the session's queue writes `StationState` under its lock; a
/// broadcast task reads a snapshot at most every 100 ms (so a simulator at time scale 0 cannot
/// flood the pages) and hands the same text to every page's own bounded stream (a slow page
/// loses intermediate states, never the latest, and never slows the others or the session).
public final class StationServer: Sendable {
    private let state: StationState
    private let configuration: StationConfiguration
    private let commands: @Sendable (StationCommand) -> Void
    private let report: @Sendable () -> String?
    private let logger: Logger
    private let pages = Locked(Pages())
    private let run = Locked(RunState())

    private struct Pages {
        var next = 0
        var open: [Int: AsyncStream<String>.Continuation] = [:]
        var closed = false
    }

    private struct RunState {
        var tasks: [Task<Void, Never>] = []
        var boundPort: Int?
        var failure: String?
    }

    /// - Parameters:
    ///   - commands: called on a swift-nio thread; must not block (hand over to a queue).
    ///   - report: the session's HTML report, once there is one (called on a swift-nio thread).
    public init(state: StationState, configuration: StationConfiguration,
                commands: @escaping @Sendable (StationCommand) -> Void,
                report: @escaping @Sendable () -> String?, logger: Logger) {
        self.state = state
        self.configuration = configuration
        self.commands = commands
        self.report = report
        self.logger = logger
    }

    /// Binds and starts serving; returns the port bound. Throws when the address cannot be
    /// bound (in use, not this computer's, not permitted): nothing else has started then.
    public func start() throws(StationError) -> Int {
        let ready = DispatchSemaphore(value: 0)
        let app = makeApplication(onRunning: { [run] port in
            run.withLock { $0.boundPort = port }
            ready.signal()
        })
        let server = Task { [run, logger] in
            do {
                try await app.run()
            } catch {
                logger.debug("station server ended: \(error)")
                run.withLock { $0.failure = "\(error)" }
            }
            ready.signal()  // a bind failure ends `run` before it is running
        }
        ready.wait()
        let (port, failure) = run.withLock { ($0.boundPort, $0.failure) }
        guard let port else {
            throw StationError(description: "cannot listen on \(configuration.host):\(configuration.port): \(failure ?? "unknown error")")
        }
        let broadcast = Task { [weak self] in
            var sent: UInt64 = 0
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(100))
                guard let self else { return }
                let version = self.state.version
                guard version != sent else { continue }
                sent = version
                self.broadcast(self.state.snapshot())
            }
        }
        run.withLock { $0.tasks = [server, broadcast] }
        return port
    }

    /// Sends the latest state at once (the end summary, say) without waiting for the tick.
    public func flush() {
        broadcast(state.snapshot())
    }

    /// Closes every page's connection and the listening socket; returns when the server ended
    /// (or after `timeout`).
    public func stop(timeout: Duration = .seconds(5)) {
        let tasks = run.withLock { run -> [Task<Void, Never>] in
            defer { run.tasks = [] }
            return run.tasks
        }
        let streams = pages.withLock { pages -> [AsyncStream<String>.Continuation] in
            pages.closed = true
            defer { pages.open = [:] }
            return Array(pages.open.values)
        }
        for stream in streams { stream.finish() }
        let done = DispatchSemaphore(value: 0)
        Task {
            for task in tasks { task.cancel() }
            for task in tasks { await task.value }
            done.signal()
        }
        let nanoseconds = timeout.components.seconds * 1_000_000_000
        _ = done.wait(timeout: .now() + .nanoseconds(Int(nanoseconds)))
    }

    private func broadcast(_ text: String) {
        let streams = pages.withLock { Array($0.open.values) }
        for stream in streams { stream.yield(text) }
    }

    private func addPage() -> (Int, AsyncStream<String>)? {
        // Two pending states at most: a page that reads slowly gets the latest, not a backlog.
        let (stream, continuation) = AsyncStream.makeStream(of: String.self, bufferingPolicy: .bufferingNewest(2))
        let id = pages.withLock { pages -> Int? in
            guard !pages.closed else { return nil }
            pages.next += 1
            pages.open[pages.next] = continuation
            return pages.next
        }
        guard let id else { return nil }
        return (id, stream)
    }

    private func removePage(_ id: Int) {
        let continuation = pages.withLock { $0.open.removeValue(forKey: id) }
        continuation?.finish()
    }

    // MARK: Requests

    /// A request the station answers: the token when one is set, and a Host that names this
    /// station (a web page elsewhere cannot reach a loopback station by DNS rebinding).
    private func authorized(_ request: Request) -> Bool {
        if let token = configuration.token {
            guard let given = request.uri.queryParameters.get("token"), Self.sameSecret(given, token) else { return false }
        }
        if StationConfiguration.isLoopback(configuration.host) {
            guard let authority = request.head.authority, Self.isLoopbackAuthority(authority) else { return false }
        }
        return true
    }

    /// A browser's WebSocket carries the page's origin: only this station's own page may open
    /// one, not a script on some other site open in the same browser.
    private func sameOrigin(_ request: Request) -> Bool {
        guard let origin = request.headers[.origin] else { return true }  // not a browser
        guard let authority = request.head.authority else { return false }
        return origin == "http://\(authority)"
    }

    private static func isLoopbackAuthority(_ authority: String) -> Bool {
        var host = Substring(authority)
        if host.hasPrefix("[") {
            host = host.dropFirst().prefix { $0 != "]" }
        } else if let colon = host.lastIndex(of: ":") {
            host = host[..<colon]
        }
        return StationConfiguration.isLoopback(String(host))
    }

    private static func sameSecret(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var difference: UInt8 = 0
        for index in x.indices { difference |= x[index] ^ y[index] }
        return difference == 0
    }

    private static func html(_ text: String, status: HTTPResponse.Status = .ok) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/html; charset=utf-8"
        headers[.cacheControl] = "no-store"
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    private static let refused = html("<!doctype html><title>smpctl station</title><p>Not allowed: open the address smpctl printed, token included.</p>",
                                      status: .forbidden)

    private func makeApplication(onRunning: @escaping @Sendable (Int) -> Void) -> some ApplicationProtocol {
        let router = Router(context: BasicRequestContext.self)
        router.get("/") { [self] request, _ -> Response in
            guard authorized(request) else { return Self.refused }
            return Self.html(StationPage.html)
        }
        router.get("/report") { [self] request, _ -> Response in
            guard authorized(request) else { return Self.refused }
            guard let page = report() else {
                return Self.html("<!doctype html><title>smpctl station</title><p>The report is written when the session has ended.</p>",
                                 status: .notFound)
            }
            return Self.html(page)
        }
        router.get("/state") { [self] request, _ -> Response in
            guard authorized(request) else { return Self.refused }
            var headers = HTTPFields()
            headers[.contentType] = "application/json"
            headers[.cacheControl] = "no-store"
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: state.snapshot())))
        }

        let sockets = Router(context: BasicWebSocketRequestContext.self)
        sockets.ws("/ws", shouldUpgrade: { [self] request, _ in
            authorized(request) && sameOrigin(request) ? .upgrade([:]) : .dontUpgrade
        }, onUpgrade: { [self] inbound, outbound, _ in
            guard let (id, stream) = addPage() else { return }
            defer { removePage(id) }
            // A page opened mid-session gets the plan and the full state first.
            try await outbound.write(.text(state.planMessage))
            try await outbound.write(.text(state.snapshot()))
            let writer = Task {
                for await text in stream {
                    try await outbound.write(.text(text))
                }
            }
            defer { writer.cancel() }
            // Closing the page ends this loop: nothing is stopped or started by that.
            for try await message in inbound.messages(maxSize: 4096) {
                guard case .text(let text) = message, let command = Self.command(text) else { continue }
                logger.info("station: \(command.rawValue) from a page")
                commands(command)
            }
        })

        let host = configuration.host
        return Application(
            router: router,
            server: .http1WebSocketUpgrade(webSocketRouter: sockets),
            configuration: ApplicationConfiguration(address: .hostname(host, port: configuration.port),
                                                    serverName: "smpctl-station"),
            onServerRunning: { channel in onRunning(channel.localAddress?.port ?? 0) },
            logger: logger)
    }

    /// `{"command":"hold"}` → `.hold`; anything else is ignored.
    static func command(_ text: String) -> StationCommand? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
              let name = object["command"] as? String else { return nil }
        return StationCommand(rawValue: name)
    }
}
