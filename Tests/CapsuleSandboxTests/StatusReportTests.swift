import CapsulePolicy
import Testing
@testable import CapsuleSandbox

@Suite struct StatusReportTests {
    @Test func parsesEveryKindOfLine() {
        var report = StatusReport()
        let tail = report.consume("note no cgroup here\nexit 3\noom 2\nsignal 9\nstage bind-mount 2 /tmp/x y\npart")
        #expect(tail == "part")
        #expect(report.notes == ["no cgroup here"])
        #expect(report.exitCode == 3)
        #expect(report.signal == 9)
        #expect(report.memoryKills == 2)
        #expect(report.failure == StageFailure(stage: "bind-mount", errno: 2, detail: "/tmp/x y"))
    }

    @Test func usageAndTheOutputCopyAreRead() {
        var report = StatusReport()
        _ = report.consume("output-refused /workspace/out/l: a symbolic link\noutput 2 1007 1\nusage 1500000 9000 6029312\n")
        #expect(report.usage == StatusReport.Usage(cpuSeconds: 1.5, peakRSSBytes: 9000 * 1024, peakMemoryBytes: 6029312))
        #expect(report.outputs == StatusReport.OutputCopy(files: 2, bytes: 1007, refused: 1))
        #expect(report.outputRefusals == ["/workspace/out/l: a symbolic link"] && report.outputFailure == nil)
        var bare = StatusReport()
        _ = bare.consume("usage 20 100 -1\noutput-failed /out\n")
        #expect(bare.usage?.peakMemoryBytes == nil && bare.outputFailure == "/out" && bare.outputs == nil)
    }

    @Test func theFirstStageFailureIsTheCause() {
        // A child that fails makes the launcher's next write fail too; that second line is noise.
        var report = StatusReport()
        _ = report.consume("stage make-root 30 /tmp/etc/passwd\nstage release-sandbox 32 write\n")
        #expect(report.failure == StageFailure(stage: "make-root", errno: 30, detail: "/tmp/etc/passwd"))
    }

    @Test func linesSplitAcrossReadsAreJoined() {
        var report = StatusReport()
        var tail = report.consume("ex")
        #expect(report.exitCode == nil)
        tail = report.consume(tail + "it 4")
        #expect(report.exitCode == nil)
        tail = report.consume(tail + "\n")
        #expect(tail == "")
        #expect(report.exitCode == 4)
    }

    @Test func ignoresUnknownAndIncompleteLines() {
        var report = StatusReport()
        _ = report.consume("bogus 1\nexit\nstage only\n\n")
        #expect(report == StatusReport())
    }
}

@Suite struct StageFailureTests {
    @Test(arguments: [
        ("clone-namespaces", Int32(1), "user namespaces are disabled or exhausted on this host"),
        ("clone-namespaces", Int32(28), "sysctl -w user.max_user_namespaces"),
        ("user-namespace", Int32(13), "could not write its uid/gid maps: Permission denied"),
        ("cgroup", Int32(13), "could not join its cgroup"),
        ("bind-mount", Int32(1), "could not build its file system (stage bind-mount): Operation not permitted"),
        ("pivot-root", Int32(22), "could not build its file system (stage pivot-root)"),
        ("collect-runtime", Int32(2), "apt-get install libpython3-dev"),
        ("readonly-path", Int32(2), "a read-only path named by the policy is not usable"),
        ("seccomp", Int32(22), "CONFIG_SECCOMP_FILTER"),
        ("landlock", Int32(1), "could not apply Landlock"),
        ("python-init", Int32(0), "the embedded Python failed to start: detail text"),
        ("python-import", Int32(0), "could not load the capsule_worker package: detail text"),
        ("arguments", Int32(22), "This is a bug in capsule"),
        ("cpus", Int32(22), "List only cores this host has"),
        ("something-new", Int32(5), "the sandbox failed at stage something-new: Input/output error (detail text)"),
    ])
    func explainsEachStage(stage: String, errno: Int32, expected: String) {
        let failure = StageFailure(stage: stage, errno: errno, detail: "detail text")
        #expect(failure.description.contains(expected), "\(failure.description)")
        #expect(SandboxError.stage(failure).description == failure.description)
    }

    @Test func otherErrorsReadAsSentences() {
        #expect(SandboxError.workerMissing("x is missing").description == "x is missing")
        #expect(SandboxError.spawnFailed(.init("posix_spawn /x", errno: 2)).description
            == "could not start capsule-worker: posix_spawn /x: No such file or directory")
    }
}

@Suite struct LaunchArgumentsTests {
    @Test func carriesEveryLimitAndTheEnvironment() {
        var limits = Limits()
        limits.memoryMB = 256
        limits.cpuSeconds = 5
        limits.maxFDs = 50
        limits.maxProcesses = 8
        limits.maxFileBytes = 2048
        limits.cpus = [0, 1]
        limits.workspaceMB = 16
        limits.maxFrameBytes = 32 << 20
        let policy = Policy(level: .sandbox, limits: limits, environment: ["B": "2", "A": "1"], readonlyPaths: ["/srv/a"])
        let location = WorkerLocation(executable: "/w", pythonPackageDirectory: "/p")
        #expect(Sandbox.arguments(for: policy, location: location) == [
            "--memory-mb", "256", "--cpu-seconds", "5", "--max-fds", "50", "--max-processes", "8",
            "--max-file-bytes", "2048", "--workspace-mb", "16", "--max-frame-bytes", "33554432",
            "--network", "none", "--worker-path", "/p",
            "--cpus", "0,1", "--readonly", "/srv/a", "--env", "A=1", "--env", "B=2",
        ])
    }

    @Test func onlyUnrestrictedSharesTheHostNetwork() {
        let location = WorkerLocation(executable: "/w", pythonPackageDirectory: "/p")
        for level in Level.allCases {
            let arguments = Sandbox.arguments(for: Policy(level: level), location: location)
            let network = arguments[arguments.firstIndex(of: "--network")! + 1]
            #expect(network == (level == .unrestricted ? "host" : "none"))
        }
    }

    @Test func aMissingWorkerIsAClearError() {
        let location = WorkerLocation(executable: "/nonexistent/capsule-worker", pythonPackageDirectory: "/p")
        #expect(throws: SandboxError.self) { try Sandbox.launch(Policy(level: .sandbox), location: location) }
        do {
            _ = try Sandbox.launch(Policy(level: .sandbox), location: location)
        } catch {
            #expect(error.description == "could not start capsule-worker: posix_spawn /nonexistent/capsule-worker: No such file or directory")
        }
    }

    @Test func doctorReportsTheRequiredFeatures() throws {
        let checks = try Doctor.probe(location: WorkerLocation.find())
        let names = checks.map(\.name)
        for required in ["user-namespace", "pid-namespace", "net-namespace", "mount-namespace", "seccomp", "landlock",
                         "cgroup-memory", "cgroup-pids"] {
            #expect(names.contains(required), "\(names)")
        }
        // This suite only runs where the sandbox itself works, so these must be true here.
        #expect(checks.first { $0.name == "seccomp" }?.works == true)
        #expect(checks.first { $0.name == "user-namespace" }?.works == true)
    }
}
