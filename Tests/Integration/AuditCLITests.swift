// `capsule audit show|tail|stats` on logs that real `capsule run`s wrote, and every line of such a
// log held against docs/audit-event.schema.json.
#if canImport(Glibc)
import Glibc
#endif
import Testing
import CapsuleOS
import CapsuleProtocol

/// Two sessions' log: one that reads a file, is denied one, fails on a file whose name holds
/// terminal escapes, reads an env variable and runs into its timeout; then one that only prints.
final class AuditFixture: Sendable {
    let tree: String
    let log: String
    let first: CLIRun
    let second: CLIRun

    static let shared = Result { try AuditFixture() }

    init() throws {
        tree = try Host.temporaryDirectory()
        mkdir("\(tree)/in", 0o755)
        try Host.writeFile("\(tree)/in/hello.txt", "hello\n")
        try Host.writeFile("\(tree)/secret.txt", "secret\n")
        log = "\(tree)/audit.jsonl"
        try Host.writeFile("\(tree)/policy.toml", """
            level = "standard"
            [limits]
            timeout_s = 2
            [capabilities.file]
            read = ["\(tree)/in"]
            [capabilities.env]
            names = ["CAPSULE_AUDIT_TEST"]
            """)
        try Host.writeFile("\(tree)/job.py", """
            from capsule import file, env, CapabilityDenied
            print(file.read_text("\(tree)/in/hello.txt"), end="")
            print("env", env.get("CAPSULE_AUDIT_TEST"))
            try:
                file.read_text("\(tree)/secret.txt")
            except CapabilityDenied as e:
                print("denied")
            try:
                file.read_text("\(tree)/in/\\x1b[31mred\\x07.txt")
            except Exception as e:
                print("failed", type(e).__name__)
            while True:
                pass
            """)
        try Host.writeFile("\(tree)/second.py", "print('second')\n")
        first = try CLI.run(["run", "--policy", "\(tree)/policy.toml", "--audit", log, "\(tree)/job.py"])
        second = try CLI.run(["run", "--policy", "\(tree)/policy.toml", "--audit", log, "\(tree)/second.py"])
    }

    /// The log's lines (without their newlines) and events.
    func lines() throws -> [(text: String, event: JSONValue)] {
        try Host.readFile(log).split(separator: "\n").map { (String($0), try JSONValue.parse(Array($0.utf8))) }
    }

    static func get() throws -> AuditFixture { try shared.get() }
}

@Suite("capsule audit") struct AuditCLITests {
    @Test func everyLineOfARealLogMatchesTheSchema() throws {
        let fixture = try AuditFixture.get()
        #expect(fixture.first.status == 124 && fixture.first.stdout == "hello\nenv None\ndenied\nfailed FileNotFoundError\n",
                "\(fixture.first)")
        #expect(fixture.second.status == 0, "\(fixture.second)")
        let schema = JSONSchema(root: try JSONValue.parse(Array(try Host.readFile("\(Host.repository)/docs/audit-event.schema.json").utf8)))
        let lines = try fixture.lines()
        for (number, line) in lines.enumerated() {
            let problems = try schema.problems(line.event)
            #expect(problems.isEmpty, "line \(number + 1) \(line.text): \(problems)")
        }
        let kinds = lines.compactMap { $0.event["kind"]?.stringValue }
        // session.end's place is left out: at a timeout it is written before limit.hit and exec.end
        // (the session ends while the execution is still being wound up; reported to the writer's owner).
        #expect(kinds.filter { $0 != "session.end" } == ["audit.start", "policy.loaded", "session.start", "exec.start", "cap.call",
                                                         "cap.call", "cap.denied", "cap.call", "limit.hit", "exec.end",
                                                         "policy.loaded", "session.start", "exec.start", "exec.end"], "\(kinds)")
        #expect(kinds.filter { $0 == "session.end" }.count == 2 && kinds.last == "session.end", "\(kinds)")
        #expect(Set(kinds) == Set(AuditEventKinds.all.filter { !["audit.rotated", "approval", "sandbox.error"].contains($0) }))

        // The validator is no rubber stamp: a changed line fails it.
        let session = try #require(lines.first { $0.event["kind"]?.stringValue == "cap.denied" }).event
        var members = try #require(session.objectValue)
        members.append(("surprise", true))
        #expect(try schema.problems(.object(members)) == ["/surprise: no value is allowed here"])
        #expect(try schema.problems(.object(members.filter { $0.0 != "prev" && $0.0 != "surprise" })) == [": `prev` is missing"])
        #expect(try !schema.problems(.object(members.map { $0.0 == "decision" ? ($0.0, JSONValue.string("allowed")) : $0 })).isEmpty)
        #expect(try !schema.problems(.object(members.map { $0.0 == "ts" ? ($0.0, JSONValue.string("2026-12-01 13:05:00Z")) : $0 })).isEmpty)
    }

    @Test func showFiltersSelectExactlyTheMatchingEventsAsTheyAreLogged() throws {
        let fixture = try AuditFixture.get()
        let lines = try fixture.lines()
        let sessions = lines.compactMap { $0.event["session"]?.stringValue }.reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        try #require(sessions.count == 2, "\(sessions)")
        let middle = try #require(lines[lines.count / 2].event["ts"]?.stringValue)
        let cases: [([String], (JSONValue) -> Bool)] = [
            ([], { _ in true }),
            (["--denied"], { $0["decision"]?.stringValue == "denied" }),
            (["--kind", "cap"], { $0["kind"]?.stringValue?.hasPrefix("cap.") == true }),
            (["--kind", "exec.end", "--kind", "limit.hit"], { ["exec.end", "limit.hit"].contains($0["kind"]?.stringValue ?? "") }),
            (["--capability", "env"], { $0["capability"]?.stringValue == "env" }),
            (["--capability", "file.read_bytes", "--denied"], { $0["kind"]?.stringValue == "cap.denied" }),
            (["--session", String(sessions[1].prefix(8))], { $0["session"]?.stringValue == sessions[1] }),
            (["--session", sessions[0], "--kind", "exec"], {
                $0["session"]?.stringValue == sessions[0] && $0["kind"]?.stringValue?.hasPrefix("exec.") == true
            }),
            (["--since", middle], { ($0["ts"]?.stringValue ?? "") >= middle }),
            (["--since", "1d"], { _ in true }),
            (["--since", "2999-01-01"], { _ in false }),
        ]
        for (options, predicate) in cases {
            let run = try CLI.run(["audit", "show", "--json"] + options + [fixture.log])
            let expected = lines.filter { predicate($0.event) }.map { $0.text + "\n" }.joined()
            #expect(run.status == 0 && run.stderr.isEmpty, "\(options): \(run)")
            #expect(run.stdout == expected, "\(options): \(run)")
        }
        // --since as RFC 3339 with an offset: the same instant as the UTC form.
        let shifted = try #require(AuditTimeText.withOffset(middle))
        #expect(try CLI.run(["audit", "show", "--json", "--since", shifted, fixture.log]).stdout
                == CLI.run(["audit", "show", "--json", "--since", middle, fixture.log]).stdout)
    }

    @Test func theTableEscapesHostileTextAndFitsTheScreen() throws {
        let fixture = try AuditFixture.get()
        let run = try CLI.run(["audit", "show", fixture.log])
        #expect(run.status == 0 && run.stderr.isEmpty, "\(run)")
        #expect(!run.stdoutData.contains(0x1b) && !run.stdoutData.contains(0x07), "\(run)")
        let rows = run.stdout.split(separator: "\n")
        #expect(rows.count == (try fixture.lines()).count + 1, "\(run)")
        #expect(rows.first?.hasPrefix("TIME (UTC)     SESSION  KIND          CALL             TARGET") == true, "\(run)")
        #expect(rows.allSatisfy { $0.count <= 120 }, "\(run)")
        let failed = try #require(rows.first { $0.contains("red") }, "\(run)")
        #expect(failed.contains(#"/in/\u001B[31mred\u0007.txt"#) && failed.contains("cap.call") && failed.contains(" failed "), "\(failed)")
        let denied = try #require(rows.first { $0.contains("cap.denied") }, "\(run)")
        #expect(denied.contains("file.read_bytes") && denied.contains("/secret.txt") && denied.contains(" denied "), "\(denied)")
        let limit = try #require(rows.first { $0.contains("limit.hit") }, "\(run)")
        #expect(limit.contains("timeout_s = 2"), "\(limit)")
    }

    @Test func statsCountCallsDenialsSessionsAndDeniedTargets() throws {
        let fixture = try AuditFixture.get()
        let lines = try fixture.lines()
        let run = try CLI.run(["audit", "stats", "--json", fixture.log])
        #expect(run.status == 0, "\(run)")
        let stats = try JSONValue.parse(run.stdoutData)
        let totals = try #require(stats["totals"])
        #expect(totals["events"]?.intValue == lines.count && totals["sessions"]?.intValue == 2, "\(stats)")
        #expect(totals["calls"]?.intValue == 4 && totals["denied"]?.intValue == 1 && totals["failed"]?.intValue == 1, "\(stats)")
        #expect(totals["executions"]?.intValue == 2 && totals["limit_hits"]?.intValue == 1, "\(stats)")
        #expect(stats["first"]?.stringValue == lines.first?.event["ts"]?.stringValue, "\(stats)")
        #expect(stats["last"]?.stringValue == lines.last?.event["ts"]?.stringValue, "\(stats)")
        let capabilities = stats["capabilities"]?.arrayValue ?? []
        #expect(capabilities.map { $0["capability"]?.stringValue ?? "" } == ["file", "env"], "\(stats)")
        #expect(capabilities.first?["calls"]?.intValue == 3 && capabilities.first?["denied"]?.intValue == 1, "\(stats)")
        #expect(capabilities.first?["methods"]?.arrayValue?.first?["method"]?.stringValue == "read_bytes", "\(stats)")
        let top = stats["top_denied_targets"]?.arrayValue ?? []
        #expect(top.count == 1 && top.first?["target"]?.stringValue == "\(fixture.tree)/secret.txt"
                && top.first?["call"]?.stringValue == "file.read_bytes" && top.first?["count"]?.intValue == 1, "\(stats)")
        let sessions = stats["sessions"]?.arrayValue ?? []
        #expect(sessions.map { $0["calls"]?.intValue ?? -1 } == [4, 0] && sessions.first?["limit_hits"]?.intValue == 1, "\(stats)")

        let text = try CLI.run(["audit", "stats", fixture.log])
        #expect(text.status == 0 && text.stdout.contains("\n2 sessions, 2 executions, 4 calls, 1 denied, 1 failed, "), "\(text)")
        #expect(text.stdout.contains("\n  file.read_bytes"), "\(text)")
        #expect(text.stdout.contains("file.read_bytes          \(fixture.tree)/secret.txt\n"), "\(text)")
    }

    @Test func aFileThatIsNoLogOrABadOptionGetsOneSentence() throws {
        let fixture = try AuditFixture.get()
        for command in ["show", "stats", "tail"] {
            let missing = try CLI.run(["audit", command, "/nonexistent/audit.jsonl"])
            #expect(missing.status == 125, "\(missing)")
            #expect(missing.stderr == "capsule: cannot read the audit log /nonexistent/audit.jsonl: No such file or directory\n", "\(missing)")
            let policy = try CLI.run(["audit", command, "\(fixture.tree)/policy.toml"])
            #expect(policy.status == 125 && policy.stdout.isEmpty, "\(policy)")
            #expect(policy.stderr == "capsule: \(fixture.tree)/policy.toml is not an audit log: its first line is not an audit event "
                    + "(give the file that the policy's [audit] path or `--audit` names)\n", "\(policy)")
        }
        let empty = "\(fixture.tree)/empty.jsonl"
        try Host.writeFile(empty, "")
        let none = try CLI.run(["audit", "show", empty])
        #expect(none.status == 125 && none.stderr.contains("empty.jsonl is empty, so it is not an audit log"), "\(none)")
        let kind = try CLI.run(["audit", "show", "--kind", "cap.deny", fixture.log])
        #expect(kind.status == 64 && kind.stderr.contains("`cap.deny` is not an event kind; the kinds are audit.start, "), "\(kind)")
        let since = try CLI.run(["audit", "show", "--since", "yesterday", fixture.log])
        #expect(since.status == 64 && since.stderr.contains("`--since yesterday` is neither a time nor a span"), "\(since)")
        let nothing = try CLI.run(["audit", "show"])
        #expect(nothing.status == 64 && nothing.stderr.contains("name an audit log, like `capsule audit show audit.jsonl`"), "\(nothing)")
        let group = try CLI.run(["audit"])
        #expect(group.status == 64 && group.stderr.contains("the commands of `capsule audit` are `show`, `tail`, `stats`"), "\(group)")
    }

    @Test func tailPrintsTheLastEvents() throws {
        let fixture = try AuditFixture.get()
        let lines = try fixture.lines()
        let run = try CLI.run(["audit", "tail", "-n", "3", fixture.log])
        #expect(run.status == 0, "\(run)")
        let rows = run.stdout.split(separator: "\n").dropFirst()
        let kinds = rows.map { $0.split(separator: " ", omittingEmptySubsequences: true)[3] }
        #expect(kinds == lines.suffix(3).map { Substring($0.event["kind"]?.stringValue ?? "") }, "\(run)")
        let json = try CLI.run(["audit", "tail", "-n", "2", "--json", "--kind", "cap", fixture.log])
        #expect(json.stdout == lines.filter { $0.event["kind"]?.stringValue?.hasPrefix("cap.") == true }.suffix(2)
            .map { $0.text + "\n" }.joined(), "\(json)")
    }

    @Test func tailFollowSeesTheEventsOfALaterRunAndEndsAtSIGTERM() throws {
        let fixture = try AuditFixture.get()
        let log = "\(fixture.tree)/follow.jsonl"
        let first = try CLI.run(["run", "--policy", "sandbox", "--audit", log, "\(fixture.tree)/second.py"])
        try #require(first.status == 0, "\(first)")
        let tail = try Background([CLI.executable, "audit", "tail", "-f", "-n", "1", "--json", "--kind", "exec.start", log])
        defer { tail.stop() }
        try #require(tail.waitFor { $0.contains("second.py") }, "tail -f never printed the last exec.start: \(tail.output)")
        try Host.writeFile("\(fixture.tree)/third.py", "print(3)\n")
        let third = try CLI.run(["run", "--policy", "sandbox", "--audit", log, "\(fixture.tree)/third.py"])
        try #require(third.status == 0, "\(third)")
        try #require(tail.waitFor { $0.contains("third.py") }, "tail -f did not follow the log: \(tail.output)")
        kill(tail.pid, SIGTERM)
        #expect(tail.finish() == 0, "\(tail.output)")
        let starts = try Host.readFile(log).split(separator: "\n").filter { $0.contains(#""kind":"exec.start""#) }.map { $0 + "\n" }
        #expect(tail.output == starts.joined(), "\(tail.output)")
    }

    @Test func showReadsTheArchivesAndTailFollowsAcrossARotation() throws {
        let fixture = try AuditFixture.get()
        let log = "\(fixture.tree)/rotating.jsonl"
        let policy = "\(fixture.tree)/rotating.toml"
        try Host.writeFile(policy, """
            level = "restricted"
            [capabilities.env]
            names = ["CAPSULE_AUDIT_TEST"]
            [audit]
            path = "\(log)"
            rotate_mb = 1
            """)
        try Host.writeFile("\(fixture.tree)/small.py", "print('small')\n")
        try Host.writeFile("\(fixture.tree)/many.py", "from capsule import env\nfor _ in range(4000): env.get('CAPSULE_AUDIT_TEST')\n")
        try Host.writeFile("\(fixture.tree)/after.py", "print('after')\n")
        try #require(try CLI.run(["run", "--policy", policy, "\(fixture.tree)/small.py"]).status == 0)
        let tail = try Background([CLI.executable, "audit", "tail", "-f", "-n", "1", "--json", "--kind", "exec.start", log])
        defer { tail.stop() }
        try #require(tail.waitFor { $0.contains("small.py") }, "tail -f never printed the last exec.start: \(tail.output)")
        let many = try CLI.run(["run", "--policy", policy, "\(fixture.tree)/many.py"])
        try #require(many.status == 0, "\(many)")
        try #require(OS.fileExists("\(log).1") && !OS.fileExists("\(log).2"), "the log did not rotate once")
        let after = try CLI.run(["run", "--policy", policy, "\(fixture.tree)/after.py"])
        try #require(after.status == 0, "\(after)")
        try #require(tail.waitFor { $0.contains("after.py") }, "tail -f did not follow the new file: \(tail.output)")
        kill(tail.pid, SIGTERM)
        #expect(tail.finish() == 0, "\(tail.output)")
        #expect(tail.output.split(separator: "\n").map { $0.contains("small.py") || $0.contains("many.py") || $0.contains("after.py") }
                == [true, true, true], "\(tail.output)")

        // show reads the archive first, then the live file: the whole chain, line for line.
        let whole = try ["\(log).1", log].map { String(decoding: try OS.readFile($0, limit: 1 << 24), as: UTF8.self) }.joined()
        let shown = try CLI.run(["audit", "show", "--json", log])
        #expect(shown.status == 0 && shown.stdoutBytes == whole.utf8.count && shown.stdout.hasPrefix(String(whole.prefix(60_000))), "\(shown)")
        let stats = try JSONValue.parse(try CLI.run(["audit", "stats", "--json", log]).stdoutData)
        #expect(stats["totals"]?["calls"]?.intValue == 4000 && stats["kinds"]?["audit.rotated"]?.intValue == 1, "\(stats)")
    }
}

enum AuditEventKinds {
    static let all = ["audit.start", "audit.rotated", "policy.loaded", "session.start", "exec.start", "exec.end", "cap.call",
                      "cap.denied", "approval", "limit.hit", "sandbox.error", "session.end"]
}

enum AuditTimeText {
    /// `2026-12-01T13:05:00.123456Z` as the same instant an hour east: `2026-12-01T14:05:00.123456+01:00`
    /// (nil in the day's last hour, which would change the date).
    static func withOffset(_ utc: String) -> String? {
        let chars = Array(utc)
        guard chars.count == 27, let hour = Int(String(chars[11...12])) else { return nil }
        // An hour ahead, or behind after 23:00, so that the day stays the same.
        let (shifted, offset) = hour < 23 ? (hour + 1, "+01:00") : (hour - 1, "-01:00")
        return String(chars[0...10]) + (shifted < 10 ? "0\(shifted)" : "\(shifted)") + String(chars[13...25]) + offset
    }
}

/// A capsule command left running (`audit tail -f`), its stdout read as it comes.
final class Background {
    let pid: pid_t
    private let reader: Int32
    private(set) var output = ""
    private var bytes: [UInt8] = []
    private var ended = false

    init(_ argv: [String]) throws {
        let (read, write) = try OS.socketPair()
        reader = read
        // Through env(1), with CLI's coverage setting and nothing else of ours.
        pid = try OS.spawn("/usr/bin/env", arguments: [CLI.profileSetting] + argv,
                           descriptors: [(child: 1, parent: write), (child: 2, parent: write)])
        OS.close(write)
    }

    /// Reads until `done` holds for the output or the output ends; a generous deadline only guards a hang.
    func waitFor(_ done: (String) -> Bool) -> Bool {
        let deadline = OS.now() + 120_000_000_000
        while !done(output) {
            if ended || OS.now() > deadline { return false }
            var fds = [pollfd(fd: reader, events: Int16(POLLIN), revents: 0)]
            guard (try? OS.poll(&fds, timeoutMilliseconds: 250)) ?? 0 > 0 else { continue }
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            let count = (try? buffer.withUnsafeMutableBytes { try OS.read(reader, into: $0) }) ?? 0
            if count <= 0 { ended = true } else {
                bytes += buffer[0..<count]
                output = String(decoding: bytes, as: UTF8.self)
            }
        }
        return true
    }

    /// Reads to the end of the output and waits for the process: its exit status.
    func finish() -> Int32 {
        _ = waitFor { _ in false }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        ended = true
        return Host.decodeWaitStatus(status)
    }

    func stop() {
        if !ended {
            kill(pid, SIGKILL)
            _ = finish()
        }
        OS.close(reader)
    }
}
