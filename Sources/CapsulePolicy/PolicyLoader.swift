import CapsuleOS
#if canImport(Glibc)
import Glibc
#endif

/// Turns `--policy` into a Policy: a level name, or a TOML file with `level` and `[limits]`.
/// (The full policy engine, with capabilities and `extends`, replaces this loader's key table.)
public enum PolicyLoader {
    static let maxFileBytes = 1 << 20

    public static func load(_ specifier: String) throws(PolicyError) -> Policy {
        if let level = Level(rawValue: specifier) { return Policy(level: level) }
        let bytes: [UInt8]
        do {
            bytes = try OS.readFile(specifier, limit: maxFileBytes)
        } catch {
            let hint = specifier.contains("/") || specifier.hasSuffix(".toml")
                ? "" : "; a level is one of \(Level.allCases.map(\.rawValue).joined(separator: ", "))"
            let reason = error.errno == EFBIG ? "the file is larger than 1 MiB" : OS.errorText(error.errno)
            throw PolicyError(file: specifier, "cannot read the policy: \(reason)\(hint)")
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw PolicyError(file: specifier, "the policy is not UTF-8 text")
        }
        return try parse(text, file: specifier)
    }

    /// The keys this loader knows, with what each takes and where it goes.
    private static let limitKeys: [(key: String, range: ClosedRange<Int>, set: @Sendable (inout Limits, Int) -> Void)] = [
        ("memory_mb", 16...1_048_576, { $0.memoryMB = $1 }),
        ("cpu_seconds", 1...86_400, { $0.cpuSeconds = $1 }),
        ("max_fds", 16...65_536, { $0.maxFDs = $1 }),
        ("max_processes", 1...4_096, { $0.maxProcesses = $1 }),
        ("max_output_bytes", 1...(1 << 40), { $0.maxOutputBytes = $1 }),
        ("max_file_mb", 1...1_048_576, { $0.maxFileMB = $1 }),
        ("workspace_mb", 1...1_048_576, { $0.workspaceMB = $1 }),
        ("max_frame_bytes", 1024...(1 << 30), { $0.maxFrameBytes = $1 }),
    ]

    public static func parse(_ text: String, file: String) throws(PolicyError) -> Policy {
        let document = try TOMLDocument(parsing: text, file: file)
        for table in document.tables where table.path != "limits" {
            throw PolicyError(file: file, line: table.line, key: table.path,
                              "unknown table\(suggestion(table.path, among: ["limits"]))")
        }
        guard let levelEntry = document.entries.first(where: { $0.path == "level" }) else {
            throw PolicyError(file: file, key: "level",
                              "missing; add a line such as level = \"sandbox\" (one of \(levelNames))")
        }
        guard case .string(let levelName) = levelEntry.value, let level = Level(rawValue: levelName) else {
            throw PolicyError(file: file, line: levelEntry.line, key: "level", "must be one of \(levelNames)")
        }
        var limits = Limits()
        for entry in document.entries where entry.path != "level" {
            let key = entry.path.hasPrefix("limits.") ? String(entry.path.dropFirst("limits.".count)) : nil
            if entry.path == "description" {
                guard case .string = entry.value else {
                    throw PolicyError(file: file, line: entry.line, key: entry.path, "must be a string")
                }
                continue
            }
            if key == "timeout_s" {
                switch entry.value {
                case .integer(let seconds) where (1...86_400).contains(seconds): limits.timeoutSeconds = Double(seconds)
                case .float(let seconds) where seconds >= 0.1 && seconds <= 86_400: limits.timeoutSeconds = seconds
                default:
                    throw PolicyError(file: file, line: entry.line, key: entry.path,
                                      "must be a number of seconds from 0.1 to 86400, not \(entry.value.render)")
                }
                continue
            }
            guard let key, let known = limitKeys.first(where: { $0.key == key }) else {
                let candidates = ["level", "description"] + (["timeout_s"] + limitKeys.map(\.key)).map { "limits.\($0)" }
                throw PolicyError(file: file, line: entry.line, key: entry.path,
                                  "unknown key\(suggestion(entry.path, among: candidates))")
            }
            guard case .integer(let number) = entry.value, known.range.contains(number) else {
                throw PolicyError(file: file, line: entry.line, key: entry.path,
                                  "must be a whole number from \(known.range.lowerBound) to \(known.range.upperBound), not \(entry.value.render)")
            }
            known.set(&limits, number)
        }
        return Policy(level: level, limits: limits, origin: file)
    }

    private static var levelNames: String { Level.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ") }

    /// "; did you mean `x`?" for the nearest candidate within two edits, else "".
    /// A key written outside its table (`memory_mb` for `limits.memory_mb`) matches on its last part.
    static func suggestion(_ word: String, among candidates: [String]) -> String {
        let scored = candidates.map { candidate in
            let last = candidate.split(separator: ".").last.map(String.init) ?? candidate
            return (candidate, min(editDistance(word, candidate), word.contains(".") ? Int.max : editDistance(word, last)))
        }.min { $0.1 < $1.1 }
        guard let (best, distance) = scored, distance <= max(2, word.count / 4) else { return "" }
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
