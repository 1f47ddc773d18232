import ArgumentParser
import CapsuleOS
import CapsulePolicy
import CapsuleRuntime
import CapsuleSandbox

struct Doctor: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Show which kernel features the sandbox can use on this host, found by trying each one."
    )

    func run() throws {
        print("capsule         \(CapsuleVersion.current)")
        let location: WorkerLocation
        do { location = try WorkerLocation.find() } catch {
            printError("capsule: \(error)")
            throw ExitCode(ExitStatus.capsuleError)
        }
        print("capsule-worker  \(location.executable)")
        print("python package  \(location.pythonPackageDirectory)/capsule_worker")
        let checks = try Doctor.checks(location)
        let width = checks.map(\.name.count).max() ?? 0
        for check in checks {
            let name = check.name.padding(to: width)
            print("\(check.works ? "ok " : "no ") \(name)  \(check.detail)")
        }
        let required = ["user-namespace", "pid-namespace", "mount-namespace", "net-namespace", "seccomp"]
        let missing = checks.filter { required.contains($0.name) && !$0.works }.map(\.name)
        let started = OS.now()
        do {
            let session = try Session(policy: Policy(level: .sandbox), location: location)
            session.shutdown()
            let milliseconds = Double(OS.now() - started) / 1e6
            print("ok  \("sandbox-start".padding(to: width))  Python \(session.pythonVersion) ready in \(Int(milliseconds)) ms")
        } catch {
            print("no  \("sandbox-start".padding(to: width))  \(error)")
            throw ExitCode.failure
        }
        if !missing.isEmpty {
            print("capsule cannot sandbox code here: \(missing.joined(separator: ", ")) unavailable")
            throw ExitCode.failure
        }
    }

    private static func checks(_ location: WorkerLocation) throws -> [FeatureCheck] {
        do { return try CapsuleSandbox.Doctor.probe(location: location) } catch {
            printError("capsule: \(error)")
            throw ExitCode(ExitStatus.capsuleError)
        }
    }
}

extension String {
    func padding(to width: Int) -> String { self + String(repeating: " ", count: max(0, width - count)) }
}
