// Capabilities end to end: real code in the real sandbox calls the broker, which works on real
// files on the host. Escapes are attempted from inside; the host checks nothing leaked.
#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import Testing
import CapsuleCapabilities
import CapsulePolicy
import CapsuleRuntime
import CapsuleOS

/// A host tree: root/in (readable), root/out (writable), root/secret.txt outside both.
final class HostTree {
    let path: String
    init() throws {
        path = try Host.temporaryDirectory()
        for directory in ["in", "in/a", "in/a/b", "out"] { mkdir("\(path)/\(directory)", 0o755) }
        try Host.writeFile("\(path)/in/hello.txt", "hello from the host\n")
        try Host.writeFile("\(path)/in/a/secret.txt", "inner\n")
        try Host.writeFile("\(path)/secret.txt", "TOP SECRET\n")
        symlink("\(path)/secret.txt", "\(path)/in/link")
    }

    func policy(level: String = "standard", extra: String = "") throws -> Policy {
        try PolicyLoader.parse("""
            level = "\(level)"
            [capabilities.file]
            read = ["\(path)/in"]
            write = ["\(path)/out"]
            \(extra)
            [capabilities.env]
            names = ["CAPSULE_INTEGRATION_VALUE"]
            """, file: "test.toml")
    }

    /// The session's next execution reads the tree as ever (what went before broke nothing).
    func expectStillRead(in session: Session, sourceLocation: SourceLocation = #_sourceLocation) {
        let next = Sandboxed.run("print('NEXT', file.read_text('\(path)/in/hello.txt').strip())", in: session)
        next.expectFinishedCleanly()
        #expect(next.lines.contains("NEXT hello from the host"), "\(next)", sourceLocation: sourceLocation)
    }

    deinit { _ = Host.spawnAndWait("/bin/rm", ["-rf", path]) }
}

final class SlowApprover: Approver {
    let seconds: Double
    let cancelled = Mutex(false)
    /// Requests it has begun to decide.
    let started = Mutex(0)
    init(seconds: Double) { self.seconds = seconds }
    func decide(_ request: ApprovalRequest, policy: Policy) async -> ApprovalDecision {
        started.withLock { $0 += 1 }
        do { try await Task.sleep(for: .seconds(seconds)) } catch {
            cancelled.withLock { $0 = true }
            return .denied("cancelled")
        }
        return .approved
    }
}

@Suite(.serialized) struct CapabilityTests {
    @Test func readsAnAllowedFileAndRefusesEveryEscape() throws {
        let tree = try HostTree()
        let transcript = try Sandboxed.runFresh("""
            from capsule import file, CapabilityDenied
            print(file.read_text("\(tree.path)/in/hello.txt"), end="")
            for path in ["\(tree.path)/in/../secret.txt", "../secret.txt", "\(tree.path)/secret.txt", "\(tree.path)/in/link",
                         "/etc/shadow", "/proc/1/root/\(tree.path)/secret.txt", "a/b/../../../secret.txt"]:
                try:
                    print("LEAK", file.read_text(path))
                except CapabilityDenied as e:
                    print("denied", isinstance(e, PermissionError))
            """, policy: tree.policy())
        #expect(transcript.lines == ["hello from the host"] + Array(repeating: "denied True", count: 7), "\(transcript)")
        #expect(transcript.finishedCleanly, "\(transcript)")
    }

    @Test func aRenameRaceCannotLeaveTheRoot() throws {
        // The host moves in/a/b out of the root and back while the code reads in/a/b/../secret.txt,
        // which is in/a/secret.txt while b is inside, and would be the root's parent's secret if a
        // lookup ever followed `..` from a b that had moved out.
        let tree = try HostTree()
        let stop = Mutex(false)
        let mover = HostThread {
            while !stop.withLock({ $0 }) {
                rename("\(tree.path)/in/a/b", "\(tree.path)/b")
                rename("\(tree.path)/b", "\(tree.path)/in/a/b")
            }
        }
        defer { stop.withLock { $0 = true }; mover.join() }
        let transcript = try Sandboxed.runFresh("""
            from capsule import file
            seen = set()
            for n in range(20000):  # at least 400 reads, and on until one caught b in place
                if n >= 400 and "inner" in seen:
                    break
                try:
                    seen.add(file.read_text("\(tree.path)/in/a/b/../secret.txt").strip())
                except Exception as e:
                    seen.add(f"{type(e).__name__}: {e}")
            print(sorted(seen))
            """, policy: tree.policy())
        #expect(!transcript.stdout.contains("TOP SECRET"), "\(transcript)")
        #expect(transcript.stdout.contains("inner"), "reads while b is in place succeed\n\(transcript)")
    }

    @Test func writesLandOnlyInWriteRoots() throws {
        let tree = try HostTree()
        let transcript = try Sandboxed.runFresh("""
            from capsule import file, CapabilityDenied
            print(file.write_text("\(tree.path)/out/result.txt", "written inside\\n"))
            with file.open("\(tree.path)/out/log.txt", "a") as f:
                f.write("one\\n")
            for path in ["\(tree.path)/in/new.txt", "\(tree.path)/out/../secret.txt"]:
                try:
                    file.write_text(path, "overwritten")
                except CapabilityDenied:
                    print("denied")
            """, policy: tree.policy())
        #expect(transcript.lines == ["15", "denied", "denied"], "\(transcript)")
        #expect(Host.readText("\(tree.path)/out/result.txt") == "written inside\n")
        #expect(Host.readText("\(tree.path)/out/log.txt") == "one\n")
        #expect(Host.readText("\(tree.path)/secret.txt") == "TOP SECRET\n")
        #expect(Host.readText("\(tree.path)/in/new.txt") == nil)
    }

    @Test func anUngrantedCapabilityRaisesCapabilityDeniedWithTheReason() throws {
        let transcript = try Sandboxed.runFresh("""
            import capsule
            from capsule import net
            print(repr(net), dir(net))
            try:
                net.fetch("https://example.com")
            except capsule.CapabilityDenied as e:
                print(e)
            try:
                capsule.file.read_text("/etc/passwd")
            except PermissionError as e:
                print(type(e).__name__)
            print("file" in globals(), "display" in globals())
            """)
        #expect(transcript.lines == [
            "<capsule.net: not granted by this policy> []",
            "`net` is not granted: this policy (sandbox, level sandbox) has no [capabilities.net]; it needs a policy of level standard or above with [capabilities.net]",
            "CapabilityDenied", "False True",
        ], "\(transcript)")
    }

    @Test func helpShowsRealMethodsAndSignatures() throws {
        let tree = try HostTree()
        let transcript = try Sandboxed.runFresh("""
            import inspect
            from capsule import file
            print(inspect.signature(file.mkdir))
            print(file.read_bytes.__doc__)
            print("read_text" in dir(file), "open" in dir(file))
            """, policy: tree.policy())
        #expect(transcript.lines == ["(path, parents=False)", "The whole file as bytes.", "True True"], "\(transcript)")
    }

    @Test func displayedBundlesArriveInOrderWithTheOutput() throws {
        let session = try Sandboxed.start()
        defer { session.shutdown(grace: 1) }
        var events: [SessionEvent] = []
        _ = session.execute("""
            class Table:
                def _repr_html_(self): return "<table></table>"
                def __repr__(self): return "Table()"
            print("before")
            display(Table())
            print("after")
            """, wantResult: false) { event in
            events.append(event)
            return nil
        }
        #expect(events == [.stream(.stdout, "before\n"), .display(["text/html": "<table></table>", "text/plain": "Table()"]),
                           .stream(.stdout, "after\n")])
    }

    @Test func manyThreadsCallAtOnce() throws {
        let tree = try HostTree()
        setenv("CAPSULE_INTEGRATION_VALUE", "shared", 1)
        let transcript = try Sandboxed.runFresh("""
            import threading
            from capsule import env, file
            results = []
            def work():
                for _ in range(50):
                    results.append((env.get("CAPSULE_INTEGRATION_VALUE"), file.read_text("\(tree.path)/in/hello.txt")))
            threads = [threading.Thread(target=work) for _ in range(8)]
            for t in threads: t.start()
            for t in threads: t.join()
            print(len(results), set(results) == {("shared", "hello from the host\\n")})
            """, policy: tree.policy())
        #expect(transcript.lines == ["400 True"], "\(transcript)")
    }

    @Test func eachThreadGetsItsOwnAnswersAndNoneIsLost() throws {
        // Every answer differs by thread and call, immediate ones (env.get's default) and those
        // from the broker's threads (file) alike, so an answer delivered to the wrong thread shows.
        let tree = try HostTree()
        for i in 0..<8 { try Host.writeFile("\(tree.path)/in/t\(i).txt", "thread \(i)\n") }
        let policy = try PolicyLoader.parse("""
            level = "restricted"
            [capabilities.file]
            read = ["\(tree.path)/in"]
            [capabilities.env]
            names = ["CAPSULE_INTEGRATION_UNSET"]
            """, file: "threads.toml")
        unsetenv("CAPSULE_INTEGRATION_UNSET")
        let transcript = try Sandboxed.runFresh("""
            import threading
            from capsule import env, file
            wrong, done = [], []
            def work(i):
                for k in range(100):
                    mine = f"{i}-{k}"
                    if env.get("CAPSULE_INTEGRATION_UNSET", mine) != mine: wrong.append(("env", i, k))
                    if file.read_text(f"\(tree.path)/in/t{i}.txt") != f"thread {i}\\n": wrong.append(("read", i, k))
                    there = f"\(tree.path)/in/t{i}.txt" if k % 2 else f"\(tree.path)/in/none{i}-{k}"
                    if file.exists(there) != bool(k % 2): wrong.append(("exists", i, k))
                done.append(i)
            threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
            for t in threads: t.start()
            for t in threads: t.join()
            print(sorted(done), len(wrong), wrong[:5])
            """, policy: policy)
        #expect(transcript.lines == ["[0, 1, 2, 3, 4, 5, 6, 7] 0 []"], "\(transcript)")
    }

    @Test func anInterruptWhileEightThreadsWaitForAnswersLeavesTheSessionWorking() throws {
        let approver = SlowApprover(seconds: 600)
        let policy = try HostTree().policy().withInput()
        let session = try Session(policy: policy, location: try Sandboxed.location(),
                                  broker: Broker(policy: policy, approver: approver))
        defer { session.shutdown(grace: 1) }
        let (reader, writer) = try OS.socketPair()
        defer { OS.close(reader); OS.close(writer) }
        session.interruptDescriptor = reader
        // ^C once all eight calls wait for their answers.
        let interrupter = HostThread {
            for _ in 0..<600 where approver.started.withLock({ $0 }) < 8 { Host.sleep(seconds: 0.05) }
            _ = try? OS.writeAll(writer, [1])
        }
        let interrupted = Sandboxed.run("""
            import threading, capsule
            answers, ended = [], []
            def ask(i):
                try:
                    answers.append(capsule.ask(f"q{i}"))
                finally:
                    ended.append(i)
            threads = [threading.Thread(target=ask, args=(i,), daemon=True) for i in range(8)]
            for t in threads: t.start()
            try:
                for t in threads: t.join()
            except KeyboardInterrupt:  # (not is_alive(): CPython 3.11 reports the thread whose join was interrupted as ended)
                print("interrupted", len(ended), answers, flush=True)
                raise
            """, in: session)
        interrupter.join()
        #expect(approver.started.withLock { $0 } == 8)
        #expect(interrupted.lines == ["interrupted 0 []"], "\(interrupted)")
        #expect(interrupted.errors.first?.hasPrefix("KeyboardInterrupt") == true, "\(interrupted)")
        // The eight calls still wait (one of their threads reads the channel); the session goes on.
        let next = Sandboxed.run("print('next', len(answers), len(ended))", in: session)
        #expect(next.lines == ["next 0 0"], "\(next)")
        #expect(next.errors.isEmpty, "\(next)")
    }

    @Test func aSlowCallHoldsNeitherTheOutputNorOtherThreads() throws {
        let tree = try HostTree()
        let approver = SlowApprover(seconds: 1.5)
        let policy = try tree.policy(extra: "").withInput()
        let session = try Session(policy: policy, location: try Sandboxed.location(),
                                  broker: Broker(policy: policy, approver: approver))
        defer { session.shutdown(grace: 1) }
        let transcript = Sandboxed.run("""
            import threading, capsule
            answer = []
            t = threading.Thread(target=lambda: answer.append(capsule.ask("slow?")))
            t.start()
            for i in range(3):
                print("tick", i, file.exists("\(tree.path)/in/hello.txt"), flush=True)
            t.join()
            print("answer", answer)
            """, in: session)
        #expect(transcript.lines == ["tick 0 True", "tick 1 True", "tick 2 True", "answer [True]"], "\(transcript)")
    }

    @Test func aCallInFlightWhenTheSessionEndsIsCancelled() throws {
        let approver = SlowApprover(seconds: 600)
        var limits = Limits()
        limits.timeoutSeconds = 1
        let policy = Policy(level: .restricted, limits: limits, capabilities: {
            var capabilities = Capabilities()
            capabilities.input = CapabilityGrant()
            return capabilities
        }())
        let session = try Session(policy: policy, location: try Sandboxed.location(), broker: Broker(policy: policy, approver: approver))
        let transcript = Sandboxed.run("import capsule\ncapsule.ask('forever?')", in: session)
        #expect(transcript.outcome == .limitExceeded(.timeout(seconds: 1)), "\(transcript)")
        for _ in 0..<100 where !approver.cancelled.withLock({ $0 }) { Host.sleep(seconds: 0.05) }
        #expect(approver.cancelled.withLock { $0 }, "the approval task was cancelled with the session")
        Sandboxed.expectNewSessionWorks()
    }

    @Test func bigCallsArriveWholeOrAreRefusedClearly() throws {
        let tree = try HostTree()
        let transcript = try Sandboxed.runFresh("""
            from capsule import file
            text = "x" * 3_000_000
            file.write_text("\(tree.path)/out/big.txt", text)
            file.append("\(tree.path)/out/big.txt", "y" * 2_000_000)
            print(len(file.read_text("\(tree.path)/out/big.txt")))
            for attempt in [lambda: file.write_bytes("\(tree.path)/out/huge", b"z" * (20 << 20)),
                            lambda: display({"text/plain": float("nan")}, raw=True)]:
                try:
                    attempt()
                except (ValueError, TypeError) as e:
                    print(type(e).__name__, str(e)[:40])
            print("still here")
            """, policy: tree.policy())
        #expect(transcript.lines.first == "5000000", "\(transcript)")
        #expect(transcript.lines.dropFirst().prefix(2) == ["ValueError the call is 27962175 bytes as sent, more", "ValueError capability arguments cannot carry nan"],
                "\(transcript)")
        #expect((try? OS.readFile("\(tree.path)/out/big.txt", limit: 8 << 20))?.count == 5_000_000, "nothing was clipped on the way")
        #expect(transcript.lines.last == "still here", "\(transcript)")
        #expect(transcript.finishedCleanly, "\(transcript)")
    }

    @Test func anAnswerTooBigForAFrameIsAnError() throws {
        let tree = try HostTree()
        let fd = open("\(tree.path)/in/large.bin", O_WRONLY | O_CREAT, 0o644)
        ftruncate(fd, 14 << 20)
        close(fd)
        let transcript = try Sandboxed.runFresh("""
            from capsule import file
            try:
                file.read_bytes("\(tree.path)/in/large.bin")
            except ValueError as e:
                print(e)
            print("still here")
            """, policy: tree.policy())
        #expect(transcript.lines.first?.contains("more than the 16777216 one frame may carry (limits.max_frame_bytes in the policy)") == true,
                "\(transcript)")
        #expect(transcript.lines.last == "still here", "\(transcript)")
    }

    @Test func anApprovedDisplayIsShown() throws {
        var policy = Policy(level: .sandbox)
        policy.capabilities.display?.ask = true
        let session = try Session(policy: policy, location: try Sandboxed.location(),
                                  broker: Broker(policy: policy, approver: SlowApprover(seconds: 0)))
        defer { session.shutdown(grace: 1) }
        var events: [SessionEvent] = []
        _ = session.execute("display({'text/plain': 'approved'}, raw=True)", wantResult: false) { event in
            events.append(event)
            return nil
        }
        #expect(events == [.display(["text/plain": "approved"])])
    }

    @Test func callsAreAnsweredWhileSwiftsSharedThreadsAreBlocked() async throws {
        // A program that drives sessions synchronously from its tasks blocks Swift's shared threads
        // (one a core); the broker's calls run on threads of their own, so they still get answered.
        let tree = try HostTree()
        var policy = try tree.policy()
        policy.limits.timeoutSeconds = 5 // the blockers hold the shared threads longer than that
        let blockers = (0..<12).map { _ in Task.detached { usleep(1_000_000) } }
        let transcript = try Sandboxed.runFresh("""
            from capsule import file
            print(file.read_text("\(tree.path)/in/hello.txt"), end="")
            """, policy: policy)
        for blocker in blockers { await blocker.value }
        #expect(transcript.lines == ["hello from the host"], "\(transcript)")
    }

    @Test func aRateOfFivePerMinuteRefusesTheSixthCall() throws {
        let tree = try HostTree()
        let transcript = try Sandboxed.runFresh("""
            from capsule import file, CapabilityDenied
            for i in range(7):
                try:
                    file.exists("\(tree.path)/in/hello.txt")
                    print(i + 1, "ok")
                except CapabilityDenied as e:
                    print(i + 1, e)
            """, policy: tree.policy(extra: "rate_per_minute = 5"))
        let refusal = "rate limit: [capabilities.file] rate_per_minute = 5, and this call would be call 6 within a minute"
        #expect(transcript.lines == ["1 ok", "2 ok", "3 ok", "4 ok", "5 ok", "6 \(refusal)", "7 \(refusal)"], "\(transcript)")
    }

    @Test func bytesTravelIntact() throws {
        let tree = try HostTree()
        let transcript = try Sandboxed.runFresh("""
            from capsule import file
            data = bytes(range(256)) * 300
            file.write_bytes("\(tree.path)/out/blob", data)
            print(file.read_bytes("\(tree.path)/out/blob") == data, file.stat("\(tree.path)/out/blob")["size"])
            """, policy: tree.policy())
        #expect(transcript.lines == ["True 76800"], "\(transcript)")
    }
}

extension Policy {
    func withInput() -> Policy {
        var copy = self
        copy.capabilities.input = CapabilityGrant()
        return copy
    }
}

/// A joinable pthread for host-side activity during a test.
final class HostThread: @unchecked Sendable {
    private var thread = pthread_t()
    private let body: () -> Void

    init(_ body: @escaping () -> Void) {
        self.body = body
        let box = Unmanaged.passRetained(self)
        pthread_create(&thread, nil, { raw in
            let me = Unmanaged<HostThread>.fromOpaque(raw!).takeRetainedValue()
            me.body()
            return nil
        }, box.toOpaque())
    }

    func join() { pthread_join(thread, nil) }
}
