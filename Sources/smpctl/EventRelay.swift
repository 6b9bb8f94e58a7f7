import SMPSystem
import Dispatch
import FirmwareProtocol
import SessionRunner
import SMPPlan
import SMPPlanReader
import SMPInterlocks
import SMPRecords
import SMPMachine
import SMPRender

/// Hands the session's events from its queue to the reporter's, in order, without ever making
/// the session wait and without a backlog that grows with the plan.
///
/// The session must never wait for the terminal (a technician's Ctrl-S or a slow SSH link would
/// stop the heartbeat), so events cross with `async`. When the applicator outruns the printing —
/// a simulator at `--time-scale 0` finishes ~14,000 dots a second, each bringing a progress and
/// two device-state events — every queued event used to stay in memory until printed: +120 MB
/// and 13 s of printing after a 200,000-dot session had ended. Events that only say "where it is
/// now" (progress, and the device flipping between ready and running as its queue runs dry) are
/// therefore kept as the latest of their kind while the reporter is busy; every other event
/// (holds, stops, alarms, interlocks, the end) is delivered, and nothing is ever moved past one.
final class EventRelay: Sendable {
    private struct State {
        var pending: [SessionEvent] = []
        var drainScheduled = false
        /// The device state last delivered, so a flip and its flip back, coalesced, are not
        /// delivered as a change to the state already shown.
        var deliveredDeviceState: DeviceState?
    }

    private let state = Locked(State())
    private let queue: DispatchQueue
    private let deliver: @Sendable (SessionEvent) -> Void

    /// `deliver` runs on `queue`, one event at a time, in the order `send` was called (less the
    /// coalesced ones).
    init(queue: DispatchQueue, deliver: @escaping @Sendable (SessionEvent) -> Void) {
        self.queue = queue
        self.deliver = deliver
    }

    /// From any thread; never blocks on the reporter.
    func send(_ event: SessionEvent) {
        let schedule = state.withLock { state -> Bool in
            if let kind = Self.coalescingKind(event) {
                // The latest earlier event of this kind is obsolete unless one that must be seen
                // lies between them: look back only over coalescible events.
                for index in state.pending.indices.reversed() {
                    guard let earlier = Self.coalescingKind(state.pending[index]) else { break }
                    if earlier == kind {
                        state.pending.remove(at: index)
                        break
                    }
                }
            }
            state.pending.append(event)
            defer { state.drainScheduled = true }
            return !state.drainScheduled
        }
        if schedule { queue.async { self.drain() } }
    }

    private func drain() {
        let batch = state.withLock { state -> [SessionEvent] in
            defer {
                state.pending.removeAll(keepingCapacity: true)
                state.drainScheduled = false
            }
            return state.pending.filter { event in
                guard case .deviceStatus(let status) = event else { return true }
                defer { state.deliveredDeviceState = status.state }
                return Self.coalescingKind(event) == nil || state.deliveredDeviceState != status.state
            }
        }
        for event in batch { deliver(event) }
    }

    private enum CoalescingKind { case progress, routineDeviceState }

    /// What a later event of the same kind makes obsolete; nil for events that must all be seen.
    private static func coalescingKind(_ event: SessionEvent) -> CoalescingKind? {
        switch event {
        case .progress:
            return .progress
        case .deviceStatus(let status) where (status.state == .ready || status.state == .running) && status.fault == .none:
            return .routineDeviceState
        default:
            return nil
        }
    }
}
