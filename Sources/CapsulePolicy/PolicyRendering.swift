import CapsuleOS

/// A policy as text: the effective TOML (`policy show`), plain language (`policy explain`) and
/// key-by-key differences (`policy diff`). All three read the same flattened list of settings.
extension Policy {
    /// Every setting as (table, key, TOML value), in the order `show` prints them.
    public var settings: [(table: String, key: String, value: String)] {
        var rows: [(String, String, String)] = [("", "level", quoted(level.rawValue))]
        if let description { rows.append(("", "description", quoted(description))) }
        let l = limits
        rows += [("limits", "memory_mb", "\(l.memoryMB)"), ("limits", "cpu_seconds", "\(l.cpuSeconds)"),
                 ("limits", "timeout_s", l.timeoutSeconds.shortText), ("limits", "max_fds", "\(l.maxFDs)"),
                 ("limits", "max_processes", "\(l.maxProcesses)"), ("limits", "max_output_bytes", "\(l.maxOutputBytes)"),
                 ("limits", "max_file_bytes", "\(l.maxFileBytes)"), ("limits", "workspace_mb", "\(l.workspaceMB)"),
                 ("limits", "max_frame_bytes", "\(l.maxFrameBytes)")]
        if let cpus = l.cpus { rows.append(("limits", "cpus", "[\(cpus.map(String.init).joined(separator: ", "))]")) }
        rows += [("sandbox", "network", quoted(network.rawValue)), ("sandbox", "readonly_paths", list(readonlyPaths))]
        if let pythonEnvironment { rows.append(("sandbox", "environment", quoted(pythonEnvironment))) }
        if !pythonPath.isEmpty { rows.append(("sandbox", "python_path", list(pythonPath))) }
        if !mounts.isEmpty { rows.append(("sandbox", "mounts", list(mounts.map(\.description)))) }
        if pythonSubprocess { rows.append(("sandbox", "python_subprocess", "true")) }
        if !preload.isEmpty { rows.append(("sandbox", "preload", list(preload))) }
        rows += environment.sorted { $0.key < $1.key }.map { ("sandbox.env", $0.key, quoted($0.value)) }
        if let audit {
            if let path = audit.path { rows.append(("audit", "path", quoted(path))) }
            rows.append(("audit", "fsync", quoted(audit.fsync.rawValue)))
            if let keyFile = audit.keyFile { rows.append(("audit", "key_file", quoted(keyFile))) }
            if let rotate = audit.rotateMB { rows.append(("audit", "rotate_mb", "\(rotate)")) }
        }
        if let pool { rows += [("pool", "min_idle", "\(pool.minIdle)"), ("pool", "max", "\(pool.max)")] }

        func grant(_ table: String, _ g: CapabilityGrant) -> [(String, String, String)] {
            var out = [(table, "enabled", "\(g.enabled)")]
            if let rate = g.ratePerMinute { out.append((table, "rate_per_minute", "\(rate)")) }
            if let bytes = g.maxBytes { out.append((table, "max_bytes", "\(bytes)")) }
            out.append((table, "ask", "\(g.ask)"))
            return out
        }
        let c = capabilities
        if let g = c.display { rows += grant("capabilities.display", g) }
        if let g = c.input { rows += grant("capabilities.input", g) }
        if let env = c.env { rows += grant("capabilities.env", env.grant) + [("capabilities.env", "names", list(env.names))] }
        if let f = c.file {
            rows += grant("capabilities.file", f.grant)
            rows += [("capabilities.file", "read", list(f.read)), ("capabilities.file", "write", list(f.write)),
                     ("capabilities.file", "include", list(f.include)), ("capabilities.file", "exclude", list(f.exclude))]
        }
        if let n = c.net {
            rows += grant("capabilities.net", n.grant)
            rows += [("capabilities.net", "urls", list(n.urls)), ("capabilities.net", "methods", list(n.methods)),
                     ("capabilities.net", "websocket", "\(n.websocket)")]
            if let timeout = n.timeoutSeconds { rows.append(("capabilities.net", "timeout_s", timeout.shortText)) }
            rows += n.credentials.sorted { $0.key < $1.key }.map { host, credential in
                let source = switch credential.source {
                case .environment(let name): "value_from_env = \(quoted(name))"
                case .file(let path): "value_from_file = \(quoted(path))"
                }
                return ("capabilities.net.credentials", quoted(host), "{ header = \(quoted(credential.header)), \(source) }")
            }
        }
        if let d = c.db {
            rows += grant("capabilities.db", d.grant) + [("capabilities.db", "write", "\(d.write)")]
            if let maxRows = d.maxRows { rows.append(("capabilities.db", "max_rows", "\(maxRows)")) }
            rows += d.databases.sorted { $0.key < $1.key }.map { ("capabilities.db.databases", $0.key, quoted($0.value)) }
        }
        for (name, custom) in c.custom.sorted(by: { $0.key < $1.key }) {
            rows += grant("capabilities.custom.\(name)", custom.grant) + [("capabilities.custom.\(name)", "command", list(custom.command))]
        }
        return rows
    }

    /// One sentence for each grant that has no effect in this build (`Capabilities.enforcedCapabilities`):
    /// an enabled table it does not enforce, or a common key set on a table it does.
    public var notes: [String] {
        let c = capabilities
        var grants: [(name: String, table: String, grant: CapabilityGrant?)] = [
            ("display", "capabilities.display", c.display), ("input", "capabilities.input", c.input),
            ("env", "capabilities.env", c.env?.grant), ("file", "capabilities.file", c.file?.grant),
            ("net", "capabilities.net", c.net?.grant), ("db", "capabilities.db", c.db?.grant),
        ]
        grants += c.custom.sorted { $0.key < $1.key }.map { ("custom", "capabilities.custom.\($0.key)", $0.value.grant) }
        let enforced = Capabilities.enforcedCapabilities
        var notes: [String] = []
        for (name, table, grant) in grants {
            guard let grant, grant.enabled else { continue }
            guard enforced.contains(name) else {
                notes.append("[\(table)] has no effect yet: this build of capsule does not enforce it (nothing it grants is reachable)")
                continue
            }
            let terms = [("ask", grant.ask ? "true" : nil), ("rate_per_minute", grant.ratePerMinute.map(String.init)),
                         ("max_bytes", grant.maxBytes.map(String.init))]
            for case let (key, value?) in terms where !enforced.contains("\(name).\(key)") {
                notes.append("`\(key) = \(value)` in [\(table)] has no effect yet: this build of capsule does not enforce it")
            }
        }
        return notes
    }

    /// The effective policy as TOML that `policy check` accepts.
    public var tomlText: String {
        var out = "# Effective policy from \(origin)\n"
        var table = ""
        for row in settings {
            if row.table != table {
                out += "\n[\(row.table)]\n"
                table = row.table
            }
            out += "\(row.key) = \(row.value)\n"
        }
        return out
    }

    /// What code under this policy can do, in plain language.
    public var explanation: String {
        var out = ["Policy \(origin) (level \(level.rawValue))\(description.map { ": \($0)" } ?? "")", "", "The code can:"]
        out.append("  - run Python from a read-only runtime, in a private /workspace of \(limits.workspaceMB) MiB that is gone when the session ends")
        out.append(readonlyPaths.isEmpty ? "  - read no other host files directly"
                   : "  - read these host paths directly (read-only): \(readonlyPaths.joined(separator: ", "))")
        if let pythonEnvironment { out.append("  - import the packages of the environment \(pythonEnvironment) (capsule env show \(pythonEnvironment))") }
        if !pythonPath.isEmpty { out.append("  - import modules from (and read) these host directories: \(pythonPath.joined(separator: ", "))") }
        func places(writable: Bool) -> String {
            mounts.filter { $0.writable == writable }.map { "\($0.host) at \($0.destination)" }.joined(separator: ", ")
        }
        if mounts.contains(where: { !$0.writable }) { out.append("  - read these host paths where they are mounted (read-only): \(places(writable: false))") }
        if mounts.contains(where: \.writable) { out.append("  - read and write these host paths where they are mounted, as their owners: \(places(writable: true))") }
        if !preload.isEmpty { out.append("  - find these modules imported before its first execution: \(preload.joined(separator: ", "))") }
        if pythonSubprocess { out.append("  - start Python itself again (sys.executable), under the same sandbox; no other program") }
        out.append(network == .host ? "  - use the host's network directly" : "  - reach no network directly")
        out.append(environment.isEmpty ? "  - see no environment variables"
                   : "  - see the environment variables \(environment.keys.sorted().joined(separator: ", "))")
        let c = capabilities
        var uses: [String] = []
        func terms(_ g: CapabilityGrant) -> String {
            var t: [String] = []
            if let rate = g.ratePerMinute { t.append("at most \(rate) calls a minute") }
            if let bytes = g.maxBytes { t.append("at most \(byteText(bytes)) a call") }
            if g.ask { t.append("each call approved by a person") }
            return t.isEmpty ? "" : " (\(t.joined(separator: ", ")))"
        }
        if let g = c.display, g.enabled { uses.append("show rich output (display)\(terms(g))") }
        if let g = c.input, g.enabled { uses.append("ask the person at the keyboard for input (input)\(terms(g))") }
        if let e = c.env, e.grant.enabled {
            uses.append("read the host environment variables \(e.names.isEmpty ? "(none listed)" : e.names.joined(separator: ", ")) (env)\(terms(e.grant))")
        }
        if let f = c.file, f.grant.enabled {
            let read = f.read.isEmpty ? "no roots" : f.read.joined(separator: ", ")
            let write = f.write.isEmpty ? "" : "; write under \(f.write.joined(separator: ", "))"
            let patterns = f.include == ["**"] && f.exclude.isEmpty ? "" : " (files matching \(f.include.joined(separator: ", "))\(f.exclude.isEmpty ? "" : ", except \(f.exclude.joined(separator: ", "))"))"
            uses.append("read files under \(read)\(write)\(patterns) (file)\(terms(f.grant))")
        }
        if let n = c.net, n.grant.enabled {
            let urls = n.urls.isEmpty ? "no URLs (none listed)" : n.urls.joined(separator: ", ")
            uses.append("make \(n.methods.joined(separator: "/")) requests to \(urls)\(n.websocket ? ", and open WebSockets" : "") (net)\(terms(n.grant))")
        }
        if let d = c.db, d.grant.enabled {
            let names = d.databases.keys.sorted().joined(separator: ", ")
            uses.append("\(d.write ? "read and write" : "read") the databases \(names)\(d.maxRows.map { ", at most \($0) rows a query" } ?? "") (db)\(terms(d.grant))")
        }
        for (name, custom) in c.custom.sorted(by: { $0.key < $1.key }) where custom.grant.enabled {
            uses.append("call the custom capability \(name), served by \(custom.command.joined(separator: " "))\(terms(custom.grant))")
        }
        out += uses.map { "  - \($0)" }
        if !notes.isEmpty { out += [""] + notes.map { "note: \($0)" } }
        let l = limits
        out += ["", "Limits:",
                "  - memory \(l.memoryMB) MiB, CPU \(l.cpuSeconds) s per process, \(l.timeoutSeconds.shortText) s of wall-clock time per execution",
                "  - \(l.maxFDs) open files per process, \(l.maxProcesses) processes and threads, files up to \(byteText(l.maxFileBytes))",
                "  - output up to \(byteText(l.maxOutputBytes)) per execution, messages up to \(byteText(l.maxFrameBytes))",
                "  - CPU cores: \(l.cpus.map { $0.map(String.init).joined(separator: ", ") } ?? "all")"]
        if let audit {
            let path = audit.path ?? "the file `--audit FILE` names (the run is refused without one)"
            out += ["", "Audit:", "  - every session, execution and capability call is logged to \(path) (fsync \(audit.fsync.rawValue)\(audit.keyFile == nil ? "" : ", HMAC-keyed")\(audit.rotateMB.map { ", a new file every \($0) MiB" } ?? ""))"]
        }
        return out.map(\.escapingControlCharacters).joined(separator: "\n") + "\n"
    }

    /// The settings that differ, as `- key = a` / `+ key = b` lines; empty when equal.
    public func differences(from other: Policy) -> [String] {
        func keyed(_ p: Policy) -> [(String, String)] {
            p.settings.map { ($0.table.isEmpty ? $0.key : "\($0.table).\($0.key)", $0.value) }
        }
        let mine = keyed(self), theirs = keyed(other)
        let theirMap = Dictionary(theirs, uniquingKeysWith: { a, _ in a })
        let myMap = Dictionary(mine, uniquingKeysWith: { a, _ in a })
        var order = mine.map(\.0)
        for (key, _) in theirs where myMap[key] == nil { order.append(key) }
        var lines: [String] = []
        for key in order {
            switch (myMap[key], theirMap[key]) {
            case let (a?, b?) where a != b: lines += ["- \(key) = \(a)", "+ \(key) = \(b)"]
            case let (a?, nil): lines.append("- \(key) = \(a)")
            case let (nil, b?): lines.append("+ \(key) = \(b)")
            default: break
            }
        }
        return lines
    }
}

/// A size in the largest binary unit it is a whole number of (16777216 is "16 MiB"), else exact.
func byteText(_ bytes: Int) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] where bytes >= 1 << shift && bytes % (1 << shift) == 0 {
        return "\(bytes >> shift) \(unit)"
    }
    return bytes == 1 ? "1 byte" : "\(bytes) bytes"
}

/// A TOML basic string (also for `policy learn`, which writes its own commented TOML).
package func quoted(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        default: out += String(scalar).escapingControlCharacters
        }
    }
    return out + "\""
}

private func list(_ items: [String]) -> String { "[" + items.map(quoted).joined(separator: ", ") + "]" }
