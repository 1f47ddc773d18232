#if canImport(Glibc)
import Glibc
#endif
import CapsuleCapabilities
import CapsuleOS
import CapsuleProtocol
import Synchronization

/// Runs a session's capability calls: immediate ones on the session's thread, the rest on tasks
/// whose answers come back through a mailbox the session polls beside the channel, so a slow call
/// never holds the session and several may be outstanding at once. The session stays the only
/// writer of the channel.
/// A call's answer, as the session delivers it.
struct CapabilityAnswer: Sendable {
    let id: String
    let capability: String
    let reply: CapabilityReply
}

final class CallDispatcher: Sendable {
    let broker: Broker
    /// Readable when answers are waiting (one end of a socket pair; tasks write to the other).
    let descriptor: Int32
    private let wake: Int32
    private let state = Mutex(State())

    private struct State {
        var answers: [CapabilityAnswer] = []
        var running: [String: Task<Void, Never>] = [:]
        var closed = false
    }

    init(broker: Broker) {
        self.broker = broker
        let pair = (try? OS.socketPair()) ?? (-1, -1)
        (descriptor, wake) = pair
        try? OS.setNonBlocking(descriptor)
        try? OS.setNonBlocking(wake)
    }

    deinit {
        cancelAll()
        OS.close(descriptor)
        OS.close(wake)
    }

    /// The broker's answer now, or nil when the call runs on a task (its answer comes through `takeAnswers`).
    func start(_ call: CapabilityCall) -> CapabilityReply? {
        switch broker.admit(call) {
        case .answered(let reply):
            return reply
        case .admitted(let admitted):
            state.withLock { state in
                guard !state.closed else { return }
                state.running[call.id] = Task(executorPreference: CallExecutor.shared) { [broker] in
                    let reply = await broker.perform(admitted)
                    self.post(CapabilityAnswer(id: call.id, capability: call.capability, reply: reply))
                }
            }
            return nil
        }
    }

    private func post(_ answer: CapabilityAnswer) {
        let first = state.withLock { state in
            guard state.running.removeValue(forKey: answer.id) != nil, !state.closed else { return false }
            state.answers.append(answer)
            return state.answers.count == 1
        }
        // One wake-up for a batch: answers posted before the session takes the first come with it.
        var byte: UInt8 = 1
        if first { _ = write(wake, &byte, 1) } // a full pipe already wakes the session
    }

    /// The answers that arrived, in order.
    func takeAnswers() -> [CapabilityAnswer] {
        var bytes = [UInt8](repeating: 0, count: 256)
        while read(descriptor, &bytes, bytes.count) > 0 {}
        return state.withLock { state in
            defer { state.answers.removeAll() }
            return state.answers
        }
    }

    var outstanding: Int { state.withLock { $0.running.count } }

    /// The session ended: calls in flight are cancelled and their answers dropped.
    func cancelAll() {
        let tasks = state.withLock { state in
            state.closed = true
            defer { state.running.removeAll() }
            return Array(state.running.values)
        }
        for task in tasks { task.cancel() }
        broker.sessionEnded()
    }
}
