import CapsuleOS

/// One kernel feature and whether it works on this host, as found by trying it.
public struct FeatureCheck: Sendable, Equatable {
    public let name: String
    public let works: Bool
    public let detail: String
}

public enum Doctor {
    /// Runs `capsule-worker --probe`, which tries each feature in a short-lived child process.
    public static func probe(location: WorkerLocation) throws(SandboxError) -> [FeatureCheck] {
        let output = try location.output(of: ["--probe"])
        return String(decoding: output, as: UTF8.self).split(separator: "\n").compactMap { line in
            let words = line.split(separator: " ", maxSplits: 2)
            guard words.count >= 2 else { return nil }
            return FeatureCheck(name: String(words[0]), works: words[1] == "yes",
                                detail: words.count > 2 ? String(words[2]) : "")
        }
    }
}
