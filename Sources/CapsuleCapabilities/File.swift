#if canImport(Glibc)
import Glibc
#endif
import CapsuleOS
import CapsulePolicy
import CapsuleProtocol

/// `file`: files under the policy's roots. The code names a path; the broker picks the root it
/// lies under and has the kernel resolve the rest beneath that root's descriptor (`Beneath`),
/// so `..`, symlinks and renames cannot leave it. Globs and the secret-file rule are checked on
/// the path the kernel actually opened.
public struct FileCapability: Capability {
    public let name = "file"
    public let summary = "Read and write files under the roots the policy lists ([capabilities.file] read and write)."
    public let methods = [
        Method("read_bytes", level: .restricted, parameters: [Parameter("path", .string)], doc: "The whole file as bytes."),
        Method("write_bytes", level: .standard, parameters: [Parameter("path", .string), Parameter("data", .text)],
               doc: "Create or replace the file with data; returns the number of bytes written."),
        Method("append", level: .standard, parameters: [Parameter("path", .string), Parameter("data", .text)],
               doc: "Append data (str as UTF-8, or bytes) to the file, creating it; returns the number of bytes written."),
        Method("list", level: .restricted, parameters: [Parameter("path", .string, default: "")],
               doc: "The names in a directory, sorted (files the policy hides are left out)."),
        Method("stat", level: .restricted, parameters: [Parameter("path", .string)],
               doc: "{'size', 'modified', 'kind' ('file' or 'directory'), 'mode'} of a path."),
        Method("exists", level: .restricted, parameters: [Parameter("path", .string)], doc: "Whether the path exists (and the policy lets the code see it)."),
        Method("delete", level: .standard, parameters: [Parameter("path", .string)], doc: "Remove a file, or an empty directory."),
        Method("mkdir", level: .standard, parameters: [Parameter("path", .string), Parameter("parents", .boolean, default: false)],
               doc: "Create a directory (and its parents with parents=True); an existing directory is fine."),
    ]

    struct Root: Sendable {
        let path: String
        let writable: Bool
    }

    let roots: [Root]
    let include: [Glob.Pattern]
    let exclude: [Glob.Pattern]
    let beneath: Beneath

    /// `beneath` says how paths are resolved below a root (tests force the fallback walk).
    public init(_ policy: CapsulePolicy.FileCapability, beneath: Beneath = Beneath()) {
        self.beneath = beneath
        // A root listed for writing is readable too; the longest root containing a path is its root.
        let write = policy.write.map(OS.normalizedPath)
        var paths = policy.read.map(OS.normalizedPath)
        for path in write where !paths.contains(path) { paths.append(path) }
        roots = paths.map { Root(path: $0, writable: write.contains($0)) }
        include = policy.include.map(Glob.Pattern.init)
        exclude = policy.exclude.map(Glob.Pattern.init)
    }

    public func invoke(_ method: Method, _ arguments: Arguments, context: CallContext) async throws(CapabilityError) -> JSONValue {
        let path = arguments.string("path")
        let limit = context.maxBytes ?? context.policy.limits.maxFileBytes
        // File systems can block (NFS, FUSE): the work runs on a thread of its own.
        let result = await Blocking.run { () -> Result<JSONValue, CapabilityError> in
            Result { () throws(CapabilityError) in try perform(method.name, path: path, arguments: arguments, limit: limit) }
        }
        return try result.get()
    }

    func perform(_ method: String, path: String, arguments: Arguments, limit: Int) throws(CapabilityError) -> JSONValue {
        switch method {
        case "read_bytes":
            let file = try openForReading(path, directory: false)
            defer { OS.close(file) }
            do { return .bytes(try OS.readAll(file, limit: limit)) } catch {
                if error.errno == EFBIG {
                    throw .denied("'\(path)' is larger than the \(limit) bytes a read may return (max_bytes, or limits.max_file_bytes)")
                }
                throw .system(error, path: path)
            }
        case "write_bytes", "append":
            let data = arguments.data("data")
            let flags = O_WRONLY | O_CREAT | (method == "append" ? O_APPEND : O_TRUNC)
            let file = try openForWriting(path, flags: flags)
            defer { OS.close(file) }
            do { try OS.writeAll(file, data) } catch { throw .system(error, path: path) }
            return .number(Double(data.count))
        case "list":
            let directory = try openForReading(path, directory: true)
            defer { OS.close(directory) }
            let base = try located(path, writing: false)
            do {
                let names = try OS.directoryNames(directory)
                let real = try relativePath(of: directory, in: base.root)
                return .array(names.filter { visible(real.isEmpty ? $0 : real + "/" + $0, directory: isDirectory($0, in: directory)) }
                    .map(JSONValue.string))
            } catch let error as SystemError { throw .system(error, path: path) } catch { throw .runtime("\(error)") }
        case "stat", "exists":
            do {
                let file = try openForReading(path, directory: nil)
                defer { OS.close(file) }
                if method == "exists" { return true }
                let info = try OS.info(file)
                return ["size": .number(Double(info.size)), "modified": .number(info.modified),
                        "kind": .string(info.kind.rawValue), "mode": .number(Double(info.mode))]
            } catch let error as CapabilityError where method == "exists" && error.errno == Int(ENOENT) {
                return false
            } catch let error as CapabilityError { throw error } catch { throw .runtime("\(error)") }
        case "delete":
            let (parent, name) = try openParent(path)
            defer { OS.close(parent) }
            do {
                let target = try beneath.open(parent, name, flags: O_PATH | O_NOFOLLOW)
                let kind = (try? OS.info(target))?.kind
                OS.close(target)
                try OS.remove(name, in: parent, isDirectory: kind == .directory)
            } catch { throw .system(error, path: path) }
            return .null
        case "mkdir":
            return try makeDirectory(path, parents: arguments.bool("parents"))
        default:
            throw .runtime("file.\(method) is not implemented")
        }
    }

    // MARK: Paths

    /// The root a path lies under, and the rest of the path relative to it (still unresolved:
    /// the kernel resolves it beneath the root).
    func located(_ path: String, writing: Bool) throws(CapabilityError) -> (root: Root, rest: String) {
        guard !path.isEmpty || !writing else { throw .value("file: the path is empty") }
        guard !path.utf8.contains(0) else { throw .value("file: the path contains a NUL character") }
        let candidates = roots.filter { !writing || $0.writable }
        if !path.hasPrefix("/") {
            // A relative path is relative to the first root that serves the operation.
            guard let root = candidates.first else { throw .denied(outsideRoots(path, writing: writing)) }
            return (root, path)
        }
        let matches = candidates.filter { root in
            root.path == "/" || path == root.path || path.hasPrefix(root.path + "/")
        }
        guard let root = matches.max(by: { $0.path.count < $1.path.count }) else {
            throw .denied(outsideRoots(path, writing: writing))
        }
        return (root, String(path.dropFirst(root.path == "/" ? 1 : root.path.count)).drop { $0 == "/" }.description)
    }

    private func outsideRoots(_ path: String, writing: Bool) -> String {
        let read = roots.map(\.path), write = roots.filter(\.writable).map(\.path)
        if writing {
            return write.isEmpty ? "writing '\(path)' is not allowed: [capabilities.file] has no write roots (a policy of level standard may list some)"
                : "'\(path)' is outside the write roots of [capabilities.file] (\(write.joined(separator: ", ")))"
        }
        return read.isEmpty ? "'\(path)' cannot be read: [capabilities.file] has no roots"
            : "'\(path)' is outside the roots of [capabilities.file] (\(read.joined(separator: ", ")))"
    }

    /// Opens a root's directory; the root itself must be a real directory, not a symlink.
    private func openRoot(_ root: Root, path: String) throws(CapabilityError) -> Int32 {
        do { return try OS.openFile(root.path, flags: O_PATH | O_DIRECTORY) } catch {
            throw CapabilityError(exception: "OSError", "the root \(root.path) of '\(path)' cannot be opened: \(OS.errorText(error.errno))",
                                  errno: Int(error.errno))
        }
    }

    /// Turns the kernel's refusals of an escape into denials.
    private func resolutionError(_ error: SystemError, path: String, root: Root, writing: Bool) -> CapabilityError {
        switch error.errno {
        case EXDEV: .denied("'\(path)' leads outside the root \(root.path) (through `..`, an absolute symlink or a link out of it)")
        case ELOOP where writing: .denied("'\(path)' goes through a symlink, and writes never follow symlinks")
        case ELOOP: .denied("'\(path)' goes through a symlink that is not allowed here")
        default: .system(error, path: path)
        }
    }

    /// Opens for reading (O_PATH first, so opening has no side effects), checks the real path
    /// against the globs, then reopens for reading. `directory` nil accepts either kind.
    private func openForReading(_ path: String, directory: Bool?) throws(CapabilityError) -> Int32 {
        let (root, rest) = try located(path, writing: false)
        let rootFD = try openRoot(root, path: path)
        defer { OS.close(rootFD) }
        let handle: Int32
        do { handle = try beneath.open(rootFD, rest, flags: O_PATH) } catch {
            throw resolutionError(error, path: path, root: root, writing: false)
        }
        do {
            let info = try OS.info(handle)
            let isDirectory = info.kind == .directory
            let relative = try relativePath(of: handle, beneath: rootFD)
            guard visible(relative, directory: isDirectory) else {
                OS.close(handle)
                throw CapabilityError.denied(hiddenReason(path, relative: relative))
            }
            switch (directory, isDirectory) {
            case (true, false): OS.close(handle); throw CapabilityError.system(SystemError("open", errno: ENOTDIR), path: path)
            case (false, true): OS.close(handle); throw CapabilityError.system(SystemError("open", errno: EISDIR), path: path)
            default: break
            }
            guard isDirectory || info.kind == .file else {
                OS.close(handle)
                throw CapabilityError.denied("'\(path)' is not a regular file (devices, FIFOs and sockets are never opened)")
            }
            if directory == nil { return handle }
            defer { OS.close(handle) }
            return try OS.openFile("/proc/self/fd/\(handle)", flags: O_RDONLY | (isDirectory ? O_DIRECTORY : 0))
        } catch let error as CapabilityError { throw error } catch let error as SystemError {
            OS.close(handle)
            throw .system(error, path: path)
        } catch { throw .runtime("\(error)") }
    }

    /// Opens for writing with no symlink anywhere in the path; the globs are checked first, on the
    /// path as written (without symlinks, that is the path the kernel opens).
    private func openForWriting(_ path: String, flags: Int32) throws(CapabilityError) -> Int32 {
        let (root, rest) = try located(path, writing: true)
        let relative = OS.normalizedPath(rest)
        guard !relative.hasPrefix("..") else { throw .denied("'\(path)' leads outside the root \(root.path)") }
        guard visible(relative, directory: false) else { throw .denied(hiddenReason(path, relative: relative)) }
        let rootFD = try openRoot(root, path: path)
        defer { OS.close(rootFD) }
        do { return try beneath.open(rootFD, rest, flags: flags | O_NONBLOCK, noSymlinks: true) } catch {
            throw resolutionError(error, path: path, root: root, writing: true)
        }
    }

    /// The parent directory (opened beneath a write root, no symlinks) and the last name.
    private func openParent(_ path: String) throws(CapabilityError) -> (Int32, String) {
        let (root, rest) = try located(path, writing: true)
        let relative = OS.normalizedPath(rest)
        guard relative != ".", !relative.hasPrefix("..") else { throw .denied("'\(path)' is not below a write root of [capabilities.file]") }
        guard visible(relative, directory: false) || visible(relative, directory: true) else {
            throw .denied(hiddenReason(path, relative: relative))
        }
        var parts = relative.split(separator: "/").map(String.init)
        let name = parts.removeLast()
        let rootFD = try openRoot(root, path: path)
        defer { OS.close(rootFD) }
        do { return (try beneath.open(rootFD, parts.joined(separator: "/"), flags: O_PATH | O_DIRECTORY, noSymlinks: true), name) } catch {
            throw resolutionError(error, path: path, root: root, writing: true)
        }
    }

    private func makeDirectory(_ path: String, parents: Bool) throws(CapabilityError) -> JSONValue {
        let (root, rest) = try located(path, writing: true)
        let relative = OS.normalizedPath(rest)
        guard relative != ".", !relative.hasPrefix("..") else { throw .denied("'\(path)' is not below a write root of [capabilities.file]") }
        guard visible(relative, directory: true) else { throw .denied(hiddenReason(path, relative: relative)) }
        let parts = relative.split(separator: "/").map(String.init)
        let rootFD = try openRoot(root, path: path)
        defer { OS.close(rootFD) }
        for end in (parents ? 1 : parts.count)...parts.count {
            let parent = parts[0..<(end - 1)].joined(separator: "/")
            do { try ensureDirectory(parts[end - 1], under: parent, of: rootFD) } catch {
                throw resolutionError(error, path: path, root: root, writing: true)
            }
        }
        return .null
    }

    /// mkdir that accepts an existing directory (not an existing file).
    private func ensureDirectory(_ name: String, under parent: String, of root: Int32) throws(SystemError) {
        let directory = try beneath.open(root, parent, flags: O_PATH | O_DIRECTORY, noSymlinks: true)
        defer { OS.close(directory) }
        do { try OS.makeDirectory(name, in: directory) } catch {
            guard error.errno == EEXIST else { throw error }
            let existing = try beneath.open(directory, name, flags: O_PATH | O_NOFOLLOW)
            defer { OS.close(existing) }
            if try OS.info(existing).kind != .directory { throw error }
        }
    }

    private func relativePath(of fd: Int32, in root: Root) throws(SystemError) -> String {
        let rootFD = try OS.openFile(root.path, flags: O_PATH | O_DIRECTORY)
        defer { OS.close(rootFD) }
        return try relativePath(of: fd, beneath: rootFD)
    }

    /// The path of an open descriptor relative to its root's (open) directory ("" for the root itself).
    private func relativePath(of fd: Int32, beneath rootFD: Int32) throws(SystemError) -> String {
        let real = try OS.path(of: fd)
        let rootReal = try OS.path(of: rootFD)
        if real == rootReal { return "" }
        let prefix = rootReal == "/" ? "/" : rootReal + "/"
        // The kernel resolved beneath the root, so this holds; a failure is a refusal, not a guess.
        guard real.hasPrefix(prefix) else { throw SystemError("resolve", errno: EXDEV) }
        return String(real.dropFirst(prefix.count))
    }

    private func isDirectory(_ name: String, in directory: Int32) -> Bool {
        guard let fd = try? beneath.open(directory, name, flags: O_PATH | O_NOFOLLOW) else { return false }
        defer { OS.close(fd) }
        return (try? OS.info(fd))?.kind == .directory
    }

    // MARK: Globs

    /// Whether the policy lets the code see a path (relative to its root): no exclude glob and
    /// no secret pattern matches it, and a file matches an include glob. A secret-looking file is
    /// visible only when an include entry names it without wildcards.
    func visible(_ relative: String, directory: Bool) -> Bool {
        if relative.isEmpty { return true }
        let path = Glob.Path(relative)
        if exclude.contains(where: { $0.matches(path) }) { return false }
        if Glob.isSecret(path) {
            return include.contains { !$0.wildcards && $0.matches(path) }
        }
        return directory || include.contains { $0.matches(path) }
    }

    private func hiddenReason(_ path: String, relative: String) -> String {
        if exclude.contains(where: { $0.matches(Glob.Path(relative)) }) {
            return "'\(path)' matches an exclude glob of [capabilities.file]"
        }
        if Glob.isSecret(relative) {
            return "'\(path)' looks like a secret (keys, tokens, credentials); it is readable only when an include entry of [capabilities.file] names it exactly"
        }
        return "'\(path)' matches no include glob of [capabilities.file] (\(include.map(\.text).joined(separator: ", ")))"
    }
}

/// Globs over `/`-separated paths relative to a root: `*` and `?` stay within one name, `**` as a
/// whole name spans any number of them; a glob without `/` is matched against the last name, at
/// any depth (`*.csv` matches `a/b.csv`).
/// `*`, `?` and `**` globs over paths relative to a root. A pattern without `/` matches a path's
/// last name; `**` alone matches everything. Patterns are split once (`Pattern`) and a path once
/// per check (`Path`): every file call checks its path against the policy's globs and the ~35
/// secret patterns, and matching them as strings cost most of a call's time.
package enum Glob {
    package struct Pattern: Sendable {
        package let text: String
        let names: [[UInt8]]
        let nameOnly: Bool
        let everything: Bool
        package let wildcards: Bool

        package init(_ text: String) {
            self.text = text
            names = text.utf8.split(separator: UInt8(ascii: "/")).map(Array.init)
            nameOnly = !text.utf8.contains(UInt8(ascii: "/"))
            everything = text == "**"
            wildcards = Glob.hasWildcards(text)
        }

        package func matches(_ path: Path) -> Bool {
            if nameOnly { return everything || Glob.matchName(names.first ?? [], path.names.last ?? []) }
            return Glob.matchParts(names[...], path.names[...])
        }
    }

    /// A relative path split into its names.
    package struct Path {
        let names: [ArraySlice<UInt8>]
        package init(_ relative: String) { names = Array(relative.utf8).split(separator: UInt8(ascii: "/")) }
    }

    package static func matches(_ pattern: String, _ path: String) -> Bool { Pattern(pattern).matches(Path(path)) }

    package static func hasWildcards(_ pattern: String) -> Bool { pattern.utf8.contains { $0 == 42 || $0 == 63 || $0 == 91 } }

    private static let doubleStar: [UInt8] = Array("**".utf8)

    private static func matchParts(_ pattern: ArraySlice<[UInt8]>, _ names: ArraySlice<ArraySlice<UInt8>>) -> Bool {
        guard let first = pattern.first else { return names.isEmpty }
        if first == doubleStar {
            let rest = pattern.dropFirst()
            return (0...names.count).contains { matchParts(rest, names.dropFirst($0)) }
        }
        guard let name = names.first, matchName(first, name) else { return false }
        return matchParts(pattern.dropFirst(), names.dropFirst())
    }

    /// `*` and `?` within one name (iterative, with one backtrack point).
    private static func matchName(_ pattern: [UInt8], _ name: ArraySlice<UInt8>) -> Bool {
        let base = name.startIndex
        var p = 0, n = 0, star = -1, resume = 0
        while n < name.count {
            if p < pattern.count && (pattern[p] == UInt8(ascii: "?") || pattern[p] == name[base + n]) {
                p += 1; n += 1
            } else if p < pattern.count && pattern[p] == UInt8(ascii: "*") {
                star = p; resume = n; p += 1
            } else if star >= 0 {
                p = star + 1; resume += 1; n = resume
            } else {
                return false
            }
        }
        while p < pattern.count && pattern[p] == UInt8(ascii: "*") { p += 1 }
        return p == pattern.count
    }

    /// Files that usually hold credentials: refused unless named exactly.
    static let secretPatterns = [
        ".env", ".env.*", "*.env", "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", "*.pem", "*.key", "*.p12", "*.pfx",
        "*.jks", "*.keystore", "*.kdbx", ".netrc", "_netrc", ".pgpass", ".npmrc", ".pypirc", ".htpasswd",
        ".git-credentials", "credentials", "**/.git/config", ".git/config", "**/.ssh/**", ".ssh/**", "**/.aws/**", ".aws/**",
        "**/.docker/config.json", ".docker/config.json", "**/.kube/config", ".kube/config", "**/.gnupg/**", ".gnupg/**",
    ]

    private static let secrets = secretPatterns.map(Pattern.init)

    package static func isSecret(_ relative: String) -> Bool { isSecret(Path(relative)) }

    package static func isSecret(_ path: Path) -> Bool { secrets.contains { $0.matches(path) } }
}
