// [sandbox] preload: modules imported before the first execution, in a pool while it warms up.
import CapsuleOS
import CapsulePolicy
import CapsuleRuntime
import Testing

@Suite("Preloading modules") struct PreloadTests {
    static func policy(_ modules: [String]) -> Policy {
        var policy = Sandboxed.policy()
        policy.preload = modules
        return policy
    }

    @Test func theModulesAreImportedFirstAndWhatTheyPrintIsDropped() throws {
        // `this` prints the Zen of Python as it is imported; the first execution must not see it.
        let session = try Sandboxed.start(Self.policy(["decimal", "this", "email.mime.text"]))
        defer { session.shutdown(grace: 1) }
        #expect(session.notes.isEmpty, "\(session.notes)")
        let t = Sandboxed.run("import sys\nprint('LOADED', all(m in sys.modules for m in ('decimal', 'this', 'email.mime.text')))", in: session)
        t.expectFinishedCleanly()
        #expect(t.lines == ["LOADED True"] && t.stderr.isEmpty, "\(t)")
    }

    @Test func aModuleThatCannotBeImportedIsANoteAndTheSessionWorks() throws {
        let session = try Sandboxed.start(Self.policy(["no_such_module", "json", "antigravity_not_here"]))
        defer { session.shutdown(grace: 1) }
        #expect(session.notes == [
            "[sandbox] preload: antigravity_not_here could not be imported: ModuleNotFoundError: No module named 'antigravity_not_here'",
            "[sandbox] preload: no_such_module could not be imported: ModuleNotFoundError: No module named 'no_such_module'",
        ], "\(session.notes)")
        let t = Sandboxed.run("import sys\nprint('json' in sys.modules)", in: session)
        t.expectLine("True")
    }

    @Test func aModuleMayCallACapabilityAsItIsImported() throws {
        let root = try hostTree(["caller_mod.py": "import capsule\ntry:\n    capsule.ask('x')\nexcept capsule.CapabilityDenied as e:\n    WHY = str(e)\n"])
        defer { Host.removeTree(root) }
        var policy = Self.policy(["caller_mod"])
        policy.level = .restricted
        policy.pythonPath = [root]
        let t = try Sandboxed.runFresh("import caller_mod\nprint(caller_mod.WHY.split(':')[0])", policy: policy)
        t.expectFinishedCleanly()
        t.expectLine("`input` is not granted")
    }

    @Test func aPooledSessionIsHandedOutWithItsModulesLoaded() async throws {
        var policy = Self.policy(["fractions"])
        policy.pool = PoolSettings(minIdle: 1, max: 2)
        let pool = SessionPool(policy: policy, location: try Sandboxed.location())
        let session = try await pool.acquire()
        guard let execution = try? session.submit("import sys\n'fractions' in sys.modules") else { Issue.record("busy"); return }
        var result: String?
        _ = await execution.outcome { if case .result(let bundle) = $0 { result = bundle["text/plain"] } }
        #expect(result == "True")
        await pool.release(session)
        await pool.close()
    }

    @Test func threadPoolsGetTheSessionsCoresUnlessThePolicySaysOtherwise() throws {
        var policy = Sandboxed.policy { $0.maxProcesses = 8 }
        policy.environment["OMP_NUM_THREADS"] = "3"
        let t = try Sandboxed.runFresh(#"""
            import ctypes, os
            getenv = ctypes.CDLL(None).getenv
            getenv.restype = ctypes.c_char_p
            cores = len(os.sched_getaffinity(0))
            print("OPENBLAS", getenv(b"OPENBLAS_NUM_THREADS") == str(max(1, min(cores, 8 // 4))).encode())
            print("OMP", getenv(b"OMP_NUM_THREADS"))
            print("ENVIRON", sorted(os.environ))  # what the code sees stays the policy's
            """#, policy: policy)
        t.expectFinishedCleanly()
        t.expectLine("OPENBLAS True")
        t.expectLine("OMP b'3'")
        t.expectLine("ENVIRON ['OMP_NUM_THREADS']")
    }
}
