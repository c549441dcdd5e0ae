import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTPTypes
import RedisClient
import Synchronization

/// What one API node allows a TCP connection: how long it may take to send a request head, how
/// long it may sit idle between requests, and how many connections may be open at once.
///
/// Without these, 300 connections that each send half a request head stay open forever, and
/// each costs the node a socket and buffers (issue #14). A connection closed for a timeout gets
/// no answer (there is no request to answer); one past the cap is closed as soon as it is
/// accepted, while the connections already open keep being served.
///
/// ```swift
/// let app = Application(router: routes.makeRouter(), server: .deviceAuthorization(limits: ConnectionLimits()),
///                       configuration: .init(address: .hostname("0.0.0.0", port: 8080)))
/// ```
public struct ConnectionLimits: Sendable, Hashable {
    /// Time from the connection's start, or from the first byte of a later request, until the
    /// request head (request line and headers) is complete.
    public var headerReadTimeout: Duration
    /// Time a kept-alive connection may wait for its next request, and a request body may go
    /// without a byte.
    public var idleTimeout: Duration
    /// Connections open at once; `nil`: no cap.
    public var maxConnections: Int?

    /// Creates the limits.
    /// - Parameters:
    ///   - headerReadTimeout: the request-head deadline (10 s: a real client sends its head in one
    ///     packet; a slow mobile link needs well under a second).
    ///   - idleTimeout: the keep-alive and body idle timeout (60 s: longer than any RFC 8628 polling
    ///     interval the server hands out, so a device polling every few seconds keeps its connection).
    ///   - maxConnections: the connection cap (10 000; mind the process's file-descriptor limit).
    public init(headerReadTimeout: Duration = .seconds(10), idleTimeout: Duration = .seconds(60), maxConnections: Int? = 10_000) {
        self.headerReadTimeout = headerReadTimeout
        self.idleTimeout = idleTimeout
        self.maxConnections = maxConnections.map { max(1, $0) }
    }
}

extension HTTPServerBuilder {
    /// An HTTP/1.1 server (Hummingbird's `HTTP1Channel`) that enforces `limits` on every connection.
    /// - Parameters:
    ///   - limits: the timeouts and the connection cap.
    ///   - logger: where refused connections are logged (at `debug`: an attacker controls their number).
    ///   - onEventLoops: run each connection's task, handlers included, on the connection's event
    ///     loop (`EventLoopExecutor`, the default), or on Swift's global executor as Hummingbird does.
    public static func deviceAuthorization(
        limits: ConnectionLimits, logger: Logger = Logger(label: "deviceauth.connections"),
        onEventLoops: Bool = true
    ) -> HTTPServerBuilder {
        let counter = ConnectionCounter()
        return HTTPServerBuilder { responder in
            LimitedHTTP1Channel(responder: responder, limits: limits, counter: counter, logger: logger, onEventLoops: onEventLoops)
        }
    }
}

/// The number of open connections of one server, shared by its event loops.
final class ConnectionCounter: Sendable {
    private let open = Atomic<Int>(0)

    /// Counts a new connection; `false` (and not counted) when `limit` are already open.
    func admit(limit: Int?) -> Bool {
        let now = open.add(1, ordering: .relaxed).newValue
        guard let limit, now > limit else { return true }
        open.subtract(1, ordering: .relaxed)
        return false
    }

    func release() { open.subtract(1, ordering: .relaxed) }

    var count: Int { open.load(ordering: .relaxed) }
}

/// Hummingbird's `HTTP1Channel` with the connection cap checked at accept and two handlers that
/// keep the deadlines: one before the HTTP decoder (it sees the first byte of each request) and
/// one after it (it sees complete heads, bodies and the end of each response).
struct LimitedHTTP1Channel: ServerChildChannel {
    typealias Value = HTTP1Channel.Value

    struct ConnectionRefused: Error {}

    let responder: HTTPChannelHandler.Responder
    let limits: ConnectionLimits
    let counter: ConnectionCounter
    let logger: Logger
    let onEventLoops: Bool

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        guard counter.admit(limit: limits.maxConnections) else {
            self.logger.debug("connection refused: at the connection cap", metadata: ["max_connections": "\(limits.maxConnections ?? 0)"])
            // Closed at once (a FIN, no answer): queueing it would hold a socket for an attacker.
            channel.close(promise: nil)
            return channel.eventLoop.makeFailedFuture(ConnectionRefused())
        }
        let counter = self.counter
        channel.closeFuture.whenComplete { _ in counter.release() }
        // Called on the channel's event loop (the child channel initializer), as the handlers are.
        let deadline = NIOLoopBound(ConnectionDeadline(channel: channel, limits: limits), eventLoop: channel.eventLoop)
        do {
            try channel.pipeline.syncOperations.addHandler(RequestStartHandler(deadline: deadline.value), position: .first)
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
        deadline.value.connectionOpened()
        // HTTP1Channel puts additional handlers right after HTTP decoding, before its own state
        // handler; it calls the closure during this setup, on this event loop.
        let perConnection = HTTP1Channel(
            responder: responder,
            configuration: .init(
                additionalChannelHandlers: [RequestProgressHandler(deadline: deadline.value)]))
        return perConnection.setup(channel: channel, logger: logger)
    }

    func handle(value: Value, logger: Logger) async {
        let http = HTTP1Channel(responder: responder)
        guard onEventLoops else { return await http.handle(value: value, logger: logger) }
        await withTaskExecutorPreference(EventLoopExecutor(value.channel.eventLoop)) {
            await http.handle(value: value, logger: logger)
        }
    }
}

/// The one deadline of a connection, driven by its two handlers; lives on the channel's event loop.
final class ConnectionDeadline {
    enum State {
        /// Waiting for a request to start: a fresh connection (header-read deadline from the
        /// accept) or a kept-alive one (idle deadline from the last response).
        case waitingForRequest(fresh: Bool)
        /// Bytes of a request head arrived; the head is due by the header-read deadline.
        case readingHead
        /// A head arrived; its body is due with no gap longer than the idle timeout.
        case readingBody
        /// The whole request is in; the node is answering (no deadline: the answer is ours to give).
        case answering
    }

    private let channel: any Channel
    private let limits: ConnectionLimits
    /// When the connection is closed unless a request moves on; nil while answering.
    private var due: NIODeadline?
    /// The one timer and when it fires: no later than `due`, and then it closes the connection or,
    /// when `due` moved later meanwhile, waits again. Re-arming to a later time (every request on a
    /// busy kept-alive connection) only stores the new time; a timer is scheduled and cancelled
    /// only when the deadline moves earlier, so a request costs no timer-heap work.
    private var timer: (task: Scheduled<Void>, firesAt: NIODeadline)?
    private var requestsInProgress = 0
    private(set) var state = State.waitingForRequest(fresh: true)

    init(channel: any Channel, limits: ConnectionLimits) {
        self.channel = channel
        self.limits = limits
    }

    func connectionOpened() { arm(limits.headerReadTimeout) }

    func bytesArrived() {
        switch state {
        case .waitingForRequest(fresh: true):
            state = .readingHead  // the deadline from the accept stands
        case .waitingForRequest(fresh: false):
            state = .readingHead
            arm(limits.headerReadTimeout)
        case .readingHead, .readingBody, .answering:
            break
        }
    }

    func headReceived() {
        requestsInProgress += 1
        state = .readingBody
        arm(limits.idleTimeout)
    }

    func bodyReceived() {
        if case .readingBody = state { arm(limits.idleTimeout) }
    }

    func requestEnded() {
        state = .answering
        due = nil  // the timer, if any, finds no deadline and stops
    }

    func responseEnded() {
        requestsInProgress -= 1
        guard requestsInProgress <= 0 else { return }
        requestsInProgress = 0
        if case .answering = state {
            state = .waitingForRequest(fresh: false)
            arm(limits.idleTimeout)
        }
    }

    /// The connection is gone: no deadline, and the timer (which holds the channel) is cancelled.
    func disarm() {
        due = nil
        timer?.task.cancel()
        timer = nil
    }

    private func arm(_ duration: Duration) {
        let newDue = NIODeadline.now() + TimeAmount(duration)
        due = newDue
        if let timer, timer.firesAt <= newDue { return }
        timer?.task.cancel()
        schedule(at: newDue)
    }

    private func schedule(at deadline: NIODeadline) {
        timer = (channel.eventLoop.scheduleTask(deadline: deadline) { [self] in timerFired() }, deadline)
    }

    private func timerFired() {
        timer = nil
        guard let due else { return }
        if NIODeadline.now() >= due {
            channel.close(promise: nil)
        } else {
            schedule(at: due)
        }
    }
}

/// Before the HTTP decoder: notes the first byte of each request.
final class RequestStartHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    let deadline: ConnectionDeadline

    init(deadline: ConnectionDeadline) { self.deadline = deadline }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        deadline.bytesArrived()
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline.disarm()
        context.fireChannelInactive()
    }
}

/// After the HTTP decoder: notes complete heads, body parts, request ends and response ends.
final class RequestProgressHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    let deadline: ConnectionDeadline

    init(deadline: ConnectionDeadline) { self.deadline = deadline }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head: deadline.headReceived()
        case .body: deadline.bodyReceived()
        case .end: deadline.requestEnded()
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { deadline.responseEnded() }
        context.write(data, promise: promise)
    }
}
