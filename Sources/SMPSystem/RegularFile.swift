#if canImport(Glibc)
import Glibc
#endif

/// A file a person names on the command line — a plan, a machine file, a design — read whole.
///
/// The rule (docs/reliability.md, "File inputs"): a symbolic link is followed — a plan linked from
/// a shared folder is fine — and what it resolves to must be a regular file on a disk file system.
/// Anything else is refused **before it is opened**: opening a device node can act (a tty raises
/// DTR, which resets many boards — the applicator's own port among them; a watchdog node arms the
/// watchdog), and a FIFO can block. A regular file of the kernel's (/proc, /sys, …) is refused
/// too: it is an interface, not a document, and reading it may block or change something. A
/// refusal through a link names where the link led. Opened non-blocking all the same (a FIFO put
/// in the file's place between the look and the open cannot hang the caller), checked again on
/// the open file; a file larger than `maximumBytes` (or one that grows past it while it is read)
/// is refused without reading the rest. The reasons are the system's own words.
package enum RegularFile {
    package enum ReadError: Error, Sendable, Hashable, CustomStringConvertible {
        /// open, stat, fstat or read failed.
        case system(Errno)
        case directory(resolved: String?)
        /// A FIFO, socket, device…: `kind` says which; `resolved` is where a symbolic link led.
        case notRegularFile(kind: String, resolved: String?)
        /// A regular file of a kernel pseudo file system (/proc, /sys, …).
        case kernelFile(resolved: String?)
        case tooLarge(bytes: Int, maximumBytes: Int)

        package var description: String {
            func via(_ resolved: String?) -> String { resolved.map { "it is a symbolic link to \($0); that is " } ?? "it is " }
            return switch self {
            case .system(let errno): errno.description
            case .directory(let resolved): via(resolved) + "a directory"
            case .notRegularFile(let kind, let resolved): via(resolved) + "\(kind), not a regular file; it was not opened"
            case .kernelFile(let resolved): via(resolved) + "a file of the kernel (/proc, /sys), not a document"
            case .tooLarge(let bytes, let maximum): "\(bytes) bytes is more than the \(maximum) allowed"
            }
        }
    }

    /// The kernel's own file systems (statfs f_type, linux/magic.h): proc, sysfs, debugfs,
    /// tracefs, securityfs, cgroup, cgroup2, configfs, bpf, efivarfs, pstore, devpts.
    static let kernelFileSystems: Set<Int> = [
        0x9FA0, 0x6265_6572, 0x6462_6720, 0x7472_6163, 0x7363_6673, 0x0027_E0EB, 0x6367_7270,
        0x6265_6570, 0xCAFE_4A11, 0xDE5E_81E4, 0x6165_676C, 0x1CD1,
    ]

    package static func kind(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFCHR: "a character device"
        case S_IFBLK: "a block device"
        case S_IFIFO: "a FIFO (named pipe)"
        case S_IFSOCK: "a socket"
        default: "not a file of data"
        }
    }

    /// The bytes of the regular file at `path`.
    package static func read(path: String, maximumBytes: Int) -> Result<[UInt8], ReadError> {
        // Where a symbolic link leads, for the refusals (nil when `path` is no link).
        var resolved: String? {
            guard case .success(true?) = Sys.isSymbolicLink(path) else { return nil }
            return try? Sys.resolvedPath(path).get()
        }
        func refusal(_ mode: mode_t) -> ReadError? {
            switch mode & S_IFMT {
            case S_IFREG: nil
            case S_IFDIR: .directory(resolved: resolved)
            default: .notRegularFile(kind: kind(mode), resolved: resolved)
            }
        }
        switch Sys.pathStatus(path) {
        case .success(let info):
            if let refused = refusal(info.st_mode) { return .failure(refused) }
        case .failure(let errno): return .failure(.system(errno))
        }
        let fd: CInt
        switch Sys.open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY) {
        case .success(let opened): fd = opened
        case .failure(let errno): return .failure(.system(errno))
        }
        defer { _ = Sys.close(fd) }
        let info: stat
        switch Sys.fileStatus(fd) {
        case .success(let status): info = status
        case .failure(let errno): return .failure(.system(errno))
        }
        if let refused = refusal(info.st_mode) { return .failure(refused) }
        if case .success(let type) = Sys.fileSystemType(fd), kernelFileSystems.contains(type) {
            return .failure(.kernelFile(resolved: resolved))
        }
        let size = Int(info.st_size)
        if size > maximumBytes { return .failure(.tooLarge(bytes: size, maximumBytes: maximumBytes)) }

        // One byte more than fstat said, so a file that grew is noticed; never past the limit.
        var bytes = [UInt8](repeating: 0, count: size + 1)
        var filled = 0
        while true {
            if filled == bytes.count {
                if bytes.count > maximumBytes {
                    return .failure(.tooLarge(bytes: bytes.count, maximumBytes: maximumBytes))
                }
                bytes.append(contentsOf: repeatElement(0, count: max(bytes.count, 65_536)))
            }
            let result = bytes.withUnsafeMutableBytes { buffer in
                Sys.read(fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[filled...]))
            }
            switch result {
            case .success(.transferred(let count)): filled += count
            case .success(.endOfFile): 
                if filled > maximumBytes { return .failure(.tooLarge(bytes: filled, maximumBytes: maximumBytes)) }
                bytes.removeSubrange(filled...)
                return .success(bytes)
            case .success(.wouldBlock): return .failure(.notRegularFile(kind: "a file that blocks", resolved: resolved))
            case .failure(let errno): return .failure(.system(errno))
            }
        }
    }
}
