import CapsuleOS
import CapsulePolicy
import CapsuleProtocol

/// `db`: SQL on the SQLite databases the policy names. The code names a database, never a path.
/// The queries run in `capsule-db`, a helper process beside capsule (it links GRDB and SQLite,
/// which the supervisor never does): read-only opens unless `write = true`, and an authorizer
/// that refuses writes where they are not allowed, ATTACH, PRAGMA changes and load_extension.
public struct DBCapability: Capability {
    public let name = "db"
    public let summary = "SQL on the SQLite databases the policy names ([capabilities.db] databases)."
    public let methods = [
        Method("query", level: .standard, parameters: [Parameter("name", .string), Parameter("sql", .string), Parameter("params", .array, default: [])],
               doc: "Rows of a read-only statement, as a list of dicts; params bind the ? placeholders."),
        Method("execute", level: .trusted, parameters: [Parameter("name", .string), Parameter("sql", .string), Parameter("params", .array, default: [])],
               doc: "Run a statement that changes the database (write = true); returns the number of rows changed."),
    ]
    let policy: CapsulePolicy.DBCapability
    private let process: PluginProcess

    public init(_ policy: CapsulePolicy.DBCapability, helper: String? = nil) {
        self.policy = policy
        process = PluginProcess(name: "db", command: [helper ?? PluginProcess.helperPath(named: "capsule-db")], callSeconds: 30)
    }

    public func invoke(_ method: Method, _ arguments: Arguments, context: CallContext) async throws(CapabilityError) -> JSONValue {
        let database = arguments.string("name")
        guard let path = policy.databases[database] else {
            let names = policy.databases.keys.sorted().joined(separator: ", ")
            throw .denied("there is no database `\(database)` in [capabilities.db] databases (\(names))")
        }
        if method.name == "execute" && !policy.write {
            throw .denied("db.execute changes the database, and [capabilities.db] does not set write = true (a policy of level trusted may)")
        }
        let params: JSONValue = [
            "method": .string(method.name),
            "args": ["path": .string(path), "name": .string(database), "sql": .string(arguments.string("sql")), "params": arguments["params"] ?? []],
            "write": .bool(method.name == "execute"),
            "max_rows": policy.maxRows.map { .number(Double($0)) } ?? .null,
            "max_bytes": .number(Double(min(context.maxBytes ?? Int.max, 12 << 20))),
        ]
        return try await process.request("call", params: params).get()
    }
}
