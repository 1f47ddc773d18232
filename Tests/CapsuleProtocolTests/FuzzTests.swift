import Testing
@testable import CapsuleProtocol

/// Random input must produce a value or a typed error, never a crash, hang or wrong round trip.
@Suite struct FuzzTests {
    /// Bytes that make random strings look like JSON often enough to reach deep parser states.
    private static let alphabet: [UInt8] = Array(#"{}[]:,"\ -+.0123456789eEtrufalsn"#.utf8)
        + [0x00, 0x0A, 0x1F, 0x7F, 0x80, 0xBF, 0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xED, 0xA0, 0xF0, 0x9F, 0xF4, 0xFF]
        + Array(#"\u\ud83d\ude00"#.utf8)

    private static func randomBytes(_ generator: inout SeededGenerator) -> [UInt8] {
        let count = Int.random(in: 0...64, using: &generator)
        return (0..<count).map { _ in
            Bool.random(using: &generator)
                ? alphabet.randomElement(using: &generator)!
                : UInt8.random(in: 0...255, using: &generator)
        }
    }

    @Test func randomBytesParseOrFailCleanly() throws {
        var generator = SeededGenerator(seed: 0xC0FFEE)
        var parsed = 0
        for _ in 0..<5000 {
            let bytes = Self.randomBytes(&generator)
            do {
                let value = try JSONValue.parse(bytes)
                parsed += 1
                #expect(try JSONValue.parse(value.serialized()) == value)
            } catch {
                #expect((0...bytes.count).contains(error.offset), "offset \(error.offset) for \(bytes)")
                #expect(!error.description.isEmpty)
            }
        }
        #expect(parsed > 0)  // the alphabet does produce some valid documents
    }

    @Test func mutatedFramesDecodeOrFailCleanly() {
        var generator = SeededGenerator(seed: 42)
        let frames = workerMessages.map(\.encoded) + supervisorMessages.map(\.encoded)
        var outcomes = (messages: 0, protocolErrors: 0)
        for _ in 0..<4000 {
            var bytes = frames.randomElement(using: &generator)! + frames.randomElement(using: &generator)!
            for _ in 0..<Int.random(in: 1...4, using: &generator) {
                let position = Int.random(in: 0..<bytes.count, using: &generator)
                switch Int.random(in: 0..<3, using: &generator) {
                case 0: bytes[position] = UInt8.random(in: 0...255, using: &generator)
                case 1: bytes.insert(Self.alphabet.randomElement(using: &generator)!, at: position)
                default: bytes.remove(at: position)
                }
            }
            var decoder = FrameDecoder(maxFrameBytes: 1 << 16)
            var offset = 0
            feeding: while offset < bytes.count {
                let chunk = bytes[offset..<min(bytes.count, offset + Int.random(in: 1...32, using: &generator))]
                offset += chunk.count
                decoder.append(chunk)
                do {
                    while let json = try decoder.next() {
                        outcomes.messages += 1
                        _ = try? WorkerMessage(json)
                        _ = try? SupervisorMessage(json)
                    }
                } catch {
                    outcomes.protocolErrors += 1
                    #expect(!error.description.isEmpty)
                    break feeding
                }
            }
        }
        #expect(outcomes.messages > 0)
        #expect(outcomes.protocolErrors > 0)
    }

    @Test func randomValuesRoundTrip() throws {
        var generator = SeededGenerator(seed: 7)
        for _ in 0..<2000 {
            let value = Self.randomValue(depth: 0, &generator)
            let bytes = value.serialized()
            let back = try JSONValue.parse(bytes)
            #expect(back == value, "\(text(bytes))")
            // Streaming it as a frame gives the same value.
            let framed = decodeAll(FrameEncoder.encode(["type": "v", "v": value]))
            #expect(framed.messages.first?["v"] == value)
        }
    }

    private static func randomValue(depth: Int, _ generator: inout SeededGenerator) -> JSONValue {
        switch Int.random(in: 0..<(depth > 4 ? 5 : 7), using: &generator) {
        case 0: return .null
        case 1: return .bool(Bool.random(using: &generator))
        case 2:
            switch Int.random(in: 0..<3, using: &generator) {
            case 0: return .number(Double(Int64.random(in: .min ... .max, using: &generator)))
            case 1: return .number(Double(Int.random(in: -1000...1000, using: &generator)))
            default: return .number(Double(bitPattern: UInt64.random(in: 0...UInt64.max, using: &generator)))
                .finiteOrZero
            }
        case 3, 4: return .string(randomString(&generator))
        case 5:
            return .array((0..<Int.random(in: 0...5, using: &generator)).map { _ in
                randomValue(depth: depth + 1, &generator)
            })
        default:
            var members: [(String, JSONValue)] = []
            for index in 0..<Int.random(in: 0...5, using: &generator) {
                members.append(("\(index)" + randomString(&generator), randomValue(depth: depth + 1, &generator)))
            }
            return .object(members)
        }
    }

    private static func randomString(_ generator: inout SeededGenerator) -> String {
        var scalars = String.UnicodeScalarView()
        for _ in 0..<Int.random(in: 0...20, using: &generator) {
            let value: UInt32 = switch Int.random(in: 0..<4, using: &generator) {
            case 0: UInt32.random(in: 0...0x7F, using: &generator)
            case 1: UInt32.random(in: 0x80...0xD7FF, using: &generator)
            case 2: UInt32.random(in: 0xE000...0xFFFF, using: &generator)
            default: UInt32.random(in: 0x10000...0x10FFFF, using: &generator)
            }
            scalars.append(Unicode.Scalar(value)!)
        }
        return String(scalars)
    }
}

private extension JSONValue {
    /// JSON cannot carry NaN or infinities, so the generator swaps them for 0.
    var finiteOrZero: JSONValue {
        if case .number(let value) = self, !value.isFinite { return .number(0) }
        return self
    }
}
