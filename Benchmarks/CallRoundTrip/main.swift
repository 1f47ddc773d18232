// Capability call round trips, beside a raw round trip to the same worker, in one run, and
// calls a second from 1, 2, 4 and 8 threads of the session:
//   swift run -c release capsule-bench-calls     (scripts/bench-calls)
// The raw round trip is an input() answered at once by the session's handler (a frame out, a
// frame back, no broker); the no-op call is env.names() (answered on the session's thread), and
// file.exists a call the broker runs on its own threads. Timings are taken inside Python with
// perf_counter, so both include the same interpreter work. Last, the same calls in a session
// with the audit log on (fsync = "batch") beside one without, alternating. Never a test: it
// prints a table.
#if canImport(Glibc)
import Glibc
#endif
import CapsuleAudit
import CapsuleOS
import CapsuleProtocol
import CapsuleCapabilities
import CapsulePolicy
import CapsuleRuntime
import CapsuleSandbox

let calls = Int(CommandLine.arguments.dropFirst().first ?? "") ?? 3000
let policy = try PolicyLoader.parse("""
    level = "restricted"
    [limits]
    timeout_s = 300
    [capabilities.input]
    [capabilities.env]
    names = ["HOME"]
    [capabilities.file]
    read = ["/usr/lib"]
    """, file: "bench.toml")
let session = try Session(policy: policy, location: try WorkerLocation.find())
defer { session.shutdown() }
var output = ""
let code = """
    import threading
    from time import perf_counter
    from capsule import env, file
    N = \(calls)
    def timed(fn, n=N):
        samples = []
        for _ in range(n):
            t = perf_counter(); fn(); samples.append(perf_counter() - t)
        samples.sort()
        return samples[len(samples) // 2] * 1e6, samples[int(len(samples) * 0.99)] * 1e6
    for _ in range(200): input(); env.names()  # warm up
    raw = timed(input)
    noop = timed(env.names)
    task = timed(lambda: file.exists("/usr/lib"))
    from time import process_time
    def threads(k, fn):
        per = N // k
        def work():
            for _ in range(per): fn()
        ts = [threading.Thread(target=work) for _ in range(k)]
        t, cpu = perf_counter(), process_time()
        for x in ts: x.start()
        for x in ts: x.join()
        wall = perf_counter() - t
        return per * k / wall, (process_time() - cpu) / wall  # calls a second; the worker's busy cores
    exists = lambda: file.exists("/usr/lib")
    rates = [threads(k, fn) for fn in (env.names, exists) for k in (1, 2, 4, 8)]
    print(f"{raw[0]:.1f} {raw[1]:.1f} {noop[0]:.1f} {noop[1]:.1f} {task[0]:.1f} {task[1]:.1f} "
          + " ".join(f"{r:.0f} {c:.2f}" for r, c in rates))
    """
_ = session.execute(code, wantResult: false) { event in
    switch event {
    case .stream(.stdout, let text): output += text
    case .stream(.stderr, let text), .error(_, let text, _): FileHandleless.write(2, text)
    case .inputRequest: return "x"
    default: break
    }
    return nil
}
let numbers = output.split(separator: " ").compactMap { Double($0.trimmingSuffix("\n")) }
let threadCounts = [1, 2, 4, 8]
guard numbers.count == 6 + 4 * threadCounts.count else {
    FileHandleless.write(2, "capsule-bench-calls: the benchmark did not finish: \(output)\n")
    exit(1)
}
let (raw, noop, task) = ((numbers[0], numbers[1]), (numbers[2], numbers[3]), (numbers[4], numbers[5]))
print("capability call round trip, \(calls) calls each (µs, measured in Python)")
print("| round trip | p50 | p99 | × raw p50 |")
print("|---|---|---|---|")
for (name, value) in [("raw: input() answered at once (baseline)", raw), ("env.names() — no-op call", noop),
                      ("file.exists() — call on the broker's threads", task)] {
    print("| \(name) | \(String(format1: value.0)) | \(String(format1: value.1)) | \(String(format1: value.0 / raw.0)) |")
}
print("\n| calls a second, all threads together | " + threadCounts.map { "\($0) thread\($0 == 1 ? "" : "s")" }.joined(separator: " | ") + " |")
print("|---|" + threadCounts.map { _ in "---|" }.joined())
// Each rate is followed by the worker's CPU time over the wall time (its busy cores).
for (row, name) in ["env.names()", "file.exists()"].enumerated() {
    let pairs = Array(numbers[(6 + row * 2 * threadCounts.count)...].prefix(2 * threadCounts.count))
    print("| \(name) | " + stride(from: 0, to: pairs.count, by: 2).map { "\(Int(pairs[$0]))" }.joined(separator: " | ") + " |")
    print("| \(name): worker's busy cores | " + stride(from: 1, to: pairs.count, by: 2).map { String(format2: pairs[$0]) }.joined(separator: " | ") + " |")
}

// The audit log's cost: the same no-op and broker-thread calls with and without it, in 200
// rounds (CAPSULE_BENCH_AUDIT_ROUNDS) of 200 calls each, the two sessions in turn (each first
// half the time); the result is the median of the rounds' audited/plain p50 ratios, so a change
// of the machine's load falls on both sides of each ratio. 30 rounds left runs 5 points apart.
let logPath = "/tmp/capsule-bench-audit-\(getpid()).jsonl"
defer { unlink(logPath); var n = 1; while unlink("\(logPath).\(n)") == 0 { n += 1 } }
let audit = SessionAudit(log: try AuditLog.shared(AuditOptions(path: logPath, fsync: .batch)), policy: policy)
let audited = try Session(policy: policy, location: try WorkerLocation.find(),
                          broker: Broker(policy: policy, audit: audit), audit: audit)
defer { audited.shutdown() }
let warm = "from time import perf_counter\nfrom capsule import env, file\nfor _ in range(200): env.names()\n"
let round = """
    def p50(fn, n=200):
        samples = []
        for _ in range(n):
            t = perf_counter(); fn(); samples.append(perf_counter() - t)
        samples.sort()
        return samples[len(samples) // 2] * 1e6
    print(f"{p50(env.names):.1f} {p50(lambda: file.exists('/usr/lib')):.1f}")
    """
func measure(_ session: Session, _ code: String) -> [Double] {
    var text = ""
    _ = session.execute(code, wantResult: false) { event in
        if case .stream(.stdout, let chunk) = event { text += chunk }
        return nil
    }
    return text.split(separator: " ").compactMap { Double($0.trimmingSuffix("\n")) }
}
_ = measure(session, warm)
_ = measure(audited, warm)
let auditRounds = Int(OS.environment("CAPSULE_BENCH_AUDIT_ROUNDS") ?? "") ?? 200
var plainRounds: [[Double]] = [], loggedRounds: [[Double]] = []
for index in 0..<auditRounds {
    let order = index % 2 == 0 ? [(session, false), (audited, true)] : [(audited, true), (session, false)]
    var got: [Bool: [Double]] = [:]
    for (which, logs) in order { got[logs] = measure(which, round) }
    guard let plain = got[false], let logged = got[true], plain.count == 2, logged.count == 2 else { continue }
    plainRounds.append(plain)
    loggedRounds.append(logged)
}
func middle(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
print("\naudit log on (fsync = \"batch\") beside off, p50 µs: medians of \(plainRounds.count) rounds of 200 calls, in turn")
print("| call | audit off | audit on | added (median of the rounds' ratios) |")
print("|---|---|---|---|")
for (index, name) in ["env.names() — no-op call", "file.exists()"].enumerated() where !plainRounds.isEmpty {
    let ratios = zip(plainRounds, loggedRounds).map { $1[index] / $0[index] }
    print("| \(name) | \(String(format1: middle(plainRounds.map { $0[index] }))) | "
        + "\(String(format1: middle(loggedRounds.map { $0[index] }))) | \(String(format1: (middle(ratios) - 1) * 100)) % |")
}

// Where an audited call's added time goes: each part of writing one `cap.call` line, timed alone
// in this process (median of 2000), beside the whole append.
/// 8 MiB written, so the next step starts with caches holding something else (as a call's
/// append does in a session: the worker's Python ran in between).
nonisolated(unsafe) var sweepBuffer = [UInt8](repeating: 0, count: 8 << 20)
func sweep() { for index in stride(from: 0, to: sweepBuffer.count, by: 64) { sweepBuffer[index] &+= 1 } }
func median(_ body: () -> Void, before: () -> Void = {}) -> Double {
    var samples: [Double] = []
    for _ in 0..<2000 {
        before()
        let start = OS.now()
        body()
        samples.append(Double(OS.now() - start) / 1e3)
    }
    return samples.sorted()[samples.count / 2]
}
let record = AuditRecord(capability: "env", method: "names", summary: [:], decision: .allowed, reason: nil, bytes: 12, seconds: 0.000021)
let sampleLine = JSONValue.object([("seq", 1234), ("ts", .string(OS.timestamp())), ("session", "0123456789abcdef"), ("kind", "cap.call"),
                                   ("policy", "bench.toml"), ("policy_sha256", .string(String(repeating: "a", count: 64))),
                                   ("capability", "env"), ("method", "names"), ("args", [:]), ("decision", "allowed"),
                                   ("bytes", 12), ("ms", 0.021), ("prev", .string(String(repeating: "b", count: 64)))]).serialized()
let partsPath = "/tmp/capsule-bench-audit-parts-\(getpid()).jsonl"
defer { unlink(partsPath) }
let partsAudit = SessionAudit(log: try AuditLog.shared(AuditOptions(path: partsPath, fsync: .never)), policy: policy)
let batchAudit = SessionAudit(log: try AuditLog.shared(AuditOptions(path: partsPath + ".batch", fsync: .batch)), policy: policy)
defer { unlink(partsPath + ".batch") }
let parts: [(String, Double)] = [
    ("timestamp (OS.timestamp)", median { _ = OS.timestamp() }),
    ("SHA-256 of a \(sampleLine.count)-byte line, as hex\(SHA256.acceleratable ? " (SHA extensions)" : "")", median { _ = SHA256.hash(sampleLine).hexText }),
    ("the same, portable loop", median { var hasher = SHA256(portable: true); hasher.update(sampleLine); _ = hasher.finalize().hexText }),
    ("the whole append, fsync = never", median { try? partsAudit.call(record) }),
    ("the whole append, fsync = batch", median { try? batchAudit.call(record) }),
    ("the same after sweeping 8 MiB through the caches", median { try? batchAudit.call(record) } before: { sweep() }),
]
print("\none cap.call line's parts, median µs in this process")
print("| part | µs |")
print("|---|---|")
for (name, value) in parts { print("| \(name) | \(String(format2: value)) |") }

enum FileHandleless {
    static func write(_ fd: Int32, _ text: String) {
        var text = text
        text.withUTF8 { _ = Glibc.write(fd, $0.baseAddress, $0.count) }
    }
}

extension Substring {
    func trimmingSuffix(_ suffix: String) -> Substring { hasSuffix(suffix) ? dropLast(suffix.count) : self }
}

extension String {
    /// Two decimals.
    init(format2 value: Double) {
        let hundredths = Int((value * 100).rounded())
        let fraction = abs(hundredths % 100)
        self = "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)"
    }

    /// One decimal, without Foundation's String(format:).
    init(format1 value: Double) {
        let tenths = Int((value * 10).rounded())
        self = "\(tenths / 10).\(abs(tenths % 10))"
    }
}
