import SMPSystem
import SMPPlan
import SessionRunner
import Foundation
import GRDB
import GRDBSQLite

/// What is recorded when a session starts.
public struct SessionInfo: Sendable {
    public var planID: String
    public var planPath: String
    public var planSHA256: String
    public var sessionNumber: Int?
    public var sessionOf: Int?
    public var clientReference: String?
    public var operatorName: String
    public var machineID: String
    public var firmwareID: String?
    public var bootID: UInt32?
    public var devicePath: String

    public init(planID: String, planPath: String, planSHA256: String, sessionNumber: Int? = nil, sessionOf: Int? = nil,
                clientReference: String? = nil, operatorName: String, machineID: String, firmwareID: String? = nil,
                bootID: UInt32? = nil, devicePath: String) {
        self.planID = planID
        self.planPath = planPath
        self.planSHA256 = planSHA256
        self.sessionNumber = sessionNumber
        self.sessionOf = sessionOf
        self.clientReference = clientReference
        self.operatorName = operatorName
        self.machineID = machineID
        self.firmwareID = firmwareID
        self.bootID = bootID
        self.devicePath = devicePath
    }
}

public struct SessionSummary: Sendable, Codable, Hashable {
    public var id: Int64
    public var planID: String
    public var planPath: String
    public var planSHA256: String
    public var state: String
    public var done: Int
    public var total: Int
    public var startedAt: String
    public var endedAt: String?
    public var clientReference: String?
    public var operatorName: String
    public var firmwareID: String?
    public var bootID: UInt32?
    public var devicePath: String
    public var sessionNumber: Int?
    public var sessionOf: Int?
    public var reason: String?
}

public struct DotRecord: Sendable, Codable, Hashable {
    public var dotID: UInt32
    public var index: Int
    public var xMicrometres: Int32
    public var yMicrometres: Int32
    public var depthMicrometres: Int32
    public var dwellMicroseconds: Int32
    public var region: String?
    public var status: DotStatus
    /// Order in which dots were claimed for sending (latest claim), nil if never sent.
    public var sendOrder: Int64?
    /// The device's done_count when it confirmed this dot (the resume anchor).
    public var deviceDoneCount: Int64?
    public var updatedAt: String?
}

public struct AuditEvent: Sendable, Codable, Hashable {
    public var id: Int64
    public var sessionID: Int64?
    public var at: String
    public var kind: String
    public var detail: String
}

/// The treatment records: SQLite through GRDB, WAL, synchronous=FULL, schema migrations.
///
/// Sessions, per-dot status and an append-only audit trail (triggers refuse UPDATE and DELETE on
/// it). The tool never deletes records. Thread-safe: GRDB's `DatabaseQueue` serialises access.
///
/// Every write ends by checking that the file at `path` (and its `-wal`) is still the file this
/// store opened — same st_dev and st_ino, one stat each per commit: a database deleted, renamed
/// or replaced under a session fails the commit instead of recording into a file nobody will
/// read. A session's record is changed only by the store that owns it (`SessionOwnership`).
public final class RecordStore: Sendable {
    public let path: String
    /// `path` with symbolic links resolved: where SQLite keeps the -wal, and the lock files go.
    let resolvedPath: String
    private let db: DatabaseQueue
    /// The database file this store opened.
    private let identity: FileIdentity
    /// Its write-ahead log, once seen: it holds the committed pages until a checkpoint.
    private let walIdentity = Locked<FileIdentity?>(nil)
    /// The sessions this store owns, by id.
    private let owned = Locked<[Int64: SessionLock]>([:])

    /// The schema this smpctl reads and writes: the migrations it knows, the last one named as
    /// the version. A database with a migration not in this list was written by a newer smpctl.
    public static var schemaVersion: String { migrator.migrations.last ?? "none" }

    /// `$XDG_DATA_HOME/smpctl/records.sqlite`, or `~/.local/share/smpctl/records.sqlite`.
    public static var defaultPath: String {
        let env = ProcessInfo.processInfo.environment
        let base = env["XDG_DATA_HOME"].flatMap { $0.isEmpty ? nil : $0 }
            ?? (env["HOME"] ?? NSHomeDirectory()) + "/.local/share"
        return base + "/smpctl/records.sqlite"
    }

    /// Opens (creating with mode 0600 if needed) and migrates the database at `path`.
    public init(path: String) throws(RecordStoreError) {
        self.path = path
        let directory = (path as NSString).deletingLastPathComponent
        // SQLite is only ever given a regular file (or nothing, to create): handed a device it
        // writes a database header into it (`--db /dev/sdb`, or the applicator's tty), handed a
        // FIFO it can block. Looked at before anything is created or opened; links followed.
        if case .success(let info) = Sys.pathStatus(path), info.st_mode & S_IFMT != S_IFREG {
            let what = info.st_mode & S_IFMT == S_IFDIR ? "a directory" : RegularFile.kind(info.st_mode)
            throw RecordStoreError(path: path, message: "it is \(what), not a database file; nothing was opened or written",
                                   kind: .notADatabaseFile)
        }
        do {
            if !directory.isEmpty {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                        attributes: [.posixPermissions: 0o700])
            }
            if !FileManager.default.fileExists(atPath: path) {
                // Created 0600 before SQLite opens it: treatment records are personal data.
                let fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0o600)
                guard fd >= 0 else {
                    throw RecordStoreError(path: path, message: String(cString: strerror(errno)))
                }
                close(fd)
            }
            var configuration = Configuration()
            configuration.journalMode = .wal
            configuration.busyMode = .timeout(5)
            configuration.prepareDatabase { db in
                try db.execute(sql: "PRAGMA synchronous = FULL")
            }
            resolvedPath = Self.resolve(path)
            guard let opened = FileIdentity(path: path) else {
                throw RecordStoreError(path: path, message: "the database file vanished as it was opened")
            }
            db = try DatabaseQueue(path: path, configuration: configuration)
            // GRDB sets synchronous=NORMAL when it switches to WAL, after prepareDatabase: set FULL
            // again on the (only) connection, so every commit is fsynced before it returns.
            try db.writeWithoutTransaction { try $0.execute(sql: "PRAGMA synchronous = FULL") }
            try db.writeWithoutTransaction { db in try Self.refuseNewerSchema(db, path: path) }
            try Self.migrator.migrate(db)
            // The file SQLite opened is the one identified before it opened it.
            guard FileIdentity(path: path) == opened else {
                throw RecordStoreError(path: path, message: "the database file was replaced as it was opened")
            }
            identity = opened
            walIdentity.withLock { [resolvedPath] in $0 = FileIdentity(path: resolvedPath + "-wal") }
        } catch let error as RecordStoreError {
            throw error
        } catch {
            throw RecordStoreError(path: path, message: "\(error)")
        }
    }

    /// `path` with symbolic links resolved (SQLite resolves them too, and puts the -wal beside
    /// the target); `path` itself if it cannot be resolved.
    private static func resolve(_ path: String) -> String {
        guard let resolved = realpath(path, nil) else { return path }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    deinit {
        owned.withLock { locks in
            for lock in locks.values { lock.release() }
            locks.removeAll()
        }
    }

    /// A database with a migration this smpctl does not know was written by a newer smpctl: its
    /// tables may mean what this one cannot read, and anything written would not follow its rules.
    private static func refuseNewerSchema(_ db: Database, path: String) throws {
        let applied: [String]
        if try db.tableExists("grdb_migrations") {
            applied = try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations ORDER BY rowid")
        } else {
            applied = []
        }
        let known = migrator.migrations
        let unknown = applied.filter { !known.contains($0) }
        guard !unknown.isEmpty else { return }
        throw RecordStoreError(path: path, message: """
            written by a newer smpctl: the database is at schema \(applied.last!) (migrations \
            \(unknown.joined(separator: ", ")) unknown here), and this smpctl reads schema \(schemaVersion) \
            and older. Nothing was read or written; upgrade smpctl to use these records.
            """, kind: .newerSchema)
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE session (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    plan_id TEXT NOT NULL,
                    plan_path TEXT NOT NULL,
                    plan_sha256 TEXT NOT NULL,
                    session_number INTEGER,
                    session_of INTEGER,
                    client_reference TEXT,
                    operator TEXT NOT NULL,
                    machine_id TEXT NOT NULL,
                    firmware_id TEXT,
                    boot_id INTEGER,
                    device_path TEXT NOT NULL,
                    started_at TEXT NOT NULL,
                    ended_at TEXT,
                    state TEXT NOT NULL,
                    reason TEXT,
                    total INTEGER NOT NULL,
                    next_send_order INTEGER NOT NULL DEFAULT 1,
                    last_device_done_count INTEGER
                );
                CREATE TABLE dot (
                    session_id INTEGER NOT NULL REFERENCES session(id),
                    dot_id INTEGER NOT NULL,
                    idx INTEGER NOT NULL,
                    x_um INTEGER NOT NULL,
                    y_um INTEGER NOT NULL,
                    depth_um INTEGER NOT NULL,
                    dwell_us INTEGER NOT NULL,
                    region TEXT,
                    status TEXT NOT NULL CHECK (status IN ('planned','sent','done','interrupted','ambiguous','skipped')),
                    send_order INTEGER,
                    device_done_count INTEGER,
                    updated_at TEXT,
                    PRIMARY KEY (session_id, dot_id)
                ) WITHOUT ROWID;
                CREATE INDEX dot_by_status ON dot(session_id, status);
                CREATE TABLE audit (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    session_id INTEGER REFERENCES session(id),
                    at TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    detail TEXT NOT NULL
                );
                CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
                    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
                CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
                    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
                CREATE TRIGGER session_no_delete BEFORE DELETE ON session
                    BEGIN SELECT RAISE(ABORT, 'treatment records are never deleted'); END;
                CREATE TRIGGER dot_no_delete BEFORE DELETE ON dot
                    BEGIN SELECT RAISE(ABORT, 'treatment records are never deleted'); END;
                """)
        }
        return migrator
    }

    /// Now, as the records write every time: ISO 8601 in UTC to the millisecond, truncated
    /// ("2026-12-07T01:34:09.008Z"), the format `Date.formatted(.iso8601…)` gave, built from
    /// `clock_gettime(CLOCK_REALTIME)` and `gmtime_r`: the format style was a fiftieth of the
    /// host's CPU in a profile at an applicator's pace, when every dot was a commit (issue 15).
    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return timestamp(epochSeconds: Int(now.tv_sec), milliseconds: Int(now.tv_nsec) / 1_000_000)
    }

    /// `epochSeconds` (UTC) and `milliseconds` (0...999) in the records' format.
    static func timestamp(epochSeconds: Int, milliseconds: Int) -> String {
        var seconds = time_t(epochSeconds)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(format: "%04ld-%02ld-%02ldT%02ld:%02ld:%02ld.%03ldZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1,
                      Int(parts.tm_mday), Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), milliseconds)
    }

    /// One transaction, then the check that it went into the file at `path`: a commit into a
    /// file deleted, renamed or replaced meanwhile is a failed commit.
    private func write<T>(_ body: (Database) throws -> T) throws(RecordStoreError) -> T {
        let result: T
        do {
            result = try db.write(body)
        } catch let error as RecordStoreError {
            throw error
        } catch {
            throw RecordStoreError(path: path, message: "\(error)")
        }
        try checkFileIdentity()
        return result
    }

    private func read<T>(_ body: (Database) throws -> T) throws(RecordStoreError) -> T {
        do {
            return try db.read(body)
        } catch let error as RecordStoreError {
            throw error
        } catch {
            throw RecordStoreError(path: path, message: "\(error)")
        }
    }

    /// The database file and its -wal at the path are the ones this store writes to.
    private func checkFileIdentity() throws(RecordStoreError) {
        guard FileIdentity(path: path) == identity else {
            throw RecordStoreError(path: path, message: """
                the database file was deleted, renamed or replaced while in use: the file at this \
                path is not the one written to, so the last change is not recorded there
                """)
        }
        let wal = FileIdentity(path: resolvedPath + "-wal")
        let replaced = walIdentity.withLock { seen -> Bool in
            guard let known = seen else {
                seen = wal
                return false
            }
            return wal != known
        }
        if replaced {
            throw RecordStoreError(path: path, message: """
                its write-ahead log \(path)-wal was deleted or replaced while in use: the changes \
                committed to it since the last checkpoint are not recorded at this path
                """)
        }
    }

    // MARK: - Ownership

    /// Takes ownership of session `id` for this store (see `SessionOwnership`), or confirms it
    /// has it. Throws `.sessionRunning` when another live owner has it.
    public func takeOwnership(of id: Int64) throws(RecordStoreError) {
        try owned.withLock { (locks: inout [Int64: SessionLock]) throws(RecordStoreError) in
            guard locks[id] == nil else { return }
            locks[id] = try SessionOwnership.acquire(database: path, resolved: resolvedPath, session: id)
        }
    }

    /// Gives up the ownership of session `id` (its account is final). No effect if not owned.
    public func releaseOwnership(of id: Int64) {
        owned.withLock { $0.removeValue(forKey: id) }?.release()
    }

    /// Throws `.sessionRunning` if another live process (or another store) owns session `id`.
    public func refuseIfRunningElsewhere(_ id: Int64) throws(RecordStoreError) {
        guard owned.withLock({ $0[id] == nil }) else { return }
        if let owner = try SessionOwnership.owner(database: path, resolved: resolvedPath, session: id) {
            throw SessionOwnership.running(path, session: id, owner: owner)
        }
    }

    /// The live owner of session `id` (this process, if this store owns it); nil when none — for a
    /// session recorded `running`, that means its process died and `smpctl resume` continues it.
    public func liveOwner(of id: Int64) throws(RecordStoreError) -> SessionOwner? {
        if owned.withLock({ $0[id] != nil }) { return SessionOwner(processID: getpid()) }
        return try SessionOwnership.owner(database: path, resolved: resolvedPath, session: id)
    }

    /// This store's lock of session `id`, still at its path; or why the session may not be changed.
    private func ownership(of id: Int64) throws(RecordStoreError) -> SessionLock {
        guard let lock = owned.withLock({ $0[id] }) else {
            try refuseIfRunningElsewhere(id)
            throw RecordStoreError(path: path, message: "session \(id) is not owned by this process: its record was not changed")
        }
        guard lock.isStillAtPath else {
            throw RecordStoreError(path: path, message: """
                the ownership lock \(lock.path) of session \(id) was removed or replaced while in use: \
                another process could take the session, so its record is no longer changed from here
                """)
        }
        return lock
    }

    // MARK: - Writing

    /// Records a new session with every plan dot `planned`, owned by this store from before
    /// its record is visible to anyone. Returns its id.
    public func createSession(_ info: SessionInfo, dots: [PlanDot]) throws(RecordStoreError) -> Int64 {
        var taken: Int64?
        do {
            return try write { db in try createSession(db, info, dots: dots, taken: &taken) }
        } catch {
            if let taken { releaseOwnership(of: taken) }
            throw error
        }
    }

    private func createSession(_ db: Database, _ info: SessionInfo, dots: [PlanDot], taken: inout Int64?) throws -> Int64 {
        let now = Self.timestamp()
        try db.execute(sql: """
            INSERT INTO session (plan_id, plan_path, plan_sha256, session_number, session_of, client_reference,
                operator, machine_id, firmware_id, boot_id, device_path, started_at, state, total)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?)
            """, arguments: [info.planID, info.planPath, info.planSHA256, info.sessionNumber, info.sessionOf,
                             info.clientReference, info.operatorName, info.machineID, info.firmwareID,
                             info.bootID.map { Int64($0) }, info.devicePath, now, dots.count])
        let id = db.lastInsertedRowID
        // Owned before the transaction commits: no other process can see the session unowned.
        try takeOwnership(of: id)
        taken = id
        let insert = try db.makeStatement(sql: """
            INSERT INTO dot (session_id, dot_id, idx, x_um, y_um, depth_um, dwell_us, region, status)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'planned')
            """)
        for dot in dots {
            try insert.execute(arguments: [id, Int64(dot.id), dot.index, dot.xMicrometres, dot.yMicrometres,
                                           dot.depthMicrometres, dot.dwellMicroseconds, dot.region])
        }
        try Self.audit(db, session: id, kind: "session-started", detail: [
            "plan_id": info.planID, "plan_sha256": info.planSHA256, "device": info.devicePath,
            "operator": info.operatorName, "firmware": info.firmwareID ?? "",
        ])
        return id
    }

    /// Applies a batch of changes in ONE transaction (one fsync): the group commit.
    /// Only the session's owner may change its record.
    public func apply(_ batch: RecordBatch, session id: Int64) throws(RecordStoreError) {
        guard !batch.isEmpty else { return }
        _ = try ownership(of: id)
        try write { db in
            let now = Self.timestamp()
            // Rows are changed by `UPDATE … FROM (VALUES …)`, up to 256 per statement run: the
            // CHECK on `status` (an IN list) makes SQLite build a temporary b-tree at every run of
            // a statement that sets it — 14 allocations and most of the records' CPU per dot when
            // it ran once per row (issue 16). Cached statements, stepped through the C API.
            for (status, dotIDs) in batch.statusChanges {
                _ = try Self.updateMany(db, count: dotIDs.count, width: 1, sql: { values in """
                    UPDATE dot SET status = ?3, updated_at = ?1 FROM (VALUES \(values)) AS v
                    WHERE dot.session_id = ?2 AND dot.dot_id = v.column1
                    """ }, bindChunk: { update, _ in
                        try update.bind(1, now)
                        try update.bind(2, id)
                        try update.bind(3, status.rawValue)
                    }, bindRow: { update, row, parameter in try update.bind(parameter, Int64(dotIDs[row])) })
            }
            if !batch.claims.isEmpty {
                let first = try Int64.fetchOne(db.cachedStatement(sql: "SELECT next_send_order FROM session WHERE id = ?"),
                                               arguments: [id]) ?? 1
                let claims = batch.claims
                // Only planned dots may be claimed: if any is not, the batch's claims are undone
                // and done again row by row, which names the first such dot and fails the commit.
                var allPlanned = false
                try db.inSavepoint {
                    let changed = try Self.updateMany(db, count: claims.count, width: 2, sql: { values in """
                        UPDATE dot SET status = 'sent', send_order = ?3 + v.column2, updated_at = ?1
                        FROM (VALUES \(values)) AS v
                        WHERE dot.session_id = ?2 AND dot.dot_id = v.column1 AND dot.status = 'planned'
                        """ }, bindChunk: { update, start in
                            try update.bind(1, now)
                            try update.bind(2, id)
                            try update.bind(3, first + Int64(start))
                        }, bindRow: { update, row, parameter in
                            try update.bind(parameter, Int64(claims[row]))
                            try update.bind(parameter + 1, Int64(row))
                        })
                    allPlanned = changed == claims.count
                    return allPlanned ? .commit : .rollback
                }
                if !allPlanned {
                    let claim = try RowUpdate(db, """
                        UPDATE dot SET status = 'sent', send_order = ?1, updated_at = ?2
                        WHERE session_id = ?3 AND dot_id = ?4 AND status = 'planned'
                        """)
                    try claim.bind(2, now)
                    try claim.bind(3, id)
                    for (offset, dotID) in claims.enumerated() {
                        try claim.bind(1, first + Int64(offset))
                        try claim.bind(4, Int64(dotID))
                        guard try claim.run() == 1 else {
                            throw RecordStoreError(path: path, message: "dot \(dotID) claimed for sending but not planned")
                        }
                    }
                }
                try db.cachedStatement(sql: "UPDATE session SET next_send_order = ? WHERE id = ?")
                    .execute(arguments: [first + Int64(claims.count), id])
            }
            if !batch.done.isEmpty {
                let done = batch.done
                // Only dots in flight may be done: as for the claims, row by row if any is not.
                var allInFlight = false
                try db.inSavepoint {
                    let changed = try Self.updateMany(db, count: done.count, width: 2, sql: { values in """
                        UPDATE dot SET status = 'done', device_done_count = v.column2, updated_at = ?1
                        FROM (VALUES \(values)) AS v
                        WHERE dot.session_id = ?2 AND dot.dot_id = v.column1 AND dot.status IN ('sent', 'ambiguous')
                        """ }, bindChunk: { update, _ in
                            try update.bind(1, now)
                            try update.bind(2, id)
                        }, bindRow: { update, row, parameter in
                            try update.bind(parameter, Int64(done[row].dotID))
                            if let count = done[row].deviceDoneCount {
                                try update.bind(parameter + 1, Int64(count))
                            } else {
                                try update.bindNull(parameter + 1)
                            }
                        })
                    allInFlight = changed == done.count
                    return allInFlight ? .commit : .rollback
                }
                if !allInFlight {
                    let update = try RowUpdate(db, """
                        UPDATE dot SET status = 'done', device_done_count = ?1, updated_at = ?2
                        WHERE session_id = ?3 AND dot_id = ?4 AND status IN ('sent', 'ambiguous')
                        """)
                    try update.bind(2, now)
                    try update.bind(3, id)
                    for entry in done {
                        if let count = entry.deviceDoneCount { try update.bind(1, Int64(count)) } else { try update.bindNull(1) }
                        try update.bind(4, Int64(entry.dotID))
                        guard try update.run() == 1 else {
                            throw RecordStoreError(path: path, message: "dot \(entry.dotID) reported done but was not in flight")
                        }
                    }
                }
                if let last = batch.done.last?.deviceDoneCount {
                    // Cached, as every statement of the per-dot path: parsing it again was a fifth
                    // of a slow stream's commit (issue 15, host CPU at 10 dots/s).
                    try db.cachedStatement(sql: "UPDATE session SET last_device_done_count = ? WHERE id = ?")
                        .execute(arguments: [Int64(last), id])
                }
            }
            for event in batch.events {
                try Self.audit(db, session: id, kind: event.kind, detail: event.detail)
            }
            if let end = batch.end {
                try db.execute(sql: "UPDATE session SET state = ?, reason = ?, ended_at = ? WHERE id = ?",
                               arguments: [end.state, end.reason, end.state == "running" ? nil : now, id])
            }
            if let boot = batch.device {
                try db.execute(sql: "UPDATE session SET firmware_id = ?, boot_id = ?, device_path = ?, last_device_done_count = ? WHERE id = ?",
                               arguments: [boot.firmwareID, Int64(boot.bootID), boot.devicePath, Int64(boot.doneCount), id])
            }
        }
    }

    /// The row counts a multi-row UPDATE is prepared for: a chunk is padded up to the next one
    /// with rows naming dot id 0, which no plan has (ids are 1...4294967295), so no more than
    /// four statements of each kind are ever prepared and cached. 256 rows: 515 parameters,
    /// far under SQLite's limit.
    private static let updateSizes = [4, 16, 64, 256]

    /// "(?4),(?5),…" or "(?4,?5),(?6,?7),…" for each of `updateSizes`: built once.
    private static let valueLists: [[String]] = [1, 2].map { width in
        updateSizes.map { rows in
            (0..<rows).map { row in
                "(" + (0..<width).map { "?\(4 + row * width + $0)" }.joined(separator: ",") + ")"
            }.joined(separator: ",")
        }
    }

    /// Runs `sql(values)` once per chunk of up to 256 rows, `values` being the chunk's VALUES
    /// list with `width` parameters a row from ?4 (padding rows: dot id 0, then NULLs); ?1–?3 are
    /// the chunk's (`bindChunk`, given the chunk's first row). Returns the rows changed.
    private static func updateMany(_ db: Database, count: Int, width: Int, sql: (String) -> String,
                                   bindChunk: (RowUpdate, Int) throws -> Void,
                                   bindRow: (RowUpdate, Int, Int32) throws -> Void) throws -> Int {
        var changed = 0
        var start = 0
        while start < count {
            let rows = min(updateSizes.last!, count - start)
            let size = updateSizes.firstIndex { $0 >= rows }!
            let update = try RowUpdate(db, sql(valueLists[width - 1][size]))
            try bindChunk(update, start)
            for row in 0..<updateSizes[size] {
                let parameter = Int32(4 + row * width)
                if row < rows {
                    try bindRow(update, start + row, parameter)
                } else {
                    try update.bind(parameter, 0)
                    for extra in 1..<Int32(width) { try update.bindNull(parameter + extra) }
                }
            }
            changed += try update.run()
            start += rows
        }
        return changed
    }

    private static func audit(_ db: Database, session: Int64?, kind: String, detail: [String: String]) throws {
        let json = (try? JSONSerialization.data(withJSONObject: detail, options: [.sortedKeys]))
            .map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        try db.cachedStatement(sql: "INSERT INTO audit (session_id, at, kind, detail) VALUES (?, ?, ?, ?)")
            .execute(arguments: [session, timestamp(), kind, json])
    }

    // MARK: - Reading

    public func sessions(limit: Int = 50) throws(RecordStoreError) -> [SessionSummary] {
        try read { db in
            try Row.fetchAll(db, sql: Self.summarySQL + " ORDER BY s.id DESC LIMIT ?", arguments: [limit]).map(Self.summary)
        }
    }

    /// Sessions newest first, of one client (`clientReference`, exactly) and/or one course: the
    /// plans `smpctl design` makes for a course are called COURSE-s1, COURSE-s2, … (or COURSE).
    public func sessions(limit: Int, clientReference: String?, course: String?) throws(RecordStoreError) -> [SessionSummary] {
        let prefix = course.map { $0 + "-s" }
        let rows = try read { db in
            try Row.fetchAll(db, sql: Self.summarySQL + """
                 WHERE (?1 IS NULL OR s.client_reference = ?1)
                   AND (?2 IS NULL OR s.plan_id = ?2 OR substr(s.plan_id, 1, length(?3)) = ?3)
                 ORDER BY s.id DESC
                """, arguments: [clientReference, course, prefix]).map(Self.summary)
        }
        return rows.filter { summary in
            guard let course, let prefix, summary.planID != course else { return true }
            // COURSE-s12, not COURSE-second-opinion: the rest is a session number.
            let number = summary.planID.dropFirst(prefix.count)
            return !number.isEmpty && number.allSatisfy(\.isASCII) && number.allSatisfy(\.isNumber)
        }.prefix(limit).map { $0 }
    }

    public func session(id: Int64) throws(RecordStoreError) -> SessionSummary? {
        try read { db in
            try Row.fetchOne(db, sql: Self.summarySQL + " WHERE s.id = ?", arguments: [id]).map(Self.summary)
        }
    }

    public func dots(session id: Int64) throws(RecordStoreError) -> [DotRecord] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM dot WHERE session_id = ? ORDER BY idx", arguments: [id]).map { row in
                DotRecord(dotID: UInt32(row["dot_id"] as Int64), index: row["idx"], xMicrometres: row["x_um"],
                          yMicrometres: row["y_um"], depthMicrometres: row["depth_um"], dwellMicroseconds: row["dwell_us"],
                          region: row["region"], status: try Self.status(row, session: id),
                          sendOrder: row["send_order"], deviceDoneCount: row["device_done_count"],
                          updatedAt: row["updated_at"])
            }
        }
    }

    /// A dot's status as recorded; a value this smpctl does not know is an error, never a guess.
    private static func status(_ row: Row, session id: Int64) throws -> DotStatus {
        let text: String = row["status"]
        guard let status = DotStatus(rawValue: text) else {
            throw UnknownStatus(message: """
                session \(id), dot \(row["dot_id"] as Int64): unknown status '\(text)' in the record \
                (written by another program or a newer smpctl?); nothing was read from it
                """)
        }
        return status
    }

    private struct UnknownStatus: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }

    public func events(session id: Int64) throws(RecordStoreError) -> [AuditEvent] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM audit WHERE session_id = ? ORDER BY id", arguments: [id]).map { row in
                AuditEvent(id: row["id"], sessionID: row["session_id"], at: row["at"], kind: row["kind"], detail: row["detail"])
            }
        }
    }

    /// The device done_count recorded with the last confirmed dot of the session.
    public func lastDeviceDoneCount(session id: Int64) throws(RecordStoreError) -> Int64? {
        try read { db in
            try Int64.fetchOne(db, sql: "SELECT last_device_done_count FROM session WHERE id = ?", arguments: [id])
        }
    }

    /// `PRAGMA synchronous` of the connection (2 = FULL), for the durability test.
    func synchronousMode() throws -> Int {
        try db.read { try Int.fetchOne($0, sql: "PRAGMA synchronous") ?? -1 }
    }

    /// For tests of the append-only guarantee: runs raw SQL.
    func executeRaw(_ sql: String) throws {
        try db.write { db in try db.execute(sql: sql) }
    }

    private static let summarySQL = """
        SELECT s.*, (SELECT COUNT(*) FROM dot d WHERE d.session_id = s.id AND d.status = 'done') AS done_count
        FROM session s
        """

    private static func summary(_ row: Row) -> SessionSummary {
        SessionSummary(
            id: row["id"], planID: row["plan_id"], planPath: row["plan_path"], planSHA256: row["plan_sha256"],
            state: row["state"], done: row["done_count"], total: row["total"], startedAt: row["started_at"],
            endedAt: row["ended_at"], clientReference: row["client_reference"], operatorName: row["operator"],
            firmwareID: row["firmware_id"], bootID: (row["boot_id"] as Int64?).map { UInt32(truncatingIfNeeded: $0) },
            devicePath: row["device_path"], sessionNumber: row["session_number"], sessionOf: row["session_of"],
            reason: row["reason"])
    }
}

/// A cached UPDATE stepped through SQLite's C API: GRDB's `execute(arguments:)` builds and boxes
/// an argument array per run (issue 16). Bindings persist across runs (`sqlite3_reset` keeps
/// them), so what is the same for a whole batch is bound once. Only inside the store's write
/// transaction, on its connection.
private struct RowUpdate {
    private let statement: OpaquePointer
    private let connection: OpaquePointer?
    private let sql: String

    init(_ db: Database, _ sql: String) throws {
        let cached = try db.cachedStatement(sql: sql)
        statement = cached.sqliteStatement
        connection = db.sqliteConnection
        self.sql = sql
        sqlite3_reset(statement)
        sqlite3_clear_bindings(statement)
    }

    func bind(_ index: Int32, _ value: Int64) throws {
        try check(sqlite3_bind_int64(statement, index, value))
    }

    func bind(_ index: Int32, _ value: String) throws {
        // SQLITE_TRANSIENT: SQLite copies the text (a temporary C string).
        try check(sqlite3_bind_text(statement, index, value, -1,
                                    unsafeBitCast(OpaquePointer(bitPattern: -1), to: sqlite3_destructor_type.self)))
    }

    func bindNull(_ index: Int32) throws {
        try check(sqlite3_bind_null(statement, index))
    }

    /// Steps the statement once; the rows it changed.
    func run() throws -> Int {
        let code = sqlite3_step(statement)
        sqlite3_reset(statement)
        guard code == SQLITE_DONE else { throw failure(code) }
        return Int(sqlite3_changes(connection))
    }

    private func check(_ code: Int32) throws {
        guard code == SQLITE_OK else { throw failure(code) }
    }

    private func failure(_ code: Int32) -> DatabaseError {
        DatabaseError(resultCode: ResultCode(rawValue: code),
                      message: connection.map { String(cString: sqlite3_errmsg($0)) }, sql: sql)
    }
}
