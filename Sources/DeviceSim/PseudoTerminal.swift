import SMPSystem

#if canImport(Glibc)
import Glibc  // the termios and open flags; every call goes through `Sys`
#endif

/// Why the simulator could not start (or a record could not be opened).
public enum SimulatorError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A system call failed.
    case system(String, errno: Int32)
    /// `linkPath` names something that is not a symbolic link: the simulator never replaces it.
    case linkPathOccupied(String)
    /// An option is out of range.
    case invalidOption(String)
    /// `portPath` names something that is not a terminal device.
    case notATerminal(String)
    /// `portPath` is locked (flock) by another process: another simulator already serves it.
    case portBusy(String)

    public var description: String {
        switch self {
        case .system(let call, let code): "\(call) failed: \(Errno(rawValue: code)) (errno \(code))"
        case .linkPathOccupied(let path): "\(path) exists and is not a symbolic link; refusing to replace it"
        case .invalidOption(let text): "invalid simulator option: \(text)"
        case .notATerminal(let path): "\(path) is not a terminal device (give a tty such as /dev/ttyGS0)"
        case .portBusy(let path): "\(path) is in use by another simulator (it holds the port's lock)"
        }
    }
}

extension SimulatorError {
    /// `call` failed with `errno`.
    static func system(_ call: String, _ errno: Errno) -> SimulatorError { .system(call, errno: errno.rawValue) }
}

/// close(2), not retried on EINTR (on Linux the descriptor is released even then); the error is
/// of no use here.
func closeDescriptor(_ fd: Int32) {
    _ = Sys.close(fd)
}

/// The simulator's end of the link: the descriptor it reads and writes (`master`), the tty path a
/// host opens (`path`) and, for a pseudo-terminal, one slave descriptor kept open (`slave`).
///
/// Two kinds, `open()` and `openPort(_:)`:
///
/// - A pseudo-terminal pair (the default): `master` is the pty master. Why keep a slave
///   descriptor: on Linux, once the last descriptor of the slave side is closed the master reads
///   EIO (a hang-up) until a slave is opened again, which would make the master's read source fire
///   endlessly while no host is attached, and a host closing the port would look like an
///   unplugged device. Holding one slave descriptor (never read from, so it steals no bytes) keeps
///   the tty alive: hosts can open, close and reopen `path` as often as they like, like a real USB
///   CDC-ACM device that stays powered. It also keeps the raw termios set here in force for a host
///   that does not configure the port itself.
/// - An existing tty (`SimulatorOptions.portPath`), e.g. the USB gadget side `/dev/ttyGS0` whose
///   host side is a real `/dev/ttyACMn`: `master` is that tty, opened raw, `slave` is nil and
///   `path` is the port itself. When the host unplugs, the tty hangs up (reads end of file or EIO,
///   POLLHUP) or just goes silent; the simulator closes it and opens it again (see
///   `SimulatedApplicator.portReopenIntervalMicroseconds`).
struct PseudoTerminal {
    var master: Int32
    var slave: Int32?
    var path: String
    /// True for an existing tty opened by path (`openPort`), false for a pty pair.
    var isPort = false

    static func open() throws(SimulatorError) -> PseudoTerminal {
        let (master, path): (Int32, String)
        switch Sys.openPseudoTerminal() {
        case .success(let pty): (master, path) = pty
        case .failure(let errno): throw .system("posix_openpt", errno)
        }
        var opened = false
        defer { if !opened { closeDescriptor(master) } }
        if case .failure(let errno) = Sys.setNonBlocking(master) { throw .system("fcntl(O_NONBLOCK)", errno) }
        let slave: Int32
        switch Sys.open(path, O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK) {
        case .success(let fd): slave = fd
        case .failure(let errno): throw .system("open(\(path))", errno)
        }
        var slaveKept = false
        defer { if !slaveKept { closeDescriptor(slave) } }
        try makeRaw(slave)
        opened = true
        slaveKept = true
        return PseudoTerminal(master: master, slave: slave, path: path)
    }

    /// Opens the existing tty `path` (O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC) as the device's
    /// end: refuses anything that is not a terminal and a port another simulator holds (flock),
    /// sets raw mode and discards whatever was queued before (a previous host's bytes).
    static func openPort(_ path: String) throws(SimulatorError) -> PseudoTerminal {
        let fd: Int32
        switch Sys.open(path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC) {
        case .success(let descriptor): fd = descriptor
        case .failure(let errno): throw .system("open(\(path))", errno)
        }
        var opened = false
        defer { if !opened { closeDescriptor(fd) } }
        switch Sys.isatty(fd) {
        case .success(true): break
        case .success(false): throw .notATerminal(path)
        case .failure(let errno): throw .system("isatty(\(path))", errno)
        }
        switch Sys.flock(fd, LOCK_EX | LOCK_NB) {
        case .success: break
        case .failure(.wouldBlock): throw .portBusy(path)
        case .failure(let errno): throw .system("flock(\(path))", errno)
        }
        try makeRaw(fd)
        if case .failure(let errno) = Sys.tcflush(fd, TCIOFLUSH) { throw .system("tcflush(\(path))", errno) }
        opened = true
        return PseudoTerminal(master: fd, slave: nil, path: path, isPort: true)
    }

    /// Raw mode, 8N1 as the driver has it, receiver on, modem lines ignored, no hang-up on close,
    /// reads return as soon as one byte is there.
    private static func makeRaw(_ fd: Int32) throws(SimulatorError) {
        var tio: termios
        switch Sys.tcgetattr(fd) {
        case .success(let attributes): tio = attributes
        case .failure(let errno): throw .system("tcgetattr", errno)
        }
        Sys.cfmakeraw(&tio)
        tio.c_cflag |= tcflag_t(CLOCAL | CREAD)
        tio.c_cflag &= ~tcflag_t(HUPCL)
        withUnsafeMutableBytes(of: &tio.c_cc) { cc in
            cc[Int(VMIN)] = 1
            cc[Int(VTIME)] = 0
        }
        if case .failure(let errno) = Sys.tcsetattr(fd, TCSANOW, tio) { throw .system("tcsetattr", errno) }
    }

    /// Closes both descriptors (for a pair that was never attached to a source).
    func close() {
        if let slave { closeDescriptor(slave) }
        closeDescriptor(master)
    }

    /// Points the symbolic link `link` at `target`, atomically (a temporary link renamed over it).
    /// An existing symbolic link is replaced; anything else at `link` is refused.
    static func installLink(_ link: String, to target: String) throws(SimulatorError) {
        switch Sys.isSymbolicLink(link) {
        case .success(false): throw .linkPathOccupied(link)
        case .success: break  // a symbolic link, or nothing
        case .failure(let errno): throw .system("lstat(\(link))", errno)
        }
        let temporary = "\(link).tmp-\(Sys.processID())"
        _ = Sys.unlink(temporary)
        if case .failure(let errno) = Sys.symbolicLink(temporary, to: target) {
            throw .system("symlink(\(temporary))", errno)
        }
        if case .failure(let errno) = Sys.rename(temporary, to: link) {
            _ = Sys.unlink(temporary)
            throw .system("rename(\(temporary), \(link))", errno)
        }
    }

    /// Removes `link` if it is a symbolic link to `target` (never someone else's link or file).
    static func removeLink(_ link: String, ifPointingTo target: String) {
        if case .success(target) = Sys.readLink(link) { _ = Sys.unlink(link) }
    }
}
