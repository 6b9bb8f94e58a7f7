import SMPSystem
import Dispatch
import FirmwareProtocol
import Foundation
import NeedleDriver
import SessionRunner
import SMPStation
import SMPPlan
import SMPPlanReader
import SMPInterlocks
import SMPRecords
import SMPMachine
import SMPRender
import ConsoleKitTerminal

/// Turns session events into what the technician sees: a summary, a progress line and plain
/// alarm lines on a terminal; NDJSON (docs/operator-guide.md, "Events") otherwise.
final class RunReporter: Sendable {
    private struct State {
        var lastDraw: UInt64 = 0
        var startNanos: UInt64 = 0
        var lastProgress: SessionProgress?
        /// Dots skipped by the operator's decision (from the preflight): progress counts done of
        /// the plan's total and states them, never folds them into the total or the done.
        var skipped = 0
        /// The progress line; nil for NDJSON and once the session has finished.
        var live: LiveLine?
        var bar = SessionProgressBar()
    }
    private let ndjson: Bool
    private let sim: Bool
    private let state: Locked<State>
    /// The station's page shows the console's notes and questions too.
    private let station: StationState?

    init(ndjson: Bool, sim: Bool, station: StationState? = nil) {
        self.ndjson = ndjson
        self.sim = sim
        self.station = station
        var initial = State()
        if !ndjson {
            let live = LiveLine()
            initial.live = live
            initial.bar.colours = live.colours
        }
        state = Locked(initial)
        // Log lines (--verbose, errors) on the same terminal go above the progress line, never
        // through it; logs redirected to a file are left alone.
        if !ndjson && Output.stderrIsTerminal {
            CLILogging.aboveLiveLine.withLock { $0 = { [weak self] text in self?.logLine(text) } }
        }
    }

    /// A log line: above the progress line while it is live, else on standard error.
    private func logLine(_ text: String) {
        state.withLock { state in
            guard let live = state.live else { return Output.err(text) }
            live.print(text, style: .plain)
            drawProgress(&state, now: DispatchTime.now().uptimeNanoseconds)
        }
    }

    func report(_ event: SessionEvent) {
        state.withLock { state in
            if ndjson { emitJSON(event, &state) } else { emitHuman(event, &state) }
        }
    }

    func note(_ text: String) { say(text, asking: false) }

    /// A question for the operator (OperatorConsole): the progress line stays off until
    /// `closeQuestion`, so the echo of the answer cannot confuse its redraw.
    func ask(_ text: String) { say(text, asking: true) }

    private func say(_ text: String, asking: Bool) {
        station?.note(text)
        state.withLock { state in
            if ndjson {
                Output.printJSON(["event": "note", "message": text])
            } else if let live = state.live {
                if asking {
                    live.ask(text)
                } else {
                    live.print(text)
                    drawProgress(&state, now: DispatchTime.now().uptimeNanoseconds)
                }
            } else {
                Output.err(text)
            }
        }
    }

    func closeQuestion() {
        state.withLock { state in
            guard let live = state.live, live.suspended else { return }
            live.suspended = false
            drawProgress(&state, now: DispatchTime.now().uptimeNanoseconds)
        }
    }

    func failed(_ text: String) {
        state.withLock { state in
            if ndjson { Output.printJSON(["event": "error", "message": text]) }
            state.live?.erase()
            state.live = nil
            CLILogging.aboveLiveLine.withLock { $0 = nil }
            Output.err("smpctl: \(text)")
        }
    }

    // MARK: NDJSON

    private func emitJSON(_ event: SessionEvent, _ state: inout State) {
        switch event {
        case .preflight(let p):
            state.skipped = p.skipped
            Output.printJSON([
                "event": "preflight", "plan_id": p.planID, "dots": p.dotCount, "regions": p.regions,
                "session_id": p.sessionID.map { $0 as Any } ?? NSNull(), "already_done": p.alreadyDone,
                "skipped": p.skipped,
                "device": p.devicePath, "firmware": p.firmwareID, "protocol": p.protocolVersion,
                "estimated_seconds": (p.estimatedDurationSeconds * 10).rounded() / 10,
                "envelope": envelopeJSON(p.envelope),
            ])
        case .armed:
            state.startNanos = DispatchTime.now().uptimeNanoseconds
            Output.printJSON(["event": "armed"])
        case .progress(let p):
            let now = DispatchTime.now().uptimeNanoseconds
            guard p.done == p.total || now - state.lastDraw > 250_000_000 else { return }
            state.lastDraw = now
            // `p.total` is what can still be done (the plan less the skipped); shown: the plan's total.
            var object: [String: Any] = ["event": "progress", "done": p.done, "total": p.total + state.skipped,
                                         "skipped": state.skipped, "dot": p.lastDotID]
            if let region = p.region { object["region"] = region }
            Output.printJSON(object)
        case .held(let reason):
            Output.printJSON(["event": "held", "reason": reason])
        case .resumed:
            Output.printJSON(["event": "resumed"])
        case .deviceStatus(let s):
            Output.printJSON([
                "event": "device", "state": s.state.description, "fault": "\(s.fault)", "done_count": s.doneCount,
                "needle_retracted": s.needleRetracted,
            ])
        case .dotInterrupted(let id):
            Output.printJSON(["event": "dot_interrupted", "dot": id])
        case .dotsInDoubt(let ids):
            Output.printJSON(["event": "dots_in_doubt", "dots": ids])
        case .refused(let text):
            Output.printJSON(["event": "refused", "message": text])
        case .interlock(let t):
            Output.printJSON(["event": "interlock", "from": t.from.description, "to": t.to.description,
                              "cause": "\(t.cause)", "kernel_ns": t.timestampNanos])
        case .linkMetrics(let m):
            Output.printJSON(["event": "link", "frames_sent": m.framesSent, "frames_received": m.framesReceived,
                              "retransmissions": m.retransmissions, "bad_frames_received": m.badFramesReceived,
                              "srtt_us": m.smoothedRTTMicroseconds])
        case .finished(let a):
            var object: [String: Any] = [
                "event": "finished", "outcome": a.outcome.rawValue, "total": a.total,
                "done": a.done.count + a.previouslyDone, "done_this_run": a.done.count, "skipped": a.skipped,
                "interrupted": a.interrupted, "in_doubt": a.inDoubt, "not_started": a.notStarted.count,
                "done_unrecorded": a.doneUnrecorded,
                "elapsed_seconds": (a.elapsedSeconds * 1000).rounded() / 1000, "exit_code": ExitStatus.of(a),
                "summary": Self.headline(a), "device_disarmed": a.deviceDisarmed,
            ]
            if let reason = a.reason { object["reason"] = reason }
            if let id = a.sessionID { object["session_id"] = id }
            if let failure = a.needlePowerOffFailure {
                object["needle_power_off_failed"] = [
                    "output": failure.output, "chip": failure.chip, "line": failure.lineOffset,
                    "error": "\(failure.error)", "message": "\(failure)",
                ] as [String: Any]
            }
            Output.printJSON(object)
            if let failure = a.needlePowerOffFailure { Output.err("smpctl: \(failure)") }
        }
    }

    private func envelopeJSON(_ e: SafetyEnvelope) -> [String: Any] {
        ["depth_um": [e.depthMicrometres.lowerBound, e.depthMicrometres.upperBound],
         "dwell_us": [e.dwellMicroseconds.lowerBound, e.dwellMicroseconds.upperBound],
         "travel_x_um": e.travelXMicrometres, "travel_y_um": e.travelYMicrometres,
         "min_spacing_um": e.minimumSpacingMicrometres, "max_dots_per_second": e.maximumDotsPerSecond]
    }

    // MARK: Human

    private func emitHuman(_ event: SessionEvent, _ state: inout State) {
        switch event {
        case .preflight(let p):
            state.skipped = p.skipped
            let regions = p.regions.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            let e = p.envelope
            print("""
                Plan        \(p.planID): \(p.dotCount) dots (\(regions))
                Applicator  \(p.devicePath)\(sim ? " (simulator)" : ""), firmware \(p.firmwareID), protocol \(p.protocolVersion)
                Envelope    depth \(mm(e.depthMicrometres.lowerBound))–\(mm(e.depthMicrometres.upperBound)) mm, \
                dwell \(ms(e.dwellMicroseconds.lowerBound))–\(ms(e.dwellMicroseconds.upperBound)) ms, \
                travel ±\(mm(e.travelXMicrometres)) × ±\(mm(e.travelYMicrometres)) mm, spacing ≥ \(mm(e.minimumSpacingMicrometres)) mm, \
                ≤ \(String(format: "%g", e.maximumDotsPerSecond)) dots/s
                Estimate    \(Self.duration(p.estimatedDurationSeconds)) at the applicator's real speed
                """)
            if p.alreadyDone > 0 || p.skipped > 0 {
                print("Resumed     \(p.alreadyDone) done in earlier runs, \(p.skipped) skipped by the operator's decision; "
                      + "\(p.dotCount) to go")
            }
        case .armed:
            state.startNanos = DispatchTime.now().uptimeNanoseconds
            line(.success, "Armed. Streaming…", &state)
        case .progress(let p):
            state.lastProgress = p
            let now = DispatchTime.now().uptimeNanoseconds
            // At most 4 redraws a second (every 5 s where the cursor cannot move), and the last dot.
            let interval: UInt64 = state.live?.canRedrawInPlace == false ? 5_000_000_000 : 250_000_000
            guard p.done == p.total || now &- state.lastDraw > interval else { return }
            state.lastDraw = now
            drawProgress(&state, now: now)
        case .held(let reason):
            // Every hold holds the interlocks: the line frozen under the question says so at once.
            state.bar.interlock = InterlockState.held.description
            line(.warning, "HOLD — \(reason). The dot in progress finishes, the needle retracts, the place in the plan is kept.", &state)
        case .resumed:
            line(.success, "Resumed.", &state)
        case .deviceStatus(let s):
            let changed = state.bar.deviceState != s.state.description
            state.bar.deviceState = s.state.description
            if s.state.isLatched {
                line(.error, "STOP — applicator \(s.state): \(s.fault). Needle power off, needle retracted.", &state)
            } else if changed {
                drawProgress(&state, now: DispatchTime.now().uptimeNanoseconds)
            }
        case .dotInterrupted(let id):
            line(.error, "Dot \(id) was cut short (partially injected). It will not be repeated automatically.", &state)
        case .dotsInDoubt(let ids):
            line(.warning, "\(ids.count) dot(s) were in flight and cannot be confirmed: dot id(s) \(ids.prefix(10).map(String.init).joined(separator: ", "))\(ids.count > 10 ? ", …" : "")", &state)
        case .refused(let text):
            line(.error, "REFUSED — \(text)", &state)
        case .interlock(let t):
            state.bar.interlock = t.to.description
            // Alarm lines for stops only; readings while not yet armed are the start-up state, and
            // a hold has its own line (`.held`, with the same cause).
            if t.to == .estopped || (t.from == .armed && t.to == .faulted) {
                let effect: String
                switch t.to {
                case .estopped: effect = "E-STOP: needle power off. Release the e-stop, then reset to continue (smpctl resume)."
                case .faulted: effect = "not armed: needle power off."
                case .held, .armed: effect = ""
                }
                line(.error, "INTERLOCK — \(t.cause): \(effect)", &state)
            } else {
                drawProgress(&state, now: DispatchTime.now().uptimeNanoseconds)
            }
        case .linkMetrics:
            break
        case .finished(let a):
            if state.lastProgress != nil, state.live?.suspended != true {
                drawProgress(&state, now: DispatchTime.now().uptimeNanoseconds)
            }
            // The last drawn line stays on the screen, the summary goes below it.
            state.live = nil
            CLILogging.aboveLiveLine.withLock { $0 = nil }
            let m = a.metrics
            for text in Self.summaryLines(a, sim: sim) { print(text) }
            if let failure = a.needlePowerOffFailure {
                // On stderr as well, so it is seen even when the summary is redirected.
                print("  NEEDLE POWER MAY STILL BE ON: \(NeedlePowerOffFailure.instruction)")
                Output.err("smpctl: \(failure)")
            }
            // The rate over the time since arming: the preflight question's wait is not streaming.
            let armedSeconds = state.startNanos > 0 ? Double(DispatchTime.now().uptimeNanoseconds &- state.startNanos) / 1e9 : 0
            let rate = armedSeconds > 0 ? String(format: ", %.0f dots/s", Double(a.done.count) / armedSeconds) : ""
            print("  Time:        \(Self.duration(a.elapsedSeconds))\(armedSeconds > 0 ? " (armed \(Self.duration(armedSeconds))\(rate))" : "")")
            print("  Link:        \(m.framesSent) frames sent, \(m.framesReceived) received, \(m.retransmissions) retransmitted, \(m.badFramesReceived) bad frames, RTT \(String(format: "%.1f", Double(m.smoothedRTTMicroseconds) / 1000)) ms")
            print(a.deviceDisarmed
                  ? "  Applicator:  left disarmed (CLEAR confirmed, needle power off)."
                  : "  Applicator:  NOT confirmed disarmed (latched, unreachable or no answer): switch it off before handling the needle.")
        }
    }

    /// The first line of the end summary. It claims no more than the account proves: "all N
    /// dots confirmed done" only when no dot was skipped; otherwise done and skipped, counted.
    static func headline(_ a: SessionAccount) -> String {
        switch a.outcome {
        case .completed:
            let done = a.done.count + a.previouslyDone
            guard a.skipped > 0 || done != a.total else {
                return "Session complete: all \(a.total) dots confirmed done by the applicator."
            }
            return "Session complete: \(done) dots confirmed done by the applicator; \(a.skipped) skipped by the "
                + "operator's decision (not injected by this session)"
        case .held: return "Session held before the end."
        case .stopped: return "Session STOPPED."
        case .linkLost: return "Link to the applicator lost."
        case .refusedPlan: return "Plan refused by the applicator's limits; nothing was armed."
        case .declined: return "Not started."
        case .needsDecision: return "Not resumed: a decision is needed."
        }
    }

    /// The end summary without its time and link lines: the headline, the reason, the session,
    /// and every plan dot counted in exactly one of done, skipped, cut short, in doubt and not
    /// started.
    static func summaryLines(_ a: SessionAccount, sim: Bool) -> [String] {
        var lines = [headline(a)]
        if let reason = a.reason { lines.append("  Reason:      \(reason)") }
        if let id = a.sessionID {
            let decision = a.outcome == .needsDecision ? " --ambiguous skip|redo" : ""
            let resume = a.outcome == .completed ? "" : "; continue with: smpctl resume \(id) \(sim ? "--sim" : "--device …")\(decision)"
            lines.append("  Session:     \(id) (report: smpctl report \(id) -o report.html\(resume))")
        }
        // A resume refused for a decision did nothing: its own account would count every dot
        // "not started". The reason carries the records' counts (done, in doubt, not started).
        guard a.outcome != .needsDecision else { return lines }
        // Ids named as ids, so "Cut short: 1 (dot 32)" never reads as a count of 32.
        func ids(_ list: [UInt32]) -> String {
            list.isEmpty ? "" : " (dot\(list.count > 1 ? "s" : "") \(list.prefix(10).map(String.init).joined(separator: ", "))\(list.count > 10 ? ", …" : ""))"
        }
        let earlier = a.previouslyDone > 0 ? " (\(a.previouslyDone) in earlier runs)" : ""
        lines.append("  Done:        \(a.done.count + a.previouslyDone) of \(a.total)\(earlier)")
        lines.append("  Skipped:     \(a.skipped)\(a.skipped > 0 ? " (the operator's decision)" : "")")
        lines.append("  Cut short:   \(a.interrupted.count)\(ids(a.interrupted))")
        lines.append("  In doubt:    \(a.inDoubt.count)\(ids(a.inDoubt))")
        lines.append("  Not started: \(a.notStarted.count)")
        if !a.doneUnrecorded.isEmpty {
            // Done on the skin, `sent` in the records: the resume will ask about them, and the
            // answer for these is skip, never redo.
            lines.append("  Done, NOT RECORDED: \(a.doneUnrecorded.count)\(ids(a.doneUnrecorded)): the applicator confirmed them "
                         + "after the records failed. The records hold them as in doubt: never inject them again "
                         + "(resume with --ambiguous skip).")
        }
        return lines
    }

    private func drawProgress(_ state: inout State, now: UInt64) {
        guard let live = state.live, let p = state.lastProgress else { return }
        let elapsed = Double(now &- state.startNanos) / 1e9
        let rate = elapsed > 0 ? Double(p.done) / elapsed : 0
        state.bar.done = p.done
        state.bar.total = p.total + state.skipped  // the plan's total; the skipped are stated beside it
        state.bar.skipped = state.skipped
        state.bar.dotsPerSecond = rate
        state.bar.etaSeconds = rate > 0 ? Double(p.total - p.done) / rate : nil
        state.bar.region = p.region
        live.draw(state.bar)
    }

    /// A line above the progress line (alarms in colour), which is drawn again below it.
    private func line(_ style: ConsoleStyle, _ text: String, _ state: inout State) {
        if let live = state.live {
            live.print(text, style: style)
            drawProgress(&state, now: DispatchTime.now().uptimeNanoseconds)
        } else {
            print(text)
        }
    }

    private func mm(_ micrometres: Int32) -> String { String(format: "%g", Double(micrometres) / 1000) }
    private func ms(_ microseconds: Int32) -> String { String(format: "%g", Double(microseconds) / 1000) }
    static func duration(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%d:%02d", s / 60, s % 60)
    }
}
