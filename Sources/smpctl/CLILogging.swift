import Foundation
import Logging

enum CLILogging {
    /// The CLI owns output: libraries log through this handler to stderr; quiet unless --verbose.
    static func logger(label: String, verbose: Bool) -> Logger {
        var logger = Logger(label: label) { label in StreamLogHandler.standardError(label: label) }
        logger.logLevel = verbose ? .debug : .error
        return logger
    }
}
