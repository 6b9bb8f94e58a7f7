#if canImport(Glibc)
import Glibc
#endif

/// A file a person names on the command line — a plan, a machine file, a design — read whole.
///
/// Opened non-blocking, so a FIFO cannot hang the caller; anything but a regular file is refused
/// before a byte is read; a file larger than `maximumBytes` (or one that grows past it while it is
/// read) is refused without reading the rest. The reasons are the system's own words.
package enum RegularFile {
    package enum ReadError: Error, Sendable, Hashable, CustomStringConvertible {
        /// open, fstat or read failed.
        case system(Errno)
        case directory
        /// A FIFO, socket, device…
        case notRegularFile
        case tooLarge(bytes: Int, maximumBytes: Int)

        package var description: String {
            switch self {
            case .system(let errno): errno.description
            case .directory: "it is a directory"
            case .notRegularFile: "it is not a regular file"
            case .tooLarge(let bytes, let maximum): "\(bytes) bytes is more than the \(maximum) allowed"
            }
        }
    }

    /// The bytes of the regular file at `path`.
    package static func read(path: String, maximumBytes: Int) -> Result<[UInt8], ReadError> {
        let fd: CInt
        switch Sys.open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK) {
        case .success(let opened): fd = opened
        case .failure(let errno): return .failure(.system(errno))
        }
        defer { _ = Sys.close(fd) }
        let info: stat
        switch Sys.fileStatus(fd) {
        case .success(let status): info = status
        case .failure(let errno): return .failure(.system(errno))
        }
        switch info.st_mode & S_IFMT {
        case S_IFREG: break
        case S_IFDIR: return .failure(.directory)
        default: return .failure(.notRegularFile)
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
            case .success(.wouldBlock): return .failure(.notRegularFile)  // a regular file never blocks
            case .failure(let errno): return .failure(.system(errno))
            }
        }
    }
}
