// Policy settings that reach the sandbox, each proven by running code under it.
#if canImport(Glibc)
import Glibc
#endif
import Testing
import CapsuleOS
import CapsulePolicy
import CapsuleRuntime

@Suite("Policy settings, enforced") struct PolicyEnforcementTests {
    @Test func cpusPinTheCode() throws {
        // The code runs only on the listed core and cannot widen the set (seccomp refuses it).
        var limits = Limits()
        limits.cpus = [0]
        let t = try Sandboxed.runFresh(Python.prelude + #"""
            print("CPUS", sorted(os.sched_getaffinity(0)))
            attempt("widen", lambda: os.sched_setaffinity(0, {0, 1}))
            """#, policy: Policy(level: .sandbox, limits: limits))
        t.expectLine("CPUS [0]")
        t.expectBlocked("widen", EPERM)
    }

    @Test func cpusThisHostDoesNotHaveAreAClearError() throws {
        var limits = Limits()
        limits.cpus = [1023]
        #expect(throws: SessionError.self) { try Sandboxed.runFresh("pass", policy: Policy(level: .sandbox, limits: limits)) }
        do {
            _ = try Sandboxed.runFresh("pass", policy: Policy(level: .sandbox, limits: limits))
        } catch {
            #expect("\(error)".hasPrefix("the policy's limits.cpus cannot be applied: Invalid argument (1023)"), "\(error)")
        }
        Sandboxed.expectNewSessionWorks()
    }

    @Test func environmentIsExactlyThePolicys() throws {
        let policy = Policy(level: .sandbox, environment: ["GREETING": "hello world", "LANG": "C.UTF-8"])
        let t = try Sandboxed.runFresh(#"""
            import os
            print("ENV", sorted(os.environ.items()))
            """#, policy: policy)
        t.expectLine("ENV [('GREETING', 'hello world'), ('LANG', 'C.UTF-8')]")
    }

    @Test func readonlyPathsAreReadableAndNotWritable() throws {
        let directory = try Host.temporaryDirectory()
        defer { Host.removeTree(directory) }
        try Host.writeFile("\(directory)/data.txt", "host data\n")
        chmod(directory, 0o755)
        chmod("\(directory)/data.txt", 0o644)
        let policy = Policy(level: .restricted, readonlyPaths: [directory])
        let t = try Sandboxed.runFresh(Python.prelude + """
            print("READ", open("\(directory)/data.txt").read().strip())
            attempt("write", lambda: open("\(directory)/data.txt", "a").write("x"))
            attempt("create", lambda: open("\(directory)/new.txt", "w"))
            """, policy: policy)
        t.expectLine("READ host data")
        t.expectBlocked("write", EROFS, EACCES)
        t.expectBlocked("create", EROFS, EACCES)
        #expect(access("\(directory)/new.txt", F_OK) != 0, "the host directory is unchanged")
    }

    @Test func theFrameLimitEndsTheSession() throws {
        // max_frame_bytes: a frame over the policy's limit (written by hand: the worker's own
        // frames stay far below the smallest limit) ends the session before it is read.
        var limits = Limits()
        limits.maxFrameBytes = 8 << 20
        let t = try Sandboxed.runFresh(#"""
            import os
            os.write(3, (9 << 20).to_bytes(4, "big"))
            """#, policy: Policy(level: .sandbox, limits: limits))
        #expect(t.outcome == .protocolError("frame of 9437184 bytes exceeds the 8388608-byte limit"), "\(t)")
    }

    @Test func aHugeTracebackIsClippedNotAProtocolError() throws {
        var traceback: [String] = []
        let outcome = try Sandboxed.withSession { session in
            session.execute(#"raise ValueError("a\n" * 3_000_000)"#) { event in
                if case .error(_, _, let lines) = event { traceback = lines }
                return nil
            }
        }
        guard case .finished(.error, nil, _, "ValueError") = outcome else {
            Issue.record("expected an uncaught ValueError, got \(outcome)")
            return
        }
        #expect(traceback.contains { $0.hasPrefix("[truncated: ") && $0.hasSuffix(" lines omitted]\n") }, "\(traceback.prefix(5))")
        #expect(traceback.count <= 4096)
    }

    @Test func hugeExitCodesFoldLikeCPython() throws {
        let t = try Sandboxed.runFresh("import sys\nsys.exit(2**70)")
        guard case .finished(_, let code?, _, _) = t.outcome else {
            Issue.record("\(t)")
            return
        }
        #expect(ExitStatus(t.outcome, policy: Policy(level: .sandbox)).code == 255, "exit_code \(code)")
    }

    @Test func maxFileBytesStopsABigWrite() throws {
        var limits = Limits()
        limits.maxFileBytes = 1 << 20
        let t = try Sandboxed.runFresh(Python.prelude + #"""
            def big():
                with open("/workspace/big", "wb") as f:
                    f.write(b"x" * (2 << 20))
            attempt("big", big)
            print("SIZE", os.path.getsize("/workspace/big"))
            """#, policy: Policy(level: .sandbox, limits: limits))
        t.expectBlocked("big", EFBIG)
        t.expectLine("SIZE 1048576")
    }
}

@Suite("capsule policy, end to end") struct PolicyCLITests {
    @Test func checkAcceptsTheBuiltInsAndExamples() throws {
        let files = ["sandbox", "restricted", "standard", "trusted", "unrestricted"].map { "\(Host.repository)/policies/\($0).toml" }
            + ["\(Host.repository)/examples/policies/agent.toml", "\(Host.repository)/examples/policies/ci-runner.toml"]
        let run = try CLI.run(["policy", "check"] + files)
        #expect(run.status == 0, "\(run)")
        #expect(run.stdout.split(separator: "\n").count == 7, "\(run)")
        #expect(run.stdout.hasPrefix("ok \(Host.repository)/policies/sandbox.toml (level sandbox)\n"), "\(run)")
    }

    @Test func checkListsEveryProblemAndFails() throws {
        let directory = try Host.temporaryDirectory()
        defer { Host.removeTree(directory) }
        let bad = "\(directory)/bad.toml"
        try Host.writeFile(bad, "level = \"sandbox\"\n[limits]\nmemroy_mb = 5\n[capabilities.net]\nurls = [\"https://x.com/\"]\n")
        let run = try CLI.run(["policy", "check", "\(Host.repository)/policies/sandbox.toml", bad])
        #expect(run.status == 1, "\(run)")
        // The valid file's notes (grants without effect yet) come first; the problems follow.
        #expect(run.stderrLines.filter { !$0.contains(".toml: note: ") } == [
            "\(bad):3: `limits.memroy_mb`: unknown key; did you mean `limits.memory_mb`?",
            "\(bad):4: `capabilities.net`: needs level `standard` or higher; this policy is `sandbox`",
        ], "\(run)")
    }

    @Test func runRefusesABadPolicyAndSaysWhy() throws {
        let directory = try Host.temporaryDirectory()
        defer { Host.removeTree(directory) }
        let bad = "\(directory)/escalate.toml"
        try Host.writeFile(bad, "extends = \"sandbox\"\n[sandbox]\nnetwork = \"host\"\n")
        let run = try CLI.run(["run", "--policy", bad, "\(Host.repository)/examples/hello.py"])
        #expect(run.status == ExitStatus.capsuleError, "\(run)")
        #expect(run.stdout.isEmpty, "nothing ran\n\(run)")
        #expect(run.stderrLines == ["capsule: bad policy: \(bad):3: `sandbox.network`: needs level `unrestricted` or higher; this policy is `sandbox`"], "\(run)")
    }

    @Test func showExplainAndDiff() throws {
        let show = try CLI.run(["policy", "show", "ci-runner-missing.toml"])
        #expect(show.status == ExitStatus.capsuleError)
        let example = "\(Host.repository)/examples/policies/ci-runner.toml"
        let shown = try CLI.run(["policy", "show", example])
        #expect(shown.status == 0 && shown.stdout.contains("\n[limits]\nmemory_mb = 256\n"), "\(shown)")
        let explained = try CLI.run(["policy", "explain", "standard"])
        #expect(explained.status == 0 && explained.stdout.contains("reach no network directly"), "\(explained)")
        let same = try CLI.run(["policy", "diff", "sandbox", "\(Host.repository)/policies/sandbox.toml"])
        #expect(same.status == 0, "\(same)")
        let different = try CLI.run(["policy", "diff", "sandbox", example])
        #expect(different.status == 1, "\(different)")
        #expect(different.stdout.contains("- limits.memory_mb = 512\n+ limits.memory_mb = 256\n"), "\(different)")
    }
}
