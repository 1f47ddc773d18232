// Compact JSON output: no whitespace, object members in their stored order.

extension JSONValue {
    public func serialized() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(64)
        serialize(into: &out)
        return out
    }

    /// Appends the compact JSON text of this value to `out`.
    public func serialize(into out: inout [UInt8]) {
        switch self {
        case .null:
            out.append(contentsOf: "null".utf8)
        case .bool(let value):
            out.append(contentsOf: value ? "true".utf8 : "false".utf8)
        case .number(let value):
            Self.writeNumber(value, into: &out)
        case .string(let value):
            Self.writeString(value, into: &out)
        case .array(let elements):
            out.append(ASCII.openBracket)
            for (position, element) in elements.enumerated() {
                if position > 0 { out.append(ASCII.comma) }
                element.serialize(into: &out)
            }
            out.append(ASCII.closeBracket)
        case .object(let members):
            out.append(ASCII.openBrace)
            for (position, (key, value)) in members.enumerated() {
                if position > 0 { out.append(ASCII.comma) }
                Self.writeString(key, into: &out)
                out.append(ASCII.colon)
                value.serialize(into: &out)
            }
            out.append(ASCII.closeBrace)
        }
    }

    /// Integers that fit an Int64 are written without a fraction; -0 stays "-0";
    /// NaN and infinities (which JSON cannot express) become null.
    static func writeNumber(_ value: Double, into out: inout [UInt8]) {
        guard value.isFinite else {
            out.append(contentsOf: "null".utf8)
            return
        }
        if value == 0 {
            out.append(contentsOf: value.sign == .minus ? "-0".utf8 : "0".utf8)
        } else if let integer = Int64(exactly: value) {
            out.appendDecimal(integer)
        } else {
            // Swift prints the shortest text that reads back to the same Double ("0.1", "1e-05",
            // "1e+300"), which is valid JSON for every finite non-integer value.
            out.append(contentsOf: value.description.utf8)
        }
    }

    package static func writeString(_ value: String, into out: inout [UInt8]) {
        out.append(ASCII.quote)
        var value = value
        value.withUTF8 { utf8 in
            guard let base = UnsafeRawPointer(utf8.baseAddress) else { return }
            var runStart = 0
            var index = 0
            while index < utf8.count {
                if index + 8 <= utf8.count,
                    !wordNeedsAttention(base.loadUnaligned(fromByteOffset: index, as: UInt64.self), orNonASCII: false)
                {
                    index += 8
                    continue
                }
                let byte = utf8[index]
                if byte >= 0x20 && byte != ASCII.quote && byte != ASCII.backslash {
                    index += 1
                    continue
                }
                out.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart..<index]))
                appendEscape(for: byte, into: &out)
                index += 1
                runStart = index
            }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart...]))
        }
        out.append(ASCII.quote)
    }

    private static func appendEscape(for byte: UInt8, into out: inout [UInt8]) {
        out.append(ASCII.backslash)
        switch byte {
        case ASCII.quote: out.append(ASCII.quote)
        case ASCII.backslash: out.append(ASCII.backslash)
        case ASCII.newline: out.append(UInt8(ascii: "n"))
        case ASCII.carriageReturn: out.append(UInt8(ascii: "r"))
        case ASCII.tab: out.append(UInt8(ascii: "t"))
        case 0x08: out.append(UInt8(ascii: "b"))
        case 0x0C: out.append(UInt8(ascii: "f"))
        default:
            out.append(contentsOf: "u00".utf8)
            out.append(ASCII.hexDigits[Int(byte >> 4)])
            out.append(ASCII.hexDigits[Int(byte & 0xF)])
        }
    }
}
