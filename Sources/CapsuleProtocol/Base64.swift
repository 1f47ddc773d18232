// Standard base64 (RFC 4648 section 4, padded): how bytes that need not be UTF-8 travel in a JSON
// string (a script file's bytes, output that is not text; docs/protocol.md).

enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    private static let invalid: UInt8 = 0xff
    private static let values: [UInt8] = {
        var table = [UInt8](repeating: invalid, count: 256)
        for (value, character) in alphabet.enumerated() { table[Int(character)] = UInt8(value) }
        return table
    }()
    private static let pad = UInt8(ascii: "=")

    static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var index = 0
        while index < bytes.count {
            let count = min(3, bytes.count - index)
            var group: UInt32 = 0
            for offset in 0..<3 { group = group << 8 | UInt32(offset < count ? bytes[index + offset] : 0) }
            for position in 0..<4 {
                out.append(position <= count ? alphabet[Int(group >> (18 - 6 * UInt32(position)) & 63)] : pad)
            }
            index += count
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The bytes, or nil unless `text` is padded standard base64.
    static func decode(_ text: String) -> [UInt8]? {
        let characters = Array(text.utf8)
        guard characters.count % 4 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(characters.count / 4 * 3)
        var index = 0
        while index < characters.count {
            let last = index + 4 == characters.count
            let padding = !last ? 0 : characters[index + 3] != pad ? 0 : characters[index + 2] == pad ? 2 : 1
            var group: UInt32 = 0
            for offset in 0..<4 {
                let value = offset < 4 - padding ? values[Int(characters[index + offset])] : 0
                guard value != invalid else { return nil }
                group = group << 6 | UInt32(value)
            }
            out.append(UInt8(group >> 16))
            if padding < 2 { out.append(UInt8(group >> 8 & 0xff)) }
            if padding < 1 { out.append(UInt8(group & 0xff)) }
            index += 4
        }
        return out
    }
}
