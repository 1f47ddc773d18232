#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import CapsuleAudit
import CapsuleCapabilities
import CapsuleOS
import CapsulePolicy
import CapsuleProtocol
import CapsuleRuntime
import CapsuleSandbox

/// Options every command that runs code shares.
struct SessionOptions: ParsableArguments {
    @Option(help: "A policy level (sandbox, restricted, standard, trusted, unrestricted) or a policy file.",
            completion: Completion.policy)
    var policy: String = "sandbox"

    @Option(help: ArgumentHelp("Write the outcome as JSON to this file.",
                               discussion: "Unlike the reason line on stderr, the code's own output cannot forge it."),
            completion: .file())
    var report: String?

    @Option(help: ArgumentHelp("A program that approves or denies calls the policy marks `ask = true`, and answers capsule.ask().",
                               discussion: "It reads each request as one JSON line on stdin and answers `approve` or `deny [reason]`. Without it, a terminal is asked; with neither, such calls are denied."))
    var approver: String?

    @Option(help: ArgumentHelp("Write the audit log (hash-chained JSONL) to this file, over the policy's [audit] path.",
                               discussion: "Every session, execution and capability call is recorded; if the file cannot be written, nothing runs. See docs/audit.md."),
            completion: .file())
    var audit: String?

    @Option(name: .customLong("approval-timeout"),
            help: ArgumentHelp("Seconds the approver or the person at the terminal has to answer (default 60); no answer denies the call."))
    var approvalTimeout: Double = 60

    @Option(name: .customLong("mount"),
            help: ArgumentHelp("Show a host path inside: HOST:DEST or HOST:DEST:ro read-only (level restricted or higher), HOST:DEST:rw writable (standard or higher); repeatable.",
                               discussion: "For example --mount .:/src. HOST is taken literally (no symbolic links); DEST is a path of your own, such as /src or /workspace/src. The code writes to a :rw mount as the tree's owner."))
    var mounts: [String] = []

    @Option(name: .customLong("display-dir"),
            help: ArgumentHelp("Write what the code displays (HTML, images, …) to numbered files in this directory.",
                               discussion: "Without it, only the text/plain part of a display is printed."))
    var displayDir: String?

    @Option(name: .customLong("output-dir"),
            help: ArgumentHelp("Copy what the code leaves in /workspace/out to this directory when the run ends.",
                               discussion: "Created if missing. Directories and regular files only (symbolic links, sockets and devices are left out and named), at most limits.workspace_mb in all; files of the same name are replaced."),
            completion: .directory)
    var outputDir: String?

    /// A report that cannot be written is refused before anything runs, in one sentence.
    func validate() throws {
        guard Self.approvalTimeoutIsValid(approvalTimeout) else {
            throw ValidationError("--approval-timeout takes seconds above 0 and at most 86400 (a day), such as 60")
        }
        if let problem = reportProblem {
            printError("capsule: \(problem)")
            throw ExitCode(ExitStatus.capsuleError)
        }
    }

    static func approvalTimeoutIsValid(_ seconds: Double) -> Bool { seconds > 0 && seconds <= 86400 }

    /// Why `--report` cannot be written, if it cannot.
    var reportProblem: String? {
        guard let report else { return nil }
        switch openReport(report, creating: false) {
        case .success(let fd): OS.close(fd); return nil
        case .failure(let problem): return problem.message
        }
    }
}

func printError(_ text: String) {
    try? OS.writeAll(2, text + "\n")
}

/// The largest script `capsule run` reads (the policy's `limits.max_frame_bytes` bounds it too).
let maxScriptBytes = 64 << 20

/// The script's bytes (the worker decodes them as CPython decodes a script), or why it cannot be run.
func readSource(_ path: String) -> Result<[UInt8], SourceError> {
    // A FIFO or a device could block or never end before any timeout applies.
    if OS.fileExists(path) && !OS.isRegularFile(path) { return .failure(SourceError("\(path) is not a regular file")) }
    do {
        return .success(try OS.readFile(path, limit: maxScriptBytes))
    } catch where error.errno == EFBIG {
        return .failure(SourceError("\(path) is more than 64 MiB, the largest script capsule runs"))
    } catch {
        return .failure(SourceError("cannot read \(path): \(OS.errorText(error.errno))"))
    }
}

struct SourceError: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

/// One of our output streams: filtered when it is a terminal (and written through `Screen`, which
/// holds it while an approval question waits), passed through otherwise (a pipe or file gets
/// exactly what the code wrote).
private struct Output {
    let fd: Int32
    var filter: TerminalFilter?

    init(fd: Int32) {
        self.fd = fd
        filter = isatty(fd) == 1 ? TerminalFilter() : nil
    }

    mutating func write(_ text: String) {
        if let shown = filter?.filter(text) { Screen.shared.write(fd, shown) } else { try? OS.writeAll(fd, text) }
    }

    mutating func write(_ bytes: [UInt8]) {
        if let shown = filter?.filter(bytes: bytes) { Screen.shared.write(fd, shown) } else { try? OS.writeAll(fd, bytes) }
    }

    mutating func finish() {
        if let rest = filter?.flush() { Screen.shared.write(fd, rest) }
    }
}

enum InputLine {
    case line(String), end, interrupted
}

/// A line from standard input, unbuffered, waiting no longer than `deadline` (re-read each time, as
/// an interrupt moves it); `.end` at end of input or when time is up (the session then stops the
/// code), `.interrupted` when `interrupt` became readable (^C) first.
private func readInputLine(until deadline: () -> UInt64?, interrupt: Int32?) -> InputLine {
    var bytes: [UInt8] = []
    while true {
        if let deadline = deadline() {
            if OS.now() >= deadline { return .end }
            var fds = [pollfd(fd: 0, events: Int16(POLLIN), revents: 0)]
            if let interrupt { fds.append(pollfd(fd: interrupt, events: Int16(POLLIN), revents: 0)) }
            let ready = (try? OS.poll(&fds, timeoutMilliseconds: OS.pollMilliseconds(until: deadline))) ?? 0
            if ready == 0 { continue }
            if fds.count > 1 && fds[1].revents != 0 { return .interrupted }
        }
        var byte: UInt8 = 0
        let count = read(0, &byte, 1)
        if count < 0 && errno == EINTR { continue }
        if count <= 0 { return bytes.isEmpty ? .end : .line(String(decoding: bytes, as: UTF8.self)) }
        if byte == UInt8(ascii: "\n") { return .line(String(decoding: bytes, as: UTF8.self)) }
        if bytes.count < 1 << 20 { bytes.append(byte) } // a line longer than 1 MiB is cut there
    }
}

/// The write end of the self-pipe that turns ^C, SIGTERM and SIGHUP into an interrupt of the
/// running code (and `promptInterruptWriter`'s, which ends a waiting approval question), and the
/// first of those signals (0 before any), which the outcome names.
nonisolated(unsafe) private var interruptWriter: Int32 = -1
nonisolated(unsafe) private var promptInterruptWriter: Int32 = -1
nonisolated(unsafe) private var stopSignal: Int32 = 0
nonisolated(unsafe) private var latestSignal: Int32 = 0

/// The terminal hung up (an approval question saw it first): as the kernel's SIGHUP would, once,
/// unless a stop signal came already or SIGHUP is ignored (nohup).
func noteHangUp() {
    guard stopSignal == 0 else { return }
    kill(getpid(), SIGHUP) // to the process: this thread may block it
    // The handler runs on another thread: the outcome must name SIGHUP once the call returns.
    for _ in 0..<1000 where stopSignal == 0 { usleep(1000) }
}

private func installInterruptHandler() -> Int32? {
    guard let (reader, writer) = try? OS.socketPair() else { return nil }
    try? OS.setNonBlocking(writer)
    interruptWriter = writer
    if let (promptReader, promptWriter) = try? OS.socketPair() {
        try? OS.setNonBlocking(promptReader)
        try? OS.setNonBlocking(promptWriter)
        (promptInterruptReader, promptInterruptWriter) = (promptReader, promptWriter)
    }
    // Each one interrupts, as ^C does: the code gets KeyboardInterrupt and the same grace; a
    // second signal kills it at once. One ignored at start stays ignored (nohup, `&` in a script).
    var handled = sigset_t()
    sigemptyset(&handled)
    for stop in [SIGINT, SIGTERM, SIGHUP] {
        let previous = signal(stop) { signal in
            if stopSignal == 0 { stopSignal = signal }
            latestSignal = signal
            var byte: UInt8 = 1
            _ = write(interruptWriter, &byte, 1)
            _ = write(promptInterruptWriter, &byte, 1)
        }
        if previous.map({ unsafeBitCast($0, to: Int.self) }) == unsafeBitCast(SIG_IGN, to: Int.self) {
            signal(stop, SIG_IGN)
        } else {
            sigaddset(&handled, stop)
        }
    }
    pthread_sigmask(SIG_UNBLOCK, &handled, nil) // a parent that blocked them would make capsule deaf
    return reader
}

/// Starts a session for the policy, runs one piece of code with its output on this terminal,
/// and returns the exit status (printing the reason when a limit or capsule ended the run).
func runCode(_ code: String, filename: String, argv: [String], wantResult: Bool, options: SessionOptions) -> Int32 {
    runInSession(options) { session, onEvent in
        session.execute(code, filename: filename, argv: argv, wantResult: wantResult, onEvent: onEvent)
    }
}

/// As `runCode`, for a script file's bytes: run as CPython runs a script, its `__file__` the
/// absolute path and its own modules beside it visible inside (ScriptFiles).
func runScript(_ source: [UInt8], script: String, argv: [String], options: SessionOptions) -> Int32 {
    let plan = ScriptFiles.plan(script: script)
    return runInSession(options, scriptFiles: plan.files, note: plan.note) { session, onEvent in
        session.execute(script: source, filename: plan.path, argv: argv, onEvent: onEvent)
    }
}

/// A session opened for the options, with ^C, SIGTERM and SIGHUP turned into interrupts of its
/// code; or the exit status of why not (said on stderr and in `--report` already).
enum OpenedSession {
    case opened(Session, Policy)
    case failed(Int32)
}

func openSession(_ options: SessionOptions, scriptFiles: [String] = [], note: String? = nil) -> OpenedSession {
    var policy: Policy
    do { policy = try PolicyLoader.load(options.policy) } catch {
        for problem in error.all { printError("capsule: bad policy: \(problem)") }
        return .failed(report(ExitStatus(code: ExitStatus.capsuleError, reason: "bad policy: \(error)"), to: options.report))
    }
    do { policy = try policy.adding(mounts: options.mounts, workingDirectory: OS.currentDirectory() ?? "/") } catch {
        printError("capsule: \(error.message)")
        return .failed(report(ExitStatus(code: ExitStatus.capsuleError, reason: error.message), to: options.report))
    }
    var extras = LaunchExtras(scriptFiles: scriptFiles)
    if let directory = options.outputDir {
        switch OutputDirectory.prepare(directory) {
        case .success(let path):
            extras.outputDirectory = path
            extras.outputMaxBytes = policy.limits.workspaceMB << 20
        case .failure(let problem):
            printError("capsule: \(problem.message)")
            return .failed(report(ExitStatus(code: ExitStatus.capsuleError, reason: problem.message), to: options.report))
        }
    }
    if let directory = options.displayDir, let problem = DisplayWriter.prepare(directory) {
        printError("capsule: \(problem)")
        return .failed(report(ExitStatus(code: ExitStatus.capsuleError, reason: problem), to: options.report))
    }
    let audit: SessionAudit?
    switch SessionAudit.opened(for: policy, path: options.audit) {
    case .success(let opened): audit = opened
    case .failure(let failure):
        printError("capsule: \(failure.message); nothing runs until it can be written")
        return .failed(report(ExitStatus(code: ExitStatus.capsuleError, reason: failure.message, kind: "audit-error"), to: options.report))
    }
    let session: Session
    do {
        let broker = Broker(policy: policy, audit: audit, approver: makeApprover(options.approver, seconds: options.approvalTimeout))
        session = try Session(policy: policy, location: try WorkerLocation.find(), broker: broker, audit: audit, extras: extras)
    } catch {
        printError("capsule: \(error)")
        let kind = if case SessionError.audit = error { "audit-error" } else { "capsule-error" }
        return .failed(report(ExitStatus(code: ExitStatus.capsuleError, reason: "\(error)", kind: kind), to: options.report))
    }
    for note in session.notes + (note.map { [$0] } ?? []) { printError("capsule: note: \(note)") }
    session.interruptDescriptor = installInterruptHandler()
    return .opened(session, policy)
}

/// Shows a session's events here: output on our stdout and stderr (filtered on a terminal, see
/// TerminalFilter), results, tracebacks and displays; answers input() from standard input.
final class EventPrinter {
    private let session: Session
    private var out = Output(fd: 1), err = Output(fd: 2)
    private var displays: DisplayWriter
    private var refusalNoted = false
    /// Bytes of the code's output shown here: streams, results and tracebacks (for `--report`).
    private(set) var stdoutBytes = 0, stderrBytes = 0

    init(session: Session, displayDir: String?) {
        self.session = session
        displays = DisplayWriter(directory: displayDir)
    }

    func handle(_ event: SessionEvent) -> String? {
        switch event {
        case .stream(.stdout, let text):
            stdoutBytes += text.utf8.count
            out.write(text)
        case .stream(.stderr, let text):
            stderrBytes += text.utf8.count
            err.write(text)
        case .streamData(.stdout, let bytes):
            stdoutBytes += bytes.count
            out.write(bytes)
        case .streamData(.stderr, let bytes):
            stderrBytes += bytes.count
            err.write(bytes)
        case .result(let bundle):
            if let text = bundle["text/plain"] {
                stdoutBytes += text.utf8.count + 1
                out.write(text + "\n")
            }
        case .error(let ename, let evalue, let traceback):
            stderrBytes += traceback.reduce(0) { $0 + $1.utf8.count }
            // Without a traceback (the worker could not format one) CPython's last line still says it.
            err.write(traceback.isEmpty ? (evalue.isEmpty ? ename : "\(ename): \(evalue)") + "\n" : traceback.joined())
        case .display(let bundle):
            displays.show(bundle, out: { self.out.write($0) }, err: { self.err.write($0) })
        case .inputRequest(let prompt, _):
            out.write(prompt)
            switch readInputLine(until: { self.session.deadline }, interrupt: session.interruptDescriptor) {
            case .line(let line): return line
            case .end: return nil
            case .interrupted:
                session.drainInterrupt() // KeyboardInterrupt inside input(), as in Python
                return nil
            }
        case .approvalRequest:
            break // the CLI's broker asks through its own approver (the terminal, --approver)
        case .inputRefused:
            // Piped data the code cannot have would otherwise vanish without a word; stdin is only
            // looked at, never read, and a terminal never counts.
            if !refusalNoted && OS.bytesWaiting(0) > 0 {
                refusalNoted = true
                printError("capsule: note: the code read standard input, which has data, but saw end of input: this policy does not grant the `input` capability (`[capabilities.input]`, from level restricted, as in --policy restricted)")
            }
        }
        return nil
    }

    /// Writes what a terminal filter still holds; the screen is ours again.
    func finish() {
        Screen.shared.release()
        out.finish()
        err.finish()
    }
}

/// The status a run ends with, its reason said on stderr.
func finalStatus(_ outcome: ExecutionOutcome, session: Session, policy: Policy) -> ExitStatus {
    // Code that ended interrupted after capsule got a stop signal ended because of it (the
    // KeyboardInterrupt may have come from an approval question that the signal ended).
    let status = ExitStatus(outcome, policy: policy, interruptSent: session.interruptSent || stopSignal != 0,
                            interruptSignal: stopSignal == 0 ? SIGINT : stopSignal)
    if let reason = status.reason { printError("capsule: \(reason)") }
    return status
}

/// The signal that came last (0 before any): SIGTERM and SIGHUP end `capsule repl`, ^C does not.
func lastStopSignal() -> Int32 { latestSignal }

/// Bytes the interrupt handler wrote while no code ran (^C at a prompt): read and forgotten, so
/// they do not interrupt the next execution.
func forgetInterrupts(_ descriptor: Int32?) {
    guard let descriptor else { return }
    var fds = [pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)]
    var bytes = [UInt8](repeating: 0, count: 64)
    while (try? OS.poll(&fds, timeoutMilliseconds: 0)) ?? 0 > 0, fds[0].revents != 0, read(descriptor, &bytes, bytes.count) > 0 {}
}

private func runInSession(_ options: SessionOptions, scriptFiles: [String] = [], note: String? = nil,
                          _ execute: (Session, (SessionEvent) -> String?) -> ExecutionOutcome) -> Int32 {
    let started = OS.now()
    let session: Session, policy: Policy
    switch openSession(options, scriptFiles: scriptFiles, note: note) {
    case .opened(let opened, let itsPolicy): (session, policy) = (opened, itsPolicy)
    case .failed(let code): return code
    }
    let printer = EventPrinter(session: session, displayDir: options.displayDir)
    let outcome = execute(session, printer.handle)
    printer.finish()
    // This process exits next and the sandbox tears itself down, unless what it reports as it
    // ends (its usage, the copy of /workspace/out) is wanted: then wait for that.
    let wantsEnding = options.report != nil || options.outputDir != nil
    session.shutdown(wait: wantsEnding)
    let outputDirectory = options.outputDir.map(OutputDirectory.absolute)
    if let outputDirectory { OutputDirectory.tell(session.ending, directory: outputDirectory) }
    let status = finalStatus(outcome, session: session, policy: policy)
    guard options.report != nil else { return status.code }
    let audit = AuditOptions(policy.audit, path: options.audit).flatMap { try? AuditLog.shared($0) }
    return report(status, to: options.report, facts: RunFacts(session: session, printer: printer, started: started,
                                                              outputDirectory: outputDirectory, audit: audit))
}

extension ExitStatus {
    /// What a report says until the run has ended.
    static let unfinished = ExitStatus(code: ExitStatus.capsuleError, reason: "capsule did not finish the run")
}

/// Writes `--report`'s JSON (exit_code, kind, reason) and returns the exit code. Called first with
/// a placeholder, so a run that ends any other way (a signal, a crash) leaves no stale report.
@discardableResult
func report(_ status: ExitStatus, to path: String?, facts: RunFacts? = nil) -> Int32 {
    guard let path else { return status.code }
    let json = JSONValue.object([
        ("exit_code", .number(Double(status.code))),
        ("kind", .string(status.kind)),
        ("reason", status.reason.map(JSONValue.string) ?? .null),
    ] + (facts?.members ?? []))
    switch openReport(path, creating: true) {
    case .success(let fd):
        defer { OS.close(fd) }
        try? OS.writeAll(fd, json.serialized() + [UInt8(ascii: "\n")])
        return status.code
    case .failure(let problem):
        printError("capsule: \(problem.message)")
        return ExitStatus.capsuleError
    }
}

/// The report file opened for writing (truncated when `creating`; only checked otherwise), or why
/// it cannot be: it must be a regular file named directly, never a link, a device or a pipe.
private func openReport(_ path: String, creating: Bool) -> Result<Int32, SourceError> {
    if path.isEmpty { return .failure(SourceError("--report needs a file name")) }
    if let target = OS.linkTarget(path) {
        // /dev/stdout, /dev/fd/1, /proc/self/fd/2: the code's own output could forge the report there.
        if target.hasPrefix("/proc/self/fd/") || path.hasPrefix("/dev/fd/") || path.hasPrefix("/proc/self/fd/") {
            return .failure(SourceError("the report cannot go to \(path), where the code's own output goes and could forge it; give a file name"))
        }
        return .failure(SourceError("the report \(path) is a symbolic link (to \(target)); capsule writes a report only to a regular file named directly, so give that path"))
    }
    if OS.fileExists(path) && !OS.isRegularFile(path) {
        return .failure(SourceError("the report \(path) is not a regular file"))
    }
    do {
        return .success(try OS.open(path, flags: O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK | (creating ? O_TRUNC : 0)))
    } catch {
        let directory = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        switch error.errno {
        case ENOENT:
            return .failure(SourceError("cannot write the report \(path): the directory \(directory.isEmpty ? "/" : directory) does not exist"))
        case ENOTDIR:
            return .failure(SourceError("cannot write the report \(path): a part of \(directory) is not a directory"))
        default:
            return .failure(SourceError("cannot write the report \(path): \(OS.errorText(error.errno))"))
        }
    }
}
