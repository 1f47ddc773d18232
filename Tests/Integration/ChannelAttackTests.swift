// Attacking the supervisor through the channel (fd 3): the user code can write anything on it.
// Each attack must end only its own session with a protocol error; the supervisor carries on.
#if canImport(Glibc)
import Glibc
#endif
import Testing
import CapsuleProtocol
import CapsuleRuntime

@Suite("Channel attacks") struct ChannelAttackTests {
    /// Runs `code` in a fresh session; expects a protocol error whose text contains `fragment`,
    /// a dead session, and a working supervisor.
    func expectProtocolError(_ code: String, mentioning fragment: String,
                             sourceLocation: SourceLocation = #_sourceLocation) throws {
        let session = try Sandboxed.start()
        defer { session.shutdown(grace: 1) }
        let t = Sandboxed.run("import os\nfrom capsule_worker import frames, streams\n" + code, in: session)
        guard case .protocolError(let text) = t.outcome else {
            Issue.record("expected a protocol error\n\(t)", sourceLocation: sourceLocation)
            return
        }
        #expect(text.contains(fragment), "the protocol error `\(text)` should mention `\(fragment)`",
                sourceLocation: sourceLocation)
        #expect(!session.isAlive, "the session ends", sourceLocation: sourceLocation)
        #expect(t.line("AFTER") == nil, "nothing after the forged bytes is delivered\n\(t)", sourceLocation: sourceLocation)
        Sandboxed.expectNewSessionWorks(sourceLocation: sourceLocation)
    }

    @Test func oversizedFrameHeader() throws {
        // 50 MiB announced: refused as soon as the 4 header bytes arrive, nothing buffered.
        try expectProtocolError(#"""
            os.write(3, (50 << 20).to_bytes(4, "big"))
            print("AFTER")
            """#, mentioning: "frame of \(50 << 20) bytes exceeds the \(16 << 20)-byte limit")
    }

    @Test func maximalFrameHeader() throws {
        try expectProtocolError(#"""
            os.write(3, b"\xff\xff\xff\xff")
            print("AFTER")
            """#, mentioning: "exceeds the \(16 << 20)-byte limit")
    }

    @Test func garbageFrame() throws {
        try expectProtocolError(#"""
            os.write(3, b"\x00\x00\x00\x05hello")
            print("AFTER")
            """#, mentioning: "not valid JSON")
    }

    @Test func zeroLengthFrame() throws {
        try expectProtocolError(#"""
            os.write(3, b"\x00\x00\x00\x00")
            print("AFTER")
            """#, mentioning: "length 0")
    }

    @Test func invalidUTF8Frame() throws {
        try expectProtocolError(#"""
            payload = b'{"type":"stream","text":"\xff\xfe"}'
            os.write(3, len(payload).to_bytes(4, "big") + payload)
            print("AFTER")
            """#, mentioning: "UTF-8")
    }

    @Test func frameThatIsNotAnObject() throws {
        try expectProtocolError(#"""
            os.write(3, b"\x00\x00\x00\x07[1,2,3]")
            print("AFTER")
            """#, mentioning: "not a JSON object")
    }

    @Test func unknownMessageType() throws {
        try expectProtocolError(#"""
            os.write(3, frames.encode({"type": "cap_call", "id": streams.current_id, "capability": "fs.read", "path": "/etc/shadow"}))
            print("AFTER")
            """#, mentioning: "cap_call")
    }

    @Test func forgedDoneForAnotherExecution() throws {
        try expectProtocolError(#"""
            os.write(3, frames.encode({"type": "done", "id": "999", "status": "ok", "duration": 0.0}))
            print("AFTER")
            """#, mentioning: "for execution 999")
    }

    @Test func forgedDoneForAnEarlierExecution() throws {
        // Output for an earlier execution is delivered (a thread may print late); a `done` is not.
        try expectProtocolError(#"""
            os.write(3, frames.encode({"type": "done", "id": "0", "status": "ok", "duration": 0.0}))
            print("AFTER")
            """#, mentioning: "for execution 0")
    }

    @Test func forgedCheckpointAnswersDuringAnExecution() throws {
        try expectProtocolError(#"""
            os.write(3, frames.encode({"type": "checkpoint_data", "id": "k1", "data": "", "names": [], "skipped": {}}))
            print("AFTER")
            """#, mentioning: "`checkpoint_data` for execution none")
        try expectProtocolError(#"""
            os.write(3, frames.encode({"type": "restored", "id": "r1", "names": ["x"], "skipped": {}}))
            print("AFTER")
            """#, mentioning: "`restored` for execution none")
    }

    @Test func forgedReady() throws {
        try expectProtocolError(#"""
            os.write(3, frames.encode({"type": "ready", "pid": 1, "python": "3.99"}))
            print("AFTER")
            """#, mentioning: "`ready`")
    }

    @Test func deeplyNestedJSON() throws {
        // A parser bomb: 100 000 nested arrays inside a valid frame.
        let session = try Sandboxed.start()
        defer { session.shutdown(grace: 1) }
        let t = Sandboxed.run(#"""
            import os
            payload = b'{"type":"stream","id":"1","name":"stdout","text":' + b"[" * 100000 + b"]" * 100000 + b"}"
            os.write(3, len(payload).to_bytes(4, "big") + payload)
            print("AFTER")
            """#, in: session)
        guard case .protocolError = t.outcome else {
            Issue.record("expected a protocol error\n\(t)")
            return
        }
        Sandboxed.expectNewSessionWorks()
    }

    @Test func halfAFrameThenExit() throws {
        // A frame cut short by the process exiting: the session ends, the supervisor does not hang.
        let t = try Sandboxed.runFresh(#"""
            import os
            os.write(3, b"\x00\x00\x01\x00{\"type\":")
            os._exit(0)
            """#)
        switch t.outcome {
        case .workerEnded, .protocolError: break
        default: Issue.record("unexpected outcome\n\(t)")
        }
        Sandboxed.expectNewSessionWorks()
    }

    @Test func statusPipeIsClosed() throws {
        // fd 4 (pid 1's report of how Python ended) must not be writable by user code, so the code
        // cannot forge "exit 0" or an OOM report.
        let t = try Sandboxed.runFresh(Python.prelude + #"""
            attempt("write-status", lambda: os.write(4, b"exit 0\n"))
            attempt("fstat-status", lambda: os.fstat(4))
            attempt("go-pipe", lambda: os.fstat(5))
            attempt("reopen-status", lambda: open("/proc/1/fd/4", "w"))
            """#)
        t.expectBlocked("write-status", EBADF)
        t.expectBlocked("fstat-status", EBADF)
        t.expectBlocked("go-pipe", EBADF)
        t.expectBlocked("reopen-status", EACCES)
        t.expectFinishedCleanly()
    }
}

@Suite("Channel: passing descriptors and closing it") struct ChannelLifecycleTests {
    @Test func passDescriptorsToTheSupervisor() throws {
        // SCM_RIGHTS on the channel: the supervisor reads with read(2), so the kernel drops passed
        // descriptors. If the supervisor kept the pipe's write end, the read end would never see EOF.
        let t = try Sandboxed.runFresh(#"""
            import os, socket, select
            from capsule_worker import frames, streams
            channel = socket.socket(fileno=os.dup(3))
            r, w = os.pipe()
            frame = frames.encode({"type": "stream", "id": streams.current_id, "name": "stdout", "text": "CARRIER\n"})
            channel.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, bytes(memoryview(bytearray(w.to_bytes(4, "little")))))])
            channel.detach()
            os.close(w)
            readable, _, _ = select.select([r], [], [], 5)
            print("PIPE", "EOF" if readable and os.read(r, 1) == b"" else "HELD-BY-SOMEONE")
            """#)
        t.expectLine("CARRIER")
        t.expectLine("PIPE EOF")
        t.expectFinishedCleanly()
    }

    @Test func closeTheChannel() throws {
        let t = try Sandboxed.runFresh(#"""
            import os
            print("CLOSING")
            os.close(3)
            """#)
        // The worker cannot report `done`: it exits, pid 1 follows, the supervisor sees the end.
        #expect(t.outcome == .workerEnded(exitCode: 0, signal: nil), "\(t)")
        Sandboxed.expectNewSessionWorks()
    }

    @Test func closeTheChannelAndKeepRunning() throws {
        // With the channel closed the supervisor hears nothing more, yet the timeout still holds:
        // the code is stopped at 1 s instead of running (and holding the supervisor) forever.
        let policy = Sandboxed.policy { $0.timeoutSeconds = 1 }
        let t = try Sandboxed.runFresh(#"""
            import os
            os.close(3)
            while True:
                pass
            """#, policy: policy)
        #expect(t.outcome == .limitExceeded(.timeout(seconds: 1)), "\(t)")
        Sandboxed.expectNewSessionWorks()
    }

    @Test func aSecondResultIsAProtocolError() throws {
        // User code can write frames on its channel; it cannot report two results for one execution.
        let t = try Sandboxed.runFresh(#"""
            import os
            from capsule_worker import frames, streams
            forged = frames.encode({"type": "result", "id": streams.current_id, "data": {"text/plain": "forged"}})
            os.write(3, forged + forged)
            """#)
        #expect(t.outcome == .protocolError("a second `result` or `error` in execution 1"), "\(t)")
        Sandboxed.expectNewSessionWorks()
    }
}
