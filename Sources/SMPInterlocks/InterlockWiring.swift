
/// The machine's interlock lines, as the interlocks need them: which inputs and outputs, and the
/// applicator's lease (the lines' health is checked four times within it). Built from the machine
/// configuration (`MachineConfiguration.interlockWiring`); the interlocks never read the file.
public struct InterlockWiring: Sendable, Hashable {
    /// The interlock inputs, in file order.
    public var inputs: [InterlockInput]
    /// The interlock outputs, in file order (at most one of each role).
    public var outputs: [InterlockOutput]
    public var leaseMilliseconds: Int

    public init(inputs: [InterlockInput] = [], outputs: [InterlockOutput] = [], leaseMilliseconds: Int = 100) {
        self.inputs = inputs
        self.outputs = outputs
        self.leaseMilliseconds = leaseMilliseconds
    }

    /// Debounce when an interlock gives none.
    public static let defaultDebounce: Duration = .milliseconds(10)

    /// True when no interlock input is configured: nothing watches an e-stop, pedal or skin
    /// contact, so the machine is only fit for the simulator and development.
    public var isDeveloperMode: Bool { inputs.isEmpty }

    /// The needle-power output, if configured.
    public var needlePowerOutput: InterlockOutput? { outputs.first { $0.role == .needlePower } }

    /// The inputs as GPIO lines: edges to each role's stop level are never debounced.
    public var gpioInputs: [GPIOInputLine] {
        inputs.map {
            GPIOInputLine(name: $0.name, chip: $0.chip, lineOffset: $0.lineOffset, activeLow: $0.activeLow,
                          bias: $0.bias, debounce: $0.debounce, immediateLevel: $0.role.stopLevel)
        }
    }

    /// The outputs as GPIO lines, all driven inactive (needle power off, lamp off) when requested.
    public var gpioOutputs: [GPIOOutputLine] {
        outputs.map {
            GPIOOutputLine(name: $0.name, chip: $0.chip, lineOffset: $0.lineOffset, activeLow: $0.activeLow,
                           safeLevel: .inactive)
        }
    }
}

/// What an interlock input means. Its line is "active" when (with `active_low` applied):
/// estop: the e-stop is pressed; pedal: the pedal is pressed; contact: the applicator touches the
/// skin; cartridge: a cartridge is in place.
public enum InterlockRole: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case estop
    case pedal
    case contact
    case cartridge

    /// The level that means "stop": e-stop active; pedal, contact, cartridge inactive. A lost line
    /// counts as this level (fail closed).
    public var stopLevel: GPIOLevel { self == .estop ? .active : .inactive }

    /// Whether `reading` lets the machine run.
    public func isHealthy(_ reading: GPIOInputReading) -> Bool {
        switch reading {
        case .lost: false
        case .active: self != .estop
        case .inactive: self == .estop
        }
    }

    public var description: String {
        switch self {
        case .estop: "e-stop"
        case .pedal: "foot pedal"
        case .contact: "skin contact"
        case .cartridge: "cartridge"
        }
    }

    /// "pressed", "released", "touching", … for a reading of this role.
    public func describe(_ reading: GPIOInputReading) -> String {
        switch (self, reading) {
        case (_, .lost): "line lost"
        case (.estop, .active), (.pedal, .active): "pressed"
        case (.estop, .inactive), (.pedal, .inactive): "released"
        case (.contact, .active): "touching"
        case (.contact, .inactive): "no contact"
        case (.cartridge, .active): "present"
        case (.cartridge, .inactive): "missing"
        }
    }
}

/// One `[[interlock]]` table.
public struct InterlockInput: Sendable, Hashable {
    public var name: String
    public var role: InterlockRole
    /// "gpiochip0" or a path such as "/dev/gpiochip0".
    public var chip: String
    public var lineOffset: UInt32
    public var activeLow: Bool
    public var bias: GPIOBias
    public var debounce: Duration

    public init(name: String, role: InterlockRole, chip: String, lineOffset: UInt32, activeLow: Bool,
                bias: GPIOBias, debounce: Duration = InterlockWiring.defaultDebounce) {
        self.name = name
        self.role = role
        self.chip = chip
        self.lineOffset = lineOffset
        self.activeLow = activeLow
        self.bias = bias
        self.debounce = debounce
    }
}

/// What an interlock output drives. Both are inactive from start-up and whenever smpctl stops.
public enum InterlockOutputRole: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// Enables the needle drive's power (a relay or driver enable): active only while the
    /// interlock state is armed or held; switched off first on any e-stop, fault or link loss.
    case needlePower = "needle-power"
    /// A lamp that is lit while the machine is armed (the needle may move).
    case lamp

    public var description: String { rawValue }
}

/// One `[[output]]` table.
public struct InterlockOutput: Sendable, Hashable {
    public var name: String
    public var role: InterlockOutputRole
    public var chip: String
    public var lineOffset: UInt32
    public var activeLow: Bool

    public init(name: String, role: InterlockOutputRole, chip: String, lineOffset: UInt32, activeLow: Bool) {
        self.name = name
        self.role = role
        self.chip = chip
        self.lineOffset = lineOffset
        self.activeLow = activeLow
    }
}

