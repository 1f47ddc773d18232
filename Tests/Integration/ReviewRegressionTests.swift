// Weaknesses an internal review found, each proven by running the attack, and fixed.
#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Testing
import CapsuleOS
import CapsulePolicy
import CapsuleRuntime

@Suite("Review findings, fixed") struct ReviewRegressionTests {
    /// A `restricted` policy that grants `input`, with limits set by `configure`.
    static func withInput(_ configure: (inout Limits) -> Void) -> Policy {
        var limits = Limits()
        configure(&limits)
        var capabilities = Capabilities()
        capabilities.input = CapabilityGrant()
        return Policy(level: .restricted, limits: limits, capabilities: capabilities)
    }

    @Test func aFloodOfInputRequestsCannotHoldTheSupervisor() throws {
        // The code writes input requests and never reads the replies: the supervisor's sends stop
        // at the deadline instead of blocking on a full socket.
        let t = try Sandboxed.withSession(Self.withInput { $0.timeoutSeconds = 2 }) { session in
            var transcript = Transcript()
            transcript.outcome = session.execute(#"""
                import os, struct, time
                m = b'{"type":"input_request","id":"1","prompt":"","password":false}'
                frame = struct.pack(">I", len(m)) + m
                for _ in range(20000):
                    os.write(3, frame)
                while True:
                    time.sleep(1)
                """#) { _ in "" }
            return transcript
        }
        #expect(t.outcome == .limitExceeded(.timeout(seconds: 2)), "\(t)")
        Sandboxed.expectNewSessionWorks()
    }

    @Test func inputNeedsTheInputCapability() throws {
        // At `sandbox` nobody is asked: input() sees the end of input and the handler never runs.
        var asked = false
        let t = try Sandboxed.withSession(Policy(level: .sandbox)) { session in
            var transcript = Transcript()
            transcript.outcome = session.execute(Python.prelude + #"""
                try:
                    print("GOT", input("secret? "))
                except EOFError:
                    print("EOF")
                """#) { event in
                if case .inputRequest = event { asked = true }
                if case .stream(.stdout, let text) = event { transcript.stdout += text }
                return "host secret"
            }
            return transcript
        }
        #expect(!asked)
        t.expectLine("EOF")
    }

    @Test func promptsCountAgainstTheOutputLimit() throws {
        let t = try Sandboxed.withSession(Self.withInput { $0.maxOutputBytes = 1000 }) { session in
            var transcript = Transcript()
            transcript.outcome = session.execute(#"""
                for _ in range(50):
                    try:
                        input("P" * 100000)
                    except EOFError:
                        pass
                """#) { _ in nil }
            return transcript
        }
        #expect(t.outcome == .limitExceeded(.output(bytes: 1000)), "\(t)")
    }

    @Test func directoryNotificationsAreRefused() throws {
        // fcntl(F_NOTIFY) on the read-only runtime would report host file activity.
        let t = try Sandboxed.runFresh(Python.prelude + #"""
            import fcntl
            fd = os.open("/usr/lib/python3.11", os.O_RDONLY)
            attempt("dnotify", lambda: fcntl.fcntl(fd, fcntl.F_NOTIFY, fcntl.DN_ACCESS | fcntl.DN_MULTISHOT))
            attempt("lease", lambda: fcntl.fcntl(os.open("/usr/lib/python3.11/os.py", os.O_RDONLY), 1024, fcntl.F_RDLCK))
            w = os.open("/workspace/db", os.O_CREAT | os.O_RDWR)
            fcntl.lockf(w, fcntl.LOCK_EX)
            print("RECORD-LOCK ok")
            """#)
        t.expectBlocked("dnotify", EPERM)
        t.expectBlocked("lease", EPERM)
        t.expectLine("RECORD-LOCK ok")
    }

    @Test func readonlyPathsAreTakenLiterally() throws {
        // A symlink in readonly_paths could lead anywhere (and let a narrowing policy widen);
        // the sandbox refuses to start and says why.
        let directory = try Host.temporaryDirectory()
        defer { Host.removeTree(directory) }
        #expect(symlink("/etc", "\(directory)/link") == 0)
        do {
            _ = try Sandboxed.runFresh("pass", policy: Policy(level: .restricted, readonlyPaths: ["\(directory)/link"]))
            Issue.record("the sandbox started with a symlinked readonly path")
        } catch {
            #expect("\(error)" == "a read-only path named by the policy contains a symbolic link (\(directory)/link): capsule takes readonly_paths literally, so name the path's real location.")
        }
        Sandboxed.expectNewSessionWorks()
    }

    @Test func aUnixSocketIsNeverBoundIntoTheSandbox() throws {
        // connect() ignores read-only mounts: a bound socket would reach its host daemon.
        let directory = try Host.temporaryDirectory()
        defer { Host.removeTree(directory) }
        let socketPath = "\(directory)/daemon.sock"
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in socketPath.utf8.enumerated() { raw[i] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        try #require(bound == 0)
        do {
            _ = try Sandboxed.runFresh("pass", policy: Policy(level: .restricted, readonlyPaths: [socketPath]))
            Issue.record("the sandbox started with a socket among its readonly paths")
        } catch {
            #expect("\(error)" == "a read-only path named by the policy is a unix socket (\(socketPath)): a read-only bind would not keep the code from connecting to it, so capsule refuses it.")
        }
    }

    @Test func theSessionCgroupSitsBeneathTheSupervisors() throws {
        // Whatever limits the host puts on the supervisor's cgroup also bound its sandboxes.
        guard getuid() == 0 else { try Test.cancel("SKIPPED: only root can create the session's cgroup here") }
        let t = try Sandboxed.runFresh("print('CG', [l.split(':', 2)[2] for l in open('/proc/self/cgroup').read().split() if ':memory:' in l or l.startswith('0::')])")
        let line = try #require(t.line("CG"), "\(t)")
        #expect(line.contains("/capsule/s") && !line.contains(".."), "\(line)")
    }
}

@Suite("Interrupts") struct InterruptTests {
    /// Runs `code`, writes to the session's interrupt descriptor after `delay` seconds (as the
    /// CLI's ^C handler does), a second time after `second` seconds if given.
    static func interrupted(_ code: String, after delay: Double, again second: Double? = nil) throws -> Transcript {
        try Sandboxed.withSession { session in
            let (reader, writer) = try OS.socketPair()
            defer { OS.close(reader); OS.close(writer) }
            session.interruptDescriptor = reader
            for at in [delay] + (second.map { [$0] } ?? []) {
                DispatchQueue.global().asyncAfter(deadline: .now() + at) { _ = try? OS.writeAll(writer, [1]) }
            }
            return Sandboxed.run(code, in: session)
        }
    }

    @Test func anInterruptRunsFinallyBlocks() throws {
        let t = try Self.interrupted("import time\ntry:\n    time.sleep(30)\nfinally:\n    print('FINALLY')", after: 0.5)
        #expect(t.outcome == .finished(status: .interrupted, exitCode: nil, duration: 0, errorName: "KeyboardInterrupt")
                || (t.lines.contains("FINALLY") && t.errors.first?.hasPrefix("KeyboardInterrupt") == true), "\(t)")
        t.expectLine("FINALLY")
    }

    @Test func codeThatIgnoresTheInterruptIsKilledAfterTheGrace() throws {
        let t = try Self.interrupted("import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: time.sleep(0.1)",
                                     after: 0.5)
        #expect(t.outcome == .killedAfterInterrupt(graceSeconds: Session.interruptGrace), "\(t)")
        #expect(ExitStatus(t.outcome, policy: Policy(level: .sandbox)).code == ExitStatus.interrupted)
        Sandboxed.expectNewSessionWorks()
    }

    @Test func aSecondInterruptKillsAtOnce() throws {
        let t = try Self.interrupted("import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: time.sleep(0.1)",
                                     after: 0.3, again: 0.6)
        #expect(t.outcome == .killedAfterInterrupt(graceSeconds: 0), "\(t)")
        #expect(ExitStatus(t.outcome, policy: Policy(level: .sandbox), interruptSent: true).reason
            == "interrupted twice: the code was killed")
    }
}
