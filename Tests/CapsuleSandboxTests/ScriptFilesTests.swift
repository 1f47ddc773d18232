// What of a script's directory the sandbox shows: its own modules and packages, nothing else.
#if canImport(Glibc)
import Glibc
#endif
import CapsuleOS
import Testing
@testable import CapsuleSandbox

/// A fresh directory outside the socket directories (/var/lib), with a script and its neighbours.
private func project(_ files: [String: String], dirs: [String] = []) throws -> String {
    try OS.makeDirectories("/var/lib/capsule-tests")
    var template = Array("/var/lib/capsule-tests/project-XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else { throw SystemError("mkdtemp", errno: errno) }
    let root = String(cString: made)
    for dir in dirs { try OS.makeDirectories(root + "/" + dir) }
    for (name, text) in files { try OS.writeFile(root + "/" + name, Array(text.utf8)) }
    return root
}

@Suite struct ScriptFilesTests {
    @Test func theScriptItsModulesAndPackagesAreShownAndNothingElse() throws {
        let root = try project(["job.py": "", "helper.py": "", "pkg/__init__.py": "", "data/readme.py": "",
                                ".env": "SECRET=1", "data.csv": "a,b", ".hidden.py": ""], dirs: ["pkg", "data"])
        defer { try? OS.removeTree(root) }
        #expect(symlink("/etc/passwd", root + "/linked.py") == 0) // hostile: a module that is a link out
        #expect(symlink(root + "/pkg", root + "/alias") == 0)
        let plan = ScriptFiles.plan(script: "job.py", workingDirectory: root, home: "/root")
        #expect(plan.path == root + "/job.py")
        #expect(plan.files == [root + "/job.py", root + "/helper.py", root + "/pkg"], "\(plan.files)")
        #expect(plan.note == nil)
    }

    @Test func aRelativePathIsMadeAbsoluteAsCPythonMakesFile() throws {
        let root = try project(["job.py": ""], dirs: ["sub"])
        defer { try? OS.removeTree(root) }
        #expect(ScriptFiles.plan(script: "../job.py", workingDirectory: root + "/sub", home: nil).path == root + "/job.py")
        #expect(ScriptFiles.plan(script: "./job.py", workingDirectory: root, home: nil).files == [root + "/job.py"])
    }

    @Test func homeDirectoriesTheRootAndLinkedDirectoriesShowNothingAndSayWhy() throws {
        let root = try project(["job.py": "", "helper.py": "", "b.py": "", "c.py": "", "d.py": ""])
        defer { try? OS.removeTree(root) }
        let asHome = ScriptFiles.plan(script: root + "/job.py", home: root)
        #expect(asHome.files.isEmpty)
        #expect(asHome.note == "the modules beside \(root)/job.py (b.py, c.py, d.py, …) are not visible inside, since \(root) is a home directory; "
                + "`import` of them fails. Move the script and its modules into a directory of their own, or grant the directory (readonly_paths, at restricted)",
                "\(asHome.note ?? "")")
        let link = root + "-link"
        #expect(symlink(root, link) == 0)
        defer { unlink(link) }
        let linked = ScriptFiles.plan(script: link + "/job.py", home: nil)
        #expect(linked.files.isEmpty && linked.note?.contains("has a symbolic link in its path") == true, "\(linked)")
        // Alone in its directory, a script needs no note.
        let lone = try project(["job.py": ""])
        defer { try? OS.removeTree(lone) }
        #expect(ScriptFiles.plan(script: lone + "/job.py", home: lone) == ScriptFiles.Plan(path: lone + "/job.py", files: [], note: nil))
        #expect(ScriptFiles.plan(script: "/job.py", home: nil).files.isEmpty)
        #expect(ScriptFiles.plan(script: "/home/someone/job.py", home: nil).files.isEmpty)
    }

    @Test func inASocketDirectoryOnlyFilesAreShown() throws {
        var template = Array("/tmp/capsule-script-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw SystemError("mkdtemp", errno: errno) }
        let root = String(cString: made)
        defer { try? OS.removeTree(root) }
        try OS.makeDirectories(root + "/pkg")
        for name in ["job.py", "helper.py", "pkg/__init__.py"] { try OS.writeFile(root + "/" + name, []) }
        let plan = ScriptFiles.plan(script: root + "/job.py", home: nil)
        #expect(plan.files == [root + "/job.py", root + "/helper.py"])
        #expect(plan.note?.contains("the packages beside \(root)/job.py are not visible inside, since \(root) is where hosts keep unix sockets") == true)
    }

    @Test func atMostALimitOfNeighboursIsShown() throws {
        var files = ["job.py": ""]
        for index in 0..<(ScriptFiles.limit + 5) { files["m\(1000 + index).py"] = "" }
        let root = try project(files)
        defer { try? OS.removeTree(root) }
        let plan = ScriptFiles.plan(script: root + "/job.py", home: nil)
        #expect(plan.files.count == ScriptFiles.limit + 1)
        #expect(plan.note == "only the first \(ScriptFiles.limit) of the \(ScriptFiles.limit + 5) modules and packages beside \(root)/job.py are visible inside")
    }
}
