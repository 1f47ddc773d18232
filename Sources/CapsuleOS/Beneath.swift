#if canImport(Glibc)
import Glibc
#endif
import CCapsuleSys

/// Opening files strictly beneath a directory descriptor: the kernel resolves the path
/// (openat2 `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`), so `..`, absolute paths, symlinks and
/// renames during the lookup cannot leave the directory. Where openat2 is missing (Linux < 5.6,
/// some seccomp profiles), a walk one component at a time with `O_NOFOLLOW` that refuses `..`
/// and every symlink does the same, more strictly.
public struct Beneath: Sendable {
    /// Whether to walk even where openat2 works (tests exercise the fallback this way). A value
    /// each user holds, not a global, so one test's choice never reaches another's lookups.
    public let walkOnly: Bool

    public init(walkOnly: Bool = false) { self.walkOnly = walkOnly }

    /// Opens `path` (relative, `/`-separated) beneath `directory`. `noSymlinks` refuses a symlink
    /// anywhere in the path (for writes, where following one would truncate its target first).
    public func open(_ directory: Int32, _ path: String, flags: Int32, mode: mode_t = 0o644,
                     noSymlinks: Bool = false) throws(SystemError) -> Int32 {
        // openat2 refuses O_PATH with any flag but O_DIRECTORY, O_NOFOLLOW and O_CLOEXEC.
        let flags = flags | O_CLOEXEC | ((flags & O_PATH) != 0 ? 0 : O_NOCTTY)
        if !walkOnly {
            let resolve = UInt64(CAPSULE_RESOLVE_BENEATH | CAPSULE_RESOLVE_NO_MAGICLINKS)
                | (noSymlinks ? UInt64(CAPSULE_RESOLVE_NO_SYMLINKS) : 0)
            while true {
                let fd = capsule_openat2(directory, path.isEmpty ? "." : path, UInt64(UInt32(bitPattern: flags)),
                                         (flags & O_CREAT) != 0 ? UInt64(mode) : 0, resolve)
                if fd >= 0 { return fd }
                let code = errno
                if code == EINTR || code == EAGAIN { continue } // EAGAIN: a rename raced the lookup; retry
                if code != ENOSYS && code != EPERM { throw SystemError("openat2 \(path)", errno: code) }
                break // no openat2 here (or a filter refuses it): walk
            }
        }
        return try Self.walk(directory, path, flags: flags, mode: mode)
    }

    /// One component at a time: every directory opened with `O_NOFOLLOW | O_DIRECTORY`, the last
    /// with `O_NOFOLLOW`; `..` and symlinks are refused (ELOOP / EXDEV), not followed.
    static func walk(_ directory: Int32, _ path: String, flags: Int32, mode: mode_t) throws(SystemError) -> Int32 {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true).filter { $0 != "." }
        if parts.contains("..") { throw SystemError("open \(path)", errno: EXDEV) }
        var current = try retrying("open .") { Glibc.openat(directory, ".", O_PATH | O_DIRECTORY | O_CLOEXEC) }
        for (index, part) in parts.enumerated() {
            let last = index == parts.count - 1
            let next = retryingOpen(current, String(part),
                                    last ? flags | O_NOFOLLOW : O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, mode)
            Glibc.close(current)
            guard next >= 0 else { throw SystemError("open \(path)", errno: errno == ENOTDIR ? ELOOP : errno) }
            current = next
        }
        if parts.isEmpty {
            let reopened = retryingOpen(current, ".", flags, mode)
            Glibc.close(current)
            guard reopened >= 0 else { throw SystemError("open \(path)", errno: errno) }
            return reopened
        }
        return current
    }

    private static func retryingOpen(_ directory: Int32, _ name: String, _ flags: Int32, _ mode: mode_t) -> Int32 {
        while true {
            let fd = Glibc.openat(directory, name, flags, mode)
            if fd >= 0 || errno != EINTR { return fd }
        }
    }
}

/// open(2)'s O_PATH, which Glibc's Swift overlay leaves out: a descriptor that names a file
/// without opening it (no side effects, even for a FIFO or a device).
public let O_PATH: Int32 = 0o10000000

/// What `fstat` says of an open file.
public struct FileInfo: Sendable, Equatable {
    public enum Kind: String, Sendable { case file, directory, symlink, other }
    public let kind: Kind
    public let size: Int
    /// Seconds since the epoch.
    public let modified: Double
    public let mode: Int
}

extension OS {
    public static func openFile(_ path: String, flags: Int32) throws(SystemError) -> Int32 {
        try retrying("open \(path)") { Glibc.open(path, flags | O_CLOEXEC) }
    }

    public static func info(_ fd: Int32) throws(SystemError) -> FileInfo {
        var status = stat()
        _ = try retrying("fstat") { fstat(fd, &status) }
        let kind: FileInfo.Kind = switch status.st_mode & S_IFMT {
        case S_IFREG: .file
        case S_IFDIR: .directory
        case S_IFLNK: .symlink
        default: .other
        }
        return FileInfo(kind: kind, size: Int(status.st_size),
                        modified: Double(status.st_mtim.tv_sec) + Double(status.st_mtim.tv_nsec) / 1e9,
                        mode: Int(status.st_mode & 0o7777))
    }

    /// The path the kernel has for an open descriptor (its `/proc/self/fd` link).
    public static func path(of fd: Int32) throws(SystemError) -> String {
        try withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 4096) { buffer in
            capture { () throws(SystemError) in
                let count = try retrying("readlink") { readlink("/proc/self/fd/\(fd)", buffer.baseAddress!, buffer.count) }
                return String(decoding: UnsafeBufferPointer(rebasing: buffer[0..<count]), as: UTF8.self)
            }
        }.get()
    }

    /// Reads to the end; more than `limit` bytes is EFBIG (nothing past the limit is read).
    public static func readAll(_ fd: Int32, limit: Int) throws(SystemError) -> [UInt8] {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = try chunk.withUnsafeMutableBytes { raw in
                capture { () throws(SystemError) in try read(fd, into: raw) }
            }.get()
            if count == 0 { return bytes }
            if bytes.count + count > limit { throw SystemError("read", errno: EFBIG) }
            bytes.append(contentsOf: chunk[0..<count])
        }
    }

    /// The names in an open directory, without `.` and `..`, sorted.
    public static func directoryNames(_ fd: Int32) throws(SystemError) -> [String] {
        let copy = try retrying("dup") { Glibc.fcntl(fd, F_DUPFD_CLOEXEC, 0) }
        guard let stream = fdopendir(copy) else {
            let code = errno
            Glibc.close(copy)
            throw SystemError("fdopendir", errno: code)
        }
        defer { closedir(stream) }
        rewinddir(stream)
        var names: [String] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// unlinkat: a file, or an empty directory with `directory`.
    public static func remove(_ name: String, in directory: Int32, isDirectory: Bool) throws(SystemError) {
        _ = try retrying("unlink \(name)") { unlinkat(directory, name, isDirectory ? AT_REMOVEDIR : 0) }
    }

    public static func makeDirectory(_ name: String, in directory: Int32, mode: mode_t = 0o755) throws(SystemError) {
        _ = try retrying("mkdir \(name)") { mkdirat(directory, name, mode) }
    }
}
