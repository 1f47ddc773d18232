import Testing
@testable import CapsuleProtocol

@Suite struct JSONSerializerTests {
    @Test func writesCompactJSONInMemberOrder() {
        let value: JSONValue = ["z": [1, -2, 1.5, true, false, nil], "a": "x", "m": [:], "e": []]
        #expect(text(value.serialized()) == #"{"z":[1,-2,1.5,true,false,null],"a":"x","m":{},"e":[]}"#)
        #expect(value.description == #"{"z":[1,-2,1.5,true,false,null],"a":"x","m":{},"e":[]}"#)
    }

    @Test func escapesOnlyWhatJSONRequires() {
        let value = JSONValue.string("\"\\\n\r\t\u{08}\u{0C}\u{01}\u{1F}\u{7F}/é😀\u{0}")
        #expect(text(value.serialized()) == #""\"\\\n\r\t\b\f\u0001\u001f"# + "\u{7F}/é😀" + #"\u0000""#)
    }

    @Test(arguments: [
        (0.0, "0"), (-0.0, "-0"), (1, "1"), (-1, "-1"), (123, "123"), (1e18, "1000000000000000000"),
        (-9223372036854775808, "-9223372036854775808"), (9007199254740992, "9007199254740992"),
        (9223372036854775808, "9.223372036854776e+18"), (1e300, "1e+300"), (0.1, "0.1"), (-2.5, "-2.5"),
        (1e-7, "1e-07"), (.leastNonzeroMagnitude, "5e-324"), (.infinity, "null"), (-.infinity, "null"), (.nan, "null"),
    ])
    func writesNumbers(value: Double, expected: String) {
        #expect(text(JSONValue.number(value).serialized()) == expected)
    }

    @Test func numbersSurviveARoundTripExactly() throws {
        for number in [0.1, 1.0 / 3, -1e-300, 1.7976931348623157e308, .leastNonzeroMagnitude, 2.2250738585072014e-308,
                       123456.789, -0.0, 9007199254740991, 1e21, 1e22, 1e23, 4.35, 0.3] {
            let back = try JSONValue.parse(JSONValue.number(number).serialized()).doubleValue
            #expect(back == number)
            #expect(back?.sign == number.sign)
        }
    }

    @Test func escapingAgreesWithAReferenceAtEveryPosition() throws {
        // A special byte at each position of strings around the eight-byte fast path.
        for length in 0..<40 {
            for position in 0..<max(length, 1) {
                for special: Character in ["\"", "\\", "\n", "\u{01}", "é"] {
                    var characters = Array(repeating: Character("a"), count: length)
                    if length > 0 { characters[position] = special }
                    let string = String(characters)
                    let encoded = JSONValue.string(string).serialized()
                    #expect(text(encoded) == referenceEscape(string))
                    #expect(try JSONValue.parse(encoded) == .string(string))
                }
            }
        }
    }

    @Test func valuesRoundTrip() throws {
        let values: [JSONValue] = [
            nil, true, false, 0, -7, 3.25, "", "日本語 🎉 \u{10FFFF}", [], [:],
            ["type": "stream", "id": "1", "text": "line 1\nline 2\t\"quoted\" \\ back"],
            [[[["deep"]]], ["k": [1, [2, [3]]]]],
            ["big": 1e18, "neg": -123456789012, "frac": 0.5, "tiny": 1e-300],
        ]
        for value in values {
            #expect(try JSONValue.parse(value.serialized()) == value)
        }
    }

    @Test func serializeIntoAppends() {
        var out = Array("prefix:".utf8)
        JSONValue.array([1, "a"]).serialize(into: &out)
        #expect(text(out) == #"prefix:[1,"a"]"#)
    }
}

@Suite struct JSONValueTests {
    @Test func objectEqualityIgnoresMemberOrder() {
        let ab: JSONValue = ["a": 1, "b": [2]]
        #expect(ab == ["b": [2], "a": 1])
        #expect(ab != ["a": 1])
        #expect(ab != ["a": 1, "b": [3]])
        #expect(ab != ["a": 1, "c": [2]])
        #expect(ab != [["a", 1], ["b", [2]]])
        #expect(JSONValue.number(1) != .string("1"))
        #expect(JSONValue.null != .bool(false))
    }

    @Test func accessors() {
        let value: JSONValue = ["s": "x", "i": 42, "f": 1.5, "b": true, "n": nil, "a": [1], "o": ["k": "v"]]
        #expect(value["s"]?.stringValue == "x")
        #expect(value["i"]?.intValue == 42)
        #expect(value["i"]?.doubleValue == 42)
        #expect(value["f"]?.intValue == nil)
        #expect(value["f"]?.doubleValue == 1.5)
        #expect(value["b"]?.boolValue == true)
        #expect(value["n"]?.isNull == true)
        #expect(value["a"]?.arrayValue == [1])
        #expect(value["o"]?.objectValue?.first?.0 == "k")
        #expect(value["o"]?["k"] == "v")
        #expect(value["missing"] == nil)
        #expect(value["s"]?.intValue == nil)
        #expect(JSONValue.number(1e300).intValue == nil)
        #expect(JSONValue.array([1])["s"] == nil)
        #expect(JSONValue.string("x").objectValue == nil)
    }
}

/// A plain byte-at-a-time escaper to check the fast one against.
private func referenceEscape(_ string: String) -> String {
    var out = "\""
    for scalar in string.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case "\u{08}": out += "\\b"
        case "\u{0C}": out += "\\f"
        case _ where scalar.value < 0x20:
            let hex = String(scalar.value, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}
