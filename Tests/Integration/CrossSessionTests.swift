// One sandbox attacking another that runs at the same time.
#if canImport(Glibc)
import Glibc
#endif
import Testing
import CapsuleRuntime

@Suite("Between sessions") struct CrossSessionTests {
    @Test func sessionsCannotSeeEachOther() throws {
        let victim = try Sandboxed.start()
        defer { victim.shutdown(grace: 1) }
        let attacker = try Sandboxed.start()
        defer { attacker.shutdown(grace: 1) }

        let planted = Sandboxed.run(#"""
            import os, socket, time
            open("/workspace/victim-secret", "w").write("secret")
            open("/dev/shm/victim-secret", "w").write("secret")
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind("\0capsule-victim")
            listener.listen(1)
            listener.setblocking(False)
            print("PLANTED", open("/proc/self/uid_map").read().split()[1])
            """#, in: victim)
        planted.expectFinishedCleanly()
        let victimUID = planted.words("PLANTED")?.first ?? "?"

        let t = Sandboxed.run(Python.prelude + #"""
            import socket
            attempt("workspace", lambda: open("/workspace/victim-secret").read())
            attempt("shm", lambda: open("/dev/shm/victim-secret").read())
            attempt("abstract", lambda: socket.socket(socket.AF_UNIX).connect("\0capsule-victim"))
            print("PIDS", *sorted(p for p in os.listdir("/proc") if p.isdigit()))
            print("MYUID", open("/proc/self/uid_map").read().split()[1])
            """#, in: attacker)
        t.expectFinishedCleanly()
        t.expectBlocked("workspace", ENOENT)
        t.expectBlocked("shm", ENOENT)
        t.expectBlocked("abstract", ECONNREFUSED)
        t.expectLine("PIDS 1 2")
        #expect(t.words("MYUID")?.first != victimUID, "each live session has its own host uid\n\(t)")

        let check = Sandboxed.run(#"""
            listener.setblocking(False)
            try:
                listener.accept()
                print("VICTIM-GOT-CONNECTION")
            except BlockingIOError:
                print("VICTIM-UNTOUCHED", open("/workspace/victim-secret").read())
            """#, in: victim)
        check.expectLine("VICTIM-UNTOUCHED secret")
    }
}
