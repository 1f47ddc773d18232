import Testing
@testable import CapsuleProtocol

let workerMessages: [WorkerMessage] = [
    .ready(pid: 4242, python: "3.12.3"),
    .stream(id: "e1", name: .stdout, text: "hello 🌍\n"),
    .stream(id: "e1", name: .stderr, text: "warning: \"x\"\t\\\u{1B}[0m"),
    .streamData(id: "e1", name: .stdout, data: [0xff, 0xfe, 0x00, 0x0a]),
    .streamData(id: "e1", name: .stderr, data: []),
    .result(id: "e1", data: ["text/plain": "42", "text/html": "<b>42</b>"]),
    .result(id: "e1", data: [:]),
    .error(id: "e2", ename: "ZeroDivisionError", evalue: "division by zero",
           traceback: ["Traceback (most recent call last):\n", "  File \"<cell>\", line 1\n",
                       "ZeroDivisionError: division by zero\n"]),
    .inputRequest(id: "e3", prompt: "Name: ", password: false),
    .inputRequest(id: "e3", prompt: "", password: true),
    .done(id: "e1", status: .ok, duration: 0.0123, exitCode: nil),
    .done(id: "e2", status: .error, duration: 1.5, exitCode: 3),
    .done(id: "e3", status: .interrupted, duration: 0, exitCode: 0),
    .done(id: "e4", status: .ok, duration: 2, exitCode: -1),
    .completeness(id: "c5", status: .incomplete, blankLineCompletes: true),
    .completeness(id: "c6", status: .invalid, blankLineCompletes: false),
    .checkpointData(id: "k7", data: [0x80, 0x05, 0x00, 0xff], names: ["x", "np"], skipped: ["lock": "RLock cannot be pickled"], error: nil),
    .checkpointData(id: "k8", data: [], names: [], skipped: [:], error: "ValueError: too big"),
    .restored(id: "r9", names: ["x"], skipped: ["f": "its source did not run"], error: nil),
    .restored(id: "r9", names: [], skipped: [:], error: "KeyboardInterrupt: "),
    .preloaded(skipped: [:], duration: 0.25),
    .preloaded(skipped: ["numpy": "ModuleNotFoundError: No module named 'numpy'"], duration: 0),
]

let supervisorMessages: [SupervisorMessage] = [
    .execute(id: "e1", code: "print('hi')\nx = 1\nx", filename: "<cell 1>", argv: ["script.py", "--flag", "é"],
             result: true),
    .execute(id: "e2", code: "", filename: "main.py", argv: [], result: false),
    .executeScript(id: "e2", source: Array("\u{FEFF}print('é')\n".utf8) + [0xe9], filename: "lat.py", argv: ["lat.py"]),
    .inputReply(id: "e3", value: "Ada"),
    .inputReply(id: "e3", value: ""),
    .inputReply(id: "e3", value: nil),
    .complete(id: "c5", code: "if x:\n    y"),
    .checkpoint(id: "k7"),
    .restore(id: "r9", data: [0x80, 0x05, 0x00], replace: true),
    .preload(modules: ["pandas", "matplotlib.pyplot"]),
    .shutdown,
]

@Suite struct MessagesTests {
    @Test(arguments: workerMessages)
    func workerMessageRoundTrips(_ message: WorkerMessage) throws {
        let result = decodeAll(message.encoded)
        #expect(result.error == nil)
        #expect(result.messages.count == 1)
        #expect(try WorkerMessage(try #require(result.messages.first)) == message)
    }

    @Test(arguments: supervisorMessages)
    func supervisorMessageRoundTrips(_ message: SupervisorMessage) throws {
        let result = decodeAll(message.encoded)
        #expect(result.error == nil)
        #expect(result.messages.count == 1)
        #expect(try SupervisorMessage(try #require(result.messages.first)) == message)
    }

    @Test func typeMatchesTheWire() {
        for message in workerMessages { #expect(message.json["type"]?.stringValue == message.type) }
        for message in supervisorMessages { #expect(message.json["type"]?.stringValue == message.type) }
        #expect(workerMessages.map(\.type).uniqued() == ["ready", "stream", "result", "error", "input_request", "done", "completeness",
                                                          "checkpoint_data", "restored", "preloaded"])
    }

    @Test func unexpectedMessageReadsAsASentence() {
        let error = ProtocolError.unexpectedMessage("result", while: "no execution is running")
        #expect(error.kind == .unexpectedMessage(type: "result"))
        #expect(error.description == #"unexpected "result" message while no execution is running"#)
    }

    @Test func allMessagesThroughOneStream() throws {
        var bytes: [UInt8] = []
        for message in workerMessages { bytes += message.encoded }
        let result = decodeAll(bytes)
        #expect(result.error == nil)
        #expect(try result.messages.map { json throws(ProtocolError) in try WorkerMessage(json) } == workerMessages)
    }

    @Test func supervisorWireFormat() {
        #expect(text(SupervisorMessage.execute(id: "1", code: "x", filename: "<cell>", argv: ["a"], result: true)
                    .json.serialized())
                == #"{"type":"execute","id":"1","code":"x","filename":"<cell>","argv":["a"],"result":true}"#)
        #expect(text(SupervisorMessage.inputReply(id: "7", value: "y").json.serialized())
                == #"{"type":"input_reply","id":"7","value":"y"}"#)
        #expect(text(SupervisorMessage.inputReply(id: "7", value: nil).json.serialized())
                == #"{"type":"input_reply","id":"7","eof":true}"#)
        #expect(SupervisorMessage.shutdown.encoded == rawFrame(#"{"type":"shutdown"}"#))
        #expect(text(SupervisorMessage.executeScript(id: "1", source: Array("é\n".utf8), filename: "a.py", argv: []).json.serialized())
                == #"{"type":"execute","id":"1","source":"w6kK","filename":"a.py","argv":[],"result":false}"#)
    }

    @Test func workerWireFormat() {
        #expect(text(WorkerMessage.done(id: "1", status: .interrupted, duration: 0.5, exitCode: nil).json.serialized())
                == #"{"type":"done","id":"1","status":"interrupted","duration":0.5}"#)
        #expect(text(WorkerMessage.done(id: "1", status: .ok, duration: 2, exitCode: 0).json.serialized())
                == #"{"type":"done","id":"1","status":"ok","duration":2,"exit_code":0}"#)
        #expect(text(WorkerMessage.result(id: "1", data: ["text/plain": "1", "text/html": "<i>1</i>"]).json.serialized())
                == #"{"type":"result","id":"1","data":{"text/html":"<i>1</i>","text/plain":"1"}}"#)
        #expect(text(WorkerMessage.inputRequest(id: "1", prompt: "? ", password: true).json.serialized())
                == #"{"type":"input_request","id":"1","prompt":"? ","password":true}"#)
        #expect(text(WorkerMessage.streamData(id: "1", name: .stdout, data: [0xff, 0x41]).json.serialized())
                == #"{"type":"stream","id":"1","name":"stdout","data":"/0E="}"#)
    }

    /// What Python's `json.dumps` writes: spaces after separators, \u escapes, extra members.
    @Test func decodesWhatPythonWrites() throws {
        let json = try parse(#"""
            {"type": "stream", "id": "e9", "name": "stderr", "text": "caf\u00e9 \ud83d\ude00\n", "seq": 12}
            """#)
        #expect(try WorkerMessage(json) == .stream(id: "e9", name: .stderr, text: "café 😀\n"))
        #expect(try WorkerMessage(try parse(#"{"type": "done", "id": "1", "status": "ok", "duration": 1e-3, "exit_code": null}"#))
                == .done(id: "1", status: .ok, duration: 0.001, exitCode: nil))
        #expect(try WorkerMessage(try parse(#"{"type": "ready", "pid": 1.0, "python": "3.13.0", "extra": {"a": [1]}}"#))
                == .ready(pid: 1, python: "3.13.0"))
        #expect(try SupervisorMessage(try parse(#"{"type":"input_reply","id":"1","value":"v","eof":false}"#))
                == .inputReply(id: "1", value: "v"))
        #expect(try SupervisorMessage(try parse(#"{"type":"input_reply","id":"1","eof":true,"value":"ignored"}"#))
                == .inputReply(id: "1", value: nil))
    }
}

struct BadMessage: Sendable, CustomTestStringConvertible {
    let json: String
    let kind: ProtocolError.Kind
    let description: String
    var testDescription: String { json }
}

let badWorkerMessages: [BadMessage] = [
    .init(json: #"{"type":"display","id":"1"}"#, kind: .unknownType("display"),
          description: #"unknown worker message type "display""#),
    .init(json: #"{"type":"execute","id":"1"}"#, kind: .unknownType("execute"),
          description: #"unknown worker message type "execute""#),
    .init(json: #"{"type":"stream","id":"1","name":"stdout"}"#, kind: .invalidMember(type: "stream", member: "text"),
          description: #""stream" message has no "text" member"#),
    .init(json: #"{"type":"stream","id":"1","name":"stdout","data":"not base64!"}"#,
          kind: .invalidMember(type: "stream", member: "data"),
          description: #""stream" message member "data" must be base64 text, not other text"#),
    .init(json: #"{"type":"stream","id":"1","name":"stdout","data":"QQ==","text":"A"}"#,
          kind: .invalidMember(type: "stream", member: "data"),
          description: #""stream" message member "data" must be alone, not given with "text""#),
    .init(json: #"{"type":"stream","id":"1","name":"stdout","data":7}"#,
          kind: .invalidMember(type: "stream", member: "data"),
          description: #""stream" message member "data" must be a string, not a number"#),
    .init(json: #"{"type":"stream","id":1,"name":"stdout","text":""}"#,
          kind: .invalidMember(type: "stream", member: "id"),
          description: #""stream" message member "id" must be a string, not a number"#),
    .init(json: #"{"type":"stream","id":"1","name":"stdin","text":""}"#,
          kind: .invalidMember(type: "stream", member: "name"),
          description: #""stream" message member "name" must be one of "stdout", "stderr", not "stdin""#),
    .init(json: #"{"type":"ready","pid":1.5,"python":"3.12"}"#, kind: .invalidMember(type: "ready", member: "pid"),
          description: #""ready" message member "pid" must be an integer, not 1.5"#),
    .init(json: #"{"type":"ready","pid":"12","python":"3.12"}"#, kind: .invalidMember(type: "ready", member: "pid"),
          description: #""ready" message member "pid" must be an integer, not a string"#),
    .init(json: #"{"type":"ready","pid":12}"#, kind: .invalidMember(type: "ready", member: "python"),
          description: #""ready" message has no "python" member"#),
    .init(json: #"{"type":"error","id":"1","ename":"E","evalue":"v","traceback":["a",2]}"#,
          kind: .invalidMember(type: "error", member: "traceback"),
          description: #""error" message member "traceback" must be an array of strings, not an array whose element 1 is a number"#),
    .init(json: #"{"type":"error","id":"1","ename":"E","evalue":"v","traceback":"a"}"#,
          kind: .invalidMember(type: "error", member: "traceback"),
          description: #""error" message member "traceback" must be an array of strings, not a string"#),
    .init(json: #"{"type":"result","id":"1","data":{"text/plain":1}}"#,
          kind: .invalidMember(type: "result", member: "data"),
          description: #""result" message member "data" must be an object of strings, not an object whose member "text/plain" is a number"#),
    .init(json: #"{"type":"result","id":"1","data":[]}"#, kind: .invalidMember(type: "result", member: "data"),
          description: #""result" message member "data" must be an object of strings, not an array"#),
    .init(json: #"{"type":"input_request","id":"1","prompt":"p"}"#,
          kind: .invalidMember(type: "input_request", member: "password"),
          description: #""input_request" message has no "password" member"#),
    .init(json: #"{"type":"input_request","id":"1","prompt":"p","password":1}"#,
          kind: .invalidMember(type: "input_request", member: "password"),
          description: #""input_request" message member "password" must be a boolean, not a number"#),
    .init(json: #"{"type":"done","id":"1","status":"killed","duration":1}"#,
          kind: .invalidMember(type: "done", member: "status"),
          description: #""done" message member "status" must be one of "ok", "error", "interrupted", not "killed""#),
    .init(json: #"{"type":"done","id":"1","status":"ok","duration":"1"}"#,
          kind: .invalidMember(type: "done", member: "duration"),
          description: #""done" message member "duration" must be a number, not a string"#),
    .init(json: #"{"type":"done","id":"1","status":"ok","duration":1,"exit_code":"0"}"#,
          kind: .invalidMember(type: "done", member: "exit_code"),
          description: #""done" message member "exit_code" must be an integer, not a string"#),
    .init(json: #"{"type":"done","id":"1","status":"ok","duration":1,"exit_code":1e300}"#,
          kind: .invalidMember(type: "done", member: "exit_code"),
          description: #""done" message member "exit_code" must be an integer, not 1e+300"#),
    .init(json: #"{"type":"done","status":"ok","duration":1}"#, kind: .invalidMember(type: "done", member: "id"),
          description: #""done" message has no "id" member"#),
    .init(json: #"{"id":"1"}"#, kind: .missingType, description: #"message has no "type" member"#),
    .init(json: #"{"type":false}"#, kind: .missingType, description: #"message member "type" is a boolean, not a string"#),
    .init(json: #"["ready"]"#, kind: .notAnObject, description: "frame holds an array, not a JSON object"),
]

let badSupervisorMessages: [BadMessage] = [
    .init(json: #"{"type":"ready","pid":1,"python":"3"}"#, kind: .unknownType("ready"),
          description: #"unknown supervisor message type "ready""#),
    .init(json: #"{"type":"execute","id":"1","code":"x","filename":"f","result":true}"#,
          kind: .invalidMember(type: "execute", member: "argv"),
          description: #""execute" message has no "argv" member"#),
    .init(json: #"{"type":"execute","id":"1","code":"x","filename":"f","argv":[null],"result":true}"#,
          kind: .invalidMember(type: "execute", member: "argv"),
          description: #""execute" message member "argv" must be an array of strings, not an array whose element 0 is null"#),
    .init(json: #"{"type":"execute","id":"1","code":"x","filename":"f","argv":[],"result":"yes"}"#,
          kind: .invalidMember(type: "execute", member: "result"),
          description: #""execute" message member "result" must be a boolean, not a string"#),
    .init(json: #"{"type":"execute","id":"1","source":"QQ=","filename":"f","argv":[],"result":false}"#,
          kind: .invalidMember(type: "execute", member: "source"),
          description: #""execute" message member "source" must be base64 text, not other text"#),
    .init(json: #"{"type":"execute","id":"1","source":"QQ==","code":"A","filename":"f","argv":[],"result":false}"#,
          kind: .invalidMember(type: "execute", member: "source"),
          description: #""execute" message member "source" must be alone, not given with "code""#),
    .init(json: #"{"type":"input_reply","id":"1"}"#, kind: .invalidMember(type: "input_reply", member: "value"),
          description: #""input_reply" message has no "value" member"#),
    .init(json: #"{"type":"input_reply","id":"1","eof":"yes"}"#, kind: .invalidMember(type: "input_reply", member: "eof"),
          description: #""input_reply" message member "eof" must be a boolean, not a string"#),
    .init(json: #"{"type":"input_reply","value":"v"}"#, kind: .invalidMember(type: "input_reply", member: "id"),
          description: #""input_reply" message has no "id" member"#),
]

@Suite struct MessageErrorTests {
    @Test(arguments: badWorkerMessages)
    func workerMessageErrors(_ bad: BadMessage) throws {
        try expectError(bad) { json throws(ProtocolError) in try WorkerMessage(json) }
    }

    @Test(arguments: badSupervisorMessages)
    func supervisorMessageErrors(_ bad: BadMessage) throws {
        try expectError(bad) { json throws(ProtocolError) in try SupervisorMessage(json) }
    }

    private func expectError<Message>(
        _ bad: BadMessage, decode: (JSONValue) throws(ProtocolError) -> Message
    ) throws {
        let json = try parse(bad.json)
        do {
            let message = try decode(json)
            Issue.record("decoded \(message)")
        } catch {
            #expect(error.kind == bad.kind)
            #expect(error.description == bad.description)
        }
    }
}

private extension Array where Element: Hashable {
    func uniqued() -> [Element] {
        var seen: Set<Element> = []
        return filter { seen.insert($0).inserted }
    }
}
