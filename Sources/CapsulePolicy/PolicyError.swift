import CapsuleOS

/// A policy that cannot be used, with where and what to do about it.
public struct PolicyError: Error, Sendable, Equatable, CustomStringConvertible {
    public static func == (a: PolicyError, b: PolicyError) -> Bool {
        a.file == b.file && a.line == b.line && a.key == b.key && a.message == b.message
    }

    public let file: String
    public let line: Int?
    public let key: String?
    public let message: String
    /// Further problems found in the same file (for `policy check`), not part of equality.
    var others: [PolicyError] = []

    public init(file: String, line: Int? = nil, key: String? = nil, _ message: String) {
        self.file = file
        self.line = line
        self.key = key
        self.message = message
    }

    /// One line; whatever the policy supplied (file name, key, value) is shown with its control
    /// characters escaped.
    public var description: String {
        var place = file
        if let line { place += ":\(line)" }
        if let key { return "\(place): `\(key)`: \(message)".escapingControlCharacters }
        return "\(place): \(message)".escapingControlCharacters
    }
}

extension PolicyError {
    /// The first problem of a policy, which is what `load` reports, carrying all of them for
    /// `policy check`. It reads as the first one.
    init(first: PolicyError, all: [PolicyError]) {
        self = first
        self.others = Array(all.dropFirst())
    }

    /// This problem and every other one found in the same file.
    public var all: [PolicyError] { [self] + others }
}
