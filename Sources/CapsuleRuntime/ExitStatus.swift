#if canImport(Glibc)
import Glibc
#endif
import CapsuleOS
import CapsulePolicy

/// What `capsule run` and `capsule exec` exit with, and the one line they print on stderr when a
/// limit or capsule itself ended the run (docs/exit-status.md).
public struct ExitStatus: Sendable, Equatable {
    public static let timeout: Int32 = 124
    public static let capsuleError: Int32 = 125
    public static let outputLimit: Int32 = 126
    public static let interrupted: Int32 = 130
    public static let memoryLimit: Int32 = 137
    public static let cpuLimit: Int32 = 152

    public let code: Int32
    /// The reason, for stderr; nil when the code's own status says it all.
    public let reason: String?
    /// What ended the run, for machines, from what the supervisor itself saw: "exit" (the code's
    /// own status, including a MemoryError or KeyboardInterrupt it raised or reported), "timeout",
    /// "output-limit", "memory-limit" (the cgroup killed it), "cpu-limit" (pid 1 confirmed the CPU
    /// time), "interrupted" (the supervisor interrupted it at ^C), "terminated" (at SIGTERM or
    /// SIGHUP), "early-exit" (the code's process exited before the run finished), "signal",
    /// "protocol-error", "audit-error" (the audit log could not record it) or "capsule-error". Unlike a line on stderr, the code cannot forge it.
    public let kind: String

    public init(code: Int32, reason: String? = nil, kind: String? = nil) {
        self.code = code
        self.reason = reason
        self.kind = kind ?? (code == Self.capsuleError && reason != nil ? "capsule-error" : "exit")
    }

    /// `interruptSent`: the supervisor interrupted the code, because capsule got `interruptSignal`
    /// (SIGINT for ^C, or SIGTERM or SIGHUP); the status is 128 + that signal, as a shell reports
    /// a process it ended.
    public init(_ outcome: ExecutionOutcome, policy: Policy, interruptSent: Bool = false, interruptSignal: Int32 = SIGINT) {
        let limits = policy.limits
        switch outcome {
        case .finished(_, let exitCode?, _, _):
            self.init(code: Int32(truncatingIfNeeded: exitCode) & 0xff) // as the shell sees sys.exit(n)
        case .finished(_, nil, _, "MemoryError"):
            self.init(code: Self.memoryLimit, reason: Self.memoryReason(limits.memoryMB, killed: false), kind: "exit")
        case .finished(.interrupted, nil, _, _) where interruptSent:
            let stop = Stop(interruptSignal)
            self.init(code: stop.code, reason: stop.cause + stop.detail, kind: stop.kind)
        case .finished(.interrupted, nil, _, _):
            // The code's own uncaught KeyboardInterrupt: 130, as CPython exits (it re-raises SIGINT).
            self.init(code: Self.interrupted)
        case .finished(.error, nil, _, _):
            self.init(code: 1)
        case .finished(.ok, nil, _, _):
            self.init(code: 0)
        case .limitExceeded(.timeout(let seconds)):
            self.init(code: Self.timeout,
                      reason: "timeout: the code ran longer than \(Self.format(seconds)) s and was stopped (limits.timeout_s in the policy)", kind: "timeout")
        case .limitExceeded(.output(let bytes)):
            self.init(code: Self.outputLimit,
                      reason: "output limit: the code wrote more than \(bytes) bytes and was stopped (limits.max_output_bytes in the policy)", kind: "output-limit")
        case .limitExceeded(.memory(let megabytes)):
            self.init(code: Self.memoryLimit, reason: Self.memoryReason(megabytes, killed: true), kind: "memory-limit")
        case .limitExceeded(.cpu(let seconds)):
            self.init(code: Self.cpuLimit,
                      reason: "CPU time limit: the code used more than \(seconds) s of CPU and was killed (limits.cpu_seconds in the policy)", kind: "cpu-limit")
        case .workerEnded(_, let signal?):
            self.init(code: 128 + signal, reason: "the code was killed by signal \(signal)", kind: "signal")
        case .workerEnded(let exitCode?, nil):
            // Its own status, as CPython's os._exit(n), but never unexplained: the run did not finish.
            self.init(code: exitCode,
                      reason: "the code's process exited with status \(exitCode) before the run finished: it called os._exit or closed its channel, or capsule's worker failed (its message, if any, is above)",
                      kind: "early-exit")
        case .workerEnded(nil, nil):
            self.init(code: Self.capsuleError, reason: "the sandbox ended unexpectedly")
        case .killedAfterInterrupt(let seconds):
            let stop = Stop(interruptSignal)
            self.init(code: stop.code,
                      reason: seconds == 0 ? stop.again
                          : "\(stop.cause): the code did not stop within \(Self.format(seconds)) s and was killed",
                      kind: stop.kind)
        case .codeTooLarge(let filename, let bytes, let encoded, let limit):
            let what = filename.hasPrefix("<") ? "the code" : filename
            self.init(code: Self.capsuleError,
                      reason: "\(what) is \(bytes) bytes (\(encoded) as sent to the sandbox), more than the \(limit) that limits.max_frame_bytes allows; raise max_frame_bytes under [limits] in a policy file (at most 1073741824)",
                      kind: "capsule-error")
        case .auditFailed(let text):
            self.init(code: Self.capsuleError, reason: "\(text); the code was not run", kind: "audit-error")
        case .busy:
            self.init(code: Self.capsuleError, reason: ExecutionOutcome.busyReason, kind: "busy")
        case .protocolError(let text):
            // The text may quote what the code wrote on its channel: short and harmless it must be.
            self.init(code: Self.capsuleError,
                      reason: "protocol error: \(text.clipped(to: 300).escapingControlCharacters); the session was ended",
                      kind: "protocol-error")
        }
    }

    /// How a signal to capsule that stopped the code is reported.
    private struct Stop {
        let code: Int32, kind: String, cause: String, detail: String, again: String

        init(_ signal: Int32) {
            code = 128 + signal
            if signal == SIGINT {
                (kind, cause, detail, again) = ("interrupted", "interrupted", "", "interrupted twice: the code was killed")
            } else {
                let name = signal == SIGTERM ? "SIGTERM" : signal == SIGHUP ? "SIGHUP" : "signal \(signal)"
                kind = "terminated"
                cause = "terminated by \(name)"
                detail = " (the code got KeyboardInterrupt, as for ^C)"
                again = "terminated by \(name), then signalled again: the code was killed"
            }
        }
    }

    private static func memoryReason(_ megabytes: Int, killed: Bool) -> String {
        "memory limit: the code needed more than its \(megabytes) MiB\(killed ? " and was killed" : "") (limits.memory_mb in the policy)"
    }

    private static func format(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? String(Int(seconds)) : String(seconds)
    }
}
