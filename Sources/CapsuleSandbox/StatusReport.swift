/// What capsule-worker wrote on its status pipe (see Sources/CCapsuleWorker/report.c).
public struct StatusReport: Sendable, Equatable {
    public var failure: StageFailure?
    public var notes: [String] = []
    /// How the Python process ended, as pid 1 of the sandbox saw it.
    public var exitCode: Int32?
    public var signal: Int32?
    /// Kills by the cgroup's memory limit.
    public var memoryKills = 0
    /// The Python process was killed after using its whole CPU allowance.
    public var cpuLimitHit = false

    public init() {}

    /// Adds complete lines from `text`; returns the unfinished tail to carry over.
    public mutating func consume(_ text: String) -> String {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let tail = lines.removeLast()
        for line in lines { apply(line) }
        return String(tail)
    }

    private mutating func apply(_ line: Substring) {
        let words = line.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false)
        guard let kind = words.first else { return }
        switch kind {
        case "stage" where words.count >= 3 && failure == nil: // the first failure is the cause
            failure = StageFailure(stage: String(words[1]), errno: Int32(words[2]) ?? 0,
                                   detail: words.count > 3 ? String(words[3]) : "")
        case "note":
            notes.append(String(line.dropFirst(5)))
        case "exit" where words.count >= 2:
            exitCode = Int32(words[1])
        case "signal" where words.count >= 2:
            signal = Int32(words[1])
        case "cpu-limit":
            cpuLimitHit = true
        case "oom" where words.count >= 2:
            memoryKills = Int(words[1]) ?? 0
        default:
            break
        }
    }
}
