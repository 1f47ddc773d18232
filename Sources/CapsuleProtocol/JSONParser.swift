// A strict RFC 8259 parser: one pass over contiguous bytes, UTF-8 validated as it goes.

extension JSONValue {
    /// Containers nested deeper than this are rejected (keeps recursion bounded).
    public static let defaultMaxDepth = 512
    /// Documents with more values than this are rejected: a value in memory costs far more than
    /// its bytes (`[0],` is 3 bytes, a boxed array and an element), so a frame of tiny values
    /// could otherwise cost its reader many times the frame limit.
    public static let defaultMaxValues = 1 << 16

    /// Parses exactly one JSON value; leading and trailing whitespace is allowed, anything else
    /// after the value is an error.
    public static func parse(
        _ bytes: some Collection<UInt8>, maxDepth: Int = defaultMaxDepth, maxValues: Int = defaultMaxValues
    ) throws(JSONError) -> JSONValue {
        let result =
            bytes.withContiguousStorageIfAvailable { parseResult($0, maxDepth: maxDepth, maxValues: maxValues) }
            ?? Array(bytes).withUnsafeBufferPointer { parseResult($0, maxDepth: maxDepth, maxValues: maxValues) }
        return try result.get()
    }

    public static func parse(
        _ bytes: UnsafeRawBufferPointer, maxDepth: Int = defaultMaxDepth, maxValues: Int = defaultMaxValues
    ) throws(JSONError) -> JSONValue {
        try parseResult(bytes.assumingMemoryBound(to: UInt8.self), maxDepth: maxDepth, maxValues: maxValues).get()
    }

    static func parseResult(_ bytes: UnsafeBufferPointer<UInt8>, maxDepth: Int,
                            maxValues: Int = defaultMaxValues) -> Result<JSONValue, JSONError> {
        var parser = JSONParser(bytes: bytes, maxDepth: maxDepth, maxValues: maxValues)
        do throws(JSONError) {
            return .success(try parser.parseDocument())
        } catch {
            return .failure(error)
        }
    }
}

struct JSONParser {
    private let bytes: UnsafeBufferPointer<UInt8>
    private let maxDepth: Int
    private let maxValues: Int
    private var values = 0
    private var index = 0
    private var depth = 0
    /// Reused for strings that contain escapes.
    private var scratch: [UInt8] = []

    init(bytes: UnsafeBufferPointer<UInt8>, maxDepth: Int, maxValues: Int = JSONValue.defaultMaxValues) {
        self.bytes = bytes
        self.maxDepth = maxDepth
        self.maxValues = maxValues
    }

    mutating func parseDocument() throws(JSONError) -> JSONValue {
        let value = try parseValue()
        skipWhitespace()
        if index < bytes.count {
            throw unexpected(.trailingData, expected: "end of input")
        }
        return value
    }

    // MARK: Values

    private mutating func parseValue() throws(JSONError) -> JSONValue {
        values += 1
        if values > maxValues { throw JSONError(.tooManyValues, at: index, "more than \(maxValues) values") }
        skipWhitespace()
        guard index < bytes.count else { throw endOfInput(expected: "a value") }
        switch bytes[index] {
        case ASCII.openBrace: return try parseObject()
        case ASCII.openBracket: return try parseArray()
        case ASCII.quote: return .string(try parseString())
        case UInt8(ascii: "t"): try parseLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try parseLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try parseLiteral("null"); return .null
        case ASCII.minus, ASCII.zero...ASCII.nine: return .number(try parseNumber())
        default: throw unexpected(expected: "a value")
        }
    }

    private mutating func parseLiteral(_ word: StaticString) throws(JSONError) {
        let text = UnsafeBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount)
        for expectedByte in text {
            guard index < bytes.count else { throw endOfInput(expected: "'\(word)'") }
            guard bytes[index] == expectedByte else { throw unexpected(expected: "'\(word)'") }
            index += 1
        }
    }

    private mutating func enterContainer() throws(JSONError) {
        depth += 1
        if depth > maxDepth {
            throw JSONError(.tooDeep, at: index, "containers nested deeper than \(maxDepth) levels")
        }
    }

    private mutating func parseArray() throws(JSONError) -> JSONValue {
        try enterContainer()
        index += 1
        var elements: [JSONValue] = []
        skipWhitespace()
        if index < bytes.count, bytes[index] == ASCII.closeBracket {
            index += 1
            depth -= 1
            return .array(elements)
        }
        while true {
            elements.append(try parseValue())
            skipWhitespace()
            guard index < bytes.count else { throw endOfInput(expected: "',' or ']'") }
            switch bytes[index] {
            case ASCII.comma:
                index += 1
            case ASCII.closeBracket:
                index += 1
                depth -= 1
                return .array(elements)
            default:
                throw unexpected(expected: "',' or ']'")
            }
        }
    }

    private mutating func parseObject() throws(JSONError) -> JSONValue {
        try enterContainer()
        index += 1
        var members: [(String, JSONValue)] = []
        skipWhitespace()
        if index < bytes.count, bytes[index] == ASCII.closeBrace {
            index += 1
            depth -= 1
            return .object(members)
        }
        // Small objects (every protocol message) check duplicates by scanning; big ones by hashing.
        var seen: Set<String>? = nil
        while true {
            skipWhitespace()
            guard index < bytes.count else { throw endOfInput(expected: "a member name") }
            guard bytes[index] == ASCII.quote else { throw unexpected(expected: "a member name") }
            let keyOffset = index
            let key = try parseString()
            if seen != nil {
                if !seen!.insert(key).inserted { throw duplicate(key, at: keyOffset) }
            } else {
                if members.contains(where: { $0.0 == key }) { throw duplicate(key, at: keyOffset) }
                if members.count == 16 { seen = Set(members.lazy.map(\.0) + [key]) }
            }
            skipWhitespace()
            guard index < bytes.count else { throw endOfInput(expected: "':'") }
            guard bytes[index] == ASCII.colon else { throw unexpected(expected: "':'") }
            index += 1
            members.append((key, try parseValue()))
            skipWhitespace()
            guard index < bytes.count else { throw endOfInput(expected: "',' or '}'") }
            switch bytes[index] {
            case ASCII.comma:
                index += 1
            case ASCII.closeBrace:
                index += 1
                depth -= 1
                return .object(members)
            default:
                throw unexpected(expected: "',' or '}'")
            }
        }
    }

    // MARK: Strings

    /// Parses the string whose opening quote is at `index`.
    private mutating func parseString() throws(JSONError) -> String {
        let open = index
        index += 1
        var runStart = index
        var escaped = false
        let end = bytes.count
        let base = UnsafeRawPointer(bytes.baseAddress)
        while true {
            // Skip plain ASCII eight bytes at a time.
            if let base {
                while index + 8 <= end,
                    !wordNeedsAttention(base.loadUnaligned(fromByteOffset: index, as: UInt64.self), orNonASCII: true)
                {
                    index += 8
                }
            }
            guard index < end else {
                throw JSONError(.unexpectedEnd, at: open, "unterminated string")
            }
            let byte = bytes[index]
            if byte == ASCII.quote {
                let run = UnsafeBufferPointer(rebasing: bytes[runStart..<index])
                index += 1
                guard escaped else { return String(decoding: run, as: UTF8.self) }
                scratch.append(contentsOf: run)
                return String(decoding: scratch, as: UTF8.self)
            } else if byte == ASCII.backslash {
                if !escaped {
                    scratch.removeAll(keepingCapacity: true)
                    escaped = true
                }
                scratch.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<index]))
                try parseEscape()
                runStart = index
            } else if byte < 0x20 {
                throw JSONError(.controlCharacter, at: index,
                                "control character \(hexByte(byte)) must be escaped in a string")
            } else if byte < 0x80 {
                index += 1
            } else {
                guard let length = utf8SequenceLength(in: bytes, at: index) else { throw invalidUTF8() }
                index += length
            }
        }
    }

    /// Decodes the escape whose backslash is at `index` into `scratch`.
    private mutating func parseEscape() throws(JSONError) {
        let start = index
        index += 1
        guard index < bytes.count else {
            throw JSONError(.unexpectedEnd, at: index, "unexpected end of input in an escape sequence")
        }
        let decoded: UInt8
        switch bytes[index] {
        case ASCII.quote: decoded = ASCII.quote
        case ASCII.backslash: decoded = ASCII.backslash
        case ASCII.slash: decoded = ASCII.slash
        case UInt8(ascii: "b"): decoded = 0x08
        case UInt8(ascii: "f"): decoded = 0x0C
        case UInt8(ascii: "n"): decoded = ASCII.newline
        case UInt8(ascii: "r"): decoded = ASCII.carriageReturn
        case UInt8(ascii: "t"): decoded = ASCII.tab
        case UInt8(ascii: "u"):
            index += 1
            try appendUnicodeEscape(startingAt: start)
            return
        default:
            throw JSONError(.invalidEscape, at: start, "invalid escape: backslash followed by \(describe(at: index))")
        }
        index += 1
        scratch.append(decoded)
    }

    /// `index` is just after `\u`; `start` is the backslash.
    private mutating func appendUnicodeEscape(startingAt start: Int) throws(JSONError) {
        let unit = try parseHex4(escapeStart: start)
        var scalarValue = UInt32(unit)
        switch unit {
        case 0xD800...0xDBFF:
            let lowStart = index
            guard index + 1 < bytes.count, bytes[index] == ASCII.backslash, bytes[index + 1] == UInt8(ascii: "u")
            else { throw unpairedSurrogate(unit, at: start) }
            index += 2
            let low = try parseHex4(escapeStart: lowStart)
            guard (0xDC00...0xDFFF).contains(low) else { throw unpairedSurrogate(unit, at: start) }
            scalarValue = 0x10000 + ((UInt32(unit) - 0xD800) << 10) + (UInt32(low) - 0xDC00)
        case 0xDC00...0xDFFF:
            throw unpairedSurrogate(unit, at: start)
        default:
            break
        }
        // Every value reaching here is a valid scalar (surrogates were handled above).
        let scalar = Unicode.Scalar(scalarValue)!
        scratch.append(contentsOf: UTF8.encode(scalar)!)
    }

    private mutating func parseHex4(escapeStart: Int) throws(JSONError) -> UInt16 {
        var value: UInt16 = 0
        for _ in 0..<4 {
            guard index < bytes.count, let digit = ASCII.hexValue(bytes[index]) else {
                throw JSONError(.invalidEscape, at: escapeStart, "invalid \\u escape",
                                expected: "four hex digits after \\u")
            }
            value = value << 4 | UInt16(digit)
            index += 1
        }
        return value
    }

    // MARK: Numbers

    /// Exact powers of ten for the fast path (all representable in a Double).
    private static let powersOfTen: [Double] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
        1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ]

    private mutating func parseNumber() throws(JSONError) -> Double {
        let start = index
        let negative = bytes[index] == ASCII.minus
        if negative { index += 1 }

        // Up to 19 digits fit a UInt64; more digits take the slow path.
        var mantissa: UInt64 = 0
        var digitCount = 0
        var exponent = 0
        @inline(__always) func accumulate(_ byte: UInt8) {
            if digitCount < 19 {
                mantissa = mantissa &* 10 &+ UInt64(byte - ASCII.zero)
            }
            digitCount += 1
        }

        guard index < bytes.count else {
            throw JSONError(.unexpectedEnd, at: index, "unexpected end of input in a number", expected: "a digit")
        }
        let first = bytes[index]
        if first == ASCII.zero {
            index += 1
            if index < bytes.count, ASCII.isDigit(bytes[index]) {
                throw JSONError(.invalidNumber, at: index - 1, "leading zeros are not allowed in a number")
            }
        } else if ASCII.isDigit(first) {
            while index < bytes.count, ASCII.isDigit(bytes[index]) {
                accumulate(bytes[index])
                index += 1
            }
        } else {
            throw unexpected(.invalidNumber, expected: "a digit")
        }

        if index < bytes.count, bytes[index] == ASCII.dot {
            index += 1
            try requireDigit()
            while index < bytes.count, ASCII.isDigit(bytes[index]) {
                accumulate(bytes[index])
                exponent -= 1
                index += 1
            }
        }

        if index < bytes.count, bytes[index] | 0x20 == UInt8(ascii: "e") {
            index += 1
            var exponentNegative = false
            if index < bytes.count, bytes[index] == ASCII.minus || bytes[index] == ASCII.plus {
                exponentNegative = bytes[index] == ASCII.minus
                index += 1
            }
            try requireDigit()
            var written = 0
            while index < bytes.count, ASCII.isDigit(bytes[index]) {
                if written < 100_000 { written = written * 10 + Int(bytes[index] - ASCII.zero) }
                index += 1
            }
            exponent += exponentNegative ? -written : written
        }

        // Clinger's fast path: an exact mantissa times an exact power of ten rounds correctly.
        if digitCount <= 19, mantissa <= 1 << 53, (-22...22).contains(exponent) || mantissa == 0 {
            var value = Double(mantissa)
            if mantissa != 0 {
                value = exponent < 0 ? value / Self.powersOfTen[-exponent] : value * Self.powersOfTen[exponent]
            }
            return negative ? -value : value
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
        guard let value = Double(text) else {
            throw JSONError(.invalidNumber, at: start, "number '\(text)' cannot be read")
        }
        guard value.isFinite else {
            throw JSONError(.numberOutOfRange, at: start, "number is too large for a 64-bit float")
        }
        return value
    }

    private func requireDigit() throws(JSONError) {
        guard index < bytes.count else {
            throw JSONError(.unexpectedEnd, at: index, "unexpected end of input in a number", expected: "a digit")
        }
        guard ASCII.isDigit(bytes[index]) else { throw unexpected(.invalidNumber, expected: "a digit") }
    }

    // MARK: Whitespace and errors

    @inline(__always)
    private mutating func skipWhitespace() {
        while index < bytes.count, ASCII.isWhitespace(bytes[index]) { index += 1 }
    }

    private func endOfInput(expected: String) -> JSONError {
        JSONError(.unexpectedEnd, at: index, "unexpected end of input", expected: expected)
    }

    /// The error for the byte at `index`; invalid UTF-8 is reported as such wherever it appears.
    private func unexpected(_ kind: JSONError.Kind = .unexpectedCharacter, expected: String) -> JSONError {
        if bytes[index] >= 0x80, utf8SequenceLength(in: bytes, at: index) == nil { return invalidUTF8() }
        return JSONError(kind, at: index, "unexpected \(describe(at: index))", expected: expected)
    }

    private func invalidUTF8() -> JSONError {
        JSONError(.invalidUTF8, at: index, "invalid UTF-8 sequence starting with byte \(hexByte(bytes[index]))")
    }

    private func duplicate(_ key: String, at offset: Int) -> JSONError {
        JSONError(.duplicateKey, at: offset, "duplicate member name \"\(key)\"")
    }

    private func unpairedSurrogate(_ unit: UInt16, at offset: Int) -> JSONError {
        let hex = String(unit, radix: 16, uppercase: true)
        return JSONError(.unpairedSurrogate, at: offset, "unpaired surrogate \\u\(hex) in a string")
    }

    /// "character 'x'" for printable characters, "byte 0x01" otherwise.
    private func describe(at offset: Int) -> String {
        let byte = bytes[offset]
        if byte > 0x20 && byte < 0x7F { return "character '\(Character(Unicode.Scalar(byte)))'" }
        if byte >= 0x80, let length = utf8SequenceLength(in: bytes, at: offset) {
            let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[offset..<offset + length]), as: UTF8.self)
            return "character '\(text)'"
        }
        return "byte \(hexByte(byte))"
    }
}

/// "0x0A"
func hexByte(_ byte: UInt8) -> String {
    (byte < 0x10 ? "0x0" : "0x") + String(byte, radix: 16, uppercase: true)
}
