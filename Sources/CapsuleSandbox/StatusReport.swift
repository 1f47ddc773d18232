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
    /// What the sandbox used, all its processes together.
    public var usage: Usage?
    /// `--output-dir`: what was copied out of /workspace/out, what was left out and why, or why nothing could be.
    public var outputs: OutputCopy?
    public var outputRefusals: [String] = []
    public var outputFailure: String?

    public struct Usage: Sendable, Equatable {
        public var cpuSeconds: Double
        /// The largest resident set any one process reached.
        public var peakRSSBytes: Int
        /// The memory cgroup's peak (page cache and tmpfs included); nil without a cgroup.
        public var peakMemoryBytes: Int?
    }

    public struct OutputCopy: Sendable, Equatable {
        public var files: Int, bytes: Int, refused: Int
    }

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
        case "usage" where words.count >= 4:
            let peak = Int(words[3]) ?? -1
            usage = Usage(cpuSeconds: (Double(words[1]) ?? 0) / 1e6, peakRSSBytes: (Int(words[2]) ?? 0) * 1024,
                          peakMemoryBytes: peak >= 0 ? peak : nil)
        case "output" where words.count >= 4:
            outputs = OutputCopy(files: Int(words[1]) ?? 0, bytes: Int(words[2]) ?? 0, refused: Int(words[3]) ?? 0)
        case "output-refused":
            outputRefusals.append(String(line.dropFirst("output-refused ".count)))
        case "output-failed":
            outputFailure = String(line.dropFirst("output-failed ".count))
        default:
            break
        }
    }
}
