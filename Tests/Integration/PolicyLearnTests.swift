// `capsule policy learn` end to end: record a job under a permissive policy through the real
// sandbox and CLI, learn a policy from its audit log, and run the job again under what was learned.
#if canImport(Glibc)
import Glibc
#endif
import Testing
import CapsuleOS

@Suite("capsule policy learn: record, then tighten", .serialized) struct PolicyLearnTests {
    /// Runs `script` under `policy` with its audit log at `log`; (status, stdout, the log's text).
    func record(_ policy: String, _ script: String, log: String) throws -> CLIRun {
        try CLI.run(["run", "--policy", policy, "--audit", log, script])
    }

    func deniedLines(_ log: String) -> [String] {
        (Host.readText(log) ?? "").split(separator: "\n").map(String.init).filter { $0.contains(#""kind":"cap.denied""#) }
    }

    @Test func filesEnvAndADatabaseRoundTripAndOneMorePathIsDenied() throws {
        try #require(access(CLI.executable, X_OK) == 0, "capsule was not built at \(CLI.executable)")
        let tree = try HostTree()
        let db = "\(tree.path)/app.sqlite"
        #expect(Host.spawnAndWait("/usr/bin/python3", ["-c", "import sqlite3; c = sqlite3.connect('\(db)'); c.execute('create table t (n integer primary key, s text)'); c.commit()"]) == 0)
        mkdir("\(tree.path)/more", 0o755)
        try Host.writeFile("\(tree.path)/more/extra.txt", "extra\n")
        let permissive = "\(tree.path)/permissive.toml"
        try Host.writeFile(permissive, """
            level = "trusted"
            [capabilities.file]
            read = ["\(tree.path)"]
            write = ["\(tree.path)/out"]
            [capabilities.env]
            names = ["CAPSULE_LEARN_UNSET", "HOME"]
            [capabilities.db]
            databases = { app = "\(db)" }
            write = true
            """)
        let job = """
            from capsule import file, env, db, CapabilityDenied
            print(file.read_text("\(tree.path)/in/hello.txt"), end="")
            print(file.read_text("\(tree.path)/in/a/secret.txt"), end="")
            print(file.write_text("\(tree.path)/out/r.txt", "result\\n"))
            print(env.get("CAPSULE_LEARN_UNSET", "unset"))
            print(db.execute("app", "insert or replace into t values (1, 'one')"))
            print(db.query("app", "select n, s from t"))

            """
        let script = "\(tree.path)/job.py"
        try Host.writeFile(script, job)
        let first = try record(permissive, script, log: "\(tree.path)/first.jsonl")
        #expect(first.status == 0, "\(first)")
        #expect(first.stdout == "hello from the host\ninner\n7\nunset\n1\n[{'n': 1, 's': 'one'}]\n", "\(first)")

        let learned = "\(tree.path)/learned.toml"
        let learn = try CLI.run(["policy", "learn", "\(tree.path)/first.jsonl", "-o", learned])
        #expect(learn.status == 0, "\(learn)")
        #expect(learn.stderr == "capsule: wrote \(learned) (level trusted); check it with `capsule policy explain \(learned)`\n", "\(learn)")
        let text = Host.readText(learned) ?? ""
        #expect(text.contains("read = [\n    # 2 calls: file.read_bytes \(tree.path)/in/hello.txt, file.read_bytes \(tree.path)/in/a/secret.txt"), "\(text)")
        #expect(text.contains("\n    \"\(tree.path)/in\",\n]\nwrite = [\n"), "\(text)")
        #expect(text.contains("names = [\n    # 1 call: env.get CAPSULE_LEARN_UNSET"), "\(text)")
        #expect(text.contains("app = \"\(db)\"  # the path in the policy it ran under"), "\(text)")
        let check = try CLI.run(["policy", "check", learned])
        #expect(check.status == 0 && check.stdout == "ok \(learned) (level trusted)\n", "\(check)")

        // The same job under the learned policy: the same output, nothing denied.
        let again = try record(learned, script, log: "\(tree.path)/again.jsonl")
        #expect(again.status == 0, "\(again)")
        #expect(again.stdout == first.stdout, "\(again)")
        #expect(deniedLines("\(tree.path)/again.jsonl").isEmpty)

        // One more path: exactly that call is denied, the rest still runs.
        try Host.writeFile(script, job + """
            try:
                file.read_text("\(tree.path)/more/extra.txt")
            except CapabilityDenied as e:
                print("denied:", e)
            print("after")

            """)
        let more = try record(learned, script, log: "\(tree.path)/more.jsonl")
        #expect(more.status == 0, "\(more)")
        #expect(more.stdout == first.stdout + "denied: '\(tree.path)/more/extra.txt' is outside the roots of [capabilities.file] (\(tree.path)/in, \(tree.path)/out)\nafter\n", "\(more)")
        let denied = deniedLines("\(tree.path)/more.jsonl")
        #expect(denied.count == 1 && denied[0].contains(#""path":"\#(tree.path)/more/extra.txt""#), "\(denied)")
    }

    @Test func urlsRoundTripAndOneMoreHostIsDenied() throws {
        try #require(access(CLI.executable, X_OK) == 0, "capsule was not built at \(CLI.executable)")
        let server = try HTTPServer()
        let other = try HTTPServer(address: "127.0.0.2")
        let tree = try HostTree()
        let permissive = "\(tree.path)/permissive.toml"
        try Host.writeFile(permissive, """
            level = "trusted"
            [capabilities.net]
            urls = ["\(server.base)/", "\(other.base)/"]
            methods = ["GET", "POST"]
            """)
        let job = """
            from capsule import net, CapabilityDenied
            print(net.fetch("\(server.base)/hello?lang=en").text)
            print(net.fetch("\(server.base)/json", method="POST", json={"a": 1}).json())

            """
        let script = "\(tree.path)/job.py"
        try Host.writeFile(script, job)
        let first = try record(permissive, script, log: "\(tree.path)/first.jsonl")
        #expect(first.status == 0 && first.stdout == "hello over http\n{'answer': 42}\n", "\(first)")

        let learn = try CLI.run(["policy", "learn", "\(tree.path)/first.jsonl"])
        #expect(learn.status == 0, "\(learn)")
        #expect(learn.stdout.contains("urls = [\n    # 1 call: net.fetch \(server.base)/hello?lang=en (session "), "\(learn)")
        #expect(learn.stdout.contains("\n    \"\(server.base)/hello\",\n    # 1 call: net.fetch \(server.base)/json (session "), "\(learn)")
        #expect(learn.stdout.contains("methods = [\n    # 1 call: net.fetch \(server.base)/hello?lang=en"), "\(learn)")
        let learned = "\(tree.path)/learned.toml"
        try Host.writeFile(learned, learn.stdout)
        let check = try CLI.run(["policy", "check", learned])
        #expect(check.status == 0 && check.stdout == "ok \(learned) (level trusted)\n", "\(check)")

        let again = try record(learned, script, log: "\(tree.path)/again.jsonl")
        #expect(again.status == 0 && again.stdout == first.stdout, "\(again)")
        #expect(deniedLines("\(tree.path)/again.jsonl").isEmpty)

        try Host.writeFile(script, job + """
            try:
                net.fetch("\(other.base)/hello")
            except CapabilityDenied as e:
                print("denied:", e)

            """)
        let more = try record(learned, script, log: "\(tree.path)/more.jsonl")
        #expect(more.status == 0, "\(more)")
        #expect(more.stdout == first.stdout + "denied: '\(other.base)/hello' is not within the urls of [capabilities.net] (\(server.base)/hello, \(server.base)/json)\n", "\(more)")
        #expect(deniedLines("\(tree.path)/more.jsonl").count == 1)
        #expect(other.requests.isEmpty, "the host that was not learned saw nothing")
    }

    @Test func badLogsAreRefusedWithASentence() throws {
        try #require(access(CLI.executable, X_OK) == 0, "capsule was not built at \(CLI.executable)")
        let tree = try HostTree()
        let notALog = "\(tree.path)/in/hello.txt"
        let empty = "\(tree.path)/empty.jsonl"
        try Host.writeFile(empty, "")
        for (log, message) in [
            (notALog, "capsule: policy learn: \(notALog) is not a capsule audit log: no line of it is an audit event (a JSON object with `kind` and `seq`, as `capsule run --audit FILE` writes)\n"),
            (empty, "capsule: policy learn: \(empty) is empty: it records no session yet; run code with `capsule run --audit \(empty) …` first\n"),
            ("\(tree.path)/missing.jsonl", "capsule: policy learn: cannot read the audit log \(tree.path)/missing.jsonl: No such file or directory\n"),
        ] {
            let run = try CLI.run(["policy", "learn", log])
            #expect(run.status == 1 && run.stdout.isEmpty, "\(run)")
            #expect(run.stderr == message, "\(run)")
        }

        // Only denied calls: nothing to learn.
        let script = "\(tree.path)/job.py"
        try Host.writeFile(script, "from capsule import file\ntry:\n    file.read_text('/etc/hostname')\nexcept PermissionError:\n    pass\n")
        let log = "\(tree.path)/denied.jsonl"
        #expect(try record("sandbox", script, log: log).status == 0)
        let denied = try CLI.run(["policy", "learn", log])
        #expect(denied.status == 1 && denied.stdout.isEmpty, "\(denied)")
        #expect(denied.stderr.hasPrefix("capsule: policy learn: \(log) records only denied capability calls (1, the first: file.read_text (session "), "\(denied)")

        // An existing -o file is kept unless --force.
        let sessionLog = "\(tree.path)/ok.jsonl"
        try Host.writeFile(script, "print('hi')\n")
        #expect(try record("sandbox", script, log: sessionLog).status == 0)
        let taken = "\(tree.path)/taken.toml"
        try Host.writeFile(taken, "keep me\n")
        let refused = try CLI.run(["policy", "learn", sessionLog, "-o", taken])
        #expect(refused.status == 1, "\(refused)")
        #expect(refused.stderr == "capsule: policy learn: \(taken) exists; pass --force to replace it, or name another file with -o\n", "\(refused)")
        #expect(Host.readText(taken) == "keep me\n")
        let forced = try CLI.run(["policy", "learn", sessionLog, "-o", taken, "--force"])
        #expect(forced.status == 0, "\(forced)")
        #expect(Host.readText(taken)?.contains("level = \"sandbox\"") == true)
        let session = try CLI.run(["policy", "learn", sessionLog, "--session", "zz"])
        #expect(session.status == 1 && session.stderr.hasPrefix("capsule: policy learn: no session in \(sessionLog) has an id starting with `zz`; its sessions are "), "\(session)")
    }
}
