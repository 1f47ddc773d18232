/// The part of TOML that policies use: `[table]` and `[a.b]` headers, `key = value` with strings
/// (basic and literal), integers, floats, booleans, one-line arrays and inline tables, and
/// comments. Every value remembers its line, so errors can point at it.
struct TOMLDocument {
    indirect enum Value: Equatable {
        case string(String), integer(Int), float(Double), bool(Bool), array([Value]), table([(String, Value)])

        static func == (lhs: Value, rhs: Value) -> Bool {
            switch (lhs, rhs) {
            case let (.string(a), .string(b)): a == b
            case let (.integer(a), .integer(b)): a == b
            case let (.float(a), .float(b)): a == b
            case let (.bool(a), .bool(b)): a == b
            case let (.array(a), .array(b)): a == b
            case let (.table(a), .table(b)): a.map(\.0) == b.map(\.0) && a.map(\.1) == b.map(\.1)
            default: false
            }
        }

        var typeName: String {
            switch self {
            case .string: "a string"
            case .integer: "an integer"
            case .float: "a number"
            case .bool: "a boolean"
            case .array: "an array"
            case .table: "a table"
            }
        }
    }

    /// One `key = value`, with its full dotted path (`limits.memory_mb`).
    struct Entry {
        let path: String
        let value: Value
        let line: Int
    }

    var entries: [Entry] = []
    /// Table headers seen, with their lines.
    var tables: [(path: String, line: Int)] = []

    init(parsing text: String, file: String) throws(PolicyError) {
        var table = ""
        var seen = Set<String>()
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let lineNumber = index + 1
            var scanner = Scanner(Array(rawLine.utf8), file: file, line: lineNumber)
            scanner.skipSpace()
            if scanner.atEndOfLine { continue }
            if scanner.peek == UInt8(ascii: "[") {
                scanner.advance()
                if scanner.peek == UInt8(ascii: "[") {
                    throw scanner.error("arrays of tables ([[...]]) are not used in policies")
                }
                scanner.skipSpace()
                table = try scanner.dottedKey()
                scanner.skipSpace()
                try scanner.expect("]")
                scanner.skipSpace()
                guard scanner.atEndOfLine else { throw scanner.error("unexpected text after the table header") }
                guard seen.insert("[\(table)]").inserted else {
                    throw PolicyError(file: file, line: lineNumber, key: table, "this table is defined twice")
                }
                tables.append((table, lineNumber))
                continue
            }
            let key = try scanner.dottedKey()
            scanner.skipSpace()
            try scanner.expect("=")
            scanner.skipSpace()
            let value = try scanner.value(depth: 0)
            scanner.skipSpace()
            guard scanner.atEndOfLine else { throw scanner.error("unexpected text after the value of `\(key)`") }
            let path = table.isEmpty ? key : "\(table).\(key)"
            guard seen.insert(path).inserted else {
                throw PolicyError(file: file, line: lineNumber, key: path, "this key is set twice")
            }
            entries.append(Entry(path: path, value: value, line: lineNumber))
        }
    }
}

/// Reads one line of TOML.
private struct Scanner {
    let bytes: [UInt8]
    let file: String
    let line: Int
    var index = 0

    init(_ bytes: [UInt8], file: String, line: Int) {
        self.bytes = bytes.last == UInt8(ascii: "\r") ? Array(bytes.dropLast()) : bytes
        self.file = file
        self.line = line
    }

    var peek: UInt8? { index < bytes.count ? bytes[index] : nil }
    var atEndOfLine: Bool { peek == nil || peek == UInt8(ascii: "#") }
    mutating func advance() { index += 1 }

    func error(_ message: String) -> PolicyError {
        PolicyError(file: file, line: line, "\(message) (column \(index + 1))")
    }

    mutating func skipSpace() {
        while let byte = peek, byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") { advance() }
    }

    mutating func expect(_ character: Character) throws(PolicyError) {
        guard peek == character.asciiValue else { throw error("expected `\(character)`") }
        advance()
    }

    mutating func dottedKey() throws(PolicyError) -> String {
        var parts: [String] = []
        repeat {
            if !parts.isEmpty { advance(); skipSpace() }
            parts.append(try simpleKey())
            skipSpace()
        } while peek == UInt8(ascii: ".")
        return parts.joined(separator: ".")
    }

    private mutating func simpleKey() throws(PolicyError) -> String {
        if peek == UInt8(ascii: "\"") { return try basicString() }
        if peek == UInt8(ascii: "'") { return try literalString() }
        let start = index
        while let byte = peek, isBareKeyByte(byte) { advance() }
        guard index > start else { throw error("expected a key") }
        return String(decoding: bytes[start..<index], as: UTF8.self)
    }

    private func isBareKeyByte(_ byte: UInt8) -> Bool {
        (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a)
            || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
    }

    mutating func value(depth: Int) throws(PolicyError) -> TOMLDocument.Value {
        guard depth < 32 else { throw error("values are nested too deeply") }
        guard let byte = peek else { throw error("expected a value") }
        switch byte {
        case UInt8(ascii: "\""):
            if bytes[index...].starts(with: Array("\"\"\"".utf8)) { throw error("multi-line strings are not supported in policies") }
            return .string(try basicString())
        case UInt8(ascii: "'"): return .string(try literalString())
        case UInt8(ascii: "["): return try array(depth: depth)
        case UInt8(ascii: "{"): return try inlineTable(depth: depth)
        default: return try scalar()
        }
    }

    private mutating func array(depth: Int) throws(PolicyError) -> TOMLDocument.Value {
        advance()
        var items: [TOMLDocument.Value] = []
        skipSpace()
        while peek != UInt8(ascii: "]") {
            if peek == nil { throw error("an array must close on the same line with `]`") }
            items.append(try value(depth: depth + 1))
            skipSpace()
            if peek == UInt8(ascii: ",") { advance(); skipSpace() } else if peek != UInt8(ascii: "]") {
                throw error("expected `,` or `]` in the array")
            }
        }
        advance()
        return .array(items)
    }

    private mutating func inlineTable(depth: Int) throws(PolicyError) -> TOMLDocument.Value {
        advance()
        var members: [(String, TOMLDocument.Value)] = []
        skipSpace()
        while peek != UInt8(ascii: "}") {
            if peek == nil { throw error("an inline table must close on the same line with `}`") }
            let key = try dottedKey()
            if members.contains(where: { $0.0 == key }) { throw error("`\(key)` is set twice in this table") }
            skipSpace()
            try expect("=")
            skipSpace()
            members.append((key, try value(depth: depth + 1)))
            skipSpace()
            if peek == UInt8(ascii: ",") { advance(); skipSpace() } else if peek != UInt8(ascii: "}") {
                throw error("expected `,` or `}` in the inline table")
            }
        }
        advance()
        return .table(members)
    }

    private mutating func scalar() throws(PolicyError) -> TOMLDocument.Value {
        let start = index
        while let byte = peek, byte != UInt8(ascii: ","), byte != UInt8(ascii: "]"), byte != UInt8(ascii: "}"),
              byte != UInt8(ascii: " "), byte != UInt8(ascii: "\t"), byte != UInt8(ascii: "#") { advance() }
        let text = String(decoding: bytes[start..<index], as: UTF8.self)
        if text == "true" { return .bool(true) }
        if text == "false" { return .bool(false) }
        let digits = text.replacingUnderscoresBetweenDigits()
        if let digits, let integer = Int(digits.hasPrefix("+") ? String(digits.dropFirst()) : digits) {
            return .integer(integer)
        }
        if let digits, digits.contains(where: { $0 == "." || $0 == "e" || $0 == "E" }),
           digits.first.map({ $0.isNumber || $0 == "-" || $0 == "+" }) == true, let number = Double(digits),
           number.isFinite {
            return .float(number)
        }
        if let digits, digits.allSatisfy({ $0.isNumber || $0 == "-" || $0 == "+" }), !digits.isEmpty {
            throw PolicyError(file: file, line: line, "the number \(text) is too large")
        }
        throw PolicyError(file: file, line: line, "`\(text)` is not a value; strings need quotes, like \"\(text)\"")
    }

    private mutating func basicString() throws(PolicyError) -> String {
        advance()
        var out: [UInt8] = []
        while let byte = peek {
            advance()
            switch byte {
            case UInt8(ascii: "\""): return try decoded(out)
            case UInt8(ascii: "\\"):
                guard let escape = peek else { break }
                advance()
                switch escape {
                case UInt8(ascii: "n"): out.append(0x0a)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "r"): out.append(0x0d)
                case UInt8(ascii: "\""), UInt8(ascii: "\\"): out.append(escape)
                case UInt8(ascii: "u"), UInt8(ascii: "U"):
                    let width = escape == UInt8(ascii: "u") ? 4 : 8
                    guard index + width <= bytes.count,
                          let code = UInt32(String(decoding: bytes[index..<index + width], as: UTF8.self), radix: 16),
                          let scalar = Unicode.Scalar(code) else { throw error("invalid \\u escape") }
                    index += width
                    out.append(contentsOf: Array(String(Character(scalar)).utf8))
                default: throw error("invalid escape `\\\(Character(Unicode.Scalar(escape)))`")
                }
            case 0..<0x20 where byte != 0x09: throw error("control character in a string")
            default: out.append(byte)
            }
        }
        throw error("the string is not closed with `\"` on this line")
    }

    private mutating func literalString() throws(PolicyError) -> String {
        advance()
        let start = index
        while let byte = peek, byte != UInt8(ascii: "'") { advance() }
        guard peek != nil else { throw error("the string is not closed with `'` on this line") }
        let text = Array(bytes[start..<index])
        advance()
        return try decoded(text)
    }

    private func decoded(_ utf8: [UInt8]) throws(PolicyError) -> String {
        guard let text = String(validating: utf8, as: UTF8.self) else { throw error("the string is not valid UTF-8") }
        return text
    }
}

extension String {
    /// TOML allows `1_000` (underscores between digits only); nil when an underscore is misplaced.
    fileprivate func replacingUnderscoresBetweenDigits() -> String? {
        let characters = Array(self)
        var out = ""
        for (offset, character) in characters.enumerated() {
            if character == "_" {
                guard offset > 0, offset + 1 < characters.count, characters[offset - 1].isNumber,
                      characters[offset + 1].isNumber else { return nil }
                continue
            }
            out.append(character)
        }
        return out
    }
}
