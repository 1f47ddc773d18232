#if canImport(Glibc)
import Glibc
#endif
import CapsuleCapabilities
import CapsuleOS
import CapsulePolicy
import CapsuleProtocol
import CapsuleSandbox
import Synchronization

/// One sandboxed Python worker and its persistent namespace. It knows nothing of terminals or HTTP:
/// events go to its caller, input comes back from it.
///
/// Everything it does runs on one `EventLoop` thread shared with other sessions, waiting on its
/// descriptors without holding the thread. Two ways in, the same work behind both:
/// - async: `Session.open`, `submit(code)` (an `Execution`, the events as an async sequence),
///   `answerInput`, `interrupt`, `close`;
/// - blocking, for a command-line program: `init`, `execute(code, onEvent:)`, `shutdown`, `kill`.
///   The handler runs on the caller's thread, which may block in it (reading a terminal) while
///   the session goes on reading output and answering capability calls.
/// One execution at a time: a second one while the first runs is refused (`SessionBusy`,
/// `ExecutionOutcome.busy`). `interrupt`, `answerInput` and `kill` may come from any thread.
public final class Session: @unchecked Sendable {
    public let policy: Policy
    /// Where its worker came from (forks start theirs there too).
    public let location: WorkerLocation
    public let pid: Int32
    /// Notes from sandbox setup (e.g. no cgroup on this host), for the caller to show.
    public var notes: [String] { report.notes + preloadNotes }
    private var preloadNotes: [String] = []
    /// What the sandbox reported as it ended (its usage, `--output-dir`'s copy); complete once the
    /// session has ended and been reaped (`shutdown()` waits for that).
    public var ending: StatusReport { report }
    public var isAlive: Bool { alive.load(ordering: .acquiring) }
    private let alive = Atomic<Bool>(true)
    /// Whether the session is alive and its worker has not gone since it was last heard from: a
    /// session waiting between executions (in a pool, say) is not watched, so a sandbox killed
    /// meanwhile shows only here (its channel has hung up) or at the next execution.
    public var seemsAlive: Bool {
        guard isAlive else { return false }
        var fds = [pollfd(fd: channel, events: Int16(POLLIN), revents: 0)]
        guard (try? OS.poll(&fds, timeoutMilliseconds: 0)) ?? 0 > 0 else { return true }
        return fds[0].revents & Int16(POLLHUP | POLLERR) == 0
    }

    /// The worker's Python version, from `ready`.
    public private(set) var pythonVersion = ""

    /// When readable, the running execution is interrupted (for a signal handler's self-pipe).
    /// Set it between executions.
    public var interruptDescriptor: Int32?
    /// While code runs: when it must have finished — its wall-clock time, or sooner once it was
    /// interrupted (monotonic nanoseconds, as `OS.now()`). An event handler that waits, for a
    /// person's input say, waits no longer than this.
    public var deadline: UInt64? {
        shared.withLock { state in state.executionDeadline.map { min($0, state.interruptDeadline ?? .max) } }
    }
    /// Whether this execution was interrupted by the supervisor (not by the code raising
    /// KeyboardInterrupt itself).
    public var interruptSent: Bool { shared.withLock(\.interruptSent) }

    /// How long interrupted code may take to stop (its `finally` blocks run meanwhile).
    public static let interruptGrace = 2.0

    /// The thread that runs this session's work.
    public let loop: EventLoop
    /// What other threads touch: whether work runs, the interrupt's clock, input answers.
    private let shared = Mutex(Shared())
    private struct Shared {
        var busy = false
        var executionDeadline: UInt64?
        /// Set by `interrupt()`: when the code must have stopped, or it is killed.
        var interruptDeadline: UInt64?
        var interruptedTwice = false
        var interruptSent = false
        /// Input requests delivered and not yet answered, and the answers not yet sent.
        var inputsWanted = 0
        var answers: [String?] = []
    }
    /// The session's descriptors in one epoll set, which the loop waits on; `wake` is in it too,
    /// written when another thread has something for the session (an interrupt, an answer).
    private let readiness: Int32
    private let wake: Int32
    /// The interrupt descriptor in `readiness` now (none while an input request waits for its
    /// answer: the handler that asks a person watches it then).
    private var watchedInterrupt: Int32?

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

    /// Asks the event reader for approvals, when the session made its own broker.
    private let approvals: EventApprover?

    /// The broker that answers the code's capability calls.
    public var broker: Broker { calls.broker }

    /// Starts a sandbox for `policy` and waits until its worker is ready. Its capability calls go
    /// to `broker` (by default one with the capabilities the policy grants, recording its calls
    /// in `audit`, and asking for approvals through the session's events). `audit` is told of the
    /// session and its executions (give a broker of your own the same sink for its calls); when
    /// it cannot record them, nothing starts.
    /// `loop`: the thread it runs on (by default the group's loops in turn).
    public static func open(policy: Policy, location: WorkerLocation, broker: Broker? = nil, audit: (any AuditSink)? = nil,
                            startTimeout: Double = 30, loop: EventLoop? = nil) async throws(SessionError) -> Session {
        let session = try Session(launching: policy, location: location, broker: broker, audit: audit, loop: loop)
        try await session.onLoop { await session.handshake(startTimeout: startTimeout) }.get()
        return session
    }

    /// `open`, for a caller that blocks until the session is ready (not on an event loop thread).
    /// `extras`: what this session alone adds to the policy's sandbox (a script's own modules,
    /// `ScriptFiles.plan`; an output directory).
    public convenience init(policy: Policy, location: WorkerLocation, broker: Broker? = nil, audit: (any AuditSink)? = nil,
                            startTimeout: Double = 30, extras: LaunchExtras = LaunchExtras()) throws(SessionError) {
        try self.init(launching: policy, location: location, broker: broker, audit: audit, loop: nil, extras: extras)
        try blocking({ _ in nil }) { _ in await self.handshake(startTimeout: startTimeout) }.get()
    }

    private init(launching policy: Policy, location: WorkerLocation, broker: Broker?, audit: (any AuditSink)?,
                 loop: EventLoop?, extras: LaunchExtras = LaunchExtras()) throws(SessionError) {
        self.policy = policy
        self.location = location
        self.audit = audit
        self.loop = loop ?? EventLoop.next()
        // Without a broker of its own, the session asks whoever reads its events.
        approvals = broker == nil ? EventApprover() : nil
        calls = CallDispatcher(broker: broker ?? Broker(policy: policy, audit: audit, approver: approvals))
        do throws(AuditFailure) {
            try audit?.check()
            try audit?.event(AuditEvent(.policyLoaded, [("level", .string(policy.level.rawValue)), ("origin", .string(policy.origin))]))
        } catch {
            throw .audit(error.message)
        }
        let process: SandboxProcess
        do { process = try Sandbox.launch(policy, location: location, extras: extras) } catch {
            try? audit?.event(AuditEvent(.sandboxError, [("stage", .string("launch")), ("reason", .string(error.description))]))
            endAudited = true
            throw .sandbox(error.description)
        }
        pid = process.pid
        channel = process.channel
        status = process.status
        outputs = [(process.stdout, .stdout), (process.stderr, .stderr)]
        decoder = FrameDecoder(maxFrameBytes: policy.limits.maxFrameBytes)
        do throws(SystemError) {
            readiness = try OS.descriptorSet()
            wake = try OS.eventDescriptor()
        } catch {
            OS.kill(pid, SIGTERM)
            _ = try? OS.wait(pid, block: true)
            for fd in [channel, status, process.stdout, process.stderr] { OS.close(fd) }
            throw .sandbox("no epoll set or eventfd for the session: \(error)")
        }
        for fd in [channel, process.stdout, process.stderr, status, calls.descriptor, wake] { OS.watch(fd, in: readiness) }
    }

    /// Waits for `ready`, configures the worker's capabilities and records the session's start.
    private func handshake(startTimeout: Double) async -> Result<Void, SessionError> {
        var ready = false
        let deadline = OS.now() + UInt64(startTimeout * 1e9)
        let end = await pump(deadline: deadline, answer: sendAnswer) { message in
            guard case .ready(_, let python) = message else {
                return .failure("expected `ready` first, got \(message.typeName)")
            }
            self.pythonVersion = python
            ready = true
            return .stop
        }
        if ready, await send(.configure(capabilities: calls.broker.configuration), until: deadline) == nil,
           await preload(until: deadline) {
            do throws(AuditFailure) {
                try audit?.event(AuditEvent(.sessionStart, [("pid", .number(Double(pid))), ("python", .string(pythonVersion))]))
                return .success(())
            } catch {
                await terminate()
                return .failure(.audit(error.message))
            }
        }
        await terminate()
        switch end {
        case .protocolError(let text): return .failure(.protocolError(text))
        case .deadline: return .failure(.startTimeout(seconds: startTimeout))
        default:
            if let failure = report.failure { return .failure(.sandbox(failure.description)) }
            return .failure(.exitedBeforeReady(exitCode: report.exitCode, signal: report.signal))
        }
    }

    /// `[sandbox] preload`: the worker imports the policy's modules before any execution; a module
    /// that cannot be imported becomes a note, not a failure. False when the worker ended or broke
    /// the protocol meanwhile (the handshake then says why).
    private func preload(until deadline: UInt64) async -> Bool {
        guard !policy.preload.isEmpty else { return true }
        guard await send(.preload(modules: policy.preload), until: deadline) == nil else { return false }
        var answered = false
        _ = await pump(deadline: deadline, answer: sendAnswer) { message in
            // A module may use a capability as it is imported: the call is checked and audited as any other.
            if let call = message.capabilityCall { return self.startCall(call, answer: self.sendAnswer) }
            guard case .preloaded(let skipped, _) = message else {
                return message.isStream ? .continue : .failure("expected `preloaded`, got \(message.typeName)")
            }
            self.preloadNotes = skipped.sorted { $0.key < $1.key }.map { module, why in
                "[sandbox] preload: \(module.clipped(to: 200)) could not be imported: \(why.clipped(to: 300).escapingControlCharacters)"
            }
            answered = true
            return .stop
        }
        return answered
    }

    deinit {
        if isAlive {
            OS.kill(pid, SIGTERM) // the launcher kills the sandbox
            termination = try? OS.wait(pid, block: true)
            calls.cancelAll()
            auditEnd()
        }
        OS.close(channel)
        if status >= 0 { OS.close(status) }
        for output in outputs where output.fd >= 0 { OS.close(output.fd) }
        OS.close(readiness)
        OS.close(wake)
    }

    // MARK: Executing code

    /// Runs `code` in the session's namespace and delivers what it produces to `onEvent`, on the
    /// caller's thread; an `inputRequest` is answered with what `onEvent` returns.
    public func execute(_ code: String, filename: String = "<string>", argv: [String] = [""],
                        wantResult: Bool = true,
                        onEvent: (SessionEvent) -> String? = { _ in nil }) -> ExecutionOutcome {
        guard claim() else { return .busy }
        let start = begin({ .execute(id: $0, code: code, filename: filename, argv: argv, result: wantResult) },
                          filename: filename, source: Array(code.utf8))
        return blocking(onEvent) { emit in await self.finish(start, emit: emit) }
    }

    /// Runs a script file's bytes in the session's namespace, decoded as CPython decodes a script
    /// (a UTF-8 byte order mark or a PEP 263 coding line, else UTF-8), and delivers what it
    /// produces to `onEvent`.
    public func execute(script source: [UInt8], filename: String, argv: [String],
                        onEvent: (SessionEvent) -> String? = { _ in nil }) -> ExecutionOutcome {
        guard claim() else { return .busy }
        let start = begin({ .executeScript(id: $0, source: source, filename: filename, argv: argv) },
                          filename: filename, source: source)
        return blocking(onEvent) { emit in await self.finish(start, emit: emit) }
    }

    /// Starts running `code` and returns at once: its events, ending with `.done`, come from the
    /// `Execution` (iterate it once). The code runs whether or not anyone iterates; an input
    /// request waits for `answerInput`. Throws `SessionBusy` while another execution runs.
    public func submit(_ code: String, filename: String = "<string>", wantResult: Bool = true) throws(SessionBusy) -> Execution {
        guard claim() else { throw SessionBusy() }
        let start = begin({ .execute(id: $0, code: code, filename: filename, argv: [""], result: wantResult) },
                          filename: filename, source: Array(code.utf8))
        return streamed { emit in await self.finish(start, emit: emit) }
    }

    /// Runs `work` on the loop, its events and then its outcome going to the `Execution` returned;
    /// the session (claimed by the caller) is released before `.done`, so code sent on seeing
    /// `.done` is taken.
    private func streamed(_ work: @escaping @Sendable (@escaping Emit) async -> ExecutionOutcome) -> Execution {
        let (stream, continuation) = AsyncStream<ExecutionEvent>.makeStream()
        let outbox = Outbox(wake: wake)
        continuation.onTermination = { ending in
            if case .cancelled = ending { outbox.abandon() } // nobody reads on: nothing to wait for
        }
        Task(executorPreference: loop) {
            self.outbox = outbox
            let outcome = await work { event in
                outbox.added(event)
                continuation.yield(.event(event))
            }
            self.outbox = nil
            self.release()
            continuation.yield(.done(outcome))
            continuation.finish()
        }
        return Execution(stream: stream, outbox: outbox)
    }

    /// Runs code while it is still being written (an LLM's tokens, say): `chunks` bring the code
    /// in pieces, and each top-level statement runs as soon as it is whole (the worker's `codeop`
    /// decides), its output streaming while the rest arrives. A simple statement runs at the end
    /// of its last line; a compound one (`def`, `if`, `for`…) when the next statement starts at
    /// the left margin, or when the chunks end. Expression statements report their values, as in
    /// a REPL. Line numbers in tracebacks count from the start of all the code.
    ///
    /// The first statement that fails (a syntax error included) ends it: its events, then `.done`
    /// with its outcome; what follows is not run. Otherwise `.done` carries the last statement's.
    /// The session is busy until then.
    public func submit(streaming chunks: AsyncStream<String>, filename: String = "<stream>") throws(SessionBusy) -> Execution {
        guard claim() else { throw SessionBusy() }
        return streamed { emit in await self.runStatements(from: chunks, filename: filename, emit: emit) }
    }

    /// `submit(streaming:)`'s work, on the loop: lines into statements, each run once whole.
    private func runStatements(from chunks: AsyncStream<String>, filename: String, emit: @escaping Emit) async -> ExecutionOutcome {
        var last = ExecutionOutcome.finished(status: .ok, exitCode: nil, duration: 0, errorName: nil)
        var statement: [String] = []
        var firstLine = 1, lineNumber = 0
        var blockMayEnd = false // the statement so far is a compound one that a new statement ends
        var pending = ""

        /// Runs the statement gathered so far; false when it failed (the stream ends there).
        func run() async -> Bool {
            defer { statement = []; blockMayEnd = false }
            guard statement.contains(where: { !$0.allSatisfy(\.isWhitespace) }) else { return true }
            // Leading newlines, so that its line numbers are those of the whole code.
            let code = String(repeating: "\n", count: firstLine - 1) + statement.joined(separator: "\n") + "\n"
            last = await finish(begin({ .execute(id: $0, code: code, filename: filename, argv: [""], result: true) },
                                      filename: filename, source: Array(code.utf8)), emit: emit)
            if case .finished(.ok, nil, _, _) = last { return true }
            return false
        }
        func take(_ line: String) async -> Bool {
            lineNumber += 1
            if statement.isEmpty {
                guard !line.allSatisfy(\.isWhitespace) else { return true }
                firstLine = lineNumber
            } else if blockMayEnd, Statements.startsAtMargin(line) {
                guard await run() else { return false }
                firstLine = lineNumber
            }
            statement.append(line)
            // A blank or comment line changes nothing, and inside a block it does not end it (as
            // it would at a REPL prompt): a script's functions have blank lines.
            let content = line.drop { $0 == " " || $0 == "\t" }
            if content.isEmpty || content.hasPrefix("#") { return true }
            guard let answer = await askCompleteness(of: statement.joined(separator: "\n"), emit: emit) else {
                return await run() // the worker is gone or silent: the execution says how
            }
            // Whole, or never going to be (the execution reports the syntax error as Python does).
            if answer.status != .incomplete { return await run() }
            blockMayEnd = answer.blankLineCompletes
            return true
        }

        for await chunk in chunks {
            pending += chunk
            while let newline = pending.firstIndex(of: "\n") {
                let line = String(pending[..<newline])
                pending = String(pending[pending.index(after: newline)...])
                guard await take(line) else { return last }
            }
        }
        if !pending.isEmpty { guard await take(pending) else { return last } }
        _ = await run()
        return last
    }

    /// Answers the running execution's oldest unanswered `inputRequest`: a line, or nil for end of
    /// input. Ignored when no request waits (the execution ended meanwhile, say).
    public func answerInput(_ line: String?) {
        let taken = shared.withLock { state in
            guard state.inputsWanted > 0 else { return false }
            state.inputsWanted -= 1
            state.answers.append(line)
            return true
        }
        if taken { OS.signal(wake) }
    }

    /// Decides the `.approvalRequest` with this `id`: the held call goes ahead, or raises
    /// CapabilityDenied with the reason (`.interrupted`: KeyboardInterrupt). From any thread or
    /// task; false when no such request waits (decided already, or its execution ended). Only for
    /// a session started without a broker of its own (a broker brings its own approver).
    @discardableResult
    public func answerApproval(_ id: String, _ decision: ApprovalDecision) -> Bool {
        approvals?.answer(id, decision) ?? false
    }

    /// An execution begun on the caller's thread (`begin`), to be finished on the loop (`finish`).
    private enum Start: Sendable {
        case refused(ExecutionOutcome)
        case begun(Begun)
    }

    private struct Begun: Sendable {
        let id: String
        let deadline: UInt64
        let started: UInt64
        /// The queued answers and the execute frame, sent up to `offset` (as far as the socket took them).
        let bytes: [UInt8]
        let offset: Int
        let sendFailed: Bool
    }

    /// Makes the execute message for the next execution id and sends it, as far as the socket
    /// takes it without waiting: on the caller's thread, which holds the session (`claim`), so
    /// the worker starts on the code while the loop's thread wakes. The audit log hears of it
    /// before it is sent (nothing is sent that it could not record).
    private func begin(_ makeExecute: (String) -> SupervisorMessage, filename: String, source: [UInt8]) -> Start {
        guard isAlive else { return .refused(.workerEnded(exitCode: report.exitCode, signal: report.signal)) }
        let id = String(nextID)
        nextID += 1
        // The worker accepts frames up to the policy's limit, as the supervisor does.
        let frame = makeExecute(id).encoded
        guard frame.count <= policy.limits.maxFrameBytes else {
            return .refused(.codeTooLarge(filename: filename, bytes: source.count, encodedBytes: frame.count,
                                          limit: policy.limits.maxFrameBytes))
        }
        if let audit {
            do throws(AuditFailure) {
                try audit.event(AuditEvent(.execStart, [
                    ("execution", .string(id)), ("filename", .string(filename.clipped(to: 200))),
                    ("code_sha256", .string(SHA256.hash(source).hexText)),
                    ("code_bytes", .number(Double(source.count))),
                ]))
            } catch {
                return .refused(.auditFailed(error.message))
            }
            executing = true
        }
        let deadline = OS.now() + UInt64(policy.limits.timeoutSeconds * 1e9)
        shared.withLock { state in
            state.executionDeadline = deadline
            state.interruptDeadline = nil
            state.interruptSent = false
            state.interruptedTwice = false
            state.inputsWanted = 0
            state.answers = []
        }
        let bytes = replies.isEmpty ? frame : replies + frame
        replies.removeAll(keepingCapacity: true)
        var offset = 0
        var failed = false
        do {
            while offset < bytes.count {
                let sent = try OS.sendSome(channel, bytes, from: offset)
                if sent == 0 { break }
                offset += sent
            }
        } catch {
            failed = true
        }
        return .begun(Begun(id: id, deadline: deadline, started: OS.now(), bytes: bytes, offset: offset, sendFailed: failed))
    }

    /// Sends what `begin` could not and pumps until the execution is done; then the audit log
    /// hears how it ended.
    private func finish(_ start: Start, emit: @escaping Emit) async -> ExecutionOutcome {
        guard case .begun(let begun) = start else {
            if case .refused(let outcome) = start { return outcome }
            return .busy
        }
        approvals?.attach(emit)
        let outcome = await drive(begun, emit: emit)
        approvals?.detach()
        shared.withLock { state in
            state.executionDeadline = nil
            state.inputsWanted = 0
            state.answers = []
        }
        guard let audit else { return outcome }
        executing = false
        let id = begun.id
        if case .limitExceeded(let limit) = outcome { try? audit.event(AuditEvent(.limitHit, [("execution", .string(id))] + limit.auditFields)) }
        try? audit.event(AuditEvent(.execEnd, [("execution", .string(id))] + outcome.auditFields
            + [("duration_s", .number((Double(OS.now() - begun.started) / 1e6).rounded() / 1e3))]))
        if !isAlive { auditEnd() }
        return outcome
    }

    /// Sends the execute frame and pumps until the execution is done.
    private func drive(_ begun: Begun, emit: @escaping Emit) async -> ExecutionOutcome {
        let (id, deadline) = (begun.id, begun.deadline)
        if begun.sendFailed {
            await reap()
            return endedOutcome()
        }
        if begun.offset < begun.bytes.count, let ended = await send(begun.bytes, from: begun.offset, until: deadline) {
            return ended
        }
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
                if room > 0 { emit(cut(room)) }
                return overLimit
            }
            emit(event)
            return .continue
        }
        func deliverData(_ name: StreamName, _ data: [UInt8]) -> Step {
            deliver(.streamData(name, data), bytes: data.count) { .streamData(name, Array(data.prefix($0))) }
        }
        func answer(_ answer: CapabilityAnswer) -> Step {
            deliverAnswer(answer, admit: admit, overLimit: overLimit, emit: emit)
        }
        // Input answers, sent as they come (the code waits in input() meanwhile).
        let sendAnswers = { () async -> Step in
            let answers = self.shared.withLock { state in
                defer { state.answers.removeAll() }
                return state.answers
            }
            guard !answers.isEmpty else { return .continue }
            if self.shared.withLock({ $0.inputsWanted == 0 }) { self.watchInterrupt = true }
            for line in answers {
                if let ended = await self.send(.inputReply(id: id, value: line)) {
                    outcome = ended
                    return .stop
                }
            }
            return .continue
        }
        let end = await pump(deadline: deadline, output: deliverData, answer: answer, between: sendAnswers) { message in
            if let call = message.capabilityCall { return self.startCall(call, answer: answer) }
            // Output a thread of the code wrote after an earlier execution ended (while nothing
            // read the channel) is the code's output all the same: delivered now.
            let late = message.isStream && message.executionID.flatMap { Int($0) }.map { $0 < Int(id) ?? 0 } == true
            guard late || message.executionID == id else {
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
                emit(.result(data))
            case .error(_, let ename, let evalue, let traceback):
                if secondFinal() { return .failure("a second `result` or `error` in execution \(id)") }
                guard admit(ename.utf8.count + evalue.utf8.count + traceback.reduce(0) { $0 + $1.utf8.count }) else {
                    return overLimit
                }
                errorName = ename
                emit(.error(ename: ename, evalue: evalue, traceback: traceback))
            case .inputRequest(_, let prompt, let password):
                guard admit(prompt.utf8.count) else { return overLimit }
                // Without the input capability the code sees the end of input; nobody is asked.
                guard self.policy.capabilities.input?.enabled == true else {
                    emit(.inputRefused)
                    return .send(.inputReply(id: id, value: nil))
                }
                // Whoever answers watches for interrupts meanwhile (a person at a terminal presses ^C).
                self.shared.withLock { $0.inputsWanted += 1 }
                self.watchInterrupt = false
                emit(.inputRequest(prompt: prompt, password: password))
            case .done(_, let status, let duration, let exitCode):
                outcome = .finished(status: status, exitCode: exitCode, duration: duration, errorName: errorName)
                return .stop
            case .ready:
                return .failure("`ready` sent twice")
            case .capCall, .completeness, .checkpointData, .restored, .preloaded:
                break // handled above (none of these has an execution id)
            }
            return .continue
        }
        watchInterrupt = true
        if let outcome { return outcome }
        switch end {
        case .limit(let kind):
            await terminate()
            return .limitExceeded(kind)
        case .deadline:
            return await expired()
        case .protocolError(let text):
            await terminate()
            return .protocolError(text)
        case .ended(let ended):
            return ended
        case .closed, .stopped:
            return endedOutcome()
        }
    }

    // MARK: Statements

    /// Whether `code` is a whole statement as Python's interactive console reads one, and whether a
    /// blank line would complete it: what a REPL asks before it runs what was typed. Only between
    /// executions; it is no execution (nothing is audited). What background threads print meanwhile
    /// goes to `onEvent`, and their capability calls are answered. Nil when the worker is gone, does
    /// not answer within 10 s, or an execution runs.
    public func completeness(of code: String, onEvent: (SessionEvent) -> String? = { _ in nil })
        -> (status: Completeness, blankLineCompletes: Bool)? {
        guard claim() else { return nil }
        let answer = blocking(onEvent) { emit in await self.askCompleteness(of: code, emit: emit) }
        return answer.map { ($0.status, $0.blankLineCompletes) }
    }

    private struct CompletenessAnswer: Sendable {
        let status: Completeness
        let blankLineCompletes: Bool
    }

    private func askCompleteness(of code: String, emit: @escaping Emit) async -> CompletenessAnswer? {
        let reply = await ask({ .complete(id: $0, code: code) }, prefix: "c", seconds: 10, emit: emit) { message in
            if case .completeness(_, let status, let blankLineCompletes) = message {
                return .answered(CompletenessAnswer(status: status, blankLineCompletes: blankLineCompletes))
            }
            return nil
        }
        guard case .answered(let answer) = reply else { return nil }
        return answer
    }

    private enum Asked<T: Sendable>: Sendable {
        case answered(T)
        case failed(String)
    }

    /// Sends the message made for a new id between executions and pumps until the worker answers
    /// it (`answer` reads the answer, a message with that id: the value, or why the worker failed;
    /// nil for the wrong kind of message), for at most `seconds`. Output meanwhile goes to `emit`;
    /// capability calls are answered.
    private func ask<T: Sendable>(_ makeMessage: (String) -> SupervisorMessage, prefix: String, seconds: Double,
                        emit: @escaping Emit, answer: (WorkerMessage) -> Asked<T>?) async -> Asked<T> {
        guard isAlive else { return .failed("the session has ended") }
        let id = "\(prefix)\(nextID)"
        nextID += 1
        let deadline = OS.now() + UInt64(seconds * 1e9)
        let frame = makeMessage(id).encoded
        guard frame.count <= policy.limits.maxFrameBytes else {
            return .failed("the request is \(frame.count) bytes as sent, more than the \(policy.limits.maxFrameBytes) "
                           + "that limits.max_frame_bytes allows")
        }
        guard await send(frame, until: deadline) == nil else { return .failed(isAlive ? "the worker did not read it in time" : "the session has ended") }
        var reply: Asked<T>?
        let end = await pump(deadline: deadline, output: { name, bytes in
            emit(.streamData(name, bytes))
            return .continue
        }, answer: sendAnswer) { message in
            if let call = message.capabilityCall { return self.startCall(call, answer: self.sendAnswer) }
            switch message {
            case .stream(_, let name, let text):
                emit(.stream(name, text))
                return .continue
            case .streamData(_, let name, let data):
                emit(.streamData(name, data))
                return .continue
            case .completeness(id, _, _), .checkpointData(id, _, _, _, _), .restored(id, _, _, _):
                guard let answered = answer(message) else { return .failure("\(message.typeName) does not answer \(id)") }
                reply = answered
                return .stop
            default:
                return .failure("\(message.typeName) while no execution runs")
            }
        }
        if let reply { return reply }
        switch end {
        case .protocolError(let text):
            await terminate()
            return .failed("protocol error: \(text); the session was ended")
        case .deadline:
            return .failed("the worker did not answer within \(Int(seconds)) s")
        default:
            return .failed("the session ended before it answered")
        }
    }

    // MARK: Checkpoints

    /// What the namespace held that could be kept (`checkpoint()`), to `restore` into a session.
    /// The supervisor keeps it; it is never stored inside a sandbox.
    public func checkpoint() async throws(CheckpointError) -> Checkpoint {
        try await request({ .checkpoint(id: $0) }, prefix: "k") { message in
            guard case .checkpointData(_, let data, let names, let skipped, let error) = message else { return nil }
            if let error { return .failed("the checkpoint failed: \(error)") }
            return .answered(Checkpoint(data: data, names: names, skipped: skipped, policy: self.policy))
        }
    }

    /// Loads `checkpoint` into this session's namespace: merged with what is there, or, with
    /// `replace`, instead of the code's names. Says which names came back and which did not.
    public func restore(_ checkpoint: Checkpoint, replace: Bool = false) async throws(CheckpointError) -> RestoreReport {
        guard checkpoint.policy == policy else { throw .otherPolicy(from: checkpoint.policy.origin, into: policy.origin) }
        return try await request({ .restore(id: $0, data: checkpoint.data, replace: replace) }, prefix: "r") { message in
            guard case .restored(_, let names, let skipped, let error) = message else { return nil }
            if let error { return .failed("the restore failed: \(error)") }
            return .answered(RestoreReport(names: names, skipped: skipped))
        }
    }

    /// `ask` between executions, from any task: the session held meanwhile, its output dropped,
    /// the execution timeout its limit.
    private func request<T: Sendable>(_ makeMessage: @escaping @Sendable (String) -> SupervisorMessage, prefix: String,
                                      answer: @escaping @Sendable (WorkerMessage) -> Asked<T>?) async throws(CheckpointError) -> T {
        guard claim() else { throw .busy }
        defer { release() }
        let reply = await onLoop {
            await self.ask(makeMessage, prefix: prefix, seconds: self.policy.limits.timeoutSeconds, emit: { _ in }, answer: answer)
        }
        switch reply {
        case .answered(let value): return value
        case .failed(let why): throw .failed(why)
        }
    }

    /// `count` new sessions with this session's policy, each holding what a checkpoint of this
    /// one keeps: to try several continuations side by side. Each has a broker of its own for the
    /// policy (`broker` makes one; by default the policy's, asking through events) and this
    /// session's audit sink.
    public func fork(_ count: Int, broker: (@Sendable () -> Broker)? = nil) async throws(CheckpointError) -> [Session] {
        let state = try await checkpoint()
        var forks: [Session] = []
        for _ in 0..<max(0, count) {
            do {
                let session = try await Session.open(policy: policy, location: location, broker: broker?(), audit: audit)
                forks.append(session)
                _ = try await session.restore(state)
            } catch let error as SessionError {
                for fork in forks { await fork.close() }
                throw .failed("a fork could not start: \(error)")
            } catch {
                for fork in forks { await fork.close() }
                throw error as? CheckpointError ?? .failed("\(error)")
            }
        }
        return forks
    }

    // MARK: Stopping

    /// Sends SIGINT: the running code gets KeyboardInterrupt and `finally` blocks run. Code that
    /// has not stopped `interruptGrace` seconds later is killed; a second interrupt kills at once.
    /// From any thread.
    public func interrupt() {
        guard isAlive else { return }
        shared.withLock { state in
            let now = OS.now()
            state.interruptedTwice = state.interruptDeadline != nil
            state.interruptDeadline = state.interruptedTwice ? now : now + UInt64(Self.interruptGrace * 1e9)
            state.interruptSent = true
        }
        OS.kill(pid, SIGINT)
        OS.signal(wake) // the running execution's deadline moved
    }

    /// Asks the worker to exit, waits up to `grace` seconds, then kills it.
    /// With `wait` false it returns at once and leaves the launcher unreaped: pid 1 and the
    /// launcher finish the teardown (the launcher kills the sandbox if this process goes away).
    /// Only for a process about to exit, such as `capsule run`; a long-lived supervisor waits.
    public func shutdown(grace: Double = 2, wait: Bool = true) {
        guard isAlive else { return }
        guard claim() else { return kill() }
        blocking({ _ in nil }) { _ in await self.stop(grace: grace, wait: wait) }
    }

    /// Ends the session: asks the worker to exit, kills it `grace` seconds later if it has not.
    /// A running execution ends as the worker does.
    public func close(grace: Double = 2) async {
        guard isAlive else { return }
        guard claim() else { return kill() }
        await onLoop { await self.stop(grace: grace, wait: true) }
        release()
    }

    private func stop(grace: Double, wait: Bool) async {
        let graceDeadline = OS.now() + UInt64(grace * 1e9)
        if !wait {
            if await send(.shutdown, until: graceDeadline) == nil {
                alive.store(false, ordering: .releasing)
                auditEnd()
            }
            return
        }
        if await send(.shutdown, until: graceDeadline) == nil {
            _ = await pump(deadline: graceDeadline, answer: sendAnswer) { _ in .continue }
        }
        if isAlive { await terminate() }
    }

    /// Kills the sandbox (the launcher SIGKILLs pid 1, which takes the whole namespace) and reaps
    /// it. From any thread; with an execution running, that execution reaps it and ends.
    public func kill() {
        guard isAlive else { return }
        guard claim() else { return OS.kill(pid, SIGTERM) }
        blocking({ _ in nil }) { _ in await self.terminate() }
    }

    private func terminate() async {
        guard isAlive else { return }
        OS.kill(pid, SIGTERM)
        await reap()
    }

    /// Hands a capability call to the broker; its answer comes now or later through `answer`.
    private func startCall(_ call: CapabilityCall, answer: (CapabilityAnswer) -> Step) -> Step {
        guard let reply = calls.start(call) else { return .continue }
        return answer(CapabilityAnswer(id: call.id, capability: call.capability, reply: reply))
    }

    /// Sends a call's answer. A display bundle is shown here first, in order with the output and
    /// counted against the output limit; an answer too big for one frame becomes an error saying so.
    private func deliverAnswer(_ answer: CapabilityAnswer, admit: (Int) -> Bool, overLimit: Step, emit: Emit) -> Step {
        var reply = answer.reply
        if answer.capability == "display", case .value(let value) = reply, let bundle = DisplayCapability.bundle(value) {
            guard admit(bundle.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count }) else { return overLimit }
            emit(.display(bundle))
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
    private func sendReplies() async -> Bool {
        if replies.isEmpty { return true }
        return await send([]) == nil
    }

    // MARK: The loop and its callers

    /// How the session hands out an event: to an async sequence, or to a blocked caller's handler.
    typealias Emit = @Sendable (SessionEvent) -> Void

    /// Marks the session busy; false when it already is.
    private func claim() -> Bool {
        shared.withLock { state in
            defer { state.busy = true }
            return !state.busy
        }
    }

    private func release() { shared.withLock { $0.busy = false } }

    /// Runs `body` on the session's loop.
    private func onLoop<T: Sendable>(_ body: @escaping @Sendable () async -> T) async -> T {
        await Task(executorPreference: loop) { await body() }.value
    }

    /// Runs `body` on the session's loop while the calling thread waits, handing each event it
    /// emits to `onEvent` on the calling thread (an input request is answered with what it
    /// returns); then releases the session. Never from a loop thread: it would wait for itself.
    private func blocking<T: Sendable>(_ onEvent: (SessionEvent) -> String?,
                                       _ body: @escaping @Sendable (@escaping Emit) async -> T) -> T {
        precondition(!EventLoop.onAnyLoop, "a blocking Session call on an event loop's thread; use the async API there")
        let handoff = Handoff<T>()
        let outbox = Outbox(wake: wake)
        Task(executorPreference: loop) {
            self.outbox = outbox
            let value = await body { event in
                outbox.added(event)
                handoff.post(event)
            }
            self.outbox = nil
            self.release()
            handoff.finish(value)
        }
        while true {
            switch handoff.next() {
            case .event(let event):
                let line = onEvent(event)
                outbox.taken(event)
                if case .inputRequest = event { answerInput(line) }
                // A handler that did not decide (with `answerApproval`) did not approve.
                if case .approvalRequest(let id, _) = event { answerApproval(id, .denied("the session's event handler did not approve it")) }
            case .finished(let value):
                return value
            }
        }
    }

    // MARK: Internals

    private enum Step {
        case `continue`, stop
        case failure(String)
        case limit(LimitKind)
        /// Send this message, then go on.
        case send(SupervisorMessage)
    }

    private enum PumpEnd {
        case stopped, closed, deadline
        case protocolError(String)
        case limit(LimitKind)
        /// A send failed: the execution ended so.
        case ended(ExecutionOutcome)
    }

    /// Where the running operation's events go, to hold the pump while its reader lags.
    private var outbox: Outbox?

    /// Whether the interrupt descriptor is watched (not while an input request waits).
    private var watchInterrupt = true

    /// Keeps `readiness` watching the interrupt descriptor, or not, as `watchInterrupt` says.
    private func syncInterruptWatch() {
        let wanted = watchInterrupt ? interruptDescriptor : nil
        guard wanted != watchedInterrupt else { return }
        if let old = watchedInterrupt { OS.unwatch(old, in: readiness) }
        if let wanted { OS.watch(wanted, in: readiness) }
        watchedInterrupt = wanted
    }

    /// Reads frames, output and status lines until `handle` says stop, the channel closes, or the
    /// deadline. Output read from fds 1 and 2 goes to `output`, after the frames read before it
    /// (the worker waits until earlier fd output is read before it sends a frame, so that order
    /// is the order it was written in). Outside an execution nobody takes it: it is dropped.
    /// `answer` delivers the answers of calls that ran on tasks (outside an execution, they are
    /// just sent); `between` runs each time round, before the session waits.
    private func pump(deadline: UInt64, output: (StreamName, [UInt8]) -> Step = { _, _ in .continue },
                      answer: (CapabilityAnswer) -> Step,
                      between: () async -> Step = { .continue },
                      handle: (WorkerMessage) -> Step) async -> PumpEnd {
        // What a step means for the pump: nil to go on.
        func ending(_ step: Step) async -> PumpEnd? {
            switch step {
            case .continue: return nil
            case .stop: return .stopped
            case .failure(let text): return .protocolError(text)
            case .limit(let kind): return .limit(kind)
            case .send(let message):
                if let ended = await send(message) { return .ended(ended) }
                return nil
            }
        }
        var fds: [pollfd] = []
        // Each call comes right after something was sent to the worker, which has had no time
        // to answer: the first time round, wait before looking (the wait ends at once when a
        // descriptor is ready all the same).
        var waitFirst = true
        while true {
            let deadline = min(deadline, shared.withLock { $0.interruptDeadline } ?? .max)
            // Frames already buffered first, unless time is up (a flood keeps the buffer full).
            do {
                while OS.now() < deadline, let json = try decoder.next() {
                    let message: WorkerMessage
                    do { message = try WorkerMessage(json) } catch { return .protocolError(error.description) }
                    // Answers wait only for the calls that follow them, never for a handler that may block.
                    if !message.isCapCall, !(await sendReplies()) { return .stopped }
                    if let end = await ending(handle(message)) { return end }
                }
            } catch {
                return .protocolError(error.description)
            }
            if case .limit(let kind) = deliverPendingOutput(to: output) { return .limit(kind) }
            if let end = await ending(await between()) { return end }

            if OS.now() >= deadline { return .deadline }
            // While the reader lags, nothing more is read: the worker's pipes fill and it waits,
            // as it would writing to a slow terminal. Its deadline and interrupts still hold.
            if let outbox, outbox.isFull {
                if await loop.wait(for: wake, until: deadline) { OS.drain(wake) }
                continue
            }
            if !(await sendReplies()) { return .stopped }
            syncInterruptWatch()
            if waitFirst {
                waitFirst = false
                _ = await loop.wait(for: readiness, until: deadline)
                continue
            }
            fds.removeAll(keepingCapacity: true)
            fds.append(pollfd(fd: channel, events: Int16(POLLIN), revents: 0))
            for entry in outputs where entry.fd >= 0 { fds.append(pollfd(fd: entry.fd, events: Int16(POLLIN), revents: 0)) }
            if status >= 0 { fds.append(pollfd(fd: status, events: Int16(POLLIN), revents: 0)) }
            if let watchedInterrupt { fds.append(pollfd(fd: watchedInterrupt, events: Int16(POLLIN), revents: 0)) }
            fds.append(pollfd(fd: calls.descriptor, events: Int16(POLLIN), revents: 0))
            fds.append(pollfd(fd: wake, events: Int16(POLLIN), revents: 0))
            // Look first; wait on the loop (the thread goes on with other sessions) only when
            // nothing is ready.
            if (try? OS.poll(&fds, timeoutMilliseconds: 0)) ?? 0 == 0 {
                _ = await loop.wait(for: readiness, until: deadline)
                continue
            }

            for entry in fds.dropFirst() where entry.revents != 0 {
                if entry.fd == status { readStatus() } else if entry.fd == watchedInterrupt { drainInterrupt() }
                if entry.fd == wake { OS.drain(wake) }
                if entry.fd == calls.descriptor {
                    for finished in calls.takeAnswers() where isAlive {
                        if let end = await ending(answer(finished)) { return end }
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
                    guard await waitForExit(deadline: deadline) else { return .deadline }
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
            // A flood lets the loop's other sessions run between its reads.
            if !channelDrained || pendingOutput.contains(where: { $0.bytes.count == readBuffer.count }) {
                await Task.yield()
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
    private func waitForExit(deadline: UInt64) async -> Bool {
        while status >= 0 {
            if OS.now() >= deadline { return false }
            if await loop.wait(for: status, until: deadline) { readStatus() }
        }
        await reap()
        return true
    }

    /// Waits for the launcher to exit and reads the status pipe to its end.
    private func reap() async {
        if termination == nil {
            // The launcher closes the status pipe as it exits (after pid 1 is gone).
            let limit = OS.now() + 10_000_000_000
            while status >= 0, OS.now() < limit {
                if await loop.wait(for: status, until: limit) { readStatus() }
            }
            termination = try? OS.wait(pid, block: true)
        }
        // What is left to read, without waiting: a sandbox that outlived its launcher (it must
        // not) would hold the pipe open for ever.
        if status >= 0 { try? OS.setNonBlocking(status) }
        while status >= 0 {
            var fds = [pollfd(fd: status, events: Int16(POLLIN), revents: 0)]
            guard (try? OS.poll(&fds, timeoutMilliseconds: 0)) ?? 0 > 0 else {
                OS.close(status)
                status = -1
                break
            }
            readStatus()
        }
        alive.store(false, ordering: .releasing)
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
    private func send(_ message: SupervisorMessage, until limit: UInt64? = nil) async -> ExecutionOutcome? {
        await send(message.encoded, until: limit)
    }

    private func send(_ frame: [UInt8], until limit: UInt64? = nil) async -> ExecutionOutcome? {
        let bytes = replies.isEmpty ? frame : replies + frame
        replies.removeAll(keepingCapacity: true)
        return await send(bytes, from: 0, until: limit ?? self.deadline ?? OS.now())
    }

    private func send(_ bytes: [UInt8], from start: Int, until deadline: UInt64) async -> ExecutionOutcome? {
        var offset = start
        while offset < bytes.count {
            do {
                let sent = try OS.sendSome(channel, bytes, from: offset)
                offset += sent
                if sent == 0, !(await loop.wait(for: channel, .writable, until: deadline)), OS.now() >= deadline {
                    return await expired()
                }
            } catch {
                await reap()
                return endedOutcome()
            }
        }
        return nil
    }

    /// The deadline came: kill the sandbox and say which one it was.
    private func expired() async -> ExecutionOutcome {
        await terminate()
        let (interruptDeadline, executionDeadline, twice) = shared.withLock {
            ($0.interruptDeadline, $0.executionDeadline, $0.interruptedTwice)
        }
        if let interruptDeadline, interruptDeadline <= (executionDeadline ?? .max) {
            return .killedAfterInterrupt(graceSeconds: twice ? 0 : Self.interruptGrace)
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

/// Counts what an operation handed out and its reader has not yet taken; over `limit`, the
/// session stops reading until the reader catches up (it signals `wake` as it does).
final class Outbox: Sendable {
    static let limit = 4 << 20
    private let backlog = Atomic<Int>(0)
    private let abandoned = Atomic<Bool>(false)
    private let wake: Int32

    init(wake: Int32) { self.wake = wake }

    var isFull: Bool { !abandoned.load(ordering: .relaxed) && backlog.load(ordering: .acquiring) >= Self.limit }

    func added(_ event: SessionEvent) { backlog.add(event.weight, ordering: .relaxed) }

    func taken(_ event: SessionEvent) {
        let weight = event.weight
        let left = backlog.subtract(weight, ordering: .acquiringAndReleasing).newValue
        if left < Self.limit && left + weight >= Self.limit { OS.signal(wake) }
    }

    /// Nobody will take more: the session reads on.
    func abandon() {
        abandoned.store(true, ordering: .relaxed)
        OS.signal(wake)
    }
}

extension SessionEvent {
    /// About how many bytes the event holds, for `Outbox`.
    var weight: Int {
        switch self {
        case .stream(_, let text): text.utf8.count
        case .streamData(_, let data): data.count
        case .result(let data), .display(let data): data.reduce(64) { $0 + $1.key.utf8.count + $1.value.utf8.count }
        case .error(let ename, let evalue, let traceback): traceback.reduce(64 + ename.utf8.count + evalue.utf8.count) { $0 + $1.utf8.count }
        case .inputRequest(let prompt, _): 64 + prompt.utf8.count
        case .inputRefused: 64
        case .approvalRequest(let id, let request): 64 + id.utf8.count + request.summary.description.utf8.count
        }
    }
}

/// Hands a loop's events to a thread blocked in a `Session` call, in order, then the call's value.
private final class Handoff<T: Sendable>: @unchecked Sendable {
    enum Item {
        case event(SessionEvent)
        case finished(T)
    }

    private let condition = Condition()
    private var events: [SessionEvent] = []
    private var head = 0
    private var value: T?

    func post(_ event: SessionEvent) {
        condition.withLock {
            events.append(event)
            condition.signal()
        }
    }

    func finish(_ value: T) {
        condition.withLock {
            self.value = value
            condition.signal()
        }
    }

    /// The next event, or the value once every event was taken; waits for one.
    func next() -> Item {
        condition.withLock {
            while head == events.count && value == nil { condition.wait() }
            guard head < events.count else { return .finished(value!) }
            defer {
                head += 1
                if head == events.count {
                    events.removeAll(keepingCapacity: true)
                    head = 0
                }
            }
            return .event(events[head])
        }
    }
}

extension WorkerMessage {
    var executionID: String? {
        switch self {
        case .ready: nil
        case .stream(let id, _, _), .streamData(let id, _, _), .result(let id, _), .error(let id, _, _, _),
             .inputRequest(let id, _, _), .done(let id, _, _, _): id
        case .capCall: nil // a call belongs to a thread of the code, not to one execution
        case .completeness, .checkpointData, .restored, .preloaded: nil
        }
    }

    var isCapCall: Bool {
        if case .capCall = self { return true }
        return false
    }

    /// A `cap_call` as the broker takes it; nil for any other message.
    var capabilityCall: CapabilityCall? {
        guard case .capCall(let id, let capability, let method, let arguments) = self else { return nil }
        return CapabilityCall(id: id, capability: capability, method: method, arguments: arguments)
    }

    var isStream: Bool {
        switch self {
        case .stream, .streamData: true
        default: false
        }
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
        case .checkpointData: "`checkpoint_data`"
        case .restored: "`restored`"
        case .preloaded: "`preloaded`"
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
    /// How the audit log's `exec.end` (and the server's `done`) says it ended: `status`, and the
    /// exit code, error or limit.
    public var auditFields: [(String, JSONValue)] {
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
        case .busy: [("status", "refused"), ("reason", "busy")]
        }
    }
}
