// capsule-db: the helper process that runs the `db` capability's SQL for the supervisor
// (Sources/CapsuleCapabilities/DB.swift), through GRDB, on the files the policy names. Reads open
// the database read-only; every statement passes an SQLite authorizer that refuses ATTACH,
// PRAGMA changes, load_extension and, unless the call may write, every write.
import CapsuleHelper
import CapsuleProtocol
import Foundation
import GRDB
import GRDBSQLite

/// What the authorizer allows for one call, and why it last refused.
final class Rules: @unchecked Sendable {
    let write: Bool
    var refusal: String?
    init(write: Bool) { self.write = write }
}

/// The SQLite authorizer (a type's statics: top-level code here belongs to the main actor, and
/// SQLite calls this from whatever thread runs the statement).
enum Authorizer {
    /// PRAGMAs that only read (without a value): schema and size information.
    /// PRAGMAs whose value names what to describe, never a setting.
    static let lookupPragmas: Set<String> = ["table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list"]
    static let readablePragmas: Set<String> = ["table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
                                    "foreign_key_list", "user_version", "schema_version", "page_count", "page_size",
                                    "freelist_count", "encoding", "data_version", "application_id", "collation_list"]

    static let authorize: @convention(c) (UnsafeMutableRawPointer?, Int32, UnsafePointer<CChar>?, UnsafePointer<CChar>?,
                               UnsafePointer<CChar>?, UnsafePointer<CChar>?) -> Int32 = { context, action, first, second, _, _ in
    let rules = Unmanaged<Rules>.fromOpaque(context!).takeUnretainedValue()
    func deny(_ why: String) -> Int32 {
        rules.refusal = why
        return SQLITE_DENY
    }
    let one = first.map { String(cString: $0) }, two = second.map { String(cString: $0) }
    switch action {
    case SQLITE_SELECT, SQLITE_READ, SQLITE_TRANSACTION, SQLITE_SAVEPOINT, SQLITE_RECURSIVE:
        return SQLITE_OK
    case SQLITE_FUNCTION:
        return two?.lowercased() == "load_extension" ? deny("load_extension is never allowed") : SQLITE_OK
    case SQLITE_ATTACH, SQLITE_DETACH:
        return deny("ATTACH and DETACH are never allowed: the code reaches only the databases the policy names")
    case SQLITE_PRAGMA:
        let name = (one ?? "").lowercased()
        if Authorizer.lookupPragmas.contains(name) { return SQLITE_OK } // PRAGMA table_info(t): the value names a table
        if two != nil { return deny("PRAGMA \(name) = … changes the database connection, which is never allowed") }
        return Authorizer.readablePragmas.contains(name) ? SQLITE_OK : deny("PRAGMA \(name) is not one of the pragmas that only read")
    default:
        return rules.write ? SQLITE_OK
            : deny("db.query only reads; a statement that writes needs db.execute and write = true in [capabilities.db]")
    }
}
}

/// Runs `body` with the authorizer in place.
func guarded<T>(_ db: Database, _ rules: Rules, _ body: () throws -> T) throws -> T {
    let context = Unmanaged.passUnretained(rules).toOpaque()
    sqlite3_set_authorizer(db.sqliteConnection, Authorizer.authorize, context)
    defer { sqlite3_set_authorizer(db.sqliteConnection, nil, nil) }
    return try withExtendedLifetime(rules) { try body() }
}

func bind(_ params: [JSONValue]) throws(HelperFailure) -> StatementArguments {
    var values: [DatabaseValue] = []
    for (index, value) in params.enumerated() {
        if let bytes = value.bytesValue { values.append(Data(bytes).databaseValue); continue }
        switch value {
        case .null: values.append(.null)
        case .bool(let flag): values.append((flag ? 1 : 0).databaseValue)
        case .number(let number): values.append(Int64(exactly: number).map(\.databaseValue) ?? number.databaseValue)
        case .string(let text): values.append(text.databaseValue)
        default: throw .value("db: parameter \(index + 1) must be None, a bool, a number, a str or bytes")
        }
    }
    return StatementArguments(values)
}

func json(_ value: DatabaseValue) -> JSONValue {
    switch value.storage {
    case .null: .null
    case .int64(let number): .number(Double(number))
    case .double(let number): number.isFinite ? .number(number) : .string(String(number))
    case .string(let text): .string(text)
    case .blob(let data): .bytes(Array(data))
    }
}

func run(_ params: JSONValue) -> Result<JSONValue, HelperFailure> {
    let args = params["args"] ?? [:]
    let path = args["path"]?.stringValue ?? "", name = args["name"]?.stringValue ?? "", sql = args["sql"]?.stringValue ?? ""
    let write = params["write"]?.boolValue ?? false
    let maxRows = params["max_rows"]?.intValue
    let maxBytes = params["max_bytes"]?.intValue ?? (12 << 20)
    let rules = Rules(write: write)
    do {
        let arguments = try bind(args["params"]?.arrayValue ?? [])
        var configuration = Configuration()
        configuration.readonly = !write
        configuration.label = "capsule-db \(name)"
        let queue = try DatabaseQueue(path: path, configuration: configuration)
        if write {
            let changed = try queue.write { db in
                try guarded(db, rules) { try db.execute(sql: sql, arguments: arguments); return db.changesCount }
            }
            return .success(.number(Double(changed)))
        }
        let rows = try queue.read { db in
            try guarded(db, rules) { () throws -> [JSONValue] in
                var rows: [JSONValue] = []
                var bytes = 0
                let cursor = try Row.fetchCursor(db, sql: sql, arguments: arguments)
                while let row = try cursor.next() {
                    if let maxRows, rows.count == maxRows {
                        throw HelperFailure.denied("the query returns more than the \(maxRows) rows [capabilities.db] max_rows allows")
                    }
                    let members = zip(row.columnNames, row.databaseValues).map { ($0, json($1)) }
                    bytes += members.reduce(0) { $0 + $1.0.utf8.count + ($1.1.stringValue?.utf8.count ?? $1.1.bytesValue?.count ?? 8) }
                    if bytes > maxBytes {
                        throw HelperFailure.denied("the rows are more than the \(maxBytes) bytes a call may return (max_bytes in [capabilities.db])")
                    }
                    rows.append(.object(members))
                }
                return rows
            }
        }
        return .success(.array(rows))
    } catch let failure as HelperFailure {
        return .failure(failure)
    } catch let error as DatabaseError where error.resultCode == .SQLITE_AUTH || rules.refusal != nil {
        return .failure(.denied("db `\(name)`: \(rules.refusal ?? "not authorized")"))
    } catch let error as DatabaseError where error.resultCode == .SQLITE_READONLY {
        return .failure(.denied("db `\(name)` is open read-only: \(error.message ?? "attempt to write")"))
    } catch let error as DatabaseError where error.resultCode == .SQLITE_CANTOPEN {
        return .failure(HelperFailure(exception: "OSError", "db `\(name)`: the database file cannot be opened"))
    } catch let error as DatabaseError {
        return .failure(.value("db `\(name)`: \(error.message ?? "\(error)")"))
    } catch {
        return .failure(HelperFailure(exception: "RuntimeError", "db `\(name)`: \(error)"))
    }
}

Helper.serve(summary: "SQLite for capsule's db capability.") { params in run(params) }
