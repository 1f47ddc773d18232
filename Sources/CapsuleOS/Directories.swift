#if canImport(Glibc)
import Glibc
#endif

/// Directories on the host: listing, making, resolving and removing them (what `capsule env`
/// needs to keep its environments).
extension OS {
    /// The names in a directory, without `.` and `..`.
    public static func directoryEntries(_ path: String) throws(SystemError) -> [String] {
        guard let stream = opendir(path) else { throw SystemError("opendir \(path)", errno: errno) }
        defer { closedir(stream) }
        var names: [String] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
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

    /// The working directory, or "/" when it cannot be named.
    public static func currentDirectory() -> String {
        guard let path = getcwd(nil, 0) else { return "/" }
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
        if (info.st_mode & S_IFMT) == S_IFDIR {
            let fd = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            guard fd >= 0 else { throw SystemError("open \(path)", errno: errno) }
            try removeContents(of: fd, path: path)
            guard rmdir(path) == 0 else { throw SystemError("rmdir \(path)", errno: errno) }
        } else if unlink(path) != 0 {
            throw SystemError("unlink \(path)", errno: errno)
        }
    }

    /// Empties the directory open as `fd` (and closes it).
    private static func removeContents(of fd: Int32, path: String) throws(SystemError) {
        guard let stream = fdopendir(fd) else {
            let code = errno
            close(fd)
            throw SystemError("fdopendir \(path)", errno: code)
        }
        defer { closedir(stream) }
        var names: [(String, Bool)] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard name != "." && name != ".." else { continue }
            var isDirectory = entry.pointee.d_type == UInt8(DT_DIR)
            if entry.pointee.d_type == UInt8(DT_UNKNOWN) { // some file systems do not say: ask
                var info = stat()
                isDirectory = fstatat(fd, name, &info, AT_SYMLINK_NOFOLLOW) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
            }
            names.append((name, isDirectory))
        }
        for (name, isDirectory) in names {
            if isDirectory {
                let child = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard child >= 0 else { throw SystemError("open \(path)/\(name)", errno: errno) }
                try removeContents(of: child, path: path + "/" + name)
                guard unlinkat(fd, name, AT_REMOVEDIR) == 0 else { throw SystemError("rmdir \(path)/\(name)", errno: errno) }
            } else if unlinkat(fd, name, 0) != 0 {
                throw SystemError("unlink \(path)/\(name)", errno: errno)
            }
        }
    }
}
