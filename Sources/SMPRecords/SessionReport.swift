import SessionRunner
import Foundation

/// A recorded session as a report: machine-readable JSON, an SVG dot map coloured by status, and
/// an HTML page (summary, dot map, timeline of events, link metrics; drawn by SMPRender). Built
/// from the records only.
public struct SessionReport: Sendable {
    public let session: SessionSummary
    public let dots: [DotRecord]
    public let events: [AuditEvent]

    public init(store: RecordStore, sessionID: Int64) throws {
        guard let session = try store.session(id: sessionID) else {
            throw RecordStoreError(path: store.path, message: "no session \(sessionID)")
        }
        self.session = session
        self.dots = try store.dots(session: sessionID)
        self.events = try store.events(session: sessionID)
    }

    public var counts: [DotStatus: Int] {
        var counts: [DotStatus: Int] = [:]
        for dot in dots { counts[dot.status, default: 0] += 1 }
        return counts
    }

    // MARK: JSON

    public func json() throws -> Data {
        struct Document: Encodable {
            var format = "smp-session-report/1"
            var session: SessionSummary
            var counts: [String: Int]
            var dots: [DotRecord]
            var events: [AuditEvent]
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        let counts = Dictionary(uniqueKeysWithValues: self.counts.map { ($0.key.rawValue, $0.value) })
        return try encoder.encode(Document(session: session, counts: counts, dots: dots, events: events))
    }

    /// The audit trail as NDJSON, one event per line.
    public func auditNDJSON() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        var out = Data()
        for event in events {
            out.append(try encoder.encode(event))
            out.append(0x0A)
        }
        return out
    }
}
