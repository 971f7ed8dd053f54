import Foundation

/// Creates the embedded cluster's folders with mode `0700` and refuses folders another local user could control.
///
/// The fallback folders live at fixed names in shared, world-writable places (`/var/tmp`, `/tmp`) so every process
/// finds the same cluster; another account could create such a name first and then swap or read what the cluster
/// puts there. So a folder in a shared place is used only when it is a real directory (not a symlink) owned by us
/// or by the `postgres` OS user and writable by its owner alone; otherwise starting fails and names the folder.
enum PrivateDirectory {
    /// Makes `path` a private folder. `shared`: it sits in a world-writable place, so a pre-existing one is checked.
    /// `serverOwned`: when root, it is handed to the `postgres` OS user, which runs the server.
    static func prepare(_ path: String, shared: Bool, serverOwned: Bool) throws {
        let parent = (path as NSString).deletingLastPathComponent
        if !shared { try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true) }
        if mkdir(path, 0o700) != 0 && errno != EEXIST {
            throw failure("cannot create \(path) (\(String(cString: strerror(errno))))")
        }
        var info = stat()
        // In a shared place a symlink could point anywhere; the user's own folder may well be a symlink.
        guard (shared ? lstat(path, &info) : stat(path, &info)) == 0 else {
            throw failure("cannot inspect \(path) (\(String(cString: strerror(errno))))")
        }
        if info.st_mode & S_IFMT == S_IFLNK {
            throw failure("\(path) is a symbolic link; remove it so a private folder can be created there")
        }
        guard info.st_mode & S_IFMT == S_IFDIR else {
            throw failure("\(path) exists and is not a folder; remove it")
        }
        if shared {
            let postgres = getpwnam("postgres")?.pointee.pw_uid
            guard info.st_uid == geteuid() || info.st_uid == postgres else {
                throw failure(
                    "\(path) belongs to another user (uid \(info.st_uid)), who could tamper with the cluster; "
                        + "remove it and start again")
            }
            guard info.st_mode & 0o022 == 0 else {
                throw failure(
                    "\(path) is writable by other users (mode \(String(info.st_mode & 0o777, radix: 8))), who could "
                        + "tamper with the cluster; remove it and start again")
            }
        }
        guard chmod(path, 0o700) == 0 else { throw failure("cannot make \(path) private (mode 0700)") }
        if serverOwned && EmbeddedPostgres.isRoot { try EmbeddedPostgres.chownToPostgres(path) }
    }

    private static func failure(_ message: String) -> StoreError {
        StoreError(.embeddedPostgres, "local PostgreSQL: \(message)")
    }
}
