#if canImport(Glibc)
import Glibc
#endif
@_exported import CapsuleTestSupport
@testable import CapsulePolicy

/// The error `PolicyLoader.parse` throws for `text`, or nil when the policy is accepted.
func parseError(_ text: String, file: String = "p.toml") -> PolicyError? {
    do {
        _ = try PolicyLoader.parse(text, file: file)
        return nil
    } catch {
        return error
    }
}

/// The error `PolicyLoader.load` throws for `specifier`, or nil when it loads.
func loadError(_ specifier: String) -> PolicyError? {
    do {
        _ = try PolicyLoader.load(specifier)
        return nil
    } catch {
        return error
    }
}

/// `level = "sandbox"` then a `[limits]` header: whatever follows is on line 3.
let limitsHeader = "level = \"sandbox\"\n[limits]\n"

/// The levels' names as the messages list them.
let quotedLevelNames = #""sandbox", "restricted", "standard", "trusted", "unrestricted""#

/// The repository root: this file is `<root>/Tests/CapsulePolicyTests/Support.swift`.
let repositoryRoot: String = {
    var parts = "\(#filePath)".split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(3)
    return parts.joined(separator: "/")
}()

let builtInPoliciesDirectory = repositoryRoot + "/policies"

/// The names in a directory, without `.` and `..`, sorted.
func directoryEntries(_ path: String) -> [String] {
    guard let directory = opendir(path) else { return [] }
    defer { closedir(directory) }
    var names: [String] = []
    while let entry = readdir(directory) {
        let name = withUnsafePointer(to: entry.pointee.d_name) { tuple in
            tuple.withMemoryRebound(to: CChar.self, capacity: MemoryLayout.size(ofValue: tuple.pointee)) {
                String(cString: $0)
            }
        }
        if name != "." && name != ".." { names.append(name) }
    }
    return names.sorted()
}

/// The whole of a small text file (the built-in policies), read with Glibc.
func readText(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        guard count >= 0 else { return nil }
        if count == 0 { break }
        bytes += chunk[0..<count]
    }
    return String(validating: bytes, as: UTF8.self)
}

/// A private directory under `/tmp/capsule-policy-tests-<pid>/`, removed (with the files written
/// into it) when `body` returns. Suites that use it are `.serialized`.
func withTemporaryDirectory<T>(_ name: String, _ body: (TemporaryDirectory) throws -> T) rethrows -> T {
    let root = "/tmp/capsule-policy-tests-\(getpid())"
    let directory = TemporaryDirectory(path: "\(root)/\(name)")
    // Suites run in parallel and each removes `root` when it looks empty, so another suite can
    // remove it between our two mkdirs: make both again until ours exists.
    var made = false
    for _ in 0..<100 where !made {
        _ = mkdir(root, 0o700)
        made = mkdir(directory.path, 0o700) == 0 || errno == EEXIST
    }
    precondition(made, "cannot create \(directory.path): errno \(errno)")
    defer {
        for entry in directoryEntries(directory.path) { _ = unlink("\(directory.path)/\(entry)") }
        _ = rmdir(directory.path)
        _ = rmdir(root)  // fails harmlessly while another directory is still in it
    }
    return try body(directory)
}

struct TemporaryDirectory {
    let path: String

    /// Writes `bytes` to `name` in this directory and returns the file's path.
    @discardableResult
    func write(_ name: String, _ bytes: [UInt8]) -> String {
        let file = "\(path)/\(name)"
        let fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        precondition(fd >= 0, "cannot create \(file): errno \(errno)")
        defer { close(fd) }
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if written < 0 && errno == EINTR { continue }
            precondition(written > 0, "cannot write \(file): errno \(errno)")
            offset += written
        }
        return file
    }

    @discardableResult
    func write(_ name: String, _ text: String) -> String { write(name, Array(text.utf8)) }
}
