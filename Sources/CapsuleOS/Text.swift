// Text that came from outside (a policy, sandboxed code) made safe to show.
extension String {
    /// Control characters (C0, DEL, C1) as TOML/JSON-style escapes, so text from a policy or from
    /// sandboxed code cannot drive the terminal it is printed on (rewrite lines, set titles, answer
    /// queries).
    public var escapingControlCharacters: String {
        guard unicodeScalars.contains(where: \.isControlCharacter) else { return self }
        var out = ""
        for scalar in unicodeScalars {
            switch scalar {
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            case _ where scalar.isControlCharacter:
                let hex = String(scalar.value, radix: 16, uppercase: true)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// At most `limit` characters, marked when cut: text from the sandbox in our own messages.
    public func clipped(to limit: Int) -> String {
        count <= limit ? self : String(prefix(limit)) + "…"
    }
}

extension Unicode.Scalar {
    /// C0 controls, DEL and C1 controls: what a terminal may act on rather than show.
    public var isControlCharacter: Bool { value < 0x20 || (0x7f...0x9f).contains(value) }
}

extension Sequence<UInt8> {
    /// Lowercase hexadecimal, two digits a byte (digests as logs and checksums show them).
    public var hexText: String {
        // Through contiguous storage: unspecialized generic iteration costs microseconds a digest.
        withContiguousStorageIfAvailable(hexadecimal) ?? Array(self).withUnsafeBufferPointer(hexadecimal)
    }
}

extension Array<UInt8> {
    /// Appends `bytes` as lowercase hexadecimal, without going through `String`.
    public mutating func appendHex(_ bytes: [UInt8]) {
        for byte in bytes {
            append(hexDigits.utf8Start[Int(byte >> 4)])
            append(hexDigits.utf8Start[Int(byte & 0x0f)])
        }
    }
}

private let hexDigits: StaticString = "0123456789abcdef"

private func hexadecimal(_ bytes: UnsafeBufferPointer<UInt8>) -> String {
    String(unsafeUninitializedCapacity: bytes.count * 2) { out in
        for (index, byte) in bytes.enumerated() {
            out[2 * index] = hexDigits.utf8Start[Int(byte >> 4)]
            out[2 * index + 1] = hexDigits.utf8Start[Int(byte & 0x0f)]
        }
        return bytes.count * 2
    }
}
