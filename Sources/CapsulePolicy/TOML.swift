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
        var bytes = Array(text.utf8)
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes.removeFirst(3) } // a byte-order mark
        // Split on the byte: as Characters, "\r\n" is one grapheme that is not "\n".
        var scanner = Scanner(lines: bytes.split(separator: 0x0A, omittingEmptySubsequences: false).map(Array.init),
                              file: file)
        repeat {
            scanner.skipSpace()
            if scanner.atEndOfLine { continue }
            let lineNumber = scanner.line
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
        } while scanner.nextLine()
    }
}

/// Reads TOML a line at a time; only an array may continue onto the next lines (TOML 1.0).
private struct Scanner {
    /// Far more than a policy needs; keeps every later check over lists cheap.
    static let maxItems = 1024

    private let lines: [[UInt8]]
    private var lineIndex = 0
    private(set) var bytes: [UInt8]
    let file: String
    var index = 0
    var line: Int { lineIndex + 1 }

    init(lines: [[UInt8]], file: String) {
        self.lines = lines
        self.file = file
        self.bytes = Scanner.withoutCarriageReturn(lines.first ?? [])
    }

    private static func withoutCarriageReturn(_ bytes: [UInt8]) -> [UInt8] {
        bytes.last == UInt8(ascii: "\r") ? Array(bytes.dropLast()) : bytes
    }

    /// Moves to the start of the next line; false at the end of the text.
    mutating func nextLine() -> Bool {
        guard lineIndex + 1 < lines.count else { return false }
        lineIndex += 1
        bytes = Scanner.withoutCarriageReturn(lines[lineIndex])
        index = 0
        return true
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

    /// A quoted key that is not also a valid bare key keeps its quotes, so `"limits.memory_mb"`
    /// stays one key and never matches the path `limits.memory_mb`.
    private mutating func simpleKey() throws(PolicyError) -> String {
        if peek == UInt8(ascii: "\"") || peek == UInt8(ascii: "'") {
            let key = peek == UInt8(ascii: "\"") ? try basicString() : try literalString()
            return !key.isEmpty && key.utf8.allSatisfy(isBareKeyByte) ? key : "\"\(key)\""
        }
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
        case UInt8(ascii: "'"):
            if bytes[index...].starts(with: Array("'''".utf8)) { throw error("multi-line strings are not supported in policies") }
            return .string(try literalString())
        case UInt8(ascii: "["): return try array(depth: depth)
        case UInt8(ascii: "{"): return try inlineTable(depth: depth)
        default: return try scalar()
        }
    }

    private mutating func array(depth: Int) throws(PolicyError) -> TOMLDocument.Value {
        advance()
        var items: [TOMLDocument.Value] = []
        try skipArraySpace()
        while peek != UInt8(ascii: "]") {
            guard items.count < Self.maxItems else { throw error("an array may hold at most \(Self.maxItems) values") }
            items.append(try value(depth: depth + 1))
            try skipArraySpace()
            if peek == UInt8(ascii: ",") { advance(); try skipArraySpace() } else if peek != UInt8(ascii: "]") {
                throw error("expected `,` or `]` in the array")
            }
        }
        advance()
        return .array(items)
    }

    /// Inside an array, newlines and comments are space.
    private mutating func skipArraySpace() throws(PolicyError) {
        while true {
            skipSpace()
            guard atEndOfLine else { return }
            let (openLine, column) = (line, index + 1)
            guard nextLine() else {
                throw PolicyError(file: file, line: openLine, "the array is not closed with `]` (column \(column))")
            }
        }
    }

    private mutating func inlineTable(depth: Int) throws(PolicyError) -> TOMLDocument.Value {
        advance()
        var members: [(String, TOMLDocument.Value)] = []
        var keys = Set<String>()
        skipSpace()
        while peek != UInt8(ascii: "}") {
            if peek == nil { throw error("an inline table must close on the same line with `}`") }
            let key = try dottedKey()
            guard keys.insert(key).inserted else { throw error("`\(key)` is set twice in this table") }
            guard members.count < Self.maxItems else { throw error("an inline table may hold at most \(Self.maxItems) keys") }
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
        if index == start {
            index = start
            throw error("expected a value")
        }
        let token = Array(bytes[start..<index])
        let text = String(decoding: token, as: UTF8.self)
        if text == "true" { return .bool(true) }
        if text == "false" { return .bool(false) }
        switch TOMLNumber(token) {
        case .integer(let digits):
            guard let value = Int(digits) else {
                throw PolicyError(file: file, line: line, "the number \(text) is too \(digits.hasPrefix("-") ? "small" : "large")")
            }
            return .integer(value)
        case .float(let digits):
            guard let value = Double(digits), value.isFinite else {
                throw PolicyError(file: file, line: line, "the number \(text) is too large")
            }
            return .float(value)
        case nil:
            if let (base, value) = Self.radixInteger(text) {
                let decimal = value.map { "write \($0)" } ?? "write the number in decimal"
                throw PolicyError(file: file, line: line, "\(base) numbers such as \(text) are not used in policies; \(decimal)")
            }
            throw PolicyError(file: file, line: line, "`\(text)` is not a value; strings need quotes, like \"\(text)\"")
        }
    }

    /// TOML's `0x`, `0o` and `0b` integers, which policies do not take: the name of the base and the
    /// value (nil when it does not fit), so the error can give the decimal to write instead.
    private static func radixInteger(_ text: String) -> (String, Int?)? {
        let bases: [(String, String, Int)] = [("0x", "hexadecimal", 16), ("0o", "octal", 8), ("0b", "binary", 2)]
        guard let (_, name, radix) = bases.first(where: { text.hasPrefix($0.0) }) else { return nil }
        let digits = text.dropFirst(2).filter { $0 != "_" }
        guard !digits.isEmpty, digits.allSatisfy({ $0.isHexDigit && Int(String($0), radix: 16)! < radix }) else { return nil }
        return (name, Int(digits, radix: radix))
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
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0c)
                case UInt8(ascii: "n"): out.append(0x0a)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "r"): out.append(0x0d)
                case UInt8(ascii: "\""), UInt8(ascii: "\\"): out.append(escape)
                case UInt8(ascii: "u"), UInt8(ascii: "U"):
                    let width = escape == UInt8(ascii: "u") ? 4 : 8
                    guard index + width <= bytes.count, bytes[index..<index + width].allSatisfy(isHexDigit),
                          let code = UInt32(String(decoding: bytes[index..<index + width], as: UTF8.self), radix: 16),
                          let scalar = Unicode.Scalar(code) else { throw error("invalid \\u escape") }
                    index += width
                    out.append(contentsOf: Array(String(Character(scalar)).utf8))
                default:
                    let shown = String(decoding: bytes[(index - 1)...].prefix(4), as: UTF8.self).first.map(String.init) ?? "?"
                    throw error("invalid escape `\\\(shown)`")
                }
            case 0..<0x20 where byte != 0x09, 0x7f:
                index -= 1 // point at the character itself
                throw error("control character in a string")
            default: out.append(byte)
            }
        }
        throw error("the string is not closed with `\"` on this line")
    }

    private mutating func literalString() throws(PolicyError) -> String {
        advance()
        let start = index
        while let byte = peek, byte != UInt8(ascii: "'") {
            if byte < 0x20 && byte != 0x09 || byte == 0x7f { throw error("control character in a string") }
            advance()
        }
        guard peek != nil else { throw error("the string is not closed with `'` on this line") }
        let text = Array(bytes[start..<index])
        advance()
        return try decoded(text)
    }

    private func isHexDigit(_ byte: UInt8) -> Bool {
        (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x46) || (byte >= 0x61 && byte <= 0x66)
    }

    private func decoded(_ utf8: [UInt8]) throws(PolicyError) -> String {
        guard let text = String(validating: utf8, as: UTF8.self) else { throw error("the string is not valid UTF-8") }
        return text
    }
}

/// A decimal TOML number, checked against the grammar before Swift converts it: an optional sign,
/// no leading zeros, underscores only between digits; a float needs a fraction or an exponent.
/// Anything else (hexadecimal, `1.`, `++1`, dates, non-ASCII digits) is not a number here.
private enum TOMLNumber {
    case integer(String), float(String)

    init?(_ token: [UInt8]) {
        var digits = ""
        var index = 0
        func isDigit(_ i: Int) -> Bool { i < token.count && token[i] >= 0x30 && token[i] <= 0x39 }
        // One run of digits with single underscores between them; false if there is none.
        func digitRun(allowLeadingZero: Bool) -> Bool {
            guard isDigit(index) else { return false }
            let first = index
            while isDigit(index) || (index < token.count && token[index] == UInt8(ascii: "_") && isDigit(index + 1)
                                     && index > first) {
                if token[index] != UInt8(ascii: "_") { digits.append(Character(Unicode.Scalar(token[index]))) }
                index += 1
            }
            return allowLeadingZero || token[first] != UInt8(ascii: "0") || index - first == 1
        }
        if index < token.count, token[index] == UInt8(ascii: "+") || token[index] == UInt8(ascii: "-") {
            if token[index] == UInt8(ascii: "-") { digits = "-" }
            index += 1
        }
        guard digitRun(allowLeadingZero: false) else { return nil }
        var isFloat = false
        if index < token.count, token[index] == UInt8(ascii: ".") {
            digits.append(".")
            index += 1
            guard digitRun(allowLeadingZero: true) else { return nil }
            isFloat = true
        }
        if index < token.count, token[index] == UInt8(ascii: "e") || token[index] == UInt8(ascii: "E") {
            digits.append("e")
            index += 1
            if index < token.count, token[index] == UInt8(ascii: "+") || token[index] == UInt8(ascii: "-") {
                digits.append(Character(Unicode.Scalar(token[index])))
                index += 1
            }
            guard digitRun(allowLeadingZero: true) else { return nil }
            isFloat = true
        }
        guard index == token.count else { return nil }
        self = isFloat ? .float(digits) : .integer(digits)
    }
}
