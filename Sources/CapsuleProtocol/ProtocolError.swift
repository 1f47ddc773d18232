/// A frame or message that breaks the protocol. It ends the session; `description` is the
/// sentence the user sees after "capsule: protocol error: ".
public struct ProtocolError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        case frameTooLarge(length: Int, limit: Int)
        case emptyFrame
        /// `offset` is relative to the start of the frame's payload.
        case invalidUTF8(offset: Int)
        case invalidJSON(JSONError)
        case notAnObject
        case missingType
        case unknownType(String)
        case invalidMember(type: String, member: String)
        /// A well-formed message that the session's state does not allow (e.g. `result` after `done`).
        case unexpectedMessage(type: String)
    }

    public let kind: Kind
    public let description: String

    init(_ kind: Kind, _ description: String) {
        self.kind = kind
        self.description = description
    }

    static func frameTooLarge(length: Int, limit: Int) -> ProtocolError {
        ProtocolError(.frameTooLarge(length: length, limit: limit),
                      "frame of \(length) bytes exceeds the \(limit)-byte limit")
    }

    static let emptyFrame = ProtocolError(.emptyFrame, "frame has length 0; every frame must hold a JSON object")

    static func invalidPayload(_ error: JSONError) -> ProtocolError {
        if error.kind == .invalidUTF8 {
            return ProtocolError(.invalidUTF8(offset: error.offset), "frame is not valid UTF-8: \(error)")
        }
        return ProtocolError(.invalidJSON(error), "frame is not valid JSON: \(error)")
    }

    static func notAnObject(_ value: JSONValue) -> ProtocolError {
        ProtocolError(.notAnObject, "frame holds \(value.kindDescription), not a JSON object")
    }

    static func missingType(found: JSONValue?) -> ProtocolError {
        guard let found else { return ProtocolError(.missingType, "message has no \"type\" member") }
        return ProtocolError(.missingType, "message member \"type\" is \(found.kindDescription), not a string")
    }

    static func unknownType(_ type: String, direction: String) -> ProtocolError {
        ProtocolError(.unknownType(type), "unknown \(direction) message type \"\(type)\"")
    }

    static func missingMember(_ member: String, type: String) -> ProtocolError {
        ProtocolError(.invalidMember(type: type, member: member), "\"\(type)\" message has no \"\(member)\" member")
    }

    static func invalidMember(_ member: String, type: String, expected: String, found: String) -> ProtocolError {
        ProtocolError(.invalidMember(type: type, member: member),
                      "\"\(type)\" message member \"\(member)\" must be \(expected), not \(found)")
    }

    /// For the session's state machine: `unexpectedMessage("result", while: "no execution is running")`.
    public static func unexpectedMessage(_ type: String, while context: String) -> ProtocolError {
        ProtocolError(.unexpectedMessage(type: type), "unexpected \"\(type)\" message while \(context)")
    }
}
