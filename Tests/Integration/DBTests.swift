// The db capability end to end: code in the sandbox runs SQL on a real SQLite file on the host
// through the broker and capsule-db. A read-only database stays byte for byte what it was.
#if canImport(Glibc)
import Glibc
#endif
import Testing
import CapsuleOS
import CapsulePolicy
import CapsuleRuntime

@Suite(.serialized) struct DBTests {
    /// A database with table t(id, name, data) of ten rows, made by the host's own python3.
    func database() throws -> (directory: String, path: String) {
        let directory = try Host.temporaryDirectory()
        let path = "\(directory)/app.sqlite"
        let status = Host.spawnAndWait("/usr/bin/python3", ["-c", """
            import sqlite3; c = sqlite3.connect('\(path)')
            c.execute('create table t(id integer, name text, data blob)')
            c.executemany('insert into t values (?, ?, ?)', [(i, f'n{i}', bytes([i])) for i in range(10)]); c.commit()
            """])
        try #require(status == 0)
        return (directory, path)
    }

    func policy(_ path: String, level: String = "standard", extra: String = "") throws -> Policy {
        try PolicyLoader.parse("""
            level = "\(level)"
            [capabilities.db]
            databases = { app = "\(path)" }
            \(extra)
            """, file: "db.toml")
    }

    @Test func readOnlyQueriesAndEveryWriteRefused() throws {
        let (directory, path) = try database()
        defer { _ = Host.spawnAndWait("/bin/rm", ["-rf", directory]) }
        let before = try OS.readFile(path, limit: 1 << 20)
        let transcript = try Sandboxed.runFresh("""
            from capsule import db, CapabilityDenied
            print(db.query("app", "select id, name, data from t where id < ? order by id", [2]))
            print(db.query("app", "pragma table_info(t)")[0]["name"])
            for sql in ["insert into t values (99, 'x', null)", "drop table t", "update t set name = 'y'",
                        "attach database '\(directory)/other.sqlite' as o", "pragma writable_schema = 1",
                        "pragma journal_mode = delete", "select load_extension('/usr/lib/x.so')", "create table u(x)"]:
                try:
                    db.query("app", sql)
                    print("RAN", sql)
                except CapabilityDenied as e:
                    print("denied")
            for call in [lambda: db.execute("app", "delete from t"), lambda: db.query("other", "select 1")]:
                try:
                    call()
                except CapabilityDenied as e:
                    print(e)
            try:
                db.query("app", "select * from missing")
            except ValueError as e:
                print(e)
            """, policy: policy(path))
        #expect(transcript.lines == [
            "[{'id': 0, 'name': 'n0', 'data': b'\\x00'}, {'id': 1, 'name': 'n1', 'data': b'\\x01'}]",
            "id",
        ] + Array(repeating: "denied", count: 8) + [
            "db.execute needs a policy of level trusted or above; this policy (db.toml) is level standard",
            "there is no database `other` in [capabilities.db] databases (app)",
            "db `app`: no such table: missing",
        ], "\(transcript)")
        #expect(try OS.readFile(path, limit: 1 << 20) == before, "the database is unchanged")
        #expect(!OS.fileExists("\(directory)/other.sqlite"), "ATTACH created nothing")
    }

    @Test func writesNeedWriteTrueAndMaxRowsHolds() throws {
        let (directory, path) = try database()
        defer { _ = Host.spawnAndWait("/bin/rm", ["-rf", directory]) }
        let transcript = try Sandboxed.runFresh("""
            from capsule import db, CapabilityDenied
            print(db.execute("app", "insert into t values (?, ?, ?)", (10, "ten", b"\\x0a")))
            print(db.execute("app", "delete from t where id >= ?", [8]))
            try:
                db.query("app", "select * from t")
            except CapabilityDenied as e:
                print(e)
            print(len(db.query("app", "select * from t limit 5")))
            try:
                db.execute("app", "attach database ':memory:' as m")
            except CapabilityDenied as e:
                print("denied")
            """, policy: policy(path, level: "trusted", extra: "write = true\nmax_rows = 5"))
        #expect(transcript.lines == ["1", "3", "the query returns more than the 5 rows [capabilities.db] max_rows allows", "5", "denied"],
                "\(transcript)")
    }
}
