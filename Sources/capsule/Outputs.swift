#if canImport(Glibc)
import Glibc
#endif
import CapsuleAudit
import CapsuleOS
import CapsulePolicy
import CapsuleProtocol
import CapsuleRuntime
import CapsuleSandbox

/// `--output-dir`: the host directory that receives /workspace/out. The launcher copies into it
/// once the sandbox has ended (Sources/CCapsuleWorker/outputs.c); this side names the directory
/// and says what was left out.
enum OutputDirectory {
    /// `path` as the absolute path the launcher is given.
    static func absolute(_ path: String) -> String {
        OS.normalizedPath(path.hasPrefix("/") ? path : (OS.currentDirectory() ?? "/") + "/" + path)
    }

    /// The directory as an absolute path, made if missing (its parent must exist), or why it cannot be used.
    static func prepare(_ path: String) -> Result<String, SourceError> {
        if path.isEmpty { return .failure(SourceError("--output-dir needs a directory name")) }
        let absolute = absolute(path)
        if let target = OS.linkTarget(absolute) {
            return .failure(SourceError("--output-dir \(path) is a symbolic link (to \(target)); name the directory itself"))
        }
        if OS.fileExists(absolute) {
            return OS.isDirectory(absolute) ? .success(absolute) : .failure(SourceError("--output-dir \(path) exists and is not a directory"))
        }
        guard mkdir(absolute, 0o755) == 0 else {
            let why = errno == ENOENT ? "its parent directory does not exist" : OS.errorText(errno)
            return .failure(SourceError("cannot make the --output-dir \(path): \(why)"))
        }
        return .success(absolute)
    }

    /// Says on stderr what the copy left out, if anything, or why nothing was copied.
    static func tell(_ ending: StatusReport, directory: String) {
        if let failure = ending.outputFailure {
            printError("capsule: --output-dir: nothing was copied to \(directory): \(failure)")
        } else if ending.outputs == nil {
            printError("capsule: --output-dir: nothing was copied to \(directory): the sandbox ended before it could be")
        }
        for refusal in ending.outputRefusals { printError("capsule: note: --output-dir left out \(refusal)") }
        if let copy = ending.outputs, copy.refused > ending.outputRefusals.count {
            printError("capsule: note: --output-dir left out \(copy.refused - ending.outputRefusals.count) more")
        }
    }
}

/// What `--report` says of a run beside its outcome.
struct RunFacts {
    let members: [(String, JSONValue)]

    init(session: Session, printer: EventPrinter, started: UInt64, outputDirectory: String?, audit: AuditLog?) {
        let ending = session.ending
        var members: [(String, JSONValue)] = [("duration_s", .number(Double(OS.now() - started) / 1e9))]
        if let usage = ending.usage {
            members += [("cpu_s", .number(usage.cpuSeconds)),
                        ("peak_memory_bytes", .number(Double(usage.peakMemoryBytes ?? usage.peakRSSBytes))),
                        ("peak_rss_bytes", .number(Double(usage.peakRSSBytes)))]
        } else {
            members += [("cpu_s", .null), ("peak_memory_bytes", .null), ("peak_rss_bytes", .null)]
        }
        members.append(("output_bytes", .object([("stdout", .number(Double(printer.stdoutBytes))),
                                                  ("stderr", .number(Double(printer.stderrBytes)))])))
        let counts = session.broker.callCounts
        members.append(("capabilities", .object([
            ("calls", .number(Double(counts.total.calls))),
            ("denied", .number(Double(counts.total.denied))),
            ("by_capability", .object(counts.byCapability.sorted { $0.key < $1.key }.map { name, count in
                (name, .object([("calls", .number(Double(count.calls))), ("denied", .number(Double(count.denied)))]))
            })),
        ])))
        if let audit {
            let head = audit.head
            members.append(("audit", .object([("path", .string(audit.path)), ("seq", .number(Double(head.seq))),
                                              ("head", .string(head.digest))])))
        } else {
            members.append(("audit", .null))
        }
        if let outputDirectory {
            let copy = ending.outputs
            members.append(("outputs", .object([
                ("directory", .string(outputDirectory)),
                ("files", copy.map { .number(Double($0.files)) } ?? .null),
                ("bytes", copy.map { .number(Double($0.bytes)) } ?? .null),
                ("refused", .array(ending.outputRefusals.map(JSONValue.string))),
                ("error", ending.outputFailure.map(JSONValue.string) ?? (copy == nil ? .string("nothing was copied") : .null)),
            ])))
        }
        self.members = members
    }
}
