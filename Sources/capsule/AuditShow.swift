#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import CapsuleAudit
import CapsuleCapabilities
import CapsuleOS
import CapsuleProtocol
import CapsuleRuntime

/// The filters `audit show` and `tail` share.
struct AuditFilterOptions: ParsableArguments {
    @Option(name: .customLong("session"), help: "Only this session (its id, or the first characters the table shows); repeat for more.")
    var sessions: [String] = []

    @Option(name: .customLong("kind"), help: "Only this event kind (cap.denied) or family (cap, exec, session); repeat for more.")
    var kinds: [String] = []

    @Option(name: .customLong("capability"), help: "Only calls of this capability (file) or method (file.read_bytes); repeat for more.")
    var capabilities: [String] = []

    @Flag(help: "Only denied calls and approvals.")
    var denied = false

    @Option(help: "Only events since this time: RFC 3339 (2026-12-01T13:00:00Z), a date, or back from now (30s, 10m, 2h, 1d).")
    var since: String?

    func validate() throws {
        if let problem = AuditFilter.kindProblem(kinds) { throw ValidationError(problem) }
        if let since, AuditTime.since(since, now: 0) == nil {
            throw ValidationError("`--since \(since.escapingControlCharacters)` is neither a time nor a span: give RFC 3339 "
                + "with its zone (2026-12-01T13:00:00Z, 2026-12-01T14:00:00+01:00), a date (2026-12-01), or 30s, 10m, 2h, 1d")
        }
    }

    var filter: AuditFilter {
        var filter = AuditFilter()
        filter.sessions = sessions
        filter.kinds = kinds
        filter.capabilities = capabilities
        filter.deniedOnly = denied
        filter.since = since.flatMap { AuditTime.since($0, now: AuditTime.now) }
        return filter
    }
}

extension AuditCommand {
    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "show",
            abstract: "Print the events of audit logs (with their rotated archives) as a table, or as JSONL with --json.",
            discussion: "Filters combine: an event is shown when it matches every option given. Exit status 0, "
                + "125 when a file cannot be read or is not an audit log.")

        @OptionGroup var filters: AuditFilterOptions

        @Flag(help: "Print the matching lines as they are in the log (JSONL, for jq).")
        var json = false

        @Argument(help: "Audit log files.", completion: .file())
        var files: [String] = []

        func validate() throws {
            if files.isEmpty { throw ValidationError("name an audit log, like `capsule audit show audit.jsonl`") }
        }

        func run() throws {
            var out = AuditOutput(json: json)
            let filter = filters.filter
            for line in try readLog(files) {
                guard let event = line.event else { printError("capsule: \(AuditLogFiles.note(line))"); continue }
                if filter.matches(event) { try out.add(line, event) }
            }
            try out.flush()
        }
    }

    struct Tail: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "tail",
            abstract: "Print the last events of an audit log; with -f, keep printing new ones as they are written.",
            discussion: "-f follows the log across rotation (when the file is moved to FILE.N, the new FILE) "
                + "and ends at ^C or SIGTERM with status 0.")

        @OptionGroup var filters: AuditFilterOptions

        @Flag(name: .shortAndLong, help: "Keep reading the log as it grows.")
        var follow = false

        @Option(name: .short, help: "How many of the last matching events to print first.")
        var n = 10

        @Flag(help: "Print lines as they are in the log (JSONL).")
        var json = false

        @Argument(help: "An audit log file.", completion: .file())
        var file: String

        func validate() throws {
            if n < 0 { throw ValidationError("`-n \(n)`: give how many events to print, 0 or more") }
        }

        func run() throws {
            let filter = filters.filter
            installStopHandler()
            var out = AuditOutput(json: json)
            let follower: AuditFollower
            let archives: [AuditLine]
            do throws(AuditFailure) {
                // The live file is opened first, so no line lands between reading it and following it.
                follower = try AuditFollower(file)
                archives = try AuditLogFiles.lines(Array(AuditReader.chainFiles(file).dropLast()))
            } catch {
                printError("capsule: \(error)")
                throw ExitCode(ExitStatus.capsuleError)
            }
            let current = try readLines { () throws(AuditFailure) in
                let lines = try follower.next()
                try AuditLogFiles.check(lines, file: file)
                return lines
            }
            var recent: [(AuditLine, JSONValue)] = []
            for line in archives + current {
                guard let event = line.event else { printError("capsule: \(AuditLogFiles.note(line))"); continue }
                if filter.matches(event) { recent.append((line, event)) }
            }
            for (line, event) in recent.suffix(n) { try out.add(line, event) }
            try out.flush()
            while follow && stopRequested == 0 {
                var none: [pollfd] = []
                _ = try? OS.poll(&none, timeoutMilliseconds: 200)
                for line in try readLines({ () throws(AuditFailure) in try follower.next() }) {
                    guard let event = line.event else { printError("capsule: \(AuditLogFiles.note(line))"); continue }
                    if filter.matches(event) { try out.add(line, event) }
                }
                try out.flush()
            }
        }
    }

    struct Stats: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "stats",
            abstract: "Count the calls and denials of audit logs per capability, method and session, and the targets denied most.")

        @Flag(help: "Print the counts as one JSON object.")
        var json = false

        @Argument(help: "Audit log files.", completion: .file())
        var files: [String] = []

        func validate() throws {
            if files.isEmpty { throw ValidationError("name an audit log, like `capsule audit stats audit.jsonl`") }
        }

        func run() throws {
            var stats = AuditStats()
            for line in try readLog(files) {
                guard let event = line.event else { printError("capsule: \(AuditLogFiles.note(line))"); continue }
                stats.add(event)
            }
            var out = AuditOutput(json: json)
            if json {
                out.add(stats.json.serialized() + [UInt8(ascii: "\n")])
            } else {
                out.add(Array(stats.text.utf8))
            }
            try out.flush()
        }
    }
}

/// The lines of the logs, or the sentence saying why not and status 125.
private func readLog(_ files: [String]) throws -> [AuditLine] {
    try readLines { () throws(AuditFailure) in try AuditLogFiles.lines(files) }
}

private func readLines(_ body: () throws(AuditFailure) -> [AuditLine]) throws -> [AuditLine] {
    do throws(AuditFailure) { return try body() } catch {
        printError("capsule: \(error)")
        throw ExitCode(ExitStatus.capsuleError)
    }
}

/// Standard output, written in large pieces (a table of a big log) and at each flush (`tail -f`).
private struct AuditOutput {
    let json: Bool
    let terminal = isatty(1) == 1
    private var buffer: [UInt8] = []
    private var headerDone = false

    init(json: Bool) { self.json = json }

    mutating func add(_ line: AuditLine, _ event: JSONValue) throws {
        if json {
            add(AuditJSON.line(line.bytes, forTerminal: terminal))
        } else {
            if !headerDone { add(Array((AuditTable.header + "\n").utf8)) }
            headerDone = true
            add(Array((AuditTable.row(event) + "\n").utf8))
        }
        if buffer.count >= 1 << 16 { try flush() }
    }

    mutating func add(_ bytes: [UInt8]) { buffer += bytes }

    mutating func flush() throws {
        defer { buffer = [] }
        do { try OS.writeAll(1, buffer) } catch {
            printError("capsule: cannot write to standard output: \(OS.errorText(error.errno))")
            throw ExitCode(ExitStatus.capsuleError)
        }
    }
}

/// Set by SIGINT, SIGTERM or SIGHUP: `tail -f` ends after its current read.
nonisolated(unsafe) private var stopRequested: Int32 = 0

private func installStopHandler() {
    var handled = sigset_t()
    sigemptyset(&handled)
    for stop in [SIGINT, SIGTERM, SIGHUP] {
        signal(stop) { _ in stopRequested = 1 }
        sigaddset(&handled, stop)
    }
    pthread_sigmask(SIG_UNBLOCK, &handled, nil) // a parent that blocked them would make tail -f deaf
}
