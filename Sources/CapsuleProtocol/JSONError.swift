/// Why a byte string is not the JSON the protocol accepts, and where.
public struct JSONError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        case unexpectedEnd
        case unexpectedCharacter
        case trailingData
        case invalidUTF8
        case controlCharacter
        case invalidEscape
        case unpairedSurrogate
        case invalidNumber
        /// The number is too large for a `Double` (e.g. `1e400`); it is rejected, not made infinite.
        case numberOutOfRange
        case tooDeep
        /// More values than the parser's budget (each costs memory far beyond its bytes).
        case tooManyValues
        case duplicateKey
    }

    public let kind: Kind
    /// Zero-based byte offset into the parsed input.
    public let offset: Int
    /// What went wrong, without the position ("unexpected character 'x'").
    public let message: String
    /// What the parser expected there, when that helps ("',' or '}'").
    public let expected: String?

    public init(_ kind: Kind, at offset: Int, _ message: String, expected: String? = nil) {
        self.kind = kind
        self.offset = offset
        self.message = message
        self.expected = expected
    }

    /// "unexpected character 'x' at byte 12 (expected ',' or '}')"
    public var description: String {
        let position = "\(message) at byte \(offset)"
        guard let expected else { return position }
        return "\(position) (expected \(expected))"
    }
}
