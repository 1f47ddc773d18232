#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import CapsulePolicy

/// `PolicyLoader.load` on files written under /tmp/capsule-policy-tests-<pid>/.
@Suite(.serialized) struct FileLoadTests {
    private let levelList = "sandbox, restricted, standard, trusted, unrestricted"

    @Test func loadsAFileAndRemembersItsPath() throws {
        try withTemporaryDirectory("plain") { directory in
            let path = directory.write("mine.toml", "level = \"standard\"\n[limits]\nmemory_mb = 128\n")
            let policy = try PolicyLoader.load(path)
            #expect(policy.level == .standard)
            #expect(policy.limits.memoryMB == 128)
            #expect(policy.origin == path)
        }
    }

    @Test func errorsInAFileNameThePath() {
        withTemporaryDirectory("bad") { directory in
            let path = directory.write("bad.toml", "level = \"sandbox\"\n\n[limits]\nmemroy_mb = 1\n")
            #expect(loadError(path)?.description == "\(path):4: `limits.memroy_mb`: unknown key; did you mean `limits.memory_mb`?")
        }
    }

    @Test func emptyFileIsMissingItsLevel() {
        withTemporaryDirectory("empty") { directory in
            let path = directory.write("empty.toml", [])
            #expect(loadError(path)?.description
                == "\(path): `level`: missing; add a line such as level = \"sandbox\" (one of \(quotedLevelNames)), or extends = \"sandbox\"")
        }
        #expect(loadError("/dev/null")?.description
            == "/dev/null: `level`: missing; add a line such as level = \"sandbox\" (one of \(quotedLevelNames)), or extends = \"sandbox\"")
    }

    @Test func invalidUTF8IsNotText() {
        withTemporaryDirectory("utf8") { directory in
            let cases: [[UInt8]] = [
                Array("level = \"sandbox\"\n".utf8) + [0xFF, 0xFE],
                Array("level = \"sand".utf8) + [0xC3] + Array("box\"".utf8),  // truncated sequence
                Array("description = \"".utf8) + [0xED, 0xA0, 0x80] + Array("\"".utf8),  // encoded surrogate
                Array("level = \"".utf8) + [0xC0, 0xAF] + Array("\"".utf8),  // overlong "/"
                Array(0...255),
            ]
            for (index, bytes) in cases.enumerated() {
                let path = directory.write("bad\(index).toml", bytes)
                #expect(loadError(path)?.description == "\(path): the policy is not UTF-8 text")
            }
        }
    }

    @Test func controlBytesAreNotKeys() {
        withTemporaryDirectory("control") { directory in
            let path = directory.write("control.toml", Array(0x00...0x1F))
            // Line 1 is bytes 0x00...0x09; 0x0A ends it.
            #expect(loadError(path)?.description == "\(path):1: expected a key (column 1)")
            let after = directory.write("after.toml", Array("level = \"sandbox\"\n[limits]\n".utf8) + Array(0x00...0x1F))
            #expect(loadError(after)?.description == "\(after):3: expected a key (column 1)")
        }
    }

    @Test func tenMegabytesIsTooLarge() {
        withTemporaryDirectory("large") { directory in
            let line = Array("# padding padding padding padding padding padding padding padding padding padding\n".utf8)
            var bytes = Array("level = \"sandbox\"\n".utf8)
            while bytes.count < 10 << 20 { bytes += line }
            let path = directory.write("large.toml", bytes)
            #expect(loadError(path)?.description == "\(path): cannot read the policy: the file is larger than 1 MiB")
        }
    }

    @Test func oneMebibyteIsTheLimit() throws {
        try withTemporaryDirectory("limit") { directory throws in
            var bytes = Array("level = \"trusted\"\n#".utf8)
            bytes += [UInt8](repeating: UInt8(ascii: "x"), count: PolicyLoader.maxFileBytes - bytes.count)
            #expect(bytes.count == 1 << 20)
            let exact = directory.write("exact.toml", bytes)
            #expect(try PolicyLoader.load(exact).level == .trusted)
            let over = directory.write("over.toml", bytes + [UInt8(ascii: "x")])
            #expect(loadError(over)?.description == "\(over): cannot read the policy: the file is larger than 1 MiB")
        }
    }

    @Test func missingFileWithoutSlashOrSuffixListsTheLevels() {
        #expect(loadError("sandbx")?.description
            == "sandbx: cannot read the policy: No such file or directory; a level is one of \(levelList)")
        #expect(loadError("Sandbox")?.description
            == "Sandbox: cannot read the policy: No such file or directory; a level is one of \(levelList)")
        #expect(loadError("")?.description
            == ": cannot read the policy: No such file or directory; a level is one of \(levelList)")
    }

    @Test func missingFileWithSlashOrSuffixDoesNotListTheLevels() {
        #expect(loadError("no-such-policy.toml")?.description
            == "no-such-policy.toml: cannot read the policy: No such file or directory")
        #expect(loadError("/nonexistent/capsule/sandbox")?.description
            == "/nonexistent/capsule/sandbox: cannot read the policy: No such file or directory")
        #expect(loadError("./sandbox")?.description == "./sandbox: cannot read the policy: No such file or directory")
    }

    @Test func aDirectoryIsNotAPolicy() {
        withTemporaryDirectory("directory") { directory in
            #expect(loadError(directory.path)?.description == "\(directory.path): cannot read the policy: Is a directory")
            #expect(loadError(directory.path + "/")?.description == "\(directory.path)/: cannot read the policy: Is a directory")
        }
        #expect(loadError(builtInPoliciesDirectory)?.description
            == "\(builtInPoliciesDirectory): cannot read the policy: Is a directory")
    }

    @Test func aFileInsideAFileIsNotADirectory() {
        withTemporaryDirectory("notdir") { directory in
            let path = directory.write("plain.toml", "level = \"sandbox\"\n")
            #expect(loadError(path + "/x.toml")?.description == "\(path)/x.toml: cannot read the policy: Not a directory")
        }
    }

    @Test func aLevelNameWinsOverAFileOfThatName() throws {
        // `load("sandbox")` never touches the file system, whatever the working directory holds.
        let policy = try PolicyLoader.load("unrestricted")
        #expect(policy.origin == "unrestricted")
        #expect(policy.network == .host)
    }
}
