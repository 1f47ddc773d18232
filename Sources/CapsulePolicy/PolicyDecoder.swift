import CapsuleOS

/// Applies the keys of one policy file onto a starting policy (empty at its level, or the policy
/// it extends), checking each key's name and type. `lines` remembers where each key was set.
struct PolicyDecoder {
    let file: String
    var policy: Policy
    var lines: [String: Int] = [:]
    /// Every bad table or key, in file order; the decoder carries on past each one.
    var errors: [PolicyError] = []
    /// Removed capabilities this file names, reported once however many keys their table has.
    var removedNamed: Set<String> = []

    static let capabilityNames = ["display", "input", "env", "file", "net", "db"]
    /// Capabilities the schema no longer has, and why: a file that names one is told, not offered a spelling.
    static let removedCapabilities = [
        "time": "there is no `time` capability: code in the sandbox can always read the clock (the vDSO answers "
            + "clock_gettime without a system call, so no policy can withhold or fake it); delete [capabilities.time] and its keys",
    ]
    static let grantKeys = ["enabled", "rate_per_minute", "max_bytes", "ask"]
    static let capabilityKeys: [String: [String]] = [
        "display": [], "input": [], "env": ["names"],
        "file": ["read", "write", "include", "exclude"],
        "net": ["urls", "methods", "websocket", "timeout_s"],
        "db": ["databases", "write", "max_rows"],
        "custom": ["command"],
    ]
    static let limitKeys = ["memory_mb", "cpu_seconds", "timeout_s", "max_fds", "max_processes", "max_output_bytes",
                            "max_file_bytes", "workspace_mb", "max_frame_bytes", "cpus"]
    static let sandboxKeys = ["network", "env", "readonly_paths", "environment", "python_path", "mounts", "python_subprocess", "preload"]
    static let topKeys = ["level", "extends", "description"]
    static let auditKeys = ["path", "fsync", "key_file", "rotate_mb"]
    static let poolKeys = ["min_idle", "max"]

    /// Every key path a policy may use (custom capabilities and env entries by pattern).
    static var knownPaths: [String] {
        topKeys + limitKeys.map { "limits.\($0)" } + sandboxKeys.map { "sandbox.\($0)" } + auditKeys.map { "audit.\($0)" }
            + poolKeys.map { "pool.\($0)" }
            + capabilityNames.flatMap { name in (grantKeys + capabilityKeys[name]!).map { "capabilities.\(name).\($0)" } }
            + (grantKeys + ["command"]).map { "capabilities.custom.NAME.\($0)" }
    }

    /// Inline tables become dotted entries, so `env = { A = "1" }` and `[sandbox.env] A = "1"` agree.
    static func flatten(_ entries: [TOMLDocument.Entry]) -> [TOMLDocument.Entry] {
        entries.flatMap { entry -> [TOMLDocument.Entry] in
            guard case .table(let members) = entry.value else { return [entry] }
            return flatten(members.map { TOMLDocument.Entry(path: "\(entry.path).\($0.0)", value: $0.1, line: entry.line) })
        }
    }

    mutating func apply(_ document: TOMLDocument) {
        for table in document.tables {
            do { try open(table.path, line: table.line) } catch { errors.append(error) }
        }
        for entry in Self.flatten(document.entries) {
            do { try set(entry) } catch { errors.append(error) }
        }
        if let pool = policy.pool, pool.minIdle > pool.max {
            errors.append(PolicyError(file: file, line: lines["pool.min_idle"] ?? lines["pool.max"] ?? lines["pool"], key: "pool.min_idle",
                                      "min_idle (\(pool.minIdle)) is more than max (\(pool.max)): the pool could never keep that many waiting; lower min_idle or raise max"))
        }
        errors.sort { ($0.line ?? 0) < ($1.line ?? 0) }
    }

    // MARK: Tables

    private mutating func open(_ path: String, line: Int) throws(PolicyError) {
        let parts = path.split(separator: ".").map(String.init)
        try refuseRemoved(parts, path: path, line: line)
        switch parts.count {
        case 1 where ["limits", "sandbox", "capabilities"].contains(parts[0]): return
        case 1 where parts[0] == "audit":
            if policy.audit == nil { policy.audit = AuditSettings() }
            return
        case 1 where parts[0] == "pool":
            if policy.pool == nil { policy.pool = PoolSettings() }
            if lines["pool"] == nil { lines["pool"] = line }
            return
        case 2 where path == "sandbox.env": return
        case 2 where parts[0] == "capabilities" && (Self.capabilityNames.contains(parts[1]) || parts[1] == "custom"):
            if parts[1] != "custom" { grant(parts[1], line: line) }
            return
        case 3 where path == "capabilities.db.databases":
            grant("db", line: line)
            return
        case 3 where path == "capabilities.net.credentials":
            grant("net", line: line)
            if lines[path] == nil { lines[path] = line }
            return
        case 3 where parts[0] == "capabilities" && parts[1] == "custom":
            try customName(parts[2], path: path, line: line)
            grantCustom(parts[2], line: line)
            return
        default:
            let tables = ["limits", "sandbox", "sandbox.env", "audit", "pool", "capabilities", "capabilities.custom.NAME",
                          "capabilities.db.databases", "capabilities.net.credentials"] + Self.capabilityNames.map { "capabilities.\($0)" }
            throw PolicyError(file: file, line: line, key: path,
                              "unknown table\(PolicyLoader.suggestion(path, among: tables))")
        }
    }

    /// The first table or key of a removed capability is an error with the reason; the rest are skipped.
    private mutating func refuseRemoved(_ parts: [String], path: String, line: Int) throws(PolicyError) {
        guard parts.count > 1, parts[0] == "capabilities", let reason = Self.removedCapabilities[parts[1]],
              !removedNamed.contains(parts[1]) else { return }
        removedNamed.insert(parts[1])
        throw PolicyError(file: file, line: line, key: "capabilities.\(parts[1])", reason)
    }

    /// A capability named by a table or a key is granted with its defaults until keys say more.
    private mutating func grant(_ name: String, line: Int) {
        if lines["capabilities.\(name)"] == nil { lines["capabilities.\(name)"] = line }
        let caps = policy.capabilities
        switch name {
        case "display": if caps.display == nil { policy.capabilities.display = CapabilityGrant() }
        case "input": if caps.input == nil { policy.capabilities.input = CapabilityGrant() }
        case "env": if caps.env == nil { policy.capabilities.env = EnvCapability() }
        case "file": if caps.file == nil { policy.capabilities.file = FileCapability() }
        case "net": if caps.net == nil { policy.capabilities.net = NetCapability() }
        case "db": if caps.db == nil { policy.capabilities.db = DBCapability() }
        default: break
        }
    }

    private mutating func grantCustom(_ name: String, line: Int) {
        if lines["capabilities.custom.\(name)"] == nil { lines["capabilities.custom.\(name)"] = line }
        if policy.capabilities.custom[name] == nil { policy.capabilities.custom[name] = CustomCapability() }
    }

    private func customName(_ name: String, path: String, line: Int) throws(PolicyError) {
        guard Validate.isIdentifier(name) else {
            throw PolicyError(file: file, line: line, key: path,
                              "a custom capability's name must be letters, digits and _ (starting with a letter or _)")
        }
    }

    // MARK: Keys

    private mutating func set(_ entry: TOMLDocument.Entry) throws(PolicyError) {
        lines[entry.path] = entry.line
        let parts = entry.path.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        try refuseRemoved(parts, path: entry.path, line: entry.line)
        if parts.count > 1, removedNamed.contains(parts[1]) { return } // its table was refused already
        var value = Value(entry: entry, file: file)
        switch parts[0] {
        case "level", "extends":
            guard parts.count == 1 else { break }
            _ = try value.string() // the loader has read them already
            return
        case "description" where parts.count == 1:
            policy.description = try value.string()
            return
        case "limits" where parts.count == 2:
            if try setLimit(parts[1], &value) { return }
        case "sandbox" where parts.count == 2 || (parts.count == 3 && parts[1] == "env"):
            if try setSandbox(Array(parts.dropFirst()), &value) { return }
        case "audit" where parts.count == 2:
            if try setAudit(parts[1], &value) { return }
        case "pool" where parts.count == 2:
            var pool = policy.pool ?? PoolSettings()
            defer { policy.pool = pool }
            switch parts[1] {
            case "min_idle":
                pool.minIdle = try value.integer(0...1000)
                return
            case "max":
                pool.max = try value.integer(1...10_000)
                return
            default: break
            }
        case "capabilities" where parts.count == 3 && parts[1] != "custom":
            if Self.capabilityNames.contains(parts[1]) {
                grant(parts[1], line: entry.line)
                if try setCapability(parts[1], parts[2], &value) { return }
            }
        case "capabilities" where entry.path.hasPrefix("capabilities.net.credentials."):
            grant("net", line: entry.line)
            try setCredential(String(entry.path.dropFirst("capabilities.net.credentials.".count)), &value)
            return
        case "capabilities" where parts.count == 4 && parts[1] == "db" && parts[2] == "databases":
            grant("db", line: entry.line)
            guard Validate.isIdentifier(parts[3]) else {
                throw value.error("a database name must be letters, digits and _ (starting with a letter or _)")
            }
            policy.capabilities.db!.databases[parts[3]] = try value.absolutePath()
            return
        case "capabilities" where parts.count == 4 && parts[1] == "custom":
            try customName(parts[2], path: entry.path, line: entry.line)
            grantCustom(parts[2], line: entry.line)
            if try setCustom(parts[2], parts[3], &value) { return }
        default:
            break
        }
        var candidates = Self.knownPaths
        if parts.count == 4, parts[1] == "custom" { candidates = candidates.map { $0.replacingNAME(with: parts[2]) } }
        throw PolicyError(file: file, line: entry.line, key: entry.path,
                          "unknown key\(PolicyLoader.suggestion(entry.path, among: candidates))")
    }

    private mutating func setAudit(_ key: String, _ value: inout Value) throws(PolicyError) -> Bool {
        var audit = policy.audit ?? AuditSettings()
        defer { policy.audit = audit }
        switch key {
        case "path": audit.path = try value.absolutePath()
        case "fsync":
            let mode = try value.string()
            guard let fsync = AuditSettings.Fsync(rawValue: mode) else {
                throw value.error("must be \"always\", \"batch\" or \"never\", not \(value.entry.value.render)")
            }
            audit.fsync = fsync
        case "key_file": audit.keyFile = try value.absolutePath()
        case "rotate_mb": audit.rotateMB = try value.integer(1...1_048_576)
        case "enabled":
            // No policy may switch auditing off: a policy that extends an audited one stays audited.
            throw value.error("auditing cannot be switched off: a policy with an [audit] table (or one extending it) is audited; use a policy without [audit] and no --audit to run unaudited")
        default: return false
        }
        return true
    }

    private mutating func setLimit(_ key: String, _ value: inout Value) throws(PolicyError) -> Bool {
        switch key {
        // At least 64 MiB: CPython and the worker need ~30 MiB of address space to start.
        case "memory_mb": policy.limits.memoryMB = try value.integer(64...1_048_576)
        case "cpu_seconds": policy.limits.cpuSeconds = try value.integer(1...86_400)
        case "timeout_s": policy.limits.timeoutSeconds = try value.seconds(0.1...86_400)
        case "max_fds": policy.limits.maxFDs = try value.integer(16...65_536)
        case "max_processes": policy.limits.maxProcesses = try value.integer(1...4_096)
        case "max_output_bytes": policy.limits.maxOutputBytes = try value.integer(1...(1 << 40))
        case "max_file_bytes": policy.limits.maxFileBytes = try value.integer(1...(1 << 40))
        case "workspace_mb": policy.limits.workspaceMB = try value.integer(1...1_048_576)
        // At least 8 MiB: the worker's own frames (64 KiB of output, a clipped traceback) fit.
        case "max_frame_bytes": policy.limits.maxFrameBytes = try value.integer((8 << 20)...(1 << 30))
        case "cpus": policy.limits.cpus = try value.cpus()
        default: return false
        }
        return true
    }

    private mutating func setSandbox(_ parts: [String], _ value: inout Value) throws(PolicyError) -> Bool {
        switch parts[0] {
        case "network" where parts.count == 1:
            let text = try value.string()
            guard let mode = NetworkMode(rawValue: text) else { throw value.error("must be \"none\" or \"host\", not \"\(text)\"") }
            policy.network = mode
        case "env" where parts.count == 2:
            guard Validate.isEnvironmentName(parts[1]) else {
                throw value.error("an environment variable's name must be letters, digits and _ (starting with a letter or _)")
            }
            if policy.environment[parts[1]] == nil && policy.environment.count >= 1024 {
                throw value.error("a policy may pass at most 1024 environment variables")
            }
            let text = try value.string(allowNUL: false)
            guard text.utf8.count <= 64 << 10 else { throw value.error("must be at most 65536 bytes") }
            policy.environment[parts[1]] = text
        case "env" where parts.count == 1:
            throw value.error("must be a table of NAME = \"value\", like env = { LANG = \"C.UTF-8\" }")
        case "readonly_paths" where parts.count == 1:
            policy.readonlyPaths = try value.readonlyPaths(atMost: 256, "paths")
        case "environment" where parts.count == 1:
            let name = try value.string()
            guard Validate.isEnvironmentDirectoryName(name) else {
                throw value.error("`\(name.clipped(to: 80))` is not an environment's name: 1 to 64 letters, digits, `.`, `_` and `-`, "
                                  + "starting with a letter or digit (`capsule env list` shows them)")
            }
            policy.pythonEnvironment = name
        case "mounts" where parts.count == 1:
            let texts = try value.strings()
            guard texts.count <= 64 else { throw value.error("may list at most 64 mounts") }
            policy.mounts = []
            for text in texts {
                switch Mount.parse(text) {
                case .success(let mount): policy.mounts.append(mount)
                case .failure(let problem): throw value.error(problem.message)
                }
            }
        case "python_path" where parts.count == 1:
            policy.pythonPath = try value.readonlyPaths(atMost: 64, "directories")
        case "python_subprocess" where parts.count == 1:
            policy.pythonSubprocess = try value.bool()
        case "preload" where parts.count == 1:
            let modules = try value.strings()
            guard modules.count <= 64 else { throw value.error("may list at most 64 modules") }
            if let bad = modules.first(where: { !Validate.isModuleName($0) }) {
                throw value.error("`\(bad.clipped(to: 80))` is not a module's name: dotted Python identifiers, like \"pandas\" or \"matplotlib.pyplot\"")
            }
            policy.preload = modules
        default:
            return false
        }
        return true
    }

    /// `"api.example.com" = { header = "Authorization", value_from_env = "TOKEN" }`, flattened:
    /// `rest` is `HOST.header`, `HOST.value_from_env` or `HOST.value_from_file` (HOST quoted or bare).
    private mutating func setCredential(_ rest: String, _ value: inout Value) throws(PolicyError) {
        var host: String
        var member: String
        if rest.hasPrefix("\""), let close = rest.dropFirst().firstIndex(of: "\"") {
            host = String(rest[rest.index(after: rest.startIndex)..<close])
            member = String(rest[close...].dropFirst())
            guard member.hasPrefix(".") else {
                throw value.error("a credential is a table: \"host\" = { header = \"Authorization\", value_from_env = \"NAME\" }")
            }
            member.removeFirst()
        } else {
            guard let dot = rest.lastIndex(of: ".") else {
                throw value.error("a credential is a table: \"host\" = { header = \"Authorization\", value_from_env = \"NAME\" }")
            }
            host = String(rest[..<dot])
            member = String(rest[rest.index(after: dot)...])
        }
        host = host.lowercased()
        guard !host.isEmpty, host.allSatisfy({ ($0.isASCII && ($0.isLetter || $0.isNumber)) || "-.[]:".contains($0) }) else {
            throw value.error("`\(host)` is not a host name (no scheme, port or path: the host as it stands in urls)")
        }
        var credential = policy.capabilities.net!.credentials[host] ?? NetCredential(header: "", source: .environment(""))
        switch member {
        case "header":
            let header = try value.string()
            guard !header.isEmpty, header.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else {
                throw value.error("must be an HTTP header name such as \"Authorization\"")
            }
            credential.header = header
        case "value_from_env":
            let name = try value.string()
            guard Validate.isIdentifier(name) else { throw value.error("must be an environment variable name") }
            credential.source = .environment(name)
        case "value_from_file":
            credential.source = .file(try value.absolutePath())
        default:
            throw value.error("a credential takes header, and value_from_env or value_from_file")
        }
        policy.capabilities.net!.credentials[host] = credential
    }

    private static func setGrant(_ grant: inout CapabilityGrant, _ key: String, _ value: inout Value) throws(PolicyError) -> Bool {
        switch key {
        case "enabled": grant.enabled = try value.bool()
        case "rate_per_minute": grant.ratePerMinute = try value.integer(1...1_000_000)
        case "max_bytes": grant.maxBytes = try value.integer(1...(1 << 40))
        case "ask": grant.ask = try value.bool()
        default: return false
        }
        return true
    }

    private mutating func setCapability(_ name: String, _ key: String, _ value: inout Value) throws(PolicyError) -> Bool {
        var caps = policy.capabilities
        defer { policy.capabilities = caps }
        switch name {
        case "display": return try Self.setGrant(&caps.display!, key, &value)
        case "input": return try Self.setGrant(&caps.input!, key, &value)
        case "env":
            if key == "names" {
                caps.env!.names = try value.strings()
                for name in caps.env!.names where !Validate.isEnvironmentName(name) {
                    throw value.error("`\(name)` is not an environment variable name")
                }
                return true
            }
            return try Self.setGrant(&caps.env!.grant, key, &value)
        case "file":
            switch key {
            case "read": caps.file!.read = try value.absolutePaths()
            case "write": caps.file!.write = try value.absolutePaths()
            case "include": caps.file!.include = try value.strings(nonEmpty: true)
            case "exclude": caps.file!.exclude = try value.strings(nonEmpty: true)
            default: return try Self.setGrant(&caps.file!.grant, key, &value)
            }
        case "net":
            switch key {
            case "urls": caps.net!.urls = try value.urls()
            case "methods": caps.net!.methods = try value.methods()
            case "websocket": caps.net!.websocket = try value.bool()
            case "timeout_s": caps.net!.timeoutSeconds = try value.seconds(0.1...3_600)
            default: return try Self.setGrant(&caps.net!.grant, key, &value)
            }
        case "db":
            switch key {
            case "write": caps.db!.write = try value.bool()
            case "max_rows": caps.db!.maxRows = try value.integer(1...100_000_000)
            case "databases": throw value.error("must be a table of name = \"/path/to.sqlite\"")
            default: return try Self.setGrant(&caps.db!.grant, key, &value)
            }
        default:
            return false
        }
        return true
    }

    private mutating func setCustom(_ name: String, _ key: String, _ value: inout Value) throws(PolicyError) -> Bool {
        if key == "command" {
            let command = try value.strings(nonEmpty: true)
            guard let program = command.first, program.hasPrefix("/") else {
                throw value.error("must start with the absolute path of the plugin program, like [\"/usr/local/bin/plugin\"]")
            }
            policy.capabilities.custom[name]!.command = command
            return true
        }
        return try Self.setGrant(&policy.capabilities.custom[name]!.grant, key, &value)
    }
}

/// One value being read, for typed access with errors that name the key and line.
struct Value {
    let entry: TOMLDocument.Entry
    let file: String

    func error(_ message: String) -> PolicyError {
        PolicyError(file: file, line: entry.line, key: entry.path, message)
    }

    private func expected(_ what: String) -> PolicyError {
        error("must be \(what), not \(entry.value.render)")
    }

    func string(allowNUL: Bool = true) throws(PolicyError) -> String {
        guard case .string(let text) = entry.value else { throw expected("a string") }
        if !allowNUL && text.utf8.contains(0) { throw error("must not contain a NUL character") }
        return text
    }

    func bool() throws(PolicyError) -> Bool {
        guard case .bool(let flag) = entry.value else { throw expected("true or false") }
        return flag
    }

    func integer(_ range: ClosedRange<Int>) throws(PolicyError) -> Int {
        guard case .integer(let number) = entry.value, range.contains(number) else {
            throw expected("a whole number from \(range.lowerBound) to \(range.upperBound)")
        }
        return number
    }

    func seconds(_ range: ClosedRange<Double>) throws(PolicyError) -> Double {
        switch entry.value {
        case .integer(let number) where range.contains(Double(number)): return Double(number)
        case .float(let number) where range.contains(number): return number
        default: throw expected("a number of seconds from \(range.lowerBound.shortText) to \(range.upperBound.shortText)")
        }
    }

    func strings(nonEmpty: Bool = false) throws(PolicyError) -> [String] {
        guard case .array(let items) = entry.value else { throw expected("an array of strings") }
        var out: [String] = []
        for item in items {
            guard case .string(let text) = item, !text.utf8.contains(0) else {
                throw expected("an array of strings")
            }
            if nonEmpty && text.isEmpty { throw error("must not contain an empty string") }
            out.append(text)
        }
        if nonEmpty && out.isEmpty { throw error("must not be empty") }
        return out
    }

    func absolutePath() throws(PolicyError) -> String {
        let path = try string(allowNUL: false)
        guard Validate.isCleanAbsolutePath(path) else {
            throw error("`\(path)` must be an absolute path without `.` or `..` parts or control characters, like \"/srv/data\"")
        }
        return path
    }

    /// Host paths to bind read-only: absolute, at most `limit` of them, none refused by
    /// `Validate.readonlyPathProblem`.
    func readonlyPaths(atMost limit: Int, _ what: String) throws(PolicyError) -> [String] {
        let paths = try absolutePaths()
        guard paths.count <= limit else { throw error("may list at most \(limit) \(what)") }
        for path in paths {
            if let problem = Validate.readonlyPathProblem(path) { throw error("`\(path)` \(problem)") }
        }
        return paths
    }

    func absolutePaths() throws(PolicyError) -> [String] {
        let paths = try strings()
        for path in paths where !Validate.isCleanAbsolutePath(path) {
            throw error("`\(path)` must be an absolute path without `.` or `..` parts or control characters, like \"/srv/data\"")
        }
        return paths
    }

    func urls() throws(PolicyError) -> [String] {
        let urls = try strings()
        for url in urls {
            if let problem = Validate.urlProblem(url) { throw error("`\(url)` \(problem)") }
        }
        return urls
    }

    func methods() throws(PolicyError) -> [String] {
        let methods = try strings(nonEmpty: true)
        for method in methods where !Validate.httpMethods.contains(method) {
            throw error("`\(method)` is not an HTTP method capsule knows (\(Validate.httpMethods.joined(separator: ", ")))")
        }
        return methods
    }

    func cpus() throws(PolicyError) -> [Int] {
        guard case .array(let items) = entry.value else { throw expected("an array of core numbers, like cpus = [0, 1]") }
        guard !items.isEmpty else {
            throw error("an empty list of cores is not allowed: list the cores the code may run on, like cpus = [0, 1], or leave cpus out for all of them")
        }
        var cores: [Int] = []
        for item in items {
            guard case .integer(let core) = item, (0...1023).contains(core) else {
                throw error("must list core numbers from 0 to 1023, not \(item.render)")
            }
            guard !cores.contains(core) else { throw error("lists core \(core) twice") }
            cores.append(core)
        }
        return cores
    }
}

/// Shapes of values a policy names: paths, URLs, identifiers.
enum Validate {
    static let httpMethods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

    static func isIdentifier(_ text: String) -> Bool {
        guard let first = text.utf8.first, first == UInt8(ascii: "_") || isLetter(first) else { return false }
        return text.utf8.allSatisfy { $0 == UInt8(ascii: "_") || isLetter($0) || ($0 >= 0x30 && $0 <= 0x39) }
    }

    static func isEnvironmentName(_ text: String) -> Bool { isIdentifier(text) }

    /// A module's dotted name in ASCII identifiers (`matplotlib.pyplot`), at most 200 bytes.
    static func isModuleName(_ text: String) -> Bool {
        text.utf8.count <= 200 && text.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { isIdentifier(String($0)) }
    }

    private static func isLetter(_ byte: UInt8) -> Bool { (byte | 0x20) >= 0x61 && (byte | 0x20) <= 0x7a }

    /// Where the sandbox's own layout lives: a read-only path may be none of these, under none of
    /// them, and contain none of them (it would hide the worker, the workspace or /proc).
    static let reservedPaths = ["/usr/lib/capsule", "/opt/capsule", "/workspace", "/dev", "/proc", "/etc/passwd", "/etc/group", "/etc/hostname"]
    /// Where hosts keep unix sockets. A read-only bind does not stop connect() on a socket, so
    /// binding one of these would hand the code the daemons behind them.
    static let socketDirectories = ["/run", "/var/run", "/tmp", "/var/tmp", "/dev/shm", "/var/lib/docker", "/var/lib/containerd"]

    /// A `capsule env` name: what `[sandbox] environment` may say, and a directory name as it stands.
    static func isEnvironmentDirectoryName(_ name: String) -> Bool {
        func alphanumeric(_ byte: UInt8) -> Bool {
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte | 0x20) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
        }
        let bytes = Array(name.utf8)
        guard let first = bytes.first, bytes.count <= 64, alphanumeric(first) else { return false }
        return bytes.allSatisfy { alphanumeric($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") }
    }

    static func readonlyPathProblem(_ path: String) -> String? {
        if let reserved = reservedOverlap(path) {
            return "overlaps \(reserved), which the sandbox provides itself"
        }
        if let sockets = socketDirectories.first(where: { overlap(path, $0) }) {
            return "overlaps \(sockets), where hosts keep unix sockets a read-only bind would not keep the code from connecting to"
        }
        return nil
    }

    /// The part of the sandbox's own layout that `path` is, contains or lies under, if any.
    static func reservedOverlap(_ path: String) -> String? { reservedPaths.first { overlap(path, $0) } }

    /// Whether `path` is `root`, lies under it or contains it.
    private static func overlap(_ path: String, _ root: String) -> Bool {
        path == root || path.hasPrefix(root + "/") || path == "/" || root.hasPrefix(path + "/")
    }

    static func isCleanAbsolutePath(_ path: String) -> Bool {
        guard path.hasPrefix("/"), !path.unicodeScalars.contains(where: \.isControlCharacter) else { return false }
        return !path.split(separator: "/").contains { $0 == "." || $0 == ".." }
    }

    /// An allow-list URL taken apart: the scheme and host lowercased, the port explicit (80 or 443 when
    /// the URL names none) and the path never empty ("/" when the URL has none).
    struct AllowListURL: Equatable {
        var scheme: String
        var host: String
        var port: Int
        var path: String
    }

    /// nil for an acceptable allow-list URL: http(s)://host[:port][/path-prefix], nothing else.
    static func urlProblem(_ url: String) -> String? {
        if case .failure(let problem) = parseURL(url) { return problem.sentence }
        return nil
    }

    /// The parts of an acceptable allow-list URL; nil when `urlProblem` finds one.
    static func allowListURL(_ url: String) -> AllowListURL? { try? parseURL(url).get() }

    private struct URLProblem: Error { let sentence: String }

    private static func parseURL(_ url: String) -> Result<AllowListURL, URLProblem> {
        func problem(_ sentence: String) -> Result<AllowListURL, URLProblem> { .failure(URLProblem(sentence: sentence)) }
        // ws:// and wss:// entries allow only net.websocket (docs/policy.md).
        guard let scheme = ["https://", "http://", "wss://", "ws://"].first(where: url.hasPrefix) else {
            return problem("must start with https:// or http:// (or wss:// or ws:// for WebSockets)")
        }
        let rest = url.dropFirst(scheme.count)
        let authority = rest.prefix { $0 != "/" }
        if authority.isEmpty { return problem("has no host") }
        if authority.contains("@") { return problem("must not carry a user name or password") }
        if url.contains("?") || url.contains("#") { return problem("must not have a query or fragment: it is a prefix") }
        if url.contains(where: { $0 == " " || $0 == "\\" }) { return problem("must not contain spaces or backslashes") }
        var host = Substring(authority)
        var port = scheme == "https://" || scheme == "wss://" ? 443 : 80
        if let colon = authority.lastIndex(of: ":"), !authority.hasSuffix("]") {
            let digits = authority[authority.index(after: colon)...]
            // Digits only: `Int` would also take "+443".
            guard !digits.isEmpty, digits.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                  let number = Int(digits), (1...65535).contains(number) else {
                return problem("has a port that is not a number from 1 to 65535")
            }
            port = number
            host = authority[..<colon]
        }
        let allowed = host.hasPrefix("[")
            ? host.count > 2 && host.hasSuffix("]") && host.dropFirst().dropLast().allSatisfy { $0.isHexDigit || $0 == ":" || $0 == "." }
            : host.allSatisfy { ($0.isASCII && ($0.isLetter || $0.isNumber)) || $0 == "-" || $0 == "." }
        guard allowed && !host.isEmpty else { return problem("has a host name with characters a host name cannot have") }
        let path = rest.dropFirst(authority.count).isEmpty ? "/" : String(rest.dropFirst(authority.count))
        if let escape = percentEscapeProblem(path) { return problem(escape) }
        if path.contains("//") { return problem("must not have an empty path segment (`//`)") }
        if path.split(separator: "/", omittingEmptySubsequences: false).contains(where: { $0 == "." || $0 == ".." }) {
            return problem("must not have a `.` or `..` path segment")
        }
        return .success(AllowListURL(scheme: String(scheme.dropLast(3)).lowercased(), host: host.lowercased(),
                                     port: port, path: path))
    }

    /// A `%` must start an escape of two hex digits, and no escape may hide a `.` or a `/`: a server
    /// that decodes them would see path segments the prefix does not show.
    private static func percentEscapeProblem(_ path: String) -> String? {
        let bytes = Array(path.utf8)
        func isHex(_ byte: UInt8) -> Bool {
            (0x30...0x39).contains(byte) || (0x61...0x66).contains(byte | 0x20)
        }
        var index = 0
        while index < bytes.count {
            defer { index += 1 }
            guard bytes[index] == UInt8(ascii: "%") else { continue }
            guard index + 2 < bytes.count, isHex(bytes[index + 1]), isHex(bytes[index + 2]) else {
                return "has a `%` in its path that is not followed by two hex digits"
            }
            if bytes[index + 1] == UInt8(ascii: "2") && [UInt8(ascii: "e"), UInt8(ascii: "f")].contains(bytes[index + 2] | 0x20) {
                return "must not percent-encode `.` or `/` in its path (%2e, %2f)"
            }
        }
        return nil
    }
}

extension String {
    fileprivate func replacingNAME(with name: String) -> String {
        split(separator: ".", omittingEmptySubsequences: false).map { $0 == "NAME" ? name : String($0) }.joined(separator: ".")
    }
}

extension Double {
    var shortText: String { self == rounded() && abs(self) < 1e15 ? String(Int(self)) : String(self) }
}
