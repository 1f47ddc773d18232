import CapsuleOS
import CapsuleProtocol

/// `audit stats`: calls and denials per capability, per method and per session, the targets
/// denied most, totals, and the first and last times. A call is every `cap.call` and
/// `cap.denied`; a denial is a `cap.denied`.
public struct AuditStats: Sendable {
    struct Count: Sendable {
        var calls = 0
        var denied = 0
        var failed = 0

        mutating func add(_ kind: String, _ decision: String?) {
            calls += 1
            if kind == "cap.denied" { denied += 1 }
            if decision == "failed" { failed += 1 }
        }

        var json: [(String, JSONValue)] {
            [("calls", .number(Double(calls))), ("denied", .number(Double(denied))), ("failed", .number(Double(failed)))]
        }
    }

    struct SessionCount: Sendable {
        var policy = ""
        var first = ""
        var last = ""
        var executions = 0
        var limitHits = 0
        var count = Count()
    }

    private(set) var events = 0
    private(set) var first: String?
    private(set) var last: String?
    private(set) var kinds: [String: Int] = [:]
    private(set) var capabilities: [String: Count] = [:]
    private(set) var methods: [String: Count] = [:]
    private(set) var sessions: [String: SessionCount] = [:]
    /// Denials by capability.method and target.
    private(set) var deniedTargets: [String: Int] = [:]
    private var total = Count()

    public init() {}

    public mutating func add(_ event: JSONValue) {
        guard let kind = event["kind"]?.stringValue else { return }
        events += 1
        kinds[kind, default: 0] += 1
        if let ts = event["ts"]?.stringValue {
            if first == nil { first = ts }
            last = ts
        }
        let session = event["session"]?.stringValue
        if let session, let ts = event["ts"]?.stringValue {
            if sessions[session] == nil { sessions[session] = SessionCount(first: ts) }
            sessions[session]!.last = ts
            if let policy = event["policy"]?.stringValue { sessions[session]!.policy = policy }
            if kind == "exec.start" { sessions[session]!.executions += 1 }
            if kind == "limit.hit" { sessions[session]!.limitHits += 1 }
        }
        guard kind == "cap.call" || kind == "cap.denied", let capability = event["capability"]?.stringValue else { return }
        let call = "\(capability).\(event["method"]?.stringValue ?? "?")"
        let decision = event["decision"]?.stringValue
        total.add(kind, decision)
        capabilities[capability, default: Count()].add(kind, decision)
        methods[call, default: Count()].add(kind, decision)
        if let session { sessions[session]?.count.add(kind, decision) }
        if kind == "cap.denied" { deniedTargets["\(call) \(AuditTable.target(event["args"]))", default: 0] += 1 }
    }

    /// Most first, then by name, so the same log always gives the same order.
    private static func ranked<V>(_ items: [String: V], by count: (V) -> Int) -> [(String, V)] {
        items.sorted { count($0.value) != count($1.value) ? count($0.value) > count($1.value) : $0.key < $1.key }
    }

    static let topTargets = 10

    public var json: JSONValue {
        let totals: [(String, JSONValue)] = [
            ("events", .number(Double(events))), ("sessions", .number(Double(sessions.count))),
            ("executions", .number(Double(kinds["exec.start"] ?? 0))),
        ] + total.json + [
            ("approvals", .number(Double(kinds["approval"] ?? 0))), ("limit_hits", .number(Double(kinds["limit.hit"] ?? 0))),
            ("sandbox_errors", .number(Double(kinds["sandbox.error"] ?? 0))),
        ]
        let capabilityList: [JSONValue] = Self.ranked(capabilities, by: \.calls).map { name, count in
            let own = Self.ranked(methods.filter { $0.key.hasPrefix(name + ".") }, by: \.calls).map { call, count in
                JSONValue.object([("method", .string(String(call.dropFirst(name.count + 1))))] + count.json)
            }
            return .object([("capability", .string(name))] + count.json + [("methods", .array(own))])
        }
        let sessionList: [JSONValue] = Self.ranked(sessions, by: \.count.calls).map { id, session in
            .object([("session", .string(id)), ("policy", .string(session.policy)), ("first", .string(session.first)),
                     ("last", .string(session.last)), ("executions", .number(Double(session.executions))),
                     ("limit_hits", .number(Double(session.limitHits)))] + session.count.json)
        }
        let targets: [JSONValue] = Self.ranked(deniedTargets, by: { $0 }).prefix(Self.topTargets).map { key, count in
            let (call, target) = Self.split(key)
            return .object([("call", .string(call)), ("target", .string(target)), ("count", .number(Double(count)))])
        }
        return .object([
            ("totals", .object(totals)), ("first", first.map { .string($0) } ?? .null), ("last", last.map { .string($0) } ?? .null),
            ("kinds", .object(kinds.sorted { $0.key < $1.key }.map { ($0.key, .number(Double($0.value))) })),
            ("capabilities", .array(capabilityList)), ("sessions", .array(sessionList)), ("top_denied_targets", .array(targets)),
        ])
    }

    private static func split(_ key: String) -> (String, String) {
        let space = key.firstIndex(of: " ") ?? key.endIndex
        return (String(key[..<space]), String(key[space...].dropFirst()))
    }

    /// The report for people; every logged string escaped.
    public var text: String {
        func cell(_ text: String, _ width: Int) -> String {
            let safe = text.escapingControlCharacters
            let clipped = safe.count > width ? String(safe.prefix(width - 1)) + "…" : safe
            return clipped + String(repeating: " ", count: max(1, width - clipped.count + 1))
        }
        func counts(_ count: Count) -> String { "\(counted(count.calls, "call")), \(count.denied) denied, \(count.failed) failed" }
        var lines = [
            "\(counted(events, "event")) from \(first ?? "-") to \(last ?? "-") (UTC)",
            "\(counted(sessions.count, "session")), \(counted(kinds["exec.start"] ?? 0, "execution")), \(counts(total)), "
                + "\(counted(kinds["approval"] ?? 0, "approval")), \(counted(kinds["limit.hit"] ?? 0, "limit", "hit")), "
                + "\(counted(kinds["sandbox.error"] ?? 0, "sandbox error"))",
        ]
        if !capabilities.isEmpty {
            lines += ["", cell("CAPABILITY", 34) + cell("CALLS", 8) + cell("DENIED", 8) + "FAILED"]
            for (name, count) in Self.ranked(capabilities, by: \.calls) {
                lines.append(cell(name, 34) + cell("\(count.calls)", 8) + cell("\(count.denied)", 8) + "\(count.failed)")
                for (call, own) in Self.ranked(methods.filter({ $0.key.hasPrefix(name + ".") }), by: \.calls) {
                    lines.append(cell("  " + call, 34) + cell("\(own.calls)", 8) + cell("\(own.denied)", 8) + "\(own.failed)")
                }
            }
        }
        if !sessions.isEmpty {
            lines += ["", cell("SESSION", 16) + cell("POLICY", 24) + cell("FIRST (UTC)", 19) + cell("EXECS", 6)
                + cell("CALLS", 6) + cell("DENIED", 6) + "LIMITS"]
            for (id, session) in Self.ranked(sessions, by: \.count.calls) {
                let start = AuditTable.readable(session.first)
                lines.append(cell(id, 16) + cell(session.policy, 24) + cell(start, 19) + cell("\(session.executions)", 6)
                    + cell("\(session.count.calls)", 6) + cell("\(session.count.denied)", 6) + "\(session.limitHits)")
            }
        }
        if !deniedTargets.isEmpty {
            lines += ["", cell("DENIED", 6) + cell("CALL", 24) + "TARGET (the most denied)"]
            for (key, count) in Self.ranked(deniedTargets, by: { $0 }).prefix(Self.topTargets) {
                let (call, target) = Self.split(key)
                lines.append(cell("\(count)", 6) + cell(call, 24) + target.escapingControlCharacters.clipped(to: 80))
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }
}

/// "1 session", "2 sessions"; `after` follows the noun ("1 limit hit").
func counted(_ count: Int, _ noun: String, _ after: String = "") -> String {
    "\(count) \(noun)\(count == 1 ? "" : "s")" + (after.isEmpty ? "" : " \(after)")
}
