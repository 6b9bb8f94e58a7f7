import FirmwareProtocol

/// Settles, when a session is resumed, the dots its record shows as `sent` (claimed, maybe in
/// the device, fate unknown to the host) or `ambiguous` (in flight when the link was lost) from
/// what the device reports in its HELLO reply.
///
/// The rule (docs/records.md, "Resume"): if the device has not rebooted since the session's last
/// record (same boot id), it completed exactly `j = done_count − recorded done_count` dots since,
/// and because dots run in the order they were sent, those are the first `j` sent dots — which
/// the device confirms by naming the last of them as `last_done_dot_id`. Everything sent after
/// them was fenced by the hold the device went into (lease expiry, or HELLO itself) and was not
/// injected. If the boot id differs, or the numbers do not line up (another host used the device
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

    static func resolve(store: RecordStore, sessionID: Int64, hello: HelloReply,
                        decision: AmbiguousDecision?) throws -> ResumeResolution {
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
            if sameBoot && completed == 0 {
                settledPlanned = sent.map(\.dotID)
            } else if sameBoot && completed > 0 && completed <= sent.count
                && sent[Int(completed) - 1].dotID == hello.lastDoneDotID
            {
                settledDone = sent.prefix(Int(completed)).map(\.dotID)
                settledPlanned = sent.dropFirst(Int(completed)).map(\.dotID)
            } else {
                settledAmbiguous = sent.map(\.dotID)
            }
            let why = sameBoot
                ? "device boot \(hello.bootID) unchanged; done_count \(anchor.map(String.init) ?? "?") → \(hello.doneCount), last done dot \(hello.lastDoneDotID)"
                : "device rebooted (boot id \(session.bootID.map(String.init) ?? "?") → \(hello.bootID)): its queue was lost"
            if !settledDone.isEmpty { result.statusChanges.append((.done, settledDone)) }
            if !settledPlanned.isEmpty { result.statusChanges.append((.planned, settledPlanned)) }
            if !settledAmbiguous.isEmpty { result.statusChanges.append((.ambiguous, settledAmbiguous)) }
            result.events.append(RecordBatch.Event(kind: "resume-settled", detail: [
                "reason": why, "done": list(settledDone), "not_injected": list(settledPlanned),
                "ambiguous": list(settledAmbiguous),
            ]))
            for id in settledDone { status[id] = .done }
            for id in settledPlanned { status[id] = .planned }
            for id in settledAmbiguous { status[id] = .ambiguous }
        }

        let unknown = dots.filter { status[$0.dotID] == .ambiguous || status[$0.dotID] == .interrupted }.map(\.dotID)
        if !unknown.isEmpty {
            guard let decision else {
                result.refusal = """
                    \(unknown.count) dot(s) may or may not have been injected (ambiguous or cut short): \
                    \(unknown.prefix(20).map(String.init).joined(separator: ", "))\(unknown.count > 20 ? ", …" : ""). \
                    Look at the spots, then resume with --ambiguous skip (leave them out) or --ambiguous redo \
                    (inject them again). Nothing was armed.
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
