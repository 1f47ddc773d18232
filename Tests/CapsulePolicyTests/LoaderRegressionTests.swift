import Testing
@testable import CapsulePolicy

/// Regressions: each of these was a real loader bug, found while writing the tests and fixed.
/// The comments say what the loader used to do.
@Suite struct LoaderRegressionTests {
    // `TOMLDocument` splits the text with `text.split(separator: "\n")`, on Characters. In Swift,
    // "\r\n" is ONE Character (a grapheme cluster) that is not equal to "\n", so a CRLF file is
    // never split: the whole file is line 1.

    @Test func crlfLineEndingsAreAccepted() throws {
        // Was: "p.toml:1: unexpected text after the value of `level` (column 18)".
        let policy = try PolicyLoader.parse("level = \"trusted\"\r\n[limits]\r\nmemory_mb = 256\r\ntimeout_s = 0.5\r\n", file: "p.toml")
        #expect(policy.level == .trusted)
        #expect(policy.limits.memoryMB == 256)
        #expect(policy.limits.timeoutSeconds == 0.5)
    }

    @Test func crlfLimitsAreNotSilentlyDropped() throws {
        // It used to be that the comment after the level swallows the rest of the file: the policy loads with
        // the DEFAULT limits (memory 512 MiB, 100 fds), silently ignoring the ones written.
        let policy = try PolicyLoader.parse("level = \"sandbox\" # tight\r\n[limits]\r\nmemory_mb = 64\r\nmax_fds = 16\r\n", file: "p.toml")
        #expect(policy.limits.memoryMB == 64)
        #expect(policy.limits.maxFDs == 16)
    }

    @Test func crlfErrorsHaveTheRightLine() {
        // Was: "p.toml:1: unexpected text after the value of `level` (column 18)".
        #expect(parseError("level = \"sandbox\"\r\n[limits]\r\nmax_fds = 1\r\n")?.description
            == "p.toml:3: `limits.max_fds`: must be a whole number from 16 to 65536, not 1")
    }

    @Test(arguments: Level.allCases)
    func builtInPoliciesWithCRLFLoadTheSame(level: Level) throws {
        // Was: "p.toml: `level`: missing; ..." (the first line is a comment, so all of it is).
        let text = try #require(readText("\(builtInPoliciesDirectory)/\(level.rawValue).toml"))
        let crlf = text.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
            .map { String(decoding: $0, as: UTF8.self) }.joined(separator: "\r\n")
        #expect(try PolicyLoader.parse(crlf, file: "p.toml") == PolicyLoader.parse(text, file: "p.toml"))
    }

    // A value position holding nothing but a comment, `,` or `]` reaches `scalar()` with empty text.

    @Test func missingValueBeforeAComment() {
        // Was: "p.toml:1: `` is not a value; strings need quotes, like \"\"".
        #expect(parseError("level = # forgot it")?.description == "p.toml:1: expected a value (column 9)")
    }

    @Test func missingValueInAnArray() {
        // Was: "p.toml:2: `` is not a value; strings need quotes, like \"\"".
        #expect(parseError("level = \"sandbox\"\ntags = [1,,2]")?.description == "p.toml:2: expected a value (column 11)")
    }

    // `scalar()` calls anything made of Character.isNumber, "-" and "+" "too large" — which takes
    // in fullwidth and Arabic-Indic digits, fractions like ½, a lone "-", and dates.

    @Test(arguments: ["５１２", "½", "٣٢", "-", "+", "1-2", "2024-01-01"])
    func nonNumbersAreNotCalledTooLarge(_ text: String) {
        // Was: "p.toml:3: the number \(text) is too large".
        #expect(parseError(limitsHeader + "memory_mb = \(text)")?.description
            == "p.toml:3: `\(text)` is not a value; strings need quotes, like \"\(text)\"")
    }

    @Test func aFloatOutOfRangeIsTooLarge() {
        // Was: "p.toml:3: `1e400` is not a value; strings need quotes, like \"1e400\"".
        #expect(parseError(limitsHeader + "timeout_s = 1e400")?.description == "p.toml:3: the number 1e400 is too large")
    }

    @Test(arguments: ["++512", "+-512", "+-5_12"])
    func doubleSignsAreRejected(_ text: String) {
        // It used to be that `++512` is 512 and `+-512` is -512: a leading "+" is dropped and the rest goes to Int().
        #expect(parseError(limitsHeader + "memory_mb = \(text)")?.description
            == "p.toml:3: `\(text)` is not a value; strings need quotes, like \"\(text)\"")
    }

    @Test(arguments: [("0xE", "hexadecimal numbers such as 0xE are not used in policies; write 14"),
                      ("0x1E0", "hexadecimal numbers such as 0x1E0 are not used in policies; write 480"),
                      ("0x1.8p1", "`0x1.8p1` is not a value; strings need quotes, like \"0x1.8p1\""),
                      ("1.", "`1.` is not a value; strings need quotes, like \"1.\"")])
    func strtodSyntaxIsNotANumber(_ text: String, _ message: String) {
        // It used to be that Double(String) accepts hexadecimal floats when they contain "e"/"E"/"." and a
        // trailing ".": `timeout_s = 0xE` was 14 seconds, while `timeout_s = 0xA` was refused.
        #expect(parseError(limitsHeader + "timeout_s = \(text)")?.description == "p.toml:3: \(message)")
        #expect(parseError(limitsHeader + "timeout_s = 0xA")?.description
            == "p.toml:3: hexadecimal numbers such as 0xA are not used in policies; write 10")
    }

    @Test func unicodeEscapeDigitsAreHexOnly() {
        // It used to be that `\u+041` is "A": UInt32("+041", radix: 16) accepts the sign.
        #expect(parseError("level = \"sandbox\"\ndescription = \"\\u+041\"")?.description
            == "p.toml:2: invalid \\u escape (column 18)")
    }

    @Test func literalStringsRefuseControlCharacters() {
        // It used to be that basic strings refuse them but 'literal' strings take any byte.
        #expect(parseError("level = \"sandbox\"\ndescription = 'a\u{01}b'")?.description
            == "p.toml:2: control character in a string (column 17)")
        #expect(parseError("level = 'sand\u{1B}[0mbox'")?.description == "p.toml:1: control character in a string (column 14)")
    }

    @Test func multiLineLiteralStringsGetTheMultiLineMessage() {
        // Was: "p.toml:2: unexpected text after the value of `description` (column 17)"
        // (`''` is read as an empty string and the third quote is left over).
        #expect(parseError("level = \"sandbox\"\ndescription = '''a'''")?.description
            == "p.toml:2: multi-line strings are not supported in policies (column 15)")
    }

    @Test func invalidEscapeOfANonASCIICharacterShowsTheCharacter() throws {
        // Was: "invalid escape `\Ã`": the first UTF-8 byte of "é" is shown as a Latin-1 character.
        let message = try #require(parseError("level = \"sandbox\"\ndescription = \"\\é\"")?.description)
        #expect(message.hasPrefix("p.toml:2: invalid escape `\\é` (column "))
    }

    @Test func aQuotedKeyWithADotIsOneKey() {
        // In TOML `"limits.memory_mb" = 64` is ONE root key named "limits.memory_mb". Today the
        // dotted path is joined into a string, so it sets limits.memory_mb = 64.
        #expect(throws: PolicyError.self) {
            try PolicyLoader.parse("level = \"sandbox\"\n\"limits.memory_mb\" = 64", file: "p.toml")
        }
    }
}
