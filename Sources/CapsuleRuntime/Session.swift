#if canImport(Glibc)
import Glibc
#endif
import CapsuleCapabilities
import CapsuleOS
import CapsulePolicy
import CapsuleProtocol
import CapsuleSandbox

/// One sandboxed Python worker and its persistent namespace. Not thread-safe: one owner drives it.
/// It knows nothing of terminals or HTTP: events go to a handler, input comes back from it.
public final class Session {
    public let policy: Policy
    public let pid: Int32
    /// Notes from sandbox setup (e.g. no cgroup on this host), for the caller to show.
    public var notes: [String] { report.notes }
    public private(set) var isAlive = true
    /// The worker's Python version, from `ready`.
    public private(set) var pythonVersion = ""

    /// When readable, the running execution is interrupted (for a signal handler's self-pipe).
    public var interruptDescriptor: Int32?
    /// While code runs: when it must have finished — its wall-clock time, or sooner once it was
    /// interrupted (monotonic nanoseconds, as `OS.now()`). An event handler that waits, for a
    /// person's input say, waits no longer than this.
    public var deadline: UInt64? {
        executionDeadline.map { min($0, interruptDeadline ?? .max) }
    }
    /// Whether this execution was interrupted by the supervisor (not by the code raising
    /// KeyboardInterrupt itself).
    public private(set) var interruptSent = false
    private var executionDeadline: UInt64?
    private var interruptedTwice = false

    /// Set by `interrupt()`: when the code must have stopped, or it is killed.
    private var interruptDeadline: UInt64?
    /// How long interrupted code may take to stop (its `finally` blocks run meanwhile).
    public static let interruptGrace = 2.0

    private let channel: Int32
    private var status: Int32
    /// The read ends of the sandbox's fds 1 and 2 (-1 once at end of file).
    private var outputs: [(fd: Int32, name: StreamName)]
    /// What was read from `outputs` and not yet delivered: read after the frames decoded so far,
    /// it is delivered after them (see `pump`), at most one read per pipe. What is left when an
    /// execution ends (written after its `done`) goes to the next one.
    private var pendingOutput: [(name: StreamName, bytes: [UInt8])] = []
    private var decoder: FrameDecoder
    private var report = StatusReport()
    private var statusTail = ""
    private var termination: OS.Termination?
    private var nextID = 1
    private var readBuffer = [UInt8](repeating: 0, count: 1 << 16)
    private let calls: CallDispatcher
    /// Told of the session's start and end and of every execution; nil when nothing is audited.
    private let audit: (any AuditSink)?
    private var endAudited = false
    /// While an execution runs, the session's end is audited after the execution's.
    private var executing = false
    /// Answers not yet sent (`sendReply`); `send` puts them before anything else it sends.
    private var replies: [UInt8] = []

    /// The broker that answers the code's capability calls.
    public var broker: Broker { calls.broker }

    /// Starts a sandbox for `policy`. Its capability calls go to `broker` (by default one with the
    /// capabilities the policy grants, no audit hook and nobody to approve). `audit` is told of the
    /// session and its executions (give the broker the same sink for its calls); when it cannot
    /// record them, nothing starts.
    public init(policy: Policy, location: WorkerLocation, broker: Broker? = nil, audit: (any AuditSink)? = nil,
                startTimeout: Double = 30) throws(SessionError) {
        self.policy = policy
        self.audit = audit
        calls = CallDispatcher(broker: broker ?? Broker(policy: policy))
        do throws(AuditFailure) {
            try audit?.check()
            try audit?.event(AuditEvent(.policyLoaded, [("level", .string(policy.level.rawValue)), ("origin", .string(policy.origin))]))
        } catch {
            throw .audit(error.message)
        }
        let process: SandboxProcess
        do { process = try Sandbox.launch(policy, location: location) } catch {
            try? audit?.event(AuditEvent(.sandboxError, [("stage", .string("launch")), ("reason", .string(error.description))]))
            endAudited = true
            throw .sandbox(error.description)
        }
        pid = process.pid
        channel = process.channel
        status = process.status
        outputs = [(process.stdout, .stdout), (process.stderr, .stderr)]
        decoder = FrameDecoder(maxFrameBytes: policy.limits.maxFrameBytes)

        var ready = false
        let end = pump(deadline: OS.now() + UInt64(startTimeout * 1e9), answer: sendAnswer) { message in
            guard case .ready(_, let python) = message else {
                return .failure("expected `ready` first, got \(message.typeName)")
            }
            self.pythonVersion = python
            ready = true
            return .stop
        }
        if ready, send(.configure(capabilities: calls.broker.configuration), until: OS.now() + UInt64(startTimeout * 1e9)) == nil {
            do throws(AuditFailure) {
                try audit?.event(AuditEvent(.sessionStart, [("pid", .number(Double(pid))), ("python", .string(pythonVersion))]))
                return
            } catch {
                kill()
                throw .audit(error.message)
            }
        }
        kill()
        switch end {
        case .protocolError(let text): throw .protocolError(text)
        case .deadline: throw .startTimeout(seconds: startTimeout)
        default:
            if let failure = report.failure { throw .sandbox(failure.description) }
            throw .exitedBeforeReady(exitCode: report.exitCode, signal: report.signal)
        }
    }

    deinit {
        if isAlive { kill() }
        OS.close(channel)
        if status >= 0 { OS.close(status) }
        for output in outputs where output.fd >= 0 { OS.close(output.fd) }
    }

    // MARK: Executing code

    /// Runs `code` in the session's namespace and delivers what it produces to `onEvent`.
    public func execute(_ code: String, filename: String = "<string>", argv: [String] = [""],
                        wantResult: Bool = true,
                        onEvent: (SessionEvent) -> String? = { _ in nil }) -> ExecutionOutcome {
        run({ .execute(id: $0, code: code, filename: filename, argv: argv, result: wantResult) },
            filename: filename, source: Array(code.utf8), onEvent: onEvent)
    }

    /// Runs a script file's bytes in the session's namespace, decoded as CPython decodes a script
    /// (a UTF-8 byte order mark or a PEP 263 coding line, else UTF-8), and delivers what it
    /// produces to `onEvent`.
    public func execute(script source: [UInt8], filename: String, argv: [String],
                        onEvent: (SessionEvent) -> String? = { _ in nil }) -> ExecutionOutcome {
        run({ .executeScript(id: $0, source: source, filename: filename, argv: argv) },
            filename: filename, source: source, onEvent: onEvent)
    }

    /// Sends the execute message made for the next execution id and pumps until it is done.
    /// The audit log hears of it before it is sent (nothing is sent that it could not record) and
    /// of how it ended.
    private func run(_ makeExecute: (String) -> SupervisorMessage, filename: String, source: [UInt8],
                     onEvent: (SessionEvent) -> String?) -> ExecutionOutcome {
        guard isAlive else { return .workerEnded(exitCode: report.exitCode, signal: report.signal) }
        let id = String(nextID)
        nextID += 1
        let deadline = OS.now() + UInt64(policy.limits.timeoutSeconds * 1e9)
        executionDeadline = deadline
        interruptDeadline = nil
        interruptSent = false
        interruptedTwice = false
        defer { executionDeadline = nil }
        let execute = makeExecute(id)
        // The worker accepts frames up to the policy's limit, as the supervisor does.
        let frame = execute.encoded
        guard frame.count <= policy.limits.maxFrameBytes else {
            return .codeTooLarge(filename: filename, bytes: source.count, encodedBytes: frame.count,
                                 limit: policy.limits.maxFrameBytes)
        }
        guard let audit else { return drive(frame, id: id, deadline: deadline, onEvent: onEvent) }
        do throws(AuditFailure) {
            try audit.event(AuditEvent(.execStart, [
                ("execution", .string(id)), ("filename", .string(filename.clipped(to: 200))),
                ("code_sha256", .string(SHA256.hash(source).hexText)),
                ("code_bytes", .number(Double(source.count))),
            ]))
        } catch {
            return .auditFailed(error.message)
        }
        let started = OS.now()
        executing = true
        let outcome = drive(frame, id: id, deadline: deadline, onEvent: onEvent)
        executing = false
        if case .limitExceeded(let limit) = outcome { try? audit.event(AuditEvent(.limitHit, [("execution", .string(id))] + limit.auditFields)) }
        try? audit.event(AuditEvent(.execEnd, [("execution", .string(id))] + outcome.auditFields
            + [("duration_s", .number((Double(OS.now() - started) / 1e6).rounded() / 1e3))]))
        if !isAlive { auditEnd() }
        return outcome
    }

    /// Sends the execute frame and pumps until the execution is done.
    private func drive(_ frame: [UInt8], id: String, deadline: UInt64, onEvent: (SessionEvent) -> String?) -> ExecutionOutcome {
        if let ended = send(frame) { return ended }
        var outputBytes = 0
        var outcome: ExecutionOutcome?
        var errorName: String?
        var finalReported = false

        let overLimit = Step.limit(.output(bytes: policy.limits.maxOutputBytes))
        // Everything the code makes the supervisor print counts against the output limit: output
        // however it came (frames, fds 1 and 2), results, errors, prompts and displays (user code
        // can write frames on its channel).
        func admit(_ count: Int) -> Bool {
            outputBytes += count
            return outputBytes <= policy.limits.maxOutputBytes
        }
        // Output past the limit is delivered up to it (`cut` to the room left), then the session ends.
        func deliver(_ event: SessionEvent, bytes count: Int, cut: (Int) -> SessionEvent) -> Step {
            guard admit(count) else {
                let room = policy.limits.maxOutputBytes - (outputBytes - count)
                if room > 0 { _ = onEvent(cut(room)) }
                return overLimit
            }
            _ = onEvent(event)
            return .continue
        }
        func deliverData(_ name: StreamName, _ data: [UInt8]) -> Step {
            deliver(.streamData(name, data), bytes: data.count) { .streamData(name, Array(data.prefix($0))) }
        }
        func answer(_ answer: CapabilityAnswer) -> Step {
            deliverAnswer(answer, admit: admit, overLimit: overLimit, onEvent: onEvent)
        }
        let end = pump(deadline: deadline, output: deliverData, answer: answer) { message in
            if case .capCall(let callID, let capability, let method, let arguments) = message {
                let call = CapabilityCall(id: callID, capability: capability, method: method, arguments: arguments)
                return self.startCall(call, answer: answer)
            }
            guard message.executionID == id else {
                let other = (message.executionID ?? "none").clipped(to: 64).escapingControlCharacters
                return .failure("\(message.typeName) for execution \(other) while \(id) runs")
            }
            // An execution ends in at most one `result` or `error`.
            func secondFinal() -> Bool {
                defer { finalReported = true }
                return finalReported
            }
            switch message {
            case .stream(_, let name, let text):
                return deliver(.stream(name, text), bytes: text.utf8.count) {
                    .stream(name, String(decoding: text.utf8.prefix($0), as: UTF8.self))
                }
            case .streamData(_, let name, let data):
                return deliverData(name, data)
            case .result(_, let data):
                if secondFinal() { return .failure("a second `result` or `error` in execution \(id)") }
                guard admit(data.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count }) else { return overLimit }
                _ = onEvent(.result(data))
            case .error(_, let ename, let evalue, let traceback):
                if secondFinal() { return .failure("a second `result` or `error` in execution \(id)") }
                guard admit(ename.utf8.count + evalue.utf8.count + traceback.reduce(0) { $0 + $1.utf8.count }) else {
                    return overLimit
                }
                errorName = ename
                _ = onEvent(.error(ename: ename, evalue: evalue, traceback: traceback))
            case .inputRequest(_, let prompt, let password):
                guard admit(prompt.utf8.count) else { return overLimit }
                // Without the input capability the code sees the end of input; nobody is asked.
                let granted = self.policy.capabilities.input?.enabled == true
                let answer = granted ? onEvent(.inputRequest(prompt: prompt, password: password)) : nil
                if !granted { _ = onEvent(.inputRefused) }
                if let ended = self.send(.inputReply(id: id, value: answer)) {
                    outcome = ended
                    return .stop
                }
            case .done(_, let status, let duration, let exitCode):
                outcome = .finished(status: status, exitCode: exitCode, duration: duration, errorName: errorName)
                return .stop
            case .ready:
                return .failure("`ready` sent twice")
            case .capCall, .completeness:
                break // handled above (a `completeness` has no execution id)
            }
            return .continue
        }
        if let outcome { return outcome }
        switch end {
        case .limit(let kind):
            kill()
            return .limitExceeded(kind)
        case .deadline:
            return expired()
        case .protocolError(let text):
            kill()
            return .protocolError(text)
        case .closed, .stopped:
            return endedOutcome()
        }
    }

    // MARK: Statements

    /// Whether `code` is a whole statement as Python's interactive console reads one, and whether a
    /// blank line would complete it: what a REPL asks before it runs what was typed. Only between
    /// executions; it is no execution (nothing is audited). What background threads print meanwhile
    /// goes to `onEvent`, and their capability calls are answered. Nil when the worker is gone or
    /// does not answer within 10 s.
    public func completeness(of code: String, onEvent: (SessionEvent) -> String? = { _ in nil })
        -> (status: Completeness, blankLineCompletes: Bool)? {
        guard isAlive else { return nil }
        let id = "c\(nextID)"
        nextID += 1
        let deadline = OS.now() + 10_000_000_000
        let frame = SupervisorMessage.complete(id: id, code: code).encoded
        guard frame.count <= policy.limits.maxFrameBytes, send(frame, until: deadline) == nil else { return nil }
        var answer: (Completeness, Bool)?
        let end = pump(deadline: deadline, output: { name, bytes in
            _ = onEvent(.streamData(name, bytes))
            return .continue
        }, answer: sendAnswer) { message in
            switch message {
            case .completeness(let answered, let status, let blankLineCompletes) where answered == id:
                answer = (status, blankLineCompletes)
                return .stop
            case .capCall(let callID, let capability, let method, let arguments):
                let call = CapabilityCall(id: callID, capability: capability, method: method, arguments: arguments)
                return self.startCall(call, answer: self.sendAnswer)
            case .stream(_, let name, let text):
                _ = onEvent(.stream(name, text))
                return .continue
            case .streamData(_, let name, let data):
                _ = onEvent(.streamData(name, data))
                return .continue
            default:
                return .failure("\(message.typeName) while no execution runs")
            }
        }
        if answer == nil, case .protocolError = end { kill() }
        return answer
    }

    /// Sends SIGINT: the running code gets KeyboardInterrupt and `finally` blocks run. Code that
    /// has not stopped `interruptGrace` seconds later is killed; a second interrupt kills at once.
    public func interrupt() {
        guard isAlive else { return }
        let now = OS.now()
        interruptedTwice = interruptDeadline != nil
        interruptDeadline = interruptedTwice ? now : now + UInt64(Self.interruptGrace * 1e9)
        interruptSent = true
        OS.kill(pid, SIGINT)
    }

    /// Asks the worker to exit, waits up to `grace` seconds, then kills it.
    /// With `wait` false it returns at once and leaves the launcher unreaped: pid 1 and the
    /// launcher finish the teardown (the launcher kills the sandbox if this process goes away).
    /// Only for a process about to exit, such as `capsule run`; a long-lived supervisor waits.
    public func shutdown(grace: Double = 2, wait: Bool = true) {
        guard isAlive else { return }
        let graceDeadline = OS.now() + UInt64(grace * 1e9)
        if !wait {
            if send(.shutdown, until: graceDeadline) == nil {
                isAlive = false
                auditEnd()
            }
            return
        }
        if send(.shutdown, until: graceDeadline) == nil {
            _ = pump(deadline: graceDeadline, answer: sendAnswer) { _ in .continue }
        }
        if isAlive { kill() }
    }

    /// Kills the sandbox (the launcher SIGKILLs pid 1, which takes the whole namespace) and reaps it.
    public func kill() {
        guard isAlive else { return }
        OS.kill(pid, SIGTERM)
        reap()
    }

    /// Hands a capability call to the broker; its answer comes now or later through `answer`.
    private func startCall(_ call: CapabilityCall, answer: (CapabilityAnswer) -> Step) -> Step {
        guard let reply = calls.start(call) else { return .continue }
        return answer(CapabilityAnswer(id: call.id, capability: call.capability, reply: reply))
    }

    /// Sends a call's answer. A display bundle is shown here first, in order with the output and
    /// counted against the output limit; an answer too big for one frame becomes an error saying so.
    private func deliverAnswer(_ answer: CapabilityAnswer, admit: (Int) -> Bool, overLimit: Step,
                         onEvent: (SessionEvent) -> String?) -> Step {
        var reply = answer.reply
        if answer.capability == "display", case .value(let value) = reply, let bundle = DisplayCapability.bundle(value) {
            guard admit(bundle.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count }) else { return overLimit }
            _ = onEvent(.display(bundle))
            reply = .value(.null)
        }
        return sendReply(answer.id, reply)
    }

    private func sendAnswer(_ answer: CapabilityAnswer) -> Step { sendReply(answer.id, answer.reply) }

    /// Queues a call's answer; the answers queued while frames are read go out in one write (see
    /// `pump`), so many threads' calls cost the worker one read, not one each.
    private func sendReply(_ id: String, _ reply: CapabilityReply) -> Step {
        var frame = SupervisorMessage.capReply(id: id, reply: reply).encoded
        let limit = policy.limits.maxFrameBytes
        if frame.count > limit {
            frame = SupervisorMessage.capReply(id: id, reply: .failure(
                exception: "ValueError",
                message: "the answer is \(frame.count) bytes as sent, more than the \(limit) one frame may carry "
                    + "(limits.max_frame_bytes in the policy); ask for less at a time", errno: nil)).encoded
        }
        replies += frame
        return .continue
    }

    /// Sends the queued answers; false when the worker is gone or out of time.
    private func sendReplies() -> Bool {
        replies.isEmpty || send([]) == nil
    }

    // MARK: Internals

    private enum Step {
        case `continue`, stop
        case failure(String)
        case limit(LimitKind)
    }

    private enum PumpEnd {
        case stopped, closed, deadline
        case protocolError(String)
        case limit(LimitKind)
    }

    /// Reads frames, output and status lines until `handle` says stop, the channel closes, or the
    /// deadline. Output read from fds 1 and 2 goes to `output`, after the frames read before it
    /// (the worker waits until earlier fd output is read before it sends a frame, so that order
    /// is the order it was written in). Outside an execution nobody takes it: it is dropped.
    /// `answer` delivers the answers of calls that ran on tasks (outside an execution, they are
    /// just sent).
    private func pump(deadline: UInt64, output: (StreamName, [UInt8]) -> Step = { _, _ in .continue },
                      answer: (CapabilityAnswer) -> Step,
                      handle: (WorkerMessage) -> Step) -> PumpEnd {
        while true {
            // Frames already buffered first, unless time is up (a flood keeps the buffer full).
            do {
                while OS.now() < min(deadline, interruptDeadline ?? .max), let json = try decoder.next() {
                    let message: WorkerMessage
                    do { message = try WorkerMessage(json) } catch { return .protocolError(error.description) }
                    // Answers wait only for the calls that follow them, never for a handler that may block.
                    if !message.isCapCall && !sendReplies() { return .stopped }
                    switch handle(message) {
                    case .continue: continue
                    case .stop: return .stopped
                    case .failure(let text): return .protocolError(text)
                    case .limit(let kind): return .limit(kind)
                    }
                }
            } catch {
                return .protocolError(error.description)
            }
            if case .limit(let kind) = deliverPendingOutput(to: output) { return .limit(kind) }

            let deadline = min(deadline, interruptDeadline ?? .max)
            if OS.now() >= deadline { return .deadline }
            if !sendReplies() { return .stopped }
            var fds = [pollfd(fd: channel, events: Int16(POLLIN), revents: 0)]
            for entry in outputs where entry.fd >= 0 { fds.append(pollfd(fd: entry.fd, events: Int16(POLLIN), revents: 0)) }
            if status >= 0 { fds.append(pollfd(fd: status, events: Int16(POLLIN), revents: 0)) }
            if let interruptDescriptor { fds.append(pollfd(fd: interruptDescriptor, events: Int16(POLLIN), revents: 0)) }
            fds.append(pollfd(fd: calls.descriptor, events: Int16(POLLIN), revents: 0))
            let waitMilliseconds = OS.pollMilliseconds(until: deadline)
            do { _ = try OS.poll(&fds, timeoutMilliseconds: waitMilliseconds) } catch { continue }

            for entry in fds.dropFirst() where entry.revents != 0 {
                if entry.fd == status { readStatus() } else if entry.fd == interruptDescriptor { drainInterrupt() }
                if entry.fd == calls.descriptor {
                    for finished in calls.takeAnswers() where isAlive {
                        switch answer(finished) {
                        case .continue: continue
                        case .stop: return .stopped
                        case .failure(let text): return .protocolError(text)
                        case .limit(let kind): return .limit(kind)
                        }
                    }
                }
            }
            var channelDrained = true
            if fds[0].revents != 0 {
                let count = (try? readBuffer.withUnsafeMutableBytes { raw in
                    Result { try OS.read(channel, into: raw) } }.get()) ?? 0
                if count == 0 {
                    // The channel closed, but the code may still run (it can close fd 3 itself):
                    // the deadline holds until the launcher has really exited.
                    guard waitForExit(deadline: deadline) else { return .deadline }
                    // Then what its processes wrote last (a crash's faulthandler dump) is all there.
                    while readOutput(from: outputs.indices.filter { outputs[$0].fd >= 0 }) {
                        if case .limit(let kind) = deliverPendingOutput(to: output) { return .limit(kind) }
                    }
                    return .closed
                }
                readBuffer.withUnsafeBytes { decoder.append(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
                channelDrained = count < readBuffer.count
            }
            // Pipe bytes that were there at the poll came after every frame then in the channel, so
            // they are read once the channel's backlog is (and delivered after its frames).
            if channelDrained {
                _ = readOutput(from: outputs.indices.filter { index in
                    fds.contains { $0.fd == outputs[index].fd && $0.revents != 0 }
                })
            }
        }
    }

    /// One read from each of `outputs[indices]` into `pendingOutput`; false when none had anything.
    private func readOutput(from indices: [Int]) -> Bool {
        var readSome = false
        for index in indices {
            let count = (try? readBuffer.withUnsafeMutableBytes { raw in
                Result { try OS.read(outputs[index].fd, into: raw) } }.get()) ?? -1
            if count == 0 {
                OS.close(outputs[index].fd)
                outputs[index].fd = -1
            }
            guard count > 0 else { continue }
            readSome = true
            pendingOutput.append((outputs[index].name, Array(readBuffer[0..<count])))
        }
        return readSome
    }

    private func deliverPendingOutput(to output: (StreamName, [UInt8]) -> Step) -> Step {
        while !pendingOutput.isEmpty {
            let (name, bytes) = pendingOutput.removeFirst()
            if case .limit(let kind) = output(name, bytes) { return .limit(kind) }
        }
        return .continue
    }

    private func readStatus() {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = (try? buffer.withUnsafeMutableBytes { raw in Result { try OS.read(status, into: raw) } }.get()) ?? 0
        if count == 0 {
            OS.close(status)
            status = -1
            return
        }
        statusTail = report.consume(statusTail + String(decoding: buffer[0..<count], as: UTF8.self))
    }

    /// Reads `interruptDescriptor` and interrupts: once per byte written to it (two bytes stop the
    /// code at once). The session calls it when the descriptor is readable; an event handler that
    /// waits (for input) calls it when the wait is cut short by the descriptor.
    public func drainInterrupt() {
        guard let fd = interruptDescriptor else { return }
        var buffer = [UInt8](repeating: 0, count: 64)
        let count = buffer.withUnsafeMutableBytes { raw in (try? OS.read(fd, into: raw)) ?? 0 }
        for _ in 0..<min(max(count, 1), 2) { interrupt() }
    }

    /// Reads the status pipe until the launcher (its last writer) exits; false at the deadline.
    private func waitForExit(deadline: UInt64) -> Bool {
        while status >= 0 {
            if OS.now() >= deadline { return false }
            var fds = [pollfd(fd: status, events: Int16(POLLIN), revents: 0)]
            let waitMilliseconds = OS.pollMilliseconds(until: deadline)
            if (try? OS.poll(&fds, timeoutMilliseconds: waitMilliseconds)) ?? 0 > 0 { readStatus() }
        }
        reap()
        return true
    }

    /// Waits for the launcher to exit and reads the status pipe to its end.
    private func reap() {
        if termination == nil { termination = try? OS.wait(pid, block: true) }
        while status >= 0 { readStatus() }
        isAlive = false
        calls.cancelAll()
        if !executing { auditEnd() }
    }

    /// The session's last events: a sandbox stage's failure, if pid 1 reported one, then `session.end`.
    private func auditEnd() {
        guard let audit, !endAudited else { return }
        endAudited = true
        if let failure = report.failure {
            try? audit.event(AuditEvent(.sandboxError, [("reason", .string(failure.description))]))
        }
        var fields: [(String, JSONValue)] = [("executions", .number(Double(nextID - 1)))]
        if let code = report.exitCode { fields.append(("exit_code", .number(Double(code)))) }
        if let signal = report.signal { fields.append(("signal", .number(Double(signal)))) }
        try? audit.event(AuditEvent(.sessionEnd, fields))
    }

    /// Sends a message, giving up at the execution's deadline or `until` (a worker that stops
    /// reading is out of time).
    private func send(_ message: SupervisorMessage, until limit: UInt64? = nil) -> ExecutionOutcome? {
        send(message.encoded, until: limit)
    }

    private func send(_ frame: [UInt8], until limit: UInt64? = nil) -> ExecutionOutcome? {
        let bytes = replies.isEmpty ? frame : replies + frame
        replies.removeAll(keepingCapacity: true)
        do {
            if try OS.sendAll(channel, bytes, deadline: limit ?? deadline ?? OS.now()) { return nil }
            return expired()
        } catch {
            reap()
            return endedOutcome()
        }
    }

    /// The deadline came: kill the sandbox and say which one it was.
    private func expired() -> ExecutionOutcome {
        kill()
        if let interruptDeadline, interruptDeadline <= (executionDeadline ?? .max) {
            return .killedAfterInterrupt(graceSeconds: interruptedTwice ? 0 : Self.interruptGrace)
        }
        return .limitExceeded(.timeout(seconds: policy.limits.timeoutSeconds))
    }

    /// The outcome once the worker is gone, from what pid 1 and the launcher reported.
    private func endedOutcome() -> ExecutionOutcome {
        if report.memoryKills > 0 { return .limitExceeded(.memory(megabytes: policy.limits.memoryMB)) }
        if report.cpuLimitHit { // pid 1 checked the CPU time: a self-sent SIGXCPU is no limit
            return .limitExceeded(.cpu(seconds: policy.limits.cpuSeconds))
        }
        if report.exitCode == nil, report.signal == nil, case .signaled(let signal)? = termination {
            return .workerEnded(exitCode: nil, signal: signal)
        }
        return .workerEnded(exitCode: report.exitCode, signal: report.signal)
    }
}

extension WorkerMessage {
    var executionID: String? {
        switch self {
        case .ready: nil
        case .stream(let id, _, _), .streamData(let id, _, _), .result(let id, _), .error(let id, _, _, _),
             .inputRequest(let id, _, _), .done(let id, _, _, _): id
        case .capCall: nil // a call belongs to a thread of the code, not to one execution
        case .completeness: nil
        }
    }

    var isCapCall: Bool {
        if case .capCall = self { return true }
        return false
    }

    var typeName: String {
        switch self {
        case .ready: "`ready`"
        case .stream, .streamData: "`stream`"
        case .result: "`result`"
        case .error: "`error`"
        case .inputRequest: "`input_request`"
        case .done: "`done`"
        case .capCall: "`cap_call`"
        case .completeness: "`completeness`"
        }
    }
}

extension LimitKind {
    var auditFields: [(String, JSONValue)] {
        switch self {
        case .timeout(let seconds): [("limit", "timeout_s"), ("value", .number(seconds))]
        case .output(let bytes): [("limit", "max_output_bytes"), ("value", .number(Double(bytes)))]
        case .memory(let megabytes): [("limit", "memory_mb"), ("value", .number(Double(megabytes)))]
        case .cpu(let seconds): [("limit", "cpu_seconds"), ("value", .number(Double(seconds)))]
        }
    }
}

extension ExecutionOutcome {
    /// How the audit log's `exec.end` says it ended: `status`, and the exit code, error or limit.
    var auditFields: [(String, JSONValue)] {
        switch self {
        case .finished(let status, let exitCode, _, let errorName):
            [("status", .string(status.rawValue))] + (exitCode.map { [("exit_code", .number(Double($0)))] } ?? [])
                + (errorName.map { [("error", .string($0))] } ?? [])
        case .limitExceeded(let limit): [("status", "limit")] + limit.auditFields
        case .workerEnded(let code, let signal):
            [("status", "ended")] + (code.map { [("exit_code", .number(Double($0)))] } ?? [])
                + (signal.map { [("signal", .number(Double($0)))] } ?? [])
        case .protocolError(let text): [("status", "protocol_error"), ("reason", .string(text.clipped(to: 300)))]
        case .killedAfterInterrupt: [("status", "killed")]
        case .codeTooLarge: [("status", "refused")]
        case .auditFailed(let text): [("status", "refused"), ("reason", .string(text))]
        }
    }
}
