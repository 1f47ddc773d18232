import CapsuleCapabilities
import CapsulePolicy
import Synchronization

/// The approver of a session started without a broker of its own: it asks whoever reads the
/// session's events. A call the policy holds for a decision (`ask = true`), or `capsule.ask()`,
/// becomes `.approvalRequest(id:request:)` in the running execution; `Session.answerApproval`
/// decides it. No execution running, the execution ending, or the session ending: denied.
final class EventApprover: Approver {
    private let state = Mutex(State())

    private struct State {
        var emit: Session.Emit?
        var next = 1
        var pending: [String: CheckedContinuation<ApprovalDecision, Never>] = [:]
        /// Requests decided (cancelled) before they were registered.
        var decided: [String: ApprovalDecision] = [:]
    }

    func decide(_ request: ApprovalRequest, policy: Policy) async -> ApprovalDecision {
        let id = state.withLock { state in
            defer { state.next += 1 }
            return "approval-\(state.next)"
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let emit = state.withLock { state -> Session.Emit? in
                    if let decision = state.decided.removeValue(forKey: id) {
                        continuation.resume(returning: decision)
                        return nil
                    }
                    guard let emit = state.emit else {
                        continuation.resume(returning: .denied("nobody can approve it: the policy says ask = true, and no execution is running to ask through"))
                        return nil
                    }
                    state.pending[id] = continuation
                    return emit
                }
                emit?(.approvalRequest(id: id, request))
            }
        } onCancel: {
            answer(id, .denied("the session ended before anyone decided"), early: true)
        }
    }

    /// Decides request `id`; false when no such request waits.
    @discardableResult
    func answer(_ id: String, _ decision: ApprovalDecision, early: Bool = false) -> Bool {
        let continuation = state.withLock { state in
            let waiting = state.pending.removeValue(forKey: id)
            if waiting == nil && early { state.decided[id] = decision }
            return waiting
        }
        continuation?.resume(returning: decision)
        return continuation != nil
    }

    /// Requests go to `emit` while an execution runs.
    func attach(_ emit: @escaping Session.Emit) {
        state.withLock { $0.emit = emit }
    }

    /// The execution ended: what still waits is denied.
    func detach() {
        let waiting = state.withLock { state in
            state.emit = nil
            defer { state.pending.removeAll() }
            return Array(state.pending.values)
        }
        for continuation in waiting { continuation.resume(returning: .denied("the execution ended before anyone decided")) }
    }
}
