// The audit log end to end: real runs of the capsule binary write it, `capsule audit verify`
// checks it, and a log that cannot be written stops everything (a real, full tmpfs).
#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import Testing
import CapsuleOS
import CapsuleProtocol

@Suite(.serialized) struct AuditTests {
    /// The events of a log, parsed (every line must be a JSON object).
    func events(_ path: String) throws -> [JSONValue] {
        let text = try Host.readFile(path)
        return try text.split(separator: "\n").map { line in try JSONValue.parse(Array(line.utf8)) }
    }

    func kinds(_ events: [JSONValue]) -> [String] { events.compactMap { $0["kind"]?.stringValue } }

    @Test func aSessionUsingEachCapabilityLogsTheExactSequenceOfEvents() throws {
        let tree = try HostTree()
        let server = try HTTPServer()
        let database = "\(tree.path)/app.sqlite"
        #expect(Host.spawnAndWait("/usr/bin/python3", ["-c", "import sqlite3; c = sqlite3.connect('\(database)'); c.execute('create table t(x)'); c.execute('insert into t values (1)'); c.commit()"]) == 0)
        let approver = "\(tree.path)/approve.sh"
        try Host.writeFile(approver, "#!/bin/sh\nread line\necho approve\n")
        chmod(approver, 0o755)
        let policy = "\(tree.path)/all.toml"
        try Host.writeFile(policy, """
            level = "trusted"
            [limits]
            timeout_s = 5
            [capabilities.input]
            [capabilities.env]
            names = ["HOME"]
            [capabilities.file]
            read = ["\(tree.path)/in"]
            [capabilities.net]
            urls = ["\(server.base)/"]
            [capabilities.db]
            databases = { app = "\(database)" }
            ask = true
            [capabilities.custom.weather]
            command = ["/usr/bin/python3", "\(Host.repository)/examples/plugins/weather.py"]
            """)
        let log = "\(tree.path)/audit.jsonl"
        let script = "\(tree.path)/job.py"
        try Host.writeFile(script, """
            import capsule
            from capsule import file, net, db, env, weather, CapabilityDenied
            display("shown")
            env.names()
            file.read_text("\(tree.path)/in/hello.txt")
            try:
                file.read_text("\(tree.path)/secret.txt")
            except CapabilityDenied:
                pass
            net.fetch("\(server.base)/hello", headers={"Authorization": "Bearer hunter2"})
            db.query("app", "select x from t")
            weather.forecast("Lyon", days=1)
            capsule.ask("go on?")
            """)
        let run = try CLI.run(["run", "--policy", policy, "--audit", log, "--approver", approver, script])
        #expect(run.status == 0, "\(run)")
        let logged = try events(log)
        #expect(kinds(logged) == [
            "audit.start", "policy.loaded", "session.start", "exec.start",
            "cap.call", "cap.call", "cap.call", "cap.denied", "cap.call", "approval", "cap.call", "cap.call",
            "cap.call", "exec.end", "session.end",
        ], "\(kinds(logged))")
        let calls = logged.filter { $0["kind"]?.stringValue?.hasPrefix("cap.") == true }
        #expect(calls.map { "\($0["capability"]?.stringValue ?? "").\($0["method"]?.stringValue ?? "")" }
                == ["display.show", "env.names", "file.read_bytes", "file.read_bytes", "net.fetch", "db.query",
                    "custom.weather.forecast", "input.ask"])
        // Targets are shown, secrets never: the Authorization header the code sent is redacted.
        let text = try Host.readFile(log)
        #expect(text.contains(#""url":"\#(server.base)/hello""#))
        #expect(text.contains(#""sql":"select x from t""#))
        #expect(text.contains(#""Authorization":"<redacted>""#))
        #expect(!text.contains("hunter2"))
        #expect(!text.contains("hello from the host"), "file contents never reach the log")
        // Every session event names the session and the policy (name and digest).
        let session = logged[1]["session"]?.stringValue ?? ""
        #expect(session.count == 16)
        #expect(logged.dropFirst().allSatisfy { $0["session"]?.stringValue == session && $0["policy"]?.stringValue == policy
                    && $0["policy_sha256"]?.stringValue?.count == 64 })
        let end = logged.first { $0["kind"]?.stringValue == "exec.end" }
        #expect(end?["status"]?.stringValue == "ok")
        let verify = try CLI.run(["audit", "verify", log])
        #expect(verify.status == 0 && verify.stdout.hasPrefix("ok: \(log): 15 lines, the chain holds"), "\(verify)")
    }

    @Test func limitsAndRefusedExecutionsAreLogged() throws {
        let tree = try HostTree()
        let log = "\(tree.path)/audit.jsonl"
        let policy = "\(tree.path)/short.toml"
        try Host.writeFile(policy, "level = \"sandbox\"\n[limits]\ntimeout_s = 0.5\n")
        let script = "\(tree.path)/spin.py"
        try Host.writeFile(script, "while True: pass\n")
        let run = try CLI.run(["run", "--policy", policy, "--audit", log, script])
        #expect(run.status == 124, "\(run)")
        let logged = try events(log)
        #expect(kinds(logged) == ["audit.start", "policy.loaded", "session.start", "exec.start", "limit.hit", "exec.end", "session.end"])
        #expect(logged[4]["limit"]?.stringValue == "timeout_s" && logged[4]["value"]?.doubleValue == 0.5)
        #expect(logged[5]["status"]?.stringValue == "limit")
    }

    @Test func coreutilsSha256sumOfEachLineIsTheNextLinesPrev() throws {
        // The chain as a reviewer checks it without capsule: sha256sum of a line's bytes.
        let tree = try HostTree()
        let log = "\(tree.path)/audit.jsonl"
        let script = "\(tree.path)/job.py"
        try Host.writeFile(script, "print('hello')\n")
        let run = try CLI.run(["run", "--policy", "sandbox", "--audit", log, script])
        #expect(run.status == 0, "\(run)")
        let lines = try Host.readFile(log).split(separator: "\n").map(String.init)
        #expect(lines.count >= 5, "\(lines)")
        for index in 1..<lines.count {
            let out = "\(tree.path)/digest.txt"
            #expect(Host.spawnAndWait("/bin/sh", ["-c", "sed -n \(index)p '\(log)' | tr -d '\\n' | sha256sum > '\(out)'"]) == 0)
            let digest = String(try Host.readFile(out).prefix(64))
            let prev = try JSONValue.parse(Array(lines[index].utf8))["prev"]?.stringValue
            #expect(prev == digest, "line \(index + 1)")
        }
    }

    @Test func eightConcurrentRunsShareOneUnbrokenChain() throws {
        let tree = try HostTree()
        let log = "\(tree.path)/audit.jsonl"
        let policy = "\(tree.path)/env.toml"
        try Host.writeFile(policy, "level = \"restricted\"\n[capabilities.env]\nnames = [\"HOME\"]\n")
        let script = "\(tree.path)/calls.py"
        try Host.writeFile(script, "import capsule\nfor _ in range(50): capsule.env.names()\nprint('done')\n")
        // Eight capsule processes at once, each its own writer of the same file.
        let statuses = Mutex<[Int32]>([])
        let threads = (0..<8).map { _ in
            HostThread {
                let run = try? CLI.run(["run", "--policy", policy, "--audit", log, script])
                statuses.withLock { $0.append(run?.status ?? -1) }
            }
        }
        for thread in threads { thread.join() }
        #expect(statuses.withLock { $0 } == Array(repeating: 0, count: 8))
        let logged = try events(log) // every line a whole JSON object: none torn or interleaved
        #expect(logged.count == 1 + 8 * (3 + 50 + 2), "\(logged.count)")
        #expect(logged.enumerated().allSatisfy { $0.element["seq"]?.intValue == $0.offset + 1 })
        var perSession: [String: [String]] = [:]
        for event in logged.dropFirst() { perSession[event["session"]?.stringValue ?? "", default: []].append(event["kind"]?.stringValue ?? "") }
        #expect(perSession.count == 8)
        #expect(perSession.values.allSatisfy { $0.first == "policy.loaded" && $0.last == "session.end" && $0.count == 55 })
        let verify = try CLI.run(["audit", "verify", log])
        #expect(verify.status == 0, "\(verify)")
    }

    @Test func verifyNamesWhatWasDoneAndWhere() throws {
        let tree = try HostTree()
        let log = "\(tree.path)/audit.jsonl"
        let script = "\(tree.path)/a.py"
        try Host.writeFile(script, "print(1)\n")
        for _ in 0..<2 { #expect(try CLI.run(["run", "--policy", "sandbox", "--audit", log, script]).status == 0) }
        let original = try Host.readFile(log).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(original.count == 12 && original.last == "") // 1 + 2 × 5 lines, each ended by a newline
        let lines = Array(original.dropLast())
        func verify(_ edited: [String], newline: Bool = true) throws -> CLIRun {
            let path = "\(tree.path)/edited.jsonl"
            try Host.writeFile(path, edited.joined(separator: "\n") + (newline ? "\n" : ""))
            return try CLI.run(["audit", "verify", path])
        }
        let path = "\(tree.path)/edited.jsonl"
        // One byte of a middle line.
        var edited = lines
        edited[3] = edited[3].replacingFirst("\"execution\":\"1\"", with: "\"execution\":\"2\"")
        #expect(edited[3] != lines[3])
        var run = try verify(edited)
        #expect(run.status == 1 && run.stderr == "capsule: audit log broken at \(path):4: edited: the line no longer matches the digest the next line recorded\n", "\(run)")
        // A line deleted.
        edited = lines
        edited.remove(at: 4)
        run = try verify(edited)
        #expect(run.status == 1 && run.stderr.hasPrefix("capsule: audit log broken at \(path):5: 1 line removed before this one (seq 5 missing)"), "\(run)")
        // A line inserted (a copy of another).
        edited = lines
        edited.insert(lines[3], at: 6)
        run = try verify(edited)
        #expect(run.status == 1 && run.stderr.hasPrefix("capsule: audit log broken at \(path):7: a line inserted or moved here"), "\(run)")
        // Two lines swapped.
        edited = lines
        edited.swapAt(7, 8)
        run = try verify(edited)
        #expect(run.status == 1 && run.stderr.hasPrefix("capsule: audit log broken at \(path):8: lines reordered: seq 9 comes before seq 8"), "\(run)")
        // The tail cut mid-line, and at a line boundary (the last session's end gone).
        edited = lines
        edited[10] = String(edited[10].prefix(40))
        run = try verify(edited, newline: false)
        #expect(run.status == 1 && run.stderr.hasPrefix("capsule: audit log broken at \(path):11: incomplete last line"), "\(run)")
        run = try verify(Array(lines.dropLast()))
        #expect(run.status == 0 && run.stderr.contains("started and did not end in this log: it may still be running, or the tail of the log was cut"), "\(run)")
        // The front removed.
        run = try verify(Array(lines.dropFirst()))
        #expect(run.status == 1 && run.stderr.contains(":1: the chain's start is missing"), "\(run)")
        // The untouched log holds.
        #expect(try verify(lines).status == 0)
    }

    @Test func aKeyedChainVerifiesOnlyWithItsKey() throws {
        let tree = try HostTree()
        let key = "\(tree.path)/audit.key"
        try Host.writeFile(key, "0123456789abcdef0123456789abcdef\n")
        let log = "\(tree.path)/audit.jsonl"
        let policy = "\(tree.path)/keyed.toml"
        try Host.writeFile(policy, "level = \"sandbox\"\n[audit]\npath = \"\(log)\"\nkey_file = \"\(key)\"\nfsync = \"always\"\n")
        let script = "\(tree.path)/a.py"
        try Host.writeFile(script, "print(1)\n")
        #expect(try CLI.run(["run", "--policy", policy, script]).status == 0)
        #expect(try Host.readFile(log).hasPrefix(#"{"seq":1,"ts":"#) && (try Host.readFile(log)).contains(#""chain":"hmac-sha256""#))
        #expect(try CLI.run(["audit", "verify", "--key", key, log]).status == 0)
        let noKey = try CLI.run(["audit", "verify", log])
        #expect(noKey.status == 1 && noKey.stderr.contains("HMAC-keyed and no --key was given"), "\(noKey)")
        let otherKey = "\(tree.path)/other.key"
        try Host.writeFile(otherKey, "fedcba9876543210fedcba9876543210\n")
        let wrong = try CLI.run(["audit", "verify", "--key", otherKey, log])
        #expect(wrong.status == 1 && wrong.stderr.contains("edited"), "\(wrong)")
    }

    @Test func aFullDiskFailsClosed() throws {
        let tree = try HostTree()
        let mount = "\(tree.path)/small"
        mkdir(mount, 0o755)
        guard Host.spawnAndWait("/bin/mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", mount]) == 0 else {
            Issue.record("SKIPPED: cannot mount a tmpfs here (not root?), so a full disk cannot be made")
            return
        }
        defer { _ = Host.spawnAndWait("/bin/umount", ["-l", mount]) }
        let log = "\(mount)/audit.jsonl"
        let policy = "\(tree.path)/env.toml"
        try Host.writeFile(policy, "level = \"restricted\"\n[capabilities.env]\nnames = [\"HOME\"]\n")
        let script = "\(tree.path)/calls.py"
        try Host.writeFile(script, """
            import capsule
            n = 0
            try:
                while True:
                    capsule.env.names()
                    n += 1
            except capsule.CapabilityDenied as e:
                print(n > 10, e)
            """)
        let run = try CLI.run(["run", "--policy", policy, "--audit", log, script])
        // The call the log could not hold was refused, naming the file and why.
        #expect(run.status == 0, "\(run)")
        #expect(run.stdout.hasPrefix("True cannot write the audit log \(log): No space left on device; no capability call proceeds until it can be written"), "\(run)")
        // And nothing starts any more: the next run is refused before any code runs.
        let next = try CLI.run(["run", "--policy", policy, "--audit", log, "--report", "\(tree.path)/report.json", script])
        #expect(next.status == 125 && next.stdout.isEmpty, "\(next)")
        #expect(next.stderr.contains("audit log \(log)") && next.stderr.contains("nothing runs until it can be written"), "\(next)")
        #expect(try Host.readFile("\(tree.path)/report.json").contains(#""kind":"audit-error""#))
        // What was written is an unbroken chain (the line that did not fit was cut back off).
        let verify = try CLI.run(["audit", "verify", log])
        #expect(verify.status == 0 || verify.stderr.contains("did not end"), "\(verify)")
        #expect(!verify.stderr.contains("broken"), "\(verify)")
    }

    @Test func theCodeCanNeitherReachNorNameTheLog() throws {
        let tree = try HostTree()
        let log = "\(tree.path)/audit.jsonl"
        let script = "\(tree.path)/tamper.py"
        try Host.writeFile(script, """
            import os
            links = []
            for fd in os.listdir("/proc/self/fd"):
                try:
                    links.append(os.readlink(f"/proc/self/fd/{fd}"))
                except OSError:
                    pass  # the directory's own descriptor, closed by now
            print(any("audit" in link for link in links))
            for path in ["\(log)", "/proc/1/cwd/\(log)", "/proc/self/root\(log)"]:
                try:
                    open(path, "a").write("forged\\n")
                    print("wrote", path)
                except OSError as e:
                    print(type(e).__name__)
            """)
        let run = try CLI.run(["run", "--policy", "sandbox", "--audit", log, script])
        // Not there (another mount namespace: the script's directory under /tmp is the sandbox's
        // own /tmp, where a file of that name is the code's own), or not allowed (pid 1's cwd):
        // the host's log is never written.
        #expect(run.status == 0 && run.stdout.hasPrefix("False\n") && !run.stdout.contains("wrote /proc/1/cwd"), "\(run)")
        #expect(!(try Host.readFile(log)).contains("forged"))
        #expect(try CLI.run(["audit", "verify", log]).status == 0)
    }

    @Test func anUnwritableAuditPathRefusesTheRun() throws {
        let script = try Host.temporaryDirectory() + "/a.py"
        try Host.writeFile(script, "print('ran')\n")
        let run = try CLI.run(["run", "--audit", "/nonexistent/dir/audit.jsonl", script])
        #expect(run.status == 125 && run.stdout.isEmpty, "\(run)")
        #expect(run.stderr == "capsule: cannot open the audit log /nonexistent/dir/audit.jsonl: No such file or directory; create its directory first; nothing runs until it can be written\n", "\(run)")
        let policy = try Host.temporaryDirectory() + "/nopath.toml"
        try Host.writeFile(policy, "level = \"sandbox\"\n[audit]\nfsync = \"never\"\n")
        let noPath = try CLI.run(["run", "--policy", policy, script])
        #expect(noPath.status == 125 && noPath.stderr.contains("has an [audit] table without a path: set path there or pass --audit FILE"), "\(noPath)")
    }
}

extension String {
    func replacingFirst(_ target: String, with replacement: String) -> String {
        guard let range = firstRange(of: target) else { return self }
        var copy = self
        copy.replaceSubrange(range, with: replacement)
        return copy
    }
}
