// Preload: what `[sandbox] preload = ["pandas"]` buys. The time to the first result of
// `df.describe()` on a new session and through a warm pool, with and without preload, the pool's
// acquisition with pandas preloaded, and the memory of many idle sessions with pandas loaded
// (their PSS together, against that many times one alone): the figures a fork server would have
// to beat. The environment (pandas from PyPI) is made by scripts/bench-preload.
//   scripts/bench-preload [ROUNDS] [SESSIONS]      (default 10 and 50)
// Never a test: it prints a table (docs/performance.md records one).
#if canImport(Glibc)
import Glibc
#endif
import CapsuleOS
import CapsulePolicy
import CapsuleRuntime
import CapsuleSandbox

let arguments = CommandLine.arguments.dropFirst().compactMap { Int($0) }
let rounds = arguments.first ?? 10
let sessionCount = arguments.dropFirst().first ?? 50
let environment = OS.environment("CAPSULE_BENCH_ENVIRONMENT") ?? "bench-pandas"

func fail(_ text: String) -> Never {
    try? OS.writeAll(2, "capsule-bench-preload: \(text)\n")
    exit(1)
}

func ms(_ nanoseconds: UInt64) -> Double { Double(nanoseconds) / 1e6 }

func text(_ value: Double, _ digits: Int = 1) -> String {
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    return String((value * scale).rounded() / scale)
}

func median(_ samples: [Double]) -> Double { samples.sorted()[samples.count / 2] }

func policy(preload: Bool, pool: Bool = false) -> Policy {
    var limits = Limits()
    limits.timeoutSeconds = 600
    limits.memoryMB = 1024
    var policy = Policy(level: .sandbox, limits: limits)
    policy.pythonEnvironment = environment
    if preload { policy.preload = ["pandas"] }
    if pool { policy.pool = PoolSettings(minIdle: 2, max: 1000) }
    return policy
}

let location = try WorkerLocation.find()
let describe = "import pandas as pd\npd.DataFrame({'a': range(100), 'b': [i * 0.5 for i in range(100)]}).describe()"

/// Runs `code` to a clean finish with a result.
func firstResult(_ session: Session) async {
    guard let execution = try? session.submit(describe) else { fail("busy") }
    var result: String?
    let outcome = await execution.outcome { if case .result(let bundle) = $0 { result = bundle["text/plain"] } }
    guard case .finished(.ok, nil, _, nil) = outcome, result?.contains("mean") == true else { fail("describe() ended \(outcome)") }
}

/// Opening a new session, then its first describe(): the whole wait, and the describe() alone.
func newSession(preload: Bool) async -> (total: Double, describe: Double) {
    var totals: [Double] = [], describes: [Double] = []
    for _ in 0..<rounds {
        let start = OS.now()
        guard let session = try? await Session.open(policy: policy(preload: preload), location: location) else { fail("no session") }
        if !session.notes.isEmpty { fail("the session says: \(session.notes)") }
        let opened = OS.now()
        await firstResult(session)
        totals.append(ms(OS.now() - start))
        describes.append(ms(OS.now() - opened))
        await session.close()
    }
    return (median(totals), median(describes))
}

/// From a warm pool: the acquisition, then the first describe() (the pool refills between rounds).
func pooled(preload: Bool) async -> (acquire: Double, describe: Double) {
    let pool = SessionPool(policy: policy(preload: preload, pool: true), location: location)
    var acquisitions: [Double] = [], describes: [Double] = []
    for _ in 0..<max(rounds, 20) {
        while pool.idleCount < 2 { try? await Task.sleep(for: .milliseconds(5)) }
        let start = OS.now()
        guard let session = try? await pool.acquire() else { fail("the pool handed out nothing") }
        let acquired = OS.now()
        acquisitions.append(Double(acquired - start) / 1e6)
        if describes.count < rounds {
            await firstResult(session)
            describes.append(ms(OS.now() - acquired))
        }
        await session.close()
    }
    await pool.close()
    return (median(acquisitions), median(describes))
}

/// The PSS (KiB) of `pid` and every process below it.
func treePSS(_ pid: pid_t) -> Int { treeMemory(pid, "Pss:") }

/// A line of smaps_rollup (KiB: `Pss:`, `Anonymous:`) summed over `pid` and every process below it.
func treeMemory(_ pid: pid_t, _ field: String) -> Int {
    var total = 0
    var pending = [pid]
    while let next = pending.popLast() {
        if let rollup = try? OS.readFile("/proc/\(next)/smaps_rollup", limit: 1 << 16),
           let line = String(decoding: rollup, as: UTF8.self).split(separator: "\n").first(where: { $0.hasPrefix(field) }) {
            total += Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
        }
        for task in (try? OS.directoryEntries("/proc/\(next)/task")) ?? [] {
            let children = (try? OS.readFile("/proc/\(next)/task/\(task)/children", limit: 1 << 16)) ?? []
            pending += String(decoding: children, as: UTF8.self).split(separator: " ").compactMap { pid_t($0) }
        }
    }
    return total
}

var rows: [(String, String, String)] = []
let plain = await newSession(preload: false)
let preloaded = await newSession(preload: true)
rows.append(("new session, open + first `df.describe()` (ms)", text(plain.total), text(preloaded.total)))
rows.append(("… of which the first `df.describe()` (ms)", text(plain.describe), text(preloaded.describe)))
let pooledPlain = await pooled(preload: false)
let pooledPreloaded = await pooled(preload: true)
rows.append(("warm pool: acquisition (ms; target with preload ≤ 5)", text(pooledPlain.acquire, 2), text(pooledPreloaded.acquire, 2)))
rows.append(("warm pool: acquisition + first `df.describe()` (ms)", text(pooledPlain.acquire + pooledPlain.describe),
             text(pooledPreloaded.acquire + pooledPreloaded.describe)))

// Memory: one idle session with pandas loaded alone, then `sessionCount` at once. What pandas adds
// to a session's anonymous memory (its heap: what a fork server could at best share, copy-on-write)
// is measured against an idle session without it.
guard let bare = try? await Session.open(policy: policy(preload: false), location: location) else { fail("no session") }
guard let alone = try? await Session.open(policy: policy(preload: true), location: location) else { fail("no session") }
try? await Task.sleep(for: .milliseconds(300))
let alonePSS = treePSS(alone.pid)
let (bareAnonymous, aloneAnonymous) = (treeMemory(bare.pid, "Anonymous:"), treeMemory(alone.pid, "Anonymous:"))
await alone.close()
await bare.close()
rows.append(("one idle session: anonymous memory, its whole process tree (MiB)", text(Double(bareAnonymous) / 1024),
             text(Double(aloneAnonymous) / 1024) + " (+\(text(Double(aloneAnonymous - bareAnonymous) / 1024)) for pandas)"))
var many: [Session] = []
for _ in 0..<sessionCount {
    guard let session = try? await Session.open(policy: policy(preload: true), location: location) else { fail("session \(many.count + 1) did not open") }
    many.append(session)
}
try? await Task.sleep(for: .milliseconds(300))
let manyPSS = many.reduce(0) { $0 + treePSS($1.pid) }
for session in many { await session.close() }
rows.append(("\(sessionCount) idle sessions with pandas loaded: PSS together (MiB)", text(Double(sessionCount * alonePSS) / 1024) + " (× one alone)",
             text(Double(manyPSS) / 1024) + " (\(text(Double(manyPSS) / Double(max(1, sessionCount * alonePSS)) * 100, 0)) %)"))

// The fork server's best case, measured: one preloaded interpreter (gc.freeze()d, as Instagram
// does) forks `sessionCount` children in its own sandbox, each runs its first describe() and
// then idles; their PSS together while idle (read as the parent says they all answered), and
// the median time from fork to a child's result. A real
// fork server would add namespaces and a workspace per child; this measures only what sharing
// the warm heap can give.
let zygote = """
    import gc, os, time
    import pandas as pd
    frame = pd.DataFrame({'a': range(100), 'b': [i * 0.5 for i in range(100)]})
    gc.collect(); gc.freeze()
    hold_r, hold_w = os.pipe()
    times_r, times_w = os.pipe()
    children = []
    for _ in range(\(sessionCount)):
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os.close(hold_w)
            frame.describe()
            os.write(times_w, f"{time.perf_counter() - start:.6f}\\n".encode())
            os.read(hold_r, 1)
            os._exit(0)
        children.append(pid)
    os.close(times_w)
    data = b""
    while data.count(b"\\n") < len(children):
        data += os.read(times_r, 65536)
    times = sorted(float(line) for line in data.split())
    print("FORKED", times[len(times) // 2] * 1000, flush=True)
    time.sleep(1.5)  # while the supervisor side reads their memory
    os.close(hold_w)
    for pid in children:
        os.waitpid(pid, 0)
    """
var zygotePolicy = policy(preload: true)
zygotePolicy.limits.maxProcesses = sessionCount + 64
guard let server = try? await Session.open(policy: zygotePolicy, location: location) else { fail("no session") }
guard let forking = try? server.submit(zygote, wantResult: false) else { fail("busy") }
var zygoteOutput = "", zygotePSS = 0
let forked = await forking.outcome { event in
    switch event {
    case .stream(.stdout, let text):
        zygoteOutput += text
        if zygotePSS == 0, zygoteOutput.contains("\n") { zygotePSS = treePSS(server.pid) }
    default: break
    }
}
let forkToResult = zygoteOutput.split(whereSeparator: \.isWhitespace).last.flatMap { Double($0) } ?? 0
guard case .finished(.ok, nil, _, nil) = forked, zygotePSS > 0, zygoteOutput.hasPrefix("FORKED ") else {
    fail("the fork server prototype ended \(forked): \(zygoteOutput)")
}
await server.close()
rows.append(("fork server prototype: fork + first `df.describe()` in the child (ms)", "", text(forkToResult)))
rows.append(("fork server prototype: one interpreter and \(sessionCount) idle forks, PSS together (MiB)", "",
             text(Double(zygotePSS) / 1024) + " (\(text(Double(zygotePSS) / Double(max(1, sessionCount * alonePSS)) * 100, 0)) % of × one alone)"))

print("preload: pandas from the environment \(environment); \(rounds) rounds, medians; the baseline ran in this run")
print("| what | without preload | with preload = [\"pandas\"] |")
print("|---|---|---|")
for row in rows { print("| \(row.0) | \(row.1) | \(row.2) |") }
