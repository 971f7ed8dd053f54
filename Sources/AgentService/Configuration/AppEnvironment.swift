import Foundation

/// The process environment with a `.env` file's values underneath it.
///
/// Real environment variables win over `.env` entries, as with docker-compose and python-dotenv. The `.env` file is
/// read from the working directory; `KEY=value`, `export KEY=value`, `#` comments and single- or double-quoted
/// values are understood. A malformed line is reported with its line number rather than silently ignored.
struct AppEnvironment: Sendable {
    private(set) var values: [String: String]

    init(values: [String: String]) {
        self.values = values
    }

    subscript(key: String) -> String? {
        guard let value = values[key]?.trimmingCharacters(in: .whitespaces), !value.isEmpty else { return nil }
        return value
    }

    /// The current process environment layered over `./.env` (if present).
    static func current(dotEnvPath: String = ".env") throws -> AppEnvironment {
        var merged: [String: String] = [:]
        if let text = try? String(contentsOfFile: dotEnvPath, encoding: .utf8) {
            merged = try parseDotEnv(text, source: dotEnvPath)
        }
        for (key, value) in ProcessInfo.processInfo.environment { merged[key] = value }
        return AppEnvironment(values: merged)
    }

    static func parseDotEnv(_ text: String, source: String) throws -> [String: String] {
        var result: [String: String] = [:]
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.hasSuffix("\r") { line.removeLast() }
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("export ") { line = String(line.dropFirst(7)).trimmingCharacters(in: .whitespaces) }
            guard let eq = line.firstIndex(of: "=") else {
                throw ConfigurationError("\(source):\(index + 1): expected KEY=value")
            }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces)
            guard !key.isEmpty, key.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
                throw ConfigurationError("\(source):\(index + 1): invalid variable name '\(key)'")
            }
            var value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            if let quote = value.first, quote == "\"" || quote == "'", value.count >= 2, value.last == quote {
                value = String(value.dropFirst().dropLast())
                if quote == "\"" { value = value.replacingOccurrences(of: "\\n", with: "\n") }
            } else if let hash = value.range(of: " #") {
                value = value[..<hash.lowerBound].trimmingCharacters(in: .whitespaces)
            }
            result[key] = value
        }
        return result
    }
}

/// A configuration problem, reported to the operator as one line before anything starts.
struct ConfigurationError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
