import Foundation

/// Finds an object key that occurs twice in one JSON object, which `JSONSerialization` silently resolves as "last
/// one wins". A gateway that sets `user_id` in a body it forwards could otherwise be bypassed by a client that sends
/// its own `user_id` second.
///
/// Runs after `JSONSerialization` accepted the text, so it only needs to follow the structure: a stack of objects
/// (the keys seen in each) and arrays, strings skipped with their escapes, and keys compared after unescaping
/// (`"user_id"` and `"user\u005fid"` are the same key).
enum JSONDuplicateKeys {
    /// The first repeated key, or nil.
    static func first(in bytes: [UInt8]) -> String? {
        enum Frame {
            case object(keys: Set<String>, expectingKey: Bool)
            case array
        }
        var stack: [Frame] = []
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "{"):
                stack.append(.object(keys: [], expectingKey: true))
            case UInt8(ascii: "["):
                stack.append(.array)
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                _ = stack.popLast()
            case UInt8(ascii: ","):
                if case .object(let keys, _) = stack.last { stack[stack.count - 1] = .object(keys: keys, expectingKey: true) }
            case UInt8(ascii: "\""):
                let start = index
                index += 1
                var escaped = false
                while index < bytes.count {
                    if bytes[index] == UInt8(ascii: "\\") {
                        escaped = true
                        index += 2
                        continue
                    }
                    if bytes[index] == UInt8(ascii: "\"") { break }
                    index += 1
                }
                if case .object(var keys, true) = stack.last {
                    let token = Array(bytes[start...min(index, bytes.count - 1)])
                    let key =
                        escaped
                        ? ((try? JSONSerialization.jsonObject(with: Data(token), options: .fragmentsAllowed)) as? String
                            ?? String(decoding: token, as: UTF8.self))
                        : String(decoding: token.dropFirst().dropLast(), as: UTF8.self)
                    if !keys.insert(key).inserted { return key }
                    stack[stack.count - 1] = .object(keys: keys, expectingKey: false)
                }
            default:
                break
            }
            index += 1
        }
        return nil
    }
}
