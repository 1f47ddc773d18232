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
