// The broker's one check path, tested without a sandbox: what a call with bad arguments, too
// low a level, too many bytes or too many calls gets back, and what the audit hook and the
// approver see.
#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import Testing
@testable import CapsuleCapabilities
import CapsulePolicy
import CapsuleProtocol

final class RecordingAudit: AuditSink {
    let records = Mutex<[AuditRecord]>([])
    let approvals = Mutex<[(ApprovalRequest, ApprovalDecision)]>([])
    func call(_ record: AuditRecord) { records.withLock { $0.append(record) } }
    func approval(_ request: ApprovalRequest, decision: ApprovalDecision) { approvals.withLock { $0.append((request, decision)) } }
}

struct ScriptedApprover: Approver {
    let answer: ApprovalDecision
    func decide(_ request: ApprovalRequest, policy: Policy) async -> ApprovalDecision { answer }
}

func policy(_ text: String) throws -> Policy { try PolicyLoader.parse(text, file: "p.toml") }

func call(_ broker: Broker, _ capability: String, _ method: String, _ arguments: JSONValue = [:]) async -> CapabilityReply {
    switch broker.admit(CapabilityCall(id: "c1", capability: capability, method: method, arguments: arguments)) {
    case .answered(let reply): return reply
    case .admitted(let admitted): return await broker.perform(admitted)
    }
}

extension CapabilityReply {
    var exception: String? { if case .failure(let name, _, _) = self { name } else { nil } }
    var message: String { if case .failure(_, let text, _) = self { text } else { "" } }
    var value: JSONValue? { if case .value(let value) = self { value } else { nil } }
}

@Suite struct BrokerTests {
    @Test func anUngrantedCapabilityIsDeniedNamingTheTableAndLevel() async throws {
        let broker = Broker(policy: try policy("level = \"sandbox\"\n"))
        let reply = await call(broker, "net", "fetch", ["url": "https://example.com"])
        #expect(reply.exception == "CapabilityDenied")
        #expect(reply.message == "`net` is not granted: this policy (p.toml, level sandbox) has no [capabilities.net]; it needs a policy of level standard or above with [capabilities.net]")
        let unknown = await call(broker, "teleport", "go")
        #expect(unknown.message == "there is no capability `teleport`")
    }

    @Test func aDisabledTableGrantsNothing() async throws {
        let broker = Broker(policy: try policy("level = \"restricted\"\n[capabilities.env]\nenabled = false\nnames = [\"HOME\"]\n"))
        let reply = await call(broker, "env", "get", ["name": "HOME"])
        #expect(reply.message == "`env` is not granted: this policy (p.toml, level restricted) sets enabled = false in [capabilities.env]")
    }

    @Test func argumentsAreCheckedAgainstTheMethod() async throws {
        let broker = Broker(policy: try policy("level = \"restricted\"\n[capabilities.env]\nnames = [\"HOME\"]\n"))
        #expect(await call(broker, "env", "get").message == "env.get() missing required argument 'name'")
        #expect(await call(broker, "env", "get", ["name": 3]).message == "env.get(): 'name' must be str, not int")
        #expect(await call(broker, "env", "get", ["name": "HOME", "colour": "red"]).message
            == "env.get() got an unexpected keyword argument 'colour'")
        #expect(await call(broker, "env", "get", "HOME").message == "env.get(): the arguments are not an object")
        let missing = await call(broker, "env", "shout")
        #expect(missing.exception == "AttributeError")
        #expect(missing.message == "`env` has no method `shout`; it has: get, names")
    }

    @Test func envReadsOnlyListedNamesAtCallTime() async throws {
        let broker = Broker(policy: try policy("level = \"restricted\"\n[capabilities.env]\nnames = [\"CAPSULE_TEST_VALUE\"]\n"))
        setenv("CAPSULE_TEST_VALUE", "first", 1)
        #expect(await call(broker, "env", "get", ["name": "CAPSULE_TEST_VALUE"]).value == "first")
        setenv("CAPSULE_TEST_VALUE", "second", 1)
        #expect(await call(broker, "env", "get", ["name": "CAPSULE_TEST_VALUE"]).value == "second")
        unsetenv("CAPSULE_TEST_VALUE")
        #expect(await call(broker, "env", "get", ["name": "CAPSULE_TEST_VALUE", "default": "none"]).value == "none")
        #expect(await call(broker, "env", "get", ["name": "HOME"]).message
            == "`HOME` is not one of the names in [capabilities.env] (CAPSULE_TEST_VALUE)")
        #expect(await call(broker, "env", "names").value == ["CAPSULE_TEST_VALUE"])
    }

    @Test func theSixthCallWithinAMinuteIsRefused() async throws {
        let broker = Broker(policy: try policy("level = \"restricted\"\n[capabilities.env]\nnames = [\"HOME\"]\nrate_per_minute = 5\n"))
        for _ in 1...5 { #expect(await call(broker, "env", "names").value == ["HOME"]) }
        let sixth = await call(broker, "env", "names")
        #expect(sixth.exception == "CapabilityDenied")
        #expect(sixth.message == "rate limit: [capabilities.env] rate_per_minute = 5, and this call would be call 6 within a minute")
    }

    @Test func rateWindowsForgetCallsOlderThanAMinute() {
        var limiter = RateLimiter()
        let start: UInt64 = 100_000_000_000
        let answers = [limiter.admit("x", rate: 1, now: start), limiter.admit("x", rate: 1, now: start + 59_000_000_000),
                       limiter.admit("x", rate: 1, now: start + 61_000_000_000), limiter.admit("y", rate: 1, now: start + 61_000_000_000)]
        #expect(answers == [true, false, true, true], "a minute later the window is free again; each capability has its own")
    }

    @Test func maxBytesCapsWhatACallCarries() async throws {
        let broker = Broker(policy: try policy("level = \"sandbox\"\n[capabilities.display]\nmax_bytes = 10\n"))
        #expect(await call(broker, "display", "show", ["data": ["text/plain": "short"]]).value == ["text/plain": "short"])
        let big = await call(broker, "display", "show", ["data": ["text/plain": "far more than ten bytes"]])
        #expect(big.message == "display.show carries 23 bytes, more than [capabilities.display] max_bytes = 10 allows")
    }

    @Test func displayChecksTheBundle() async throws {
        let broker = Broker(policy: try policy("level = \"sandbox\"\n"))
        #expect(await call(broker, "display", "show", ["data": ["not a mime type": "x"]]).exception == "TypeError")
        #expect(await call(broker, "display", "show", ["data": ["text/html": 3]]).exception == "TypeError")
        #expect(await call(broker, "display", "show", ["data": [:]]).message == "display: the MIME bundle is empty")
    }

    @Test func aMethodAboveThePolicysLevelIsDenied() async throws {
        let broker = Broker(policy: try policy("level = \"restricted\"\n[capabilities.file]\nread = [\"/tmp\"]\n"))
        let reply = await call(broker, "file", "write_bytes", ["path": "/tmp/x", "data": .bytes([1])])
        #expect(reply.message == "file.write_bytes needs a policy of level standard or above; this policy (p.toml) is level restricted")
    }

    @Test func askHoldsEachCallForTheApprover() async throws {
        let text = "level = \"restricted\"\n[capabilities.env]\nnames = [\"HOME\"]\nask = true\n"
        let audit = RecordingAudit()
        let approving = Broker(policy: try policy(text), audit: audit, approver: ScriptedApprover(answer: .approved))
        #expect(await call(approving, "env", "names").value == ["HOME"])
        let denying = Broker(policy: try policy(text), audit: audit, approver: ScriptedApprover(answer: .denied("the reviewer said no")))
        let denied = await call(denying, "env", "names")
        #expect(denied.message == "env.names was not approved: the reviewer said no")
        let nobody = await call(Broker(policy: try policy(text)), "env", "names")
        #expect(nobody.message.hasSuffix("this session has no terminal and no --approver"))
        #expect(audit.approvals.withLock { $0.map(\.1) } == [.approved, .denied("the reviewer said no")])
        #expect(audit.records.withLock { $0.map(\.decision) } == [.allowed, .denied])
    }

    @Test func askQuestionsGoToTheApprover() async throws {
        let text = "level = \"restricted\"\n[capabilities.input]\n"
        let yes = Broker(policy: try policy(text), approver: ScriptedApprover(answer: .approved))
        #expect(await call(yes, "input", "ask", ["question": "go on?"]).value == true)
        let no = Broker(policy: try policy(text), approver: ScriptedApprover(answer: .denied("no")))
        #expect(await call(no, "input", "ask", ["question": "go on?"]).value == false)
    }

    @Test func everyCallIsAudited() async throws {
        let audit = RecordingAudit()
        let broker = Broker(policy: try policy("level = \"restricted\"\n[capabilities.env]\nnames = [\"HOME\"]\n"), audit: audit)
        _ = await call(broker, "env", "get", ["name": .string(String(repeating: "x", count: 500))])
        _ = await call(broker, "net", "fetch")
        _ = await call(broker, "env", "names")
        let records = audit.records.withLock { $0 }
        #expect(records.map(\.decision) == [.denied, .denied, .allowed])
        #expect(records[0].summary["name"]?.stringValue?.count == 201, "long arguments are clipped in the audit summary")
        #expect(records[1].capability == "net" && records[1].reason?.hasPrefix("`net` is not granted") == true)
    }

    @Test func configurationListsGrantedCapabilitiesOnly() throws {
        let broker = Broker(policy: try policy("level = \"restricted\"\n[capabilities.file]\nread = [\"/tmp\"]\n"))
        let names = broker.configuration.arrayValue?.compactMap { $0["name"]?.stringValue }
        #expect(names == ["display", "file"])
        let write = broker.configuration.arrayValue?[1]["methods"]?.arrayValue?.first { $0["name"] == "write_bytes" }
        #expect(write?["doc"]?.stringValue?.hasSuffix("(Needs a policy of level standard or above.)") == true)
    }
}

@Suite struct GlobTests {
    @Test(arguments: [
        ("**", "a/b/c.txt", true), ("*.csv", "a/b.csv", true), ("*.csv", "a/b.csv.bak", false),
        ("data/*.csv", "data/x.csv", true), ("data/*.csv", "data/sub/x.csv", false), ("data/**/x.csv", "data/x.csv", true),
        ("data/**/x.csv", "data/a/b/x.csv", true), ("?.txt", "a.txt", true), ("?.txt", "ab.txt", false),
        ("logs/**", "logs/a/b", true), ("logs/**", "other/a", false),
    ])
    func globsMatch(_ pattern: String, _ path: String, _ expected: Bool) {
        #expect(Glob.matches(pattern, path) == expected)
    }

    @Test(arguments: [".env", "app/.env", ".env.local", "id_rsa", "keys/id_ed25519.pub", "cert.pem", "tls.key", ".git/config",
                      "repo/.git/config", ".netrc", ".aws/credentials", "home/.ssh/known_hosts", "credentials"])
    func secretLookingFiles(_ path: String) { #expect(Glob.isSecret(path)) }

    @Test(arguments: ["a.txt", "environment.md", "keyboard.txt", "src/main.py", "git/config"])
    func ordinaryFiles(_ path: String) { #expect(!Glob.isSecret(path)) }
}
