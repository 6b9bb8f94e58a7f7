import SMPPlan
import SessionRunner
import FirmwareProtocol

/// Settles, when a session is resumed, the dots its record shows as `sent` (claimed, maybe in
/// the device, fate unknown to the host) or `ambiguous` (in flight when the link was lost) from
/// what the device reports in its HELLO reply.
///
/// The rule (docs/records.md, "Resume"): if the device has not rebooted since the session's last
/// record (same boot id, unique per boot), it completed exactly `j = done_count − recorded
/// done_count` dots since, and because dots run one at a time in the order they were sent, those
/// are the first `j` sent dots — which the device confirms by naming the last of them as
/// `last_done_dot_id`. Of the dots sent after them only the next one, `sent[j]`, can have touched
/// skin: the device stopped while it travelled or sat in the skin. Which of the two is proven by
/// the device's STATUS read in the handshake, never by `done_count` alone:
/// - `held` with `current_dot_id` 0: a hold lets the dot in the skin finish (it would be counted
///   in `done_count`), so `sent[j]` was not started; every later dot was fenced. All `planned`.
/// - `held` or latched naming a dot in `current_dot_id`: an ABORT or a latch cut that dot short.
///   It is `interrupted`; the others were fenced and are `planned`.
/// - latched with `current_dot_id` 0: the latch came between dots; nothing was cut. `planned`.
/// - `ready` with `current_dot_id` 0 (the HELLO came before the lease expired, the queue empty):
///   nothing has been cut since the last ARM or RESUME, and this host sends RESUME only once the
///   record of any dot cut before it is durable. `planned`.
/// - any other state (disarmed by a CLEAR, or no STATUS): the device no longer knows; `sent[j]`
///   is `ambiguous`, the later ones `planned`.
/// If the boot id differs, or the numbers do not line up (another host used the device
/// meanwhile), every `sent` dot is ambiguous. Ambiguous and cut-short dots are never re-injected
/// silently: the operator decides (skip or redo), and the decision goes into the audit trail.
struct ResumeResolution {
    var statusChanges: [(DotStatus, [UInt32])] = []
    var events: [RecordBatch.Event] = []
    var remaining: [UInt32] = []
    var doneIDs: [UInt32] = []
    var doneCount = 0
    var skippedCount = 0
    var refusal: String?

    static func resolve(store: RecordStore, sessionID: Int64, hello: HelloReply, status deviceStatus: Status?,
                        decision: AmbiguousDecision?) throws(RecordStoreError) -> ResumeResolution {
        // Only the session's owner settles it: taken here (or already held), refused while
        // another live process runs it (docs/records.md, "Who owns a session").
        try store.takeOwnership(of: sessionID)
        var result = ResumeResolution()
        guard let session = try store.session(id: sessionID) else {
            result.refusal = "no session \(sessionID) in \(store.path)"
            return result
        }
        let dots = try store.dots(session: sessionID)
        // `sent`: claimed when the host died. `ambiguous`: in flight when the link was lost. Both
        // are settled by the device if it kept its memory (same boot id); a device that rebooted
        // leaves them for the operator.
        let sent = dots.filter { $0.status == .sent || ($0.status == .ambiguous && $0.sendOrder != nil) }
            .sorted { ($0.sendOrder ?? 0) < ($1.sendOrder ?? 0) }
        var status: [UInt32: DotStatus] = [:]
        for dot in dots { status[dot.dotID] = dot.status }

        if !sent.isEmpty {
            let anchor = try store.lastDeviceDoneCount(session: sessionID)
            let sameBoot = session.bootID == hello.bootID
            let completed = anchor.map { Int64(hello.doneCount) - $0 } ?? -1
            var settledDone: [UInt32] = []
            var settledPlanned: [UInt32] = []
            var settledAmbiguous: [UInt32] = []
            var settledInterrupted: [UInt32] = []
            var why: [String] = []
            if sameBoot && completed >= 0 && completed <= sent.count
                && (completed == 0 || sent[Int(completed) - 1].dotID == hello.lastDoneDotID)
            {
                settledDone = sent.prefix(Int(completed)).map(\.dotID)
                let after = sent.dropFirst(Int(completed)).map(\.dotID)
                if let first = after.first {
                    let named = deviceStatus.map(\.currentDotID) ?? 0
                    let stoppedState = deviceStatus.map { $0.state == .held || $0.state.isLatched } ?? false
                    // Ready (or running): idle since the last ARM/RESUME, and this host sends
                    // RESUME only after its record of a cut-short dot is durable.
                    let armedIdle = deviceStatus.map { ($0.state == .ready || $0.state == .running) && $0.currentDotID == 0 } ?? false
                    if armedIdle {
                        settledPlanned = after
                    } else if stoppedState && named != 0 && after.contains(named) {
                        settledInterrupted = [named]
                        settledPlanned = after.filter { $0 != named }
                        why.append("the device names dot \(named) as cut short (\(deviceStatus!.state), \(deviceStatus!.fault))")
                    } else if stoppedState && named == 0 {
                        settledPlanned = after
                    } else {
                        // The device cannot say whether the next dot was in the skin when it stopped.
                        settledAmbiguous = [first]
                        settledPlanned = Array(after.dropFirst())
                        why.append("the device (\(deviceStatus.map { "\($0.state)" } ?? "no STATUS")) cannot prove dot \(first) was not started")
                    }
                }
            } else {
                settledAmbiguous = sent.map(\.dotID)
            }
            why.insert(sameBoot
                ? "device boot \(hello.bootID) unchanged; done_count \(anchor.map(String.init) ?? "?") → \(hello.doneCount), last done dot \(hello.lastDoneDotID)"
                : "device rebooted (boot id \(session.bootID.map(String.init) ?? "?") → \(hello.bootID)): its queue was lost", at: 0)
            if !settledDone.isEmpty { result.statusChanges.append((.done, settledDone)) }
            if !settledPlanned.isEmpty { result.statusChanges.append((.planned, settledPlanned)) }
            if !settledAmbiguous.isEmpty { result.statusChanges.append((.ambiguous, settledAmbiguous)) }
            if !settledInterrupted.isEmpty { result.statusChanges.append((.interrupted, settledInterrupted)) }
            result.events.append(RecordBatch.Event(kind: "resume-settled", detail: [
                "reason": why.joined(separator: "; "), "done": list(settledDone), "not_injected": list(settledPlanned),
                "ambiguous": list(settledAmbiguous), "interrupted": list(settledInterrupted),
            ]))
            for id in settledDone { status[id] = .done }
            for id in settledPlanned { status[id] = .planned }
            for id in settledAmbiguous { status[id] = .ambiguous }
            for id in settledInterrupted { status[id] = .interrupted }
        }

        let unknown = dots.filter { status[$0.dotID] == .ambiguous || status[$0.dotID] == .interrupted }.map(\.dotID)
        if !unknown.isEmpty {
            guard let decision else {
                // The counts from the records, every plan dot in one of them: this run did nothing.
                let done = dots.filter { status[$0.dotID] == .done }.count
                let skipped = dots.filter { status[$0.dotID] == .skipped }.count
                let notStarted = dots.count - done - skipped - unknown.count
                result.refusal = """
                    \(unknown.count) dot(s) may or may not have been injected (ambiguous or cut short): dot id(s) \
                    \(unknown.prefix(20).map(String.init).joined(separator: ", "))\(unknown.count > 20 ? ", …" : ""). \
                    The records of session \(sessionID): \(done) done, \(unknown.count) in doubt, \(notStarted) not \
                    started\(skipped > 0 ? ", \(skipped) skipped" : "") (of \(dots.count)). Look at the spots, then \
                    resume with --ambiguous skip (leave them out) or --ambiguous redo (inject them again): \
                    smpctl resume \(sessionID) --ambiguous skip. Nothing was armed.
                    """
                return result
            }
            if decision == .redo, session.bootID == hello.bootID, hello.capabilities.contains(.spacing) {
                // The device keeps the spots of its recent skin entries until it reboots (§6.11)
                // and refuses — latching — a dot on top of one: a redo needs a fresh boot.
                result.refusal = """
                    the applicator has not been power-cycled since these dots (boot id \(hello.bootID) \
                    unchanged): it remembers the spots of its most recent skin entries (firmware-protocol.md \
                    §6.11) and would refuse a dot on top of them, latching a fault. Power-cycle the \
                    applicator, then resume again with --ambiguous redo. Nothing was armed.
                    """
                return result
            }
            let target: DotStatus = decision == .skip ? .skipped : .planned
            result.statusChanges.append((target, unknown))
            result.events.append(RecordBatch.Event(kind: "operator-decision", detail: [
                "decision": decision.rawValue, "dots": list(unknown),
            ]))
            for id in unknown { status[id] = target }
        }
        for dot in dots {
            switch status[dot.dotID] {
            case .done: result.doneIDs.append(dot.dotID)
            case .skipped: result.skippedCount += 1
            case .planned: result.remaining.append(dot.dotID)
            default: break
            }
        }
        result.doneCount = result.doneIDs.count
        return result
    }

    private static func list(_ ids: [UInt32]) -> String { ids.map(String.init).joined(separator: ",") }
}
