import Testing
@testable import CapsuleProtocol

@Suite struct FrameEncoderTests {
    @Test func writesBigEndianLengthThenPayload() {
        let frame = FrameEncoder.encode(["type": "shutdown"])
        #expect(frame == [0, 0, 0, 19] + Array(#"{"type":"shutdown"}"#.utf8))
    }

    @Test func lengthUsesAllFourBytes() {
        let text = String(repeating: "x", count: 0x01_02_03 - 19)  // 19 bytes of JSON around it
        let frame = FrameEncoder.encode(["type": "s", "t": .string(text)])
        #expect(Array(frame[0..<4]) == [0x00, 0x01, 0x02, 0x03])
        #expect(frame.count == 4 + 0x01_02_03)
    }

    @Test func encodeIntoAppendsSeveralFrames() {
        var out: [UInt8] = []
        FrameEncoder.encode(["type": "a"], into: &out)
        FrameEncoder.encode(["type": "b"], into: &out)
        #expect(out == rawFrame(#"{"type":"a"}"#) + rawFrame(#"{"type":"b"}"#))
    }
}

@Suite struct FrameDecoderTests {
    let messages: [JSONValue] = [
        ["type": "ready", "pid": 7, "python": "3.12.3"],
        ["type": "stream", "id": "1", "name": "stdout", "text": "héllo\n"],
        ["type": "done", "id": "1", "status": "ok", "duration": 0.25],
    ]

    var stream: [UInt8] { messages.flatMap(FrameEncoder.encode) }

    @Test func decodesByteByByte() throws {
        var decoder = FrameDecoder()
        var decoded: [JSONValue] = []
        var frameEnds: [Int] = []
        for (position, byte) in stream.enumerated() {
            decoder.append([byte])
            while let message = try decoder.next() {
                decoded.append(message)
                frameEnds.append(position + 1)
            }
        }
        #expect(decoded == messages)
        let sizes = messages.map { FrameEncoder.encode($0).count }
        #expect(frameEnds == [sizes[0], sizes[0] + sizes[1], sizes[0] + sizes[1] + sizes[2]])
        #expect(decoder.bufferedByteCount == 0)
    }

    @Test func decodesSeveralFramesFromOneAppend() throws {
        var decoder = FrameDecoder()
        stream.withUnsafeBytes { decoder.append($0) }
        #expect(try decoder.next() == messages[0])
        #expect(try decoder.next() == messages[1])
        #expect(try decoder.next() == messages[2])
        #expect(try decoder.next() == nil)
        #expect(decoder.bufferedByteCount == 0)
    }

    @Test func decodesAtEverySplitPoint() throws {
        let bytes = stream
        for split in 0...bytes.count {
            var decoder = FrameDecoder()
            var decoded: [JSONValue] = []
            decoder.append(bytes[..<split])
            while let message = try decoder.next() { decoded.append(message) }
            decoder.append(bytes[split...])
            while let message = try decoder.next() { decoded.append(message) }
            #expect(decoded == messages, "split at \(split)")
        }
    }

    @Test func dropsConsumedBytes() throws {
        let frame = FrameEncoder.encode(["type": "stream", "id": "1", "name": "stdout", "text": "0123456789"])
        let bytes = Array(repeating: frame, count: 1000).flatMap { $0 }
        var decoder = FrameDecoder()
        var count = 0
        var largestStorage = 0
        var offset = 0
        while offset < bytes.count {
            let chunk = bytes[offset..<min(offset + 7, bytes.count)]
            offset += chunk.count
            decoder.append(chunk)
            largestStorage = max(largestStorage, decoder.storedByteCount)
            while try decoder.next() != nil { count += 1 }
        }
        #expect(count == 1000)
        #expect(largestStorage <= frame.count + 7)
        #expect(decoder.storedByteCount == 0)
    }

    @Test func zeroLengthIsAnError() {
        let result = decodeAll(rawFrame(#"{"type":"a"}"#) + [0, 0, 0, 0] + rawFrame(#"{"type":"b"}"#))
        #expect(result.messages == [["type": "a"]])
        #expect(result.error?.kind == .emptyFrame)
        #expect(result.error?.description == "frame has length 0; every frame must hold a JSON object")
    }

    @Test func oversizedLengthFailsOnTheHeaderAlone() throws {
        var decoder = FrameDecoder()
        decoder.append([0x03, 0x20, 0x00])
        #expect(try decoder.next() == nil)
        decoder.append([0x00])  // 0x03200000 = 52428800; no payload byte has arrived
        do {
            _ = try decoder.next()
            Issue.record("expected frameTooLarge")
        } catch {
            #expect(error.kind == .frameTooLarge(length: 52_428_800, limit: 16_777_216))
            #expect(error.description == "frame of 52428800 bytes exceeds the 16777216-byte limit")
        }
        #expect(decoder.bufferedByteCount == 0)
    }

    @Test func limitIsInclusive() {
        let payload = Array(#"{"type":"x"}"#.utf8)  // 12 bytes
        #expect(decodeAll(rawFrame(payload), maxFrameBytes: 12).messages == [["type": "x"]])
        let error = decodeAll(rawFrame(payload), maxFrameBytes: 11).error
        #expect(error?.kind == .frameTooLarge(length: 12, limit: 11))
        #expect(error?.description == "frame of 12 bytes exceeds the 11-byte limit")
        // The largest length the header can carry.
        #expect(decodeAll([0xFF, 0xFF, 0xFF, 0xFF]).error?.kind
                == .frameTooLarge(length: 4_294_967_295, limit: 16_777_216))
    }

    @Test func errorsAreStickyAndStopBuffering() throws {
        var decoder = FrameDecoder()
        decoder.append(rawFrame("[1]") + rawFrame(#"{"type":"after"}"#))
        #expect(throws: ProtocolError.self) { try decoder.next() }
        #expect(decoder.bufferedByteCount == 0)
        decoder.append(rawFrame(#"{"type":"later"}"#))
        #expect(decoder.bufferedByteCount == 0)
        do {
            _ = try decoder.next()
            Issue.record("expected the first error again")
        } catch {
            #expect(error.kind == .notAnObject)
        }
    }

    @Test func invalidUTF8() {
        let error = decodeAll(rawFrame([0x7B, 0x22, 0x74, 0x79, 0x70, 0x65, 0x22, 0x3A, 0x22, 0xFF, 0x22, 0x7D])).error
        #expect(error?.kind == .invalidUTF8(offset: 9))
        #expect(error?.description == "frame is not valid UTF-8: invalid UTF-8 sequence starting with byte 0xFF at byte 9")
    }

    @Test func invalidJSON() {
        let error = decodeAll(rawFrame(#"{"type":x}"#)).error
        #expect(error?.kind == .invalidJSON(JSONError(.unexpectedCharacter, at: 8, "unexpected character 'x'",
                                                       expected: "a value")))
        #expect(error?.description == "frame is not valid JSON: unexpected character 'x' at byte 8 (expected a value)")
        #expect(decodeAll(rawFrame(#"{"type":"a"} {}"#)).error?.description
                == "frame is not valid JSON: unexpected character '{' at byte 13 (expected end of input)")
    }

    @Test(arguments: [
        ("[1]", "frame holds an array, not a JSON object"),
        (#""type""#, "frame holds a string, not a JSON object"),
        ("42", "frame holds a number, not a JSON object"),
        ("null", "frame holds null, not a JSON object"),
    ])
    func nonObject(payload: String, description: String) {
        let error = decodeAll(rawFrame(payload)).error
        #expect(error?.kind == .notAnObject)
        #expect(error?.description == description)
    }

    @Test(arguments: [
        (#"{"id":"1"}"#, #"message has no "type" member"#),
        (#"{"type":3}"#, #"message member "type" is a number, not a string"#),
        (#"{"type":null}"#, #"message member "type" is null, not a string"#),
        (#"{"Type":"ready"}"#, #"message has no "type" member"#),
    ])
    func missingType(payload: String, description: String) {
        let error = decodeAll(rawFrame(payload)).error
        #expect(error?.kind == .missingType)
        #expect(error?.description == description)
    }
}
