// Frames: a 4-byte big-endian payload length, then that many bytes of UTF-8 JSON (an object
// with a string `type`).

/// Cuts a byte stream into message objects.
///
/// Feed it whatever each read returns; `next()` yields complete frames in order and nil when
/// it needs more bytes. The first protocol error is sticky: the session is over, so later calls
/// throw it again and further bytes are dropped rather than buffered.
public struct FrameDecoder: Sendable {
    public static let defaultMaxFrameBytes = 16 << 20
    /// Above this, an emptied buffer gives its memory back instead of keeping it for reuse.
    private static let retainedCapacity = 1 << 20

    public let maxFrameBytes: Int
    private var buffer: [UInt8] = []
    /// Start of the first unconsumed byte in `buffer`.
    private var readIndex = 0
    private var failure: ProtocolError?

    public init(maxFrameBytes: Int = defaultMaxFrameBytes) {
        precondition(maxFrameBytes > 0 && maxFrameBytes <= Int(UInt32.max), "frame limit out of range")
        self.maxFrameBytes = maxFrameBytes
    }

    /// Bytes received but not yet returned as frames.
    public var bufferedByteCount: Int { buffer.count - readIndex }

    /// Bytes held in storage, consumed or not (tests check that consumed bytes are dropped).
    var storedByteCount: Int { buffer.count }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard readyForBytes() else { return }
        buffer.append(contentsOf: bytes)
    }

    public mutating func append(_ bytes: some Collection<UInt8>) {
        guard readyForBytes() else { return }
        buffer.append(contentsOf: bytes)
    }

    /// The next complete message, or nil until more bytes arrive.
    public mutating func next() throws(ProtocolError) -> JSONValue? {
        if let failure { throw failure }
        do throws(ProtocolError) {
            return try decodeNext()
        } catch {
            failure = error
            buffer = []
            readIndex = 0
            throw error
        }
    }

    private mutating func decodeNext() throws(ProtocolError) -> JSONValue? {
        let available = buffer.count - readIndex
        guard available >= 4 else { return nil }
        let length = buffer.withUnsafeBytes { bytes in
            Int(UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: readIndex, as: UInt32.self)))
        }
        // Judged on the header alone, so an oversized payload is never buffered.
        guard length <= maxFrameBytes else { throw .frameTooLarge(length: length, limit: maxFrameBytes) }
        guard length > 0 else { throw .emptyFrame }
        guard available >= 4 + length else { return nil }

        let payloadStart = readIndex + 4
        let parsed = buffer.withUnsafeBufferPointer { bytes in
            JSONValue.parseResult(UnsafeBufferPointer(rebasing: bytes[payloadStart..<payloadStart + length]),
                                  maxDepth: JSONValue.defaultMaxDepth)
        }
        readIndex = payloadStart + length
        if readIndex == buffer.count { reset() }

        let message: JSONValue
        switch parsed {
        case .success(let value): message = value
        case .failure(let error): throw .invalidPayload(error)
        }
        _ = try messageType(of: message)
        return message
    }

    /// False after a protocol error. Otherwise drops consumed bytes first, so the buffer holds at
    /// most one partial frame plus the latest read.
    private mutating func readyForBytes() -> Bool {
        guard failure == nil else { return false }
        if readIndex == buffer.count {
            reset()
        } else if readIndex > 0 {
            buffer.removeSubrange(0..<readIndex)
            readIndex = 0
        }
        return true
    }

    private mutating func reset() {
        if buffer.capacity > Self.retainedCapacity {
            buffer = []
        } else {
            buffer.removeAll(keepingCapacity: true)
        }
        readIndex = 0
    }
}

public enum FrameEncoder {
    /// The whole frame: length header and JSON payload.
    public static func encode(_ message: JSONValue) -> [UInt8] {
        var frame: [UInt8] = []
        frame.reserveCapacity(128)
        encode(message, into: &frame)
        return frame
    }

    /// Appends one frame to `out` (several frames can share one write).
    public static func encode(_ message: JSONValue, into out: inout [UInt8]) {
        let headerStart = out.count
        out.append(contentsOf: [0, 0, 0, 0] as [UInt8])
        message.serialize(into: &out)
        let length = UInt32(out.count - headerStart - 4)
        out[headerStart] = UInt8(truncatingIfNeeded: length >> 24)
        out[headerStart + 1] = UInt8(truncatingIfNeeded: length >> 16)
        out[headerStart + 2] = UInt8(truncatingIfNeeded: length >> 8)
        out[headerStart + 3] = UInt8(truncatingIfNeeded: length)
    }
}

/// The `type` of a message: the value must be an object with a string `type` member.
func messageType(of message: JSONValue) throws(ProtocolError) -> String {
    guard case .object = message else { throw .notAnObject(message) }
    guard let type = message["type"]?.stringValue else { throw .missingType(found: message["type"]) }
    return type
}
