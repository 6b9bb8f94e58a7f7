import SMPSystem

/// Bytes for a non-blocking descriptor that the kernel has not taken yet, in order: what
/// `SerialPort` (drained by a Dispatch write source) and the link's I/O thread (drained on
/// POLLOUT) both keep. Never blocks, never drops, never reorders; `bytes[start...]` waits.
struct PendingWrites {
    private var bytes: [UInt8] = []
    private var start = 0

    /// Consumed prefix above which the buffer is compacted.
    static let compactionThreshold = 64 * 1024

    enum Outcome {
        /// Everything handed to the kernel.
        case written
        /// Some bytes wait: drain when the descriptor is writable.
        case waiting
        case failed(Errno)
    }

    var count: Int { bytes.count - start }

    /// Writes `new` now, behind whatever already waits (then it only queues).
    mutating func write(_ new: [UInt8], to fd: CInt) -> Outcome {
        if count > 0 {
            bytes.append(contentsOf: new)
            return .waiting
        }
        var offset = 0
        while offset < new.count {
            let result = new.withUnsafeBytes { all in
                Sys.write(fd, from: UnsafeRawBufferPointer(rebasing: all[offset...]))
            }
            switch result {
            case .success(.wouldBlock), .success(.endOfFile):
                bytes.append(contentsOf: new[offset...])
                return .waiting
            case .success(.transferred(let written)):
                offset += written
            case .failure(let errno):
                return .failed(errno)
            }
        }
        return .written
    }

    /// Writes what waits, until the kernel stops taking it.
    mutating func drain(to fd: CInt) -> Outcome {
        while count > 0 {
            let result = bytes.withUnsafeBytes { all in
                Sys.write(fd, from: UnsafeRawBufferPointer(rebasing: all[start...]))
            }
            switch result {
            case .success(.wouldBlock), .success(.endOfFile):
                if start >= Self.compactionThreshold && start * 2 >= bytes.count {
                    bytes.removeFirst(start)
                    start = 0
                }
                return .waiting
            case .success(.transferred(let written)):
                start += written
            case .failure(let errno):
                return .failed(errno)
            }
        }
        removeAll()
        return .written
    }

    mutating func removeAll() {
        bytes = []
        start = 0
    }
}
