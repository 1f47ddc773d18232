#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Thin wrappers over the system calls the supervisor needs.
public enum OS {
    public static func errorText(_ code: Int32) -> String {
        guard let text = strerror(code) else { return "errno \(code)" }
        return String(cString: text)
    }

    // MARK: File descriptors

    /// Reads up to `buffer.count` bytes; 0 means end of file.
    public static func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> Int {
        try retrying("read") { Glibc.read(fd, buffer.baseAddress, buffer.count) }
    }

    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) throws(SystemError) {
        var offset = 0
        while offset < bytes.count {
            offset += try retrying("write") { Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset) }
        }
    }

    public static func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws(SystemError) {
        try bytes.withUnsafeBytes { raw in capture { () throws(SystemError) in try writeAll(fd, raw) } }.get()
    }

    public static func writeAll(_ fd: Int32, _ text: String) throws(SystemError) {
        var text = text
        try text.withUTF8 { utf8 in
            capture { () throws(SystemError) in try writeAll(fd, UnsafeRawBufferPointer(utf8)) }
        }.get()
    }

    /// Carries a typed error out of the standard library's untyped `rethrows` closures.
    static func capture<T>(_ body: () throws(SystemError) -> T) -> Result<T, SystemError> {
        do { return .success(try body()) } catch { return .failure(error) }
    }

    /// Writes all of `bytes` to a socket before `deadline` (monotonic nanoseconds), never raising
    /// SIGPIPE and never blocking past the deadline; false when the deadline came first. A peer
    /// that stops reading cannot hold the caller.
    public static func sendAll(_ fd: Int32, _ bytes: [UInt8], deadline: UInt64) throws(SystemError) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let sent = try sendSome(fd, bytes, from: offset)
            offset += sent
            if sent > 0 { continue }
            if now() >= deadline { return false }
            var fds = [pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)]
            _ = try poll(&fds, timeoutMilliseconds: pollMilliseconds(until: deadline))
        }
        return true
    }

    /// Sends what a socket takes now of `bytes[offset...]`, never blocking and never raising
    /// SIGPIPE: the count sent, 0 when the socket is full.
    public static func sendSome(_ fd: Int32, _ bytes: [UInt8], from offset: Int) throws(SystemError) -> Int {
        while true {
            let sent = bytes.withUnsafeBytes { raw in
                Glibc.send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT))
            }
            if sent >= 0 { return sent }
            let code = Glibc.errno
            if code == EINTR { continue }
            guard code == EAGAIN || code == EWOULDBLOCK else { throw SystemError("send", errno: code) }
            return 0
        }
    }

    /// How many bytes wait to be read on `fd` now, without reading any: what a pipe or socket
    /// holds, what is left of a regular file; 0 for anything else (a terminal, /dev/null).
    public static func bytesWaiting(_ fd: Int32) -> Int {
        var info = stat()
        guard fstat(fd, &info) == 0 else { return 0 }
        switch info.st_mode & S_IFMT {
        case S_IFREG:
            let offset = lseek(fd, 0, SEEK_CUR)
            return offset < 0 ? 0 : max(0, Int(info.st_size) - Int(offset))
        case S_IFIFO, S_IFSOCK:
            var count: Int32 = 0
            return ioctl(fd, UInt(FIONREAD), &count) == 0 ? Int(count) : 0
        default:
            return 0
        }
    }

    public static func close(_ fd: Int32) {
        _ = Glibc.close(fd) // never retried: the descriptor is gone either way on Linux
    }

    /// A connected pair of AF_UNIX stream sockets, close-on-exec.
    public static func socketPair() throws(SystemError) -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        _ = try retrying("socketpair") { socketpair(AF_UNIX, type, 0, &fds) }
        return (fds[0], fds[1])
    }

    /// A pipe, close-on-exec at both ends from the start (no other thread's child can inherit it).
    public static func pipe() throws(SystemError) -> (read: Int32, write: Int32) {
        // glibc's pipe2 is hidden behind _GNU_SOURCE in the Glibc module, so it is looked up.
        typealias Pipe2 = @convention(c) (UnsafeMutablePointer<Int32>?, Int32) -> Int32
        guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "pipe2") else { throw SystemError("pipe2", errno: ENOSYS) }
        let pipe2 = unsafeBitCast(symbol, to: Pipe2.self)
        var fds: [Int32] = [-1, -1]
        _ = try retrying("pipe2") { pipe2(&fds, O_CLOEXEC) }
        return (fds[0], fds[1])
    }

    public static func setNonBlocking(_ fd: Int32) throws(SystemError) {
        let flags = try retrying("fcntl") { fcntl(fd, F_GETFL) }
        _ = try retrying("fcntl") { fcntl(fd, F_SETFL, flags | O_NONBLOCK) }
    }

    /// Waits for events on `fds`; a negative timeout waits forever. Returns how many are ready.
    public static func poll(_ fds: inout [pollfd], timeoutMilliseconds: Int32) throws(SystemError) -> Int {
        let count = fds.count
        return Int(try fds.withUnsafeMutableBufferPointer { (buffer) throws(SystemError) in
            try retrying("poll") { Glibc.poll(buffer.baseAddress, nfds_t(count), timeoutMilliseconds) }
        })
    }

    // MARK: Processes

    public static func kill(_ pid: pid_t, _ signal: Int32) {
        _ = Glibc.kill(pid, signal)
    }

    /// How a child process ended.
    public enum Termination: Sendable, Equatable {
        case exited(Int32)
        case signaled(Int32)
    }

    /// Reaps `pid`; nil when `block` is false and it is still running.
    public static func wait(_ pid: pid_t, block: Bool) throws(SystemError) -> Termination? {
        var status: Int32 = 0
        let result = try retrying("waitpid") { waitpid(pid, &status, block ? 0 : WNOHANG) }
        if result == 0 { return nil }
        let signal = status & 0x7f
        return signal == 0 ? .exited((status >> 8) & 0xff) : .signaled(signal)
    }

    /// Starts `path` with exactly the descriptors in `descriptors` (child fd ← parent fd), stdin and
    /// stdout on /dev/null and stderr inherited unless `descriptors` maps them, an empty
    /// environment (or this process's, for a trusted helper), in a new session.
    public static func spawn(_ path: String, arguments: [String],
                             descriptors: [(child: Int32, parent: Int32)],
                             inheritEnvironment: Bool = false) throws(SystemError) -> pid_t {
        // Move the sources out of the way first, so that no mapping overwrites another's source.
        var moved: [(child: Int32, parent: Int32)] = []
        defer { for entry in moved { close(entry.parent) } }
        for entry in descriptors {
            let high = try retrying("fcntl") { fcntl(entry.parent, F_DUPFD_CLOEXEC, 64) }
            moved.append((entry.child, high))
        }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        for entry in moved { posix_spawn_file_actions_adddup2(&actions, entry.parent, entry.child) }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        var defaults = sigset_t()
        sigfillset(&defaults)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        // A terminal's ^C reaches the supervisor only, which decides what to forward.
        let flags = Int32(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF) | 0x80 /* POSIX_SPAWN_SETSID */
        posix_spawnattr_setflags(&attributes, Int16(flags))

        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        let environment: [UnsafeMutablePointer<CChar>?] = [nil]
        var pid: pid_t = 0
        let result = inheritEnvironment ? posix_spawn(&pid, path, &actions, &attributes, argv, environ)
            : posix_spawn(&pid, path, &actions, &attributes, argv, environment)
        if result != 0 { throw SystemError("posix_spawn \(path)", errno: result) }
        return pid
    }

    // MARK: Files

    /// The whole file, refusing anything larger than `limit` bytes.
    public static func readFile(_ path: String, limit: Int) throws(SystemError) -> [UInt8] {
        let fd = try retrying("open \(path)") { Glibc.open(path, O_RDONLY | O_CLOEXEC) }
        defer { close(fd) }
        do throws(SystemError) { return try readAll(fd, limit: limit) } catch { throw SystemError("read \(path)", errno: error.errno) }
    }

    /// Drops `.` and resolves `..` textually (no file system access), so one file reached two ways
    /// reads as one and paths shown to people read cleanly. A relative path keeps leading `..`.
    public static func normalizedPath(_ path: String) -> String {
        var parts: [Substring] = []
        for part in path.split(separator: "/") {
            if part == "." { continue }
            if part == "..", let last = parts.last, last != ".." { parts.removeLast(); continue }
            if part == "..", path.hasPrefix("/") { continue } // nothing is above the root
            parts.append(part)
        }
        let joined = parts.joined(separator: "/")
        return path.hasPrefix("/") ? "/" + joined : (joined.isEmpty ? "." : joined)
    }

    public static func isRegularFile(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG
    }

    public static func isRegularFile(fd: Int32) -> Bool {
        var info = stat()
        return fstat(fd, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG
    }

    public static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    public static func isExecutable(_ path: String) -> Bool { access(path, X_OK) == 0 }

    public static func fileExists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    /// The absolute path of the running executable.
    public static func executablePath() -> String? { linkTarget("/proc/self/exe") }

    /// What the symbolic link at `path` points to; nil when `path` is not a symbolic link.
    public static func linkTarget(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink(path, &buffer, buffer.count - 1)
        guard count > 0 else { return nil }
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Opens `path`; the descriptor is close-on-exec.
    public static func open(_ path: String, flags: Int32, mode: mode_t = 0o644) throws(SystemError) -> Int32 {
        try retrying("open \(path)") { Glibc.open(path, flags | O_CLOEXEC, mode) }
    }

    public static func environment(_ name: String) -> String? {
        guard let value = getenv(name) else { return nil }
        return String(cString: value)
    }

    // MARK: Time

    /// A poll timeout for waiting until `deadline` (monotonic nanoseconds): rounded up so the wait
    /// does not end just short of it, and at most a minute so long waits wake to look around.
    public static func pollMilliseconds(until deadline: UInt64) -> Int32 {
        let now = now()
        return deadline <= now ? 0 : Int32(min((deadline - now) / 1_000_000 + 1, 60_000))
    }

    /// Monotonic clock in nanoseconds.
    public static func now() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec)
    }
}

// MARK: Threads

extension OS {
    /// Runs `body` on a new detached thread of capsule's own (not one of Swift's shared pool);
    /// false when no thread could be started (then `body` never runs).
    public static func startThread(_ body: @escaping @Sendable () -> Void) -> Bool {
        final class Box {
            let body: @Sendable () -> Void
            init(_ body: @escaping @Sendable () -> Void) { self.body = body }
        }
        var thread = pthread_t()
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        let box = Unmanaged.passRetained(Box(body))
        let started = pthread_create(&thread, &attributes, { raw in
            Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue().body()
            return nil
        }, box.toOpaque()) == 0
        if !started { box.release() }
        return started
    }
}

// MARK: Append-only logs

extension OS {
    /// Takes an exclusive `flock` on `fd` (the lock other processes' writers of the file take too).
    public static func lockExclusive(_ fd: Int32) throws(SystemError) {
        _ = try retrying("flock") { flock(fd, LOCK_EX) }
    }

    public static func unlock(_ fd: Int32) { flock(fd, LOCK_UN) }

    /// The size and link count of an open file (a link count of 0: the file was removed).
    public static func fileStatus(_ fd: Int32) throws(SystemError) -> (size: Int, links: Int, inode: UInt64) {
        var info = stat()
        _ = try retrying("fstat") { fstat(fd, &info) }
        return (Int(info.st_size), Int(info.st_nlink), UInt64(info.st_ino))
    }

    /// Up to `count` bytes of `fd` from `offset`.
    public static func read(_ fd: Int32, at offset: Int, count: Int) throws(SystemError) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        var filled = 0
        while filled < count {
            let got = try buffer.withUnsafeMutableBytes { raw in
                Result { () throws(SystemError) in
                    try retrying("pread") { pread(fd, raw.baseAddress! + filled, count - filled, off_t(offset + filled)) }
                }
            }.get()
            if got == 0 { break }
            filled += got
        }
        return Array(buffer[0..<filled])
    }

    public static func truncate(_ fd: Int32, to size: Int) throws(SystemError) {
        _ = try retrying("ftruncate") { ftruncate(fd, off_t(size)) }
    }

    /// Forces the file's data to disk.
    public static func syncData(_ fd: Int32) throws(SystemError) {
        _ = try retrying("fdatasync") { fdatasync(fd) }
    }

    /// A second name for a file (a hard link).
    public static func link(_ from: String, to: String) throws(SystemError) {
        _ = try retrying("link \(to)") { Glibc.link(from, to) }
    }

    public static func rename(_ from: String, to: String) throws(SystemError) {
        _ = try retrying("rename \(from)") { Glibc.rename(from, to) }
    }

    /// The wall clock as RFC 3339 UTC with microseconds: `2026-12-01T13:05:00.123456Z`.
    public static func timestamp() -> String {
        var text: [UInt8] = []
        timestamp(into: &text)
        return String(decoding: text, as: UTF8.self)
    }

    /// Appends the wall clock's 27 bytes, as `timestamp()` has them: this runs for every audit line.
    public static func timestamp(into text: inout [UInt8]) {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        var seconds = spec.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let start = text.count
        text.append(contentsOf: repeatElement(0, count: 27))
        func put(_ value: Int, _ width: Int, at end: Int) {
            var value = value
            for index in stride(from: start + end - 1, through: start + end - width, by: -1) {
                text[index] = UInt8(ascii: "0") + UInt8(value % 10)
                value /= 10
            }
        }
        put(Int(parts.tm_year) + 1900, 4, at: 4)
        put(Int(parts.tm_mon) + 1, 2, at: 7)
        put(Int(parts.tm_mday), 2, at: 10)
        put(Int(parts.tm_hour), 2, at: 13)
        put(Int(parts.tm_min), 2, at: 16)
        put(Int(parts.tm_sec), 2, at: 19)
        put(Int(spec.tv_nsec) / 1000, 6, at: 26)
        (text[start + 4], text[start + 7], text[start + 10], text[start + 13]) =
            (UInt8(ascii: "-"), UInt8(ascii: "-"), UInt8(ascii: "T"), UInt8(ascii: ":"))
        (text[start + 16], text[start + 19], text[start + 26]) = (UInt8(ascii: ":"), UInt8(ascii: "."), UInt8(ascii: "Z"))
    }
}
