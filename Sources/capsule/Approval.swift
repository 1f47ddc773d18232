#if canImport(Glibc)
import Glibc
#endif
import CapsuleCapabilities
import CapsuleOS
import CapsulePolicy
import CapsuleProtocol

/// How long a person or an approver program has to decide; no answer denies.
let approvalSeconds = 60.0

/// The approver of `capsule run`/`exec`: `--approver COMMAND` when given, else the terminal when
/// there is one, else nobody (the broker then denies, saying why).
func makeApprover(_ command: String?) -> (any Approver)? {
    if let command {
        return CommandApprover(command: command.split(separator: " ").map(String.init))
    }
    return isatty(0) == 1 ? TerminalApprover() : nil
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
        _ = try? OS.sendAll(input, Array(line.utf8), deadline: OS.now() + UInt64(approvalSeconds * 1e9))
        shutdown(input, Int32(SHUT_WR))
        let answer = readAnswer(output, deadline: OS.now() + UInt64(approvalSeconds * 1e9))
        if answer == nil { OS.kill(pid, SIGKILL) }
        _ = try? OS.wait(pid, block: true)
        guard let answer else { return .denied("the approver \(program) did not answer within \(Int(approvalSeconds)) s") }
        return Self.decision(answer, program: program)
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

/// What `fd` says before `deadline`, or nil at the deadline: up to its end, or with `line` up to
/// a newline (a byte at a time, so nothing after it is taken from a terminal). At most `limit`
/// bytes are kept.
private func readAnswer(_ fd: Int32, deadline: UInt64, line: Bool = false, limit: Int = 4096) -> String? {
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: line ? 1 : 4096)
    while OS.now() < deadline {
        var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0)]
        guard (try? OS.poll(&fds, timeoutMilliseconds: OS.pollMilliseconds(until: deadline))) ?? 0 > 0 else { continue }
        let count = buffer.withUnsafeMutableBytes { raw in (try? OS.read(fd, into: raw)) ?? 0 }
        if count == 0 { return String(decoding: bytes, as: UTF8.self) }
        if line && buffer[0] == UInt8(ascii: "\n") { return String(decoding: bytes, as: UTF8.self).trimmingNewlines }
        bytes += buffer[0..<min(count, max(0, limit - bytes.count))]
        if !line && bytes.count >= limit { return String(decoding: bytes, as: UTF8.self) }
    }
    return nil
}

/// Asks the person at the terminal (`/dev/tty`), y or n.
struct TerminalApprover: Approver {
    func decide(_ request: ApprovalRequest, policy: Policy) async -> ApprovalDecision {
        let question = request.capability == "input" && request.method == "ask"
            ? "capsule: the code asks: \(request.summary["question"]?.stringValue ?? "")".escapingControlCharacters + " [y/N] "
            : "capsule: allow \(request.capability).\(request.method) \(request.summary)? [y/N] ".escapingControlCharacters
        return await Blocking.run {
            let tty = Glibc.open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY)
            guard tty >= 0 else { return .denied("there is no terminal to ask") }
            defer { OS.close(tty) }
            try? OS.writeAll(tty, question)
            guard let answer = readAnswer(tty, deadline: OS.now() + UInt64(approvalSeconds * 1e9), line: true, limit: 256) else {
                try? OS.writeAll(tty, "\n")
                return .denied("nobody answered within \(Int(approvalSeconds)) s")
            }
            return ["y", "yes"].contains(answer.lowercased()) ? .approved : .denied("the person at the terminal said no")
        }
    }
}

extension String {
    var trimmingNewlines: String {
        var text = Substring(self)
        while let last = text.last, last == "\n" || last == "\r" || last == " " { text.removeLast() }
        return String(text)
    }
}
