// The policy learner on hand-built audit events: what it grants, how it generalises, what it
// refuses to learn from. The round trip through the real sandbox is in Tests/Integration/PolicyLearnTests.swift.
import Testing
import CapsuleCapabilities
import CapsulePolicy
import CapsuleProtocol
@testable import CapsuleAudit

private let sessionA = "4f2a1b2c3d4e5f60"
private let sessionB = "9e8d7c6b5a493827"

private func call(_ capability: String, _ method: String, _ args: [(String, JSONValue)], decision: String = "allowed",
                  session: String = sessionA, policy: String = "p.toml", reason: String? = nil) -> JSONValue {
    var fields: [(String, JSONValue)] = [("seq", 1), ("session", .string(session)), ("kind", decision == "denied" ? "cap.denied" : "cap.call"),
                                         ("policy", .string(policy)), ("policy_sha256", "00"), ("capability", .string(capability)),
                                         ("method", .string(method)), ("args", .object(args)), ("decision", .string(decision))]
    if let reason { fields.append(("reason", .string(reason))) }
    return .object(fields)
}

private func read(_ path: String, session: String = sessionA) -> JSONValue { call("file", "read_bytes", [("path", .string(path))], session: session) }
private func fetch(_ url: String, _ method: String = "GET") -> JSONValue {
    call("net", "fetch", [("url", .string(url)), ("method", .string(method))])
}
private func execEnd(_ seconds: Double, session: String = sessionA) -> JSONValue {
    .object([("seq", 2), ("session", .string(session)), ("kind", "exec.end"), ("status", "ok"), ("duration_s", .number(seconds))])
}

private func learn(_ events: [JSONValue], session: String? = nil, base: Policy? = nil,
                   policies: [String: PolicyLearner.Source] = [:]) throws -> PolicyLearner.Learned {
    try PolicyLearner.learn(events, .init(session: session, base: base ?? PolicyLoader.builtin(.sandbox), logName: "a.jsonl", policies: policies))
}

private func failure(_ events: [JSONValue], session: String? = nil) -> String? {
    do {
        _ = try learn(events, session: session)
        return nil
    } catch {
        return (error as? AuditFailure)?.message
    }
}

@Suite struct PolicyLearnerTests {
    @Test func fileRootsAreTheDeepestDirectoryEachClusterShares() throws {
        let learned = try learn([read("/srv/data/a/x.csv"), read("/srv/data/b/y.csv"),
                                 call("file", "write_bytes", [("path", "/srv/out/r.txt"), ("data", "<3 bytes>")]),
                                 call("file", "list", [("path", "/srv/logs/2026")])])
        let file = try #require(learned.policy.capabilities.file)
        #expect(file.read == ["/srv/data", "/srv/logs/2026"])
        #expect(file.write == ["/srv/out"])
        #expect(file.include == ["**"])
        #expect(learned.policy.level == .standard)
        #expect(learned.text.contains("""
                read = [
                    # 2 calls: file.read_bytes /srv/data/a/x.csv, file.read_bytes /srv/data/b/y.csv (session 4f2a1b2c…); the deepest directory the calls share; left as its own directory: the one it shares with /srv/logs/2026 is /srv, too wide to grant
                    "/srv/data",
                """), "\(learned.text)")
        #expect(learned.text.contains("level = \"standard\"  # the lowest level that allows every grant below: capabilities.file.write needs it"))
    }

    @Test func neverWidensToTheRootATopLevelDirectoryOrAHome() throws {
        let learned = try learn([read("/tmp/a/x"), read("/tmp/b/y"), read("/home/alice/p/x"), read("/home/alice/q/y"), read("/top.txt")])
        let file = try #require(learned.policy.capabilities.file)
        #expect(file.read == ["/home/alice/p", "/home/alice/q", "/tmp/a", "/tmp/b"])
        #expect(learned.text.contains("left as its own directory: the one it shares with /tmp/b is /tmp, too wide to grant"), "\(learned.text)")
        #expect(learned.notes.contains { $0.contains("/top.txt") && $0.contains("`/` is never a root") }, "\(learned.notes)")
    }

    @Test func aWriteRootServesReadsBelowItAndWriteRootsComeOnlyFromWrites() throws {
        let learned = try learn([read("/srv/out/a/old.txt"), call("file", "append", [("path", "/srv/out/a/log.txt"), ("data", "<1 bytes>")]),
                                 call("file", "stat", [("path", "/srv/in/x")])])
        let file = try #require(learned.policy.capabilities.file)
        #expect(file.write == ["/srv/out/a"])
        #expect(file.read == ["/srv/in"])
    }

    @Test func secretLookingFilesThatWereReadGetExactIncludes() throws {
        let learned = try learn([read("/srv/app/.env"), read("/srv/app/conf/id_rsa"), read("/srv/app/conf/settings.ini")])
        let file = try #require(learned.policy.capabilities.file)
        #expect(file.read == ["/srv/app"])
        #expect(file.include == ["**", ".env", "conf/id_rsa"])
        #expect(learned.text.contains("looks like a secret, so only an exact name allows it"))
    }

    @Test func relativePathsAreTakenUnderTheRootOfThePolicyTheyRanUnder() throws {
        let original = try PolicyLoader.parse("""
            level = "standard"
            [capabilities.file]
            read = ["/srv/in"]
            write = ["/srv/out"]
            """, file: "p.toml")
        let events = [read("a/b.csv"), read("/srv/in/deep/c.csv"), call("file", "write_bytes", [("path", "r.txt"), ("data", "<1 bytes>")])]
        let learned = try learn(events, policies: ["p.toml": .loaded(original)])
        let file = try #require(learned.policy.capabilities.file)
        #expect(file.read == ["/srv/in"])
        #expect(file.write == ["/srv/out"])
        #expect(learned.text.contains("relative paths in the log are taken under it, so it stays first and exact"))

        let unread = try learn(events, policies: ["p.toml": .unavailable("the policy `p.toml` it ran under cannot be read here (gone)")])
        #expect(unread.policy.capabilities.file?.read == ["/srv/in/deep"])
        #expect(unread.policy.capabilities.file?.write == [])
        #expect(unread.notes.contains { $0.contains("file.read_bytes a/b.csv: a relative path, and the policy `p.toml` it ran under cannot be read here (gone)") },
                "\(unread.notes)")
    }

    @Test func urlsAreExactPathsOrTheSegmentsTheyShareAndMethodsAreThoseSeen() throws {
        let learned = try learn([fetch("http://127.0.0.1:8080/hello?x=1"), fetch("https://API.example.com/v1/items/3"),
                                 fetch("https://api.example.com/v1/items/4#top"), fetch("https://api.example.com/upload", "POST")])
        let net = try #require(learned.policy.capabilities.net)
        #expect(net.urls == ["http://127.0.0.1:8080/hello", "https://api.example.com/v1/items", "https://api.example.com/upload"])
        #expect(net.methods == ["GET", "POST"])
        #expect(net.websocket == false)
        #expect(learned.policy.level == .trusted)
        #expect(learned.text.contains("the path segments the 2 URLs share"))
    }

    @Test func aCredentialOfThePolicyItRanUnderIsKeptForALearnedHost() throws {
        let original = try PolicyLoader.parse("""
            level = "standard"
            [capabilities.net]
            urls = ["https://api.example.com/", "https://other.example.com/"]
            credentials = { "api.example.com" = { header = "Authorization", value_from_env = "TOKEN" }, "other.example.com" = { header = "X-Key", value_from_env = "K" } }
            """, file: "p.toml")
        let learned = try learn([fetch("https://api.example.com/v1/x")], policies: ["p.toml": .loaded(original)])
        #expect(learned.policy.capabilities.net?.credentials == ["api.example.com": NetCredential(header: "Authorization", source: .environment("TOKEN"))])
        #expect(learned.policy.level == .standard)
    }

    @Test func databasesTakeTheirPathsFromThePolicyTheyRanUnderOrStayACommentedPlaceholder() throws {
        let original = try PolicyLoader.parse("""
            level = "trusted"
            [capabilities.db]
            databases = { app = "/srv/app.sqlite", other = "/srv/other.sqlite" }
            write = true
            """, file: "p.toml")
        let query = call("db", "query", [("name", "app"), ("sql", "select 1")])
        let readOnly = try learn([query], policies: ["p.toml": .loaded(original)])
        #expect(readOnly.policy.capabilities.db?.databases == ["app": "/srv/app.sqlite"])
        #expect(readOnly.policy.capabilities.db?.write == false)
        #expect(readOnly.policy.level == .standard)

        let failedWrite = call("db", "execute", [("name", "app"), ("sql", "insert into nope values (1)")], decision: "failed")
        #expect(try learn([query, failedWrite], policies: ["p.toml": .loaded(original)]).policy.capabilities.db?.write == false)
        let writes = try learn([query, call("db", "execute", [("name", "app"), ("sql", "insert into t values (1)")])],
                               policies: ["p.toml": .loaded(original)])
        #expect(writes.policy.capabilities.db?.write == true)
        #expect(writes.policy.level == .trusted)

        let unknown = try learn([query])
        #expect(unknown.policy.capabilities.db == nil)
        #expect(unknown.text.contains("# app = \"/path/to/app.sqlite\"  # not in the log: fill in the path"), "\(unknown.text)")
        #expect(unknown.notes.contains { $0.hasPrefix("[capabilities.db] database `app`: the log names it but not its path") })
    }

    @Test func envNamesInputAndPluginsAreThoseUsed() throws {
        let original = try PolicyLoader.parse("""
            level = "trusted"
            [capabilities.custom.weather]
            command = ["/usr/bin/python3", "/opt/weather.py"]
            """, file: "p.toml")
        let learned = try learn([call("env", "get", [("name", "LANG"), ("default", .null)]), call("input", "ask", [("question", "go?")]),
                                 call("custom.weather", "forecast", [("city", "Lyon")]), call("custom.radio", "play", [])],
                                policies: ["p.toml": .loaded(original)])
        #expect(learned.policy.capabilities.env?.names == ["LANG"])
        #expect(learned.policy.capabilities.input != nil)
        #expect(learned.policy.capabilities.custom["weather"]?.command == ["/usr/bin/python3", "/opt/weather.py"])
        #expect(learned.policy.capabilities.custom["radio"] == nil)
        #expect(learned.text.contains("# [capabilities.custom.radio]"))
        #expect(learned.policy.level == .trusted)

        let envOnly = try learn([call("env", "get", [("name", "TZ")])])
        #expect(envOnly.policy.level == .restricted)
        #expect(envOnly.policy.capabilities.input == nil)
        #expect(envOnly.text.contains("# input() is not a capability call"))
    }

    @Test func deniedCallsAreListedAndNotGranted() throws {
        let learned = try learn([read("/srv/data/a.csv"),
                                 call("file", "read_bytes", [("path", "/etc/passwd")], decision: "denied",
                                      reason: "'/etc/passwd' is outside the roots of [capabilities.file] (/srv/data)"),
                                 call("net", "fetch", [("url", "http://10.0.0.1/")], decision: "denied", reason: "no")])
        #expect(learned.policy.capabilities.file?.read == ["/srv/data"])
        #expect(learned.policy.capabilities.net == nil)
        #expect(learned.text.contains("""
            # denied in the log, not granted:
            #   file.read_bytes /etc/passwd (session 4f2a1b2c…): '/etc/passwd' is outside the roots of [capabilities.file] (/srv/data)
            #   net.fetch http://10.0.0.1/ (session 4f2a1b2c…): no
            """), "\(learned.text)")
    }

    @Test func aFailedCallIsGrantedSoTheRerunFailsTheSameWay() throws {
        let learned = try learn([call("file", "read_bytes", [("path", "/srv/data/missing.csv")], decision: "failed", reason: "No such file")])
        #expect(learned.policy.capabilities.file?.read == ["/srv/data"])
    }

    @Test func theTimeoutIsTwiceTheLongestExecutionAndOtherLimitsAreTheBases() throws {
        let base = try PolicyLoader.parse("level = \"sandbox\"\n[limits]\nmemory_mb = 256\n[sandbox]\nenv = { LANG = \"C\" }\n", file: "base.toml")
        let learned = try learn([execEnd(0.4), execEnd(3.2, session: sessionB), read("/srv/a/x")], base: base)
        #expect(learned.policy.limits.timeoutSeconds == 7)
        #expect(learned.policy.limits.memoryMB == 256)
        #expect(learned.policy.environment == ["LANG": "C"])
        #expect(learned.text.contains("timeout_s = 7  # twice the longest execution (3.2 s, session 9e8d7c6b…), rounded up, at least 5"))
        #expect(try learn([execEnd(0.01)]).policy.limits.timeoutSeconds == 5)
        #expect(try learn([read("/srv/a/x")]).policy.limits.timeoutSeconds == 30)
    }

    @Test func aLogWithNoCapabilityCallsLearnsTheSandbox() throws {
        let learned = try learn([execEnd(0.2)])
        #expect(learned.policy.level == .sandbox)
        #expect(learned.policy.capabilities.file == nil)
    }

    @Test func sessionSelectsOneSessionByPrefix() throws {
        let events = [read("/srv/a/x"), read("/srv/b/y", session: sessionB)]
        #expect(try learn(events, session: "9e8").policy.capabilities.file?.read == ["/srv/b"])
        #expect(failure(events, session: "77") == "no session in a.jsonl has an id starting with `77`; its sessions are \(sessionA), \(sessionB)")
        #expect(failure(events, session: "") == "`` matches 2 sessions in a.jsonl (\(sessionA), \(sessionB)); give more of the id")
    }

    @Test func aLogOfOnlyDeniedCallsIsRefusedWithASentence() {
        let message = failure([call("file", "read_bytes", [("path", "/etc/shadow")], decision: "denied", reason: "outside")])
        #expect(message?.hasPrefix("a.jsonl records only denied capability calls (1, the first: file.read_bytes /etc/shadow") == true, "\(message ?? "")")
        #expect(message?.hasSuffix("then learn from that log") == true)
    }

    @Test func pathsFromTheLogCannotBreakTheTOML() throws {
        let learned = try learn([read("/srv/we\"ird # x = 1/f.txt"), read("/srv/new\nline/g.txt")])
        #expect(learned.policy.capabilities.file?.read == ["/srv/we\"ird # x = 1"])
        #expect(learned.notes.contains { $0.hasSuffix("a path with control characters cannot be written in a policy") }, "\(learned.notes)")
    }
}
