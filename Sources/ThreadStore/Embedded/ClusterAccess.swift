import Foundation

/// Who may reach the embedded cluster: the rules, kept apart from the file and process work in `EmbeddedPostgres`.
///
/// The cluster listens on no TCP port, only on a Unix socket in a `0700` folder (socket `0700` too), and every
/// connection authenticates with `scram-sha-256` and a password generated at initdb time. Another local account
/// therefore cannot connect as the superuser (which could read every chat or run programs with `COPY ... TO
/// PROGRAM`). `peer` authentication would not do: the service may run as root while connecting as `postgres`.
enum ClusterAccess {
    /// The whole `pg_hba.conf` of a private cluster.
    static let hostBasedAuthentication = """
        # Written by agent-service: the embedded cluster is private. It listens only on a Unix socket in a 0700
        # folder, and every connection needs the password stored next to the data folder.
        # TYPE  DATABASE  USER  METHOD
        local   all       all   scram-sha-256

        """

    /// `postgresql.conf` lines that keep the cluster off the network and its socket to its owner.
    static let privateSettings = ["listen_addresses = ''", "unix_socket_permissions = 0700"]

    /// Whether `postgresql.conf` text already has the private settings (clusters of earlier versions lack the
    /// socket permissions).
    static func hasPrivateSettings(_ configuration: String) -> Bool {
        let lines = configuration.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
        return privateSettings.allSatisfy(Set(lines).contains)
    }

    /// Whether any rule of `pg_hba.conf` text admits connections without a password (`trust`), as the clusters of
    /// earlier versions did for every local user and for TCP on loopback.
    static func allowsTrust(_ rules: String) -> Bool {
        for line in rules.split(whereSeparator: \.isNewline) {
            let content = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            if content.split(whereSeparator: { $0 == " " || $0 == "\t" }).contains("trust") { return true }
        }
        return false
    }

    /// A new password: 32 random bytes from the system's secure generator, as 64 hex digits (safe in a conninfo and
    /// in an SQL literal without quoting).
    static func newPassword() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<32).map { _ in
            let byte = UInt8.random(in: 0...255, using: &generator)
            return (byte < 16 ? "0" : "") + String(byte, radix: 16)
        }.joined()
    }

    /// Whether `text` read from the password file is a password this code wrote.
    static func isValidPassword(_ text: String) -> Bool {
        text.utf8.count == 64 && text.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
    }
}
