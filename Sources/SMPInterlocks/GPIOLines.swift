import SMPSystem
import SystemPackage

// The vocabulary of the interlock lines: what a line is, what it reads, what can go wrong.
// Levels are LOGICAL throughout: "active" is the level `activeLow` maps to the asserted state.

/// Bias applied to an input line by the GPIO chip.
public enum GPIOBias: String, Sendable, Hashable, CaseIterable {
    case pullUp = "pull-up"
    case pullDown = "pull-down"
    /// Neither pull-up nor pull-down.
    case disabled
    /// Leave the chip's current setting (the wiring provides the bias).
    case asIs = "as-is"

    var shimValue: Int32 {
        switch self {
        case .asIs: 0
        case .disabled: 1
        case .pullUp: 2
        case .pullDown: 3
        }
    }
}

/// The logical level of a line.
public enum GPIOLevel: Sendable, Hashable, CustomStringConvertible {
    case active
    case inactive

    public var description: String { self == .active ? "active" : "inactive" }
}

/// An input line to watch.
public struct GPIOInputLine: Sendable, Hashable {
    /// The name used in messages (the configuration's `name`).
    public var name: String
    /// "gpiochip0" or a path such as "/dev/gpiochip0".
    public var chip: String
    public var lineOffset: UInt32
    public var activeLow: Bool
    public var bias: GPIOBias
    /// How long a new level must hold before it is reported (see `immediateLevel`).
    public var debounce: Duration
    /// Edges TO this level are reported at once, with no debounce; edges away from it only after
    /// the new level has held for `debounce`. Interlocks set it to the level that means "stop"
    /// (e-stop pressed, pedal released), so a stop is never delayed and a bounce can only stop,
    /// never start. `nil`: both directions are debounced.
    public var immediateLevel: GPIOLevel?

    public init(name: String, chip: String, lineOffset: UInt32, activeLow: Bool, bias: GPIOBias,
                debounce: Duration, immediateLevel: GPIOLevel?) {
        self.name = name
        self.chip = chip
        self.lineOffset = lineOffset
        self.activeLow = activeLow
        self.bias = bias
        self.debounce = debounce
        self.immediateLevel = immediateLevel
    }

    /// The device path of `chip`.
    public var chipPath: String { GPIOChip.path(of: chip) }
}

/// An output line to drive.
public struct GPIOOutputLine: Sendable, Hashable {
    public var name: String
    public var chip: String
    public var lineOffset: UInt32
    public var activeLow: Bool
    /// Driven from the moment the line is requested, and again when the backend closes.
    public var safeLevel: GPIOLevel

    public init(name: String, chip: String, lineOffset: UInt32, activeLow: Bool, safeLevel: GPIOLevel = .inactive) {
        self.name = name
        self.chip = chip
        self.lineOffset = lineOffset
        self.activeLow = activeLow
        self.safeLevel = safeLevel
    }

    /// The device path of `chip`.
    public var chipPath: String { GPIOChip.path(of: chip) }
}

/// What an input line reads.
public enum GPIOInputReading: Sendable, Hashable, CustomStringConvertible {
    case active
    case inactive
    /// The line cannot be read any more (chip removed, read error). Final: a lost line is never
    /// reported again until the backend is reopened. Interlocks treat it as their stop level.
    case lost

    public init(_ level: GPIOLevel) { self = level == .active ? .active : .inactive }

    public var description: String {
        switch self {
        case .active: "active"
        case .inactive: "inactive"
        case .lost: "lost"
        }
    }
}

/// A debounced change of an input line, delivered on the backend's queue.
public struct GPIOInputChange: Sendable, Hashable {
    /// Position of the line in the backend's `inputs`.
    public var inputIndex: Int
    public var reading: GPIOInputReading
    /// CLOCK_MONOTONIC nanoseconds of the edge that started the reported level (the kernel's
    /// timestamp for a real line): for a debounced edge, `debounce` before it was delivered. For
    /// the initial reading and for `lost`, the time it was read.
    public var timestampNanos: UInt64
    /// True for the first report of each line: its level read when the backend started.
    public var isInitial: Bool

    public init(inputIndex: Int, reading: GPIOInputReading, timestampNanos: UInt64, isInitial: Bool) {
        self.inputIndex = inputIndex
        self.reading = reading
        self.timestampNanos = timestampNanos
        self.isInitial = isInitial
    }
}

/// An output that could not be driven to its safe level when the lines were released (closing
/// the backend): on most chips the line keeps its last level, so an output that was active (the
/// needle power on) may still be.
public struct GPIOSafeLevelFailure: Sendable, Hashable, CustomStringConvertible {
    /// Position of the output in the backend's `outputs`.
    public var output: Int
    public var name: String
    public var chip: String
    public var lineOffset: UInt32
    public var safeLevel: GPIOLevel
    public var error: GPIOError

    public init(output: Int, name: String, chip: String, lineOffset: UInt32, safeLevel: GPIOLevel, error: GPIOError) {
        self.output = output
        self.name = name
        self.chip = chip
        self.lineOffset = lineOffset
        self.safeLevel = safeLevel
        self.error = error
    }

    public var description: String {
        "output \"\(name)\" (\(chip) line \(lineOffset)) could not be driven \(safeLevel) before release: \(error)"
    }
}

/// The clock of GPIO timestamps: CLOCK_MONOTONIC (also Dispatch's uptime clock on Linux).
public enum MonotonicClock {
    /// Nanoseconds of CLOCK_MONOTONIC now.
    public static func nowNanoseconds() -> UInt64 { Sys.monotonicNanoseconds() }
}

/// Chip names and paths.
public enum GPIOChip {
    /// "gpiochip0" → "/dev/gpiochip0"; a path is returned as it is.
    public static func path(of chip: String) -> String {
        chip.hasPrefix("/") ? chip : "/dev/" + chip
    }

    /// The libgpiod API major version smpctl was built against (1 or 2).
    public static var libgpiodAPIVersion: Int { Sys.gpioAPIVersion() }

    /// Whether the kernel debounces input lines for us (libgpiod v2).
    public static var kernelDebounceAvailable: Bool { Sys.gpioKernelDebounce() }
}

/// Why GPIO lines could not be opened or driven. `description` is written for the technician.
public enum GPIOError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Nothing at the chip's path (ENOENT, ENXIO).
    case chipNotFound(chip: String, path: String)
    /// The user may not open the chip (EACCES, EPERM).
    case permissionDenied(chip: String, path: String)
    /// The path exists but is not a GPIO character device (ENOTTY, ENODEV, EINVAL).
    case notAGPIOChip(chip: String, path: String)
    /// The chip has fewer lines than the offset needs.
    case lineOutOfRange(name: String, chip: String, lineOffset: UInt32, lineCount: Int)
    /// Another process (or another part of this configuration) holds a line (EBUSY).
    case lineBusy(chip: String, lineOffsets: [UInt32])
    /// Any other failing call while opening or driving lines.
    case io(operation: String, chip: String, errno: Errno)
    /// The backend is closed.
    case closed
    /// No line with that name (simulated backend, programming error in a caller).
    case unknownLine(String)

    static let udevHint = "install the udev rule 70-smp-applicator.rules (the smpctl package does; from source: "
        + "`sudo make install-udev`) and "
        + "add yourself to the group `smp` (`sudo usermod -aG smp $USER`, then log in again)"

    public var description: String {
        switch self {
        case .chipNotFound(let chip, let path):
            return "No GPIO chip \"\(chip)\" (\(path) does not exist). Check the interlock's `chip` in the "
                + "machine configuration against `gpiodetect` and that the interlock board is connected; if "
                + "the chip exists but you cannot see it, \(Self.udevHint)."
        case .permissionDenied(let chip, let path):
            return "Permission denied opening GPIO chip \"\(chip)\" (\(path)): \(Self.udevHint)."
        case .notAGPIOChip(let chip, let path):
            return "\(path) is not a GPIO chip (interlock chip \"\(chip)\"). Give a chip name such as "
                + "\"gpiochip0\" or its /dev path; `gpiodetect` lists them."
        case .lineOutOfRange(let name, let chip, let offset, let count):
            return "Interlock line \"\(name)\": \(chip) has \(count) lines (0–\(max(count - 1, 0))), no line "
                + "\(offset). Check `line` in the machine configuration against `gpioinfo \(chip)`."
        case .lineBusy(let chip, let offsets):
            let lines = offsets.map(String.init).joined(separator: ", ")
            return "GPIO line(s) \(lines) of \(chip) are in use by another program (another smpctl?). "
                + "`gpioinfo \(chip)` shows who holds them."
        case .io(let operation, let chip, let errno):
            return "GPIO error during \(operation) on \(chip): \(errno) (errno \(errno.rawValue)). "
                + "Check the interlock board's connection; `sudo dmesg | tail` may say more."
        case .closed:
            return "The interlock lines were already closed."
        case .unknownLine(let name):
            return "No interlock line named \"\(name)\"."
        }
    }

    /// Maps the errno of a failed chip open.
    static func opening(chip: String, path: String, errno: Errno) -> GPIOError {
        switch errno {
        case .noSuchFileOrDirectory, .noSuchAddressOrDevice, .notDirectory:
            return .chipNotFound(chip: chip, path: path)
        case .permissionDenied, .notPermitted:
            return .permissionDenied(chip: chip, path: path)
        case .inappropriateIOCTLForDevice, .operationNotSupportedByDevice, .invalidArgument, .isDirectory:
            return .notAGPIOChip(chip: chip, path: path)
        default:
            return .io(operation: "open", chip: path, errno: errno)
        }
    }

    /// Maps the errno of a failed line request.
    static func requesting(chip: String, path: String, offsets: [UInt32], operation: String, errno: Errno) -> GPIOError {
        switch errno {
        case .resourceBusy: return .lineBusy(chip: chip, lineOffsets: offsets)
        case .permissionDenied, .notPermitted: return .permissionDenied(chip: chip, path: path)
        default: return .io(operation: operation, chip: chip, errno: errno)
        }
    }
}
