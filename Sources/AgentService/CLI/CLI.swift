import Foundation
import Logging

/// Helpers shared by the subcommands.
enum CLI {
    /// Prints one line to standard error and exits non-zero: how every configuration or setup problem ends.
    static func fail(_ message: String, code: Int32 = 1) -> Never {
        FileHandle.standardError.write(Data("agent-service: \(message)\n".utf8))
        exit(code)
    }

    /// Logs go to standard error so standard output stays clean for data (replay, threads --format json).
    static func bootstrapLogging(level: Logger.Level) -> Logger {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: "agent-service")
        logger.logLevel = level
        return logger
    }
}
