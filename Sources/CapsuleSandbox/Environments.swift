import CapsuleOS
import CapsulePolicy
import CapsuleProtocol

/// The Python environments `capsule env` makes, and a policy's `[sandbox] environment` names:
/// a directory each under `$XDG_DATA_HOME/capsule/envs` (else `~/.local/share/capsule/envs`),
/// holding `site-packages` (what `pip install --target` put there, run outside the sandbox) and
/// `capsule-env.json` (how it was made). Inside the sandbox an environment's packages are a
/// read-only bind at `/opt/capsule/envs/NAME/site-packages`, on `sys.path` after the standard
/// library: no host path shows inside.
public struct EnvironmentStore: Sendable, Equatable {
    /// The directory holding one directory per environment.
    public let root: String

    public init(root: String) {
        self.root = root
    }

    /// The store of this user: `$XDG_DATA_HOME/capsule/envs`, or `$HOME/.local/share/capsule/envs`
    /// (the XDG default), or under the passwd entry's home when HOME is unset.
    public static func standard(environment: (String) -> String? = OS.environment) -> EnvironmentStore {
        if let data = environment("XDG_DATA_HOME"), data.hasPrefix("/") {
            return EnvironmentStore(root: OS.normalizedPath(data + "/capsule/envs"))
        }
        let home = environment("HOME").flatMap { $0.hasPrefix("/") ? $0 : nil } ?? OS.homeDirectory() ?? "/"
        return EnvironmentStore(root: OS.normalizedPath(home + "/.local/share/capsule/envs"))
    }

    /// Where an environment's packages appear inside the sandbox.
    public static func insidePath(of name: String) -> String { "/opt/capsule/envs/\(name)/site-packages" }

    public func directory(of name: String) -> String { root + "/" + name }

    public func sitePackages(of name: String) -> String { directory(of: name) + "/site-packages" }

    public func metadataFile(of name: String) -> String { directory(of: name) + "/capsule-env.json" }

    /// Whether the environment is there and whole (its metadata is written last).
    public func exists(_ name: String) -> Bool {
        Policy.isPythonEnvironmentName(name) && OS.isRegularFile(metadataFile(of: name)) && OS.isDirectory(sitePackages(of: name))
    }

    /// The environment's `capsule-env.json`, when it is there and whole.
    public func metadata(of name: String) -> JSONValue? {
        guard exists(name), let bytes = try? OS.readFile(metadataFile(of: name), limit: 1 << 20) else { return nil }
        return try? JSONValue.parse(bytes)
    }

    /// The environments there, by name.
    public func names() -> [String] {
        ((try? OS.directoryEntries(root)) ?? []).filter { exists($0) }.sorted()
    }

    /// What the sandbox needs of an environment: the host directory to bind, its symbolic links
    /// resolved (the sandbox opens what it binds without following links), and the host
    /// libraries its C extensions need (sonames, which the sandbox looks up only in the host's
    /// library directories); or why it cannot be used.
    public func resolve(_ name: String) -> Result<ResolvedEnvironment, SandboxError> {
        guard exists(name), let realRoot = OS.realPath(root) else {
            return .failure(.environmentMissing(name: name, store: root, known: names()))
        }
        // The store's own directory may lie behind a link (a home on another disk); below it,
        // an environment is what capsule made, so a link there (to /etc, say) is refused rather
        // than followed into the sandbox.
        for path in [directory(of: name), sitePackages(of: name)] where !OS.isDirectoryNotLink(path) {
            return .failure(.environmentUnusable(name: name, why: "\(path) is a symbolic link, not the directory capsule made; "
                                                 + "remove the environment (`capsule env rm \(name)`) and create it again"))
        }
        let real = realRoot + "/" + name + "/site-packages"
        let libraries = (metadata(of: name)?["libraries"]?.arrayValue ?? []).compactMap(\.stringValue).filter(Self.isLibraryName)
        return .success(ResolvedEnvironment(name: name, packages: real, libraries: libraries))
    }

    /// A soname as the sandbox takes one: no slashes, nothing hidden, `.so` in it.
    static func isLibraryName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count < 128 && !name.contains("/") && !name.hasPrefix(".") && name.contains(".so")
    }
}

/// An environment ready to bind: its name, the host directory of its packages and the host
/// libraries they need.
public struct ResolvedEnvironment: Sendable, Equatable {
    public let name: String
    public let packages: String
    public let libraries: [String]

    public init(name: String, packages: String, libraries: [String] = []) {
        self.name = name
        self.packages = packages
        self.libraries = libraries
    }
}
