// Our SHA-256 and HMAC-SHA256, both the portable loop and the SHA extensions, against the
// standards' vectors and against swift-crypto.
import Crypto
import Testing
import CapsuleOS

private func sha256(_ message: [UInt8], portable: Bool) -> String {
    var hasher = CapsuleOS.SHA256(portable: portable)
    hasher.update(message)
    return hasher.finalize().hexText
}

@Suite struct DigestTests {
    @Test func theSHAExtensionsAreUsedWhereTheCPUHasThem() {
        #expect(CapsuleOS.SHA256().accelerated == CapsuleOS.SHA256.acceleratable)
        #expect(!CapsuleOS.SHA256(portable: true).accelerated)
    }

    @Test(arguments: [false, true]) func theStandardsExamples(portable: Bool) {
        // FIPS 180-4's examples (NIST CSRC example values).
        for (message, digest) in [
            ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
            ("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
            ("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
             "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"),
        ] {
            #expect(sha256(Array(message.utf8), portable: portable) == digest, "\(message)")
        }
    }

    @Test(arguments: [false, true]) func aMillionAsFedInPieces(portable: Bool) {
        var hasher = CapsuleOS.SHA256(portable: portable)
        for _ in 0..<1000 { hasher.update([UInt8](repeating: UInt8(ascii: "a"), count: 1000)) }
        #expect(hasher.finalize().hexText == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    @Test(arguments: [false, true]) func rfc4231(portable: Bool) {
        func code(_ key: [UInt8], _ message: String) -> String {
            HMACSHA256(key: key, portable: portable).code(Array(message.utf8)).hexText
        }
        #expect(code([UInt8](repeating: 0x0b, count: 20), "Hi There")
            == "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        #expect(code(Array("Jefe".utf8), "what do ya want for nothing?")
            == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        // Test case 6: a key longer than a block is hashed first.
        #expect(code([UInt8](repeating: 0xaa, count: 131), "Test Using Larger Than Block-Size Key - Hash Key First")
            == "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
    }

    @Test(arguments: [false, true]) func everyLengthAroundTheBlockAgreesWithSwiftCrypto(portable: Bool) {
        var generator = SystemRandomNumberGenerator()
        for length in Array(0...200) + [1000, 4095, 4096, 65537] {
            let message = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let key = (0..<(length % 100 + 1)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            #expect(sha256(message, portable: portable) == Array(Crypto.SHA256.hash(data: message)).hexText, "length \(length)")
            #expect(HMACSHA256(key: key, portable: portable).code(message)
                == Array(HMAC<Crypto.SHA256>.authenticationCode(for: message, using: SymmetricKey(data: key))), "length \(length)")
            // Split anywhere, a slice among the pieces: the same digest.
            var pieces = CapsuleOS.SHA256(portable: portable)
            let cut = length / 3
            pieces.update(message[..<cut])
            pieces.update(message[cut...])
            #expect(pieces.finalize().hexText == sha256(message, portable: portable), "cut at \(cut) of \(length)")
        }
    }
}
