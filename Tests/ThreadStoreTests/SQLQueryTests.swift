import Foundation
import Testing

@testable import ThreadStore

@Suite struct SQLQueryTests {
    @Test("interpolated values become numbered binds, never SQL text")
    func interpolationBinds() {
        let id = UUID()
        let name = "Robert'); DROP TABLE threads;--"
        let query: SQLQuery = "SELECT * FROM threads WHERE user_id = \(id)::uuid AND id = \(name) LIMIT \(5)::int"
        #expect(query.sql == "SELECT * FROM threads WHERE user_id = $1::uuid AND id = $2 LIMIT $3::int")
        #expect(query.binds == [id.uuidString.lowercased(), name, "5"])
        #expect(!query.description.contains("DROP"))
    }

    @Test("nil interpolates as SQL NULL and fragments are renumbered")
    func nullsAndFragments() {
        let missing: String? = nil
        let fragment: SQLQuery = "a = \("x") AND b = \(missing)"
        let query: SQLQuery = "SELECT \(1)::int WHERE \(fragment: fragment) AND c = '$1'"
        #expect(query.sql == "SELECT $1::int WHERE a = $2 AND b = $3 AND c = '$1'")
        #expect(query.binds == ["1", "x", nil])
    }

    @Test("dates bind as UTC ISO 8601 with microseconds and arrays as array literals")
    func dateAndArrayText() {
        #expect(Date(timeIntervalSince1970: 1_700_000_000.25).sqlParameterText == "2023-11-14 22:13:20.250000+00")
        #expect(["a\"b", "c\\d"].sqlParameterText == #"{"a\"b","c\\d"}"#)
    }

    @Test("SHA-256 matches the standard test vectors")
    func sha256() {
        #expect(SHA256.hex(of: []) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex(of: Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let long = Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
        #expect(SHA256.hex(of: long) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    }

    @Test("errors describe themselves without user data; details only via String(reflecting:)")
    func errorDescriptions() {
        let error = StoreError(.server, "the server rejected the statement", sqlState: "22P02", detail: "secret text")
        #expect(!error.description.contains("secret"))
        #expect(String(reflecting: error).contains("secret"))
        #expect(StoreError(.server, "x", sqlState: "40001").isTransient)
        #expect(StoreError(.server, "x", sqlState: "57P01").isTransient)
        #expect(StoreError(.server, "x", sqlState: "08006").isTransient)
        #expect(!StoreError(.server, "x", sqlState: "23505").isTransient)
        #expect(StoreError(.connectionLost, "x").isTransient)
    }
}
