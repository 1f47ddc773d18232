import CapsuleOS
import CapsuleProtocol

/// One audit line being put together, `,"key":value` member after member, straight into bytes.
///
/// This is on every capability call's way to its answer, where the process's caches are cold
/// from the Python code that ran in between: no JSON tree, no member array, no intermediate
/// strings, and one buffer that the log's writer keeps from line to line.
public struct AuditLineBuilder {
    var bytes: [UInt8]

    init(reusing buffer: [UInt8]) {
        bytes = buffer
        bytes.removeAll(keepingCapacity: true)
    }

    /// `,"key":value` for any JSON value.
    public mutating func member(_ key: String, _ value: JSONValue) {
        bytes.append(UInt8(ascii: ","))
        JSONValue.writeString(key, into: &bytes)
        bytes.append(UInt8(ascii: ":"))
        value.serialize(into: &bytes)
    }

    /// `,"key":"value"`; `key` is a plain name (nothing in it to escape).
    public mutating func member(_ key: StaticString, string value: String) {
        name(key)
        JSONValue.writeString(value, into: &bytes)
    }

    /// `,"key":value` for a whole number.
    public mutating func member(_ key: StaticString, integer value: Int) {
        name(key)
        bytes.appendDecimal(Int64(value))
    }

    /// `,"key":value` with `seconds` as milliseconds to the microsecond, written as JSON writes
    /// that number (`2`, `0.012`, `1.5`) without going through a Double's text.
    public mutating func member(_ key: StaticString, milliseconds seconds: Double) {
        name(key)
        let micros = seconds * 1e6
        guard micros.isFinite, micros >= 0, micros < 1e15 else {
            JSONValue.number(micros.rounded() / 1e3).serialize(into: &bytes)
            return
        }
        let whole = Int64(micros + 0.5)
        bytes.appendDecimal(whole / 1000)
        var fraction = whole % 1000
        guard fraction > 0 else { return }
        bytes.append(UInt8(ascii: "."))
        var divisor: Int64 = 100
        while fraction > 0 {
            bytes.append(UInt8(ascii: "0") + UInt8(fraction / divisor))
            fraction %= divisor
            divisor /= 10
        }
    }

    /// Members serialized once (a session's policy), as they are.
    mutating func append(_ members: AuditMembers) { bytes += members.serialized }

    /// Text that is JSON already.
    mutating func raw(_ text: StaticString) {
        text.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    mutating func decimal(_ value: Int) { bytes.appendDecimal(Int64(value)) }

    mutating func hex(_ digest: [UInt8]) { bytes.appendHex(digest) }

    mutating func timestamp() { OS.timestamp(into: &bytes) }

    private mutating func name(_ key: StaticString) {
        bytes.append(UInt8(ascii: ","))
        bytes.append(UInt8(ascii: "\""))
        key.withUTF8Buffer { bytes.append(contentsOf: $0) }
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
    }
}
