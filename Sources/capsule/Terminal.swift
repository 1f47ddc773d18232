#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import CapsuleOS
import CapsulePolicy
import CapsuleProtocol
import CapsuleRuntime
import CapsuleSandbox

/// Options every command that runs code shares.
struct SessionOptions: ParsableArguments {
    @Option(help: "A policy level (sandbox, restricted, standard, trusted, unrestricted) or a policy file.")
    var policy: String = "sandbox"

    @Option(help: ArgumentHelp("Write the outcome as JSON to this file.",
                               discussion: "Unlike the reason line on stderr, the code's own output cannot forge it."))
    var report: String?
}

func printError(_ text: String) {
    try? OS.writeAll(2, text + "\n")
}

/// The script's bytes (the worker decodes them as CPython decodes a script), or why it cannot be run.
func readSource(_ path: String) -> Result<[UInt8], SourceError> {
    // A FIFO or a device could block or never end before any timeout applies.
    if OS.fileExists(path) && !OS.isRegularFile(path) { return .failure(SourceError("\(path) is not a regular file")) }
    do {
        return .success(try OS.readFile(path, limit: 64 << 20))
    } catch {
        return .failure(SourceError("cannot read \(path): \(OS.errorText(error.errno))"))
    }
}

struct SourceError: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

/// One of our output streams: filtered when it is a terminal, passed through otherwise (a pipe or
/// file gets exactly what the code wrote).
private struct Output {
    let fd: Int32
    var filter: TerminalFilter?

    init(fd: Int32) {
        self.fd = fd
        filter = isatty(fd) == 1 ? TerminalFilter() : nil
    }

    mutating func write(_ text: String) {
        try? OS.writeAll(fd, filter?.filter(text) ?? text)
    }

    mutating func write(_ bytes: [UInt8]) {
        if let text = filter?.filter(bytes: bytes) { try? OS.writeAll(fd, text) } else { try? OS.writeAll(fd, bytes) }
    }

    mutating func finish() {
        if let rest = filter?.flush(), !rest.isEmpty { try? OS.writeAll(fd, rest) }
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

/// The write end of the self-pipe that turns ^C into an interrupt of the running code.
nonisolated(unsafe) private var interruptWriter: Int32 = -1

private func installInterruptHandler() -> Int32? {
    guard let (reader, writer) = try? OS.socketPair() else { return nil }
    try? OS.setNonBlocking(writer)
    interruptWriter = writer
    signal(SIGINT) { _ in
        var byte: UInt8 = 1
        _ = write(interruptWriter, &byte, 1)
    }
    // Asked to stop: interrupt twice, which kills the code at once and still reports the outcome.
    for stop in [SIGTERM, SIGHUP] {
        signal(stop) { _ in
            var bytes: [UInt8] = [1, 1]
            _ = write(interruptWriter, &bytes, 2)
        }
    }
    return reader
}

/// Starts a session for the policy, runs one piece of code with its output on this terminal,
/// and returns the exit status (printing the reason when a limit or capsule ended the run).
func runCode(_ code: String, filename: String, argv: [String], wantResult: Bool, options: SessionOptions) -> Int32 {
    runInSession(options) { session, onEvent in
        session.execute(code, filename: filename, argv: argv, wantResult: wantResult, onEvent: onEvent)
    }
}

/// As `runCode`, for a script file's bytes.
func runScript(_ source: [UInt8], filename: String, argv: [String], options: SessionOptions) -> Int32 {
    runInSession(options) { session, onEvent in
        session.execute(script: source, filename: filename, argv: argv, onEvent: onEvent)
    }
}

private func runInSession(_ options: SessionOptions,
                          _ execute: (Session, (SessionEvent) -> String?) -> ExecutionOutcome) -> Int32 {
    let policy: Policy
    do { policy = try PolicyLoader.load(options.policy) } catch {
        for problem in error.all { printError("capsule: bad policy: \(problem)") }
        return report(ExitStatus(code: ExitStatus.capsuleError, reason: "bad policy: \(error)"), to: options.report)
    }
    let session: Session
    do {
        session = try Session(policy: policy, location: try WorkerLocation.find())
    } catch {
        printError("capsule: \(error)")
        return report(ExitStatus(code: ExitStatus.capsuleError, reason: "\(error)"), to: options.report)
    }
    for note in session.notes { printError("capsule: note: \(note)") }
    session.interruptDescriptor = installInterruptHandler()

    // On a terminal the code's output cannot drive the terminal (see TerminalFilter).
    var out = Output(fd: 1), err = Output(fd: 2)
    let outcome = execute(session) { event in
        switch event {
        case .stream(.stdout, let text):
            out.write(text)
        case .stream(.stderr, let text):
            err.write(text)
        case .streamData(.stdout, let bytes):
            out.write(bytes)
        case .streamData(.stderr, let bytes):
            err.write(bytes)
        case .result(let bundle):
            if let text = bundle["text/plain"] { out.write(text + "\n") }
        case .error(_, _, let traceback):
            err.write(traceback.joined())
        case .inputRequest(let prompt, _):
            out.write(prompt)
            switch readInputLine(until: { session.deadline }, interrupt: session.interruptDescriptor) {
            case .line(let line): return line
            case .end: return nil
            case .interrupted:
                session.drainInterrupt() // KeyboardInterrupt inside input(), as in Python
                return nil
            }
        }
        return nil
    }
    out.finish()
    err.finish()
    session.shutdown(wait: false) // this process exits next; the sandbox tears itself down
    let status = ExitStatus(outcome, policy: policy, interruptSent: session.interruptSent)
    if let reason = status.reason { printError("capsule: \(reason)") }
    return report(status, to: options.report)
}

extension ExitStatus {
    /// What a report says until the run has ended.
    static let unfinished = ExitStatus(code: ExitStatus.capsuleError, reason: "capsule did not finish the run")
}

/// Writes `--report`'s JSON (exit_code, kind, reason) and returns the exit code. Called first with
/// a placeholder, so a run that ends any other way (a signal, a crash) leaves no stale report.
@discardableResult
func report(_ status: ExitStatus, to path: String?) -> Int32 {
    guard let path else { return status.code }
    if OS.fileExists(path) && !OS.isRegularFile(path) {
        printError("capsule: the report \(path) is not a regular file")
        return ExitStatus.capsuleError
    }
    let json: JSONValue = [
        "exit_code": .number(Double(status.code)),
        "kind": .string(status.kind),
        "reason": status.reason.map(JSONValue.string) ?? .null,
    ]
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0o644)
    guard fd >= 0 else {
        printError("capsule: cannot write the report \(path): \(OS.errorText(errno))")
        return ExitStatus.capsuleError
    }
    defer { close(fd) }
    try? OS.writeAll(fd, json.serialized() + [UInt8(ascii: "\n")])
    return status.code
}
