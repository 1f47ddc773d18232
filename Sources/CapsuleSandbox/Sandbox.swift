import CapsulePolicy
import CapsuleOS

/// A running capsule-worker: the launcher's pid, the channel to the Python worker inside, the
/// status pipe on which setup failures and the final outcome arrive, and the read ends of the
/// sandbox's file descriptors 1 and 2 (non-blocking), where output written to them directly goes.
public struct SandboxProcess: Sendable {
    public let pid: Int32
    public let channel: Int32
    public let status: Int32
    public let stdout: Int32
    public let stderr: Int32
}

/// What one session adds to its policy's sandbox.
public struct LaunchExtras: Sendable, Equatable {
    /// Host files and directories bound read-only at their own paths (a script's own modules, `ScriptFiles.plan`).
    public var scriptFiles: [String]
    /// A host directory (absolute, existing) that receives what the code left in /workspace/out once
    /// the sandbox has ended, at most `outputMaxBytes` of it (`capsule run --output-dir`).
    public var outputDirectory: String?
    public var outputMaxBytes: Int

    public init(scriptFiles: [String] = [], outputDirectory: String? = nil, outputMaxBytes: Int = 0) {
        self.scriptFiles = scriptFiles
        self.outputDirectory = outputDirectory
        self.outputMaxBytes = outputMaxBytes
    }

    var arguments: [String] {
        scriptFiles.flatMap { ["--script-file", $0] }
            + (outputDirectory.map { ["--output-dir", $0, "--output-max-bytes", String(outputMaxBytes)] } ?? [])
    }
}

public enum Sandbox {
    /// Starts a sandbox for `policy`. Setup continues inside capsule-worker; a stage failure
    /// arrives later on `status` (the session reads it when the channel closes before `ready`).
    public static func launch(_ policy: Policy, location: WorkerLocation, extras: LaunchExtras = LaunchExtras()) throws(SandboxError) -> SandboxProcess {
        let environment = try policy.pythonEnvironment.map { name throws(SandboxError) in try location.environments.resolve(name).get() }
        var mine: [Int32] = [], theirs: [Int32] = []
        defer { theirs.forEach(OS.close) }
        do {
            let channel = try OS.socketPair()
            mine.append(channel.0); theirs.append(channel.1)
            let status = try OS.socketPair()
            mine.append(status.0); theirs.append(status.1)
            // Pipes, not sockets: the worker asks how much of them is still unread (docs/protocol.md).
            let stdout = try OS.pipe()
            mine.append(stdout.read); theirs.append(stdout.write)
            let stderr = try OS.pipe()
            mine.append(stderr.read); theirs.append(stderr.write)
            try OS.setNonBlocking(stdout.read)
            try OS.setNonBlocking(stderr.read)
            let pid = try OS.spawn(location.executable,
                                   arguments: arguments(for: policy, location: location, environment: environment)
                                       + extras.arguments,
                                   descriptors: [(1, stdout.write), (2, stderr.write), (3, channel.1), (4, status.1)])
            return SandboxProcess(pid: pid, channel: channel.0, status: status.0, stdout: stdout.read, stderr: stderr.read)
        } catch {
            mine.forEach(OS.close)
            throw .spawnFailed(error)
        }
    }

    /// capsule-worker's command line for a policy (the limits the kernel enforces inside), with
    /// the environment the policy names.
    public static func arguments(for policy: Policy, location: WorkerLocation, environment: ResolvedEnvironment? = nil) -> [String] {
        let limits = policy.limits
        var arguments = [
            "--memory-mb", String(limits.memoryMB),
            "--cpu-seconds", String(limits.cpuSeconds),
            "--max-fds", String(limits.maxFDs),
            "--max-processes", String(limits.maxProcesses),
            "--max-file-bytes", String(limits.maxFileBytes),
            "--workspace-mb", String(limits.workspaceMB),
            "--max-frame-bytes", String(limits.maxFrameBytes),
            "--network", policy.network.rawValue,
            "--worker-path", location.pythonPackageDirectory,
        ]
        if let cpus = limits.cpus { arguments += ["--cpus", cpus.map(String.init).joined(separator: ",")] }
        if policy.pythonSubprocess { arguments += ["--python-subprocess", "yes"] }
        for path in policy.readonlyPaths { arguments += ["--readonly", path] }
        // sys.path after the standard library: the environment's packages, then python_path.
        // (the worker binds NAME's packages at EnvironmentStore.insidePath(of: NAME)).
        if let environment {
            arguments += ["--environment", "\(environment.name)=\(environment.packages)"]
            for library in environment.libraries { arguments += ["--library", library] }
        }
        for path in policy.pythonPath { arguments += ["--python-path", path] }
        for mount in policy.mounts { arguments += ["--mount", mount.description] }
        for (name, value) in policy.environment.sorted(by: { $0.key < $1.key }) {
            arguments += ["--env", "\(name)=\(value)"]
        }
        return arguments
    }
}
