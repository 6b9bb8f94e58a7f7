import SMPSystem
import SMPPlan
import SessionRunner
import Foundation

/// Who runs a recorded session: one live owner per session, detectable by every other process.
///
/// The owner holds an exclusive open-file-description lock (`fcntl(F_OFD_SETLK)`) on
/// `<database>.owners/session-<id>.lock` (beside the file the path resolves to, so every spelling
/// of the path, symbolic links included, finds the same lock) for the session's whole life: taken before its record
/// is created or (resume) before anything in it is settled, released once its account is final.
/// The kernel drops the lock when the owner's process ends in any way — SIGKILL, a crash, the
/// power — so a crashed owner never blocks a resume; a live one always does. The owner writes its
/// process id into the file, so the others can say who it is.
///
/// Why OFD locks: they belong to the open file, not the process, so they conflict between two
/// opens in one process too (a second `RecordStore` on the same file), and closing some other
/// descriptor of the file does not drop them as it drops a classic POSIX lock. Other processes
/// look without locking (`F_OFD_GETLK`), so a look never makes the owner's acquisition fail.
///
/// The owner unlinks the file when it releases; every acquirer and prober checks, after locking
/// or looking, that the file it holds is still the one at the path (the classic lock-file race).
/// The database must be on a local file system (as SQLite's WAL requires anyway).
final class SessionLock: Sendable {
    let sessionID: Int64
    let path: String
    private let identity: FileIdentity
    /// The lock's descriptor; -1 once released.
    private let descriptor: Locked<Int32>

    fileprivate init(sessionID: Int64, path: String, fd: Int32, identity: FileIdentity) {
        self.sessionID = sessionID
        self.path = path
        self.identity = identity
        self.descriptor = Locked(fd)
    }

    /// The lock file is still the one at its path (nobody removed or replaced it): one stat.
    var isStillAtPath: Bool { FileIdentity(path: path) == identity }

    /// Unlinks the lock file (if it is still ours) and closes it, which drops the lock.
    func release() {
        descriptor.withLock { fd in
            guard fd >= 0 else { return }
            if isStillAtPath { unlink(path) }
            SessionOwnership.closeDescriptor(fd)
            fd = -1
        }
    }

    deinit {
        descriptor.withLock { fd in
            if fd >= 0 { SessionOwnership.closeDescriptor(fd) }
        }
    }
}

/// The live process that owns a session, as another process sees it.
public struct SessionOwner: Sendable, Equatable {
    /// Its process id, as it wrote it (nil if it could not be read, or no such process exists
    /// any more in this process's view, e.g. another PID namespace).
    public var processID: Int32?
}

enum SessionOwnership {
    // Linux <fcntl.h> (all architectures): open file description locks, Linux ≥ 3.15. Glibc
    // declares them only under _GNU_SOURCE, which Swift's Glibc module does not promise.
    private static let getLock: Int32 = 36  // F_OFD_GETLK
    private static let setLock: Int32 = 37  // F_OFD_SETLK

    /// `resolved`: the database's path with symbolic links resolved (`RecordStore.resolvedPath`).
    static func directory(resolved: String) -> String { resolved + ".owners" }

    static func lockPath(resolved: String, session: Int64) -> String {
        directory(resolved: resolved) + "/session-\(session).lock"
    }

    /// Takes ownership of `session`: an exclusive lock held until `release()` or the end of the
    /// process. Throws `.sessionRunning` when a live owner holds it.
    static func acquire(database: String, resolved: String, session: Int64) throws(RecordStoreError) -> SessionLock {
        let directory = directory(resolved: resolved)
        if mkdir(directory, 0o700) != 0 && errno != EEXIST {
            throw failure(database, "cannot create \(directory) for the session's ownership lock: \(errnoText())")
        }
        let path = lockPath(resolved: resolved, session: session)
        // Retried only when the file was unlinked by its releasing owner between our open and
        // our lock: then a fresh file is at the path.
        for _ in 0..<100 {
            let fd = openRetryingEINTR(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
            guard fd >= 0 else { throw failure(database, "cannot open the session's ownership lock \(path): \(errnoText())") }
            var lock = flock()
            lock.l_type = Int16(F_WRLCK)
            lock.l_whence = Int16(SEEK_SET)
            var result: Int32
            repeat { result = fcntl(fd, setLock, &lock) } while result != 0 && errno == EINTR
            if result != 0 {
                let code = errno
                if code == EAGAIN || code == EACCES {
                    let owner = readOwner(fd)
                    closeDescriptor(fd)
                    throw running(database, session: session, owner: owner)
                }
                closeDescriptor(fd)
                throw failure(database, "cannot lock the session's ownership lock \(path): \(String(cString: strerror(code)))")
            }
            guard let identity = FileIdentity(descriptor: fd), FileIdentity(path: path) == identity else {
                closeDescriptor(fd)  // a released file, unlinked under us: try the new one
                continue
            }
            let text = Array("\(getpid())\n".utf8)
            guard ftruncate(fd, 0) == 0, text.withUnsafeBytes({ pwrite(fd, $0.baseAddress, $0.count, 0) }) == text.count else {
                let reason = errnoText()
                unlink(path)
                closeDescriptor(fd)
                throw failure(database, "cannot write the session's ownership lock \(path): \(reason)")
            }
            return SessionLock(sessionID: session, path: path, fd: fd, identity: identity)
        }
        throw failure(database, "the session's ownership lock \(path) keeps being replaced; is another program removing it?")
    }

    /// The live process that owns `session`, without taking anything; nil when none does
    /// (never run, finished, or its owner crashed).
    static func owner(database: String, resolved: String, session: Int64) throws(RecordStoreError) -> SessionOwner? {
        let path = lockPath(resolved: resolved, session: session)
        for _ in 0..<100 {
            let fd = openRetryingEINTR(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW, 0)
            if fd < 0 {
                if errno == ENOENT { return nil }
                throw failure(database, "cannot open the session's ownership lock \(path): \(errnoText())")
            }
            defer { closeDescriptor(fd) }
            var lock = flock()
            lock.l_type = Int16(F_WRLCK)
            lock.l_whence = Int16(SEEK_SET)
            var result: Int32
            repeat { result = fcntl(fd, getLock, &lock) } while result != 0 && errno == EINTR
            guard result == 0 else {
                throw failure(database, "cannot query the session's ownership lock \(path): \(errnoText())")
            }
            if lock.l_type != Int16(F_UNLCK) { return readOwner(fd) }
            // Unlocked: but a file its owner unlinked on release may be the one we opened.
            guard let identity = FileIdentity(descriptor: fd), FileIdentity(path: path) == identity else { continue }
            return nil
        }
        throw failure(database, "the session's ownership lock \(path) keeps being replaced; is another program removing it?")
    }

    /// The process id the owner wrote, if that process exists.
    private static func readOwner(_ fd: Int32) -> SessionOwner {
        var buffer = [UInt8](repeating: 0, count: 32)
        let count = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard count > 0,
              let pid = Int32(String(decoding: buffer.prefix(count), as: UTF8.self)
                  .trimmingCharacters(in: .whitespacesAndNewlines)),
              pid > 0, kill(pid, 0) == 0 || errno == EPERM
        else { return SessionOwner(processID: nil) }
        return SessionOwner(processID: pid)
    }

    static func running(_ database: String, session: Int64, owner: SessionOwner) -> RecordStoreError {
        let who = owner.processID.map { "in process \($0)" } ?? "in another process"
        return RecordStoreError(path: database, message: "session \(session) is running \(who)",
                                kind: .sessionRunning(session: session, processID: owner.processID))
    }

    private static func failure(_ database: String, _ message: String) -> RecordStoreError {
        RecordStoreError(path: database, message: message)
    }

    private static func errnoText() -> String { String(cString: strerror(errno)) }

    private static func openRetryingEINTR(_ path: String, _ flags: Int32, _ mode: mode_t) -> Int32 {
        var fd: Int32
        repeat { fd = open(path, flags, mode) } while fd < 0 && errno == EINTR
        return fd
    }

    /// close(2) is not retried on EINTR: on Linux the descriptor is released either way.
    static func closeDescriptor(_ fd: Int32) {
        _ = close(fd)
    }
}
