// Exhausting the host: processes, threads, memory, CPU, wall time, output, descriptors.
#if canImport(Glibc)
import Glibc
#endif
import Testing
import CapsulePolicy
import CapsuleRuntime

@Suite("Resource exhaustion") struct ResourceExhaustionTests {
    // MARK: Processes and threads

    @Test func forkBomb() throws {
        let session = try Sandboxed.start()
        defer { session.shutdown(grace: 1) }
        let t = Sandboxed.run(#"""
            import os, resource
            hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
            print("ISOLATION", os.getpid(), hard)
            if os.getpid() > 3 or hard == resource.RLIM_INFINITY:
                print("SKIP no pid namespace or no RLIMIT_NPROC")
            else:
                release_r, release_w = os.pipe()
                children, failure = [], None
                try:
                    while len(children) < 10000:
                        pid = os.fork()
                        if pid == 0:              # each child holds its slot until released
                            os.close(release_w)
                            os.read(release_r, 1)
                            os._exit(0)
                        children.append(pid)
                except OSError as e:
                    failure = e.errno
                print("FORKED", len(children), "STOPPED", failure)
            """#, in: session)
        if t.line("SKIP") != nil { try Test.cancel("fork bomb not run: isolation unconfirmed\n\(t)") }
        t.expectLine("ISOLATION 2 \(Limits().maxProcesses + 1)")
        let words = t.words("FORKED") ?? []
        let forked = Int(words.first ?? "") ?? -1
        #expect(words.count == 3 && words[2] == String(EAGAIN), "fork must stop with EAGAIN\n\(t)")
        #expect((10...Limits().maxProcesses).contains(forked), "stopped at the process limit\n\(t)")
        t.expectFinishedCleanly()

        // While the bomb's children hold every slot, the host and other sessions are unaffected.
        #expect(Host.spawnAndWait("/bin/true") == 0, "the host can still start processes")
        let other = try Sandboxed.runFresh(#"""
            import os
            pid = os.fork()
            if pid == 0:
                os._exit(7)
            print("OTHER-SESSION-CHILD", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
            """#)
        other.expectLine("OTHER-SESSION-CHILD 7")

        let release = Sandboxed.run(#"""
            os.close(release_w)
            reaped = 0
            while True:
                try:
                    os.waitpid(-1, 0)
                    reaped += 1
                except ChildProcessError:
                    break
            print("REAPED", reaped)
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
            print("FORK-WORKS-AGAIN")
            """#, in: session)
        release.expectLine("REAPED \(forked)")
        release.expectLine("FORK-WORKS-AGAIN")
    }

    @Test func recursiveForkBomb() throws {
        // The classic bomb: every process forks forever. It must stop at the limit and clean up.
        let t = try Sandboxed.runFresh(#"""
            import os, time
            me = os.getpid()
            if me > 3:
                print("SKIP not isolated")
                raise SystemExit(0)
            release_r, release_w = os.pipe()
            failure = None
            try:
                while True:
                    os.fork()
            except OSError as e:
                failure = e.errno
            if os.getpid() != me:
                os.close(release_w)
                os.read(release_r, 1)
                os._exit(0)
            print("BOMB-STOPPED", failure)
            os.close(release_w)
            while True:
                try:
                    os.waitpid(-1, 0)
                except ChildProcessError:
                    break
            for _ in range(100):
                if len([p for p in os.listdir("/proc") if p.isdigit()]) == 2:
                    break
                time.sleep(0.05)
            print("LEFT", *sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
            """#)
        if t.line("SKIP") != nil { try Test.cancel("fork bomb not run: isolation unconfirmed") }
        t.expectLine("BOMB-STOPPED \(EAGAIN)")
        t.expectLine("LEFT 1 2")
        t.expectFinishedCleanly()
        #expect(Host.spawnAndWait("/bin/true") == 0)
    }

    @Test func threadBomb() throws {
        let t = try Sandboxed.runFresh(#"""
            import threading
            release, threads = threading.Event(), []
            try:
                while len(threads) < 10000:
                    thread = threading.Thread(target=release.wait)
                    thread.start()
                    threads.append(thread)
            except RuntimeError as e:
                print("THREADS-STOPPED", len(threads), e)
            release.set()
            for thread in threads:
                thread.join()
            print("JOINED")
            """#)
        let words = t.words("THREADS-STOPPED") ?? []
        #expect(words.dropFirst().joined(separator: " ") == "can't start new thread", "\(t)")
        #expect((Int(words.first ?? "") ?? 10_000) <= Limits().maxProcesses, "\(t)")
        t.expectLine("JOINED")
        t.expectFinishedCleanly()
    }

    @Test func descriptorExhaustion() throws {
        let t = try SharedSession.misc.run(#"""
            import os
            fds, failure = [], None
            try:
                while len(fds) < 100000:
                    fds.append(os.open("/dev/null", os.O_RDONLY))
            except OSError as e:
                failure = e.errno
            for fd in fds:
                os.close(fd)
            print("OPENED", len(fds), "STOPPED", failure)
            """#)
        let words = t.words("OPENED") ?? []
        #expect(words.count == 3 && words[2] == String(EMFILE), "\(t)")
        #expect((Int(words.first ?? "") ?? 100_000) < Limits().maxFDs, "\(t)")
        t.expectFinishedCleanly()
    }

    // MARK: Memory

    @Test func hugeAllocation() throws {
        // Over a memory cgroup the address-space limit is a backstop, several times memory_mb:
        // an allocation no session could hold still fails at once.
        let t = try SharedSession.misc.run(Python.memoryCgroupProbe + #"""
            import resource
            print("RLIMIT_AS_MB", resource.getrlimit(resource.RLIMIT_AS)[1] >> 20)
            try:
                hog = bytearray(10**10)
                print("ALLOCATED", len(hog))
            except MemoryError:
                print("MEMORY-ERROR")
            import mmap
            try:
                big = mmap.mmap(-1, 8 << 30)
                print("MAPPED")
            except OSError as e:
                print("MMAP-FAILED", e.errno)
            print("AFTER", len(bytearray(10 << 20)))
            """#)
        t.expectLine("RLIMIT_AS_MB \(t.expectedAddressSpaceMB() ?? -1)")
        t.expectLine("MEMORY-ERROR")
        t.expectLine("MMAP-FAILED \(ENOMEM)")
        t.expectLine("AFTER \(10 << 20)")
        t.expectFinishedCleanly()
    }

    @Test func slowMemoryGrowth() throws {
        try Sandboxed.withSession { session in
            let t = Sandboxed.run(Python.memoryCgroupProbe + #"""
                import resource
                print("RLIMIT_AS_MB", resource.getrlimit(resource.RLIMIT_AS)[1] >> 20)
                chunks = []
                while True:
                    chunks.append(b"x" * (10 << 20))   # every page written, so it is resident
                    if len(chunks) % 10 == 0:
                        print("HELD_MB", len(chunks) * 10)
                """#, in: session)
            t.expectLine("RLIMIT_AS_MB \(t.expectedAddressSpaceMB() ?? -1)")
            let held = t.lines.compactMap { $0.hasPrefix("HELD_MB ") ? Int($0.dropFirst(8)) : nil }.max() ?? 0
            #expect(held > 0 && held <= Limits().memoryMB, "\(t)")
            switch t.outcome {
            case .finished(status: .error, exitCode: nil, duration: _, errorName: "MemoryError"):
                // The rlimit stopped it with an exception; the session survives it.
                let after = Sandboxed.run("del chunks\nprint('recovered', len(bytearray(50 << 20)))", in: session)
                after.expectLine("recovered \(50 << 20)")
            case .limitExceeded(.memory(megabytes: Limits().memoryMB)):
                break // the cgroup killed it
            default:
                Issue.record("unexpected outcome of a memory bomb\n\(t)")
            }
        }
        Sandboxed.expectNewSessionWorks()
    }

    @Test func memorySpreadOverProcesses() throws {
        // RLIMIT_AS is per process; the session's cgroup must cap the sum: four children each
        // touching 60% of the limit cannot all hold it at once.
        let policy = Sandboxed.policy { $0.memoryMB = 256 }
        let session = try Sandboxed.start(policy)
        defer { session.shutdown(grace: 1) }
        if session.notes.contains(where: { $0.contains("cgroup") }) {
            try Test.cancel("no cgroup on this host: \(session.notes)")
        }
        let t = Sandboxed.run(#"""
            import os, time
            release_r, release_w = os.pipe()
            ready_r, ready_w = os.pipe()
            children = []
            for i in range(4):
                pid = os.fork()
                if pid == 0:
                    os.close(release_w)
                    try:
                        hog = b"x" * (150 << 20)
                        os.write(ready_w, b"+")
                        os.read(release_r, 1)
                        os._exit(0)
                    except MemoryError:
                        os._exit(3)
                children.append(pid)
            os.close(ready_w)
            time.sleep(3)
            os.close(release_w)
            statuses = sorted(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children)
            held = len(os.read(ready_r, 16))
            print("CHILDREN", *statuses)
            print("HELD-AT-ONCE-AT-MOST", held)
            """#, in: session)
        let statuses = (t.words("CHILDREN") ?? []).compactMap { Int($0) }
        #expect(statuses.count == 4, "\(t)")
        #expect(statuses.contains(-Int(SIGKILL)), "the cgroup's OOM killer must stop at least one child\n\(t)")
    }

    // MARK: Time

    @Test func wallClockTimeout() throws {
        let policy = Sandboxed.policy { $0.timeoutSeconds = 1 }
        let t = try Sandboxed.runFresh("while True: pass", policy: policy)
        #expect(t.outcome == .limitExceeded(.timeout(seconds: 1)), "\(t)")
        Sandboxed.expectNewSessionWorks()
    }

    @Test func timeoutIgnoringEverySignal() throws {
        let policy = Sandboxed.policy { $0.timeoutSeconds = 1 }
        try Sandboxed.withSession(policy) { session in
            let t = Sandboxed.run(#"""
                import signal
                for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGXCPU, signal.SIGUSR1):
                    signal.signal(s, signal.SIG_IGN)
                signal.pthread_sigmask(signal.SIG_BLOCK, set(signal.Signals))
                while True:
                    try:
                        pass
                    except BaseException:
                        pass
                """#, in: session)
            #expect(t.outcome == .limitExceeded(.timeout(seconds: 1)), "\(t)")
            #expect(!session.isAlive)
            let next = session.execute("print(1)")
            #expect(next == .workerEnded(exitCode: nil, signal: SIGKILL) || !session.isAlive, "\(next)")
        }
        Sandboxed.expectNewSessionWorks()
    }

    @Test func cpuLimit() throws {
        let policy = Sandboxed.policy { $0.cpuSeconds = 1; $0.timeoutSeconds = 10 }
        let t = try Sandboxed.runFresh(#"""
            import resource
            print("RLIMIT_CPU", *resource.getrlimit(resource.RLIMIT_CPU))
            while True:
                pass
            """#, policy: policy)
        t.expectLine("RLIMIT_CPU 1 2")
        #expect(t.outcome == .limitExceeded(.cpu(seconds: 1)), "\(t)")
        Sandboxed.expectNewSessionWorks()
    }

    @Test func cpuLimitIgnoringSIGXCPU() throws {
        // SIGXCPU can be ignored; the hard limit one second later is SIGKILL, which pid 1 still
        // reports as the CPU limit (not the 10 s timeout, not a bare signal 9).
        let policy = Sandboxed.policy { $0.cpuSeconds = 1; $0.timeoutSeconds = 10 }
        let t = try Sandboxed.runFresh(#"""
            import signal
            signal.signal(signal.SIGXCPU, signal.SIG_IGN)
            while True:
                pass
            """#, policy: policy)
        #expect(t.outcome == .limitExceeded(.cpu(seconds: 1)), "\(t)")
    }

    @Test func cpuLimitHoldsInForkedChildren() throws {
        // RLIMIT_CPU is per process (SECURITY.md): a child that burns past it is killed by SIGXCPU
        // like the main process, and the wall-clock timeout bounds the session as a whole.
        let policy = Sandboxed.policy { $0.cpuSeconds = 1; $0.timeoutSeconds = 20 }
        let t = try Sandboxed.runFresh(#"""
            import os, resource
            pid = os.fork()
            if pid == 0:
                print("CHILD-LIMIT", *resource.getrlimit(resource.RLIMIT_CPU), flush=True)
                while True:
                    pass
            print("CHILD-EXIT", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
            """#, policy: policy)
        t.expectLine("CHILD-LIMIT 1 2")
        t.expectLine("CHILD-EXIT \(-SIGXCPU)")
        t.expectFinishedCleanly()
    }

    @Test func cpuSpreadOverChildrenIsBoundedByTheTimeout() throws {
        // Forking multiplies the per-process CPU budget; the wall-clock timeout still ends it all.
        let policy = Sandboxed.policy { $0.cpuSeconds = 1; $0.timeoutSeconds = 2 }
        let t = try Sandboxed.runFresh(#"""
            import os
            while True:
                pid = os.fork()
                if pid == 0:
                    while True:
                        pass
                os.waitpid(pid, 0)
            """#, policy: policy)
        #expect(t.outcome == .limitExceeded(.timeout(seconds: 2)), "\(t)")
    }

    // MARK: Output

    @Test func outputFlood() throws {
        let cap = 1 << 20
        let policy = Sandboxed.policy { $0.maxOutputBytes = cap }
        let t = try Sandboxed.runFresh(#"""
            import sys
            chunk = "x" * (1 << 20)
            for _ in range(1024):          # 1 GiB
                sys.stdout.write(chunk)
            print("FINISHED")
            """#, policy: policy)
        #expect(t.outcome == .limitExceeded(.output(bytes: cap)), "\(t.outcome)")
        let delivered = t.stdout.utf8.count + t.stderr.utf8.count
        #expect(delivered <= cap && delivered > cap / 2, "delivered \(delivered) bytes")
        #expect(!t.stdout.contains("FINISHED"))
        Sandboxed.expectNewSessionWorks()
    }

    @Test func outputFloodOnStderr() throws {
        let cap = 256 << 10
        let policy = Sandboxed.policy { $0.maxOutputBytes = cap }
        let t = try Sandboxed.runFresh(#"""
            import sys
            while True:
                print("e" * 1000, file=sys.stderr)
            """#, policy: policy)
        #expect(t.outcome == .limitExceeded(.output(bytes: cap)), "\(t.outcome)")
        #expect(t.stdout.utf8.count + t.stderr.utf8.count <= cap)
    }

    @Test func outputFloodThroughForgedStreamFrames() throws {
        // Writing `stream` frames straight to the channel counts against the same limit.
        let cap = 256 << 10
        let policy = Sandboxed.policy { $0.maxOutputBytes = cap }
        let t = try Sandboxed.runFresh(#"""
            import os
            from capsule_worker import frames, streams
            frame = frames.encode({"type": "stream", "id": streams.current_id, "name": "stdout", "text": "y" * 60000})
            while True:
                os.write(3, frame)
            """#, policy: policy)
        #expect(t.outcome == .limitExceeded(.output(bytes: cap)), "\(t.outcome)")
        #expect(t.stdout.utf8.count <= cap)
    }
}
