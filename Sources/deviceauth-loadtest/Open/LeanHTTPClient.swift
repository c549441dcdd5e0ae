import NIOCore
import NIOHTTP1
import NIOPosix

/// An HTTP answer as the open model reads it: status, the few headers it needs, the body bytes.
struct LeanResponse: Sendable {
    var status: Int
    var headers: HTTPHeaders
    var body: ByteBuffer

    var bodyString: String { String(buffer: body) }
}

/// Why a lean request failed.
struct LeanHTTPError: Error, Sendable, CustomStringConvertible {
    enum Code: Sendable, Equatable {
        case connectFailed
        case connectionClosed
        case timeout
    }

    var code: Code
    var message: String

    var description: String { "\(code): \(message)" }
}

/// One request, built once: method, path, headers and an optional form body.
struct LeanRequest: Sendable {
    var method: HTTPMethod
    var path: String
    var headers: [(String, String)] = []
    var form: String?
}

/// Reads one HTTP/1.1 response per request on a keep-alive connection and hands it to the request's callback,
/// on the channel's event loop. One request at a time per connection (no pipelining).
// Confined to its channel's event loop (NIO calls it there, the pool only from there), hence unchecked.
final class LeanHTTPHandler: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    typealias Callback = (Result<LeanResponse, LeanHTTPError>) -> Void

    private var callback: Callback?
    private var head: HTTPResponseHead?
    private var body: ByteBuffer?
    private let host: String
    private var context: ChannelHandlerContext?
    private var timeout: Scheduled<Void>?
    var isClosed = false
    /// Called when the connection closes (the pool forgets it).
    var onClose: (() -> Void)?

    init(host: String) {
        self.host = host
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    /// Sends `request` and calls `callback` with its answer (on the event loop). The connection must be idle.
    func send(_ request: LeanRequest, timeout: TimeAmount, callback: @escaping Callback) {
        guard let context, !isClosed else {
            callback(.failure(LeanHTTPError(code: .connectionClosed, message: "connection closed")))
            return
        }
        self.callback = callback
        var headers = HTTPHeaders()
        headers.reserveCapacity(4 + request.headers.count)
        headers.add(name: "Host", value: host)
        for (name, value) in request.headers { headers.add(name: name, value: value) }
        var bodyBuffer: ByteBuffer?
        if let form = request.form {
            headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
            var buffer = context.channel.allocator.buffer(capacity: form.utf8.count)
            buffer.writeString(form)
            headers.add(name: "Content-Length", value: String(buffer.readableBytes))
            bodyBuffer = buffer
        }
        context.write(
            wrapOutboundOut(.head(HTTPRequestHead(version: .http1_1, method: request.method, uri: request.path, headers: headers))),
            promise: nil)
        if let bodyBuffer { context.write(wrapOutboundOut(.body(.byteBuffer(bodyBuffer))), promise: nil) }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        self.timeout = context.eventLoop.scheduleTask(in: timeout) { [weak self] in
            self?.fail(LeanHTTPError(code: .timeout, message: "no answer within \(timeout.nanoseconds / 1_000_000_000) s"))
            self?.context?.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body(var buffer):
            if body == nil { body = buffer } else { body!.writeBuffer(&buffer) }
        case .end:
            guard let head else { return }
            let response = LeanResponse(status: Int(head.status.code), headers: head.headers, body: body ?? ByteBuffer())
            self.head = nil
            body = nil
            timeout?.cancel()
            timeout = nil
            let callback = self.callback
            self.callback = nil
            if !head.isKeepAlive {
                isClosed = true
                context.close(promise: nil)
            }
            callback?(.success(response))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        isClosed = true
        fail(LeanHTTPError(code: .connectionClosed, message: "connection closed by the server"))
        onClose?()
        onClose = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        isClosed = true
        fail(LeanHTTPError(code: .connectionClosed, message: "\(error)"))
        context.close(promise: nil)
    }

    private func fail(_ error: LeanHTTPError) {
        timeout?.cancel()
        timeout = nil
        let callback = self.callback
        self.callback = nil
        callback?(.failure(error))
    }
}

/// A bounded keep-alive connection pool to one node, confined to one event loop (no locks).
///
/// Connections are opened on demand up to `maxConnections`, each bound to one of the loopback source
/// addresses in turn (127.0.0.1, 127.0.0.2, …), so many connections need not share one address's
/// ephemeral ports. Requests beyond the pool wait in a FIFO and keep their intended send time.
// Confined to `eventLoop` (every method asserts or is called from it), hence unchecked.
final class LeanPool: @unchecked Sendable {
    let eventLoop: any EventLoop
    let host: String
    let port: Int
    let maxConnections: Int
    let sourceAddresses: [String]
    let timeout: TimeAmount

    private var idle: [LeanHTTPHandler] = []
    private var open = 0
    private var connecting = 0
    private var nextSource = 0
    private var waiting = CircularBuffer<(LeanRequest, LeanHTTPHandler.Callback)>()
    private(set) var connectFailures = 0

    init(eventLoop: any EventLoop, host: String, port: Int, maxConnections: Int, sourceAddresses: [String], timeout: TimeAmount) {
        self.eventLoop = eventLoop
        self.host = host
        self.port = port
        self.maxConnections = max(1, maxConnections)
        self.sourceAddresses = sourceAddresses
        self.timeout = timeout
    }

    var queued: Int { waiting.count }
    var connections: Int { open }

    /// Sends a request (call on `eventLoop`); `callback` runs on `eventLoop`.
    func send(_ request: LeanRequest, callback: @escaping LeanHTTPHandler.Callback) {
        eventLoop.preconditionInEventLoop()
        while let connection = idle.popLast() {
            if connection.isClosed { continue }
            dispatch(request, on: connection, callback: callback)
            return
        }
        waiting.append((request, callback))
        if open + connecting < maxConnections { connect() }
    }

    private func dispatch(_ request: LeanRequest, on connection: LeanHTTPHandler, callback: @escaping LeanHTTPHandler.Callback) {
        connection.send(request, timeout: timeout) { [self] result in
            callback(result)
            release(connection)
        }
    }

    private func release(_ connection: LeanHTTPHandler) {
        guard !connection.isClosed else {
            if !waiting.isEmpty, open + connecting < maxConnections { connect() }
            return
        }
        if let (request, callback) = waiting.popFirst() {
            dispatch(request, on: connection, callback: callback)
        } else {
            idle.append(connection)
        }
    }

    private func connect() {
        connecting += 1
        let handler = LeanHTTPHandler(host: "\(host):\(port)")
        var bootstrap = ClientBootstrap(group: eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
        let source = sourceAddresses.isEmpty ? nil : sourceAddresses[nextSource % sourceAddresses.count]
        nextSource += 1
        if let source, let address = try? SocketAddress(ipAddress: source, port: 0) { bootstrap = bootstrap.bind(to: address) }
        bootstrap.connect(host: host, port: port).whenComplete { [self] result in
            connecting -= 1
            switch result {
            case .success:
                open += 1
                handler.onClose = { [weak self] in self?.open -= 1 }
                release(handler)
            case .failure(let error):
                connectFailures += 1
                // Nothing reached a server: fail one waiting request, so the caller counts it and goes on.
                if let (_, callback) = waiting.popFirst() {
                    callback(.failure(LeanHTTPError(code: .connectFailed, message: "\(error)")))
                }
                if !waiting.isEmpty, open + connecting < maxConnections, open > 0 || connectFailures % 16 != 0 { connect() }
            }
        }
    }
}

/// Parses the few JSON fields the harness reads, without a JSON object tree per answer.
enum LeanJSON {
    /// The string value of `"key":"…"` (no escapes expected in codes and error names; `\/` is unescaped).
    static func string(_ key: String, in body: ByteBuffer) -> String? {
        body.withUnsafeReadableBytes { raw -> String? in
            guard let range = valueStart(key, in: raw), range < raw.count, raw[range] == UInt8(ascii: "\"") else { return nil }
            var index = range + 1
            var bytes: [UInt8] = []
            while index < raw.count, raw[index] != UInt8(ascii: "\"") {
                if raw[index] == UInt8(ascii: "\\"), index + 1 < raw.count { index += 1 }
                bytes.append(raw[index])
                index += 1
            }
            return String(decoding: bytes, as: UTF8.self)
        }
    }

    /// The integer value of `"key":123`.
    static func int(_ key: String, in body: ByteBuffer) -> Int? {
        body.withUnsafeReadableBytes { raw -> Int? in
            guard var index = valueStart(key, in: raw) else { return nil }
            var value = 0
            var digits = 0
            while index < raw.count, raw[index] >= UInt8(ascii: "0"), raw[index] <= UInt8(ascii: "9") {
                value = value * 10 + Int(raw[index] - UInt8(ascii: "0"))
                index += 1
                digits += 1
            }
            return digits > 0 ? value : nil
        }
    }

    /// Index of the first byte of the value of `"key":`.
    private static func valueStart(_ key: String, in raw: UnsafeRawBufferPointer) -> Int? {
        let needle = Array("\"\(key)\"".utf8)
        guard raw.count >= needle.count else { return nil }
        var index = 0
        outer: while index + needle.count <= raw.count {
            for offset in 0..<needle.count where raw[index + offset] != needle[offset] {
                index += 1
                continue outer
            }
            var cursor = index + needle.count
            while cursor < raw.count, raw[cursor] == UInt8(ascii: " ") || raw[cursor] == UInt8(ascii: ":") { cursor += 1 }
            return cursor
        }
        return nil
    }
}
