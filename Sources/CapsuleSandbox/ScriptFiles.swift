import CapsuleOS
import CapsulePolicy

/// What of a script's directory the sandbox shows, so that a script runs as under CPython: its
/// `__file__` is its absolute path and its directory leads `sys.path`, so `import helper` finds
/// `helper.py` beside it and `open(__file__)` reads it. Shown read-only at their own paths: the
/// script, the `.py` files beside it and the packages beside it (directories holding an
/// `__init__.py`), which are the script's own code. Nothing else of the directory is: a `.env` or
/// a data file beside the script stays as unreadable as any host file, unless the policy grants
/// it. At every level, since this is code the user chose to run, not data.
///
/// Nothing is shown from `/`, a home directory (a script there sits among a user's own files),
/// a directory with a symbolic link in its path (the sandbox takes paths literally), or a part of
/// the sandbox's own layout. In a directory where hosts keep unix sockets (`/tmp`), only files are
/// shown, never a package directory (a socket inside one would be reachable).
public enum ScriptFiles {
    /// At most this many modules and packages beside a script are shown.
    public static let limit = 64

    public struct Plan: Sendable, Equatable {
        /// The script's absolute path, its `__file__` inside.
        public let path: String
        /// Host paths to bind read-only, the script first.
        public let files: [String]
        /// Why modules beside the script are not shown, when some are not.
        public let note: String?
    }

    /// The plan for `script` (as given on the command line, relative to `directory`).
    public static func plan(script: String, workingDirectory: String = OS.currentDirectory() ?? "/",
                            home: String? = OS.environment("HOME") ?? OS.homeDirectory()) -> Plan {
        let path = OS.normalizedPath(script.hasPrefix("/") ? script : workingDirectory + "/" + script)
        let directory = path.lastIndex(of: "/").map { path[..<$0].isEmpty ? "/" : String(path[..<$0]) } ?? "/"
        let (modules, packages) = neighbours(of: directory, except: path)
        func refused(_ why: String) -> Plan {
            let named = (modules + packages).prefix(3).map { String($0.dropFirst(directory.count + (directory == "/" ? 0 : 1))) }
            let note = named.isEmpty ? nil : "the modules beside \(path) (\(named.joined(separator: ", "))\(modules.count + packages.count > 3 ? ", …" : "")) "
                + "are not visible inside, since \(why); `import` of them fails. Move the script and its modules into a "
                + "directory of their own, or grant the directory (readonly_paths, at restricted)"
            return Plan(path: path, files: [], note: note)
        }
        if directory == "/" { return refused("/ is the host's root") }
        let homes = [home, "/root"].compactMap { $0.map(OS.normalizedPath) }
        if homes.contains(directory) || (directory.hasPrefix("/home/") && !directory.dropFirst(6).contains("/")) {
            return refused("\(directory) is a home directory")
        }
        if OS.realPath(directory) != directory { return refused("\(directory) has a symbolic link in its path") }
        if Policy.overlapsSandboxLayout(directory) {
            return refused("\(directory) is part of the sandbox's own layout")
        }
        guard OS.isRegularFile(path), OS.realPath(path) == path else { return Plan(path: path, files: [], note: nil) }
        let socketPlace = Policy.isInSocketDirectory(directory)
        // A module or package that is a symbolic link (to /etc/passwd, say) is not shown: the
        // sandbox binds what a path names itself.
        var shown = (modules + (socketPlace ? [] : packages)).filter { OS.realPath($0) == $0 }
        var note: String? = socketPlace && !packages.isEmpty
            ? "the packages beside \(path) are not visible inside, since \(directory) is where hosts keep unix sockets; "
                + "`import` of them fails. Move the script and its packages into a directory of their own"
            : nil
        if shown.count > limit {
            note = "only the first \(limit) of the \(shown.count) modules and packages beside \(path) are visible inside"
            shown = Array(shown.prefix(limit))
        }
        return Plan(path: path, files: [path] + shown, note: note)
    }

    /// The `.py` files and package directories in `directory`, sorted.
    private static func neighbours(of directory: String, except script: String) -> (modules: [String], packages: [String]) {
        let names = ((try? OS.directoryEntries(directory)) ?? []).sorted()
        var modules: [String] = [], packages: [String] = []
        for name in names where !name.hasPrefix(".") {
            let full = (directory == "/" ? "" : directory) + "/" + name
            guard full != script else { continue }
            if name.hasSuffix(".py"), OS.isRegularFile(full) {
                modules.append(full)
            } else if OS.isDirectory(full), OS.isRegularFile(full + "/__init__.py") {
                packages.append(full)
            }
        }
        return (modules, packages)
    }
}
