import Foundation
import NeedleDriver
import SessionRunner
import SMPPlan
import SMPPlanReader
import SMPInterlocks
import SMPRecords
import SMPMachine
import SMPRender

/// Faults on the host's own (simulated) interlock lines for `--sim` sessions: when the dot with
/// the given id is confirmed done, the line changes. The device-side faults are `--faults`.
struct HostLineFaults: Sendable {
    enum Action: String, CaseIterable {
        case estop = "estop-at", pedalRelease = "pedal-release-at", contactLoss = "contact-loss-at"
        case cartridgeOut = "cartridge-out-at"
        /// Every input chip vanishes without waking its descriptors, as a removed expander does
        /// on kernel 6.1 (docs/hil.md): only the lines' health check can find it.
        case chipVanish = "chip-vanish-at"

        /// The role of the line the action changes; nil for a whole chip.
        var role: InterlockRole? {
            switch self {
            case .estop: .estop
            case .pedalRelease: .pedal
            case .contactLoss: .contact
            case .cartridgeOut: .cartridge
            case .chipVanish: nil
            }
        }
    }

    struct SpecError: Error, CustomStringConvertible {
        var description: String
    }

    private let actions: [UInt32: [Action]]
    private let fired = FiredSet()

    init(spec: String) throws {
        var actions: [UInt32: [Action]] = [:]
        for item in spec.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !item.isEmpty {
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, let action = Action(rawValue: parts[0]) else {
                throw SpecError(description: "\"\(item)\" is not one of \(Action.allCases.map { "\($0.rawValue)=DOT" }.joined(separator: ", "))")
            }
            guard let dot = UInt32(parts[1]), dot > 0 else {
                throw SpecError(description: "\"\(item)\": DOT must be a dot id ≥ 1")
            }
            actions[dot, default: []].append(action)
        }
        self.actions = actions
    }

    /// Called for every confirmed dot; acts once per planned fault.
    func fire(afterDot dot: UInt32, on lines: SimulatedGPIOBackend, wiring: InterlockWiring) {
        guard let planned = actions[dot], fired.insert(dot) else { return }
        for action in planned {
            guard let role = action.role else {
                for chip in Set(wiring.inputs.map(\.chip)).sorted() { lines.vanish(chip: chip) }
                continue
            }
            for input in wiring.inputs where input.role == role {
                // E-stop and cartridge-out assert the stop level; pedal and contact drop theirs.
                switch action {
                case .estop: _ = lines.press(line: input.name)
                case .pedalRelease, .contactLoss, .cartridgeOut: _ = lines.release(line: input.name)
                case .chipVanish: break
                }
            }
        }
    }
}

private final class FiredSet: @unchecked Sendable {  // guarded by `lock`
    private let lock = NSLock()
    private var dots: Set<UInt32> = []
    func insert(_ dot: UInt32) -> Bool { lock.withLock { dots.insert(dot).inserted } }
}
