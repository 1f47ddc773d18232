// `capsule serve` end to end: the real server on a loopback port, driven over HTTP by
// AsyncHTTPClient as any client would (docs/server.md).
#if canImport(Glibc)
import Glibc
#endif
import AsyncHTTPClient
import CapsuleOS
import CapsuleProtocol
import NIOCore
import NIOHTTP1
import Testing

/// A `capsule serve --port 0` of a test's own: its port, its token, and SIGTERM at the end.
final class ServedCapsule: @unchecked Sendable {
    let pid: pid_t
    let port: Int
    let token = "test-token-" + String(UInt64.random(in: 1 ... .max), radix: 16)
    let home: String
    private let stderrFD: Int32
    private(set) var stderr = ""

    init(_ arguments: [String] = []) throws {
        home = try Host.temporaryDirectory()
        let (errRead, errWrite) = try OS.socketPair()
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, errWrite, 2)
        let argv: [UnsafeMutablePointer<CChar>?] = ([CLI.executable, "serve", "--port", "0"] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        let settings: [String] = [CLI.profileSetting, "CAPSULE_TOKEN=\(token)", "HOME=\(home)", "PATH=/usr/bin:/bin"]
        let environment: [UnsafeMutablePointer<CChar>?] = settings.map { strdup($0) } + [nil]
        defer { for pointer in environment { free(pointer) } }
        var pid: pid_t = 0
        let spawned = withShellLikeSpawnAttributes { posix_spawn(&pid, CLI.executable, &actions, &$0, argv, environment) }
        close(errWrite)
        guard spawned == 0 else { close(errRead); throw SystemError("posix_spawn capsule serve", errno: spawned) }
        self.pid = pid
        stderrFD = errRead
        var text = ""
        var buffer = [UInt8](repeating: 0, count: 4096)
        let deadline = OS.now() + 30_000_000_000
        while !text.contains("listening on"), OS.now() < deadline {
            var fds = [pollfd(fd: errRead, events: Int16(POLLIN), revents: 0)]
            guard poll(&fds, 1, 250) >= 0 else { continue }
            if fds[0].revents == 0 { continue }
            let count = buffer.withUnsafeMutableBytes { Glibc.read(errRead, $0.baseAddress, $0.count) }
            if count <= 0 { break }
            text += String(decoding: buffer[0..<count], as: UTF8.self)
        }
        stderr = text
        guard let range = text.firstRange(of: "http://127.0.0.1:"),
              let port = Int(text[range.upperBound...].prefix(while: \.isNumber)) else {
            kill(pid, SIGKILL)
            throw SystemError("capsule serve did not start: \(text)", errno: 0)
        }
        self.port = port
    }

    var base: String { "http://127.0.0.1:\(port)" }

    /// SIGTERM, then its exit status (and what it wrote on stderr meanwhile).
    func stop() -> Int32 {
        kill(pid, SIGTERM)
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(stderrFD, $0.baseAddress, $0.count) }
            if count <= 0 { break }
            stderr += String(decoding: buffer[0..<count], as: UTF8.self)
        }
        close(stderrFD)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        Host.removeTree(home)
        return Host.decodeWaitStatus(status)
    }

    struct Reply {
        let status: Int
        let contentType: String
        let body: [UInt8]
        var text: String { String(decoding: body, as: UTF8.self) }
        var json: JSONValue { (try? JSONValue.parse(body)) ?? .null }
    }

    func request(_ method: HTTPMethod, _ path: String, json: JSONValue? = nil, token: String?? = .none,
                 accept: String? = nil) async throws -> Reply {
        var request = HTTPClientRequest(url: base + path)
        request.method = method
        if let token = token ?? self.token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let accept { request.headers.add(name: "Accept", value: accept) }
        if let json {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: json.serialized()))
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
        let body = try await response.body.collect(upTo: 64 << 20)
        return Reply(status: Int(response.status.code), contentType: response.headers.first(name: "Content-Type") ?? "",
                     body: Array(body.readableBytesView))
    }

    /// A new session's id.
    func createSession(_ body: JSONValue = ["policy": "sandbox"]) async throws -> String {
        let created = try await request(.POST, "/v1/sessions", json: body)
        #expect(created.status == 201, "\(created.text)")
        return created.json["id"]?.stringValue ?? "none"
    }
}

@Suite(.serialized) struct ServerTests {
    @Test func withoutTheTokenNothingRuns() async throws {
        let server = try ServedCapsule()
        defer { _ = server.stop() }
        #expect(try await server.request(.GET, "/healthz", token: .some(nil)).status == 200)
        let ready = try await server.request(.GET, "/readyz", token: .some(nil))
        #expect(ready.status == 200 && ready.json["status"] == "ready", "\(ready.text)")
        for token in [nil, "wrong", server.token + "x", String(server.token.dropLast())] as [String?] {
            let refused = try await server.request(.POST, "/v1/sessions", json: ["policy": "sandbox"], token: .some(token))
            #expect(refused.status == 401 && refused.contentType == "application/problem+json", "\(refused.text)")
            #expect(refused.json["detail"]?.stringValue?.contains("Authorization: Bearer") == true, "\(refused.text)")
        }
        let listed = try await server.request(.GET, "/v1/sessions")
        #expect(listed.status == 200 && listed.json["sessions"]?.arrayValue?.isEmpty == true, "\(listed.text): nothing was created")
    }

    @Test func aSessionRunsCodeThatPrintsDisplaysAndReturns() async throws {
        let server = try ServedCapsule()
        defer { _ = server.stop() }
        let id = try await server.createSession()
        let ran = try await server.request(.POST, "/v1/sessions/\(id)/execute",
                                           json: ["code": "import sys\nprint('out')\nprint('err', file=sys.stderr)\ndisplay({'a': 1})\nx = 6\nx * 7"])
        #expect(ran.status == 200, "\(ran.text)")
        #expect(ran.json["stdout"] == "out\n" && ran.json["stderr"] == "err\n", "\(ran.text)")
        #expect(ran.json["result"]?["text/plain"] == "42", "\(ran.text)")
        #expect(ran.json["displays"]?.arrayValue?.first?["text/plain"] == "{'a': 1}", "\(ran.text)")
        #expect(ran.json["done"]?["status"] == "ok" && ran.json["done"]?["session_alive"] == true, "\(ran.text)")
        // State persists; an error is reported as such and the session goes on.
        let failed = try await server.request(.POST, "/v1/sessions/\(id)/execute", json: ["code": "x / 0"])
        #expect(failed.json["error"]?["ename"] == "ZeroDivisionError" && failed.json["done"]?["status"] == "error", "\(failed.text)")
        let listed = try await server.request(.GET, "/v1/sessions")
        #expect(listed.json["sessions"]?.arrayValue?.map { $0["id"] } == [.string(id)], "\(listed.text)")
        #expect(try await server.request(.DELETE, "/v1/sessions/\(id)").status == 204)
        let gone = try await server.request(.POST, "/v1/sessions/\(id)/execute", json: ["code": "1"])
        #expect(gone.status == 404 && gone.contentType == "application/problem+json", "\(gone.text)")
    }

    @Test func eventsArriveBeforeTheExecutionEnds() async throws {
        let server = try ServedCapsule()
        defer { _ = server.stop() }
        let id = try await server.createSession()
        var request = HTTPClientRequest(url: server.base + "/v1/sessions/\(id)/execute")
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(server.token)")
        request.headers.add(name: "Accept", value: "application/x-ndjson")
        request.body = .bytes(ByteBuffer(bytes: JSONValue.object([("code", "import time\nprint('first', flush=True)\ntime.sleep(30)\nprint('never')")]).serialized()))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
        #expect(response.headers.first(name: "Content-Type") == "application/x-ndjson")
        var lines: [JSONValue] = [], pending: [UInt8] = [], interrupted = false
        for try await chunk in response.body {
            pending += chunk.readableBytesView
            while let newline = pending.firstIndex(of: 10) {
                lines.append((try? JSONValue.parse(pending[..<newline])) ?? .null)
                pending.removeSubrange(...newline)
            }
            // The first line came while the code sleeps: interrupt it over HTTP.
            if !interrupted, lines.contains(where: { $0["text"] == "first\n" }) {
                interrupted = true
                let answer = try await server.request(.POST, "/v1/sessions/\(id)/interrupt")
                #expect(answer.status == 202, "\(answer.text)")
            }
        }
        #expect(interrupted, "\(lines)")
        #expect(lines.first?["type"] == "stream" && lines.first?["text"] == "first\n", "\(lines)")
        #expect(lines.contains { $0["type"] == "error" && $0["ename"] == "KeyboardInterrupt" }, "\(lines)")
        #expect(lines.last?["type"] == "done" && lines.last?["status"] == "interrupted" && lines.last?["session_alive"] == true, "\(lines)")
        #expect(!lines.contains { $0["text"] == "never\n" })
        let next = try await server.request(.POST, "/v1/sessions/\(id)/execute", json: ["code": "print('next')"])
        #expect(next.json["stdout"] == "next\n", "\(next.text)")
    }

    @Test func sseAndInputOverHTTP() async throws {
        let server = try ServedCapsule()
        defer { _ = server.stop() }
        let id = try await server.createSession(["policy": "restricted"])
        var request = HTTPClientRequest(url: server.base + "/v1/sessions/\(id)/execute?stream=sse")
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(server.token)")
        request.body = .bytes(ByteBuffer(bytes: JSONValue.object([("code", "name = input('who? ')\nprint('hello', name)")]).serialized()))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
        #expect(response.headers.first(name: "Content-Type") == "text/event-stream")
        var text = "", answered = false
        for try await chunk in response.body {
            text += String(buffer: chunk)
            if !answered, text.contains("event: input_request") {
                answered = true
                let reply = try await server.request(.POST, "/v1/sessions/\(id)/input", json: ["line": "world"])
                #expect(reply.status == 200, "\(reply.text)")
            }
        }
        #expect(text.contains("event: input_request\ndata: {\"type\":\"input_request\",\"prompt\":\"who? \""), "\(text)")
        #expect(text.contains("\"text\":\"hello world\\n\""), "\(text)")
        #expect(text.hasSuffix("\n\n") && text.contains("event: done\ndata: {\"type\":\"done\",\"status\":\"ok\""), "\(text)")
        // Without streaming, input() reads end of file.
        let plain = try await server.request(.POST, "/v1/sessions/\(id)/execute", json: ["code": "try:\n    input()\nexcept EOFError:\n    print('eof')"])
        #expect(plain.json["stdout"] == "eof\n", "\(plain.text)")
    }

    @Test func badRequestsAreNamedAndTheServerGoesOn() async throws {
        let server = try ServedCapsule(["--max-level", "restricted", "--max-sessions", "2", "--max-body-bytes", "4096"])
        defer { _ = server.stop() }
        let cases: [(JSONValue, Int, String)] = [
            (["policy": "nonsense"], 400, "is not a level"),
            (["policy": "standard"], 403, "up to level `restricted`"),
            (["policy_toml": "level = \"sandbox\"\n[limits]\nmemroy_mb = 5"], 422, "memory_mb"),
            (["policy_toml": "extends = \"/etc/passwd\""], 422, "may extend only a level"),
        ]
        for (body, status, words) in cases {
            let refused = try await server.request(.POST, "/v1/sessions", json: body)
            #expect(refused.status == status && refused.json["detail"]?.stringValue?.contains(words) == true, "\(body): \(refused.text)")
        }
        var request = HTTPClientRequest(url: server.base + "/v1/sessions")
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(server.token)")
        for (body, status) in [("{not json", 400), ("[1]", 400), (String(repeating: " ", count: 10_000) + "{}", 413)] {
            request.body = .bytes(ByteBuffer(string: body))
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
            _ = try await response.body.collect(upTo: 1 << 20)
            #expect(Int(response.status.code) == status, "\(body.prefix(20)): \(response.status)")
        }
        let plain = try await server.request(.POST, "/v1/sessions")  // no body: the defaults, level sandbox
        #expect(plain.status == 201 && plain.json["level"] == "sandbox", "\(plain.text)")
        _ = try await server.request(.DELETE, "/v1/sessions/\(plain.json["id"]?.stringValue ?? "")")
        let nowhere = try await server.request(.GET, "/v1/nothing")
        #expect(nowhere.status == 404 && nowhere.json["detail"]?.stringValue?.contains("is not a route of capsule serve") == true, "\(nowhere.text)")
        let first = try await server.createSession()
        _ = try await server.createSession()
        let third = try await server.request(.POST, "/v1/sessions", json: ["policy": "sandbox"])
        #expect(third.status == 429 && third.json["detail"]?.stringValue?.contains("at most 2 sessions") == true, "\(third.text)")
        let noCode = try await server.request(.POST, "/v1/sessions/\(first)/execute", json: ["cod": "1"])
        #expect(noCode.status == 400, "\(noCode.text)")
        let ran = try await server.request(.POST, "/v1/sessions/\(first)/execute", json: ["code": "print(1 + 1)"])
        #expect(ran.json["stdout"] == "2\n", "\(ran.text)")
    }

    @Test func anAuditLogThatCannotBeWrittenMakesItUnreadyAndStartsNothing() async throws {
        let server = try ServedCapsule(["--audit", "/proc/capsule-no-such-dir/audit.jsonl"])
        defer { _ = server.stop() }
        let ready = try await server.request(.GET, "/readyz", token: .some(nil))
        #expect(ready.status == 503 && ready.json["detail"]?.stringValue?.contains("the audit log") == true, "\(ready.text)")
        let refused = try await server.request(.POST, "/v1/sessions", json: ["policy": "sandbox"])
        #expect(refused.status == 503 && refused.json["detail"]?.stringValue?.contains("nothing runs until it can be") == true, "\(refused.text)")
        #expect(try await server.request(.GET, "/v1/sessions").json["sessions"]?.arrayValue?.isEmpty == true)
    }

    @Test func aPortInUseOrABadTokenFileIsNamed() async throws {
        let server = try ServedCapsule()
        defer { _ = server.stop() }
        let taken = try CLI.run(["serve", "--port", "\(server.port)"], environment: ["CAPSULE_TOKEN=\(server.token)"])
        #expect(taken.status == 125 && taken.stderr.contains("cannot listen on 127.0.0.1:\(server.port): Address already in use; another program holds the port"), "\(taken)")
        let file = server.home + "/token"
        try Host.writeFile(file, "a-token-long-enough-to-use\n")
        chmod(file, 0o644)
        let readable = try CLI.run(["serve", "--port", "0", "--token-file", file])
        #expect(readable.status == 125 && readable.stderr.contains("may be read by other users (mode 644); chmod 600 it"), "\(readable)")
        let short = try CLI.run(["serve", "--port", "0"], environment: ["CAPSULE_TOKEN=short"])
        #expect(short.status == 125 && short.stderr.contains("CAPSULE_TOKEN is shorter than 16 characters"), "\(short)")
    }

    @Test func thePythonClientRunsASession() async throws {
        let server = try ServedCapsule()
        defer { _ = server.stop() }
        let script = try Host.temporaryDirectory() + "/client.py"
        try Host.writeFile(script, #"""
            import asyncio, os
            from capsule_client import AsyncClient, Client, ServerError
            url, token = os.environ["CAPSULE_URL"], os.environ["CAPSULE_TOKEN"]
            client = Client(url, token=token)
            print("HEALTHY", client.healthy())
            with client.session(policy="restricted") as session:
                ran = session.execute("x = 6\nprint('hi')\nx * 7")
                print("RESULT", ran.stdout.strip(), ran.result["text/plain"], ran.status, ran.ok)
                events = list(session.stream("name = input('who? ')\nprint('hello', name)", input=lambda prompt: "client"))
                print("STREAM", [e["type"] for e in events], "".join(e.get("text", "") for e in events).strip())
                print("LISTED", [s.id for s in client.sessions()] == [session.id])
            print("CLOSED", client.sessions())
            try:
                Client(url, token="wrong-token-of-sixteen").session()
            except ServerError as error:
                print("REFUSED", error.status, "Bearer" in error.detail)
            async def main():
                async with await AsyncClient(url, token=token).session() as session:
                    print("ASYNC", (await session.execute("sum(range(10))")).result["text/plain"],
                          [e["type"] async for e in session.stream("print(1)")])
            asyncio.run(main())
            """#)
        let run = try CLI.run([], via: ["/usr/bin/python3", script], environment: [
            "PYTHONPATH=\(Host.repository)/clients/python", "CAPSULE_URL=\(server.base)", "CAPSULE_TOKEN=\(server.token)"])
        #expect(run.status == 0, "\(run)")
        for line in ["HEALTHY True", "RESULT hi 42 ok True", "STREAM ['input_request', 'stream', 'done'] hello client", "LISTED True",
                     "CLOSED []", "REFUSED 401 True", "ASYNC 45 ['stream', 'done']"] {
            #expect(run.stdout.split(separator: "\n").contains(Substring(line)), "\(line)\n\(run)")
        }
    }

    @Test func fiftyClientsRunTwentyExecutionsEachAndNothingIsLost() async throws {
        let server = try ServedCapsule()
        defer { _ = server.stop() }
        let wrong = try await withThrowingTaskGroup(of: Int.self) { group in
            for client in 0..<50 {
                group.addTask {
                    let id = try await server.createSession()
                    var wrong = 0
                    for round in 0..<20 {
                        let ran = try await server.request(.POST, "/v1/sessions/\(id)/execute",
                                                           json: ["code": .string("n = \(client * 100 + round)\nprint('line', n)\nn * 2")])
                        if ran.json["stdout"] != .string("line \(client * 100 + round)\n") || ran.json["result"]?["text/plain"] != .string("\((client * 100 + round) * 2)") {
                            wrong += 1
                        }
                    }
                    _ = try await server.request(.DELETE, "/v1/sessions/\(id)")
                    return wrong
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(wrong == 0, "\(wrong) of 1000 executions came back wrong")
        let listed = try await server.request(.GET, "/v1/sessions")
        #expect(listed.json["sessions"]?.arrayValue?.isEmpty == true, "\(listed.text)")
    }

    @Test func sigtermDuringExecutionsShutsDownCleanly() async throws {
        // The running executions are interrupted; their clients get what was printed, the
        // KeyboardInterrupt and `done`; the server exits 0 and every sandbox ends with it.
        let server = try ServedCapsule()
        let busy = try await server.createSession(), idle = try await server.createSession()
        var pids: [Int] = []
        for id in [busy, idle] { pids.append(try await server.request(.GET, "/v1/sessions/\(id)").json["pid"]?.intValue ?? 0) }
        #expect(pids.allSatisfy { $0 > 0 && kill(pid_t($0), 0) == 0 })
        let running = Task {
            try await server.request(.POST, "/v1/sessions/\(busy)/execute", json: ["code": "import time\nprint('started', flush=True)\ntime.sleep(60)"])
        }
        try await Task.sleep(for: .milliseconds(500))
        let started = OS.now()
        let status = server.stop()
        let answer = try await running.value
        #expect(status == 0, "\(server.stderr)")
        #expect(Double(OS.now() - started) / 1e9 < 30, "the shutdown did not wait for the sleep")
        #expect(answer.json["stdout"] == "started\n" && answer.json["done"]?["status"] == "interrupted", "\(answer.text)")
        #expect(pids.allSatisfy { kill(pid_t($0), 0) != 0 }, "the sessions' sandboxes ended with the server")
    }
}
