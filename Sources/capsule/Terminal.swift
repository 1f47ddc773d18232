#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import CapsuleOS
import CapsulePolicy
import CapsuleRuntime
import CapsuleSandbox

/// Options every command that runs code shares.
struct SessionOptions: ParsableArguments {
    @Option(help: "A policy level (sandbox, restricted, standard, trusted, unrestricted) or a policy file.")
    var policy: String = "sandbox"
}

func printError(_ text: String) {
    try? OS.writeAll(2, text + "\n")
}

func readSource(_ path: String) throws -> String {
    // A FIFO or a device could block or never end before any timeout applies.
    if OS.fileExists(path) && !OS.isRegularFile(path) {
        printError("capsule: \(path) is not a regular file")
        throw ExitCode(ExitStatus.capsuleError)
    }
    do {
        let bytes = try OS.readFile(path, limit: 64 << 20)
        guard let text = String(validating: bytes, as: UTF8.self) else {
            printError("capsule: \(path) is not UTF-8 text")
            throw ExitCode(ExitStatus.capsuleError)
        }
        return text
    } catch let error as SystemError {
        printError("capsule: cannot read \(path): \(OS.errorText(error.errno))")
        throw ExitCode(ExitStatus.capsuleError)
    }
}

/// A line from standard input, unbuffered, waiting no longer than `deadline`; nil at end of input
/// or when time is up (the session then stops the code at its timeout).
private func readInputLine(until deadline: UInt64?) -> String? {
    var bytes: [UInt8] = []
    while true {
        if let deadline {
            let now = OS.now()
            if now >= deadline { return nil }
            var fds = [pollfd(fd: 0, events: Int16(POLLIN), revents: 0)]
            let ready = (try? OS.poll(&fds, timeoutMilliseconds: Int32(min((deadline - now) / 1_000_000 + 1, 60_000)))) ?? 0
            if ready == 0 { continue }
        }
        var byte: UInt8 = 0
        let count = read(0, &byte, 1)
        if count < 0 && errno == EINTR { continue }
        if count <= 0 { return bytes.isEmpty ? nil : String(decoding: bytes, as: UTF8.self) }
        if byte == UInt8(ascii: "\n") { return String(decoding: bytes, as: UTF8.self) }
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
    return reader
}

/// Starts a session for the policy, runs one piece of code with its output on this terminal,
/// and returns the exit status (printing the reason when a limit or capsule ended the run).
func runCode(_ code: String, filename: String, argv: [String], wantResult: Bool, options: SessionOptions) -> Int32 {
    let policy: Policy
    do { policy = try PolicyLoader.load(options.policy) } catch {
        for problem in error.all { printError("capsule: bad policy: \(problem)") }
        return ExitStatus.capsuleError
    }
    let session: Session
    do {
        session = try Session(policy: policy, location: try WorkerLocation.find())
    } catch {
        printError("capsule: \(error)")
        return ExitStatus.capsuleError
    }
    for note in session.notes { printError("capsule: note: \(note)") }
    session.interruptDescriptor = installInterruptHandler()

    let outcome = session.execute(code, filename: filename, argv: argv, wantResult: wantResult) { event in
        switch event {
        case .stream(.stdout, let text):
            try? OS.writeAll(1, text)
        case .stream(.stderr, let text):
            try? OS.writeAll(2, text)
        case .result(let bundle):
            if let text = bundle["text/plain"] { try? OS.writeAll(1, text + "\n") }
        case .error(_, _, let traceback):
            try? OS.writeAll(2, traceback.joined())
        case .inputRequest(let prompt, _):
            try? OS.writeAll(1, prompt)
            return readInputLine(until: session.deadline)
        }
        return nil
    }
    session.shutdown(wait: false) // this process exits next; the sandbox tears itself down
    let status = ExitStatus(outcome, policy: policy)
    if let reason = status.reason { printError("capsule: \(reason)") }
    return status.code
}
