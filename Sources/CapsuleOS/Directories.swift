#if canImport(Glibc)
import Glibc
#endif

/// Directories on the host: listing, making, resolving and removing them (what `capsule env`
/// needs to keep its environments).
extension OS {
    /// The names in a directory, without `.` and `..`, sorted.
    public static func directoryEntries(_ path: String) throws(SystemError) -> [String] {
        let fd = try retrying("open \(path)") { Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        defer { close(fd) }
        return try directoryNames(fd)
    }

    /// Whether `path` is a directory itself, not a symbolic link to one.
    public static func isDirectoryNotLink(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    /// `path` with every symbolic link resolved, or nil when it does not exist.
    public static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// The working directory, or nil when it cannot be named (removed, say).
    public static func currentDirectory() -> String? {
        guard let path = getcwd(nil, 0) else { return nil }
        defer { free(path) }
        return String(cString: path)
    }

    public static func processID() -> Int32 { getpid() }

    /// The home directory in the passwd database, for when HOME is unset.
    public static func homeDirectory() -> String? {
        guard let entry = getpwuid(getuid()), let home = entry.pointee.pw_dir else { return nil }
        return String(cString: home)
    }

    /// Makes `path` and any missing parents (as `mkdir -p`).
    public static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws(SystemError) {
        var prefix = ""
        for part in path.split(separator: "/") {
            prefix += "/" + part
            if mkdir(prefix, mode) != 0 && errno != EEXIST { throw SystemError("mkdir \(prefix)", errno: errno) }
        }
        guard isDirectory(path) else { throw SystemError("mkdir \(path)", errno: ENOTDIR) }
    }

    /// Writes `bytes` to a new file at `path` (replacing one there), mode 0644.
    public static func writeFile(_ path: String, _ bytes: [UInt8]) throws(SystemError) {
        let fd = try open(path, flags: O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW)
        defer { close(fd) }
        try writeAll(fd, bytes)
    }

    /// Removes `path` and everything below it (as `rm -rf`), never following a symbolic link: a
    /// link inside is removed, not what it points to. Nothing there is not an error.
    public static func removeTree(_ path: String) throws(SystemError) {
        var info = stat()
        guard lstat(path, &info) == 0 else {
            if errno == ENOENT { return }
            throw SystemError("lstat \(path)", errno: errno)
        }
        guard (info.st_mode & S_IFMT) == S_IFDIR else {
            _ = try retrying("unlink \(path)") { unlink(path) }
            return
        }
        let fd = try retrying("open \(path)") { Glibc.open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        defer { close(fd) }
        try removeContents(of: fd)
        _ = try retrying("rmdir \(path)") { rmdir(path) }
    }

    /// Empties the directory open as `fd`, depth first, links removed as themselves.
    private static func removeContents(of fd: Int32) throws(SystemError) {
        for name in try directoryNames(fd) {
            var info = stat()
            let isDirectory = fstatat(fd, name, &info, AT_SYMLINK_NOFOLLOW) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
            if isDirectory {
                let child = try retrying("open \(name)") { openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
                defer { close(child) }
                try removeContents(of: child)
            }
            try remove(name, in: fd, isDirectory: isDirectory)
        }
    }
}
