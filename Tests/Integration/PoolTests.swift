// The warm pool: sessions started ahead, each handed out once, so a user never meets another's
// state, files or processes; the pool refills in the background and keeps to its max.
#if canImport(Glibc)
import Glibc
#endif
import Testing
import CapsuleOS
import CapsulePolicy
@testable import CapsuleRuntime
import CapsuleSandbox

private func pooled(minIdle: Int, max: Int) -> Policy {
    var policy = Sandboxed.policy()
    policy.pool = PoolSettings(minIdle: minIdle, max: max)
    return policy
}

/// Waits (up to 30 s) until `condition` holds; whether it did.
private func eventually(_ condition: () -> Bool) async -> Bool {
    let end = OS.now() + 30_000_000_000
    while !condition() {
        guard OS.now() < end else { return false }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return true
}

private func run(_ code: String, in session: Session) async throws -> String {
    var text = ""
    _ = await (try session.submit(code)).outcome { event in
        if case .stream(.stdout, let chunk) = event { text += chunk }
        if case .error(let ename, let evalue, _) = event { text += "\(ename): \(evalue)" }
    }
    return text
}

@Suite("Warm pool") struct PoolTests {
    @Test("the pool starts min_idle sessions ahead and refills as they are handed out")
    func fillsAndRefills() async throws {
        let pool = SessionPool(policy: pooled(minIdle: 2, max: 5), location: try Sandboxed.location())
        #expect(await eventually { pool.idleCount == 2 }, "the pool did not fill: \(pool.idleCount)")
        let first = try await pool.acquire()
        #expect(first.isAlive)
        #expect(await eventually { pool.idleCount == 2 }, "the pool did not refill: \(pool.idleCount)")
        await pool.release(first)
        #expect(!first.isAlive, "a released session was not closed")
        await pool.close()
        #expect(pool.idleCount == 0)
    }

    @Test("a session handed out is fresh: nothing of the user before it")
    func handedOutFresh() async throws {
        let pool = SessionPool(policy: pooled(minIdle: 1, max: 3), location: try Sandboxed.location())
        let first = try await pool.acquire()
        let child = try await run("""
            import os, time
            secret = 'first user'
            open('/workspace/secret.txt', 'w').write(secret)
            open('/tmp/secret.txt', 'w').write(secret)
            pid = os.fork()
            if pid == 0:
                time.sleep(600)
                os._exit(0)
            print(pid)
            """, in: first)
        let launcher = first.pid
        await pool.release(first)
        #expect(kill(launcher, 0) != 0, "the first user's sandbox is still there")
        let second = try await pool.acquire()
        #expect(second.pid != launcher)
        let seen = try await run("""
            import os
            print('secret' in globals(), os.path.exists('/workspace/secret.txt'), os.path.exists('/tmp/secret.txt'),
                  os.path.exists('/proc/\(child.filter(\.isNumber))'))
            """, in: second)
        #expect(seen == "False False False False\n", "\(seen) (the first user's child was \(child))")
        await pool.release(second)
        await pool.close()
    }

    @Test("a waiting session killed from outside is passed over: the one handed out works")
    func deadWaitingSessionsArePassedOver() async throws {
        let pool = SessionPool(policy: pooled(minIdle: 2, max: 4), location: try Sandboxed.location())
        #expect(await eventually { pool.idleCount == 2 })
        let waiting = pool.waitingSessions
        for session in waiting { kill(session.pid, SIGKILL) } // the launcher takes its sandbox with it
        #expect(await eventually { waiting.allSatisfy { !$0.seemsAlive } }, "killed sessions still seem alive")
        let fresh = try await pool.acquire()
        #expect(!waiting.contains { $0 === fresh }, "a dead session was handed out")
        #expect(try await run("print(6 * 7)", in: fresh) == "42\n")
        #expect(waiting.allSatisfy { !$0.isAlive }, "the dead sessions were not reaped")
        await pool.release(fresh)
        await pool.close()
    }

    @Test("no more than max sessions at once; asking for one more is refused, saying why")
    func keepsToItsMax() async throws {
        let pool = SessionPool(policy: pooled(minIdle: 0, max: 2), location: try Sandboxed.location())
        let one = try await pool.acquire()
        let two = try await pool.acquire()
        do {
            _ = try await pool.acquire()
            Issue.record("a third session was handed out")
        } catch {
            #expect("\(error)".contains("has all its 2 sessions out ([pool] max in the policy)"), "\(error)")
        }
        // Giving back a session the pool did not hand out, or one twice, makes no room.
        let stranger = try await Session.open(policy: pool.policy, location: try Sandboxed.location())
        await pool.release(stranger)
        #expect(!stranger.isAlive)
        await pool.release(one)
        await pool.release(one)
        let three = try await pool.acquire()
        do {
            _ = try await pool.acquire()
            Issue.record("releasing a stranger or a session twice made room for a third")
        } catch {}
        #expect(three.isAlive && three.pid != one.pid)
        await pool.release(two)
        await pool.release(three)
        await pool.close()
        await #expect(throws: SessionError.self) { _ = try await pool.acquire() }
    }
}
