import CapsuleOS
import CapsuleProtocol

/// Why a capability call failed, as the Python exception the code gets.
public struct CapabilityError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The exception's name; the worker raises only the names it knows (docs/protocol.md).
    public let exception: String
    public let message: String
    /// With `OSError`: Python picks the subclass from it (ENOENT → FileNotFoundError).
    public let errno: Int?

    public init(exception: String, _ message: String, errno: Int? = nil) {
        self.exception = exception
        self.message = message
        self.errno = errno
    }

    public var description: String { "\(exception): \(message)" }

    /// Whether the broker refused the call (as opposed to the operation failing).
    public var isDenial: Bool { exception == "CapabilityDenied" }

    /// `capsule.CapabilityDenied`, a `PermissionError`: the message names the rule and what would allow it.
    public static func denied(_ message: String) -> CapabilityError { CapabilityError(exception: "CapabilityDenied", message) }
    public static func value(_ message: String) -> CapabilityError { CapabilityError(exception: "ValueError", message) }
    public static func type(_ message: String) -> CapabilityError { CapabilityError(exception: "TypeError", message) }
    public static func timeout(_ message: String) -> CapabilityError { CapabilityError(exception: "TimeoutError", message) }
    public static func connection(_ message: String) -> CapabilityError { CapabilityError(exception: "ConnectionError", message) }
    public static func runtime(_ message: String) -> CapabilityError { CapabilityError(exception: "RuntimeError", message) }

    /// An OSError for a failed system call, naming the path as the code wrote it.
    public static func system(_ error: SystemError, path: String) -> CapabilityError {
        CapabilityError(exception: "OSError", "\(OS.errorText(error.errno)): '\(path)'", errno: Int(error.errno))
    }

    public var reply: CapabilityReply { .failure(exception: exception, message: message, errno: errno) }
}
