import SMPSystem
import SystemPackage

/// Why a serial port could not be opened, or why its link ended.
///
/// `description` is written for the technician at the chair: what happened and how to fix it.
public enum SerialPortError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Nothing at that path (ENOENT, ENODEV, ENXIO on open).
    case noSuchDevice(String)
    /// The user may not open the device (EACCES, EPERM on open).
    case permissionDenied(String)
    /// Another process holds the port (EBUSY from TIOCEXCL, EWOULDBLOCK from flock).
    case busy(String)
    /// The path is not a terminal device (a regular file, a directory, /dev/null, …).
    case notATerminal(String)
    /// The rate is not one of the standard termios speeds.
    case unsupportedBaud(Int)
    /// The device went away: EIO/ENXIO, POLLHUP, or end of file. The errno, when there was one.
    case disconnected(String, Errno?)
    /// The port was closed by this program (`close()`), so it cannot be used any more.
    case closed
    /// The driver accepted `tcsetattr` but the settings read back differ (it refused some).
    case settingsNotApplied(path: String, detail: String)
    /// Any other failing system call.
    case io(operation: String, path: String, errno: Errno)

    public var description: String {
        switch self {
        case .noSuchDevice(let path):
            return "No device at \(path). Check that the applicator is powered and its USB cable is "
                + "plugged in, then run `smpctl devices` to list the connected applicators."
        case .permissionDenied(let path):
            return "Permission denied opening \(path). Install the udev rule 70-smp-applicator.rules "
                + "(the smpctl package does; from source: `sudo make install-udev`) and add yourself to "
                + "the group `smp` (`sudo usermod -aG smp $USER`, then log in again)."
        case .busy(let path):
            return "\(path) is in use by another process (another smpctl?). Close it, or find it "
                + "with `fuser \(path)`."
        case .notATerminal(let path):
            return "\(path) is not a serial port. Give the applicator's port (for example "
                + "/dev/ttyACM0); run `smpctl devices` to list them."
        case .unsupportedBaud(let baud):
            let rates = SerialPort.supportedBaudRates.map(String.init).joined(separator: ", ")
            return "Unsupported baud rate \(baud). Use one of: \(rates) (the applicator uses 115200)."
        case .disconnected(let path, let errno):
            let cause = errno.map { " (\($0))" } ?? ""
            return "The applicator at \(path) disconnected\(cause). Check its USB cable and power, "
                + "reconnect it, and run `smpctl devices` to find it again."
        case .closed:
            return "The serial port was already closed. Start the command again to reconnect."
        case .settingsNotApplied(let path, let detail):
            return "The serial port \(path) did not accept the required settings (\(detail)). "
                + "Check that \(path) is the applicator (`smpctl devices`) and not another device."
        case .io(let operation, let path, let errno):
            return "I/O error during \(operation) on \(path): \(errno) (errno \(errno.rawValue)). "
                + "Unplug and replug the applicator; if it happens again, look for USB errors "
                + "with `sudo dmesg | tail`."
        }
    }
}

extension SerialPortError {
    /// Maps the errno of a failed `open(2)` of `path`.
    static func opening(_ path: String, errno: Errno) -> SerialPortError {
        switch errno {
        case .noSuchFileOrDirectory, .operationNotSupportedByDevice, .noSuchAddressOrDevice, .notDirectory:
            return .noSuchDevice(path)
        case .permissionDenied, .notPermitted, .readOnlyFileSystem:
            return .permissionDenied(path)
        case .resourceBusy:
            return .busy(path)
        case .isDirectory:
            return .notATerminal(path)
        default:
            return .io(operation: "open", path: path, errno: errno)
        }
    }

    /// Maps the errno of a failed call on an open link: EIO, ENXIO, ENODEV and EPIPE mean the
    /// device went away; anything else is reported as it is.
    static func link(_ path: String, operation: String, errno: Errno) -> SerialPortError {
        errno.meansHangUp ? .disconnected(path, errno) : .io(operation: operation, path: path, errno: errno)
    }
}
