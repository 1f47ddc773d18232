import Testing
@testable import CapsulePolicy

/// The TOML subset itself: inline tables and arrays parse, even though no policy key takes them yet.
@Suite struct TOMLDocumentTests {
    private func value(_ text: String) throws -> TOMLDocument.Value {
        let document = try TOMLDocument(parsing: "x = \(text)", file: "t.toml")
        try #require(document.entries.count == 1)
        return document.entries[0].value
    }

    @Test func scalars() throws {
        #expect(try value("\"s\"") == .string("s"))
        #expect(try value("'s'") == .string("s"))
        #expect(try value("42") == .integer(42))
        #expect(try value("-42") == .integer(-42))
        #expect(try value("+42") == .integer(42))
        #expect(try value("1_000") == .integer(1000))
        #expect(try value("0.5") == .float(0.5))
        #expect(try value("-2.5e3") == .float(-2500))
        #expect(try value("true") == .bool(true))
        #expect(try value("false") == .bool(false))
    }

    @Test func stringEscapes() throws {
        #expect(try value(#""a\"b\\c\nd\te\rf""#) == .string("a\"b\\c\nd\te\rf"))
        #expect(try value(#""\u00e9\u20AC\U0001F600""#) == .string("é€😀"))
        #expect(try value(#""\u0000""#) == .string("\u{0}"))
        #expect(try value(#"'C:\no\escapes\here'"#) == .string(#"C:\no\escapes\here"#))
        #expect(try value("\"tab\tinside\"") == .string("tab\tinside"))
        #expect(try value("\"# not a comment\"") == .string("# not a comment"))
        // No '' escape in literal strings: the second string is text after the value.
        #expect(throws: PolicyError(file: "t.toml", line: 1, "unexpected text after the value of `x` (column 9)")) {
            try value("'it''s'")
        }
    }

    @Test func arrays() throws {
        #expect(try value("[]") == .array([]))
        #expect(try value("[ ]") == .array([]))
        #expect(try value("[1, 2, 3]") == .array([.integer(1), .integer(2), .integer(3)]))
        #expect(try value("[1,2,]") == .array([.integer(1), .integer(2)]))
        #expect(try value("[\"a\", 'b', true, 1.5]") == .array([.string("a"), .string("b"), .bool(true), .float(1.5)]))
        #expect(try value("[[1], [[2]], []]") == .array([.array([.integer(1)]), .array([.array([.integer(2)])]), .array([])]))
        #expect(try value("[ 1 ,\t2 ] # comment") == .array([.integer(1), .integer(2)]))
    }

    @Test func inlineTables() throws {
        #expect(try value("{}") == .table([]))
        #expect(try value("{ a = 1, b = \"x\" }") == .table([("a", .integer(1)), ("b", .string("x"))]))
        #expect(try value("{a=1}") == .table([("a", .integer(1))]))
        #expect(try value("{ a.b = 1 }") == .table([("a.b", .integer(1))]))
        #expect(try value("{ \"quoted key\" = [1, { c = false }] }")
            == .table([("\"quoted key\"", .array([.integer(1), .table([("c", .bool(false))])]))]))
        // A quoted key that is also a bare key loses its quotes: it names the same key.
        #expect(try value("{ \"a\" = 1 }") == .table([("a", .integer(1))]))
        // Member order matters to equality.
        #expect(try value("{ a = 1, b = 2 }") != .table([("b", .integer(2)), ("a", .integer(1))]))
    }

    @Test func nestingUpToTheLimit() throws {
        let depth = 32  // values at depths 0...31 are allowed
        let nested = String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
        var expected = TOMLDocument.Value.array([])
        for _ in 1..<depth { expected = .array([expected]) }
        #expect(try value(nested) == expected)
        #expect(throws: PolicyError(file: "t.toml", line: 1, "values are nested too deeply (column 37)")) {
            try value("[" + nested + "]")
        }
    }

    @Test func entriesKeepTheirPathsAndLines() throws {
        let document = try TOMLDocument(parsing: """
            a = 1
            # comment

            [t]
            b.c = "x"
            [u.v]
            "d e" = true
            """, file: "t.toml")
        // A quoted key that is not a bare key keeps its quotes, so it cannot pose as a path.
        #expect(document.entries.map(\.path) == ["a", "t.b.c", "u.v.\"d e\""])
        #expect(document.entries.map(\.line) == [1, 5, 7])
        #expect(document.entries.map(\.value) == [.integer(1), .string("x"), .bool(true)])
        #expect(document.tables.map(\.path) == ["t", "u.v"])
        #expect(document.tables.map(\.line) == [4, 6])
    }

    @Test func valuesRenderForMessages() {
        #expect(TOMLDocument.Value.string("a").render == "\"a\"")
        #expect(TOMLDocument.Value.integer(-3).render == "-3")
        #expect(TOMLDocument.Value.float(1e9).render == "1000000000.0")
        #expect(TOMLDocument.Value.float(0.01).render == "0.01")
        #expect(TOMLDocument.Value.bool(true).render == "true")
        #expect(TOMLDocument.Value.array([]).render == "an array")
        #expect(TOMLDocument.Value.table([]).render == "a table")
        #expect(TOMLDocument.Value.float(1).typeName == "a number")
        #expect(TOMLDocument.Value.integer(1).typeName == "an integer")
    }
}
