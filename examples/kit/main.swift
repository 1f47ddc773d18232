// A Swift program that embeds capsule with CapsuleKit and gives the sandboxed code a capability
// of its own, `greeter`. Build and run it from the repository:
//   swift run capsule-kit-example
import CapsuleKit

/// A custom capability: one method, answered on the session's thread (it never blocks).
struct Greeter: Capability {
    let name = "custom.greeter"
    let summary = "Greetings from the program that runs the session."
    let methods = [
        Method("greet", level: .trusted, parameters: [Parameter("who", .string), Parameter("excited", .boolean, default: false)],
               immediate: true, doc: "A greeting for `who`."),
    ]

    func invokeImmediately(_ method: Method, _ arguments: Arguments, context: CallContext) throws(CapabilityError) -> JSONValue {
        let who = arguments.string("who")
        guard !who.isEmpty else { throw .value("greet: who is empty") }
        return .string("Hello, \(who)\(arguments.bool("excited") ? "!" : ".")")
    }
}

// A policy in code: the built-in `trusted` level, plus the table that makes `greeter` reachable.
var policy = try PolicyLoader.load("trusted")
policy.capabilities.custom["greeter"] = CustomCapability()
let broker = Broker(policy: policy, extra: [Greeter()])
let session = try Session(policy: policy, location: try WorkerLocation.find(), broker: broker)
defer { session.shutdown() }

let outcome = session.execute("""
    print(greeter.greet("sandbox", excited=True))
    try:
        greeter.greet("")
    except ValueError as e:
        print("ValueError:", e)
    """, wantResult: false) { event in
    if case .stream(_, let text) = event { print(text, terminator: "") }
    return nil
}
print("outcome:", outcome)

// The same through the async API, as a server would: the events arrive as an async sequence.
let asyncSession = try await Session.open(policy: policy, location: try WorkerLocation.find(), broker: broker)
for await item in try asyncSession.submit("greeting = greeter.greet('async')\ngreeting.upper()") {
    switch item {
    case .event(.result(let bundle)): print("result:", bundle["text/plain"] ?? "")
    case .event: break
    case .done(let outcome): print("outcome:", outcome)
    }
}
await asyncSession.close()
