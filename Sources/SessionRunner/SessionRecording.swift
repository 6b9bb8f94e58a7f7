import FirmwareProtocol
import SMPPlan

// The session's port to its treatment record. The session decides what must be durable and when
// (a dot is claimed before it is sent, counted done only once its DOT_DONE is committed); the
// records module (SMPRecords, SQLite) decides how. The session never touches a database.

/// Where a session's record is kept.
public protocol SessionRecorder: Sendable {
    /// Creates the record of a new session, or, for `opening.resumeSessionID`, takes the session's
    /// ownership and settles the dots its record shows in flight from what the device reports
    /// (docs/records.md, "Resume"); then writes `opening.first` with it.
    func open(_ opening: RecordOpening) throws(RecordStoreError) -> OpenedRecord
    /// Writes one batch in one transaction (one fsync).
    func apply(_ batch: RecordBatch, session: Int64) throws(RecordStoreError)
    /// The session's account is final: another process may take the session.
    func release(session: Int64)
}

/// What the session knows when its record is opened: the plan, the device's handshake, the resume
/// asked for, and what goes into the record's first batch.
public struct RecordOpening: Sendable {
    public var plan: Plan
    public var hello: HelloReply
    /// The STATUS read in the handshake: what proves the fate of a dot in flight on resume.
    public var status: Status?
    public var devicePath: String
    public var resumeSessionID: Int64?
    public var ambiguousDecision: AmbiguousDecision?
    /// Device identity and the audit at start; the recorder adds the resume's settlements.
    public var first: RecordBatch
}

/// The record as opened: its id and, for a resume, what is left to do.
public struct OpenedRecord: Sendable {
    public var sessionID: Int64
    /// Plan dots still to inject (nil: all of them, a new session).
    public var remaining: [UInt32]?
    /// Dots done in earlier runs.
    public var doneIDs: [UInt32] = []
    public var skippedCount = 0
    /// Why the resume cannot go on without the operator's decision; nothing was written.
    public var refusal: String?

    public init(sessionID: Int64, remaining: [UInt32]? = nil, doneIDs: [UInt32] = [], skippedCount: Int = 0,
                refusal: String? = nil) {
        self.sessionID = sessionID
        self.remaining = remaining
        self.doneIDs = doneIDs
        self.skippedCount = skippedCount
        self.refusal = refusal
    }
}

/// Status of one plan dot in a session's record.
public enum DotStatus: String, Sendable, Codable, CaseIterable {
    /// Not sent yet (or returned by a fence: never injected).
    case planned
    /// Durably claimed for sending: it may be on the wire or in the device's queue. Written
    /// before the DOT frame, so no dot is ever injected without a record of it.
    case sent
    /// Confirmed by the device's DOT_DONE (or STATUS).
    case done
    /// Cut short by an e-stop, fault or abort: partially injected.
    case interrupted
    /// In flight when the device lost its memory or the host lost track: unknown.
    case ambiguous
    /// The operator chose not to inject it (recorded in the audit trail with the reason).
    case skipped
}

/// Why the records could not be written or read. Plain language, with the path.
public struct RecordStoreError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// Reading or writing failed, or the record holds what this smpctl cannot account for.
        case failed
        /// The database was written by a newer smpctl (a schema migration this one does not
        /// know): nothing is read or written.
        case newerSchema
        /// Another live process owns the session (`SessionOwnership`): nothing is written.
        case sessionRunning(session: Int64, processID: Int32?)
        /// The path names a device, a FIFO, a directory…: nothing was opened or written.
        case notADatabaseFile
    }
    public var path: String
    public var message: String
    public var kind: Kind
    public init(path: String, message: String, kind: Kind = .failed) {
        self.path = path
        self.message = message
        self.kind = kind
    }
    public var description: String { "treatment records at \(path): \(message)" }
}

/// Changes written together in one transaction.
public struct RecordBatch: Sendable {
    public struct Event: Sendable {
        public var kind: String
        public var detail: [String: String]
        public init(kind: String, detail: [String: String]) {
            self.kind = kind
            self.detail = detail
        }
    }
    public struct End: Sendable {
        public var state: String
        public var reason: String?
        public init(state: String, reason: String?) {
            self.state = state
            self.reason = reason
        }
    }
    /// The device a (resumed) session runs on, with its done_count at the handshake: the anchor
    /// for deciding, after a crash, which dots in flight the device completed.
    public struct Device: Sendable {
        public var firmwareID: String
        public var bootID: UInt32
        public var devicePath: String
        public var doneCount: UInt32
        public init(firmwareID: String, bootID: UInt32, devicePath: String, doneCount: UInt32) {
            self.firmwareID = firmwareID
            self.bootID = bootID
            self.devicePath = devicePath
            self.doneCount = doneCount
        }
    }
    public struct Done: Sendable {
        public var dotID: UInt32
        public var deviceDoneCount: UInt32?
        public init(dotID: UInt32, deviceDoneCount: UInt32?) {
            self.dotID = dotID
            self.deviceDoneCount = deviceDoneCount
        }
    }

    public var claims: [UInt32] = []
    public var done: [Done] = []
    public var statusChanges: [(DotStatus, [UInt32])] = []
    public var events: [Event] = []
    public var end: End?
    public var device: Device?

    public init() {}

    public var isEmpty: Bool {
        claims.isEmpty && done.isEmpty && statusChanges.isEmpty && events.isEmpty && end == nil && device == nil
    }
}
