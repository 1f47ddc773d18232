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
/// tmpfs size) or by the supervisor (wall timeout, output bytes, frame size).
public struct Limits: Sendable, Equatable {
    public var memoryMB = 512
    public var cpuSeconds = 60
    public var timeoutSeconds = 30.0
    public var maxFDs = 100
    public var maxProcesses = 64
    public var maxOutputBytes = 16 << 20
    public var maxFileMB = 64
    public var workspaceMB = 64
    public var maxFrameBytes = 16 << 20

    public init() {}
}

/// A validated, immutable policy: what the sandboxed code may do and how much of it.
public struct Policy: Sendable, Equatable {
    public var level: Level
    public var limits: Limits
    public var network: NetworkMode
    /// Environment variables the code sees; nothing else of the host's environment is passed.
    public var environment: [String: String]
    /// Where the policy came from: a level name or a file path.
    public var origin: String

    public init(level: Level, limits: Limits = Limits(), network: NetworkMode? = nil,
                environment: [String: String] = [:], origin: String? = nil) {
        self.level = level
        self.limits = limits
        self.network = network ?? (level == .unrestricted ? .host : .none)
        self.environment = environment
        self.origin = origin ?? level.rawValue
    }
}
