// Checkpoint, restore and fork: what a namespace held comes back in a fresh session (values,
// modules, functions and classes defined in the session), what cannot is listed with why, forks
// are independent, and hostile values or checkpoints harm nothing.
import Testing
import CapsuleCapabilities
import CapsuleOS
import CapsulePolicy
import CapsuleProtocol
import CapsuleRuntime
import CapsuleSandbox

private func open(_ policy: Policy = Sandboxed.policy()) async throws -> Session {
    try await Session.open(policy: policy, location: try Sandboxed.location())
}

/// The text of the result of `code`, or of its error.
private func value(_ code: String, in session: Session) async throws -> String {
    var text = ""
    let outcome = await (try session.submit(code)).outcome { event in
        if case .result(let bundle) = event { text = bundle["text/plain"] ?? "" }
        if case .error(let ename, let evalue, _) = event { text = "\(ename): \(evalue)" }
    }
    _ = outcome
    return text
}

@Suite("Checkpoints") struct CheckpointTests {
    static let state = """
        import json, threading
        import collections as c
        numbers = [1, 2, 3]
        table = {"a": (1, 2.5), "b": None}
        counter = c.Counter("hello")
        def double(x):
            return 2 * x
        class Point:
            def __init__(self, x, y):
                self.x, self.y = x, y
            def norm1(self):
                return abs(self.x) + abs(self.y)
        p = Point(3, -4)
        twice = double
        square = lambda v: v * v
        lock = threading.Lock()
        """

    @Test("a checkpoint restores into a fresh session: values, modules, functions, classes, instances")
    func restoreIntoAFreshSession() async throws {
        let source = try await open()
        _ = await (try source.submit(Self.state)).outcome()
        let checkpoint = try await source.checkpoint()
        #expect(Set(checkpoint.names) == ["json", "threading", "c", "numbers", "table", "counter", "double", "Point", "p",
                                          "twice", "square"], "\(checkpoint.names)")
        #expect(checkpoint.skipped.keys.sorted() == ["lock"], "\(checkpoint.skipped)")
        #expect(checkpoint.skipped["lock"]?.contains("cannot be pickled") == true, "\(checkpoint.skipped)")
        await source.close()

        let target = try await open()
        let report = try await target.restore(checkpoint)
        #expect(report.skipped.isEmpty && Set(report.names) == Set(checkpoint.names), "\(report)")
        let seen = try await value("(numbers, table, counter['l'], double(21), p.norm1(), isinstance(p, Point), "
                                   + "twice(4), square(5), json.dumps([1]), c.__name__, 'lock' in dir())", in: target)
        #expect(seen == "([1, 2, 3], {'a': (1, 2.5), 'b': None}, 2, 42, 7, True, 8, 25, '[1]', 'collections', False)", "\(seen)")
        await target.close()
    }

    @Test("restore merges by default; replace clears the code's names first")
    func mergeAndReplace() async throws {
        let source = try await open()
        _ = await (try source.submit("a = 1")).outcome()
        let checkpoint = try await source.checkpoint()
        await source.close()
        let target = try await open()
        _ = await (try target.submit("b = 2")).outcome()
        _ = try await target.restore(checkpoint)
        #expect(try await value("(a, b)", in: target) == "(1, 2)")
        _ = await (try target.submit("b = 3")).outcome()
        _ = try await target.restore(checkpoint, replace: true)
        #expect(try await value("(a, 'b' in dir(), print is not None)", in: target) == "(1, False, True)")
        await target.close()
    }

    @Test("fork(n): each fork starts from the state, and each goes its own way")
    func fork() async throws {
        let original = try await open()
        _ = await (try original.submit("history = ['start']")).outcome()
        let forks = try await original.fork(2)
        #expect(forks.count == 2 && forks.allSatisfy(\.isAlive))
        for (index, fork) in forks.enumerated() { _ = await (try fork.submit("history.append('fork \(index)')")).outcome() }
        _ = await (try original.submit("history.append('original')")).outcome()
        #expect(try await value("history", in: forks[0]) == "['start', 'fork 0']")
        #expect(try await value("history", in: forks[1]) == "['start', 'fork 1']")
        #expect(try await value("history", in: original) == "['start', 'original']")
        #expect(Set(forks.map(\.pid) + [original.pid]).count == 3, "forks share a sandbox")
        for session in forks + [original] { await session.close() }
    }

    @Test("a checkpoint while code runs is refused as busy")
    func busy() async throws {
        let session = try await open()
        let running = try session.submit("import time\ntime.sleep(0.5)")
        await #expect(throws: CheckpointError.busy) { _ = try await session.checkpoint() }
        _ = await running.outcome()
        _ = try await session.checkpoint()
        await session.close()
    }

    @Test("hostile values: pickling that raises, interrupts, or makes more than a frame harms nothing")
    func hostileValues() async throws {
        let session = try await open(Sandboxed.policy { $0.maxFrameBytes = 8 << 20 })
        _ = await (try session.submit("""
            class Raises:
                def __reduce__(self): raise RuntimeError("no")
            class Exits:
                def __reduce__(self): raise SystemExit(3)
            raises, exits = Raises(), Exits()
            kept = 'yes'
            """)).outcome()
        // SystemExit is no Exception: it ends the checkpoint, with a reason, and the session stays.
        await #expect(throws: CheckpointError.self) { _ = try await session.checkpoint() }
        #expect(try await value("kept", in: session) == "'yes'")
        _ = await (try session.submit("del exits\nhuge = b'x' * (12 << 20)")).outcome()
        do {
            _ = try await session.checkpoint()
            Issue.record("a checkpoint over the frame limit was not refused")
        } catch {
            #expect("\(error)".contains("frame"), "\(error)")
        }
        _ = await (try session.submit("del huge")).outcome()
        let checkpoint = try await session.checkpoint()
        #expect(checkpoint.skipped["raises"]?.contains("RuntimeError: no") == true, "\(checkpoint.skipped)")
        #expect(try await value("kept", in: session) == "'yes'")
        await session.close()
    }

    @Test("a checkpoint restores only under the policy it was taken under")
    func otherPolicyRefused() async throws {
        // The checkpointed session chooses what unpickling runs: a sandbox-level session's objects
        // must not run in a session whose policy grants more.
        let source = try await open()
        _ = await (try source.submit("""
            class Payload:
                def __reduce__(self):
                    return (print, ("ran in the restoring session",))
            payload = Payload()
            """)).outcome()
        let checkpoint = try await source.checkpoint()
        await source.close()
        let richer = try await open(Policy(level: .restricted))
        await #expect(throws: CheckpointError.otherPolicy(from: checkpoint.policy.origin, into: richer.policy.origin)) {
            _ = try await richer.restore(checkpoint)
        }
        #expect(try await value("'payload' in dir()", in: richer) == "False")
        await richer.close()
    }
}
