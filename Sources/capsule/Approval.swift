#if canImport(Glibc)
import Glibc
#endif
import CapsuleCapabilities
import CapsuleOS
import CapsulePolicy
import CapsuleProtocol

/// The approver of `capsule run`/`exec`: `--approver COMMAND` when given, else the terminal when
/// there is one, else nobody (the broker then denies, saying why). Either has `seconds` to decide.
func makeApprover(_ command: String?, seconds: Double) -> (any Approver)? {
    if let command {
        return CommandApprover(command: command.split(separator: " ").map(String.init), seconds: seconds)
    }
    return isatty(0) == 1 ? TerminalApprover(seconds: seconds) : nil
}

/// The request as one JSON line, for a program or a person.
func approvalLine(_ request: ApprovalRequest, policy: Policy) -> String {
    let json: JSONValue = ["capability": .string(request.capability), "method": .string(request.method),
                           "arguments": request.summary, "policy": .string(policy.origin)]
    return json.description
}

/// Runs COMMAND for each request: it reads the request as one JSON line on stdin and answers
/// `approve` or `deny [reason]` on stdout.
struct CommandApprover: Approver {
    let command: [String]
    let seconds: Double

    func decide(_ request: ApprovalRequest, policy: Policy) async -> ApprovalDecision {
        let line = approvalLine(request, policy: policy) + "\n"
        return await Blocking.run { run(line) }
    }

    private func run(_ line: String) -> ApprovalDecision {
        guard let program = command.first else { return .denied("--approver names no program") }
        guard let (input, theirInput) = try? OS.socketPair(), let (output, theirOutput) = try? OS.socketPair() else {
            return .denied("the approver could not be started: no sockets")
        }
        defer { OS.close(input); OS.close(output) }
        let pid: pid_t
        do {
            pid = try OS.spawn(program, arguments: Array(command.dropFirst()),
                               descriptors: [(0, theirInput), (1, theirOutput)], inheritEnvironment: true)
        } catch {
            OS.close(theirInput); OS.close(theirOutput)
            return .denied("the approver \(program) could not be started: \(OS.errorText(error.errno))")
        }
        OS.close(theirInput); OS.close(theirOutput)
        let deadline = OS.now() + UInt64(seconds * 1e9)
        _ = try? OS.sendAll(input, Array(line.utf8), deadline: deadline)
        shutdown(input, Int32(SHUT_WR))
        let answer = readAnswer(output, deadline: deadline)
        guard case .text(let text, _) = answer else {
            OS.kill(pid, SIGKILL)
            _ = try? OS.wait(pid, block: true)
            return .denied("the approver \(program) did not answer within \(seconds.secondsText)")
        }
        _ = try? OS.wait(pid, block: true)
        return Self.decision(text, program: program)
    }

    /// `approve` (or `yes`) approves; `deny REASON` denies with the reason; anything else denies.
    static func decision(_ answer: String, program: String) -> ApprovalDecision {
        let words = answer.split(maxSplits: 1, whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" })
        switch words.first?.lowercased() {
        case "approve", "approved", "yes", "allow": return .approved
        case "deny", "denied", "no":
            let reason = words.count > 1 ? String(words[1]).trimmingNewlines : "the approver \(program) said deny"
            return .denied(reason.isEmpty ? "the approver \(program) said deny" : reason)
        default:
            return .denied("the approver \(program) answered \"\(answer.trimmingNewlines.prefix(100))\", not approve or deny")
        }
    }
}

/// What `readAnswer` got: text (up to the end, or with `line` up to a newline; `ended` when the
/// end came first), nothing before the deadline, or an interrupt (^C) first.
private enum Answer {
    case text(String, ended: Bool)
    case timedOut, interrupted
    /// The terminal went away (its other end closed).
    case hungUp
}

/// What `fd` says before `deadline`: up to its end, or with `line` up to a newline (a byte at a
/// time, so nothing after it is taken from a terminal). At most `limit` bytes are kept. A byte
/// on `interrupt` ends the wait.
private func readAnswer(_ fd: Int32, deadline: UInt64, line: Bool = false, limit: Int = 4096,
                        interrupt: Int32 = -1) -> Answer {
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: line ? 1 : 4096)
    while OS.now() < deadline {
        var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: interrupt, events: Int16(POLLIN), revents: 0)]
        guard (try? OS.poll(&fds, timeoutMilliseconds: OS.pollMilliseconds(until: deadline))) ?? 0 > 0 else { continue }
        if fds[1].revents != 0 { return .interrupted }
        if line && fds[0].revents & Int16(POLLHUP) != 0 { return .hungUp } // a terminal gone (a program's answer may come with its end)
        let count = buffer.withUnsafeMutableBytes { raw in (try? OS.read(fd, into: raw)) ?? 0 }
        if count == 0 { return .text(String(decoding: bytes, as: UTF8.self), ended: true) }
        if line && buffer[0] == UInt8(ascii: "\n") { return .text(String(decoding: bytes, as: UTF8.self).trimmingNewlines, ended: false) }
        bytes += buffer[0..<min(count, max(0, limit - bytes.count))]
        if !line && bytes.count >= limit { return .text(String(decoding: bytes, as: UTF8.self), ended: false) }
    }
    return .timedOut
}

/// Asks the person at the terminal (`/dev/tty`), y or n. One question at a time, however many
/// threads call; while it waits, the code's output to the terminal is held (see `Screen`), so
/// nothing the code prints can scroll the question away or draw another after it.
struct TerminalApprover: Approver {
    let seconds: Double

    func decide(_ request: ApprovalRequest, policy: Policy) async -> ApprovalDecision {
        let question = request.capability == "input" && request.method == "ask"
            ? "capsule: the code asks: \(request.summary["question"]?.stringValue ?? "")".escapingControlCharacters + " [y/N] "
            : "capsule: allow \(request.capability).\(request.method) \(request.summary)? [y/N] ".escapingControlCharacters
        let seconds = seconds
        return await Blocking.run {
            let tty = Glibc.open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY)
            guard tty >= 0 else { return .denied("there is no terminal to ask") }
            defer { OS.close(tty) }
            return Screen.shared.hold { atLineStart in
                // Keys typed before the question was shown do not answer it; nor does an earlier ^C.
                tcflush(tty, TCIFLUSH)
                drainPromptInterrupts()
                // On a line of its own and in the terminal's own style: the code cannot leave it
                // concealed or coloured, nor put a fake question in front of it on the same line.
                try? OS.writeAll(tty, (atLineStart ? "" : "\n") + "\u{1B}[0m" + question)
                switch readAnswer(tty, deadline: OS.now() + UInt64(seconds * 1e9), line: true, limit: 256,
                                  interrupt: promptInterruptReader) {
                case .text(let answer, ended: false):
                    return ["y", "yes"].contains(answer.lowercased()) ? .approved : .denied("the person at the terminal said no")
                case .text:
                    try? OS.writeAll(tty, "\n")
                    return .denied("the terminal's input ended before anyone answered")
                case .timedOut:
                    try? OS.writeAll(tty, "\n")
                    return .denied("nobody answered within \(seconds.secondsText)")
                case .interrupted:
                    try? OS.writeAll(tty, "\n")
                    return .interrupted("interrupted (^C or a signal) before anyone answered")
                case .hungUp:
                    // The run ends as at SIGHUP, whichever of the two capsule noticed first.
                    noteHangUp()
                    return .interrupted("the terminal hung up before anyone answered")
                }
            }
        }
    }
}

/// The read end of a pipe the ^C handler writes a byte to (see `installInterruptHandler`), so a
/// waiting question ends at ^C; -1 while there is none.
nonisolated(unsafe) var promptInterruptReader: Int32 = -1

private func drainPromptInterrupts() {
    guard promptInterruptReader >= 0 else { return }
    var buffer = [UInt8](repeating: 0, count: 64)
    while buffer.withUnsafeMutableBytes({ raw in (try? OS.read(promptInterruptReader, into: raw)) ?? 0 }) > 0 {}
}

/// The terminal that the code's output and the approval questions share. A question holds it:
/// output meanwhile waits in memory (up to `heldLimit` bytes, then its writer waits) and follows
/// the answer. It also knows whether the output left the cursor at the start of a line.
final class Screen: @unchecked Sendable {
    static let shared = Screen()
    private static let heldLimit = 1 << 20
    private var mutex = pthread_mutex_t()
    private var released = pthread_cond_t()
    private var holding = false
    private var held: [(fd: Int32, text: String)] = []
    private var heldBytes = 0
    private var atLineStart = true

    private init() {
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&released, nil)
    }

    /// Writes the code's (filtered) output to the terminal `fd`, or keeps it while a question waits.
    func write(_ fd: Int32, _ text: String) {
        guard !text.isEmpty else { return }
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        while holding && heldBytes >= Self.heldLimit { pthread_cond_wait(&released, &mutex) }
        if holding {
            held.append((fd, text))
            heldBytes += text.utf8.count
            return
        }
        try? OS.writeAll(fd, text)
        atLineStart = text.utf8.last == UInt8(ascii: "\n")
    }

    /// At the run's end: writes what is held and holds nothing more. A question still waiting
    /// (its call was cancelled with the session) must not swallow the code's last output, such as
    /// the traceback of the KeyboardInterrupt that ^C at an earlier question raised.
    func release() {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        for (fd, text) in held { try? OS.writeAll(fd, text) }
        held = []
        heldBytes = 0
        holding = false
        pthread_cond_broadcast(&released)
    }

    /// Runs `ask` with the terminal to itself (one question at a time), then writes what was held.
    func hold<T>(_ ask: (_ atLineStart: Bool) -> T) -> T {
        pthread_mutex_lock(&mutex)
        while holding { pthread_cond_wait(&released, &mutex) }
        holding = true
        let start = atLineStart
        pthread_mutex_unlock(&mutex)
        let answer = ask(start)
        pthread_mutex_lock(&mutex)
        atLineStart = true // the answer's newline, echoed or ours
        for (fd, text) in held {
            try? OS.writeAll(fd, text)
            atLineStart = text.utf8.last == UInt8(ascii: "\n")
        }
        held = []
        heldBytes = 0
        holding = false
        pthread_cond_broadcast(&released)
        pthread_mutex_unlock(&mutex)
        return answer
    }
}

extension Double {
    /// `60 s`, `2.5 s`.
    var secondsText: String { self == rounded() && self < 1e9 ? "\(Int(self)) s" : "\(self) s" }
}

extension String {
    var trimmingNewlines: String {
        var text = Substring(self)
        while let last = text.last, last == "\n" || last == "\r" || last == " " { text.removeLast() }
        return String(text)
    }
}
