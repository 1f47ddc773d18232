import CapsulePolicy
import CapsuleOS

/// A running capsule-worker: the launcher's pid, the channel to the Python worker inside, and the
/// status pipe on which setup failures and the final outcome arrive.
public struct SandboxProcess: Sendable {
    public let pid: Int32
    public let channel: Int32
    public let status: Int32
}

public enum Sandbox {
    /// Starts a sandbox for `policy`. Setup continues inside capsule-worker; a stage failure
    /// arrives later on `status` (the session reads it when the channel closes before `ready`).
    public static func launch(_ policy: Policy, location: WorkerLocation) throws(SandboxError) -> SandboxProcess {
        let channel: (mine: Int32, theirs: Int32)
        let status: (mine: Int32, theirs: Int32)
        do { channel = try OS.socketPair() } catch { throw .spawnFailed(error) }
        do { status = try OS.socketPair() } catch {
            OS.close(channel.mine)
            OS.close(channel.theirs)
            throw .spawnFailed(error)
        }
        defer {
            OS.close(channel.theirs)
            OS.close(status.theirs)
        }
        do {
            let pid = try OS.spawn(location.executable, arguments: arguments(for: policy, location: location),
                                   descriptors: [(3, channel.theirs), (4, status.theirs)])
            return SandboxProcess(pid: pid, channel: channel.mine, status: status.mine)
        } catch {
            OS.close(channel.mine)
            OS.close(status.mine)
            throw .spawnFailed(error)
        }
    }

    /// capsule-worker's command line for a policy (the limits the kernel enforces inside).
    public static func arguments(for policy: Policy, location: WorkerLocation) -> [String] {
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
        for path in policy.readonlyPaths { arguments += ["--readonly", path] }
        for (name, value) in policy.environment.sorted(by: { $0.key < $1.key }) {
            arguments += ["--env", "\(name)=\(value)"]
        }
        return arguments
    }
}
