@_exported import CapsuleTestSupport
@testable import CapsuleProtocol

/// The error `JSONValue.parse` throws for `bytes`, or nil when it parses.
func parseError(_ bytes: [UInt8]) -> JSONError? {
    do {
        _ = try JSONValue.parse(bytes)
        return nil
    } catch {
        return error
    }
}

func parseError(_ text: String) -> JSONError? { parseError(Array(text.utf8)) }

func parse(_ text: String) throws(JSONError) -> JSONValue { try JSONValue.parse(text.utf8) }

func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

/// A frame with an arbitrary payload (the encoder only writes valid JSON).
func rawFrame(_ payload: [UInt8]) -> [UInt8] {
    let length = UInt32(payload.count)
    return [UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)]
        + payload
}

func rawFrame(_ payload: String) -> [UInt8] { rawFrame(Array(payload.utf8)) }

/// Feeds `bytes` to a fresh decoder and drains it: the messages, then the error if one was thrown.
func decodeAll(_ bytes: [UInt8], maxFrameBytes: Int = FrameDecoder.defaultMaxFrameBytes)
    -> (messages: [JSONValue], error: ProtocolError?)
{
    var decoder = FrameDecoder(maxFrameBytes: maxFrameBytes)
    decoder.append(bytes)
    var messages: [JSONValue] = []
    do {
        while let message = try decoder.next() { messages.append(message) }
        return (messages, nil)
    } catch {
        return (messages, error)
    }
}
