import CapsuleAudit
import CapsuleOS
import CapsulePolicy
import CapsuleProtocol
import CapsuleRuntime
import CapsuleSandbox
import Synchronization

/// The sessions a server holds, by id. Each is a `Session` of the runtime (one sandbox, one
/// execution at a time); the server only names them and keeps them until a client deletes them
/// or the server stops.
final class ServedSessions: Sendable {
    struct Entry: Sendable {
        let id: String
        let session: Session
        let policyOrigin: String
        let level: Level
        let created: String
    }

    private let entries = Mutex<[String: Entry]>([:])
    /// Executions running now, in every session (a graceful shutdown waits for them).
    private let running = Mutex(0)
    private let draining = Atomic(false)
    /// Sessions being opened, counted against `limit` before they exist.
    private let opening = Mutex(0)
    let limit: Int

    init(limit: Int) { self.limit = limit }

    var count: Int { entries.withLock(\.count) }

    func get(_ id: String) -> Entry? { entries.withLock { $0[id] } }

    func all() -> [Entry] { entries.withLock { Array($0.values) }.sorted { $0.created < $1.created || ($0.created == $1.created && $0.id < $1.id) } }

    /// Opens a session for `policy`, unless `limit` sessions are open or opening.
    func open(policy: Policy, location: WorkerLocation, audit: SessionAudit?) async throws(Problem) -> Entry {
        let admitted = opening.withLock { opening -> Bool in
            guard count + opening < limit else { return false }
            opening += 1
            return true
        }
        guard admitted else {
            throw Problem(.tooManyRequests, "Too many sessions", "this server holds at most \(limit) sessions; DELETE one you no longer need (capsule serve --max-sessions raises the limit)")
        }
        defer { opening.withLock { $0 -= 1 } }
        let session: Session
        do {
            session = try await Session.open(policy: policy, location: location, audit: audit)
        } catch {
            throw Problem(.serviceUnavailable, "The session could not start", "\(error)")
        }
        let entry = Entry(id: Self.newID(), session: session, policyOrigin: policy.origin, level: policy.level, created: OS.timestamp())
        entries.withLock { $0[entry.id] = entry }
        return entry
    }

    /// Removes the session and ends its sandbox; false when there was none by that id.
    func close(_ id: String) async -> Bool {
        guard let entry = entries.withLock({ $0.removeValue(forKey: id) }) else { return false }
        await entry.session.close()
        return true
    }

    func closeAll() async {
        for entry in entries.withLock({ entries in defer { entries.removeAll() }; return Array(entries.values) }) {
            await entry.session.close()
        }
    }

    /// 503 once the server is shutting down.
    func checkOpen() throws(Problem) {
        guard !draining.load(ordering: .sequentiallyConsistent) else {
            throw Problem(.serviceUnavailable, "Shutting down", "the server is stopping; nothing new starts. Try again once it is back")
        }
    }

    func began() { running.withLock { $0 += 1 } }
    func ended() { running.withLock { $0 -= 1 } }

    /// The shutdown: every running execution interrupted, `grace` seconds for them to end (and
    /// their answers to go out), then every sandbox ended.
    func drain(grace: Double) async {
        draining.store(true, ordering: .sequentiallyConsistent)
        for entry in all() { entry.session.interrupt() }
        let deadline = OS.now() + UInt64(grace * 1e9)
        while running.withLock({ $0 }) > 0, OS.now() < deadline { try? await Task.sleep(for: .milliseconds(20)) }
        await closeAll()
    }

    static func newID() -> String {
        var generator = SystemRandomNumberGenerator()
        return "s-" + (0..<12).map { _ in UInt8.random(in: .min ... .max, using: &generator) }.hexText
    }
}

extension ServedSessions.Entry {
    var json: JSONValue {
        .object([("id", .string(id)), ("policy", .string(policyOrigin)), ("level", .string(level.rawValue)),
                 ("created", .string(created)), ("alive", .bool(session.isAlive)), ("pid", .number(Double(session.pid)))])
    }
}
