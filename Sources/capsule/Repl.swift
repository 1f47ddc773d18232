#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import CapsuleOS
import CapsulePolicy
import CapsuleProtocol
import CapsuleRuntime

struct Repl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "repl",
        abstract: "Python at a prompt, inside the sandbox: each statement runs in one session as it is entered.",
        discussion: """
            On a terminal: line editing (arrows, ^A ^E ^K ^U ^W, Tab indents), history (up and down, \
            kept in ~/.capsule_history), a `...` prompt while a statement is incomplete (a blank line \
            ends a block), ^C interrupts the running code (not the REPL) or clears the line, ^D or \
            exit() leaves. With standard input not a terminal, it reads statements from it as \
            `python3 -i` does and prints each result, so it can be scripted; a line at the left \
            margin after an indented block ends the block. The exit status is exit()'s, else 0.
            """)

    @OptionGroup var session: SessionOptions

    func run() throws {
        throw ExitCode(repl(session))
    }
}

/// The REPL: statements from `lines` into one session until the end of input or exit().
func repl(_ options: SessionOptions) -> Int32 {
    let session: Session, policy: Policy
    switch openSession(options) {
    case .opened(let opened, let itsPolicy): (session, policy) = (opened, itsPolicy)
    case .failed(let code): return code
    }
    let printer = EventPrinter(session: session, displayDir: options.displayDir)
    defer {
        // With --output-dir, the copy of /workspace/out is made as the sandbox ends: wait for it.
        session.shutdown(wait: options.outputDir != nil)
        if let directory = options.outputDir.map(OutputDirectory.absolute) {
            OutputDirectory.tell(session.ending, directory: directory)
        }
    }
    let interactive = isatty(0) == 1
    var lines: any LineSource = interactive ? LineEditor(history: History.load()) : PipedLines()
    if interactive {
        printError("Python \(session.pythonVersion) in capsule, policy \(policy.origin) (level \(policy.level.rawValue)). exit() or ^D leaves.")
    }
    var reader = StatementReader()
    while true {
        guard let statement = reader.next(from: &lines, session: session, onEvent: printer.handle) else {
            printer.finish()
            return report(ExitStatus(code: 0), to: options.report)
        }
        forgetInterrupts(session.interruptDescriptor)
        let outcome = session.execute(statement, filename: "<stdin>", wantResult: true, onEvent: printer.handle)
        printer.finish()
        let signal = lastStopSignal()
        switch outcome {
        case .finished(_, _?, _, _): // exit() or sys.exit() leaves, with its status
            return report(ExitStatus(outcome, policy: policy), to: options.report)
        case .finished where signal == SIGTERM || signal == SIGHUP:
            return report(finalStatus(outcome, session: session, policy: policy), to: options.report)
        case .finished:
            continue
        default:
            let status = finalStatus(outcome, session: session, policy: policy)
            guard session.isAlive else {
                printError("capsule: the session ended; what it held is gone")
                return report(status, to: options.report)
            }
        }
    }
}

/// Lines typed or piped in.
protocol LineSource {
    /// The next line without its newline; nil at the end of input. `.interrupt` when ^C cleared it.
    mutating func read(prompt: String, prefill: String) -> InputLine
}

/// Puts lines together into statements, asking the session whether they are whole yet.
struct StatementReader {
    /// A line read ahead (the first of the next statement), piped input only.
    private var carried: String?

    mutating func next(from lines: inout any LineSource, session: Session,
                       onEvent: (SessionEvent) -> String?) -> String? {
        var buffer: [String] = []
        let piped = lines is PipedLines
        while true {
            var line: String
            if let held = carried {
                line = held
                carried = nil
            } else {
                switch lines.read(prompt: buffer.isEmpty ? ">>> " : "... ", prefill: Self.indent(after: buffer.last)) {
                // Only the offered indentation left: a blank line, which ends a block.
                case .line(let text): line = text.allSatisfy(\.isWhitespace) ? "" : text
                case .interrupted:
                    printError("KeyboardInterrupt")
                    buffer = []
                    continue
                case .end:
                    return buffer.isEmpty ? nil : buffer.joined(separator: "\n") + "\n"
                }
            }
            if buffer.isEmpty && line.allSatisfy(\.isWhitespace) { continue }
            if piped, !buffer.isEmpty, Statements.startsAtMargin(line),
               session.completeness(of: buffer.joined(separator: "\n"), onEvent: onEvent)?.blankLineCompletes == true {
                // `python3 -i` would want a blank line here; a new statement at the margin ends the block.
                carried = line
                return buffer.joined(separator: "\n") + "\n"
            }
            buffer.append(line)
            let code = buffer.joined(separator: "\n")
            guard let answer = session.completeness(of: code, onEvent: onEvent) else { return code + "\n" }
            // Whole, or never going to be: run it (the execution reports a syntax error as Python does).
            if answer.status != .incomplete { return code + "\n" }
        }
    }

    /// The next line's indentation on a terminal: the last line's, one level deeper after a `:`.
    static func indent(after line: String?) -> String {
        guard let line else { return "" }
        let leading = String(line.prefix { $0 == " " || $0 == "\t" })
        guard !line.allSatisfy(\.isWhitespace) else { return "" }
        return line.trimmingTrailingWhitespace.hasSuffix(":") ? leading + "    " : leading
    }
}

private extension String {
    var trimmingTrailingWhitespace: Substring {
        var end = endIndex
        while end > startIndex, self[index(before: end)].isWhitespace { end = index(before: end) }
        return self[..<end]
    }
}

/// Lines from a pipe or file: no prompt, no editing.
struct PipedLines: LineSource {
    private var pending: [UInt8] = []
    private var ended = false

    mutating func read(prompt: String, prefill: String) -> InputLine {
        while true {
            if let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: pending[..<newline], as: UTF8.self)
                pending.removeSubrange(...newline)
                return .line(line.hasSuffix("\r") ? String(line.dropLast()) : line)
            }
            if ended {
                guard !pending.isEmpty else { return .end }
                defer { pending = [] }
                return .line(String(decoding: pending, as: UTF8.self))
            }
            var chunk = [UInt8](repeating: 0, count: 1 << 16)
            let count = Glibc.read(0, &chunk, chunk.count)
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { ended = true } else { pending += chunk[0..<count] }
        }
    }
}

/// The REPL's history: kept in memory and appended to ~/.capsule_history (the last 1000 lines are read back).
struct History {
    var lines: [String]
    let path: String?

    static func load() -> History {
        guard let home = OS.environment("HOME"), !home.isEmpty else { return History(lines: [], path: nil) }
        let path = home + "/.capsule_history"
        let bytes = (try? OS.readFile(path, limit: 4 << 20)) ?? []
        let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n").map(String.init)
        return History(lines: Array(lines.suffix(1000)), path: path)
    }

    mutating func add(_ line: String) {
        guard !line.allSatisfy(\.isWhitespace), line != lines.last else { return }
        lines.append(line)
        guard let path, let fd = try? OS.open(path, flags: O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW, mode: 0o600) else { return }
        try? OS.writeAll(fd, line + "\n")
        OS.close(fd)
    }
}

/// A line editor for a terminal: raw mode only while a line is being typed (the code's own
/// input() and output get the terminal as it was).
struct LineEditor: LineSource {
    var history: History

    mutating func read(prompt: String, prefill: String) -> InputLine {
        var saved = termios()
        guard tcgetattr(0, &saved) == 0 else { return PipedFallback.read(prompt: prompt) }
        var raw = saved
        raw.c_lflag &= ~tcflag_t(ICANON | ECHO | ISIG | IEXTEN)
        raw.c_iflag &= ~tcflag_t(IXON | ICRNL)
        withUnsafeMutableBytes(of: &raw.c_cc) { cc in
            cc[Int(VMIN)] = 1
            cc[Int(VTIME)] = 0
        }
        tcsetattr(0, TCSADRAIN, &raw)
        defer { tcsetattr(0, TCSADRAIN, &saved) }

        var line = Array(prefill.unicodeScalars)
        var cursor = line.count
        var recalled = history.lines.count
        var draft = line
        func redraw() {
            let text = String(String.UnicodeScalarView(line))
            var output = "\r" + prompt + text + "\u{1b}[K"
            if cursor < line.count { output += "\u{1b}[\(line.count - cursor)D" }
            try? OS.writeAll(1, output)
        }
        redraw()
        var pending: [UInt8] = []
        while true {
            var byte: UInt8 = 0
            let count = Glibc.read(0, &byte, 1)
            if count < 0 && errno == EINTR { continue }
            if count <= 0 {
                try? OS.writeAll(1, "\r\n")
                return .end
            }
            switch byte {
            case 13, 10: // Enter
                try? OS.writeAll(1, "\r\n")
                let text = String(String.UnicodeScalarView(line))
                history.add(text)
                return .line(text)
            case 3: // ^C
                try? OS.writeAll(1, "^C\r\n")
                return .interrupted
            case 4: // ^D: the end on an empty line, else delete under the cursor
                if line.isEmpty {
                    try? OS.writeAll(1, "\r\n")
                    return .end
                }
                if cursor < line.count { line.remove(at: cursor) }
            case 127, 8: // Backspace
                if cursor > 0 {
                    cursor -= 1
                    line.remove(at: cursor)
                }
            case 1: cursor = 0 // ^A
            case 5: cursor = line.count // ^E
            case 2: cursor = max(0, cursor - 1) // ^B
            case 6: cursor = min(line.count, cursor + 1) // ^F
            case 11: line.removeSubrange(cursor...) // ^K
            case 21: // ^U
                line.removeSubrange(..<cursor)
                cursor = 0
            case 23: // ^W: the word before the cursor
                var start = cursor
                while start > 0 && line[start - 1] == " " { start -= 1 }
                while start > 0 && line[start - 1] != " " { start -= 1 }
                line.removeSubrange(start..<cursor)
                cursor = start
            case 12: try? OS.writeAll(1, "\u{1b}[H\u{1b}[2J") // ^L
            case 9: // Tab indents
                line.insert(contentsOf: "    ".unicodeScalars, at: cursor)
                cursor += 4
            case 27: // an escape sequence: arrows, Home, End, Delete
                var first: UInt8 = 0, second: UInt8 = 0
                guard Glibc.read(0, &first, 1) == 1, Glibc.read(0, &second, 1) == 1 else { break }
                switch (first, second) {
                case (91, 65), (79, 65): // up
                    if recalled > 0 {
                        if recalled == history.lines.count { draft = line }
                        recalled -= 1
                        line = Array(history.lines[recalled].unicodeScalars)
                        cursor = line.count
                    }
                case (91, 66), (79, 66): // down
                    if recalled < history.lines.count {
                        recalled += 1
                        line = recalled == history.lines.count ? draft : Array(history.lines[recalled].unicodeScalars)
                        cursor = line.count
                    }
                case (91, 67), (79, 67): cursor = min(line.count, cursor + 1)
                case (91, 68), (79, 68): cursor = max(0, cursor - 1)
                case (91, 72), (79, 72): cursor = 0
                case (91, 70), (79, 70): cursor = line.count
                case (91, 51): // Delete: ESC [ 3 ~
                    var tilde: UInt8 = 0
                    _ = Glibc.read(0, &tilde, 1)
                    if cursor < line.count { line.remove(at: cursor) }
                default: break
                }
            default:
                guard byte >= 32 else { break }
                // UTF-8: gather a character's bytes, then insert it.
                pending.append(byte)
                let needed = byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc0 ? 2 : 1
                while pending.count < needed {
                    var next: UInt8 = 0
                    guard Glibc.read(0, &next, 1) == 1 else { break }
                    pending.append(next)
                }
                let scalars = Array(String(decoding: pending, as: UTF8.self).unicodeScalars)
                pending = []
                line.insert(contentsOf: scalars, at: cursor)
                cursor += scalars.count
            }
            redraw()
        }
    }
}

/// Standard input is a terminal that will not go raw: its own line discipline edits.
private enum PipedFallback {
    static func read(prompt: String) -> InputLine {
        try? OS.writeAll(1, prompt)
        var source = PipedLines()
        return source.read(prompt: prompt, prefill: "")
    }
}
