import Foundation
import Logging
import SMPSystem

enum CLILogging {
    /// The CLI owns output: libraries log through this handler to stderr; quiet unless --verbose.
    static func logger(label: String, verbose: Bool) -> Logger {
        var logger = Logger(label: label) { label in CLILogHandler(label: label) }
        logger.logLevel = verbose ? .debug : .error
        return logger
    }

    /// While the session's progress line is live on the terminal that standard error also goes
    /// to, log lines are printed above it through this (set by `RunReporter`), never into the
    /// middle of it; nil: straight to standard error.
    static let aboveLiveLine = Locked<(@Sendable (String) -> Void)?>(nil)

    /// One log line: time (UTC, as in the records), level, label, message, metadata.
    static func format(_ event: LogEvent, label: String, metadata: Logger.Metadata) -> String {
        var merged = metadata
        if let more = event.metadata { merged.merge(more) { $1 } }
        let fields = merged.sorted { $0.key < $1.key }.map { " \($0.key)=\($0.value)" }.joined()
        let time = Date().formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true).timeZone(separator: .omitted))
        return "\(time) \(event.level) \(label): \(event.message)\(fields)"
    }
}

/// swift-log's handler for the CLI: `StreamLogHandler`'s job, routed around the progress line.
struct CLILogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var metadata = self.metadata
        if let provided = metadataProvider?.get() { metadata.merge(provided) { $1 } }
        let text = CLILogging.format(event, label: label, metadata: metadata)
        if let above = CLILogging.aboveLiveLine.withLock({ $0 }) {
            above(text)
        } else {
            Output.err(text)
        }
    }
}
