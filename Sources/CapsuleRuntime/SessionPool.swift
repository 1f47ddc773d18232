import CapsuleCapabilities
import CapsuleOS
import CapsulePolicy
import CapsuleSandbox
import Synchronization

/// Sessions started ahead for one policy (its `[pool]` table), so that handing one out costs no
/// sandbox start. A session is handed out once: `release` closes it, and the next `acquire`
/// gets one no one has used. The pool starts sessions in the background to keep `min_idle`
/// waiting, never more than `max` in all.
public final class SessionPool: Sendable {
    public let policy: Policy
    public let settings: PoolSettings
    private let location: WorkerLocation
    private let audit: (any AuditSink)?
    private let state = Mutex(State())

    private struct State {
        var idle: [Session] = []
        var starting = 0
        var handedOut = 0
        /// The sessions handed out and not yet given back (a session from elsewhere is not counted).
        var out: Set<ObjectIdentifier> = []
        var closed = false
    }

    /// A pool for `policy`, with its `[pool]` settings (or the defaults). It starts filling at once.
    public init(policy: Policy, location: WorkerLocation, audit: (any AuditSink)? = nil) {
        self.policy = policy
        self.settings = policy.pool ?? PoolSettings()
        self.location = location
        self.audit = audit
        refill()
    }

    /// Sessions waiting now.
    public var idleCount: Int { state.withLock { $0.idle.count } }

    /// The sessions waiting now (for tests: code run in one would make it used).
    var waitingSessions: [Session] { state.withLock { $0.idle } }

    /// A fresh session: one waiting, else one started now. Refused when `max` are out already.
    public func acquire() async throws(SessionError) -> Session {
        enum Take { case session(Session), start, full, closed }
        var dead: [Session] = []
        let take = state.withLock { state -> Take in
            guard !state.closed else { return .closed }
            while let session = state.idle.popLast() {
                guard session.seemsAlive else { // killed while it waited
                    dead.append(session)
                    continue
                }
                state.handedOut += 1
                state.out.insert(ObjectIdentifier(session))
                return .session(session)
            }
            guard state.idle.count + state.starting + state.handedOut < settings.max else { return .full }
            state.handedOut += 1
            return .start
        }
        for session in dead { await session.close() } // reaped
        switch take {
        case .session(let session):
            refill()
            return session
        case .closed:
            throw .pool("the session pool was closed")
        case .full:
            throw .pool("the session pool for \(policy.origin) has all its \(settings.max) sessions out "
                           + "([pool] max in the policy); release one, or raise max")
        case .start:
            do {
                let session = try await Session.open(policy: policy, location: location, audit: audit)
                state.withLock { _ = $0.out.insert(ObjectIdentifier(session)) }
                refill()
                return session
            } catch {
                state.withLock { $0.handedOut -= 1 }
                throw error
            }
        }
    }

    /// Gives a session back: it is closed (never handed out again) and the pool refills. A
    /// session this pool did not hand out (or one given back already) is only closed.
    public func release(_ session: Session) async {
        await session.close()
        let ours = state.withLock { state in
            guard state.out.remove(ObjectIdentifier(session)) != nil else { return false }
            state.handedOut -= 1
            return true
        }
        if ours { refill() }
    }

    /// Closes the waiting sessions and refuses further `acquire`s; sessions handed out stay theirs.
    public func close() async {
        let idle = state.withLock { state in
            state.closed = true
            defer { state.idle.removeAll() }
            return state.idle
        }
        for session in idle { await session.close() }
    }

    /// Starts sessions in the background until `min_idle` wait (or `max` are in use).
    private func refill() {
        let count = state.withLock { state -> Int in
            guard !state.closed else { return 0 }
            let wanted = settings.minIdle - state.idle.count - state.starting
            let room = settings.max - state.idle.count - state.starting - state.handedOut
            let count = max(0, min(wanted, room))
            state.starting += count
            return count
        }
        for _ in 0..<count {
            // On a loop of capsule's own: Swift's shared threads may all be blocked by callers of
            // the blocking API, and the pool must fill all the same.
            Task(executorPreference: EventLoop.next()) { [self] in
                let opened: Session?
                // A start that fails is not retried here (it would fail again and again): the next
                // `acquire` starts one itself and says what is wrong.
                opened = try? await Session.open(policy: policy, location: location, audit: audit)
                let leftOver = state.withLock { state -> Session? in
                    state.starting -= 1
                    guard let opened else { return nil }
                    if state.closed { return opened }
                    state.idle.append(opened)
                    return nil
                }
                if let leftOver { await leftOver.close() }
            }
        }
    }
}
