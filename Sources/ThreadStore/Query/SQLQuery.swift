public import Foundation

/// A SQL statement with its parameters, built so that interpolated values become bound parameters.
///
/// ```swift
/// let query: SQLQuery = "SELECT title FROM threads WHERE user_id = \(userID)::uuid AND id = \(threadID)"
/// // sql: "SELECT title FROM threads WHERE user_id = $1::uuid AND id = $2", binds: [userID, threadID]
/// ```
/// Every value travels as a text-format parameter of an unnamed statement, so add casts (`$1::uuid`) where the
/// server cannot infer the type. Splicing raw SQL text needs the explicitly named `init(unsafeSQL:)` or
/// `\(unsafeRaw:)`.
public struct SQLQuery: Sendable, ExpressibleByStringInterpolation, CustomStringConvertible {
    /// The statement text with `$1`, `$2`, ... placeholders.
    public private(set) var sql: String
    /// The parameters in placeholder order, in Postgres text format; `nil` is SQL NULL.
    public private(set) var binds: [String?]

    /// A statement from raw text. Never build `sql` from untrusted input.
    public init(unsafeSQL sql: String, binds: [String?] = []) {
        self.sql = sql
        self.binds = binds
    }

    public init(stringLiteral value: String) {
        self.init(unsafeSQL: value)
    }

    public init(stringInterpolation: StringInterpolation) {
        self.init(unsafeSQL: stringInterpolation.sql, binds: stringInterpolation.binds)
    }

    /// The statement text only; parameters are left out so the description is safe to log.
    public var description: String { sql }

    /// Collects literal SQL and turns each interpolated value into the next `$n` placeholder.
    public struct StringInterpolation: StringInterpolationProtocol {
        var sql = ""
        var binds: [String?] = []

        public init(literalCapacity: Int, interpolationCount: Int) {
            sql.reserveCapacity(literalCapacity + interpolationCount * 3)
            binds.reserveCapacity(interpolationCount)
        }

        public mutating func appendLiteral(_ literal: String) { sql += literal }

        /// Binds `value` as the next parameter.
        public mutating func appendInterpolation(_ value: some SQLParameter) {
            binds.append(value.sqlParameterText)
            sql += "$\(binds.count)"
        }

        /// Binds `value` as the next parameter, or SQL NULL when it is `nil`.
        public mutating func appendInterpolation(_ value: (some SQLParameter)?) {
            binds.append(value?.sqlParameterText)
            sql += "$\(binds.count)"
        }

        /// Splices another query in, renumbering its placeholders after the ones so far.
        public mutating func appendInterpolation(fragment: SQLQuery) {
            sql += SQLQuery.shiftPlaceholders(fragment.sql, by: binds.count)
            binds += fragment.binds
        }

        /// Splices raw SQL text (an identifier or keyword chosen by the program, never user input).
        public mutating func appendInterpolation(unsafeRaw text: String) { sql += text }
    }
}

extension SQLQuery {
    /// Rewrites `$n` placeholders outside single quotes to `$(n + offset)`.
    static func shiftPlaceholders(_ sql: String, by offset: Int) -> String {
        guard offset > 0 else { return sql }
        var output = ""
        var characters = Array(sql)[...]
        var inQuote = false
        while let character = characters.popFirst() {
            if character == "'" { inQuote.toggle() }
            if character == "$", !inQuote, let first = characters.first, first.isASCII, first.isNumber {
                var digits = ""
                while let next = characters.first, next.isASCII, next.isNumber {
                    digits.append(next)
                    characters.removeFirst()
                }
                output += "$\(Int(digits)! + offset)"
            } else {
                output.append(character)
            }
        }
        return output
    }
}

/// A value that can be bound as a text-format query parameter.
public protocol SQLParameter: Sendable {
    /// The value in Postgres text input format.
    var sqlParameterText: String { get }
}

extension String: SQLParameter {
    public var sqlParameterText: String { self }
}

extension Substring: SQLParameter {
    public var sqlParameterText: String { String(self) }
}

extension Int: SQLParameter {
    public var sqlParameterText: String { String(self) }
}

extension Int64: SQLParameter {
    public var sqlParameterText: String { String(self) }
}

extension Int32: SQLParameter {
    public var sqlParameterText: String { String(self) }
}

extension Bool: SQLParameter {
    public var sqlParameterText: String { self ? "true" : "false" }
}

extension Double: SQLParameter {
    public var sqlParameterText: String { "\(self)" }
}

extension UUID: SQLParameter {
    public var sqlParameterText: String { uuidString.lowercased() }
}

extension Date: SQLParameter {
    /// ISO 8601 in UTC with microseconds, which `timestamptz` parses under any `DateStyle`.
    public var sqlParameterText: String {
        let seconds = timeIntervalSince1970
        var whole = Int(seconds.rounded(.down))
        var micros = Int(((seconds - Double(whole)) * 1_000_000).rounded())
        if micros >= 1_000_000 {
            whole += 1
            micros -= 1_000_000
        }
        var time = time_t(whole)
        var parts = tm()
        gmtime_r(&time, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        let microText = String(micros)
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))"
            + " \(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2))."
            + String(repeating: "0", count: 6 - microText.count) + microText + "+00"
    }
}

extension Array: SQLParameter where Element: SQLParameter {
    /// A Postgres array literal (`{"a","b"}`); cast it, e.g. `\(ids)::uuid[]`.
    public var sqlParameterText: String {
        let items = map { element -> String in
            var quoted = "\""
            for character in element.sqlParameterText {
                if character == "\"" || character == "\\" { quoted.append("\\") }
                quoted.append(character)
            }
            return quoted + "\""
        }
        return "{" + items.joined(separator: ",") + "}"
    }
}
