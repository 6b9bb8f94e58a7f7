import Dispatch
import Foundation
import SessionRunner
import SMPInterlocks
import SMPPlan
import SMPSystem

/// What the station's page shows: the session as seen from its events, kept under a lock.
///
/// `observe` is called on the session's queue with every event (nothing coalesced, so the dot
/// map misses no dot); it only writes a few fields and bumps `version`, never waits for the
/// server. The server reads a `snapshot()` at most every ~100 ms and sends it to every page.
public final class StationState: Sendable {
    /// One character per plan dot, in plan order, for the page's map.
    public enum DotCode: Character, Sendable {
        case planned = "p", inFlight = "f", done = "d", interrupted = "x", inDoubt = "q", skipped = "s"
    }

    /// The question open for the operator (mirrors the terminal's), so the page offers the same
    /// answer and nothing else.
    public enum Question: String, Sendable, Codable { case none, arm, resume, endSession = "end-session" }

    struct Mutable {
        var version: UInt64 = 1
        var phase = "connecting"
        var question = Question.none
        var codes: [UInt8]
        var done = 0
        var alreadyDone = 0
        var lastDoneIndex: Int?
        var inFlightIndex: Int?
        var preflight: PreflightView?
        var device: String?
        var deviceFault: String?
        var interlock: String?
        var interlockInputs: [InputView] = []
        var blockers: [String] = []
        var notes: [String] = []
        var summary: SummaryView?
        var sessionID: Int64?
        var armedAtNanos: UInt64?
        var runningNanos: UInt64 = 0
        var resumedAtNanos: UInt64?
        var holdReason: String?
        var reportAvailable = false
    }

    public struct PreflightView: Codable, Sendable {
        public var planID: String
        public var dotCount: Int
        public var regions: [String: Int]
        public var device: String
        public var firmware: String
        public var estimatedSeconds: Double
        public var alreadyDone: Int
        public var skipped: Int
    }

    public struct InputView: Codable, Sendable {
        public var name: String
        public var role: String
        public var reading: String
        public var healthy: Bool
    }

    public struct SummaryView: Codable, Sendable {
        public var outcome: String
        public var headline: String
        public var lines: [String]
        public var exitStatus: Int32
    }

    /// The plan, sent once to each page when it connects: positions in mm.
    struct PlanView: Codable {
        var type = "plan"
        var planID: String
        var ids: [UInt32]
        var xMillimetres: [Double]
        var yMillimetres: [Double]
        var depthMillimetres: [Double]
        var regions: [String]
    }

    /// What every page gets, in full, at most every ~100 ms.
    struct Snapshot: Codable {
        var type = "state"
        var version: UInt64
        var phase: String
        var question: Question
        var codes: String
        var done: Int
        var total: Int
        var alreadyDone: Int
        var etaSeconds: Double?
        var elapsedSeconds: Double
        var preflight: PreflightView?
        var device: String?
        var deviceFault: String?
        var interlock: String?
        var interlockInputs: [InputView]
        var blockers: [String]
        var notes: [String]
        var summary: SummaryView?
        var sessionID: Int64?
        var holdReason: String?
        var reportAvailable: Bool
        var sim: Bool
    }

    private let state: Locked<Mutable>
    private let indexByID: [UInt32: Int]
    private let planJSON: String
    private let sim: Bool
    private static let maxNotes = 12

    public init(plan: Plan, sim: Bool) {
        self.sim = sim
        var index: [UInt32: Int] = [:]
        for (position, dot) in plan.dots.enumerated() { index[dot.id] = position }
        indexByID = index
        state = Locked(Mutable(codes: Array(repeating: UInt8(ascii: "p"), count: plan.dots.count)))
        let view = PlanView(
            planID: plan.planID, ids: plan.dots.map(\.id),
            xMillimetres: plan.dots.map { Double($0.xMicrometres) / 1000 },
            yMillimetres: plan.dots.map { Double($0.yMicrometres) / 1000 },
            depthMillimetres: plan.dots.map { Double($0.depthMicrometres) / 1000 },
            regions: plan.dots.map { $0.region ?? "" })
        planJSON = Self.encode(view)
    }

    /// The plan message (sent first to each page).
    var planMessage: String { planJSON }

    /// Bumped by every change; the server sends a snapshot only when it moved.
    var version: UInt64 { state.withLock { $0.version } }

    /// From the session's queue: every event, in order. Cheap and never blocking.
    public func observe(_ event: SessionEvent) {
        let now = DispatchTime.now().uptimeNanoseconds
        state.withLock { s in
            s.version &+= 1
            switch event {
            case .preflight(let p):
                s.phase = "preflight"
                s.sessionID = p.sessionID
                s.alreadyDone = p.alreadyDone
                s.preflight = PreflightView(
                    planID: p.planID, dotCount: p.dotCount, regions: p.regions, device: p.devicePath,
                    firmware: p.firmwareID, estimatedSeconds: p.estimatedDurationSeconds,
                    alreadyDone: p.alreadyDone, skipped: p.skipped)
            case .armed:
                s.phase = "running"
                s.armedAtNanos = now
                s.resumedAtNanos = now
                markNext(&s)
            case .progress(let progress):
                s.done = progress.done
                if let index = indexByID[progress.lastDotID] {
                    s.codes[index] = UInt8(ascii: "d")
                    s.lastDoneIndex = index
                }
                if s.phase == "running" { markNext(&s) }
            case .held(let reason):
                s.phase = "held"
                s.holdReason = reason
                if let since = s.resumedAtNanos { s.runningNanos += now &- since }
                s.resumedAtNanos = nil
                clearInFlight(&s)
            case .resumed:
                s.phase = "running"
                s.holdReason = nil
                s.blockers = []
                s.resumedAtNanos = now
                markNext(&s)
            case .deviceStatus(let status):
                s.device = "\(status.state)"
                s.deviceFault = status.fault == .none ? nil : "\(status.fault)"
            case .dotInterrupted(let id):
                if let index = indexByID[id] { s.codes[index] = UInt8(ascii: "x") }
            case .dotsInDoubt(let ids):
                for id in ids { if let index = indexByID[id] { s.codes[index] = UInt8(ascii: "q") } }
            case .refused(let text):
                appendNote(&s, "Refused: \(text)")
            case .linkMetrics:
                s.version &-= 1  // nothing the page shows
            case .interlock(let transition):
                s.interlock = "\(transition.to)"
            case .finished(let account):
                s.phase = "finished"
                s.question = .none
                if let since = s.resumedAtNanos { s.runningNanos += now &- since }
                s.resumedAtNanos = nil
                s.sessionID = account.sessionID ?? s.sessionID
                // The account is exact: every dot in one list.
                for id in account.done { set(&s, id, "d") }
                for id in account.interrupted { set(&s, id, "x") }
                for id in account.inDoubt { set(&s, id, "q") }
                for id in account.notStarted { set(&s, id, "p") }
                s.inFlightIndex = nil
                s.done = account.done.count + account.previouslyDone
            }
        }
    }

    /// A resumed session: the dots its records settled in earlier runs, shown from the start.
    public func markEarlier(_ statuses: [(dotID: UInt32, status: DotStatus)]) {
        state.withLock { s in
            s.version &+= 1
            for (id, status) in statuses {
                guard let index = indexByID[id] else { continue }
                switch status {
                case .done: s.codes[index] = UInt8(ascii: "d")
                case .interrupted: s.codes[index] = UInt8(ascii: "x")
                case .ambiguous: s.codes[index] = UInt8(ascii: "q")
                case .skipped: s.codes[index] = UInt8(ascii: "s")
                case .planned, .sent: break  // settled by this run, its events say how
                }
            }
        }
    }

    /// The end summary, as the terminal words it (the CLI owns the words and the exit status).
    public func finish(headline: String, lines: [String], outcome: String, exitStatus: Int32, reportAvailable: Bool) {
        state.withLock { s in
            s.version &+= 1
            s.phase = "finished"
            s.summary = SummaryView(outcome: outcome, headline: headline, lines: lines, exitStatus: exitStatus)
            s.reportAvailable = reportAvailable
        }
    }

    /// A line the operator console says (note or question), shown on the page too.
    public func note(_ text: String) {
        state.withLock { s in
            s.version &+= 1
            appendNote(&s, text)
        }
    }

    /// The question open at the console.
    public func setQuestion(_ question: Question) {
        state.withLock { s in
            guard s.question != question else { return }
            s.version &+= 1
            s.question = question
        }
    }

    /// What blocks a resume now (empty: nothing), as the console found it.
    public func setBlockers(_ blockers: [String]) {
        state.withLock { s in
            s.version &+= 1
            s.blockers = blockers
        }
    }

    /// The interlock inputs as last read (off the session's queue).
    public func setInterlocks(_ status: InterlockStatus) {
        let inputs = status.inputs.map { input in
            InputView(name: input.name, role: "\(input.role)", reading: input.reading.map { "\($0)" } ?? "not read",
                      healthy: input.reading.map { input.role.isHealthy($0) } ?? false)
        }
        let blockers = status.blockers.map(\.description)
        state.withLock { s in
            s.version &+= 1
            s.interlock = "\(status.state)"
            s.interlockInputs = inputs
            if s.phase == "held" || !s.blockers.isEmpty { s.blockers = blockers }
        }
    }

    /// The full state as the page's JSON.
    func snapshot() -> String {
        let now = DispatchTime.now().uptimeNanoseconds
        let view = state.withLock { s -> Snapshot in
            let running = s.runningNanos + (s.resumedAtNanos.map { now &- $0 } ?? 0)
            let runningSeconds = Double(running) / 1e9
            let doneThisRun = s.done - s.alreadyDone
            let total = s.codes.count
            var eta: Double?
            if s.phase == "running" || s.phase == "held" {
                if doneThisRun > 0 {
                    eta = runningSeconds / Double(doneThisRun) * Double(max(0, total - s.done))
                } else if let p = s.preflight {
                    eta = p.estimatedSeconds
                }
            }
            return Snapshot(
                version: s.version, phase: s.phase, question: s.question,
                codes: String(decoding: s.codes, as: UTF8.self), done: s.done, total: total,
                alreadyDone: s.alreadyDone, etaSeconds: eta, elapsedSeconds: runningSeconds,
                preflight: s.preflight, device: s.device, deviceFault: s.deviceFault, interlock: s.interlock,
                interlockInputs: s.interlockInputs, blockers: s.blockers, notes: s.notes, summary: s.summary,
                sessionID: s.sessionID, holdReason: s.holdReason, reportAvailable: s.reportAvailable, sim: sim)
        }
        return Self.encode(view)
    }

    private func set(_ s: inout Mutable, _ id: UInt32, _ code: Unicode.Scalar) {
        if let index = indexByID[id] { s.codes[index] = UInt8(ascii: code) }
    }

    private func appendNote(_ s: inout Mutable, _ text: String) {
        s.notes.append(text)
        if s.notes.count > Self.maxNotes { s.notes.removeFirst(s.notes.count - Self.maxNotes) }
    }

    /// The dot the applicator works on next (plan order, after the last one done): "in flight".
    /// The session's events name dots only when done, so this is the host's best knowledge.
    private func markNext(_ s: inout Mutable) {
        clearInFlight(&s)
        var index = (s.lastDoneIndex ?? -1) + 1
        while index < s.codes.count, s.codes[index] != UInt8(ascii: "p") { index += 1 }
        if index < s.codes.count {
            s.codes[index] = UInt8(ascii: "f")
            s.inFlightIndex = index
        }
    }

    private func clearInFlight(_ s: inout Mutable) {
        if let index = s.inFlightIndex, s.codes[index] == UInt8(ascii: "f") { s.codes[index] = UInt8(ascii: "p") }
        s.inFlightIndex = nil
    }

    static func encode<T: Encodable>(_ value: T) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let data = try? encoder.encode(value) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }
}
