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
        let output: [UInt8]
        do {
            let (mine, theirs) = try OS.socketPair()
            let pid: Int32
            do {
                pid = try OS.spawn(location.executable, arguments: ["--probe"], descriptors: [(1, theirs)])
            } catch {
                OS.close(mine)
                OS.close(theirs)
                throw error
            }
            OS.close(theirs)
            defer { OS.close(mine) }
            var bytes: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = try buffer.withUnsafeMutableBytes { raw in Result { try OS.read(mine, into: raw) } }.get()
                if count == 0 { break }
                bytes += buffer[0..<count]
            }
            _ = try OS.wait(pid, block: true)
            output = bytes
        } catch let error as SystemError {
            throw .spawnFailed(error)
        } catch {
            throw .spawnFailed(SystemError("probe", errno: 5))
        }
        return String(decoding: output, as: UTF8.self).split(separator: "\n").compactMap { line in
            let words = line.split(separator: " ", maxSplits: 2)
            guard words.count >= 2 else { return nil }
            return FeatureCheck(name: String(words[0]), works: words[1] == "yes",
                                detail: words.count > 2 ? String(words[2]) : "")
        }
    }
}
