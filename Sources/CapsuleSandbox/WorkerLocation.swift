import CapsuleOS

/// Where the sandbox's two halves live: the `capsule-worker` executable and the directory that
/// holds the `capsule_worker` Python package; and the store of environments a policy may name.
public struct WorkerLocation: Sendable, Equatable {
    public var executable: String
    public var pythonPackageDirectory: String
    public var environments: EnvironmentStore

    public init(executable: String, pythonPackageDirectory: String, environments: EnvironmentStore = .standard()) {
        self.executable = executable
        self.pythonPackageDirectory = pythonPackageDirectory
        self.environments = environments
    }

    /// Beside the running executable (and, for a development build, the repository's `worker/`),
    /// unless CAPSULE_WORKER / CAPSULE_WORKER_PYTHON name them.
    public static func find() throws(SandboxError) -> WorkerLocation {
        let exe = OS.executablePath() ?? ""
        let directory = String(exe[..<(exe.lastIndex(of: "/") ?? exe.endIndex)])
        let executable = OS.environment("CAPSULE_WORKER") ?? "\(directory)/capsule-worker"
        guard OS.isExecutable(executable) else {
            throw .workerMissing("capsule-worker was not found at \(executable); build it with `swift build` or set CAPSULE_WORKER")
        }
        if let package = OS.environment("CAPSULE_WORKER_PYTHON") {
            guard hasPackage(package) else {
                throw .workerMissing("CAPSULE_WORKER_PYTHON=\(package) holds no capsule_worker package")
            }
            return WorkerLocation(executable: executable, pythonPackageDirectory: package)
        }
        var candidates = ["\(directory)/../share/capsule/worker"]
        var up = directory
        for _ in 0..<6 { // .build/<triple>/debug → the repository
            candidates.append("\(up)/worker")
            up += "/.."
        }
        guard let package = candidates.first(where: hasPackage) else {
            throw .workerMissing("the capsule_worker Python package was not found near \(directory); set CAPSULE_WORKER_PYTHON to the directory that holds it")
        }
        return WorkerLocation(executable: executable, pythonPackageDirectory: OS.normalizedPath(package))
    }

    private static func hasPackage(_ directory: String) -> Bool {
        OS.fileExists("\(directory)/capsule_worker/__init__.py")
    }

    /// What `capsule-worker ARGUMENTS` prints (its informational modes: `--probe`, `--python-version`).
    func output(of arguments: [String]) throws(SandboxError) -> [UInt8] {
        do {
            let (mine, theirs) = try OS.socketPair()
            let pid: Int32
            do {
                pid = try OS.spawn(executable, arguments: arguments, descriptors: [(1, theirs)])
            } catch {
                OS.close(mine)
                OS.close(theirs)
                throw error
            }
            OS.close(theirs)
            defer { OS.close(mine) }
            var bytes: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = try buffer.withUnsafeMutableBytes { raw in Result { try OS.read(mine, into: raw) } }.get()
                if count == 0 { break }
                bytes += buffer[0..<count]
            }
            _ = try OS.wait(pid, block: true)
            return bytes
        } catch let error as SystemError {
            throw .spawnFailed(error)
        } catch {
            throw .spawnFailed(SystemError(arguments.first ?? "capsule-worker", errno: 5))
        }
    }

    /// The host libraries that the shared objects under `directory` need (an environment's C
    /// extensions), as the sandbox would find them.
    public func neededLibraries(under directory: String) throws(SandboxError) -> [String] {
        String(decoding: try output(of: ["--needed-libraries", directory]), as: UTF8.self).split(separator: "\n").map(String.init)
    }

    /// The embedded Python's version, "3.11": what an environment's packages must be built for.
    public func pythonVersion() throws(SandboxError) -> String {
        String(decoding: try output(of: ["--python-version"]), as: UTF8.self).filter { !$0.isWhitespace }
    }
}
