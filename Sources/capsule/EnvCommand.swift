#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import CapsuleOS
import CapsulePolicy
import CapsuleProtocol
import CapsuleRuntime
import CapsuleSandbox

/// `capsule env`: Python environments made outside the sandbox, for a policy to name.
struct EnvCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "env",
        abstract: "Make and keep Python environments whose packages sandboxed code can import.",
        discussion: """
            pip runs outside the sandbox, with the host's Python of the embedded interpreter's version, \
            and installs into a directory capsule keeps ($XDG_DATA_HOME/capsule/envs, or \
            ~/.local/share/capsule/envs). A policy names one in [sandbox] environment = "NAME"; the \
            sandbox sees its packages read-only at /opt/capsule/envs/NAME/site-packages, on sys.path.
            """,
        subcommands: [Create.self, List.self, Show.self, Remove.self]
    )

    func run() throws { throw missingSubcommand(Self.self) }

    static func store() -> EnvironmentStore { EnvironmentStore.standard() }

    static func fail(_ text: String, status: Int32 = ExitStatus.capsuleError) -> ExitCode {
        printError("capsule: \(text)")
        return ExitCode(status)
    }

    /// The failure for a name the store does not hold.
    static func missing(_ name: String, in store: EnvironmentStore) -> ExitCode {
        fail("no environment \(name) in \(store.root); `capsule env list` shows those there are")
    }

    static func checkName(_ name: String) throws {
        guard Policy.isPythonEnvironmentName(name) else {
            throw ValidationError("`\(name)` is not an environment's name: 1 to 64 letters, digits, `.`, `_` and `-`, starting with a letter or digit")
        }
    }

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create",
            abstract: "Install packages into a new environment with pip (outside the sandbox).",
            discussion: "For example: capsule env create science -r requirements.txt, or capsule env create plots matplotlib pandas"
        )

        @Argument(help: "The environment's name (letters, digits, `.`, `_`, `-`).")
        var name: String

        @Argument(help: "Packages to install, as pip takes them (`numpy`, `pandas==2.2.3`).")
        var packages: [String] = []

        @Option(name: [.customShort("r"), .customLong("requirement")], help: "A requirements file (more than one may be given).")
        var requirements: [String] = []

        func validate() throws {
            try EnvCommand.checkName(name)
            guard !packages.isEmpty || !requirements.isEmpty else {
                throw ValidationError("name what to install: packages, or -r requirements.txt")
            }
        }

        func run() throws {
            let store = EnvCommand.store()
            guard !OS.fileExists(store.directory(of: name)) else {
                throw EnvCommand.fail("the environment \(name) exists already (\(store.directory(of: name))); "
                                      + "`capsule env rm \(name)` removes it")
            }
            for file in requirements where !OS.isRegularFile(file) {
                throw EnvCommand.fail("the requirements file \(file) does not exist")
            }
            let version: String, location: WorkerLocation
            do {
                location = try WorkerLocation.find()
                version = try location.pythonVersion()
            } catch {
                throw EnvCommand.fail("\(error)")
            }
            let python = "/usr/bin/python\(version)"
            guard OS.isExecutable(python) else {
                throw EnvCommand.fail("the sandbox embeds Python \(version), and \(python) is missing to install packages for it: "
                                      + "apt-get install python\(version) python3-pip")
            }
            let partial = store.root + "/.\(name).partial-\(OS.processID())"
            do {
                try OS.makeDirectories(partial + "/site-packages")
            } catch {
                throw EnvCommand.fail("cannot make \(partial): \(error)")
            }
            var arguments = ["-m", "pip", "install", "--target", partial + "/site-packages", "--no-user", "--no-input",
                             "--disable-pip-version-check", "--root-user-action=ignore"]
            for file in requirements { arguments += ["-r", file] }
            arguments += packages
            print("capsule: installing into \(name) with \(python) -m pip")
            fflush(nil) // all streams: ours before pip's own output
            let status = Self.runToEnd(python, arguments)
            guard status == 0 else {
                try? OS.removeTree(partial)
                let why = status == 127 ? "\(python) could not be started"
                    : "pip failed (exit status \(status)); nothing was kept. If pip itself is missing: apt-get install python3-pip"
                throw EnvCommand.fail(why, status: status == 127 ? ExitStatus.capsuleError : Int32(status))
            }
            if let note = FontCache.prepare(sitePackages: partial + "/site-packages", location: location) { print("capsule: \(note)") }
            let libraries = (try? location.neededLibraries(under: partial + "/site-packages")) ?? []
            let metadata = JSONValue.object([
                ("name", .string(name)), ("python", .string(version)), ("created", .string(OS.timestamp())),
                ("packages", .array(packages.map(JSONValue.string))),
                ("libraries", .array(libraries.map(JSONValue.string))),
                ("requirements", .array(requirements.map { .string(OS.normalizedPath($0.hasPrefix("/") ? $0 : (OS.currentDirectory() ?? "/") + "/" + $0)) })),
            ])
            do {
                try OS.writeFile(partial + "/capsule-env.json", metadata.serialized() + [UInt8(ascii: "\n")])
                try OS.rename(partial, to: store.directory(of: name))
            } catch {
                try? OS.removeTree(partial)
                throw EnvCommand.fail("cannot keep the environment: \(error)")
            }
            let installed = EnvironmentInfo.read(store, name)?.distributions.count ?? 0
            print("capsule: environment \(name) is ready: \(installed) distribution\(installed == 1 ? "" : "s") for Python \(version). "
                  + "Use it with [sandbox] environment = \"\(name)\" in a policy.")
        }

        /// Runs a program with this process's standard streams and environment; its exit status
        /// (127 when it could not start).
        static func runToEnd(_ path: String, _ arguments: [String]) -> Int {
            guard let pid = try? OS.spawn(path, arguments: arguments, descriptors: [(0, 0), (1, 1), (2, 2)], inheritEnvironment: true)
            else { return 127 }
            switch (try? OS.wait(pid, block: true)) ?? nil {
            case .exited(let code): return Int(code)
            case .signaled(let signal): return 128 + Int(signal)
            case nil: return 127
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List the environments.")

        func run() throws {
            let store = EnvCommand.store()
            let names = store.names()
            guard !names.isEmpty else {
                print("no environments in \(store.root); `capsule env create NAME -r requirements.txt` makes one")
                return
            }
            let infos = names.compactMap { EnvironmentInfo.read(store, $0) }
            let width = max(4, infos.map(\.name.count).max() ?? 0)
            print("\("NAME".padding(to: width))  PYTHON  DISTRIBUTIONS  CREATED")
            for info in infos {
                print("\(info.name.padding(to: width))  \(info.python.padding(to: 6))  \(String(info.distributions.count).padding(to: 13))  \(info.created)")
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "show", abstract: "Show an environment's packages and where it is.")

        @Argument(help: "The environment's name.")
        var name: String

        func validate() throws { try EnvCommand.checkName(name) }

        func run() throws {
            let store = EnvCommand.store()
            guard let info = EnvironmentInfo.read(store, name) else { throw EnvCommand.missing(name, in: store) }
            print("environment   \(info.name)")
            print("python        \(info.python)")
            print("created       \(info.created)")
            print("host path     \(store.sitePackages(of: name))")
            print("in sandbox    \(EnvironmentStore.insidePath(of: name))")
            if !info.requested.isEmpty { print("requested     \(info.requested.joined(separator: " "))") }
            print("distributions \(info.distributions.count)")
            for (distribution, version) in info.distributions { print("  \(distribution) \(version)") }
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove an environment.")

        @Argument(help: "The environment's name.")
        var name: String

        func validate() throws { try EnvCommand.checkName(name) }

        func run() throws {
            let store = EnvCommand.store()
            guard OS.fileExists(store.directory(of: name)) else { throw EnvCommand.missing(name, in: store) }
            do { try OS.removeTree(store.directory(of: name)) } catch { throw EnvCommand.fail("cannot remove \(name): \(error)") }
            print("capsule: removed the environment \(name)")
        }
    }
}

/// matplotlib's list of fonts, which it builds on first use in each session (about 0.4 s of the
/// first `import matplotlib.pyplot`, as the session's `/workspace` starts empty). `env create`
/// builds it once, in a sandbox with the new packages (their code never runs outside one), and
/// keeps it in `site-packages/.capsule-cache/matplotlib`, whence the worker copies it into a
/// session's cache when matplotlib is imported (worker/rich.py). Its font paths are relative to
/// matplotlib's own data, so the list holds wherever the packages are.
enum FontCache {
    static let directory = ".capsule-cache/matplotlib"

    static let code = #"""
        import json, os
        os.environ["MPL_IGNORE_SYSTEM_FONTS"] = "1"  # the sandbox has none; older matplotlib finds none there either
        import matplotlib, matplotlib.font_manager as fm
        name = f"fontlist-v{fm.FontManager.__version__}.json"
        with open(os.path.join(matplotlib.get_cachedir(), name)) as f:
            text = f.read()
        fonts = json.loads(text)
        if all(not entry["fname"].startswith("/") for entry in fonts["ttflist"] + fonts["afmlist"]):
            print(name)
            print(text, end="")
        """#

    /// Builds the list where the packages hold matplotlib; nil when done or not needed, else a
    /// note saying why there is none (sessions then build their own, as without capsule).
    static func prepare(sitePackages: String, location: WorkerLocation) -> String? {
        guard OS.isDirectory(sitePackages + "/matplotlib") else { return nil }
        let why = "matplotlib's font list was not prepared, so each session builds its own (about 0.4 s of its first `import matplotlib.pyplot`)"
        var output = ""
        do {
            var policy = try PolicyLoader.parse("level = \"restricted\"", file: "<capsule env create>")
            policy.pythonPath = [sitePackages]
            let session = try Session(policy: policy, location: location)
            defer { session.shutdown(grace: 1) }
            let outcome = session.execute(code, wantResult: false) { event in
                if case .stream(.stdout, let text) = event, output.utf8.count < 1 << 24 { output += text }
                return nil
            }
            guard case .finished(status: .ok, _, _, _) = outcome else { return "\(why): the sandbox reported \(outcome)" }
        } catch {
            return "\(why): \(error)"
        }
        let lines = output.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false)
        guard lines.count == 2, let name = lines.first.map(String.init), isFontListName(name) else {
            return "\(why): matplotlib named no font list, or fonts outside its own data"
        }
        do {
            try OS.makeDirectories(sitePackages + "/" + directory)
            try OS.writeFile(sitePackages + "/" + directory + "/" + name, Array(lines[1].utf8))
        } catch {
            return "\(why): \(error)"
        }
        return nil
    }

    /// `fontlist-v3.11.0.json`: the names matplotlib gives its list, and nothing that leaves the directory.
    static func isFontListName(_ name: String) -> Bool {
        guard name.hasPrefix("fontlist-v"), name.hasSuffix(".json") else { return false }
        let version = name.dropFirst("fontlist-v".count).dropLast(".json".count)
        return !version.isEmpty && version.count <= 32 && version.allSatisfy { $0.isNumber || $0 == "." } && !version.contains("..")
    }
}

/// What `capsule env list` and `show` say of an environment: its metadata file and the
/// distributions pip left in it (their `.dist-info` directories).
struct EnvironmentInfo {
    let name: String
    let python: String
    let created: String
    let requested: [String]
    let distributions: [(String, String)]

    static func read(_ store: EnvironmentStore, _ name: String) -> EnvironmentInfo? {
        guard let json = store.metadata(of: name) else { return nil }
        let requested = (json["packages"]?.arrayValue ?? []).compactMap(\.stringValue)
            + (json["requirements"]?.arrayValue ?? []).compactMap(\.stringValue).map { "-r \($0)" }
        let distributions = ((try? OS.directoryEntries(store.sitePackages(of: name))) ?? []).compactMap { entry -> (String, String)? in
            guard entry.hasSuffix(".dist-info") else { return nil }
            let stem = entry.dropLast(".dist-info".count)
            guard let dash = stem.lastIndex(of: "-") else { return nil }
            return (String(stem[..<dash]), String(stem[stem.index(after: dash)...]))
        }.sorted { $0.0.lowercased() < $1.0.lowercased() }
        return EnvironmentInfo(name: name, python: json["python"]?.stringValue ?? "?", created: json["created"]?.stringValue ?? "?",
                               requested: requested, distributions: distributions)
    }
}
