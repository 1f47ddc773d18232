// The net capability end to end: code in the sandbox fetches from a real HTTP server on loopback
// through the broker and capsule-net. Every refusal happens before a connection: no test ever
// sends traffic anywhere but 127.0.0.1 and 127.0.0.2.
#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import Testing
import CapsuleCapabilities
import CapsulePolicy
import CapsuleRuntime
import CapsuleOS

/// Tests/Integration/Servers/http_server.py (or `script`) on `address`, killed when this goes away.
final class HTTPServer {
    let pid: pid_t
    let port: Int
    let log: String
    let address: String

    init(address: String = "127.0.0.1", script: String = "http_server.py") throws {
        self.address = address
        log = try Host.temporaryDirectory() + "/requests.log"
        let (read, write) = try OS.socketPair()
        pid = try OS.spawn("/usr/bin/python3", arguments: ["\(Host.repository)/Tests/Integration/Servers/\(script)", address, log],
                           descriptors: [(1, write)])
        OS.close(write)
        defer { OS.close(read) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64)
        while !bytes.contains(UInt8(ascii: "\n")) {
            let count = buffer.withUnsafeMutableBytes { raw in (try? OS.read(read, into: raw)) ?? 0 }
            if count <= 0 { break }
            bytes += buffer[0..<count]
        }
        guard let port = Int(String(decoding: bytes, as: UTF8.self).trimmingCharactersNewline) else {
            kill(pid, SIGKILL)
            throw SystemError("\(script) did not start", errno: EIO)
        }
        self.port = port
    }

    var base: String { "http://\(address):\(port)" }
    var requests: String { Host.readText(log) ?? "" }

    deinit {
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
    }
}

extension String {
    var trimmingCharactersNewline: String { split(separator: "\n").first.map(String.init) ?? "" }
}

@Suite(.serialized) struct NetTests {
    func policy(_ urls: [String], extra: String = "") throws -> Policy {
        try PolicyLoader.parse("""
            level = "standard"
            [capabilities.net]
            urls = [\(urls.map { "\"\($0)\"" }.joined(separator: ", "))]
            \(extra)
            """, file: "net.toml")
    }

    @Test func fetchesFromAListedLoopbackServer() throws {
        let server = try HTTPServer()
        let transcript = try Sandboxed.runFresh("""
            from capsule import net
            r = net.fetch("\(server.base)/hello")
            print(r.status, r.ok, r.text, r.headers["content-type"])
            print(net.fetch("\(server.base)/json").json())
            print(net.fetch("\(server.base)/echo", method="GET", json={"a": 1}).status)
            """, policy: policy(["\(server.base)/"]))
        #expect(transcript.lines == ["200 True hello over http text/plain; charset=utf-8", "{'answer': 42}", "200"], "\(transcript)")
        #expect(server.requests.contains(#""path": "/hello""#))
    }

    @Test func everythingNotListedIsRefusedBeforeAnyConnection() throws {
        let server = try HTTPServer()
        let transcript = try Sandboxed.runFresh("""
            from capsule import net, CapabilityDenied
            for url in ["http://127.0.0.1:\(server.port + 1)/hello", "http://10.0.0.1/", "http://169.254.169.254/latest/meta-data/",
                        "http://[::ffff:127.0.0.1]:\(server.port)/hello", "http://[fd00:ec2::254]/", "http://metadata.google.internal/",
                        "\(server.base)/../hello", "\(server.base)/%2e%2e/hello", "https://\(server.address):\(server.port)/hello",
                        "http://user:pw@127.0.0.1:\(server.port)/hello", "file:///etc/passwd"]:
                try:
                    net.fetch(url)
                    print("FETCHED", url)
                except (CapabilityDenied, ValueError) as e:
                    print(type(e).__name__)
            try:
                net.fetch("\(server.base)/hello", method="DELETE")
            except CapabilityDenied as e:
                print(e)
            """, policy: policy(["\(server.base)/"]))
        #expect(transcript.lines == Array(repeating: "CapabilityDenied", count: 9) + ["ValueError", "ValueError",
                                   "DELETE is not one of the methods [capabilities.net] allows (GET)"], "\(transcript)")
        #expect(server.requests.isEmpty, "nothing reached the server: \(server.requests)")
    }

    @Test func aListedNameThatResolvesToLoopbackIsRefused() throws {
        let server = try HTTPServer()
        let transcript = try Sandboxed.runFresh("""
            from capsule import net, CapabilityDenied
            try:
                net.fetch("http://localhost:\(server.port)/hello")
            except CapabilityDenied as e:
                print(e)
            """, policy: policy(["http://localhost:\(server.port)/"]))
        #expect(transcript.lines.first?.hasPrefix("'localhost' resolves to ") == true, "\(transcript)")
        #expect(transcript.lines.first?.contains("only a URL that names the address itself in [capabilities.net] urls may reach it") == true)
        #expect(server.requests.isEmpty)
    }

    @Test func redirectsAreCheckedHopByHop() throws {
        let server = try HTTPServer()
        let other = try HTTPServer()
        let transcript = try Sandboxed.runFresh("""
            from capsule import net, CapabilityDenied
            r = net.fetch("\(server.base)/redirect?to=/hello")
            print(r.status, r.text, r.url)
            try:
                net.fetch("\(server.base)/redirect?to=\(other.base)/hello")
            except CapabilityDenied as e:
                print(e)
            """, policy: policy(["\(server.base)/"]))
        #expect(transcript.lines == [
            "200 hello over http \(server.base)/hello",
            "a redirect was refused: '\(other.base)/hello' is not within the urls of [capabilities.net] (\(server.base)/)",
        ], "\(transcript)")
        #expect(other.requests.isEmpty, "the unlisted server saw nothing")
    }

    @Test func aBrokeredCredentialReachesItsHostOnlyAndTheCodeNeverSeesIt() throws {
        let server = try HTTPServer()
        let other = try HTTPServer(address: "127.0.0.2")
        setenv("CAPSULE_TEST_NET_KEY", "s3cret-value", 1)
        defer { unsetenv("CAPSULE_TEST_NET_KEY") }
        let audit = RecordingAuditSink()
        let policy = try policy(["\(server.base)/", "\(other.base)/"], extra: """
            [capabilities.net.credentials]
            "127.0.0.1" = { header = "X-Api-Key", value_from_env = "CAPSULE_TEST_NET_KEY" }
            """)
        let session = try Session(policy: policy, location: try Sandboxed.location(), broker: Broker(policy: policy, audit: audit))
        defer { session.shutdown(grace: 1) }
        let transcript = Sandboxed.run("""
            import os
            from capsule import net
            r = net.fetch("\(server.base)/key")
            print("key accepted:", r.text)
            print(net.fetch("\(server.base)/redirect?to=\(other.base)/echo", headers={"Authorization": "Bearer mine"}).status)
            print(dict(os.environ), r.header_list)
            for path in ["/proc/1/environ", "/proc/self/environ"]:
                try:
                    print(open(path, "rb").read())
                except OSError as e:
                    print(type(e).__name__)
            """, in: session)
        #expect(transcript.lines.first == "key accepted: yes", "\(transcript)")
        #expect(transcript.lines.dropFirst().first == "200", "\(transcript)")
        #expect(!transcript.stdout.contains("s3cret") && !transcript.stderr.contains("s3cret"), "the code saw the secret\n\(transcript)")
        #expect(server.requests.contains("s3cret-value"), "the listed host got the credential")
        #expect(!other.requests.contains("s3cret-value"), "a redirect to another host does not carry it: \(other.requests)")
        #expect(!other.requests.contains("Bearer mine"), "nor the code's own Authorization header")
        #expect(!audit.records.withLock { "\($0)" }.contains("s3cret"), "the audit hook never sees it")
        #expect(audit.records.withLock { $0.count } == 2)
    }

    @Test func responsesAreCappedAtMaxBytesAndTimeIsCapped() throws {
        let server = try HTTPServer()
        let transcript = try Sandboxed.runFresh("""
            from capsule import net, CapabilityDenied
            print(len(net.fetch("\(server.base)/big?n=900").content))
            try:
                net.fetch("\(server.base)/big?n=5000")
            except CapabilityDenied as e:
                print(e)
            try:
                net.fetch("\(server.base)/slow?s=5", timeout=0.5)
            except TimeoutError as e:
                print("TimeoutError")
            """, policy: policy(["\(server.base)/"], extra: "max_bytes = 1000"))
        #expect(transcript.lines == [
            "900",
            "the response from '\(server.base)/big?n=5000' is larger than the 1000 bytes a call may return (max_bytes in [capabilities.net])",
            "TimeoutError",
        ], "\(transcript)")
    }
}

final class RecordingAuditSink: AuditSink {
    let records = Mutex<[AuditRecord]>([])
    func call(_ record: AuditRecord) { records.withLock { $0.append(record) } }
    func approval(_ request: ApprovalRequest, decision: ApprovalDecision) {}
}
