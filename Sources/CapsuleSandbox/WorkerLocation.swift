import CapsuleOS

/// Where the sandbox's two halves live: the `capsule-worker` executable and the directory that
/// holds the `capsule_worker` Python package.
public struct WorkerLocation: Sendable, Equatable {
    public var executable: String
    public var pythonPackageDirectory: String

    public init(executable: String, pythonPackageDirectory: String) {
        self.executable = executable
        self.pythonPackageDirectory = pythonPackageDirectory
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
}
