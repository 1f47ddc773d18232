import CapsuleCapabilities
import CapsulePolicy
import CapsuleProtocol

/// Something an execution produced, in the order the worker sent it.
public enum SessionEvent: Sendable, Equatable {
    case stream(StreamName, String)
    /// Output to write byte for byte: what the code wrote to file descriptors 1 and 2 directly, or
    /// bytes that are not UTF-8 text (`sys.stdout.buffer`).
    case streamData(StreamName, [UInt8])
    case result([String: String])
    case error(ename: String, evalue: String, traceback: [String])
    /// The code called `input()`; the event handler answers with a line, or nil for end of input.
    case inputRequest(prompt: String, password: Bool)
    /// The code displayed something (`display(obj)`): a MIME bundle, MIME type → text.
    case display([String: String])
    /// The code asked for input the policy does not grant (no `input` capability): it sees end of
    /// input, whatever the handler answers.
    case inputRefused
    /// A capability call the policy holds for a decision (`ask = true`), or `capsule.ask()`: the
    /// code waits until `Session.answerApproval(id, …)` decides it (only in a session started
    /// without a broker of its own; a broker brings its own approver).
    case approvalRequest(id: String, ApprovalRequest)
}

/// A limit that ended a session.
public enum LimitKind: Sendable, Equatable {
    case timeout(seconds: Double)
    case output(bytes: Int)
    case memory(megabytes: Int)
    case cpu(seconds: Int)
}

/// How one execution ended.
public enum ExecutionOutcome: Sendable, Equatable {
    /// The worker reported `done`; the session can run more code.
    case finished(status: ExecutionStatus, exitCode: Int?, duration: Double, errorName: String?)
    /// A limit was hit and the sandbox was killed.
    case limitExceeded(LimitKind)
    /// The worker process ended without reporting `done` (os._exit, a crash, a signal).
    case workerEnded(exitCode: Int32?, signal: Int32?)
    /// The worker sent something that breaks the protocol; the sandbox was killed.
    case protocolError(String)
    /// The code was interrupted, did not stop within the grace period, and was killed.
    case killedAfterInterrupt(graceSeconds: Double)
    /// The code was not sent: as a frame (`encodedBytes`) it is over the policy's
    /// `limits.max_frame_bytes`. The session is unchanged.
    case codeTooLarge(filename: String, bytes: Int, encodedBytes: Int, limit: Int)
    /// The code was not sent: the audit log cannot record it (fail closed). The session is unchanged.
    case auditFailed(String)
    /// The code was not sent: another execution runs in the session. The session is unchanged.
    case busy

    static let busyReason = "another execution is running in this session; wait for its `done`, or interrupt it, before sending more code"
}

/// Why a session could not start.
public enum SessionError: Error, Sendable, Equatable, CustomStringConvertible {
    case sandbox(String)
    case protocolError(String)
    case startTimeout(seconds: Double)
    case exitedBeforeReady(exitCode: Int32?, signal: Int32?)
    /// The audit log cannot record the session: nothing was started (fail closed).
    case audit(String)
    /// A `SessionPool` could not hand one out.
    case pool(String)

    public var description: String {
        switch self {
        case .sandbox(let text): text
        case .protocolError(let text): "protocol error while starting the worker: \(text)"
        case .startTimeout(let seconds): "the sandbox did not become ready within \(seconds) seconds"
        case .audit(let text): "\(text); nothing runs until it can be written"
        case .pool(let text): text
        case .exitedBeforeReady(let code, let signal):
            "the sandbox ended before it was ready (\(signal.map { "signal \($0)" } ?? "exit status \(code ?? -1)"))"
        }
    }
}

/// What an `Execution` yields: the events in order, then how it ended.
public enum ExecutionEvent: Sendable, Equatable {
    case event(SessionEvent)
    case done(ExecutionOutcome)
}

/// A running execution's events (`Session.submit`), ending with `.done`. Iterate it once.
/// Events not taken hold the session once they reach a few megabytes: it reads no more from the
/// code until the reader catches up (the code waits, as it would writing to a slow terminal).
public struct Execution: AsyncSequence, Sendable {
    public typealias Element = ExecutionEvent
    let stream: AsyncStream<ExecutionEvent>
    let outbox: Outbox

    public struct Iterator: AsyncIteratorProtocol {
        var base: AsyncStream<ExecutionEvent>.Iterator
        let outbox: Outbox

        public mutating func next() async -> ExecutionEvent? {
            let item = await base.next()
            if case .event(let event)? = item { outbox.taken(event) }
            return item
        }
    }

    public func makeAsyncIterator() -> Iterator { Iterator(base: stream.makeAsyncIterator(), outbox: outbox) }

    /// Waits for the end, handing each event to `onEvent`; returns how it ended.
    public func outcome(onEvent: (SessionEvent) -> Void = { _ in }) async -> ExecutionOutcome {
        for await item in self {
            switch item {
            case .event(let event): onEvent(event)
            case .done(let outcome): return outcome
            }
        }
        return .workerEnded(exitCode: nil, signal: nil) // not reached: every execution ends with `done`
    }
}

/// A second execution (or completeness question, or shutdown) while one runs in the session.
public struct SessionBusy: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String { ExecutionOutcome.busyReason }
}

/// The part of a session's namespace that could be kept (`Session.checkpoint()`), for
/// `Session.restore`: modules by name, functions and classes defined in the session by their
/// source, everything else pickled. `data` is opaque to the supervisor, which never unpickles it.
public struct Checkpoint: Sendable, Equatable {
    public let data: [UInt8]
    /// The names it holds.
    public let names: [String]
    /// The names left out, each with why (a lock, a socket, an open file cannot be pickled).
    public let skipped: [String: String]
    /// The policy of the session it came from: it restores only into a session with the same one.
    public let policy: Policy
}

/// What a restore brought back.
public struct RestoreReport: Sendable, Equatable {
    public let names: [String]
    /// Names that did not come back, each with why (a module this sandbox cannot import, say).
    public let skipped: [String: String]
}

/// Why a checkpoint, restore or fork did not happen.
public enum CheckpointError: Error, Sendable, Equatable, CustomStringConvertible {
    /// An execution (or another request) runs in the session.
    case busy
    /// The checkpoint came from a session with another policy. Restoring unpickles its objects,
    /// which can run code the checkpointed session chose, so that code would run under this
    /// session's policy: refused.
    case otherPolicy(from: String, into: String)
    case failed(String)

    public var description: String {
        switch self {
        case .busy: "the session is busy: " + ExecutionOutcome.busyReason
        case .otherPolicy(let from, let into):
            "a checkpoint restores only into a session with the policy it was taken under (\(from)), not \(into): "
                + "restoring runs code the checkpointed session chose, so it could gain what this policy grants"
        case .failed(let why): why
        }
    }
}

/// How Python code divides into top-level statements.
public enum Statements {
    /// Whether `line` begins a new top-level statement, ending a compound one before it: it starts
    /// at the left margin and is not `else:`, `elif`, `except`, `finally`, a closing bracket or a
    /// comment.
    public static func startsAtMargin(_ line: String) -> Bool {
        guard let first = line.unicodeScalars.first, !first.properties.isWhitespace, !")]}".unicodeScalars.contains(first),
              first != "#" else { return false }
        let word = line.prefix { $0.isLetter }
        return !["else", "elif", "except", "finally"].contains(String(word))
    }
}
