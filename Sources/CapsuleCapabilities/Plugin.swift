#if canImport(Glibc)
import Glibc
#endif
import CapsuleOS
import CapsulePolicy
import CapsuleProtocol
import Synchronization

/// `[capabilities.custom.NAME] command = [...]`: a program on the host, in any language, that
/// speaks JSON-RPC 2.0 on its standard input and output, one message a line (docs/capabilities.md):
/// `describe` returns its methods, then `call` runs one. The program starts with the session's
/// first need of it; one that crashes or hangs fails the calls it had, and the next call starts
/// it again, so the session survives it.
public final class PluginCapability: Capability {
    public let name: String
    private let process: PluginProcess
    private let description: Mutex<(summary: String, methods: [Method])?> = Mutex(nil)

    /// `callSeconds`: how long one call may take before the plugin is taken for hung and restarted.
    public init(name: String, command: [String], callSeconds: Double = 30) {
        self.name = name
        process = PluginProcess(name: name, command: command, callSeconds: callSeconds)
    }

    public var summary: String { described.summary }
    public var methods: [Method] { described.methods }

    /// The plugin's `describe`, asked once (at session start, for the code's `capsule` module).
    private var described: (summary: String, methods: [Method]) {
        description.withLock { cached in
            if let cached { return cached }
            let answer: (summary: String, methods: [Method])
            switch process.requestNow("describe", params: [:]) {
            case .success(let result): answer = Self.parse(result, name: name)
            case .failure(let error): answer = ("The plugin could not describe itself: \(error.message)", [])
            }
            cached = answer
            return answer
        }
    }

    public func invoke(_ method: Method, _ arguments: Arguments, context: CallContext) async throws(CapabilityError) -> JSONValue {
        let params: JSONValue = ["method": .string(method.name), "args": .object(arguments.values.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }),
                                 "max_bytes": context.maxBytes.map { .number(Double($0)) } ?? .null]
        return try await process.request("call", params: params).get()
    }

    /// Methods from a `describe` result; a plugin method needs level trusted at least.
    static func parse(_ result: JSONValue, name: String) -> (summary: String, methods: [Method]) {
        let methods = (result["methods"]?.arrayValue ?? []).compactMap { entry -> Method? in
            guard let method = entry["name"]?.stringValue, isIdentifier(method) else { return nil }
            let declared = entry["level"]?.stringValue.flatMap(Level.init(rawValue:)) ?? .trusted
            let parameters = (entry["params"]?.arrayValue ?? []).compactMap { parameter -> Parameter? in
                guard let name = parameter["name"]?.stringValue, isIdentifier(name) else { return nil }
                let kind = parameter["kind"]?.stringValue.flatMap(Parameter.Kind.init(rawValue:)) ?? .any
                return Parameter(name, kind, default: parameter["default"])
            }
            return Method(method, level: max(declared, .trusted), parameters: parameters,
                          doc: entry["doc"]?.stringValue ?? "")
        }
        return (result["summary"]?.stringValue ?? "The plugin \(name).", methods)
    }

    static func isIdentifier(_ text: String) -> Bool {
        guard let first = text.unicodeScalars.first, first == "_" || (first.isASCII && first.properties.isAlphabetic) else { return false }
        return text.unicodeScalars.allSatisfy { $0 == "_" || ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) }
            && !text.hasPrefix("__")
    }
}

/// One plugin program and the requests it has outstanding. A reader thread takes its answers
/// line by line and hands each to its caller.
final class PluginProcess: Sendable {
    let name: String
    let command: [String]
    let callSeconds: Double
    private let state = Mutex(State())

    private struct State {
        var running: Running?
        var nextID = 1
        /// Request id → the process it went to and its caller.
        var waiting: [Int: (pid: pid_t, continuation: CheckedContinuation<Result<JSONValue, CapabilityError>, Never>)] = [:]
    }

    private struct Running {
        let pid: pid_t
        let input: Int32
    }

    /// One of capsule's own helper programs (capsule-net, capsule-db), beside the running executable.
    static func helperPath(named helper: String) -> String {
        let exe = OS.executablePath() ?? "/usr/lib/capsule/capsule"
        return String(exe[..<(exe.lastIndex(of: "/") ?? exe.startIndex)]) + "/" + helper
    }

    init(name: String, command: [String], callSeconds: Double) {
        self.name = name
        self.command = command
        self.callSeconds = callSeconds
    }

    deinit {
        if let running = state.withLock({ $0.running }) { OS.kill(running.pid, SIGKILL) }
    }

    /// Sends a request and waits (on a task) for its answer; a plugin that does not answer in
    /// time (`seconds`, by default `callSeconds`; infinity: no limit) is stopped, and the next
    /// request starts it anew.
    func request(_ method: String, params: JSONValue, seconds: Double? = nil) async -> Result<JSONValue, CapabilityError> {
        let id = state.withLock { state in defer { state.nextID += 1 }; return state.nextID }
        let limit = seconds ?? callSeconds
        let timeout = Task(executorPreference: CallExecutor.shared) {
            guard limit.isFinite else { return }
            try await Task.sleep(for: .seconds(limit))
            self.fail(id, .timeout("the plugin \(self.name) did not answer within \(limit) s; it was stopped and starts again on the next call"),
                      stopping: true)
        }
        defer { timeout.cancel() }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                if let problem = send(id: id, method: method, params: params, continuation: continuation) {
                    continuation.resume(returning: .failure(problem))
                }
            }
        } onCancel: {
            fail(id, .runtime("the call was cancelled: the session ended"), stopping: false)
        }
    }

    /// Stops the running process, if any (its reader reaps it and fails the calls it had).
    func stop() {
        if let running = state.withLock({ $0.running }) { OS.kill(running.pid, SIGKILL) }
    }

    /// The same, from a thread that may block (the session's, while it starts).
    func requestNow(_ method: String, params: JSONValue) -> Result<JSONValue, CapabilityError> {
        let box = Mutex<Result<JSONValue, CapabilityError>?>(nil)
        let done = DispatchlessSemaphore()
        Task(executorPreference: CallExecutor.shared) {
            let result = await self.request(method, params: params)
            box.withLock { $0 = result }
            done.signal()
        }
        done.wait()
        return box.withLock { $0 } ?? .failure(.runtime("no answer"))
    }

    /// Registers the caller and writes the request; nil when sent.
    private func send(id: Int, method: String, params: JSONValue,
                      continuation: CheckedContinuation<Result<JSONValue, CapabilityError>, Never>) -> CapabilityError? {
        let line = JSONValue.object([("jsonrpc", "2.0"), ("id", .number(Double(id))), ("method", .string(method)), ("params", params)])
            .serialized() + [UInt8(ascii: "\n")]
        let running: Running
        switch startedProcess() {
        case .success(let process): running = process
        case .failure(let error): return error
        }
        let registered = state.withLock { state in
            guard state.running?.pid == running.pid else { return false } // it ended meanwhile
            state.waiting[id] = (running.pid, continuation)
            return true
        }
        guard registered else { return .runtime("the plugin \(name) ended before the request could be sent; it starts again on the next call") }
        do { try OS.writeAll(running.input, line) } catch {
            state.withLock { _ = $0.waiting.removeValue(forKey: id) }
            return .runtime("the plugin \(name) stopped reading its requests (\(OS.errorText(error.errno)))")
        }
        return nil
    }

    /// The running plugin, started first if it is not running.
    private func startedProcess() -> Result<Running, CapabilityError> {
        state.withLock { state in
            if let running = state.running { return .success(running) }
            switch spawn() {
            case .success(let (running, output)):
                state.running = running
                startReader(output, running: running)
                return .success(running)
            case .failure(let error):
                return .failure(.runtime("the plugin \(name) could not be started: \(command.first ?? ""): \(OS.errorText(error.errno))"))
            }
        }
    }

    private func spawn() -> Result<(Running, Int32), SystemError> {
        do throws(SystemError) {
            guard let program = command.first else { throw SystemError("spawn", errno: ENOENT) }
            let (input, theirInput) = try OS.socketPair()
            let (output, theirOutput) = try OS.socketPair()
            defer { OS.close(theirInput); OS.close(theirOutput) }
            do {
                let pid = try OS.spawn(program, arguments: Array(command.dropFirst()),
                                       descriptors: [(0, theirInput), (1, theirOutput)], inheritEnvironment: true)
                return .success((Running(pid: pid, input: input), output))
            } catch {
                OS.close(input); OS.close(output)
                throw error
            }
        } catch {
            return .failure(error)
        }
    }

    private func startReader(_ output: Int32, running: Running) {
        let reader = PluginReader(output: output, pid: running.pid) { [weak self] line in self?.answer(line) } ended: { [weak self] status in
            self?.ended(running, status: status)
        }
        reader.start()
    }

    /// One line from the plugin: the answer to one request.
    private func answer(_ line: [UInt8]) {
        guard let message = try? JSONValue.parse(line, maxValues: 1 << 20), let id = message["id"]?.intValue else { return }
        let result: Result<JSONValue, CapabilityError>
        if let error = message["error"] {
            let exception = error["data"]?["exception"]?.stringValue ?? "RuntimeError"
            result = .failure(CapabilityError(exception: exception, error["message"]?.stringValue ?? "the plugin \(name) failed",
                                              errno: error["data"]?["errno"]?.intValue))
        } else {
            result = .success(message["result"] ?? .null)
        }
        state.withLock { $0.waiting.removeValue(forKey: id) }?.continuation.resume(returning: result)
    }

    /// The plugin's output closed: it exited or crashed. Its callers fail; the next call restarts it.
    private func ended(_ running: Running, status: Int32) {
        let how = (status & 0x7f) != 0 ? "was killed by signal \(status & 0x7f)" : "exited with status \((status >> 8) & 0xff)"
        let waiting = state.withLock { state -> [CheckedContinuation<Result<JSONValue, CapabilityError>, Never>] in
            if state.running?.pid == running.pid { state.running = nil }
            OS.close(running.input)
            // Only the calls sent to this process: a restarted one has its own.
            let mine = state.waiting.filter { $0.value.pid == running.pid }
            for id in mine.keys { state.waiting.removeValue(forKey: id) }
            return mine.values.map(\.continuation)
        }
        for continuation in waiting {
            continuation.resume(returning: .failure(.runtime("the plugin \(name) \(how) before it answered; it starts again on the next call")))
        }
    }

    /// Fails one call; `stopping` also stops the process it went to, and the next call starts a
    /// new one at once (the old one's end fails only the calls it had).
    private func fail(_ id: Int, _ error: CapabilityError, stopping: Bool) {
        let (entry, stopped) = state.withLock { state -> ((pid: pid_t, continuation: CheckedContinuation<Result<JSONValue, CapabilityError>, Never>)?, pid_t?) in
            guard let entry = state.waiting.removeValue(forKey: id) else { return (nil, nil) }
            guard stopping, state.running?.pid == entry.pid else { return (entry, stopping ? entry.pid : nil) }
            state.running = nil
            return (entry, entry.pid)
        }
        guard let entry else { return }
        entry.continuation.resume(returning: .failure(error))
        if let stopped { OS.kill(stopped, SIGKILL) } // its reader sees the end and reaps it
    }
}

/// Reads a plugin's output on a thread of its own, a line at a time.
private final class PluginReader: @unchecked Sendable {
    let output: Int32
    let pid: pid_t
    let line: ([UInt8]) -> Void
    let ended: (Int32) -> Void

    init(output: Int32, pid: pid_t, line: @escaping ([UInt8]) -> Void, ended: @escaping (Int32) -> Void) {
        self.output = output
        self.pid = pid
        self.line = line
        self.ended = ended
    }

    func start() {
        Task(executorPreference: CallExecutor.shared) { [self] in
            await Blocking.run { [self] in run() }
        }
    }

    /// Until the plugin's output ends; then the plugin is stopped (it is of no more use) and reaped,
    /// whether or not anyone still waits for it.
    private func run() {
        defer {
            OS.close(output)
            OS.kill(pid, SIGKILL)
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            ended(status)
        }
        var pending: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = buffer.withUnsafeMutableBytes { raw in (try? OS.read(output, into: raw)) ?? 0 }
            if count <= 0 { return }
            pending += buffer[0..<count]
            while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                line(Array(pending[..<newline]))
                pending.removeSubrange(...newline)
            }
            if pending.count > 64 << 20 { return } // a plugin that never ends a line is broken
        }
    }
}

/// A counting semaphore without Dispatch or Foundation.
final class DispatchlessSemaphore: Sendable {
    private let condition = Condition()
    private nonisolated(unsafe) var count = 0 // only under `condition`

    func signal() {
        condition.withLock {
            count += 1
            condition.signal()
        }
    }

    func wait() {
        condition.withLock {
            while count == 0 { condition.wait() }
            count -= 1
        }
    }
}
