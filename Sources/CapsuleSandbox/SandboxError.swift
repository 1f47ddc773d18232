import CapsuleOS

/// Why a sandbox could not be started, as a sentence a user can act on.
public enum SandboxError: Error, Sendable, Equatable, CustomStringConvertible {
    case workerMissing(String)
    case spawnFailed(SystemError)
    /// A setup stage failed inside capsule-worker (reported as `stage <name> <errno> <detail>`).
    case stage(StageFailure)
    /// The policy's `[sandbox] environment` names none in the store.
    case environmentMissing(name: String, store: String, known: [String])
    /// It is there but cannot be used as it is.
    case environmentUnusable(name: String, why: String)

    public var description: String {
        switch self {
        case .environmentUnusable(let name, let why):
            "the policy's [sandbox] environment `\(name)` cannot be used: \(why)"
        case .environmentMissing(let name, let store, let known):
            "the policy's [sandbox] environment `\(name)` does not exist (environments live in \(store)); make it with "
                + "`capsule env create \(name) -r requirements.txt`, or name one that exists: "
                + (known.isEmpty ? "there are none yet" : known.joined(separator: ", "))
        case .workerMissing(let text): text
        case .spawnFailed(let error): "could not start capsule-worker: \(error)"
        case .stage(let failure): failure.description
        }
    }
}

/// A sandbox setup stage that failed, and what the user can do about it.
public struct StageFailure: Sendable, Equatable, CustomStringConvertible {
    public let stage: String
    public let errno: Int32
    public let detail: String

    public init(stage: String, errno: Int32, detail: String) {
        self.stage = stage
        self.errno = errno
        self.detail = detail
    }

    private var reason: String { errno == 0 ? detail : "\(OS.errorText(errno)) (\(detail))" }

    public var description: String {
        switch stage {
        case "clone-namespaces" where [1, 28, 22, 12].contains(errno): // EPERM, ENOSPC, EINVAL, ENOMEM
            "the sandbox could not create its namespaces: user namespaces are disabled or exhausted on this host (\(OS.errorText(errno))). Enable them with `sysctl -w kernel.unprivileged_userns_clone=1` and `sysctl -w user.max_user_namespaces=15000`; inside a container, allow unshare/clone (for Docker: --security-opt seccomp=unconfined). `capsule doctor` shows what this host supports."
        case "user-namespace":
            "the sandbox could not write its uid/gid maps: \(reason). The supervisor needs write access to /proc/<pid>/uid_map; check that /proc is mounted normally (`capsule doctor`)."
        case "cgroup":
            "the sandbox could not join its cgroup: \(reason). Check that /sys/fs/cgroup is writable by the supervisor, or run `capsule doctor`."
        case "mount-private", "mount-root", "make-root", "bind-source", "bind-mount", "bind-remount", "mount-tmpfs",
             "dev", "pivot-root", "detach-old-root", "remount-root-readonly", "chdir-workspace":
            "the sandbox could not build its file system (stage \(stage)): \(reason). Mounting inside a user namespace may be blocked here (AppArmor or a container's seccomp profile); `capsule doctor` shows what works."
        case "collect-runtime":
            "could not find what the embedded Python needs: \(reason). Install Debian's libpython3-dev (`apt-get install libpython3-dev`)."
        case "readonly-path" where errno == 95: // ENOTSUP: a socket
            "a read-only path named by the policy is a unix socket (\(detail)): a read-only bind would not keep the code from connecting to it, so capsule refuses it."
        case "readonly-path" where errno == 40: // ELOOP
            "a read-only path named by the policy contains a symbolic link (\(detail)): capsule takes readonly_paths literally, so name the path's real location."
        case "readonly-path":
            "a read-only path named by the policy is not usable: \(reason)."
        case "mount" where errno == 17: // EEXIST
            "a mount's destination (\(detail)) is over or inside a path the sandbox's runtime already holds; mount at a path of your own, such as /src or /workspace/src."
        case "mount" where errno == 40: // ELOOP
            "a mount's host path contains a symbolic link (\(detail)): capsule takes paths literally, so name its real location."
        case "mount" where errno == 95: // ENOTSUP
            "a mount's host path is not a directory or a regular file (\(detail)): sockets and devices are not mounted."
        case "mount":
            "a mount's host path is not usable: \(reason)."
        case "mount-rw":
            "a read-write mount could not be made (\(detail)): \(OS.errorText(errno)). Run as root, capsule makes :rw mounts idmapped, so that the code writes as the directory's owner; that needs Linux 5.12 or later and a file system that supports idmapped mounts (ext4, xfs, btrfs; tmpfs from Linux 6.3). Run capsule as the directory's owner instead, or mount it read-only and collect results with --output-dir."
        case "python-path" where errno == 40: // ELOOP
            "a python_path directory named by the policy contains a symbolic link (\(detail)): capsule takes paths literally, so name the directory's real location."
        case "python-path" where errno == 20: // ENOTDIR
            "a python_path entry named by the policy is not a directory (\(detail)): list the directories that hold the modules."
        case "python-path":
            "a directory for the code's imports is not usable: \(reason)."
        case "seccomp":
            "the sandbox could not install its seccomp filter: \(reason). The kernel needs CONFIG_SECCOMP_FILTER; `capsule doctor` shows whether seccomp works here."
        case "landlock":
            "the sandbox could not apply Landlock: \(reason)."
        case "python-init":
            "the embedded Python failed to start: \(reason). Check that Debian's python3 standard library is installed (`apt-get install libpython3-dev`)."
        case "python-import":
            "the embedded Python could not load the capsule_worker package: \(reason). Check CAPSULE_WORKER_PYTHON or reinstall capsule."
        case "cpus":
            "the policy's limits.cpus cannot be applied: \(reason). List only cores this host has (`nproc` counts them; cores are numbered from 0)."
        case "arguments":
            "capsule-worker rejected its arguments: \(reason). This is a bug in capsule; please report it."
        default:
            "the sandbox failed at stage \(stage): \(reason)."
        }
    }
}
