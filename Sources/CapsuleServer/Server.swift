import CapsuleAudit
import CapsuleCapabilities
import CapsuleOS
import CapsulePolicy
import CapsuleProtocol
import CapsuleRuntime
import CapsuleSandbox
import Hummingbird
#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import ServiceLifecycle

/// `capsule serve`: sessions over HTTP (docs/server.md). Every `/v1` route needs the bearer
/// token; a client's policy is a level's name or TOML text, up to `maxLevel`.
public struct ServerConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 8731
    public var token: Token
    /// The highest level a client may ask for.
    public var maxLevel = Level.standard
    public var maxSessions = 64
    /// The largest request body read (code, a policy, a file).
    public var maxBodyBytes = 8 << 20
    /// The log every session's events go to, besides a policy's own `[audit]` path.
    public var auditPath: String?
    /// On SIGTERM: how long running executions have, once interrupted, to end by themselves.
    public var shutdownGrace = 5.0

    public init(token: Token) { self.token = token }
}

public enum Server {
    /// Runs until SIGTERM or SIGINT: then it takes no new connections, interrupts the running
    /// executions, lets their answers go out (`shutdownGrace`), and ends every session.
    /// `onListening` is told the port bound (the one asked for, or the kernel's choice for port 0).
    public static func run(_ configuration: ServerConfiguration, location: WorkerLocation,
                           onListening: @escaping @Sendable (Int) -> Void) async throws {
        let sessions = ServedSessions(limit: configuration.maxSessions)
        let router = Router()
        routes(router, configuration: configuration, sessions: sessions, location: location)
        var logger = Logger(label: "capsule.serve")
        logger.logLevel = OS.environment("CAPSULE_LOG_LEVEL").flatMap(Logger.Level.init(rawValue:)) ?? .warning
        let app = Application(router: router,
                              configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "capsule"),
                              onServerRunning: { channel in onListening(channel.localAddress?.port ?? configuration.port) },
                              logger: logger)
        // Last in the group, so told of the shutdown first: the HTTP server then finds the
        // requests it waits for ending.
        let group = ServiceGroup(configuration: .init(
            services: [app, Draining(sessions: sessions, grace: configuration.shutdownGrace)],
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do { try await group.run() } catch {
            await sessions.closeAll()
            if let error = error as? IOError, error.errnoCode == EADDRINUSE || error.errnoCode == EACCES || error.errnoCode == EADDRNOTAVAIL {
                let hint = error.errnoCode == EADDRINUSE ? "another program holds the port; --port picks another (0: any free one)"
                    : error.errnoCode == EACCES ? "ports below 1024 need privileges; pick a higher --port" : "--host names no address of this machine"
                throw ServerError.configuration("cannot listen on \(configuration.host):\(configuration.port): \(OS.errorText(error.errnoCode)); \(hint)")
            }
            throw error
        }
        await sessions.closeAll()
    }

    static func routes(_ router: Router<BasicRequestContext>, configuration: ServerConfiguration, sessions: ServedSessions,
                       location: WorkerLocation) {
        router.add(middleware: Problems())
        router.get("/healthz") { _, _ in json(.object([("status", "ok")])) }
        router.get("/readyz") { _, _ in
            var problems: [String] = []
            if let path = configuration.auditPath {
                do throws(AuditFailure) { try AuditLog.shared(AuditOptions(path: path)).check() } catch { problems.append("the audit log: \(error.message)") }
            }
            if !OS.isExecutable(location.executable) { problems.append("capsule-worker is missing at \(location.executable)") }
            if sessions.count >= configuration.maxSessions { problems.append("it holds --max-sessions (\(configuration.maxSessions)) sessions") }
            guard problems.isEmpty else {
                throw Problem(.serviceUnavailable, "Not ready", "this server cannot start a session now: " + problems.joined(separator: "; "))
            }
            return json(.object([("status", "ready"), ("sessions", .number(Double(sessions.count)))]))
        }

        let v1 = router.group("/v1").add(middleware: Authorization(token: configuration.token))
        v1.get("/sessions") { _, _ in
            json(.object([("sessions", .array(sessions.all().map(\.json)))]))
        }
        v1.post("/sessions") { request, _ in
            let body = try await object(request, limit: configuration.maxBodyBytes)
            let policy = try clientPolicy(body, maxLevel: configuration.maxLevel)
            let audit: SessionAudit?
            switch SessionAudit.opened(for: policy, path: configuration.auditPath) {
            case .success(let opened): audit = opened
            case .failure(let failure):
                throw Problem(.serviceUnavailable, "The audit log cannot be written", "\(failure.message); nothing runs until it can be")
            }
            try sessions.checkOpen()
            let entry = try await sessions.open(policy: policy, location: location, audit: audit)
            return json(entry.json, status: .created)
        }
        v1.get("/sessions/:id") { _, context in
            json(try session(context, sessions).json)
        }
        v1.delete("/sessions/:id") { _, context in
            let id = try context.parameters.require("id")
            guard await sessions.close(id) else { throw Problem.notFound(session: id) }
            return Response(status: .noContent)
        }
        v1.post("/sessions/:id/execute") { request, context in
            let entry = try session(context, sessions)
            let body = try await object(request, limit: configuration.maxBodyBytes)
            guard let code = body["code"]?.stringValue else {
                throw Problem(.badRequest, "No code", "the body is {\"code\": \"...\"}: the Python code to run, as a string")
            }
            guard entry.session.seemsAlive else {
                throw Problem(.gone, "The session has ended", "session \(entry.id) has ended (its last execution's `done` said how); DELETE it and create another")
            }
            try sessions.checkOpen()
            let execution: Execution
            do { execution = try entry.session.submit(code, filename: "<request>") } catch {
                throw Problem(.conflict, "The session is busy", "\(error)")
            }
            sessions.began()
            switch EventFraming(request) {
            case nil:
                defer { sessions.ended() }
                return json(await collected(execution, entry.session))
            case let framing?: return streamed(execution, entry.session, framing) { sessions.ended() }
            }
        }
        v1.post("/sessions/:id/interrupt") { _, context in
            let entry = try session(context, sessions)
            entry.session.interrupt()
            return json(.object([("interrupted", .bool(true))]), status: .accepted)
        }
        v1.post("/sessions/:id/input") { request, context in
            let entry = try session(context, sessions)
            let body = try await object(request, limit: configuration.maxBodyBytes)
            let line = body["line"]?.stringValue
            guard line != nil || body["eof"]?.boolValue == true else {
                throw Problem(.badRequest, "No line", "the body is {\"line\": \"...\"} (what input() returns), or {\"eof\": true}")
            }
            entry.session.answerInput(line)
            return json(.object([("answered", .bool(true))]))
        }
        v1.post("/sessions/:id/approvals/:approval") { request, context in
            let entry = try session(context, sessions)
            let id = try context.parameters.require("approval")
            let body = try await object(request, limit: configuration.maxBodyBytes)
            guard let approve = body["approve"]?.boolValue else {
                throw Problem(.badRequest, "No decision", "the body is {\"approve\": true} or {\"approve\": false, \"reason\": \"...\"}")
            }
            let decision: ApprovalDecision = approve ? .approved : .denied(body["reason"]?.stringValue ?? "refused by the client of capsule serve")
            guard entry.session.answerApproval(id, decision) else {
                throw Problem(.notFound, "No such approval", "session \(entry.id) waits for no approval \(id)")
            }
            return json(.object([("decided", .bool(true))]))
        }
    }

    static func session(_ context: BasicRequestContext, _ sessions: ServedSessions) throws -> ServedSessions.Entry {
        let id = try context.parameters.require("id")
        guard let entry = sessions.get(id) else { throw Problem.notFound(session: id) }
        return entry
    }

    /// The request's body as a JSON object (an empty body is `{}`).
    static func object(_ request: Request, limit: Int) async throws -> JSONValue {
        var request = request
        let buffer: ByteBuffer
        do { buffer = try await request.collectBody(upTo: limit) } catch {
            throw Problem(.contentTooLarge, "The body is too large", "this server reads at most \(limit) bytes of a request body (capsule serve --max-body-bytes)")
        }
        if buffer.readableBytes == 0 { return .object([]) } // `curl -X POST` with no body: the defaults
        let value: JSONValue
        do { value = try JSONValue.parse(buffer.readableBytesView) } catch {
            throw Problem(.badRequest, "The body is not JSON", "\(error)")
        }
        guard case .object = value else { throw Problem(.badRequest, "The body is not a JSON object", "send a JSON object, {...}") }
        return value
    }

    /// `{"policy": "restricted"}` (a level) or `{"policy_toml": "level = ..."}` (checked as a file
    /// is, extending only a level), at most `maxLevel`.
    static func clientPolicy(_ body: JSONValue, maxLevel: Level) throws -> Policy {
        let policy: Policy
        do {
            if let text = body["policy_toml"]?.stringValue {
                policy = try PolicyLoader.parseReadingNoFiles(text, file: "policy_toml")
            } else {
                let name = body["policy"]?.stringValue ?? "sandbox"
                guard let level = Level(rawValue: name) else {
                    throw Problem(.badRequest, "No such policy", "`\(name)` is not a level (\(Level.allCases.map(\.rawValue).joined(separator: ", "))); send a policy of your own as {\"policy_toml\": \"...\"}")
                }
                policy = try PolicyLoader.builtin(level)
            }
        } catch let error as PolicyError {
            throw Problem(.unprocessableContent, "Bad policy", error.all.map(\.description).joined(separator: "\n"))
        }
        guard policy.level <= maxLevel else {
            throw Problem(.forbidden, "The policy's level is too high", "this server creates sessions up to level `\(maxLevel.rawValue)`, and the policy is `\(policy.level.rawValue)` (capsule serve --max-level raises it)")
        }
        return policy
    }

    static func json(_ value: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: value.serialized() + [10])))
    }
}

/// The sessions' part of a graceful shutdown, before the HTTP server's own (which waits for the
/// requests in flight): no new session or execution, the running ones interrupted, so that
/// those requests end.
struct Draining: Service {
    let sessions: ServedSessions
    let grace: Double

    func run() async throws {
        try? await gracefulShutdown()
        await sessions.drain(grace: grace)
    }
}

/// Whatever goes wrong becomes a problem document: ours as they are, Hummingbird's own (a route
/// that does not exist, a method it does not take) with a sentence saying where to look.
struct Problems: RouterMiddleware {
    func handle(_ request: Request, context: BasicRequestContext,
                next: (Request, BasicRequestContext) async throws -> Response) async throws -> Response {
        do { return try await next(request, context) } catch let problem as Problem { return problem.response } catch let error as HTTPError {
            let detail = error.status == .notFound
                ? "\(request.method) \(request.uri.path) is not a route of capsule serve; docs/server.md lists them"
                : (error.body ?? "\(error.status)")
            return Problem(error.status, error.status.reasonPhrase, detail).response
        }
    }
}

/// Every `/v1` request carries `Authorization: Bearer TOKEN`; any other gets 401 and runs nothing.
struct Authorization: RouterMiddleware {
    let token: Token

    func handle(_ request: Request, context: BasicRequestContext,
                next: (Request, BasicRequestContext) async throws -> Response) async throws -> Response {
        guard token.admits(request.headers[.authorization]) else {
            return Problem(.unauthorized, "No valid token", "send the server's token as `Authorization: Bearer TOKEN` (its path is printed when capsule serve starts; CAPSULE_TOKEN sets it)").response
        }
        return try await next(request, context)
    }
}
