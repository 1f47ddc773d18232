import Testing
@testable import CapsuleProtocol

@Suite struct JSONParserTests {
    @Test func parsesNestedDocument() throws {
        let value = try parse(#" {"type":"x","n":[1,2.5,-3e2,true,false,null,{}],"s":"a\"b","o":{"k":[]}} "#)
        #expect(value == .object([
            ("type", .string("x")),
            ("n", .array([.number(1), .number(2.5), .number(-300), .bool(true), .bool(false), .null, .object([])])),
            ("s", .string("a\"b")),
            ("o", .object([("k", .array([]))])),
        ]))
        // Member order is kept as parsed.
        #expect(value.objectValue?.map(\.0) == ["type", "n", "s", "o"])
    }

    @Test func parsesScalarsAtTopLevel() throws {
        #expect(try parse("null") == .null)
        #expect(try parse("true") == .bool(true))
        #expect(try parse(" false\n") == .bool(false))
        #expect(try parse("\"\"") == .string(""))
        #expect(try parse("[]") == .array([]))
        #expect(try parse("{}") == .object([]))
        #expect(try parse(" \t\r\n[ 1 , { \"a\" : 2 } ] \t\r\n") == [1, ["a": 2]])
    }

    @Test func decodesEveryEscape() throws {
        let value = try parse(#""\"\\\/\b\f\n\r\t\u0041\u00e9\u20AC\ud83d\ude00\u0000""#)
        #expect(value == .string("\"\\/\u{08}\u{0C}\n\r\tAé€😀\u{0}"))
    }

    @Test func keepsRawUTF8AndMixesItWithEscapes() throws {
        #expect(try parse("\"héllo 😀 世界\"") == .string("héllo 😀 世界"))
        #expect(try parse("\"é\\n😀\\u00e9x\"") == .string("é\n😀éx"))
        // Long enough for the eight-byte fast path to run before and after the escape.
        let long = String(repeating: "abcdefgh", count: 5)
        #expect(try parse("\"\(long)\\t\(long)\"") == .string(long + "\t" + long))
    }

    @Test func decodesSurrogatePairsToOneScalar() throws {
        let value = try parse(#""\uD834\uDD1E""#)
        #expect(value == .string("𝄞"))
        #expect(value.stringValue?.unicodeScalars.map(\.value) == [0x1D11E])
        #expect(try parse(#""\udbff\udfff""#).stringValue?.unicodeScalars.map(\.value) == [0x10FFFF])
    }

    @Test(arguments: [
        ("0", 0.0), ("1", 1), ("-1", -1), ("1.5", 1.5), ("-1.5", -1.5), ("1e3", 1000), ("1E3", 1000),
        ("1e+3", 1000), ("1e-3", 0.001), ("0.1", 0.1), ("0.000001", 1e-6), ("2.5e-3", 0.0025),
        ("123456789012345678", 123456789012345680), ("9007199254740993", 9007199254740992),
        ("12345678901234567890123", 1.2345678901234568e22), ("1e22", 1e22), ("1e23", 1e23),
        ("3.141592653589793", 3.141592653589793), ("1.7976931348623157e308", 1.7976931348623157e308),
        ("2.2250738585072014e-308", 2.2250738585072014e-308), ("5e-324", .leastNonzeroMagnitude), ("1e-400", 0),
        ("0e99999", 0), ("-9223372036854775808", -9223372036854775808), ("100000000000000000000000e-23", 1),
    ])
    func parsesNumbers(text: String, expected: Double) throws {
        #expect(try parse(text) == .number(expected))
    }

    @Test func negativeZeroKeepsItsSign() throws {
        let value = try #require(try parse("-0").doubleValue)
        #expect(value == 0)
        #expect(value.sign == .minus)
        #expect(try #require(try parse("-0.0e5").doubleValue).sign == .minus)
        #expect(try #require(try parse("0").doubleValue).sign == .plus)
    }

    @Test func depthLimitIsExact() throws {
        let ok = String(repeating: "[", count: 512) + String(repeating: "]", count: 512)
        #expect(parseError(ok) == nil)
        let tooDeep = String(repeating: "[", count: 513) + String(repeating: "]", count: 513)
        let error = try #require(parseError(tooDeep))
        #expect(error.kind == .tooDeep)
        #expect(error.offset == 512)
        #expect(error.description == "containers nested deeper than 512 levels at byte 512")
        #expect(try JSONValue.parse(Array("[[1]]".utf8), maxDepth: 2) == [[1]])
        #expect(parseError(Array("[[[1]]]".utf8)) == nil)
        do {
            _ = try JSONValue.parse(Array("{\"a\":[{}]}".utf8), maxDepth: 2)
            Issue.record("expected a depth error")
        } catch {
            #expect(error == JSONError(.tooDeep, at: 6, "containers nested deeper than 2 levels"))
        }
    }

    @Test func duplicateKeysAreFoundInSmallAndLargeObjects() throws {
        let small = try #require(parseError(#"{"a":1,"b":2,"a":3}"#))
        #expect(small.description == #"duplicate member name "a" at byte 13"#)
        #expect(small.kind == .duplicateKey)

        // Past 16 members the parser switches to hashing; both the early and the late key count.
        let members = (0..<20).map { "\"k\($0)\":\($0)" }
        let large = "{" + members.joined(separator: ",") + ",\"k3\":0}"
        let error = try #require(parseError(large))
        #expect(error.kind == .duplicateKey)
        #expect(error.offset == large.utf8.count - 7)
        #expect(error.message == #"duplicate member name "k3""#)
        let late = "{" + members.joined(separator: ",") + ",\"k19\":0}"
        #expect(try #require(parseError(late)).message == #"duplicate member name "k19""#)
        #expect(try parse("{" + members.joined(separator: ",") + "}")["k19"] == 19)
    }

    @Test func acceptsNonContiguousCollectionsAndRawBuffers() throws {
        let bytes = Array(#"{"a":[1,"x"]}"#.utf8)
        #expect(try JSONValue.parse(bytes.lazy.map { $0 }) == ["a": [1, "x"]])
        let viaRaw = try bytes.withUnsafeBytes { buffer throws(JSONError) in try JSONValue.parse(buffer) }
        #expect(viaRaw == ["a": [1, "x"]])
        #expect(try JSONValue.parse(bytes[5...11]) == [1, "x"])
    }

    @Test func parsesLargeStrings() throws {
        let text = String(repeating: "0123456789abcdé", count: 70_000)
        let value = try JSONValue.parse(Array(("\"" + text + "\"").utf8))
        #expect(value == .string(text))
    }
}

struct MalformedCase: Sendable, CustomTestStringConvertible {
    let input: [UInt8]
    let kind: JSONError.Kind
    let offset: Int
    let description: String

    init(_ input: String, _ kind: JSONError.Kind, _ offset: Int, _ description: String) {
        self.init(Array(input.utf8), kind, offset, description)
    }

    init(_ input: [UInt8], _ kind: JSONError.Kind, _ offset: Int, _ description: String) {
        self.input = input
        self.kind = kind
        self.offset = offset
        self.description = description
    }

    var testDescription: String { String(decoding: input, as: UTF8.self).debugDescription }
}

let malformedCases: [MalformedCase] = [
    .init("", .unexpectedEnd, 0, "unexpected end of input at byte 0 (expected a value)"),
    .init("  \n", .unexpectedEnd, 3, "unexpected end of input at byte 3 (expected a value)"),
    .init("x", .unexpectedCharacter, 0, "unexpected character 'x' at byte 0 (expected a value)"),
    .init("{", .unexpectedEnd, 1, "unexpected end of input at byte 1 (expected a member name)"),
    .init(#"{"a""#, .unexpectedEnd, 4, "unexpected end of input at byte 4 (expected ':')"),
    .init(#"{"a":}"#, .unexpectedCharacter, 5, "unexpected character '}' at byte 5 (expected a value)"),
    .init(#"{"a":1,}"#, .unexpectedCharacter, 7, "unexpected character '}' at byte 7 (expected a member name)"),
    .init(#"{"a" 1}"#, .unexpectedCharacter, 5, "unexpected character '1' at byte 5 (expected ':')"),
    .init("{a:1}", .unexpectedCharacter, 1, "unexpected character 'a' at byte 1 (expected a member name)"),
    .init(#"{"a":1 "b":2}"#, .unexpectedCharacter, 7, #"unexpected character '"' at byte 7 (expected ',' or '}')"#),
    .init(#"{"a":1"#, .unexpectedEnd, 6, "unexpected end of input at byte 6 (expected ',' or '}')"),
    .init("[", .unexpectedEnd, 1, "unexpected end of input at byte 1 (expected a value)"),
    .init("[1", .unexpectedEnd, 2, "unexpected end of input at byte 2 (expected ',' or ']')"),
    .init("[1,]", .unexpectedCharacter, 3, "unexpected character ']' at byte 3 (expected a value)"),
    .init("[1 2]", .unexpectedCharacter, 3, "unexpected character '2' at byte 3 (expected ',' or ']')"),
    .init("[1,2]]", .trailingData, 5, "unexpected character ']' at byte 5 (expected end of input)"),
    .init("1 2", .trailingData, 2, "unexpected character '2' at byte 2 (expected end of input)"),
    .init("{} x", .trailingData, 3, "unexpected character 'x' at byte 3 (expected end of input)"),
    .init("01", .invalidNumber, 0, "leading zeros are not allowed in a number at byte 0"),
    .init("-01", .invalidNumber, 1, "leading zeros are not allowed in a number at byte 1"),
    .init("-", .unexpectedEnd, 1, "unexpected end of input in a number at byte 1 (expected a digit)"),
    .init("-a", .invalidNumber, 1, "unexpected character 'a' at byte 1 (expected a digit)"),
    .init("1.", .unexpectedEnd, 2, "unexpected end of input in a number at byte 2 (expected a digit)"),
    .init("1.e5", .invalidNumber, 2, "unexpected character 'e' at byte 2 (expected a digit)"),
    .init("1e", .unexpectedEnd, 2, "unexpected end of input in a number at byte 2 (expected a digit)"),
    .init("[1e+]", .invalidNumber, 4, "unexpected character ']' at byte 4 (expected a digit)"),
    .init(".5", .unexpectedCharacter, 0, "unexpected character '.' at byte 0 (expected a value)"),
    .init("+1", .unexpectedCharacter, 0, "unexpected character '+' at byte 0 (expected a value)"),
    .init("1e5.0", .trailingData, 3, "unexpected character '.' at byte 3 (expected end of input)"),
    .init("[0x10]", .unexpectedCharacter, 2, "unexpected character 'x' at byte 2 (expected ',' or ']')"),
    .init("1e400", .numberOutOfRange, 0, "number is too large for a 64-bit float at byte 0"),
    .init("[-1e309]", .numberOutOfRange, 1, "number is too large for a 64-bit float at byte 1"),
    .init("NaN", .unexpectedCharacter, 0, "unexpected character 'N' at byte 0 (expected a value)"),
    .init("-Infinity", .invalidNumber, 1, "unexpected character 'I' at byte 1 (expected a digit)"),
    .init("tru", .unexpectedEnd, 3, "unexpected end of input at byte 3 (expected 'true')"),
    .init("trUe", .unexpectedCharacter, 2, "unexpected character 'U' at byte 2 (expected 'true')"),
    .init("nul", .unexpectedEnd, 3, "unexpected end of input at byte 3 (expected 'null')"),
    .init("falsey", .trailingData, 5, "unexpected character 'y' at byte 5 (expected end of input)"),
    .init("'a'", .unexpectedCharacter, 0, "unexpected character ''' at byte 0 (expected a value)"),
    .init("/* c */ 1", .unexpectedCharacter, 0, "unexpected character '/' at byte 0 (expected a value)"),
    .init("\t\u{0B}1", .unexpectedCharacter, 1, "unexpected byte 0x0B at byte 1 (expected a value)"),
    .init("\u{FEFF}{}", .unexpectedCharacter, 0, "unexpected character '\u{FEFF}' at byte 0 (expected a value)"),
    .init("é", .unexpectedCharacter, 0, "unexpected character 'é' at byte 0 (expected a value)"),
    .init(#"["abc"#, .unexpectedEnd, 1, "unterminated string at byte 1"),
    .init("[\"a\nb\"]", .controlCharacter, 3, "control character 0x0A must be escaped in a string at byte 3"),
    .init("\"\u{1F}\"", .controlCharacter, 1, "control character 0x1F must be escaped in a string at byte 1"),
    .init(#""\x""#, .invalidEscape, 1, "invalid escape: backslash followed by character 'x' at byte 1"),
    .init(#""\"#, .unexpectedEnd, 2, "unexpected end of input in an escape sequence at byte 2"),
    .init(#""\u12G4""#, .invalidEscape, 1, #"invalid \u escape at byte 1 (expected four hex digits after \u)"#),
    .init(#""\u00""#, .invalidEscape, 1, #"invalid \u escape at byte 1 (expected four hex digits after \u)"#),
    .init(#""\uD800""#, .unpairedSurrogate, 1, #"unpaired surrogate \uD800 in a string at byte 1"#),
    .init(#""\uDC00\uD800""#, .unpairedSurrogate, 1, #"unpaired surrogate \uDC00 in a string at byte 1"#),
    .init(#""ab\uD800\u0041""#, .unpairedSurrogate, 3, #"unpaired surrogate \uD800 in a string at byte 3"#),
    .init(#""\uD800x""#, .unpairedSurrogate, 1, #"unpaired surrogate \uD800 in a string at byte 1"#),
    .init(#""\uD800\uZZZZ""#, .invalidEscape, 7, #"invalid \u escape at byte 7 (expected four hex digits after \u)"#),
    .init([0x22, 0xFF, 0x22], .invalidUTF8, 1, "invalid UTF-8 sequence starting with byte 0xFF at byte 1"),
    .init([0x22, 0xC0, 0x80, 0x22], .invalidUTF8, 1, "invalid UTF-8 sequence starting with byte 0xC0 at byte 1"),
    .init([0x22, 0xED, 0xA0, 0x80, 0x22], .invalidUTF8, 1,
          "invalid UTF-8 sequence starting with byte 0xED at byte 1"),
    .init([0x22, 0x61, 0xE2, 0x82, 0x22], .invalidUTF8, 2,
          "invalid UTF-8 sequence starting with byte 0xE2 at byte 2"),
    .init([0x22, 0xF4, 0x90, 0x80, 0x80, 0x22], .invalidUTF8, 1,
          "invalid UTF-8 sequence starting with byte 0xF4 at byte 1"),
    .init([0x22, 0x80, 0x22], .invalidUTF8, 1, "invalid UTF-8 sequence starting with byte 0x80 at byte 1"),
    .init([0x22, 0xE2, 0x82], .invalidUTF8, 1, "invalid UTF-8 sequence starting with byte 0xE2 at byte 1"),
    .init([0xFF], .invalidUTF8, 0, "invalid UTF-8 sequence starting with byte 0xFF at byte 0"),
    .init([0x5B, 0x31, 0x5D, 0xC3], .invalidUTF8, 3, "invalid UTF-8 sequence starting with byte 0xC3 at byte 3"),
    .init(Array(#"{"a":1,"a":2}"#.utf8), .duplicateKey, 7, #"duplicate member name "a" at byte 7"#),
]

@Suite struct MalformedJSONTests {
    @Test(arguments: malformedCases)
    func reportsKindOffsetAndMessage(_ testCase: MalformedCase) throws {
        let error = try #require(parseError(testCase.input))
        #expect(error.kind == testCase.kind)
        #expect(error.offset == testCase.offset)
        #expect(error.description == testCase.description)
    }

    @Test func tableIsLargeEnough() {
        #expect(malformedCases.count >= 25)
    }
}
