// The serving loop of capsule's helper processes (capsule-net, capsule-db): the plugin protocol on
// stdin and stdout, JSON-RPC 2.0 one message a line, each request answered on a task of its own.
#if canImport(Glibc)
import Glibc
#endif
import CapsuleProtocol

/// Why a helper's request failed, as the exception the code gets.
public struct HelperFailure: Error, Sendable {
    public let exception: String
    public let message: String

    public init(exception: String, _ message: String) {
        self.exception = exception
        self.message = message
    }

    public static func denied(_ message: String) -> HelperFailure { HelperFailure(exception: "CapabilityDenied", message) }
    public static func connection(_ message: String) -> HelperFailure { HelperFailure(exception: "ConnectionError", message) }
    public static func value(_ message: String) -> HelperFailure { HelperFailure(exception: "ValueError", message) }
}

public enum Helper {
    /// Serves `call` requests (their params) until stdin ends, then exits: nobody wants answers then.
    public static func serve(summary: String, call: @escaping @Sendable (JSONValue) async -> Result<JSONValue, HelperFailure>) -> Never {
        let output = Output()
        signal(SIGPIPE, SIG_IGN)
        while let line = readLine() {
            // Detached: not on the main actor, which this loop holds.
            Task.detached { await answer(line, output: output, summary: summary, call: call) }
        }
        exit(0)
    }

    private static func answer(_ line: String, output: Output, summary: String,
                               call: @Sendable (JSONValue) async -> Result<JSONValue, HelperFailure>) async {
        guard let request = try? JSONValue.parse(Array(line.utf8), maxValues: 1 << 20), let id = request["id"] else { return }
        let result: Result<JSONValue, HelperFailure>
        switch request["method"]?.stringValue {
        case "describe": result = .success(["summary": .string(summary), "methods": []])
        case "call": result = await call(request["params"] ?? [:])
        default: result = .failure(HelperFailure(exception: "RuntimeError", "unknown request"))
        }
        switch result {
        case .success(let value):
            output.write(["jsonrpc": "2.0", "id": id, "result": value])
        case .failure(let failure):
            output.write(["jsonrpc": "2.0", "id": id,
                          "error": ["code": -32000, "message": .string(failure.message), "data": ["exception": .string(failure.exception)]]])
        }
    }

    /// One writer of stdout: answers from concurrent tasks never interleave.
    final class Output: @unchecked Sendable {
        private var mutex = pthread_mutex_t()
        init() { pthread_mutex_init(&mutex, nil) }

        func write(_ message: JSONValue) {
            var bytes = message.serialized()
            bytes.append(UInt8(ascii: "\n"))
            pthread_mutex_lock(&mutex)
            defer { pthread_mutex_unlock(&mutex) }
            var offset = 0
            while offset < bytes.count {
                let written = bytes.withUnsafeBytes { Glibc.write(1, $0.baseAddress! + offset, $0.count - offset) }
                if written < 0 && errno == EINTR { continue }
                if written <= 0 { exit(0) } // the supervisor is gone
                offset += written
            }
        }
    }
}
