#if canImport(Glibc)
import Glibc
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
        case .system(let call, let code): "\(call) failed: \(String(cString: strerror(code))) (errno \(code))"
        case .linkPathOccupied(let path): "\(path) exists and is not a symbolic link; refusing to replace it"
        case .invalidOption(let text): "invalid simulator option: \(text)"
        case .notATerminal(let path): "\(path) is not a terminal device (give a tty such as /dev/ttyGS0)"
        case .portBusy(let path): "\(path) is in use by another simulator (it holds the port's lock)"
        }
    }
}

/// close(2), ignoring EINTR (on Linux the descriptor is released even then).
func closeDescriptor(_ fd: Int32) {
    _ = close(fd)
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
        let libc = try PTYCalls.resolve()
        let master = libc.posixOpenPT(O_RDWR | O_NOCTTY | O_CLOEXEC)
        guard master >= 0 else { throw .system("posix_openpt", errno: errno) }
        var opened = false
        defer { if !opened { closeDescriptor(master) } }
        guard libc.grantPT(master) == 0 else { throw .system("grantpt", errno: errno) }
        guard libc.unlockPT(master) == 0 else { throw .system("unlockpt", errno: errno) }
        var name = [CChar](repeating: 0, count: 256)
        let result = name.withUnsafeMutableBufferPointer { libc.ptsNameR(master, $0.baseAddress, $0.count) }
        guard result == 0 else { throw .system("ptsname_r", errno: result) }
        let path = name.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        let flags = fcntl(master, F_GETFL)
        guard flags >= 0, fcntl(master, F_SETFL, flags | O_NONBLOCK) == 0 else {
            throw .system("fcntl(O_NONBLOCK)", errno: errno)
        }
        let slave = Glibc.open(path, O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK)
        guard slave >= 0 else { throw .system("open(\(path))", errno: errno) }
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
        let fd = Glibc.open(path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw .system("open(\(path))", errno: errno) }
        var opened = false
        defer { if !opened { closeDescriptor(fd) } }
        guard isatty(fd) == 1 else { throw .notATerminal(path) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            if errno == EWOULDBLOCK { throw .portBusy(path) }
            throw .system("flock(\(path))", errno: errno)
        }
        try makeRaw(fd)
        guard tcflush(fd, TCIOFLUSH) == 0 else { throw .system("tcflush(\(path))", errno: errno) }
        opened = true
        return PseudoTerminal(master: fd, slave: nil, path: path, isPort: true)
    }

    /// Raw mode, 8N1 as the driver has it, receiver on, modem lines ignored, no hang-up on close,
    /// reads return as soon as one byte is there.
    private static func makeRaw(_ fd: Int32) throws(SimulatorError) {
        var tio = termios()
        guard tcgetattr(fd, &tio) == 0 else { throw .system("tcgetattr", errno: errno) }
        cfmakeraw(&tio)
        tio.c_cflag |= tcflag_t(CLOCAL | CREAD)
        tio.c_cflag &= ~tcflag_t(HUPCL)
        withUnsafeMutableBytes(of: &tio.c_cc) { cc in
            cc[Int(VMIN)] = 1
            cc[Int(VTIME)] = 0
        }
        guard tcsetattr(fd, TCSANOW, &tio) == 0 else { throw .system("tcsetattr", errno: errno) }
    }

    /// Closes both descriptors (for a pair that was never attached to a source).
    func close() {
        if let slave { closeDescriptor(slave) }
        closeDescriptor(master)
    }

    /// Points the symbolic link `link` at `target`, atomically (a temporary link renamed over it).
    /// An existing symbolic link is replaced; anything else at `link` is refused.
    static func installLink(_ link: String, to target: String) throws(SimulatorError) {
        var info = stat()
        if lstat(link, &info) == 0 {
            guard info.st_mode & S_IFMT == S_IFLNK else { throw .linkPathOccupied(link) }
        } else if errno != ENOENT {
            throw .system("lstat(\(link))", errno: errno)
        }
        let temporary = "\(link).tmp-\(getpid())"
        _ = unlink(temporary)
        guard symlink(target, temporary) == 0 else { throw .system("symlink(\(temporary))", errno: errno) }
        guard rename(temporary, link) == 0 else {
            let code = errno
            _ = unlink(temporary)
            throw .system("rename(\(temporary), \(link))", errno: code)
        }
    }

    /// Removes `link` if it is a symbolic link to `target` (never someone else's link or file).
    static func removeLink(_ link: String, ifPointingTo target: String) {
        var buffer = [CChar](repeating: 0, count: 4096)
        let length = readlink(link, &buffer, buffer.count - 1)
        guard length >= 0 else { return }
        let pointsTo = String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if pointsTo == target { _ = unlink(link) }
    }
}

/// posix_openpt, grantpt, unlockpt and ptsname_r: glibc declares them only under _XOPEN_SOURCE,
/// which Swift's Glibc module does not define, so they are looked up by name in the C library
/// already loaded into the process (the same functions, no re-implementation).
private struct PTYCalls {
    typealias OpenPT = @convention(c) (Int32) -> Int32
    typealias FDCall = @convention(c) (Int32) -> Int32
    typealias PTSNameR = @convention(c) (Int32, UnsafeMutablePointer<CChar>?, Int) -> Int32

    var posixOpenPT: OpenPT
    var grantPT: FDCall
    var unlockPT: FDCall
    var ptsNameR: PTSNameR

    static func resolve() throws(SimulatorError) -> PTYCalls {
        guard let handle = dlopen(nil, RTLD_NOW) else { throw .system("dlopen", errno: ENOSYS) }
        defer { dlclose(handle) }
        func symbol<T>(_ name: String, _ type: T.Type) throws(SimulatorError) -> T {
            guard let pointer = dlsym(handle, name) else { throw .system("dlsym(\(name))", errno: ENOSYS) }
            return unsafeBitCast(pointer, to: type)
        }
        return PTYCalls(posixOpenPT: try symbol("posix_openpt", OpenPT.self),
                        grantPT: try symbol("grantpt", FDCall.self),
                        unlockPT: try symbol("unlockpt", FDCall.self),
                        ptsNameR: try symbol("ptsname_r", PTSNameR.self))
    }
}
