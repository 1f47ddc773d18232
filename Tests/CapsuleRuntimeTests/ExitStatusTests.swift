#if canImport(Glibc)
import Glibc
#endif
import CapsulePolicy
import CapsuleProtocol
import Testing
@testable import CapsuleRuntime

@Suite struct ExitStatusTests {
    let policy = Policy(level: .sandbox)

    @Test(arguments: [
        (ExecutionOutcome.finished(status: .ok, exitCode: nil, duration: 0, errorName: nil), Int32(0), nil as String?),
        (.finished(status: .error, exitCode: nil, duration: 0, errorName: "ValueError"), 1, nil),
        (.finished(status: .ok, exitCode: 0, duration: 0, errorName: nil), 0, nil),
        (.finished(status: .error, exitCode: 3, duration: 0, errorName: nil), 3, nil),
        (.finished(status: .error, exitCode: 256 + 5, duration: 0, errorName: nil), 5, nil),
        (.finished(status: .error, exitCode: -1, duration: 0, errorName: nil), 255, nil),
        // The code's own KeyboardInterrupt: CPython's 130, and the traceback says it all.
        (.finished(status: .interrupted, exitCode: nil, duration: 0, errorName: "KeyboardInterrupt"), 130, nil),
        (.finished(status: .error, exitCode: nil, duration: 0, errorName: "MemoryError"), 137,
         "memory limit: the code needed more than its 512 MiB (limits.memory_mb in the policy)"),
        (.limitExceeded(.timeout(seconds: 30)), 124,
         "timeout: the code ran longer than 30 s and was stopped (limits.timeout_s in the policy)"),
        (.limitExceeded(.timeout(seconds: 0.5)), 124,
         "timeout: the code ran longer than 0.5 s and was stopped (limits.timeout_s in the policy)"),
        (.limitExceeded(.output(bytes: 1024)), 126,
         "output limit: the code wrote more than 1024 bytes and was stopped (limits.max_output_bytes in the policy)"),
        (.limitExceeded(.memory(megabytes: 64)), 137,
         "memory limit: the code needed more than its 64 MiB and was killed (limits.memory_mb in the policy)"),
        (.limitExceeded(.cpu(seconds: 2)), 152,
         "CPU time limit: the code used more than 2 s of CPU and was killed (limits.cpu_seconds in the policy)"),
        (.workerEnded(exitCode: 4, signal: nil), 4,
         "the code's process exited with status 4 before the run finished: it called os._exit or closed its channel, or capsule's worker failed (its message, if any, is above)"),
        (.workerEnded(exitCode: nil, signal: 11), 139, "the code was killed by signal 11"),
        (.workerEnded(exitCode: nil, signal: nil), 125, "the sandbox ended unexpectedly"),
        (.protocolError("frame too big"), 125, "protocol error: frame too big; the session was ended"),
        (.killedAfterInterrupt(graceSeconds: 2), 130, "interrupted: the code did not stop within 2 s and was killed"),
    ])
    func mapsOutcome(outcome: ExecutionOutcome, code: Int32, reason: String?) {
        let status = ExitStatus(outcome, policy: policy)
        #expect(status.code == code)
        #expect(status.reason == reason)
    }

    @Test(arguments: [
        (ExecutionOutcome.finished(status: .ok, exitCode: 124, duration: 0, errorName: nil), "exit"),
        // The code can raise MemoryError and KeyboardInterrupt itself, or forge their frames.
        (.finished(status: .error, exitCode: nil, duration: 0, errorName: "MemoryError"), "exit"),
        (.finished(status: .interrupted, exitCode: nil, duration: 0, errorName: nil), "exit"),
        (.limitExceeded(.timeout(seconds: 1)), "timeout"), (.limitExceeded(.output(bytes: 1)), "output-limit"),
        (.limitExceeded(.memory(megabytes: 1)), "memory-limit"), (.limitExceeded(.cpu(seconds: 1)), "cpu-limit"),
        (.workerEnded(exitCode: nil, signal: 9), "signal"), (.workerEnded(exitCode: 3, signal: nil), "early-exit"),
        (.workerEnded(exitCode: nil, signal: nil), "capsule-error"), (.protocolError("x"), "protocol-error"),
        (.killedAfterInterrupt(graceSeconds: 2), "interrupted"),
    ])
    func namesWhatEndedTheRun(outcome: ExecutionOutcome, kind: String) {
        #expect(ExitStatus(outcome, policy: policy).kind == kind)
    }

    @Test func onlyTheSupervisorsInterruptIsAnInterrupt() {
        let outcome = ExecutionOutcome.finished(status: .interrupted, exitCode: nil, duration: 0, errorName: "KeyboardInterrupt")
        #expect(ExitStatus(outcome, policy: policy, interruptSent: true).kind == "interrupted")
        #expect(ExitStatus(outcome, policy: policy, interruptSent: false).kind == "exit")
    }

    @Test(arguments: [(SIGINT, Int32(130), "interrupted", "interrupted", "interrupted: the code did not stop within 2 s and was killed",
                       "interrupted twice: the code was killed"),
                      (SIGTERM, 143, "terminated", "terminated by SIGTERM (the code got KeyboardInterrupt, as for ^C)",
                       "terminated by SIGTERM: the code did not stop within 2 s and was killed",
                       "terminated by SIGTERM, then signalled again: the code was killed"),
                      (SIGHUP, 129, "terminated", "terminated by SIGHUP (the code got KeyboardInterrupt, as for ^C)",
                       "terminated by SIGHUP: the code did not stop within 2 s and was killed",
                       "terminated by SIGHUP, then signalled again: the code was killed")])
    func namesTheSignalThatStoppedTheCode(signal: Int32, code: Int32, kind: String, stopped: String, killed: String, twice: String) {
        let interrupted = ExecutionOutcome.finished(status: .interrupted, exitCode: nil, duration: 0, errorName: "KeyboardInterrupt")
        for (outcome, reason) in [(interrupted, stopped), (.killedAfterInterrupt(graceSeconds: 2), killed),
                                  (.killedAfterInterrupt(graceSeconds: 0), twice)] {
            let status = ExitStatus(outcome, policy: policy, interruptSent: true, interruptSignal: signal)
            #expect(status.code == code && status.kind == kind && status.reason == reason, "\(status)")
        }
    }

    @Test func protocolErrorsQuoteTheSandboxHarmlessly() {
        let status = ExitStatus(.protocolError("`stream` for execution \u{1B}]0;x\u{07}" + String(repeating: "A", count: 1000)),
                                policy: policy)
        let reason = try! #require(status.reason)
        #expect(!reason.unicodeScalars.contains { $0.value == 0x1B || $0.value == 0x07 })
        #expect(reason.hasPrefix("protocol error: `stream` for execution \\u001B]0;x\\u0007AAA"))
        #expect(reason.count < 400)
    }

    @Test func sessionErrorsReadAsSentences() {
        #expect(SessionError.startTimeout(seconds: 30).description == "the sandbox did not become ready within 30.0 seconds")
        #expect(SessionError.exitedBeforeReady(exitCode: 3, signal: nil).description
            == "the sandbox ended before it was ready (exit status 3)")
        #expect(SessionError.exitedBeforeReady(exitCode: nil, signal: 9).description
            == "the sandbox ended before it was ready (signal 9)")
        #expect(SessionError.protocolError("x").description == "protocol error while starting the worker: x")
        #expect(SessionError.sandbox("y").description == "y")
    }
}
