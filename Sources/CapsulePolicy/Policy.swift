import CapsuleOS

/// The five policy levels, from tightest to loosest (DESIGN.md section 3).
public enum Level: String, CaseIterable, Sendable, Comparable {
    case sandbox, restricted, standard, trusted, unrestricted

    public static func < (lhs: Level, rhs: Level) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }
}

public enum NetworkMode: String, Sendable, Equatable {
    /// A network namespace with nothing in it, and no inet sockets.
    case none
    /// The host's network (only at `unrestricted`).
    case host
}

/// Resource limits. Every one is enforced: by the kernel inside the sandbox (rlimits, cgroup,
/// tmpfs size, CPU affinity) or by the supervisor (wall timeout, output bytes, frame size).
public struct Limits: Sendable, Equatable {
    public var memoryMB = 512
    public var cpuSeconds = 60
    public var timeoutSeconds = 30.0
    public var maxFDs = 100
    public var maxProcesses = 64
    public var maxOutputBytes = 16 << 20
    public var maxFileBytes = 64 << 20
    public var workspaceMB = 64
    public var maxFrameBytes = 16 << 20
    /// The cores the code may run on; nil means all of them.
    public var cpus: [Int]?

    public init() {}
}

/// What every capability table takes.
public struct CapabilityGrant: Sendable, Equatable {
    public var enabled = true
    public var ratePerMinute: Int?
    public var maxBytes: Int?
    /// A person approves each call.
    public var ask = false

    public init() {}
}

public struct EnvCapability: Sendable, Equatable {
    public var grant = CapabilityGrant()
    /// Host environment variables the code may read through the capability.
    public var names: [String] = []

    public init() {}
}

public struct FileCapability: Sendable, Equatable {
    public var grant = CapabilityGrant()
    public var read: [String] = []
    public var write: [String] = []
    public var include = ["**"]
    public var exclude: [String] = []

    public init() {}
}

/// A secret the broker attaches to requests for one host; the code never sees it.
public struct NetCredential: Sendable, Equatable {
    public enum Source: Sendable, Equatable {
        /// Read from capsule's own environment when the request is made.
        case environment(String)
        /// Read from a file on the host when the request is made.
        case file(String)
    }
    public var header: String
    public var source: Source

    public init(header: String, source: Source) {
        self.header = header
        self.source = source
    }
}

public struct NetCapability: Sendable, Equatable {
    public var grant = CapabilityGrant()
    /// Host (lowercased, as in `urls`) → the credential sent with every request to it.
    public var credentials: [String: NetCredential] = [:]
    public var urls: [String] = []
    public var methods = ["GET"]
    public var websocket = false
    public var timeoutSeconds: Double?

    public init() {}
}

public struct DBCapability: Sendable, Equatable {
    public var grant = CapabilityGrant()
    /// Database name → absolute path of the SQLite file.
    public var databases: [String: String] = [:]
    public var write = false
    public var maxRows: Int?

    public init() {}
}

public struct CustomCapability: Sendable, Equatable {
    public var grant = CapabilityGrant()
    /// The plugin program; empty for a capability a Swift program registers itself (CapsuleKit).
    public var command: [String] = []

    public init(grant: CapabilityGrant = CapabilityGrant(), command: [String] = []) {
        self.grant = grant
        self.command = command
    }
}

/// The capabilities a policy grants; nil means the table is absent (not granted).
public struct Capabilities: Sendable, Equatable {
    public var display: CapabilityGrant? = CapabilityGrant()
    public var input: CapabilityGrant?
    public var env: EnvCapability?
    public var file: FileCapability?
    public var net: NetCapability?
    public var db: DBCapability?
    public var custom: [String: CustomCapability] = [:]

    public init() {}
}

extension Capabilities {
    /// What this build of capsule enforces: a capability's name (its table has effect) or
    /// `name.key` for one of the keys every table takes (`input.ask`). Everything else a policy
    /// grants is checked but has no effect yet, and `policy explain` and `check` say so. The
    /// broker adds each name as it starts serving that capability. Today: `input()` answers only
    /// where `input` is granted (its common keys do not apply to `input()`), and the broker serves
    /// `display`, `env`, `file`, `net`, `db` and plugins (`custom`) with every common key.
    public static let enforcedCapabilities: Set<String> = Set(["input"]).union(
        ["display", "env", "file", "net", "db", "custom"].flatMap { name in [name] + ["ask", "rate_per_minute", "max_bytes"].map { "\(name).\($0)" } })
}

/// The `[audit]` table: where the session's audit log goes and how it is kept.
public struct AuditSettings: Sendable, Equatable {
    /// When a written line is forced to disk.
    public enum Fsync: String, Sendable, CaseIterable {
        /// After every line, before the action it records goes on: a power failure loses nothing.
        case always
        /// At most every 100 ms and at every session's end: a power failure loses at most that.
        case batch
        /// Left to the kernel's writeback (about 30 s): a power failure may lose that much.
        case never
    }

    /// The log file (absolute); nil when only `capsule run --audit FILE` names one.
    public var path: String?
    public var fsync: Fsync = .batch
    /// A file holding the HMAC key that makes the chain unforgeable without it.
    public var keyFile: String?
    /// Start a new file (the chain carried across) once the log reaches this many MiB.
    public var rotateMB: Int?

    public init(path: String? = nil, fsync: Fsync = .batch, keyFile: String? = nil, rotateMB: Int? = nil) {
        self.path = path
        self.fsync = fsync
        self.keyFile = keyFile
        self.rotateMB = rotateMB
    }
}

/// The `[pool]` table: how many sessions a warm pool (`SessionPool`) keeps started for the policy.
/// A pooled session is handed out once, never again, so each user gets a fresh sandbox.
public struct PoolSettings: Sendable, Equatable {
    /// Started sessions kept waiting, unused.
    public var minIdle: Int
    /// The most sessions the pool has at once, waiting and handed out together.
    public var max: Int

    public init(minIdle: Int = 2, max: Int = 10) {
        self.minIdle = minIdle
        self.max = max
    }
}

/// A validated, immutable policy: what the sandboxed code may do and how much of it.
public struct Policy: Sendable, Equatable {
    public var level: Level
    public var description: String?
    public var limits: Limits
    public var network: NetworkMode
    /// Environment variables the code sees; nothing else of the host's environment is passed.
    public var environment: [String: String]
    /// Host paths bound read-only at the same path.
    public var readonlyPaths: [String]
    /// The `capsule env` environment whose packages the code imports (`[sandbox] environment`),
    /// bound read-only at /opt/capsule/envs/NAME/site-packages and on `sys.path`.
    public var pythonEnvironment: String? = nil
    /// Host directories bound read-only at the same path and put on `sys.path`, after the
    /// environment's packages (`[sandbox] python_path`).
    public var pythonPath: [String] = []
    /// Host directories or files shown at a path of the policy's choosing, read-only unless `:rw`
    /// (`[sandbox] mounts`, `capsule run --mount`).
    public var mounts: [Mount] = []
    /// Whether the code may start Python itself again (`[sandbox] python_subprocess`):
    /// `sys.executable` runs a new interpreter under the same sandbox; nothing else can be executed.
    public var pythonSubprocess = false
    /// Modules every session imports before its first execution (`[sandbox] preload`): in a pool,
    /// while the session warms up, so the first execution pays nothing for them.
    public var preload: [String] = []
    public var capabilities: Capabilities
    /// The `[audit]` table; nil when the policy has none (a run may still audit with `--audit`).
    public var audit: AuditSettings?
    /// The `[pool]` table; nil when the policy has none (a pool then keeps the defaults).
    public var pool: PoolSettings?
    /// Where the policy came from: a level name or a file path.
    public var origin: String

    public init(level: Level, limits: Limits = Limits(), network: NetworkMode? = nil,
                environment: [String: String] = [:], readonlyPaths: [String] = [],
                capabilities: Capabilities = Capabilities(), description: String? = nil, origin: String? = nil) {
        self.level = level
        self.description = description
        self.limits = limits
        self.network = network ?? (level == .unrestricted ? .host : .none)
        self.environment = environment
        self.readonlyPaths = readonlyPaths
        self.capabilities = capabilities
        self.origin = origin ?? level.rawValue
    }
}

extension Policy {
    /// Whether `name` may name a `capsule env` environment (`[sandbox] environment`): 1 to 64
    /// letters, digits, `.`, `_` and `-`, starting with a letter or digit.
    public static func isPythonEnvironmentName(_ name: String) -> Bool { Validate.isEnvironmentDirectoryName(name) }
}

extension Policy {
    /// Whether `path` is, contains or lies under a part of the sandbox's own layout
    /// (`/usr/lib/capsule`, `/opt/capsule`, `/workspace`, `/dev`, `/proc`, ...).
    public static func overlapsSandboxLayout(_ path: String) -> Bool {
        Validate.reservedOverlap(path) != nil
    }

    /// Whether `path` is or lies under a directory where hosts keep unix sockets (`/tmp`, `/run`, ...).
    public static func isInSocketDirectory(_ path: String) -> Bool {
        Validate.socketDirectories.contains { path == $0 || path.hasPrefix($0 + "/") }
    }
}

/// A host path shown inside at `destination`: `HOST:DEST` or `HOST:DEST:ro` read-only,
/// `HOST:DEST:rw` writable (level `standard` or higher).
public struct Mount: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var destination: String
    /// `:rw`: the code writes into the host tree (as its owner; see docs/policy.md).
    public var writable: Bool

    public init(host: String, destination: String, writable: Bool = false) {
        self.host = host
        self.destination = destination
        self.writable = writable
    }

    public var description: String { "\(host):\(destination)\(writable ? ":rw" : "")" }

    /// Reads `HOST:DEST[:ro|:rw]` (HOST made absolute from `workingDirectory` when relative, as a
    /// command line gives it), or says what is wrong with it.
    public static func parse(_ text: String, workingDirectory: String? = nil) -> Result<Mount, MountProblem> {
        var parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        var writable = false
        if parts.count == 3 {
            switch parts[2] {
            case "ro": parts.removeLast()
            case "rw":
                writable = true
                parts.removeLast()
            default: return .failure(MountProblem("`\(text)`: the mode after the second `:` is `ro` or `rw`, not `\(parts[2])`"))
            }
        }
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
            return .failure(MountProblem("`\(text)` is not HOST:DEST, HOST:DEST:ro or HOST:DEST:rw, like /srv/repo:/src:ro (paths hold no `:`)"))
        }
        var host = parts[0]
        if let workingDirectory, !host.hasPrefix("/") { host = OS.normalizedPath(workingDirectory + "/" + host) }
        let destination = parts[1]
        for path in [host, destination] where !Validate.isCleanAbsolutePath(path) {
            return .failure(MountProblem("`\(text)`: `\(path)` must be an absolute path without `.` or `..` parts or control characters"))
        }
        if let problem = Validate.readonlyPathProblem(host) { return .failure(MountProblem("`\(text)`: `\(host)` \(problem)")) }
        let inWorkspace = destination.hasPrefix("/workspace/")
        if destination == "/" || (!inWorkspace && Policy.overlapsSandboxLayout(destination)) {
            return .failure(MountProblem("`\(text)`: `\(destination)` is part of the sandbox's own layout; mount at a path of "
                                         + "your own, such as /src or /workspace/src"))
        }
        return .success(Mount(host: host, destination: destination, writable: writable))
    }
}

public struct MountProblem: Error, Sendable, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
}

extension Policy {
    /// The policy with `mounts` added, held to the rules a policy file's mounts are (a level of
    /// `restricted` or above, `standard` for `:rw`); for `capsule run --mount`.
    public func adding(mounts specs: [String], workingDirectory: String) throws(MountProblem) -> Policy {
        guard !specs.isEmpty else { return self }
        var policy = self
        for spec in specs {
            switch Mount.parse(spec, workingDirectory: workingDirectory) {
            case .success(let mount):
                let needed: Level = mount.writable ? .standard : .restricted
                guard level >= needed else {
                    throw MountProblem("--mount \(mount.writable ? "HOST:DEST:rw " : "")needs level `\(needed.rawValue)` or higher; "
                                       + "the policy \(origin) is `\(level.rawValue)` (--policy \(needed.rawValue), or a policy of your own at that level)")
                }
                policy.mounts.append(mount)
            case .failure(let problem): throw MountProblem("--mount \(problem.message)")
            }
        }
        return policy
    }
}
