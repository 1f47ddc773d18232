// What must keep working inside the sandbox, so the escape suite is not passing against a sandbox
// that is simply broken.
#if canImport(Glibc)
import Glibc
#endif
import Testing
import CapsuleRuntime

@Suite("Sanity: ordinary code works") struct SanityTests {
    let shared = SharedSession.misc

    @Test func threads() throws {
        let t = try shared.run(#"""
            import threading
            results = []
            lock = threading.Lock()
            def work(n):
                with lock:
                    results.append(n * n)
            threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
            for thread in threads: thread.start()
            for thread in threads: thread.join()
            print("THREADS", sum(results))
            """#)
        t.expectLine("THREADS 140")
        t.expectFinishedCleanly()
    }

    @Test func forkAndWait() throws {
        let t = try shared.run(#"""
            import os
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.write(w, b"from child")
                os._exit(5)
            os.close(w)
            status = os.waitpid(pid, 0)[1]
            print("CHILD", os.read(r, 100).decode(), os.waitstatus_to_exitcode(status))
            """#)
        t.expectLine("CHILD from child 5")
        t.expectFinishedCleanly()
    }

    @Test func multiprocessingPool() throws {
        let t = try shared.run(#"""
            import multiprocessing
            with multiprocessing.get_context("fork").Pool(2) as pool:
                print("POOL", pool.map(abs, [-1, -2, -3]))
            """#)
        t.expectLine("POOL [1, 2, 3]")
        t.expectFinishedCleanly()
    }

    @Test func stdlibImports() throws {
        let t = try shared.run(#"""
            import sqlite3, ssl, ctypes, decimal, json, hashlib, zlib, lzma, bz2, asyncio, re, datetime, random
            print("IMPORTS", hashlib.sha256(b"capsule").hexdigest()[:8], zlib.crc32(b"x"), json.dumps([decimal.Decimal("1.5").is_finite()]))
            print("COMPRESS", lzma.decompress(lzma.compress(b"ok")).decode(), bz2.decompress(bz2.compress(b"ok")).decode())
            print("SSL", ssl.OPENSSL_VERSION.split()[0])
            """#)
        t.expectLine("IMPORTS 881df12b 2363233923 [true]")
        t.expectLine("COMPRESS ok ok")
        t.expectLine("SSL OpenSSL")
        t.expectFinishedCleanly()
    }

    @Test func sqliteInWorkspace() throws {
        let t = try shared.run(#"""
            import sqlite3, os
            if os.path.exists("/workspace/test.db"):
                os.unlink("/workspace/test.db")
            db = sqlite3.connect("/workspace/test.db")
            db.execute("create table t (x)")
            db.executemany("insert into t values (?)", [(i,) for i in range(10)])
            db.commit()
            print("SQLITE", db.execute("select sum(x) from t").fetchone()[0])
            db.close()
            """#)
        t.expectLine("SQLITE 45")
        t.expectFinishedCleanly()
    }

    @Test func sleepAndTime() throws {
        let t = try shared.run(#"""
            import time
            start = time.monotonic()
            time.sleep(0.1)
            print("SLEPT", 0.09 <= time.monotonic() - start < 2)
            """#)
        t.expectLine("SLEPT True")
        t.expectFinishedCleanly()
    }

    @Test func asyncioAndRandomness() throws {
        let t = try shared.run(#"""
            import asyncio, os, secrets
            async def main():
                await asyncio.sleep(0.01)
                return 41 + 1
            print("ASYNC", asyncio.run(main()))
            print("RANDOM", len(os.urandom(16)), len(secrets.token_hex(8)))
            """#)
        t.expectLine("ASYNC 42")
        t.expectLine("RANDOM 16 16")
        t.expectFinishedCleanly()
    }

    @Test func namespacePersistsAndErrorsAreReported() throws {
        let session = try Sandboxed.start()
        defer { session.shutdown() }
        _ = Sandboxed.run("kept = 'value'", in: session)
        Sandboxed.run("print('KEPT', kept)", in: session).expectLine("KEPT value")
        let failing = Sandboxed.run("1 / 0", in: session)
        #expect(failing.errors == ["ZeroDivisionError: division by zero"], "\(failing)")
        if case .finished(status: .error, exitCode: nil, duration: _, errorName: "ZeroDivisionError") = failing.outcome {
        } else {
            Issue.record("unexpected outcome \(failing.outcome)")
        }
        let exiting = Sandboxed.run("import sys; sys.exit(3)", in: session)
        if case .finished(status: .error, exitCode: 3, duration: _, errorName: nil) = exiting.outcome {
        } else {
            Issue.record("unexpected outcome \(exiting.outcome)")
        }
    }
}
