// capsule run --output-dir and --report: artifacts out of /workspace/out, and what a run used.
#if canImport(Glibc)
import Glibc
#endif
import CapsuleOS
import CapsuleProtocol
import CapsuleRuntime
import Testing

@Suite("capsule run --output-dir and --report") struct RunReportTests {
    private func report(_ path: String) throws -> JSONValue { try JSONValue.parse(Array(try Host.readFile(path).utf8)) }

    @Test func outputDirReturnsFilesAndLeavesOutLinksAndSpecialFiles() throws {
        let scratch = try Host.temporaryDirectory()
        defer { Host.removeTree(scratch) }
        try Host.writeFile(scratch + "/job.py", #"""
            import os, socket
            os.makedirs("/workspace/out/sub/deeper")
            open("/workspace/out/result.txt", "w").write("hello\n")
            open("/workspace/out/sub/deeper/data.bin", "wb").write(bytes(range(256)) * 4)
            os.symlink("/etc/passwd", "/workspace/out/link")
            os.symlink("/workspace/out/result.txt", "/workspace/out/sub/inner-link")
            socket.socket(socket.AF_UNIX).bind("/workspace/out/sock")
            open("/workspace/out/forged\nexit 0", "w").write("z")
            open("/workspace/elsewhere.txt", "w").write("not copied")
            print("wrote")
            """#)
        // An existing file of the same name is replaced; a link planted in the destination is not followed.
        try OS.makeDirectories(scratch + "/out")
        try Host.writeFile(scratch + "/out/result.txt", "old")
        symlink(scratch + "/victim", scratch + "/out/link")
        let run = try CLI.run(["run", "--output-dir", scratch + "/out", "--report", scratch + "/r.json", scratch + "/job.py"])
        #expect(run.status == 0 && run.stdout == "wrote\n", "\(run)")
        #expect(try Host.readFile(scratch + "/out/result.txt") == "hello\n")
        let pattern: [UInt8] = (0..<1024).map { UInt8($0 % 256) }
        #expect(try OS.readFile(scratch + "/out/sub/deeper/data.bin", limit: 1 << 20) == pattern)
        #expect(!OS.fileExists(scratch + "/out/sock") && !OS.fileExists(scratch + "/out/sub/inner-link") && !OS.fileExists(scratch + "/victim"))
        #expect(!OS.fileExists(scratch + "/out/elsewhere.txt"))
        #expect(try Host.readFile(scratch + "/out/forged\nexit 0") == "z")
        for note in ["/workspace/out/link: a symbolic link", "/workspace/out/sub/inner-link: a symbolic link", "/workspace/out/sock: a socket"] {
            #expect(run.stderr.contains("capsule: note: --output-dir left out \(note)\n"), "\(run)")
        }
        let outputs = try report(scratch + "/r.json")["outputs"]
        #expect(outputs?["directory"]?.stringValue == scratch + "/out" && outputs?["files"]?.intValue == 3
                && outputs?["bytes"]?.intValue == 6 + 1024 + 1 && outputs?["refused"]?.arrayValue?.count == 3, "\(outputs.map { "\($0)" } ?? "none")")
    }

    @Test func theReplCopiesOutputsWhenItEnds() throws {
        let scratch = try Host.temporaryDirectory()
        defer { Host.removeTree(scratch) }
        try Host.writeFile(scratch + "/lines.py", "import os\nos.symlink('/etc', '/workspace/out/l')\nn = open('/workspace/out/r.txt', 'w').write('R')\n")
        let run = try CLI.run(["repl", "--output-dir", scratch + "/out"], stdin: scratch + "/lines.py")
        #expect(run.status == 0, "\(run)")
        #expect(try Host.readFile(scratch + "/out/r.txt") == "R" && !OS.fileExists(scratch + "/out/l"))
        #expect(run.stderr.contains("capsule: note: --output-dir left out /workspace/out/l: a symbolic link"), "\(run)")
    }

    @Test func theCopyStopsAtTheCapAndLeavesNoHalfFile() throws {
        let scratch = try Host.temporaryDirectory()
        defer { Host.removeTree(scratch) }
        try Host.writeFile(scratch + "/p.toml", "level = \"sandbox\"\n[limits]\nworkspace_mb = 4\nmax_file_bytes = 3000000\n")
        try Host.writeFile(scratch + "/job.py", #"""
            open("/workspace/out/a.bin", "wb").write(b"a" * 3_000_000)
            os = __import__("os")
            os.link("/workspace/out/a.bin", "/workspace/out/b.bin")  # a hard link is copied in full
            """#)
        let run = try CLI.run(["run", "--policy", scratch + "/p.toml", "--output-dir", scratch + "/out", scratch + "/job.py"])
        #expect(run.status == 0, "\(run)")
        let copied = ["a.bin", "b.bin"].filter { OS.fileExists(scratch + "/out/" + $0) }
        #expect(copied.count == 1 && (try? OS.readFile(scratch + "/out/" + copied[0], limit: 4 << 20).count) == 3_000_000, "\(copied)")
        #expect(run.stderr.contains("over the size cap"), "\(run)")
    }

    @Test func aBadOutputDirIsRefusedBeforeAnythingRuns() throws {
        let scratch = try Host.temporaryDirectory()
        defer { Host.removeTree(scratch) }
        try Host.writeFile(scratch + "/file", "x")
        symlink(scratch, scratch + "/link")
        for (directory, message) in [(scratch + "/file", "capsule: --output-dir \(scratch)/file exists and is not a directory"),
                                     (scratch + "/link", "capsule: --output-dir \(scratch)/link is a symbolic link (to \(scratch)); name the directory itself"),
                                     (scratch + "/no/such", "capsule: cannot make the --output-dir \(scratch)/no/such: its parent directory does not exist")] {
            let run = try CLI.run(["exec", "--output-dir", directory, "-c", "print('ran')"])
            #expect(run.status == ExitStatus.capsuleError && run.stdout.isEmpty && run.stderr == message + "\n", "\(run)")
        }
    }

    @Test func theReportSaysWhatTheRunUsedAndWhereTheAuditChainEnds() throws {
        let scratch = try Host.temporaryDirectory()
        defer { Host.removeTree(scratch) }
        try Host.writeFile(scratch + "/job.py", #"""
            import capsule, sys
            x = bytearray(40 << 20)  # 40 MiB held at once
            n = 0
            for i in range(3_000_000):
                n += i
            print("out" * 10)
            sys.stderr.write("err\n")
            try:
                capsule.ask("may I?")
            except capsule.CapabilityDenied:
                pass
            """#)
        let run = try CLI.run(["run", "--audit", scratch + "/audit.jsonl", "--report", scratch + "/r.json", scratch + "/job.py"],
                              stdin: "/dev/null")
        #expect(run.status == 0, "\(run)")
        let json = try report(scratch + "/r.json")
        #expect(json["exit_code"]?.intValue == 0 && (json["duration_s"]?.doubleValue ?? 0) > 0, "\(json)")
        #expect((json["cpu_s"]?.doubleValue ?? 0) > 0.05, "\(json)")
        #expect((json["peak_rss_bytes"]?.intValue ?? 0) > 40 << 20 && (json["peak_memory_bytes"]?.intValue ?? 0) > 0, "\(json)")
        #expect(json["output_bytes"]?["stdout"]?.intValue == 31 && json["output_bytes"]?["stderr"]?.intValue == 4, "\(json)")
        #expect(json["capabilities"]?["calls"]?.intValue == 1 && json["capabilities"]?["denied"]?.intValue == 1
                && json["capabilities"]?["by_capability"]?["input"]?["denied"]?.intValue == 1, "\(json)")
        // The head is the SHA-256 of the log's last line, which the next line's prev would carry.
        let lines = try Host.readFile(scratch + "/audit.jsonl").split(separator: "\n")
        let last = try JSONValue.parse(Array(lines.last!.utf8))
        #expect(json["audit"]?["path"]?.stringValue == scratch + "/audit.jsonl", "\(json)")
        #expect(json["audit"]?["seq"]?.intValue == last["seq"]?.intValue && last["kind"]?.stringValue == "session.end", "\(json)")
        #expect(json["audit"]?["head"]?.stringValue == SHA256.hash(Array(lines.last!.utf8)).hexText, "\(json)")
    }
}
