import CapsuleOS
#if canImport(Glibc)
import Glibc
#endif

/// Turns `--policy` into a validated Policy: a level name (the built-in policy of that level) or a
/// TOML file, following `extends` (docs/policy.md).
public enum PolicyLoader {
    static let maxFileBytes = 1 << 20
    static let maxExtendsDepth = 16
    /// `policy check` lists at most this many problems of one file.
    static let maxProblems = 50

    public static func load(_ specifier: String) throws(PolicyError) -> Policy {
        if let level = Level(rawValue: specifier) { return try builtin(level) }
        return try loadFile(specifier, chain: [])
    }

    /// Every problem with a policy (`policy check`): all bad keys and grants of the file, or the
    /// one syntax error that stopped reading it. Empty when the policy is valid.
    public static func problems(_ specifier: String) -> [PolicyError] {
        do {
            _ = try load(specifier)
            return []
        } catch {
            return error.all
        }
    }

    /// The built-in policy of a level (policies/<level>.toml, compiled in).
    public static func builtin(_ level: Level) throws(PolicyError) -> Policy {
        var policy = try parse(BuiltinPolicies.text(level), file: "policies/\(level.rawValue).toml", chain: [])
        policy.origin = level.rawValue
        return policy
    }

    public static func parse(_ text: String, file: String) throws(PolicyError) -> Policy {
        try parse(text, file: file, chain: [])
    }

    /// A policy that came from elsewhere (a client of `capsule serve`): as `parse`, except that
    /// `extends` may name only a level, as no file of this host is read for it.
    public static func parseReadingNoFiles(_ text: String, file: String) throws(PolicyError) -> Policy {
        try parse(text, file: file, chain: [], readsFiles: false)
    }

    private static func loadFile(_ path: String, chain: [String]) throws(PolicyError) -> Policy {
        let bytes: [UInt8]
        do {
            bytes = try OS.readFile(path, limit: maxFileBytes)
        } catch {
            let hint = path.contains("/") || path.hasSuffix(".toml")
                ? "" : "; a level is one of \(Level.allCases.map(\.rawValue).joined(separator: ", "))"
            let reason = error.errno == EFBIG ? "the file is larger than 1 MiB" : OS.errorText(error.errno)
            throw PolicyError(file: path, "cannot read the policy: \(reason)\(hint)")
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw PolicyError(file: path, "the policy is not UTF-8 text")
        }
        return try parse(text, file: path, chain: chain)
    }

    private static func parse(_ text: String, file: String, chain: [String], readsFiles: Bool = true) throws(PolicyError) -> Policy {
        let document = try TOMLDocument(parsing: text, file: file)
        func entry(_ key: String) -> TOMLDocument.Entry? { document.entries.first { $0.path == key } }
        var problems: [PolicyError] = []

        var base: Policy?
        if let extends = entry("extends") {
            let name = try Value(entry: extends, file: file).string()
            base = try resolveBase(name, from: file, chain: chain + [file], line: extends.line, readsFiles: readsFiles)
        }
        var level = base?.level ?? .sandbox // provisional, so the rest of the file is still checked
        if let levelEntry = entry("level") {
            do throws(PolicyError) {
                let name = try Value(entry: levelEntry, file: file).string()
                guard let named = Level(rawValue: name) else {
                    throw PolicyError(file: file, line: levelEntry.line, key: "level",
                                      "must be one of \(levelNames), not \"\(name)\"\(suggestion(name, among: Level.allCases.map(\.rawValue)))")
                }
                level = named
            } catch {
                problems.append(error)
            }
        } else if base == nil {
            problems.append(PolicyError(file: file, key: "level",
                                        "missing; add a line such as level = \"sandbox\" (one of \(levelNames)), or extends = \"sandbox\""))
        }

        var start = base ?? Policy(level: level, network: NetworkMode.none)
        start.level = level
        start.origin = file
        var decoder = PolicyDecoder(file: file, policy: start)
        decoder.apply(document)
        let policy = decoder.policy
        // A grant whose keys were bad is not also reported as missing what those keys gave.
        let ceiling = PolicyRules.ceilingProblems(policy, base: base, lines: decoder.lines, file: file).filter { problem in
            guard problem.message.hasPrefix("missing"), let key = problem.key, let dot = key.lastIndex(of: ".") else { return true }
            let capability = String(key[..<dot])
            return !decoder.errors.contains { $0.key?.hasPrefix(capability) == true }
        }
        problems += decoder.errors + ceiling
        if let base {
            // A key already wrong for another reason (a bad value, above the level) is not also reported as widening.
            func path(_ problem: PolicyError) -> Substring? { problem.key?.prefix { $0 != " " } } // `net.methods (POST)`
            let reported = problems.compactMap(path)
            problems += PolicyRules.narrowingProblems(policy, base: base, lines: decoder.lines, file: file).filter { problem in
                guard let key = path(problem) else { return true }
                return !reported.contains { $0 == key || $0.hasPrefix(key + ".") || key.hasPrefix($0 + ".") }
            }
        }
        problems.sort { ($0.line ?? .max) < ($1.line ?? .max) } // errors without a line (a missing key) last
        guard let first = problems.first else { return policy }
        if problems.count > maxProblems {
            let more = problems.count - maxProblems
            problems = Array(problems.prefix(maxProblems)) + [PolicyError(file: file, "… and \(more) more problems like these")]
        }
        throw PolicyError(first: first, all: problems)
    }

    /// `extends`: a level's built-in policy, or a file relative to the one that names it.
    private static func resolveBase(_ name: String, from file: String, chain: [String], line: Int,
                                    readsFiles: Bool) throws(PolicyError) -> Policy {
        if let level = Level(rawValue: name) { return try builtin(level) }
        guard readsFiles else {
            throw PolicyError(file: file, line: line, key: "extends", "names a file, and this policy may extend only a level (\(levelNames)): no file is read for it")
        }
        let directory = file.contains("/") ? String(file[..<file.lastIndex(of: "/")!]) : "."
        let path = OS.normalizedPath(name.hasPrefix("/") ? name : "\(directory)/\(name)")
        if let start = chain.map(OS.normalizedPath).firstIndex(of: path) {
            let cycle = (chain[start...] + [path]).joined(separator: " → ")
            throw PolicyError(file: file, line: line, key: "extends", "forms a cycle: \(cycle)")
        }
        guard chain.count < maxExtendsDepth else {
            throw PolicyError(file: file, line: line, key: "extends", "policies extend each other more than \(maxExtendsDepth) deep")
        }
        do {
            return try loadFile(path, chain: chain)
        } catch where error.line == nil && error.file == path && error.message.hasPrefix("cannot read") {
            throw PolicyError(file: file, line: line, key: "extends", "\(path): \(error.message)")
        }
    }

    private static var levelNames: String { Level.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ") }

    /// "; did you mean `x`?" for the nearest candidate within a few edits, else "".
    /// A key written outside its table (`memory_mb` for `limits.memory_mb`) matches on its last part.
    static func suggestion(_ word: String, among candidates: [String]) -> String {
        // Within a third of the last part's length: `memroy_mb` finds `memory_mb`, `shell` finds nothing.
        let last = word.split(separator: ".").last.map(String.init) ?? word
        let allowed = max(1, last.count / 3)
        // Two texts are at least their difference in length apart: a candidate that cannot come
        // within `allowed` is not compared at all (a 100 000-character key costs nothing).
        func distance(_ a: String, _ b: String) -> Int {
            abs(a.count - b.count) > allowed ? Int.max : editDistance(a, b)
        }
        let scored = candidates.map { candidate in
            let lastPart = candidate.split(separator: ".").last.map(String.init) ?? candidate
            return (candidate, min(distance(word, candidate), word.contains(".") ? Int.max : distance(word, lastPart)))
        }.min { $0.1 < $1.1 }
        guard let (best, distance) = scored, distance <= allowed else { return "" }
        return "; did you mean `\(best)`?"
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var previous = Array(0...b.count)
        for i in 1...max(a.count, 1) where !a.isEmpty {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...max(b.count, 1) where !b.isEmpty {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return a.isEmpty ? b.count : previous[b.count]
    }
}

extension TOMLDocument.Value {
    var render: String {
        switch self {
        case .string(let text): "\"\(text)\""
        case .integer(let number): String(number)
        case .float(let number): String(number)
        case .bool(let flag): String(flag)
        case .array: "an array"
        case .table: "a table"
        }
    }
}
