/// What a policy may grant: the ceiling of its level, and — when it extends another — no more than
/// that base grants.
enum PolicyRules {
    /// The lowest level that may grant each thing a policy can ask for, with the key that asks.
    static func requirements(_ policy: Policy) -> [(key: String, level: Level)] {
        var needs: [(String, Level)] = []
        if policy.network == .host { needs.append(("sandbox.network", .unrestricted)) }
        if !policy.readonlyPaths.isEmpty { needs.append(("sandbox.readonly_paths", .restricted)) }
        if !policy.pythonPath.isEmpty { needs.append(("sandbox.python_path", .restricted)) }
        if !policy.mounts.isEmpty { needs.append(("sandbox.mounts", .restricted)) }
        if let mount = policy.mounts.first(where: \.writable) { needs.append(("sandbox.mounts (\(mount.host):\(mount.destination):rw)", .standard)) }
        let caps = policy.capabilities
        if caps.input?.enabled == true { needs.append(("capabilities.input", .restricted)) }
        if caps.env?.grant.enabled == true { needs.append(("capabilities.env", .restricted)) }
        if let file = caps.file, file.grant.enabled {
            needs.append(("capabilities.file", .restricted))
            if !file.write.isEmpty { needs.append(("capabilities.file.write", .standard)) }
        }
        if let net = caps.net, net.grant.enabled {
            needs.append(("capabilities.net", .standard))
            if let method = net.methods.first(where: { $0 != "GET" && $0 != "HEAD" }) {
                needs.append(("capabilities.net.methods (\(method))", .trusted))
            }
            if net.websocket { needs.append(("capabilities.net.websocket", .trusted)) }
        }
        if let db = caps.db, db.grant.enabled {
            needs.append(("capabilities.db", .standard))
            if db.write { needs.append(("capabilities.db.write", .trusted)) }
        }
        for (name, custom) in caps.custom.sorted(by: { $0.key < $1.key }) where custom.grant.enabled {
            needs.append(("capabilities.custom.\(name)", .trusted))
        }
        return needs
    }

    /// Everything the policy grants above its level, and grants missing what they need. A grant
    /// this file does not write came from `base`: it is reported at the line of `level`, which
    /// lowered the ceiling under it, with where it came from and how to drop it.
    static func ceilingProblems(_ policy: Policy, base: Policy?, lines: [String: Int], file: String) -> [PolicyError] {
        var problems = requirements(policy).filter { $0.level > policy.level }.map { key, level in
            let needs = "needs level `\(level.rawValue)` or higher; this policy is `\(policy.level.rawValue)`"
            let path = String(key.prefix { $0 != " " })
            guard let base, lines[path] == nil, let levelLine = lines["level"] else {
                return PolicyError(file: file, line: line(of: key, in: lines), key: key, needs)
            }
            let extends = lines["extends"].map { " (line \($0))" } ?? ""
            return PolicyError(file: file, line: levelLine, key: key,
                               "\(needs), but it inherits the grant from `\(base.origin)`, which it extends\(extends): "
                               + "\(turningOff(path)), or leave `level` out to keep the level of `\(base.origin)`")
        }
        for (name, custom) in policy.capabilities.custom.sorted(by: { $0.key < $1.key })
        where custom.grant.enabled && custom.command.isEmpty {
            problems.append(PolicyError(file: file, line: line(of: "capabilities.custom.\(name)", in: lines),
                                        key: "capabilities.custom.\(name).command", "missing: name the plugin program to run"))
        }
        if let db = policy.capabilities.db, db.grant.enabled, db.databases.isEmpty {
            problems.append(PolicyError(file: file, line: line(of: "capabilities.db", in: lines), key: "capabilities.db.databases",
                                        "missing: name each database, like databases = { app = \"/srv/app.sqlite\" }"))
        }
        if let net = policy.capabilities.net, net.grant.enabled {
            let hosts = Set(net.urls.compactMap { Validate.allowListURL($0)?.host })
            for (host, credential) in net.credentials.sorted(by: { $0.key < $1.key }) {
                let key = "capabilities.net.credentials"
                let at = line(of: key, in: lines) ?? line(of: "capabilities.net", in: lines)
                if credential.header.isEmpty {
                    problems.append(PolicyError(file: file, line: at, key: key, "missing: the credential for `\(host)` names no header"))
                }
                if credential.source == .environment("") {
                    problems.append(PolicyError(file: file, line: at, key: key,
                                                "missing: the credential for `\(host)` has no value_from_env or value_from_file"))
                }
                if !hosts.contains(host) {
                    problems.append(PolicyError(file: file, line: at, key: key,
                                                "`\(host)` is not the host of any of urls; a credential goes only to a host the code may reach"))
                }
            }
        }
        return problems
    }

    /// How a file drops an inherited grant that its level does not allow, for the key that asks for it.
    private static func turningOff(_ key: String) -> String {
        let parts = key.split(separator: ".").map(String.init)
        switch key {
        case "sandbox.network": return "set network = \"none\" in [sandbox]"
        case "sandbox.readonly_paths": return "set readonly_paths = [] in [sandbox]"
        case "sandbox.mounts": return "set mounts = [] in [sandbox], or list them without :rw"
        case "sandbox.python_path": return "set python_path = [] in [sandbox]"
        case "capabilities.file.write": return "set write = [] in [capabilities.file]"
        case "capabilities.net.methods": return "set methods = [\"GET\"] in [capabilities.net]"
        case "capabilities.net.websocket": return "set websocket = false in [capabilities.net]"
        case "capabilities.db.write": return "set write = false in [capabilities.db]"
        default: return "turn it off with enabled = false in [\(parts.prefix(parts.count > 2 && parts[1] == "custom" ? 3 : 2).joined(separator: "."))]"
        }
    }

    /// The line of `key`, else of the nearest table above it that this file set.
    static func line(of key: String, in lines: [String: Int]) -> Int? {
        var path = String(key.prefix { $0 != " " })
        while true {
            if let line = lines[path] { return line }
            guard let dot = path.lastIndex(of: ".") else { return nil }
            path = String(path[..<dot])
        }
    }

    // MARK: Narrowing

    /// Everything the policy widens of the one it extends, each with its key and line.
    static func narrowingProblems(_ policy: Policy, base: Policy, lines: [String: Int], file: String) -> [PolicyError] {
        var problems: [PolicyError] = []
        func fail(_ key: String, _ message: String) {
            problems.append(PolicyError(file: file, line: line(of: key, in: lines), key: key,
                                        "\(message); a policy that extends `\(base.origin)` may only narrow it"))
        }
        if policy.level > base.level {
            fail("level", "`\(policy.level.rawValue)` is wider than `\(base.level.rawValue)`")
        }
        for (key, mine, theirs) in limitPairs(policy.limits, base.limits) where mine > theirs {
            fail("limits.\(key)", "\(mine.shortText) is more than the \(theirs.shortText) it allows")
        }
        if let baseCores = base.limits.cpus, !(policy.limits.cpus?.allSatisfy(baseCores.contains) ?? false) {
            fail("limits.cpus", "may only list cores among \(baseCores)")
        }
        if policy.network == .host && base.network != .host { fail("sandbox.network", "\"host\" is not allowed") }
        // Starting Python again reaches nothing new, but it opens execve to the code: the base decides.
        if policy.pythonSubprocess && !base.pythonSubprocess { fail("sandbox.python_subprocess", "true is not allowed") }
        if let path = policy.readonlyPaths.first(where: { !isUnder($0, anyOf: base.readonlyPaths) }) {
            fail("sandbox.readonly_paths", "`\(path)` is not under a path it allows")
        }
        if let mount = policy.mounts.first(where: { !isUnder($0.host, anyOf: base.readonlyPaths + base.mounts.map(\.host)) }) {
            fail("sandbox.mounts", "`\(mount.host)` is not under a path it allows (its readonly_paths or mounts)")
        }
        // Writing is the base's to give: under one of its own :rw mounts only.
        if let mount = policy.mounts.first(where: { $0.writable && !isUnder($0.host, anyOf: base.mounts.filter(\.writable).map(\.host)) }) {
            fail("sandbox.mounts", "`\(mount)` writes where it allows no :rw mount")
        }
        // A directory on sys.path is read as a read-only path is: under one the base allows either way.
        if let path = policy.pythonPath.first(where: { !isUnder($0, anyOf: base.readonlyPaths + base.pythonPath) }) {
            fail("sandbox.python_path", "`\(path)` is not under a path it allows (its readonly_paths or python_path)")
        }
        checkCapabilities(policy.capabilities, base.capabilities, fail: fail)
        checkAudit(policy.audit, base.audit, fail: fail)
        return problems
    }

    /// An audited base stays audited as it says: the same file and key, no weaker fsync (a child
    /// pointing the log at /dev/null or another file would switch auditing off for the base's owner).
    private static func checkAudit(_ audit: AuditSettings?, _ base: AuditSettings?, fail: (String, String) -> Void) {
        guard let base, let audit else { return }
        if let path = base.path, audit.path != path { fail("audit.path", "the log must stay \(path)") }
        if let key = base.keyFile, audit.keyFile != key { fail("audit.key_file", "the key must stay \(key)") }
        let strength: [AuditSettings.Fsync: Int] = [.never: 0, .batch: 1, .always: 2]
        if strength[audit.fsync]! < strength[base.fsync]! {
            fail("audit.fsync", "\"\(audit.fsync.rawValue)\" is weaker than the \"\(base.fsync.rawValue)\" it sets")
        }
        if let rotate = base.rotateMB, audit.rotateMB != rotate { fail("audit.rotate_mb", "must stay \(rotate)") }
    }

    private static func limitPairs(_ a: Limits, _ b: Limits) -> [(String, Double, Double)] {
        [("memory_mb", Double(a.memoryMB), Double(b.memoryMB)), ("cpu_seconds", Double(a.cpuSeconds), Double(b.cpuSeconds)),
         ("timeout_s", a.timeoutSeconds, b.timeoutSeconds), ("max_fds", Double(a.maxFDs), Double(b.maxFDs)),
         ("max_processes", Double(a.maxProcesses), Double(b.maxProcesses)),
         ("max_output_bytes", Double(a.maxOutputBytes), Double(b.maxOutputBytes)),
         ("max_file_bytes", Double(a.maxFileBytes), Double(b.maxFileBytes)),
         ("workspace_mb", Double(a.workspaceMB), Double(b.workspaceMB)),
         ("max_frame_bytes", Double(a.maxFrameBytes), Double(b.maxFrameBytes))]
    }

    /// One problem per key: a key whose first value widens the base is reported once, and the
    /// details of a capability the base does not grant at all are not checked.
    private static func checkCapabilities(_ caps: Capabilities, _ base: Capabilities, fail: (String, String) -> Void) {
        checkGrant("display", caps.display, base.display, fail: fail)
        checkGrant("input", caps.input, base.input, fail: fail)
        if checkGrant("env", caps.env?.grant, base.env?.grant, fail: fail), let env = caps.env,
           let name = env.names.first(where: { !(base.env?.names ?? []).contains($0) }) {
            fail("capabilities.env.names", "`\(name)` is not among the names it allows")
        }
        if checkGrant("file", caps.file?.grant, base.file?.grant, fail: fail), let file = caps.file, let baseFile = base.file {
            for (key, roots, baseRoots) in [("read", file.read, baseFile.read), ("write", file.write, baseFile.write)] {
                if let root = roots.first(where: { !isUnder($0, anyOf: baseRoots) }) {
                    fail("capabilities.file.\(key)", "`\(root)` is not under a root it allows")
                }
            }
            if let glob = file.include.first(where: { !baseFile.include.contains($0) }) {
                fail("capabilities.file.include", "`\(glob)` is not among the patterns it includes")
            }
            if let glob = baseFile.exclude.first(where: { !file.exclude.contains($0) }) {
                fail("capabilities.file.exclude", "must keep excluding `\(glob)`")
            }
        }
        if checkGrant("net", caps.net?.grant, base.net?.grant, fail: fail), let net = caps.net, let baseNet = base.net {
            if let url = net.urls.first(where: { url in !baseNet.urls.contains { isWithin(url, $0) } }) {
                fail("capabilities.net.urls", "`\(url)` does not start with a URL it allows")
            }
            if let method = net.methods.first(where: { !baseNet.methods.contains($0) }) {
                fail("capabilities.net.methods", "`\(method)` is not among the methods it allows")
            }
            if net.websocket && !baseNet.websocket { fail("capabilities.net.websocket", "it does not allow WebSocket") }
            if let (host, _) = net.credentials.first(where: { baseNet.credentials[$0.key] != $0.value }) {
                fail("capabilities.net.credentials", "the credential for `\(host)` is not one it sets; a policy that extends another may only remove credentials")
            }
            if let limit = baseNet.timeoutSeconds, (net.timeoutSeconds ?? .infinity) > limit {
                fail("capabilities.net.timeout_s", "must be at most \(limit.shortText)")
            }
        }
        if checkGrant("db", caps.db?.grant, base.db?.grant, fail: fail), let db = caps.db, let baseDB = base.db {
            for (name, path) in db.databases.sorted(by: { $0.key < $1.key }) where baseDB.databases[name] != path {
                fail("capabilities.db.databases.\(name)", "it does not allow this database")
            }
            if db.write && !baseDB.write { fail("capabilities.db.write", "it is read-only") }
            if let rows = baseDB.maxRows, (db.maxRows ?? .max) > rows {
                fail("capabilities.db.max_rows", "must be at most \(rows)")
            }
        }
        for (name, custom) in caps.custom.sorted(by: { $0.key < $1.key }) {
            if checkGrant("custom.\(name)", custom.grant, base.custom[name]?.grant, fail: fail),
               let baseCustom = base.custom[name], custom.command != baseCustom.command {
                fail("capabilities.custom.\(name).command", "must stay \(baseCustom.command)")
            }
        }
    }

    /// Enabled only where the base enables it; ask stays on, rates and sizes only go down. True when
    /// the grant is enabled and the base grants it too, so its own keys are worth checking.
    @discardableResult
    private static func checkGrant(_ name: String, _ grant: CapabilityGrant?, _ base: CapabilityGrant?,
                                   fail: (String, String) -> Void) -> Bool {
        guard let grant, grant.enabled else { return false }
        guard let base, base.enabled else {
            fail("capabilities.\(name)", "it does not grant this capability")
            return false
        }
        if base.ask && !grant.ask { fail("capabilities.\(name).ask", "it asks a person first; that must stay") }
        if let rate = base.ratePerMinute, (grant.ratePerMinute ?? .max) > rate {
            fail("capabilities.\(name).rate_per_minute", "must be at most \(rate)")
        }
        if let bytes = base.maxBytes, (grant.maxBytes ?? .max) > bytes {
            fail("capabilities.\(name).max_bytes", "must be at most \(bytes)")
        }
        return true
    }

    /// Whether allow-list URL `url` allows nothing `base` does not: the same scheme, host and port, and a
    /// path that is the base's or continues it past a segment boundary (`/v1` covers `/v1` and `/v1/x`,
    /// never `/v12`). Paths compare byte for byte. A URL that does not parse is within nothing.
    static func isWithin(_ url: String, _ base: String) -> Bool {
        guard let url = Validate.allowListURL(url), let base = Validate.allowListURL(base),
              url.scheme == base.scheme, url.host == base.host, url.port == base.port else { return false }
        let path = Array(url.path.utf8), basePath = Array(base.path.utf8)
        guard path.starts(with: basePath) else { return false }
        return path.count == basePath.count || basePath.last == UInt8(ascii: "/") || path[basePath.count] == UInt8(ascii: "/")
    }

    static func isUnder(_ path: String, anyOf roots: [String]) -> Bool {
        roots.contains { root in path == root || path.hasPrefix(root.hasSuffix("/") ? root : root + "/") }
    }
}

extension Policy {
    /// The lowest level that allows everything this policy grants, and the key that needs it
    /// (nil when `sandbox` does): `policy learn` sets its level by the loader's own rule.
    public var lowestLevel: (level: Level, key: String?) {
        PolicyRules.requirements(self).max { $0.level < $1.level }.map { ($0.level, $0.key) } ?? (.sandbox, nil)
    }
}

/// The `net.urls` allow-list, for the broker: the same matching rule `extends` uses.
public enum NetAllowList {
    /// The first entry of `urls` that allows a request to `url` (`scheme://host[:port]/path`, no
    /// query), or nil. A URL with `.`/`..` segments, `//` or an encoded `.` or `/` matches nothing.
    public static func entry(allowing url: String, in urls: [String]) -> String? {
        urls.first { PolicyRules.isWithin(url, $0) }
    }

    /// The host of an allow-list entry, lowercased (IPv6 with its brackets).
    public static func host(of entry: String) -> String? { Validate.allowListURL(entry)?.host }
}
