// net.websocket end to end: code in the sandbox talks to a real WebSocket server on loopback
// (Servers/websocket_server.py) through the broker and capsule-net. Every refusal happens before
// a connection: no test sends traffic anywhere but 127.0.0.1.
#if canImport(Glibc)
import Glibc
#endif
import Testing
import CapsuleCapabilities
import CapsulePolicy
import CapsuleRuntime
import CapsuleOS

@Suite(.serialized) struct WebSocketTests {
    func server() throws -> HTTPServer { try HTTPServer(script: "websocket_server.py") }

    /// Whether `check` holds within 10 s: the server logs a connection's end on its own thread.
    func eventually(_ check: () -> Bool) -> Bool {
        for _ in 0..<100 where !check() { Host.sleep(seconds: 0.1) }
        return check()
    }

    func policy(_ urls: [String], level: String = "trusted", websocket: Bool = true, extra: String = "") throws -> Policy {
        try PolicyLoader.parse("""
            level = "\(level)"
            [capabilities.net]
            urls = [\(urls.map { "\"\($0)\"" }.joined(separator: ", "))]
            \(websocket ? "websocket = true" : "")
            \(extra)
            """, file: "ws.toml")
    }

    @Test func textAndBinaryMessagesEchoThroughTheBroker() throws {
        let server = try server()
        let transcript = try Sandboxed.runFresh("""
            from capsule import net
            with net.websocket("ws://127.0.0.1:\(server.port)/echo") as ws:
                ws.send("hello")
                print(repr(ws.recv()))
                ws.send(b"\\x00\\xffbin")
                print(repr(ws.recv()))
                ws.send(bytearray("é€", "utf-8"))
                print(ws.recv().decode())
                ws.send("é€")
                print(ws.recv(timeout=10), ws)
            print(ws.closed, ws.close_code, ws)
            """, policy: policy(["http://127.0.0.1:\(server.port)/echo"])) // the http:// entry allows ws:// too
        #expect(transcript.lines == ["'hello'", #"b'\x00\xffbin'"#, "é€", "é€ <WebSocket ws://127.0.0.1:\(server.port)/echo open>",
                                     "True 1000 <WebSocket ws://127.0.0.1:\(server.port)/echo closed>"], "\(transcript)")
        #expect(eventually { server.requests.contains(#""ended": "/echo""#) }, "the close ended the connection: \(server.requests)")
    }

    @Test func withoutWebSocketTrueOrBelowTrustedItIsRefused() throws {
        let server = try server()
        let code = """
            from capsule import net, CapabilityDenied
            try:
                net.websocket("ws://127.0.0.1:\(server.port)/echo")
            except CapabilityDenied as e:
                print(e)
            """
        let trusted = try Sandboxed.runFresh(code, policy: policy(["ws://127.0.0.1:\(server.port)/"], websocket: false))
        #expect(trusted.lines == ["net.websocket needs `websocket = true` in [capabilities.net] (capabilities.net.websocket, level trusted); "
            + "this policy (ws.toml, level trusted) does not set it"], "\(trusted)")
        let standard = try Sandboxed.runFresh(code, policy: policy(["http://127.0.0.1:\(server.port)/"], level: "standard", websocket: false))
        #expect(standard.lines == ["net.websocket needs a policy of level trusted or above; this policy (ws.toml) is level standard"], "\(standard)")
        #expect(server.requests.isEmpty, "nothing reached the server: \(server.requests)")
    }

    @Test func unlistedURLsAndSpecialAddressesAreRefusedBeforeAnyConnection() throws {
        let server = try server()
        let transcript = try Sandboxed.runFresh("""
            from capsule import net, CapabilityDenied
            for url in ["ws://127.0.0.1:\(server.port)/other", "ws://10.0.0.1/echo", "ws://169.254.169.254/latest",
                        "wss://127.0.0.1:\(server.port)/echo", "ws://[::ffff:127.0.0.1]:\(server.port)/echo",
                        "ws://localhost:\(server.port)/echo", "ws://127.0.0.1:\(server.port)/echo/../other",
                        "http://127.0.0.1:\(server.port)/echo", "ws://user:pw@127.0.0.1:\(server.port)/echo"]:
                try:
                    net.websocket(url)
                    print("OPENED", url)
                except (CapabilityDenied, ValueError) as e:
                    print(type(e).__name__, e)
            try:
                net.fetch("ws://127.0.0.1:\(server.port)/echo")
            except ValueError as e:
                print(e)
            """, policy: policy(["ws://127.0.0.1:\(server.port)/echo", "ws://localhost:\(server.port)/echo"]))
        let listed = "(ws://127.0.0.1:\(server.port)/echo, ws://localhost:\(server.port)/echo)"
        #expect(transcript.lines == [
            "CapabilityDenied 'ws://127.0.0.1:\(server.port)/other' is not within the urls of [capabilities.net] \(listed)",
            "CapabilityDenied 'ws://10.0.0.1/echo' is not within the urls of [capabilities.net] \(listed)",
            "CapabilityDenied 'ws://169.254.169.254/latest' is not within the urls of [capabilities.net] \(listed)",
            "CapabilityDenied 'wss://127.0.0.1:\(server.port)/echo' is not within the urls of [capabilities.net] \(listed)",
            "CapabilityDenied 'ws://[::ffff:127.0.0.1]:\(server.port)/echo' is not within the urls of [capabilities.net] \(listed)",
            "CapabilityDenied 'localhost' resolves to 127.0.0.1, a loopback address (127.0.0.0/8); "
                + "only a URL that names the address itself in [capabilities.net] urls may reach it",
            "CapabilityDenied 'ws://127.0.0.1:\(server.port)/echo/../other' is not within the urls of [capabilities.net] \(listed)",
            "ValueError net.websocket: 'http://127.0.0.1:\(server.port)/echo' is not a ws:// or wss:// URL (user names and passwords are not allowed)",
            "ValueError net.websocket: 'ws://user:pw@127.0.0.1:\(server.port)/echo' is not a ws:// or wss:// URL (user names and passwords are not allowed)",
            "net.fetch: 'ws://127.0.0.1:\(server.port)/echo' is not an http:// or https:// URL (user names and passwords are not allowed)",
        ], "\(transcript)")
        #expect(server.requests.isEmpty, "nothing reached the server: \(server.requests)")
    }

    @Test func aBrokeredCredentialReachesTheHandshakeAndTheCodeNeverSeesIt() throws {
        let server = try server()
        setenv("CAPSULE_TEST_WS_KEY", "s3cret-value", 1)
        defer { unsetenv("CAPSULE_TEST_WS_KEY") }
        let audit = RecordingAuditSink()
        let policy = try policy(["ws://127.0.0.1:\(server.port)/"], extra: """
            [capabilities.net.credentials]
            "127.0.0.1" = { header = "X-Api-Key", value_from_env = "CAPSULE_TEST_WS_KEY" }
            """)
        let session = try Session(policy: policy, location: try Sandboxed.location(), broker: Broker(policy: policy, audit: audit))
        defer { session.shutdown(grace: 1) }
        let transcript = Sandboxed.run("""
            import os
            from capsule import net
            with net.websocket("ws://127.0.0.1:\(server.port)/key", headers={"X-Mine": "visible", "Sec-WebSocket-Key": "forged"}) as ws:
                print("key accepted:", ws.recv(), vars(ws))
            print(dict(os.environ))
            """, in: session)
        #expect(transcript.lines.first?.hasPrefix("key accepted: yes") == true, "\(transcript)")
        #expect(!transcript.stdout.contains("s3cret") && !transcript.stderr.contains("s3cret"), "the code saw the secret\n\(transcript)")
        #expect(server.requests.contains("s3cret-value"), "the handshake carried the credential: \(server.requests)")
        #expect(server.requests.contains(#""X-Mine": "visible""#), "and the code's own header")
        #expect(!server.requests.contains("forged"), "but not a handshake header the code tried to set")
        #expect(!audit.records.withLock { "\($0)" }.contains("s3cret"), "the audit hook never sees it")
        #expect(audit.records.withLock { $0.map(\.method) } == ["websocket", "ws_recv", "ws_close"])
    }

    @Test func aMessageOverMaxBytesFailsTheRecvAndClosesTheSocket() throws {
        let server = try server()
        let transcript = try Sandboxed.runFresh("""
            from capsule import net, CapabilityDenied
            base = "ws://127.0.0.1:\(server.port)"
            ws = net.websocket(base + "/big?n=900")
            print(len(ws.recv()))
            for path in ["/big?n=5000", "/fragments?n=5000&k=10", "/huge"]:
                ws = net.websocket(base + path)
                try:
                    ws.recv()
                except CapabilityDenied as e:
                    print(e)
                try:
                    ws.recv()
                except ConnectionError as e:
                    print(type(e).__name__, e.code)
            ws = net.websocket(base + "/echo")
            try:
                ws.send("x" * 2000)
            except CapabilityDenied as e:
                print(e)
            ws.send("still open")
            print(ws.recv())
            """, policy: policy(["ws://127.0.0.1:\(server.port)/"], extra: "max_bytes = 1000"))
        func refused(_ path: String) -> String {
            "a message on the WebSocket to 'ws://127.0.0.1:\(server.port)\(path)' is larger than the 1000 bytes a call may return "
                + "(max_bytes in [capabilities.net]); the WebSocket was closed"
        }
        #expect(transcript.lines == [
            "900",
            refused("/big?n=5000"), "WebSocketClosed 1009",
            refused("/fragments?n=5000&k=10"), "WebSocketClosed 1009",
            refused("/huge"), "WebSocketClosed 1009",
            "net.ws_send carries 2000 bytes, more than [capabilities.net] max_bytes = 1000 allows",
            "still open",
        ], "\(transcript)")
    }

    @Test func thePeerClosingIsAnOrdinaryExceptionOrTheEndOfIteration() throws {
        let server = try server()
        let transcript = try Sandboxed.runFresh("""
            from capsule import net
            base = "ws://127.0.0.1:\(server.port)"
            ws = net.websocket(base + "/close")
            try:
                ws.recv()
            except ConnectionError as e:
                print(type(e).__name__, e.code, e.reason, ws.closed, "|", e)
            ws = net.websocket(base + "/drop")
            ws.send("bye")
            try:
                ws.recv()
            except ConnectionError as e:
                print(type(e).__name__, e.code, e.reason)
            ws = net.websocket(base + "/echo")
            for word in ["one", "two", "close me"]:
                ws.send(word)
            print(list(ws), ws.close_code, ws.close_reason)
            with net.websocket(base + "/ping") as ws:
                print(ws.recv())
            try:
                net.websocket(base + "/reject")
            except ConnectionError as e:
                print(e)
            try:
                net.websocket("wss://127.0.0.1:\(server.port)/echo", timeout=1)  # TLS to a server that never answers it
            except TimeoutError as e:
                print(e)
            """, policy: policy(["ws://127.0.0.1:\(server.port)/", "https://127.0.0.1:\(server.port)/"]))
        #expect(transcript.lines == [
            "WebSocketClosed 4001 bye True | the WebSocket to ws://127.0.0.1:\(server.port)/close is closed (code 4001: bye)",
            "WebSocketClosed 1006 the connection ended without a close frame",
            "['one', 'two'] 1000 as asked",
            "pong received",
            "the server at 'ws://127.0.0.1:\(server.port)/reject' answered 403 Forbidden instead of accepting the WebSocket",
            "the WebSocket handshake with 'wss://127.0.0.1:\(server.port)/echo' took longer than 1.0 s",
        ], "\(transcript)")
    }

    @Test func unknownClosedAndForgedHandlesAreClearErrors() throws {
        let server = try server()
        let transcript = try Sandboxed.runFresh("""
            from capsule import net
            ws = net.websocket("ws://127.0.0.1:\(server.port)/echo")
            handle = ws._socket
            ws.close()
            ws.close()  # a second close does nothing
            for attempt in [lambda: ws.recv(), lambda: ws.send("x"), lambda: net.ws_recv(handle), lambda: net.ws_send(handle, "x"),
                            lambda: net.ws_recv("ws-0"), lambda: net.ws_send("", "x"), lambda: net.ws_close("../" + handle)]:
                try:
                    attempt()
                    print("ANSWERED")
                except (ConnectionError, ValueError) as e:
                    print(type(e).__name__, e)
            ws = net.websocket("ws://127.0.0.1:\(server.port)/echo")
            for code in [999, 1005, 5000]:
                try:
                    ws.close(code)
                except ValueError as e:
                    print(e)
            try:
                ws.send(42)
            except TypeError as e:
                print(e)
            ws.close(4000, "done")
            """, policy: policy(["ws://127.0.0.1:\(server.port)/"]))
        let url = "ws://127.0.0.1:\(server.port)/echo"
        let handle = transcript.stdout.split(separator: "'").dropFirst().first.map(String.init) ?? "?"
        #expect(transcript.lines == [
            "WebSocketClosed the WebSocket to \(url) is closed (code 1000)",
            "WebSocketClosed the WebSocket to \(url) is closed (code 1000)",
            "ConnectionError the WebSocket '\(handle)' is closed (its close() was called); open a new one with net.websocket(url)",
            "ConnectionError the WebSocket '\(handle)' is closed (its close() was called); open a new one with net.websocket(url)",
            "ValueError no WebSocket 'ws-0' was opened in this session; net.websocket(url) opens one",
            "ValueError no WebSocket '' was opened in this session; net.websocket(url) opens one",
            "ValueError no WebSocket '../\(handle)' was opened in this session; net.websocket(url) opens one",
            "WebSocket.close(): code 999 is not 1000 or an application code from 3000 to 4999",
            "WebSocket.close(): code 1005 is not 1000 or an application code from 3000 to 4999",
            "WebSocket.close(): code 5000 is not 1000 or an application code from 3000 to 4999",
            "WebSocket.send() takes str or bytes, not int",
        ], "\(transcript)")
        #expect(handle.hasPrefix("ws-") && handle.count > 12, "a handle is random: \(handle)")
    }

    @Test func anotherSessionsHandleReachesNothing() throws {
        let server = try server()
        let policy = try policy(["ws://127.0.0.1:\(server.port)/"])
        try Sandboxed.withSession(policy) { owner in
            let opened = Sandboxed.run("""
                from capsule import net
                ws = net.websocket("ws://127.0.0.1:\(server.port)/echo")
                print(ws._socket)
                """, in: owner)
            let handle = opened.lines.first ?? "?"
            #expect(handle.hasPrefix("ws-"), "\(opened)")
            let thief = try Sandboxed.runFresh("""
                from capsule import net
                for attempt in [lambda: net.ws_recv("\(handle)", timeout=1), lambda: net.ws_send("\(handle)", "stolen"),
                                lambda: net.ws_close("\(handle)")]:
                    try:
                        attempt()
                        print("REACHED")
                    except ValueError as e:
                        print(e)
                """, policy: policy)
            #expect(thief.lines == Array(repeating: "no WebSocket '\(handle)' was opened in this session; net.websocket(url) opens one",
                                         count: 3), "\(thief)")
            let still = Sandboxed.run("ws.send('mine')\nprint(ws.recv())", in: owner)
            #expect(still.lines == ["mine"], "the owner's socket is untouched: \(still)")
        }
        #expect(!server.requests.contains("stolen"))
    }

    @Test func theRateCountsTheOpenAndEachSendButNotTheWaiting() throws {
        let server = try server()
        let transcript = try Sandboxed.runFresh("""
            from capsule import net, CapabilityDenied
            ws = net.websocket("ws://127.0.0.1:\(server.port)/echo")
            for word in ["one", "two"]:
                ws.send(word)
                print(ws.recv())
            try:
                ws.recv(timeout=0.1)
            except TimeoutError as e:
                print("TimeoutError", e)
            try:
                ws.send("three")
            except CapabilityDenied as e:
                print(e)
            ws.close()
            """, policy: policy(["ws://127.0.0.1:\(server.port)/"], extra: "rate_per_minute = 3"))
        #expect(transcript.lines == [
            "one", "two",
            "TimeoutError no message came on the WebSocket to 'ws://127.0.0.1:\(server.port)/echo' within 0.1 s",
            "rate limit: [capabilities.net] rate_per_minute = 3, and this call would be call 4 within a minute",
        ], "\(transcript)")
    }

    @Test func theSessionsEndClosesItsSocketsEvenMidRecv() throws {
        let server = try server()
        var policy = try policy(["ws://127.0.0.1:\(server.port)/"])
        policy.limits.timeoutSeconds = 2
        let session = try Sandboxed.start(policy)
        let transcript = Sandboxed.run("""
            from capsule import net
            ws = net.websocket("ws://127.0.0.1:\(server.port)/echo")
            print("waiting", flush=True)
            ws.recv()
            """, in: session)
        #expect(transcript.lines == ["waiting"], "\(transcript)")
        session.shutdown(grace: 1)
        // The helper holding the socket is stopped with the session; the server sees the end.
        #expect(eventually { server.requests.contains(#""ended": "/echo""#) }, "the connection outlived its session: \(server.requests)")
        Sandboxed.expectNewSessionWorks()
    }
}
