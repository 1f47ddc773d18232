// `HOST:DEST:rw` mounts: the code writes into a host tree as the tree's owner (idmapped when
// capsule runs as root), and nothing it leaves there can act on the host later: no set-user-ID
// or set-group-ID bits, no symbolic links, sockets or FIFOs, nothing executable from inside.
#if canImport(Glibc)
import Glibc
#endif
import CapsuleOS
import CapsulePolicy
import Testing

/// A host tree whose files belong to `owner` (uid and gid), but for those listed in `others`,
/// which stay root's.
private func ownedTree(_ files: [String: String], owner: UInt32, others: Set<String> = []) throws -> String {
    let tree = try hostTree(files)
    var paths = [tree]
    for name in files.keys where !others.contains(name) {
        var parts = name.split(separator: "/").dropLast()
        while !parts.isEmpty {
            paths.append(tree + "/" + parts.joined(separator: "/"))
            parts.removeLast()
        }
        paths.append(tree + "/" + name)
    }
    for path in Set(paths) { chown(path, owner, owner) }
    return tree
}

private func owner(_ path: String) -> UInt32? {
    var st = stat()
    return lstat(path, &st) == 0 ? st.st_uid : nil
}

/// Every entry under `root`, with its lstat mode, host-side.
private func modes(under root: String) -> [String: mode_t] {
    var found: [String: mode_t] = [:]
    func walk(_ dir: String) {
        for name in (try? OS.directoryEntries(dir)) ?? [] {
            let path = dir + "/" + name
            var st = stat()
            guard lstat(path, &st) == 0 else { continue }
            found[String(path.dropFirst(root.count + 1))] = st.st_mode
            if st.st_mode & S_IFMT == S_IFDIR { walk(path) }
        }
    }
    walk(root)
    return found
}

@Suite struct WritableMountTests {
    @Test func theCodeWritesIntoTheTreeAsItsOwnerAndCannotTouchOthersFiles() throws {
        guard getuid() == 0 else { try Test.cancel("SKIPPED: as root only: an ordinary user's mount is checked below") }
        let tree = try ownedTree(["mine.txt": "mine\n", "theirs.txt": "theirs\n"], owner: 1000, others: ["theirs.txt"])
        defer { try? OS.removeTree(tree) }
        try Host.writeFile(tree + "-job.py", """
            import os
            print('OWNERS', os.stat('/src').st_uid, os.stat('/src/mine.txt').st_uid, os.stat('/src/theirs.txt').st_uid)
            with open('/src/mine.txt', 'a') as f:
                f.write('and the sandbox\\n')
            os.makedirs('/src/build/out')
            with open('/src/build/out/r.txt', 'w') as f:
                f.write('result')
            os.rename('/src/build/out/r.txt', '/src/r.txt')
            print('THEIRS', open('/src/theirs.txt').read().strip())
            try:
                open('/src/theirs.txt', 'a')
            except OSError as e:
                print('THEIRS-WRITE', e.errno)
            """)
        chmod(tree + "-job.py", 0o644)
        defer { unlink(tree + "-job.py") }
        let run = try CLI.run(["run", "--policy", "standard", "--mount", "\(tree):/src:rw", tree + "-job.py"])
        #expect(run.status == 0 && run.stdout == "OWNERS 0 0 65534\nTHEIRS theirs\nTHEIRS-WRITE 13\n", "\(run)")
        #expect(try Host.readFile(tree + "/mine.txt") == "mine\nand the sandbox\n")
        #expect(try Host.readFile(tree + "/r.txt") == "result")
        #expect(try Host.readFile(tree + "/theirs.txt") == "theirs\n")
        for made in ["r.txt", "build", "build/out"] { #expect(owner(tree + "/" + made) == 1000, "\(made) belongs to the tree's owner") }

        // A root-owned tree is written as root; the code is still no more than its sandbox.
        let rootTree = try hostTree(["a.txt": "a\n"])
        defer { try? OS.removeTree(rootTree) }
        let asRoot = try CLI.run(["exec", "--policy", "standard", "--mount", "\(rootTree):/out:rw", "-c",
                                  "import os\nopen('/out/b.txt', 'w').write('b')\nprint(os.getuid(), os.stat('/out/b.txt').st_uid)"])
        #expect(asRoot.status == 0 && asRoot.stdout == "0 0\n", "\(asRoot)")
        #expect(owner(rootTree + "/b.txt") == 0)
    }

    @Test func anOrdinaryUserMountsItsOwnTreeWritable() throws {
        let setpriv = "/usr/bin/setpriv"
        guard getuid() == 0, access(setpriv, X_OK) == 0 else {
            try Test.cancel("SKIPPED: needs root and \(setpriv) to become an unprivileged user")
        }
        let tree = try ownedTree(["in.txt": "in\n"], owner: 65534)
        defer { try? OS.removeTree(tree) }
        let run = try CLI.run(["exec", "--policy", "standard", "--mount", "\(tree):/src:rw", "-c",
                               "open('/src/new.txt', 'w').write(open('/src/in.txt').read() + 'out')\nprint('WROTE')"],
                              via: [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"])
        if run.status != 0 && run.stderr.contains("Permission denied") && !run.stderr.contains("/src") {
            try Test.cancel("SKIPPED: the checkout is not readable by nobody here\n\(run)")
        }
        #expect(run.status == 0 && run.stdout == "WROTE\n", "\(run)")
        #expect(try Host.readFile(tree + "/new.txt") == "in\nout")
        #expect(owner(tree + "/new.txt") == 65534)
    }

    @Test func aWritableMountIsStillRefusedBelowStandard() throws {
        let tree = try hostTree(["job.py": "print('ran')\n"])
        defer { try? OS.removeTree(tree) }
        try Host.writeFile(tree + "/p.toml", "level = \"restricted\"\n[sandbox]\nmounts = [\"\(tree):/src:rw\"]\n")
        let run = try CLI.run(["run", "--policy", tree + "/p.toml", tree + "/job.py"])
        #expect(run.status != 0 && !run.stdout.contains("ran"), "\(run)")
        #expect(run.stderr.contains("p.toml:3: `sandbox.mounts (\(tree):/src:rw)`: needs level `standard` or higher; this policy is `restricted`"), "\(run)")
    }
}

@Suite("Escapes: a :rw mount leaves nothing on the host that acts later") struct WritableMountEscapeTests {
    @Test func noSetuidBitsLinksSocketsFifosOrProgramsReachTheHostTree() throws {
        let tree = try ownedTree(["in.txt": "in\n"], owner: getuid() == 0 ? 1000 : getuid())
        defer { try? OS.removeTree(tree) }
        var policy = PythonSubprocess.policy()
        policy.level = .standard
        policy.mounts = [Mount(host: tree, destination: "/src", writable: true)]
        let t = try Sandboxed.runFresh(PythonSubprocess.rawExecPrelude + #"""
            import socket
            def attempt(label, act):
                try:
                    act()
                    print(label, "done")
                except OSError as e:
                    print(label, "refused", e.errno)
            with open("/src/f.txt", "w") as f:
                f.write("x")
            attempt("CHMOD-SETUID", lambda: os.chmod("/src/f.txt", 0o4755))
            attempt("CHMOD-SETGID", lambda: os.chmod("/src/f.txt", 0o2755))
            attempt("FCHMOD-SETUID", lambda: os.fchmod(os.open("/src/f.txt", os.O_RDONLY), 0o4755))
            raw = _libc.syscall(268, -100, b"/src/f.txt", 0o4755)  # fchmodat, past Python
            print("RAW-FCHMODAT", raw, ctypes.get_errno())
            attempt("CREATE-SETUID", lambda: os.open("/src/s", os.O_CREAT | os.O_WRONLY, 0o4755))
            how = (ctypes.c_uint64 * 3)(os.O_CREAT | os.O_WRONLY, 0o4755, 0)
            print("OPENAT2", _libc.syscall(437, -100, b"/src/t", how, 24), ctypes.get_errno())
            attempt("SYMLINK", lambda: os.symlink("/etc/passwd", "/src/link"))
            attempt("FIFO", lambda: os.mkfifo("/src/fifo"))
            attempt("SOCKET", lambda: socket.socket(socket.AF_UNIX).bind("/src/sock"))
            attempt("HARDLINK-OUT", lambda: os.link("/src/f.txt", "/workspace/f"))
            print("EXEC-BINARY", raw_exec(executable_copy("/src/x"), "-c", "print('ESCAPED')"))
            with open("/src/job.sh", "w") as f:
                f.write("#!/usr/bin/python3\nprint('ESCAPED')\n")
            os.chmod("/src/job.sh", 0o755)
            print("EXEC-SCRIPT", raw_exec("/src/job.sh"))
            attempt("CHMOD-PLAIN", lambda: os.chmod("/src/f.txt", 0o600))
            """#, policy: policy)
        t.expectFinishedCleanly()
        for label in ["CHMOD-SETUID", "CHMOD-SETGID", "FCHMOD-SETUID", "CREATE-SETUID", "FIFO"] { t.expectLine("\(label) refused 1") }
        t.expectLine("RAW-FCHMODAT -1 1")
        t.expectLine("OPENAT2 -1 1")
        for label in ["SYMLINK", "SOCKET"] { t.expectLine("\(label) refused 13") }
        t.expectLine("HARDLINK-OUT refused 18")
        t.expectLine("EXEC-BINARY ('refused', 13)")
        t.expectLine("EXEC-SCRIPT ('refused', 13)")
        t.expectLine("CHMOD-PLAIN done")
        #expect(!t.stdout.contains("ESCAPED"), "\(t)")
        let left = modes(under: tree)
        #expect(left["f.txt"].map { $0 & 0o7777 } == 0o600, "\(left)")
        #expect(left.filter { $0.value & (S_ISUID | S_ISGID) != 0 }.isEmpty, "set-id bits reached the host: \(left)")
        #expect(left.filter { $0.value & S_IFMT != S_IFREG && $0.value & S_IFMT != S_IFDIR }.isEmpty, "links, sockets or FIFOs reached the host: \(left)")
    }
}
