// CapsuleKit: what a Swift program needs to run sandboxed sessions and give the code
// capabilities of its own (docs/capabilities.md, "Writing a capability in Swift";
// examples/kit/main.swift). One import brings the policy, the session and the broker.
@_exported import CapsuleCapabilities
@_exported import CapsulePolicy
@_exported import CapsuleProtocol
@_exported import CapsuleRuntime
@_exported import CapsuleSandbox
