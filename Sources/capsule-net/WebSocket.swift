// net.websocket in capsule-net: a WebSocket client on swift-nio's NIOWebSocket (HTTP/1.1 upgrade,
// NIOSSL for wss://). The URL is checked and the name resolved as for net.fetch, and the
// connection goes to the checked address; the session's sockets live here by handle until closed
// or until the supervisor stops this process at the session's end.
import CapsuleCapabilities
import CapsuleHelper
import CapsuleProtocol
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import Synchronization

/// What a recv answers: a message, the end of the socket, or why it failed.
enum Received: Sendable {
    case text([UInt8])
    case binary([UInt8])
    case closed(code: Int, reason: String)
    case failed(Failure)
}

struct Socket: Sendable {
    let channel: any Channel
    let handler: NIOLoopBound<WebSocketHandler>
}

/// A closed handle stays known, so a call on it says "closed" rather than "unknown".
enum SocketEntry: Sendable {
    case open(Socket)
    case closed
}

let sockets = Mutex<[String: SocketEntry]>([:])

/// Headers the handshake itself sets; the code's own values for them are dropped.
let handshakeHeaders: Set<String> = ["host", "connection", "upgrade", "sec-websocket-key", "sec-websocket-version",
                                     "sec-websocket-extensions", "content-length", "transfer-encoding"]

/// ws_open, ws_send, ws_recv and ws_close.
func webSocketCall(_ params: JSONValue) async -> Result<JSONValue, Failure> {
    let method = params["method"]?.stringValue ?? ""
    if method == "ws_open" { return await openWebSocket(params) }
    let args = params["args"] ?? [:]
    let handle = args["socket"]?.stringValue ?? ""
    switch sockets.withLock({ $0[handle] }) {
    case nil:
        return .failure(.value("no WebSocket '\(handle)' was opened in this session; net.websocket(url) opens one"))
    case .closed:
        return .failure(.connection("the WebSocket '\(handle)' is closed (its close() was called); open a new one with net.websocket(url)"))
    case .open(let socket):
        let loop = socket.channel.eventLoop
        switch method {
        case "ws_send":
            guard let data = args["data"]?.bytesValue ?? args["data"]?.stringValue.map({ Array($0.utf8) }) else {
                return .failure(.value("ws_send needs str or bytes"))
            }
            let binary = args["data"]?.bytesValue != nil
            return await result(of: loop.flatSubmit { socket.handler.value.send(data, binary: binary) }).map { .null }
        case "ws_recv":
            let wait = params["timeout"]?.doubleValue.flatMap { $0 >= 0 ? $0 : nil }
            switch await result(of: loop.flatSubmit { socket.handler.value.receive(timeout: wait) }) {
            case .failure(let failure): return .failure(failure)
            case .success(.text(let bytes)): return .success(["text": true, "data": .bytes(bytes)])
            case .success(.binary(let bytes)): return .success(["text": false, "data": .bytes(bytes)])
            case .success(.closed(let code, let reason)): return .success(["closed": true, "code": .number(Double(code)), "reason": .string(reason)])
            case .success(.failed(let failure)): return .failure(failure)
            }
        case "ws_close":
            let code = args["code"]?.intValue ?? 1000
            let reason = args["reason"]?.stringValue ?? ""
            let outcome = await result(of: loop.flatSubmit { socket.handler.value.close(code: code, reason: reason) })
            sockets.withLock { $0[handle] = .closed }
            return outcome.map { .null }
        default:
            return .failure(HelperFailure(exception: "RuntimeError", "unknown request \(method)"))
        }
    }
}

func result<Value: Sendable>(of future: EventLoopFuture<Value>) async -> Result<Value, Failure> {
    do { return .success(try await future.get()) } catch let failure as Failure { return .failure(failure) } catch {
        return .failure(.connection("the WebSocket failed: \(error)"))
    }
}

/// Connects to the checked address, performs the upgrade (with the code's headers and the policy's
/// credential for this host), and registers the socket under a fresh handle.
func openWebSocket(_ params: JSONValue) async -> Result<JSONValue, Failure> {
    let args = params["args"] ?? [:]
    let policy = params["policy"] ?? [:]
    let urls = policy["urls"]?.arrayValue?.compactMap(\.stringValue) ?? []
    let credentials = policy["credentials"]?.objectValue ?? []
    let maxBytes = params["max_bytes"]?.intValue ?? (12 << 20)
    let timeout = params["timeout"]?.doubleValue ?? 30
    guard let url = RequestURL(args["url"]?.stringValue ?? ""), url.isWebSocket else { return .failure(.value("not a ws:// or wss:// URL")) }
    if let problem = NetCapability.allowListProblem(url, urls: urls) { return .failure(Failure(exception: problem.exception, problem.message)) }
    let target: String
    switch address(for: url) {
    case .success(let found): target = found
    case .failure(let failure): return .failure(failure)
    }
    var headers = HTTPHeaders()
    headers.add(name: "Host", value: url.port == RequestURL.defaultPort(url.scheme) ? url.host : "\(url.host):\(url.port)")
    for (name, value) in args["headers"]?.objectValue ?? [] where !handshakeHeaders.contains(name.lowercased()) {
        if let text = value.stringValue { headers.add(name: name, value: text) }
    }
    if let secret = credentials.first(where: { $0.0 == url.host })?.1,
       let header = secret["header"]?.stringValue, let value = secret["value"]?.stringValue {
        headers.replaceOrAdd(name: header, value: value)
    }
    let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: url.target, headers: headers)
    let tls: NIOSSLContext?
    do { tls = url.isSecure ? try NIOSSLContext(configuration: .makeClientConfiguration()) : nil } catch {
        return .failure(.connection("TLS cannot be set up: \(error)"))
    }
    // SNI and the certificate's name are the URL's host; an IP literal has no SNI.
    let literal = AddressRules.ipv4(url.bareHost) != nil || AddressRules.ipv6(url.bareHost) != nil
    let loop = MultiThreadedEventLoopGroup.singleton.next()
    let opened = loop.makePromise(of: NIOLoopBound<WebSocketHandler>.self)
    let bootstrap = ClientBootstrap(group: loop)
        .connectTimeout(.nanoseconds(Int64(timeout * 1e9)))
        .channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                let pipeline = channel.pipeline.syncOperations
                if let tls { try pipeline.addHandler(NIOSSLClientHandler(context: tls, serverHostname: literal ? nil : url.bareHost)) }
                let frames = NIOLoopBound(WebSocketHandler(url: url.text, maxBytes: maxBytes, loop: channel.eventLoop), eventLoop: channel.eventLoop)
                let upgrader = NIOWebSocketClientUpgrader(maxFrameSize: maxBytes, automaticErrorHandling: false) { channel, _ in
                    channel.pipeline.removeHandler(name: "capsule-handshake").flatMapThrowing {
                        try channel.pipeline.syncOperations.addHandler(frames.value)
                        opened.succeed(frames)
                    }
                }
                // Frames right behind the 101 answer are handed on to the WebSocket decoder, not dropped.
                try pipeline.addHTTPClientHandlers(leftOverBytesStrategy: .forwardBytes,
                                                   withClientUpgrade: (upgraders: [upgrader], completionHandler: { _ in }))
                try pipeline.addHandler(HandshakeHandler(head: head, url: url.text, opened: opened), name: "capsule-handshake")
            }
        }
    let socketAddress: SocketAddress
    do { socketAddress = try SocketAddress(ipAddress: target, port: url.port) } catch {
        return .failure(.connection("'\(target)' is not an address to connect to: \(error)"))
    }
    let channel: any Channel
    do { channel = try await bootstrap.connect(to: socketAddress).get() } catch ChannelError.connectTimeout {
        return .failure(Failure(exception: "TimeoutError", "connecting to '\(url.text)' took longer than \(timeout) s"))
    } catch {
        return .failure(.connection("cannot connect to '\(url.text)' (\(target)): \(error)"))
    }
    let timer = loop.scheduleTask(in: .nanoseconds(Int64(timeout * 1e9))) {
        opened.fail(Failure(exception: "TimeoutError", "the WebSocket handshake with '\(url.text)' took longer than \(timeout) s"))
    }
    let handler: NIOLoopBound<WebSocketHandler>
    do { handler = try await opened.futureResult.get() } catch {
        timer.cancel()
        channel.close(promise: nil)
        return .failure(error as? Failure ?? .connection("the WebSocket handshake with '\(url.text)' failed: \(error)"))
    }
    timer.cancel()
    var random = SystemRandomNumberGenerator()
    let handle = "ws-" + (0..<2).map { _ in String(random.next() as UInt64, radix: 16) }.joined()
    sockets.withLock { $0[handle] = .open(Socket(channel: channel, handler: handler)) }
    return .success(["socket": .string(handle)])
}

/// Sends the upgrade request once connected, and fails the open when the server answers with
/// anything but the upgrade (it is removed once the upgrade is done).
final class HandshakeHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart
    let head: HTTPRequestHead
    let url: String
    let opened: EventLoopPromise<NIOLoopBound<WebSocketHandler>>

    init(head: HTTPRequestHead, url: String, opened: EventLoopPromise<NIOLoopBound<WebSocketHandler>>) {
        self.head = head
        self.url = url
        self.opened = opened
    }

    func channelActive(context: ChannelHandlerContext) {
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let response) = unwrapInboundIn(data) {
            opened.fail(Failure.connection("the server at '\(url)' answered \(response.status.code) \(response.status.reasonPhrase) "
                + "instead of accepting the WebSocket"))
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        opened.fail(Failure.connection("the WebSocket handshake with '\(url)' failed: \(error)"))
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        opened.fail(Failure.connection("the server at '\(url)' closed the connection during the WebSocket handshake"))
        context.fireChannelInactive()
    }
}

/// One open WebSocket, on its channel's event loop: assembles messages (at most `maxBytes` each),
/// answers pings, queues messages for recv, and runs the closing handshake.
final class WebSocketHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame
    let url: String
    let maxBytes: Int
    let loop: any EventLoop
    /// While the handler is in the pipeline (until the channel closes).
    private var context: ChannelHandlerContext?
    private var queue: [Received] = []
    private var waiters: [(id: Int, promise: EventLoopPromise<Received>)] = []
    private var nextWaiter = 0
    private var partial: (binary: Bool, data: ByteBuffer)?
    /// Set once the socket is closing or closed: no more messages are taken.
    private var ended: (code: Int, reason: String)?
    private var closeSent = false
    private var inactive = false
    private var closing: [EventLoopPromise<Void>] = []

    init(url: String, maxBytes: Int, loop: any EventLoop) {
        self.url = url
        self.maxBytes = maxBytes
        self.loop = loop
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        if frame.opcode == .connectionClose { return closeReceived(frame) }
        guard ended == nil else { return }
        switch frame.opcode {
        case .text, .binary:
            guard partial == nil else { return protocolFailure("a new message began before the last one ended") }
            partial = (frame.opcode == .binary, frame.unmaskedData)
        case .continuation:
            guard var message = partial else { return protocolFailure("a continuation frame came without a message") }
            var more = frame.unmaskedData
            message.data.writeBuffer(&more)
            partial = message
        case .ping:
            let pong = WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: frame.unmaskedData)
            context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
            return
        case .pong:
            return
        default:
            return protocolFailure("the server sent a frame of an unknown kind (opcode \(frame.opcode))")
        }
        guard let message = partial else { return }
        if message.data.readableBytes > maxBytes { return tooLarge() }
        guard frame.fin else { return }
        partial = nil
        let bytes = Array(message.data.readableBytesView)
        if message.binary { return deliver(.binary(bytes)) }
        guard String(validating: bytes, as: UTF8.self) != nil else { return protocolFailure("a text message is not UTF-8") }
        deliver(.text(bytes))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? NIOWebSocketError, error == .invalidFrameLength { return tooLarge() }
        finish(.failed(.connection("the WebSocket to '\(url)' failed: \(error)")), code: 1006, reason: "\(error)", send: 1002)
    }

    func channelInactive(context: ChannelHandlerContext) {
        inactive = true
        if ended == nil {
            let why = "the connection ended without a close frame"
            finish(.closed(code: 1006, reason: why), code: 1006, reason: why, send: nil)
        }
        for promise in closing { promise.succeed() }
        closing.removeAll()
        context.fireChannelInactive()
    }

    /// The next message, waiting up to `timeout` seconds (nil: until one comes or the socket ends).
    func receive(timeout: Double?) -> EventLoopFuture<Received> {
        if !queue.isEmpty { return loop.makeSucceededFuture(queue.removeFirst()) }
        if let ended { return loop.makeSucceededFuture(.closed(code: ended.code, reason: ended.reason)) }
        let promise = loop.makePromise(of: Received.self)
        let id = nextWaiter
        nextWaiter += 1
        waiters.append((id, promise))
        if let timeout {
            let me = NIOLoopBound(self, eventLoop: loop)
            loop.scheduleTask(in: .nanoseconds(Int64(timeout * 1e9))) {
                guard let index = me.value.waiters.firstIndex(where: { $0.id == id }) else { return }
                me.value.waiters.remove(at: index).promise.fail(Failure(exception: "TimeoutError",
                                                                        "no message came on the WebSocket to '\(me.value.url)' within \(timeout) s"))
            }
        }
        return promise.futureResult
    }

    func send(_ data: [UInt8], binary: Bool) -> EventLoopFuture<Void> {
        guard let context, ended == nil else { return loop.makeFailedFuture(closedFailure) }
        let frame = WebSocketFrame(fin: true, opcode: binary ? .binary : .text, maskKey: .random(),
                                   data: context.channel.allocator.buffer(bytes: data))
        return context.writeAndFlush(wrapOutboundOut(frame))
    }

    /// Sends the close frame and waits (up to 2 s) for the server's answer and the connection's end.
    func close(code: Int, reason: String) -> EventLoopFuture<Void> {
        guard let context, !inactive else { return loop.makeSucceededVoidFuture() }
        let promise = loop.makePromise(of: Void.self)
        closing.append(promise)
        if ended == nil { finish(nil, code: code, reason: reason, send: code) }
        let channel = context.channel
        loop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
        return promise.futureResult
    }

    private var closedFailure: Failure {
        let how = ended.map { "closed (code \($0.code)\($0.reason.isEmpty ? "" : ": \($0.reason)"))" } ?? "closed"
        return .connection("the WebSocket to '\(url)' is \(how); open a new one with net.websocket(url)")
    }

    private func closeReceived(_ frame: WebSocketFrame) {
        var data = frame.unmaskedData
        let code = data.readInteger(as: UInt16.self).map(Int.init) ?? 1005
        let reason = data.readString(length: data.readableBytes) ?? ""
        if ended == nil {
            finish(.closed(code: code, reason: reason), code: code, reason: reason, send: code == 1005 ? 1000 : code)
        } else {
            context?.close(promise: nil) // the answer to our close: the handshake is done
        }
    }

    private func tooLarge() {
        finish(.failed(.denied("a message on the WebSocket to '\(url)' is larger than the \(maxBytes) bytes a call may return "
                + "(max_bytes in [capabilities.net]); the WebSocket was closed")), code: 1009, reason: "message too big", send: 1009)
    }

    private func protocolFailure(_ why: String) {
        finish(.failed(.connection("the WebSocket to '\(url)' broke the protocol: \(why); it was closed")), code: 1002, reason: why, send: 1002)
    }

    /// Ends the socket: `last` goes to the next recv (later ones see the close) and a close frame
    /// with code `send` goes out unless one did already.
    private func finish(_ last: Received?, code: Int, reason: String, send: Int?) {
        guard ended == nil else { return } // a socket ends once: later errors and closes change nothing
        ended = (code, reason)
        partial = nil
        if let last { deliver(last) }
        for waiter in waiters { waiter.promise.succeed(.closed(code: code, reason: reason)) }
        waiters.removeAll()
        guard let context, !inactive else { return }
        // After the peer's close frame or a failure nothing more is read: the connection ends once
        // our close frame is out. Our own close waits for the server's answer (close()).
        let endsNow = last.map { _ in true } ?? false
        let channel = context.channel
        if let send, !closeSent {
            closeSent = true
            var body = channel.allocator.buffer(capacity: 2 + reason.utf8.count)
            body.writeInteger(UInt16(clamping: send))
            body.writeString(String(reason.utf8.prefix(123)) ?? "")
            let frame = WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: .random(), data: body)
            context.writeAndFlush(wrapOutboundOut(frame)).whenComplete { _ in if endsNow { channel.close(promise: nil) } }
        } else if endsNow {
            channel.close(promise: nil)
        }
    }

    private func deliver(_ message: Received) {
        if waiters.isEmpty { queue.append(message) } else { waiters.removeFirst().promise.succeed(message) }
    }
}
