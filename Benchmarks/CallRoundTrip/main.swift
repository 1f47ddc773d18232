// Capability call round trips, beside a raw round trip to the same worker, in one run:
//   swift run -c release capsule-bench-calls     (scripts/bench-calls)
// The raw round trip is an input() answered at once by the session's handler (a frame out, a
// frame back, no broker); the no-op call is env.names() (answered on the session's thread), and
// file.exists a call the broker runs on its own threads. Timings are taken inside Python with
// perf_counter, so both include the same interpreter work. Never a test: it prints a table.
#if canImport(Glibc)
import Glibc
#endif
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
    def threads(k, fn):
        per = N // k
        def work():
            for _ in range(per): fn()
        ts = [threading.Thread(target=work) for _ in range(k)]
        t = perf_counter()
        for x in ts: x.start()
        for x in ts: x.join()
        return per * k / (perf_counter() - t)
    exists = lambda: file.exists("/usr/lib")
    rates = [threads(1, env.names), threads(8, env.names), threads(1, exists), threads(8, exists)]
    print(f"{raw[0]:.1f} {raw[1]:.1f} {noop[0]:.1f} {noop[1]:.1f} {task[0]:.1f} {task[1]:.1f} " + " ".join(f"{r:.0f}" for r in rates))
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
guard numbers.count == 10 else {
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
print("\n| calls a second | 1 thread | 8 threads |")
print("|---|---|---|")
print("| env.names() | \(Int(numbers[6])) | \(Int(numbers[7])) |")
print("| file.exists() | \(Int(numbers[8])) | \(Int(numbers[9])) |")

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
    /// One decimal, without Foundation's String(format:).
    init(format1 value: Double) {
        let tenths = Int((value * 10).rounded())
        self = "\(tenths / 10).\(abs(tenths % 10))"
    }
}
