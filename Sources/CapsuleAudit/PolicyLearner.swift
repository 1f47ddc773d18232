import CapsuleCapabilities
import CapsuleOS
import CapsulePolicy
import CapsuleProtocol

/// `capsule policy learn`: the narrowest policy that would have allowed every capability call an
/// audit log records, as commented TOML (docs/policy.md, "Record, then tighten"). Pure: events
/// in, text and notes out; the caller reads the files.
public enum PolicyLearner {
    /// A policy a session of the log ran under (its events' `policy` field), as the caller found it.
    public enum Source: Sendable {
        /// Read and unchanged since the log was written (its SHA-256 is the log's `policy_sha256`).
        case loaded(Policy)
        /// Why it could not be used: not readable here, or changed since.
        case unavailable(String)
    }

    public struct Options: Sendable {
        /// Only the session whose id starts with this.
        public var session: String?
        /// Limits and `[sandbox]`/`[audit]` settings start from this policy.
        public var base: Policy
        /// What the header names as the log (the files given).
        public var logName: String
        /// The policies the sessions ran under, by name.
        public var policies: [String: Source]

        public init(session: String? = nil, base: Policy, logName: String, policies: [String: Source] = [:]) {
            self.session = session
            self.base = base
            self.logName = logName
            self.policies = policies
        }
    }

    public struct Learned: Sendable {
        /// The policy file: commented TOML that `capsule policy check` accepts.
        public let text: String
        /// The same policy, parsed back.
        public let policy: Policy
        /// What the user should know: a grant left as a placeholder, a path that could not be placed.
        public let notes: [String]
    }

    /// (name, SHA-256) of each policy the log's sessions ran under, for the caller to read.
    public static func policiesUsed(_ events: [JSONValue]) -> [(name: String, sha256: String)] {
        var seen: [(String, String)] = []
        for event in events {
            guard let name = event["policy"]?.stringValue, let sha = event["policy_sha256"]?.stringValue else { continue }
            if !seen.contains(where: { $0 == (name, sha) }) { seen.append((name, sha)) }
        }
        return seen
    }

    public static func learn(_ events: [JSONValue], _ options: Options) throws(AuditFailure) -> Learned {
        let events = try selectSession(events, options.session, logName: options.logName)
        var learner = Learning(options: options)
        for event in events { learner.take(event) }
        return try learner.finish()
    }

    /// The events of the one session `prefix` names (all when nil).
    static func selectSession(_ events: [JSONValue], _ prefix: String?, logName: String) throws(AuditFailure) -> [JSONValue] {
        guard let prefix else { return events }
        var sessions: [String] = []
        for case let id? in events.map({ $0["session"]?.stringValue }) where !sessions.contains(id) { sessions.append(id) }
        let matching = sessions.filter { $0.hasPrefix(prefix) }
        guard matching.count == 1 else {
            let listed = sessions.prefix(10).joined(separator: ", ") + (sessions.count > 10 ? ", …" : "")
            if matching.isEmpty {
                throw AuditFailure("no session in \(logName) has an id starting with `\(prefix)`; its sessions are \(listed)")
            }
            throw AuditFailure("`\(prefix)` matches \(matching.count) sessions in \(logName) (\(matching.joined(separator: ", "))); give more of the id")
        }
        return events.filter { $0["session"]?.stringValue == matching[0] }
    }
}

/// Where a grant came from: the calls that needed it.
struct Evidence {
    var calls = 0
    var examples: [String] = []
    var sessions: [String] = []

    mutating func add(_ example: String, session: String) {
        calls += 1
        if examples.count < 3 && !examples.contains(example) { examples.append(example) }
        if !sessions.contains(session) { sessions.append(session) }
    }

    mutating func merge(_ other: Evidence) {
        calls += other.calls
        for example in other.examples where examples.count < 3 && !examples.contains(example) { examples.append(example) }
        for session in other.sessions where !sessions.contains(session) { sessions.append(session) }
    }

    /// `3 calls: file.read_bytes /srv/data/a.csv, … (session 4f2a1b2c…)`
    var text: String {
        let more = calls > examples.count ? ", …" : ""
        let who = sessions.prefix(3).map { String($0.prefix(8)) + "…" }.joined(separator: ", ") + (sessions.count > 3 ? ", …" : "")
        return "\(calls) call\(calls == 1 ? "" : "s"): \(examples.joined(separator: ", "))\(more) (session\(sessions.count == 1 ? "" : "s") \(who))"
    }
}

/// One grant of a list (a root, a URL, a name) with where it came from and why it looks as it does.
struct Item {
    var value: String
    var evidence = Evidence()
    var remarks: [String] = []
    /// A root that relative paths were taken under: it stays exactly as it is.
    var pinned = false
}

/// The state of one learning pass over the events.
struct Learning {
    let options: PolicyLearner.Options
    var sessions: [String] = []
    var allowedCalls = 0
    var notes: [String] = []

    /// File targets: (absolute path, directory that must be under a root, write?, pinned root for a relative path).
    var fileTargets: [(path: String, directory: String, write: Bool, example: String, session: String)] = []
    var pinned: [(root: String, write: Bool, evidence: Evidence)] = []
    var fileUsed = false
    var urls: [(origin: String, path: String, example: String, session: String)] = []
    var methods: [String: Evidence] = [:]
    var netUsed = false
    var credentials: [String: NetCredential] = [:]
    var databases: [String: Evidence] = [:]
    var databasePaths: [String: String] = [:]
    var dbWrite: Evidence?
    var envNames: [String: Evidence] = [:]
    var envUsed: Evidence?
    var input: Evidence?
    var display: Evidence?
    var custom: [String: Evidence] = [:]
    var customCommands: [String: [String]] = [:]
    var asked: Set<String> = []
    var denied: [(text: String, count: Int)] = []
    var longest: (seconds: Double, session: String)?
    var limitHits: [String] = []
    var ignored: [String] = []

    init(options: PolicyLearner.Options) { self.options = options }

    mutating func take(_ event: JSONValue) {
        guard let kind = event["kind"]?.stringValue else { return }
        let session = event["session"]?.stringValue ?? "?"
        if !sessions.contains(session) && event["session"] != nil { sessions.append(session) }
        switch kind {
        case "cap.call", "cap.denied":
            let capability = event["capability"]?.stringValue ?? "?", method = event["method"]?.stringValue ?? "?"
            let args = event["args"] ?? .null
            let decision = event["decision"]?.stringValue ?? (kind == "cap.denied" ? "denied" : "allowed")
            if kind == "cap.denied" || decision == "denied" {
                let reason = event["reason"]?.stringValue.map { ": \($0)" } ?? ""
                addDenied("\(capability).\(method)\(target(args).map { " \($0)" } ?? "") (session \(session.prefix(8))…)\(reason)")
            } else {
                allowedCalls += 1
                grant(capability, method, args, session: session, policy: event["policy"]?.stringValue, failed: decision == "failed")
            }
        case "approval":
            if let capability = event["capability"]?.stringValue { asked.insert(capability) }
        case "exec.end":
            if let seconds = event["duration_s"]?.doubleValue, seconds > (longest?.seconds ?? -1) { longest = (seconds, session) }
        case "limit.hit":
            let limit = event["limit"]?.stringValue ?? "a limit"
            let value = event["value"]?.doubleValue.map { " = \(Self.seconds($0))" } ?? ""
            limitHits.append("\(limit)\(value) stopped an execution of session \(session.prefix(8))…")
        default: break
        }
    }

    private mutating func addDenied(_ text: String) {
        if let index = denied.firstIndex(where: { $0.text == text }) { denied[index].count += 1 } else { denied.append((text, 1)) }
    }

    private func target(_ args: JSONValue) -> String? {
        for key in ["path", "url", "name", "question"] { if let value = args[key]?.stringValue { return value.escapingControlCharacters } }
        return nil
    }

    /// The policy a session ran under, when the caller could read it.
    private func original(_ name: String?) -> Policy? {
        guard let name, case .loaded(let policy)? = options.policies[name] else { return nil }
        return policy
    }

    private func whyUnavailable(_ name: String?) -> String {
        guard let name else { return "the log does not name the policy it ran under" }
        if case .unavailable(let why)? = options.policies[name] { return why }
        return "the policy `\(name)` it ran under was not read"
    }

    private mutating func grant(_ capability: String, _ method: String, _ args: JSONValue, session: String, policy: String?, failed: Bool) {
        let example = "\(capability).\(method)\(target(args).map { " \($0)" } ?? "")"
        if let original = original(policy)?.capabilities, originalAsks(capability, original) { asked.insert(capability) }
        switch capability {
        case "file": grantFile(method, args, example: example, session: session, policy: policy)
        case "net":
            netUsed = true
            guard let url = args["url"]?.stringValue, let split = Self.splitURL(url) else {
                ignored.append("\(example): the log does not show a URL that can be listed"); return
            }
            let origin = split.origin
            urls.append((origin, split.path, example, session))
            methods[(args["method"]?.stringValue ?? "GET").uppercased(), default: Evidence()].add(example, session: session)
            if let host = NetAllowList.host(of: origin + "/"), let credential = original(policy)?.capabilities.net?.credentials[host] {
                credentials[host] = credential
            }
        case "db":
            guard let name = args["name"]?.stringValue else { ignored.append("\(example): no database name in the log"); return }
            databases[name, default: Evidence()].add(example, session: session)
            if databasePaths[name] == nil, let path = original(policy)?.capabilities.db?.databases[name] { databasePaths[name] = path }
            if method == "execute" {
                if failed {
                    ignored.append("\(example) failed in the log, so write = true is not granted for it")
                } else {
                    dbWrite = (dbWrite ?? Evidence()).adding(example, session: session)
                }
            }
        case "env":
            envUsed = (envUsed ?? Evidence()).adding(example, session: session)
            if method == "get", let name = args["name"]?.stringValue { envNames[name, default: Evidence()].add(example, session: session) }
        case "input": input = (input ?? Evidence()).adding(example, session: session)
        case "display": display = (display ?? Evidence()).adding(example, session: session)
        default:
            guard capability.hasPrefix("custom.") else { ignored.append("\(example): not a capability a policy can grant"); return }
            let name = String(capability.dropFirst("custom.".count))
            custom[name, default: Evidence()].add(example, session: session)
            if customCommands[name] == nil, let command = original(policy)?.capabilities.custom[name]?.command, !command.isEmpty {
                customCommands[name] = command
            }
        }
    }

    private func originalAsks(_ capability: String, _ caps: Capabilities) -> Bool {
        switch capability {
        case "file": caps.file?.grant.ask == true
        case "net": caps.net?.grant.ask == true
        case "db": caps.db?.grant.ask == true
        case "env": caps.env?.grant.ask == true
        case "input": caps.input?.ask == true
        case "display": caps.display?.ask == true
        default: caps.custom[String(capability.dropFirst("custom.".count))]?.grant.ask == true
        }
    }

    static let writeMethods: Set<String> = ["write_bytes", "append", "delete", "mkdir"]

    private mutating func grantFile(_ method: String, _ args: JSONValue, example: String, session: String, policy: String?) {
        fileUsed = true
        guard var path = args["path"]?.stringValue else { ignored.append("\(example): no path in the log"); return }
        let write = Self.writeMethods.contains(method)
        var listing = method == "list"
        // The log clips a path at 200 characters: what is left of its last `/` is still exact.
        if path.count > 200 && path.hasSuffix("…") {
            path = String(path.dropLast())
            path = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? ""
            listing = true
        }
        guard !path.unicodeScalars.contains(where: \.properties.isControlCharacterLike) else {
            ignored.append("\(example): a path with control characters cannot be written in a policy"); return
        }
        var pinnedRoot: String?
        if !path.hasPrefix("/") {
            // Relative paths are taken under the first root that serves the call (docs/capabilities.md).
            guard let file = original(policy)?.capabilities.file else {
                ignored.append("\(example): a relative path, and \(whyUnavailable(policy)), so the root it was under is not known")
                return
            }
            let read = file.read.map(OS.normalizedPath), writeRoots = file.write.map(OS.normalizedPath)
            guard let root = write ? writeRoots.first : (read + writeRoots.filter { !read.contains($0) }).first else {
                ignored.append("\(example): a relative path, and the policy it ran under has no root for it"); return
            }
            pinnedRoot = root
            path = path.isEmpty ? root : root + "/" + path
        }
        path = OS.normalizedPath(path)
        let directory = listing ? path : Learning.parent(path)
        if let root = pinnedRoot {
            if let index = pinned.firstIndex(where: { $0.root == root && $0.write == write }) {
                pinned[index].evidence.add(example, session: session)
            } else {
                var evidence = Evidence()
                evidence.add(example, session: session)
                pinned.append((root, write, evidence))
            }
        }
        fileTargets.append((listing ? "" : path, directory, write, example, session))
    }

    static func parent(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return "/" }
        return String(path[..<slash])
    }

    /// (`scheme://host[:port]`, path without query or fragment), lowercased where URLs ignore case.
    static func splitURL(_ url: String) -> (origin: String, path: String)? {
        var url = url
        if url.count > 200 && url.hasSuffix("…") { // clipped in the log: keep whole segments
            url = String(url.dropLast())
            guard let slash = url.lastIndex(of: "/") else { return nil }
            url = String(url[..<slash])
        }
        guard let schemeEnd = url.firstRange(of: "://") else { return nil }
        let scheme = url[..<schemeEnd.lowerBound].lowercased()
        let rest = url[schemeEnd.upperBound...]
        let authorityEnd = rest.firstIndex { "/?#".contains($0) } ?? rest.endIndex
        let authority = rest[..<authorityEnd].lowercased()
        var path = String(rest[authorityEnd...].prefix { $0 != "?" && $0 != "#" })
        if path.isEmpty { path = "/" }
        guard scheme == "http" || scheme == "https", !authority.isEmpty else { return nil }
        return ("\(scheme)://\(authority)", path)
    }
}

extension Unicode.Scalar.Properties {
    /// What a policy's paths may not hold (the loader refuses control characters).
    var isControlCharacterLike: Bool { generalCategory == .control }
}

extension Evidence {
    func adding(_ example: String, session: String) -> Evidence {
        var copy = self
        copy.add(example, session: session)
        return copy
    }
}

// MARK: Generalising

extension Learning {
    /// The first components of a directory that a root may not be shallower than when it merges
    /// several: never `/`, a top-level directory (`/srv`, `/tmp`), or a home (`/home/NAME`).
    static func clusterKey(_ components: [Substring]) -> [Substring] {
        let depth = ["home", "Users"].contains(components.first ?? "") ? 3 : 2
        return Array(components.prefix(depth))
    }

    static func components(_ path: String) -> [Substring] { path.split(separator: "/") }

    static func join(_ components: some Sequence<Substring>) -> String { "/" + components.joined(separator: "/") }

    static func isUnder(_ path: String, _ root: String) -> Bool {
        path == root || root == "/" || path.hasPrefix(root + "/")
    }

    /// Roots for directories that calls needed: the ones a relative path pinned stay exactly as
    /// they are; the others are grouped by their cluster key and each group becomes its deepest
    /// common directory.
    mutating func roots(_ directories: [(String, Evidence)], pinned: [(String, Evidence)]) -> [Item] {
        var items = pinned.map { Item(value: $0.0, evidence: $0.1, remarks: ["relative paths in the log are taken under it, so it stays first and exact"], pinned: true) }
        var groups: [(key: [Substring], members: [(String, Evidence)])] = []
        for (directory, evidence) in directories {
            if let index = items.firstIndex(where: { Self.isUnder(directory, $0.value) }) {
                items[index].evidence.merge(evidence)
                continue
            }
            let parts = Self.components(directory)
            guard !parts.isEmpty else {
                notes.append("not granted: \(evidence.examples.joined(separator: ", ")): the file is directly in `/`, and `/` is never a root")
                continue
            }
            let key = Self.clusterKey(parts)
            if let index = groups.firstIndex(where: { $0.key == key }) { groups[index].members.append((directory, evidence)) } else {
                groups.append((key, [(directory, evidence)]))
            }
        }
        var merged: [Item] = []
        for group in groups {
            var common = Self.components(group.members[0].0)
            for (directory, _) in group.members.dropFirst() {
                common = Array(zip(common, Self.components(directory)).prefix { $0.0 == $0.1 }.map(\.0))
            }
            var item = Item(value: Self.join(common))
            for (_, evidence) in group.members { item.evidence.merge(evidence) }
            if Set(group.members.map(\.0)).count > 1 { item.remarks.append("the deepest directory the calls share") }
            merged.append(item)
        }
        // A root under another adds nothing but its calls (a pinned one stays: it orders relative paths).
        var kept = items
        for item in merged.sorted(by: { Self.components($0.value).count < Self.components($1.value).count }) {
            if let index = kept.firstIndex(where: { !$0.pinned && Self.isUnder(item.value, $0.value) }) {
                kept[index].evidence.merge(item.evidence)
            } else {
                kept.append(item)
            }
        }
        kept = kept.filter(\.pinned) + kept.filter { !$0.pinned }.sorted { $0.value < $1.value }
        // Say so where merging stopped short of a too-wide directory.
        for index in kept.indices {
            let mine = Self.components(kept[index].value)
            guard let other = kept.first(where: { $0.value != kept[index].value && Self.components($0.value).first == mine.first && !mine.isEmpty }) else { continue }
            let shared = Self.join(zip(mine, Self.components(other.value)).prefix { $0.0 == $0.1 }.map(\.0))
            kept[index].remarks.append("left as its own directory: the one it shares with \(other.value) is \(shared), too wide to grant")
        }
        return kept
    }

    /// `urls` entries: per scheme, host and port, the calls grouped by their first path segment,
    /// each group the exact path when it is one, else the longest run of segments they share.
    func urlEntries() -> [Item] {
        var groups: [(origin: String, first: Substring, paths: [String], evidence: Evidence)] = []
        for url in urls {
            let first = url.path.split(separator: "/").first ?? ""
            if let index = groups.firstIndex(where: { $0.origin == url.origin && $0.first == first }) {
                if !groups[index].paths.contains(url.path) { groups[index].paths.append(url.path) }
                groups[index].evidence.add(url.example, session: url.session)
            } else {
                var evidence = Evidence()
                evidence.add(url.example, session: url.session)
                groups.append((url.origin, first, [url.path], evidence))
            }
        }
        return groups.map { group in
            guard group.paths.count > 1 else { return Item(value: group.origin + group.paths[0], evidence: group.evidence) }
            var common = group.paths[0].split(separator: "/")
            for path in group.paths.dropFirst() {
                common = Array(zip(common, path.split(separator: "/")).prefix { $0.0 == $0.1 }.map(\.0))
            }
            return Item(value: group.origin + Self.join(common), evidence: group.evidence,
                        remarks: ["the path segments the \(group.paths.count) URLs share"])
        }
    }

    /// Exact `include` entries for recorded paths that the secret-file rule would refuse.
    func secretIncludes(roots: [String]) -> [Item] {
        var items: [Item] = []
        for target in fileTargets where !target.path.isEmpty {
            guard let root = roots.filter({ Self.isUnder(target.path, $0) }).max(by: { $0.count < $1.count }), target.path != root else { continue }
            let relative = String(target.path.dropFirst(root == "/" ? 1 : root.count + 1))
            guard Glob.isSecret(relative) else { continue }
            if let index = items.firstIndex(where: { $0.value == relative }) {
                items[index].evidence.add(target.example, session: target.session)
            } else {
                var item = Item(value: relative, remarks: ["looks like a secret, so only an exact name allows it"])
                item.evidence.add(target.example, session: target.session)
                items.append(item)
            }
        }
        return items
    }
}

// MARK: Writing the policy

extension Learning {
    mutating func finish() throws(AuditFailure) -> PolicyLearner.Learned {
        let deniedCount = denied.reduce(0) { $0 + $1.count }
        if allowedCalls == 0 && deniedCount > 0 {
            throw AuditFailure("\(options.logName) records only denied capability calls (\(deniedCount), the first: \(denied[0].text)); "
                + "a policy learned from it would grant nothing they asked for. Record the job under a policy that allows "
                + "what it needs (capsule run --policy trusted --audit FILE …), then learn from that log")
        }
        let base = options.base
        var policy = Policy(level: .sandbox, limits: base.limits, network: base.network, environment: base.environment,
                            readonlyPaths: base.readonlyPaths, description: "Learned from the audit log \(options.logName)",
                            origin: "learned policy")
        policy.audit = base.audit
        policy.pythonEnvironment = base.pythonEnvironment
        policy.pythonPath = base.pythonPath
        policy.mounts = base.mounts
        var limitComments: [String: String] = [:]
        if let longest {
            let timeout = min(86400, max(5, (longest.seconds * 2).rounded(.up)))
            policy.limits.timeoutSeconds = timeout
            limitComments["timeout_s"] = "twice the longest execution (\(Self.seconds(longest.seconds)) s, session \(longest.session.prefix(8))…), rounded up, at least 5"
        } else {
            limitComments["timeout_s"] = "the base's (\(base.origin)): the log records no finished execution"
        }

        var caps = Capabilities()
        var sections: [String] = []

        if fileUsed || !fileTargets.isEmpty {
            let writeDirs = fileTargets.filter(\.write).map { ($0.directory, Evidence().adding($0.example, session: $0.session)) }
            let readDirs = fileTargets.filter { !$0.write }.map { ($0.directory, Evidence().adding($0.example, session: $0.session)) }
            let writeRoots = roots(writeDirs, pinned: pinned.filter(\.write).map { ($0.root, $0.evidence) })
            var readRoots = roots(readDirs, pinned: pinned.filter { !$0.write }.map { ($0.root, $0.evidence) })
            // A write root is readable too, so a read root under one adds nothing (unless a relative path pins it).
            readRoots = readRoots.filter { read in
                read.pinned || !writeRoots.contains { Self.isUnder(read.value, $0.value) }
            }
            let includes = secretIncludes(roots: readRoots.map(\.value) + writeRoots.map(\.value))
            if !readRoots.isEmpty || !writeRoots.isEmpty {
                var file = CapsulePolicy.FileCapability()
                file.read = readRoots.map(\.value)
                file.write = writeRoots.map(\.value)
                if !includes.isEmpty { file.include = ["**"] + includes.map(\.value) }
                file.grant.ask = asked.contains("file")
                caps.file = file
                var lines = ["[capabilities.file]"] + askLine("file")
                lines += array("read", readRoots) + array("write", writeRoots)
                if !includes.isEmpty {
                    lines += array("include", [Item(value: "**", remarks: ["every other file, as by default"])] + includes)
                }
                sections.append(lines.joined(separator: "\n"))
            }
        }

        if netUsed || !urls.isEmpty {
            var entries: [Item] = []
            for entry in urlEntries() {
                // The allow-list's own parser: a URL it refuses (`..`, an encoded `/`) would fail the whole policy.
                if NetAllowList.host(of: entry.value) != nil { entries.append(entry) } else {
                    notes.append("not granted: \(entry.evidence.examples.joined(separator: ", ")): `\(entry.value)` cannot be an entry of urls")
                }
            }
            if !entries.isEmpty {
                var net = CapsulePolicy.NetCapability()
                net.urls = entries.map(\.value)
                let order = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
                let seen = methods.keys.sorted { (order.firstIndex(of: $0) ?? 99) < (order.firstIndex(of: $1) ?? 99) }
                net.methods = seen
                net.grant.ask = asked.contains("net")
                let hosts = Set(net.urls.compactMap { NetAllowList.host(of: $0) })
                net.credentials = credentials.filter { hosts.contains($0.key) }
                caps.net = net
                var lines = ["[capabilities.net]"] + askLine("net") + array("urls", entries)
                lines += array("methods", seen.map { Item(value: $0, evidence: methods[$0]!) })
                if !net.credentials.isEmpty {
                    lines.append("# the credentials the policy it ran under sends to these hosts (the code never sees them)")
                    let settings = Policy(level: .standard, capabilities: caps).settings.filter { $0.table == "capabilities.net.credentials" }
                    lines.append("credentials = { " + settings.map { "\($0.key) = \($0.value)" }.joined(separator: ", ") + " }")
                }
                sections.append(lines.joined(separator: "\n"))
            }
        }

        if !databases.isEmpty {
            let known = databases.keys.sorted().filter { databasePaths[$0] != nil }
            let unknown = databases.keys.sorted().filter { databasePaths[$0] == nil }
            for name in unknown {
                notes.append("[capabilities.db] database `\(name)`: the log names it but not its path, and the policy it ran under could not be read; fill in the commented line")
            }
            let comment = known.isEmpty ? "# " : ""
            var lines = ["\(comment)[capabilities.db]"]
            if known.isEmpty { lines.insert("# the log names the databases but not their paths: fill them in and remove the #s", at: 0) }
            if let dbWrite {
                lines += ["# \(Self.clean(dbWrite.text))", "\(comment)write = true"]
            } else {
                lines.append("\(comment)write = false  # no db.execute succeeded in the log")
            }
            lines.append("\(comment)[capabilities.db.databases]")
            for name in databases.keys.sorted() {
                lines.append("# \(Self.clean(databases[name]!.text))")
                if let path = databasePaths[name] {
                    lines.append("\(name) = \(quoted(path))  # the path in the policy it ran under")
                } else {
                    lines.append("# \(name) = \"/path/to/\(name).sqlite\"  # not in the log: fill in the path")
                }
            }
            if !known.isEmpty {
                var db = CapsulePolicy.DBCapability()
                db.write = dbWrite != nil
                db.databases = Dictionary(uniqueKeysWithValues: known.map { ($0, databasePaths[$0]!) })
                db.grant.ask = asked.contains("db")
                caps.db = db
                lines.insert(contentsOf: askLine("db"), at: 1)
            }
            sections.append(lines.joined(separator: "\n"))
        }

        if let envUsed {
            var env = CapsulePolicy.EnvCapability()
            env.names = envNames.keys.sorted()
            env.grant.ask = asked.contains("env")
            caps.env = env
            var lines = ["[capabilities.env]", "# \(Self.clean(envUsed.text))"] + askLine("env")
            lines += array("names", env.names.map { Item(value: $0, evidence: envNames[$0]!) })
            sections.append(lines.joined(separator: "\n"))
        }

        if let input {
            var grant = CapabilityGrant()
            grant.ask = asked.contains("input")
            caps.input = grant
            sections.append((["[capabilities.input]", "# \(Self.clean(input.text))"] + askLine("input")).joined(separator: "\n"))
        }
        if let display {
            caps.display?.ask = asked.contains("display")
            sections.append((["[capabilities.display]", "# \(Self.clean(display.text))"] + askLine("display")).joined(separator: "\n"))
        }

        for (name, evidence) in custom.sorted(by: { $0.key < $1.key }) {
            if let command = customCommands[name] {
                caps.custom[name] = CapsulePolicy.CustomCapability(command: command)
                caps.custom[name]!.grant.ask = asked.contains("custom.\(name)")
                sections.append((["[capabilities.custom.\(name)]", "# \(Self.clean(evidence.text))"] + askLine("custom.\(name)")
                    + ["command = [\(command.map(quoted).joined(separator: ", "))]  # the command in the policy it ran under"]).joined(separator: "\n"))
            } else {
                notes.append("[capabilities.custom.\(name)]: the log does not record the plugin's command, and the policy it ran under could not be read; fill in the commented table")
                sections.append(["# [capabilities.custom.\(name)]  # \(Self.clean(evidence.text))",
                                 "# command = [\"/path/to/plugin\"]  # not in the log: fill in the program, then remove the #s"].joined(separator: "\n"))
            }
        }

        policy.capabilities = caps
        let (level, key) = policy.lowestLevel
        policy.level = level
        var out = ["# Learned by `capsule policy learn` from \(Self.clean(options.logName)): \(sessions.count) session\(sessions.count == 1 ? "" : "s"), "
            + "\(allowedCalls) capability call\(allowedCalls == 1 ? "" : "s") granted, \(deniedCount) denied (not granted).",
            "# It allows what the log shows and nothing else; read it before you use it. Limits and [sandbox] are the base's (\(Self.clean(base.origin))).",
            "level = \(quoted(level.rawValue))  # \(key.map { "the lowest level that allows every grant below: \($0) needs it" } ?? "nothing below needs more")",
            "description = \(quoted(policy.description!))"]
        out.append("\n[limits]")
        for row in policy.settings where row.table == "limits" {
            out.append("\(row.key) = \(row.value)  # \(limitComments[row.key] ?? "the base's (\(Self.clean(base.origin)))")")
        }
        let defaults = Policy(level: .sandbox, network: NetworkMode.none)
        let sandboxRows = policy.settings.filter { $0.table.hasPrefix("sandbox") || $0.table == "audit" }
        let defaultRows = defaults.settings.filter { $0.table.hasPrefix("sandbox") }
        var table = ""
        for row in sandboxRows where !defaultRows.contains(where: { $0 == row }) {
            if row.table != table {
                out.append("\n[\(row.table)]  # the base's (\(Self.clean(base.origin)))")
                table = row.table
            }
            out.append("\(row.key) = \(row.value)")
        }
        for section in sections { out.append("\n" + section) }
        if input == nil {
            out.append("\n# input() is not a capability call, so the log does not show it: add [capabilities.input] if the code reads input.")
        }
        if !denied.isEmpty {
            out.append("\n# denied in the log, not granted:")
            out += denied.map { "#   \(Self.clean($0.text))\($0.count > 1 ? " (\($0.count) times)" : "")" }
        }
        notes += ignored.map { "not granted: \($0)" }
        notes += limitHits.map { "\($0); the learned policy keeps the base's value for it, raise it by hand if the job needs more" }
        if !notes.isEmpty {
            out.append("\n# notes:")
            out += notes.map { "#   \(Self.clean($0))" }
        }
        let text = out.joined(separator: "\n") + "\n"
        do {
            let parsed = try PolicyLoader.parse(text, file: "the learned policy")
            return PolicyLearner.Learned(text: text, policy: parsed, notes: notes)
        } catch {
            throw AuditFailure("the learned policy does not pass its own check, which is a bug in capsule: \(error.description)")
        }
    }

    /// `KEY = [` with each item on its own line under the comment that says where it came from.
    func array(_ key: String, _ items: [Item]) -> [String] {
        guard !items.isEmpty else { return ["\(key) = []"] }
        var lines = ["\(key) = ["]
        for item in items {
            let remarks = item.remarks.isEmpty ? "" : "; " + item.remarks.joined(separator: "; ")
            lines.append("    # \(Self.clean(item.evidence.calls == 0 ? String(remarks.dropFirst(2)) : item.evidence.text + remarks))")
            lines.append("    \(quoted(item.value)),")
        }
        return lines + ["]"]
    }

    func askLine(_ capability: String) -> [String] {
        asked.contains(capability) ? ["ask = true  # a person approved these calls in the log (or the policy it ran under asks)"] : []
    }

    /// A number as TOML would write it: 30, 0.25.
    static func seconds(_ value: Double) -> String {
        let rounded = (value * 1000).rounded() / 1000
        return rounded == rounded.rounded() && abs(rounded) < 1e15 ? String(Int(rounded)) : String(rounded)
    }

    /// Text from the log, safe inside a one-line comment.
    static func clean(_ text: String) -> String { text.escapingControlCharacters.replacingNewlines }
}

extension String {
    fileprivate var replacingNewlines: String { split(separator: "\n", omittingEmptySubsequences: false).joined(separator: " ") }
}
