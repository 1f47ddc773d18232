import CapsulePolicy

/// Reading a policy's capability tables by capability name.
enum Grants {
    /// The built-in capability names and the lowest level whose policy may grant each
    /// (docs/policy.md; `PolicyRules` enforces the same ceilings when a policy is loaded).
    static let builtinLevels: [(name: String, level: Level)] = [
        ("display", .sandbox), ("input", .restricted), ("env", .restricted), ("file", .restricted),
        ("net", .standard), ("db", .standard),
    ]

    /// The table's common keys, or nil when the policy has no such table.
    static func grant(_ name: String, in policy: Policy) -> CapabilityGrant? {
        let capabilities = policy.capabilities
        switch name {
        case "display": return capabilities.display
        case "input": return capabilities.input
        case "env": return capabilities.env?.grant
        case "file": return capabilities.file?.grant
        case "net": return capabilities.net?.grant
        case "db": return capabilities.db?.grant
        default:
            guard name.hasPrefix("custom.") else { return nil }
            return capabilities.custom[String(name.dropFirst("custom.".count))]?.grant
        }
    }

    /// `[capabilities.file]`, as a policy file writes it.
    static func table(_ name: String) -> String { "[capabilities.\(name)]" }

    /// The denial for a capability the session does not have, naming what would grant it.
    static func whyNotGranted(_ name: String, in policy: Policy) -> String {
        let this = "this policy (\(policy.origin), level \(policy.level.rawValue))"
        if let level = builtinLevels.first(where: { $0.name == name })?.level {
            if let grant = grant(name, in: policy) {
                return grant.enabled ? "`\(name)` is not available: this build of capsule does not provide \(table(name)) yet"
                    : "`\(name)` is not granted: \(this) sets enabled = false in \(table(name))"
            }
            let allow = level <= policy.level ? "add \(table(name)) to the policy"
                : "it needs a policy of level \(level.rawValue) or above with \(table(name))"
            return "`\(name)` is not granted: \(this) has no \(table(name)); \(allow)"
        }
        if name.hasPrefix("custom.") {
            return "`\(name)` is not granted: \(this) has no \(table(name)) (custom capabilities need level trusted)"
        }
        return "there is no capability `\(name)`"
    }
}
