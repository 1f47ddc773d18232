import Testing
@testable import CapsulePolicy

/// Random and mutated policies must load or fail with a PolicyError that points into the text.
@Suite struct PolicyFuzzTests {
    private static let alphabet: [UInt8] = Array("[]{}=\"'\\#.,_-+ \teE0123456789xulnfa".utf8)
        + Array("level sandbox limits memory_mb timeout_s true \"\"\" \\u00 \n\n\r\n".utf8)
        + [0x00, 0x01, 0x7F, 0xC3, 0xA9, 0xE2, 0x80, 0x9C, 0xEF, 0xBB, 0xBF]

    /// Checks one outcome; returns whether the text was accepted.
    private static func check(_ text: String) -> Bool {
        let lines = text.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).count
        do {
            let policy = try PolicyLoader.parse(text, file: "f.toml")
            #expect(policy.origin == "f.toml")
            return true
        } catch {
            #expect(error.file == "f.toml")
            if let line = error.line { #expect((1...lines).contains(line), "line \(line) of \(lines) for \(Array(text.utf8))") }
            #expect(error.description.hasPrefix("f.toml"))
            return false
        }
    }

    @Test func randomTextParsesOrFailsCleanly() {
        var generator = SeededGenerator(seed: 0xCAB5_0001)
        for _ in 0..<3000 {
            let count = Int.random(in: 0...80, using: &generator)
            let bytes = (0..<count).map { _ in
                Bool.random(using: &generator) || Bool.random(using: &generator)
                    ? Self.alphabet.randomElement(using: &generator)!
                    : UInt8.random(in: 0...255, using: &generator)
            }
            _ = Self.check(String(decoding: Array("level = \"sandbox\"\n".utf8) + bytes, as: UTF8.self))
            _ = Self.check(String(decoding: bytes, as: UTF8.self))
        }
    }

    @Test func mutatedBuiltInPoliciesParseOrFailCleanly() throws {
        let texts = try Level.allCases.map { level in
            try #require(readText("\(builtInPoliciesDirectory)/\(level.rawValue).toml"))
        }
        var generator = SeededGenerator(seed: 7)
        var accepted = 0
        for _ in 0..<1500 {
            var bytes = Array(texts.randomElement(using: &generator)!.utf8)
            for _ in 0..<Int.random(in: 1...3, using: &generator) {
                let position = Int.random(in: 0..<bytes.count, using: &generator)
                switch Int.random(in: 0..<3, using: &generator) {
                case 0: bytes[position] = Self.alphabet.randomElement(using: &generator)!
                case 1: bytes.insert(Self.alphabet.randomElement(using: &generator)!, at: position)
                default: bytes.remove(at: position)
                }
            }
            if Self.check(String(decoding: bytes, as: UTF8.self)) { accepted += 1 }
        }
        #expect(accepted > 0)  // most mutations land in comments and descriptions
        #expect(accepted < 1500)
    }

    @Test func longInputsAreRefusedWithoutRecursionTrouble() {
        // A 100 000-character unknown key gets no suggestion (no key is within a third of its length).
        let longKey = String(repeating: "k", count: 100_000)
        #expect(parseError("level = \"sandbox\"\n\(longKey) = 1")?.description == "p.toml:2: `\(longKey)`: unknown key")
        // 10 000 lines of comments and 1000-deep arrays are refused or skipped without recursion trouble.
        let comments = String(repeating: "# comment\n", count: 10_000)
        #expect(parseError(comments + "level = 1")?.description == "p.toml:10001: `level`: must be a string, not 1")
        #expect(parseError("x = " + String(repeating: "[", count: 100_000))?.description
            == "p.toml:1: values are nested too deeply (column 37)")
    }
}
