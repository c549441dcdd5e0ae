import CHiredis
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization

/// One Redis connection: a SwiftNIO channel on one event loop, with hiredis's reader as the
/// codec (``RedisReplyDecoder``) and, for `rediss://`, swift-nio-ssl's TLS handler in front.
///
/// Every piece of state lives on the connection's event loop. A command is encoded on the
/// caller's thread; on the loop it is appended to the connection's outgoing buffer, and one
/// flush per loop turn writes everything appended since the last one — automatic pipelining:
/// commands that arrive while Redis works on earlier ones go out together. Replies come back in
/// order and resume their callers from the loop. A caller already running on the connection's
/// loop (an event-loop task executor) writes and is answered there, with no thread hop.
///
/// A command in flight when the connection dies, or whose reply is later than
/// ``RedisClientConfiguration/commandTimeout``, fails with ``RedisError/Code/connectionClosed`` or
/// ``RedisError/Code/timeout`` and is never re-sent: it may have run. Commands queued while no
/// connection is up wait for the next connect (with back-off after failures) and fail only if
/// it fails. A cancelled caller gets `CancellationError` at once; its reply, when it arrives, is
/// read and dropped, so the connection stays in step.
final class RedisConnection: @unchecked Sendable {
    /// The loop that owns the channel and every field below that is not `let`.
    let eventLoop: any EventLoop
    private let configuration: RedisClientConfiguration
    private let tls: TLSContextSource?
    private let logger: Logger
    private let ids = Atomic<UInt64>(1)

    // MARK: Event-loop state

    private enum State {
        /// No channel; the next command connects.
        case idle
        /// Waiting for the back-off delay after a failed connect.
        case waitingToReconnect
        /// Connecting, TLS handshake, then AUTH / SELECT.
        case connecting(generation: Int)
        /// Ready for commands.
        case connected(any Channel)
        /// Shut down and closed.
        case closed
    }

    private enum Completion {
        case single(UnsafeContinuation<RedisValue, any Error>)
        case pipeline(PipelineReplies)
        /// AUTH / SELECT of a new connection.
        case handshake(what: String)
        /// The caller was cancelled: the reply is read and dropped.
        case dropped
    }

    private struct Request {
        let id: UInt64
        let bytes: [UInt8]
        let completion: Completion
        let replies: Int
    }

    private struct Waiter {
        let id: UInt64
        let sentAt: NIODeadline
        var completion: Completion
    }

    private var state: State = .idle
    /// Where this connection connects: the configured endpoint, or in Sentinel mode the primary
    /// the resolver named at the last connect.
    private var endpoint: RedisEndpoint
    /// Commands waiting for a connection (never written).
    private var unsent: CircularBuffer<Request> = []
    /// Commands written (or appended to ``outbox``), in the order their replies will come.
    private var inFlight: CircularBuffer<Waiter> = []
    /// Bytes appended since the last flush.
    private var outbox: ByteBuffer?
    private var flushScheduled = false
    private var isShuttingDown = false
    private var timeoutCheck: Scheduled<Void>?
    private var connectDeadline: Scheduled<Void>?
    private var generation = 0
    private var reconnectDelay: Duration
    private var nextConnectAttempt: NIODeadline?
    private var closedWaiters: [UnsafeContinuation<Void, Never>] = []

    init(configuration: RedisClientConfiguration, eventLoop: any EventLoop, tls: TLSContextSource?, index: Int, logger: Logger) {
        self.configuration = configuration
        self.eventLoop = eventLoop
        self.tls = tls
        self.reconnectDelay = configuration.initialReconnectDelay
        self.endpoint = configuration.endpoint
        var logger = logger
        logger[metadataKey: "redis.connection"] = "\(index)"
        self.logger = logger
    }

    // MARK: Callers

    func send(_ bytes: [UInt8]) async throws -> RedisValue {
        let id = ids.wrappingAdd(1, ordering: .relaxed).oldValue
        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<RedisValue, any Error>) in
                if Task.isCancelled {
                    continuation.resume(throwing: CancellationError())
                    return
                }
                hand(Request(id: id, bytes: bytes, completion: .single(continuation), replies: 1))
            }
        } onCancel: {
            eventLoop.execute { self.cancel(id) }
        }
    }

    func sendPipeline(_ bytes: [UInt8], count: Int) async -> [Result<RedisValue, RedisError>] {
        guard count > 0 else { return [] }
        let id = ids.wrappingAdd(1, ordering: .relaxed).oldValue
        return await withUnsafeContinuation { continuation in
            hand(Request(id: id, bytes: bytes, completion: .pipeline(PipelineReplies(count: count, continuation: continuation)), replies: count))
        }
    }

    func shutdown() {
        eventLoop.execute { self.beginShutdown() }
    }

    func closed() async {
        await withUnsafeContinuation { continuation in
            eventLoop.execute {
                if self.channelClosed { continuation.resume() } else { self.closedWaiters.append(continuation) }
            }
        }
    }

    /// Requests handed over from other threads, and whether the loop will come for them by itself.
    private struct Handover {
        var queue: [Request] = []
        /// A drain task is queued on the loop.
        var drainScheduled = false
        /// The loop has commands in flight on a live channel: their replies will come, and the
        /// loop drains the queue after every read, so a caller need not wake it. Set and cleared
        /// only on the loop (``updateHandover()``), true only while commands are in flight.
        var loopWillDrain = false
    }

    /// Requests handed over from other threads. Under load they wait here while the replies of
    /// the commands in flight come back, then go out together in one write (as they did on the
    /// thread-per-connection transport): one wake-up and one write per batch, not one each.
    private let incoming = Mutex(Handover())

    /// Passes `request` to the loop: directly when already on it.
    private func hand(_ request: Request) {
        if eventLoop.inEventLoop {
            submit(request)
            return
        }
        let wake = incoming.withLock { handover in
            handover.queue.append(request)
            guard !handover.loopWillDrain && !handover.drainScheduled else { return false }
            handover.drainScheduled = true
            return true
        }
        if wake { eventLoop.execute { self.drainIncoming() } }
    }

    /// On the loop: writes everything handed over so far in one write, now.
    private func drainIncoming() {
        var batch = incoming.withLock { handover in
            handover.drainScheduled = false
            var taken: [Request] = []
            swap(&taken, &handover.queue)
            return taken
        }
        if !batch.isEmpty {
            let flushWasScheduled = flushScheduled
            flushScheduled = true
            for request in batch { submit(request) }
            batch.removeAll()
            if !flushWasScheduled { flush() }
        }
        updateHandover()
    }

    /// On the loop, after the commands in flight or the state changed: callers may leave their
    /// commands for the loop only while replies are still to come on a live channel; otherwise
    /// whatever they left is taken now (and written, queued for a connect, or failed).
    private func updateHandover() {
        let canWait = repliesPending
        var leftover = incoming.withLock { handover in
            handover.loopWillDrain = canWait
            guard !canWait else { return [Request]() }
            var taken: [Request] = []
            swap(&taken, &handover.queue)
            return taken
        }
        guard !leftover.isEmpty else { return }
        for request in leftover { submit(request) }
        leftover.removeAll()
        // Written now: their replies will bring the loop back for whatever comes next. (Queued
        // for a connect instead: callers keep waking the loop, as they must.)
        if repliesPending { incoming.withLock { $0.loopWillDrain = true } }
    }

    /// Commands are in flight on a live channel, so a read will follow.
    private var repliesPending: Bool {
        guard case .connected = state else { return false }
        return !inFlight.isEmpty
    }

    /// The decoder finished a read: commands handed over meanwhile go out now.
    fileprivate func readComplete(on channel: any Channel) {
        guard case .connected(let current) = state, current === channel else { return }
        drainIncoming()
    }

    // MARK: On the loop: sending

    private func submit(_ request: Request) {
        if isShuttingDown {
            Self.fail(request.completion, with: RedisError(.shutdown, "the Redis client was shut down"))
            return
        }
        switch state {
        case .connected(let channel):
            append(request.bytes, waiter: Waiter(id: request.id, sentAt: .now(), completion: request.completion), channel: channel)
        case .idle:
            unsent.append(request)
            startConnect()
        case .waitingToReconnect, .connecting:
            unsent.append(request)
        case .closed:
            Self.fail(request.completion, with: RedisError(.shutdown, "the Redis client was shut down"))
        }
    }

    private func append(_ bytes: [UInt8], waiter: Waiter, channel: any Channel) {
        if outbox == nil { outbox = channel.allocator.buffer(capacity: max(bytes.count, 256)) }
        outbox!.writeBytes(bytes)
        inFlight.append(waiter)
        if timeoutCheck == nil { armTimeoutCheck(at: waiter.sentAt + TimeAmount(configuration.commandTimeout)) }
        if !flushScheduled {
            flushScheduled = true
            // After every task already queued on the loop, so their commands share this write.
            eventLoop.execute { self.flush() }
        }
    }

    private func flush() {
        flushScheduled = false
        guard let bytes = outbox else { return }
        outbox = nil
        guard case .connected(let channel) = state else { return }
        channel.writeAndFlush(bytes, promise: nil)
    }

    private func cancel(_ id: UInt64) {
        // A command still in the hand-over queue is taken first, so it is found below.
        drainIncoming()
        if let index = unsent.firstIndex(where: { $0.id == id }) {
            let request = unsent.remove(at: index)
            Self.fail(request.completion, with: CancellationError())
            return
        }
        if let index = inFlight.firstIndex(where: { $0.id == id }), case .single(let continuation) = inFlight[index].completion {
            // Written: the reply will come and is dropped then, keeping the replies in step.
            inFlight[index].completion = .dropped
            continuation.resume(throwing: CancellationError())
        }
    }

    // MARK: On the loop: replies

    /// One reply from `channel`'s decoder.
    fileprivate func received(_ value: RedisValue, on channel: any Channel) {
        guard isCurrent(channel) else { return }
        guard !inFlight.isEmpty else {
            channelFailed(channel, RedisError(.protocolError, "Redis sent a reply nobody asked for"))
            return
        }
        switch inFlight[inFlight.startIndex].completion {
        case .single(let continuation):
            inFlight.removeFirst()
            if case .error(let message) = value {
                continuation.resume(throwing: RedisError(.server, message))
                if configuration.primaryResolver != nil && message.hasPrefix("READONLY") {
                    // Sentinel mode: this node was demoted; reconnect to the primary.
                    channelFailed(channel, RedisError(.server, message))
                    return
                }
            } else {
                continuation.resume(returning: value)
            }
        case .pipeline(let replies):
            if replies.add(value) { inFlight.removeFirst() }
        case .dropped:
            inFlight.removeFirst()
        case .handshake(let what):
            inFlight.removeFirst()
            if case .error(let message) = value {
                connectFailed(RedisError(.connectionFailed, "\(what) with Redis at \(endpoint) failed: \(message)"))
                return
            }
            if inFlight.isEmpty { becameReady(channel) }
        }
        if inFlight.isEmpty {
            if isShuttingDown && unsent.isEmpty { close() }
            // Nothing left in flight: callers must wake the loop again.
            updateHandover()
        }
    }

    private func isCurrent(_ channel: any Channel) -> Bool {
        switch state {
        case .connected(let current): current === channel
        case .connecting: connectingChannel === channel
        default: false
        }
    }

    // MARK: On the loop: connecting

    /// The TLS context of the connect in progress or the current channel.
    private var currentTLS: TLSClientContext?

    /// The channel of a connect in progress (before it is ready).
    private var connectingChannel: (any Channel)?

    private func startConnect() {
        if let next = nextConnectAttempt, next > .now() {
            state = .waitingToReconnect
            eventLoop.scheduleTask(deadline: next) { self.connect() }
            return
        }
        connect()
    }

    private func connect() {
        generation += 1
        let generation = generation
        state = .connecting(generation: generation)
        guard let resolver = configuration.primaryResolver else {
            open(generation)
            return
        }
        // Sentinel mode: ask for the primary (usually cached) before every connect.
        Task {
            do {
                let primary = try await resolver.primary()
                eventLoop.execute {
                    guard case .connecting(let current) = self.state, current == generation else { return }
                    self.endpoint = primary
                    self.open(generation)
                }
            } catch {
                let redisError = error as? RedisError ?? RedisError(.primaryUnavailable, "\(error)")
                eventLoop.execute {
                    guard case .connecting(let current) = self.state, current == generation else { return }
                    self.connectFailed(redisError)
                }
            }
        }
    }

    /// Sentinel mode: tells the resolver that `error` on this connection's primary may mean it
    /// is no longer the primary (a refused connect, a lost connection, `READONLY`).
    private func reportToResolver(_ error: RedisError) {
        guard let resolver = configuration.primaryResolver, SentinelResolver.invalidatesPrimary(error) else { return }
        resolver.invalidate(endpoint)
    }

    /// Sentinel mode: the primary moved away from `old`; a connection to it is dropped (commands
    /// in flight fail with `connectionClosed`, never re-sent) and the next command connects to
    /// the new one.
    func primaryMoved(from old: RedisEndpoint) {
        eventLoop.execute {
            guard case .connected(let channel) = self.state, self.endpoint == old else { return }
            self.channelFailed(channel, RedisError(.connectionClosed, "the Redis primary moved away from \(old) (Sentinel failover)"))
        }
    }

    private func open(_ generation: Int) {
        if case .tcp(_, let port) = endpoint, !RedisEndpoint.ports.contains(port) {
            connectFailed(RedisError(.connectionFailed, "cannot connect to Redis at \(endpoint): port \(port) is out of range (1–65535)"))
            return
        }
        let connectTimeout = TimeAmount(max(configuration.connectTimeout, .milliseconds(1)))
        connectDeadline = eventLoop.scheduleTask(in: connectTimeout) {
            guard case .connecting(let current) = self.state, current == generation else { return }
            self.connectFailed(RedisError(.timeout, "cannot connect to Redis at \(self.endpoint): no answer within \(self.configuration.connectTimeout)"))
        }
        let tls: TLSClientContext?
        do {
            tls = try self.tls?.context()
        } catch {
            connectFailed(error as? RedisError ?? RedisError(.tlsFailed, "\(error)"))
            return
        }
        let endpoint = self.endpoint
        currentTLS = tls
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(connectTimeout)
            .channelInitializer { channel in
                // On this loop: known before the TLS handshake can fail, so its error is a connect error.
                if case .connecting(let current) = self.state, current == generation { self.connectingChannel = channel }
                return channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        let handler = try tls.makeHandler(for: endpoint)
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                    try channel.pipeline.syncOperations.addHandler(RedisReplyDecoder(connection: self))
                }
            }
        let future: EventLoopFuture<any Channel>
        switch endpoint {
        case .tcp(let host, let port):
            future = bootstrap.channelOption(.socketOption(.so_keepalive), value: 1).connect(host: host, port: port)
        case .unix(let path):
            future = bootstrap.connect(unixDomainSocketPath: path)
        }
        future.whenComplete { result in
            guard case .connecting(let current) = self.state, current == generation else {
                // Timed out (or shut down) meanwhile: this channel is not wanted.
                if case .success(let channel) = result { channel.close(promise: nil) }
                return
            }
            switch result {
            case .success(let channel):
                self.connectingChannel = channel
                if tls == nil { self.handshake(channel) }
                // With TLS, the decoder calls `tlsHandshakeCompleted` once the handshake is done.
            case .failure(let error):
                self.connectFailed(Self.connectError(error, endpoint: endpoint, tls: tls))
            }
        }
    }

    fileprivate func tlsHandshakeCompleted(on channel: any Channel) {
        guard connectingChannel === channel, case .connecting = state else { return }
        handshake(channel)
    }

    /// AUTH and SELECT, pipelined; the connection is ready when both answered OK.
    private func handshake(_ channel: any Channel) {
        var steps: [([any RedisArgument], String)] = []
        if let password = configuration.password {
            var auth: [any RedisArgument] = ["AUTH"]
            if let username = configuration.username { auth.append(username) }
            auth.append(password)
            steps.append((auth, "authentication"))
        }
        if configuration.database != 0 { steps.append((["SELECT", configuration.database], "SELECT \(configuration.database)")) }
        guard !steps.isEmpty else {
            becameReady(channel)
            return
        }
        var buffer = channel.allocator.buffer(capacity: 128)
        for (arguments, what) in steps {
            buffer.writeBytes(RedisCommand.encode(arguments))
            inFlight.append(Waiter(id: 0, sentAt: .now(), completion: .handshake(what: what)))
        }
        channel.writeAndFlush(buffer, promise: nil)
    }

    private func becameReady(_ channel: any Channel) {
        connectDeadline?.cancel()
        connectDeadline = nil
        connectingChannel = nil
        if nextConnectAttempt != nil { logger.info("Reconnected to Redis", metadata: ["endpoint": "\(endpoint)"]) }
        nextConnectAttempt = nil
        reconnectDelay = configuration.initialReconnectDelay
        state = .connected(channel)
        while let request = unsent.popFirst() {
            append(request.bytes, waiter: Waiter(id: request.id, sentAt: .now(), completion: request.completion), channel: channel)
        }
        if isShuttingDown && inFlight.isEmpty { close() }
    }

    /// A connect, TLS handshake or AUTH / SELECT failed: the queued commands fail with it (none
    /// was written), and the next command waits for the back-off delay.
    private func connectFailed(_ error: RedisError) {
        connectDeadline?.cancel()
        connectDeadline = nil
        // Forgotten before it is closed: its close must not count as a second failure.
        let channel = connectingChannel
        connectingChannel = nil
        state = .idle
        channel?.close(promise: nil)
        logger.warning("Cannot connect to Redis", metadata: ["endpoint": "\(endpoint)", "error": "\(error.message)"])
        reportToResolver(error)
        nextConnectAttempt = .now() + TimeAmount(reconnectDelay)
        reconnectDelay = min(reconnectDelay * 2, configuration.maximumReconnectDelay)
        failInFlight(with: error)
        while let request = unsent.popFirst() { Self.fail(request.completion, with: error) }
        if isShuttingDown { close() }
    }

    // MARK: On the loop: failures and timeouts

    /// `channel` closed or failed. While connecting it is a failed connect; once connected,
    /// every command in flight fails (none is re-sent) and commands queued since reconnect.
    fileprivate func channelFailed(_ channel: any Channel, _ error: any Error) {
        if connectingChannel === channel, case .connecting = state {
            connectFailed(Self.connectError(error, endpoint: endpoint, tls: currentTLS))
            return
        }
        guard case .connected(let current) = state, current === channel else { return }
        let redisError = error as? RedisError
            ?? RedisError(.connectionClosed, "the connection to Redis at \(endpoint) was lost: \(Self.describe(error))", underlying: error)
        if inFlight.isEmpty {
            logger.info("Redis connection closed while idle; the next command reconnects", metadata: ["endpoint": "\(endpoint)"])
        } else {
            logger.warning("Redis connection lost", metadata: ["endpoint": "\(endpoint)", "error": "\(redisError.message)"])
        }
        state = .idle
        outbox = nil
        channel.close(promise: nil)
        reportToResolver(redisError)
        failInFlight(with: redisError)
        if isShuttingDown {
            close()
        } else if !unsent.isEmpty {
            startConnect()
        }
        // No replies will come on this channel: take what callers left for the loop.
        updateHandover()
    }

    fileprivate func channelInactive(_ channel: any Channel) {
        channelFailed(channel, RedisError(.connectionClosed, "Redis closed the connection at \(endpoint)"))
    }

    private func failInFlight(with error: RedisError) {
        timeoutCheck?.cancel()
        timeoutCheck = nil
        while let waiter = inFlight.popFirst() { Self.fail(waiter.completion, with: error) }
    }

    private func armTimeoutCheck(at deadline: NIODeadline) {
        timeoutCheck = eventLoop.scheduleTask(deadline: deadline) { self.checkTimeout() }
    }

    /// The oldest command in flight waited longer than the command timeout: the connection is
    /// dropped (Redis is stuck or the network is), and everything in flight fails with `timeout`.
    private func checkTimeout() {
        timeoutCheck = nil
        guard let oldest = inFlight.first, case .connected(let channel) = state else { return }
        let deadline = oldest.sentAt + TimeAmount(configuration.commandTimeout)
        if deadline > .now() {
            armTimeoutCheck(at: deadline)
            return
        }
        channelFailed(channel, RedisError(.timeout, "Redis did not answer in time (command timeout \(configuration.commandTimeout))"))
    }

    private static func fail(_ completion: Completion, with error: any Error) {
        switch completion {
        case .single(let continuation): continuation.resume(throwing: error)
        case .pipeline(let replies): replies.failRest(with: error as? RedisError ?? RedisError(.connectionClosed, "\(error)"))
        case .handshake, .dropped: break
        }
    }

    // MARK: On the loop: shutting down

    private func beginShutdown() {
        isShuttingDown = true
        switch state {
        case .idle, .waitingToReconnect:
            if unsent.isEmpty { close() }
        case .connected:
            if inFlight.isEmpty && unsent.isEmpty { close() }
        case .connecting, .closed:
            break
        }
    }

    private func close() {
        timeoutCheck?.cancel()
        timeoutCheck = nil
        let channel: (any Channel)? = if case .connected(let channel) = state { channel } else { nil }
        state = .closed
        guard let channel else {
            resumeClosedWaiters()
            return
        }
        channel.close().whenComplete { _ in self.resumeClosedWaiters() }
    }

    private var channelClosed = false

    private func resumeClosedWaiters() {
        channelClosed = true
        let waiters = closedWaiters
        closedWaiters = []
        for waiter in waiters { waiter.resume() }
    }

    // MARK: Errors

    private static func connectError(_ error: any Error, endpoint: RedisEndpoint, tls: TLSClientContext? = nil) -> RedisError {
        if let redisError = error as? RedisError { return redisError }
        // The peer closed the connection during the handshake (a server stopping or restarting,
        // a proxy dropping it): nothing about certificates or settings, so a connection failure,
        // retried like a refused connect, not a TLS failure an operator must fix.
        if TLSClientContext.isClosedDuringHandshake(error) {
            return RedisError(.connectionFailed, "cannot connect to Redis at \(endpoint): the server closed the connection during the TLS handshake", underlying: error)
        }
        if TLSClientContext.isTLSError(error) {
            let name = tls?.verifiedName(for: endpoint)
            return RedisError(.tlsFailed, "TLS with Redis at \(endpoint) failed: \(TLSClientContext.describe(error, expecting: name))", underlying: error)
        }
        if let channelError = error as? ChannelError, case .connectTimeout = channelError {
            return RedisError(.timeout, "cannot connect to Redis at \(endpoint): timed out", underlying: error)
        }
        return RedisError(.connectionFailed, "cannot connect to Redis at \(endpoint): \(describe(error))", underlying: error)
    }

    private static func describe(_ error: any Error) -> String {
        if let io = error as? IOError { return io.description }
        return String(describing: error)
    }
}

/// The replies of one pipeline, collected in order until the last one resumes the caller.
/// Used only on the connection's event loop.
final class PipelineReplies: @unchecked Sendable {
    private var results: [Result<RedisValue, RedisError>]
    private let count: Int
    private let continuation: UnsafeContinuation<[Result<RedisValue, RedisError>], Never>

    init(count: Int, continuation: UnsafeContinuation<[Result<RedisValue, RedisError>], Never>) {
        self.count = count
        self.continuation = continuation
        self.results = []
        results.reserveCapacity(count)
    }

    /// Adds one reply; `true` when it was the last.
    func add(_ value: RedisValue) -> Bool {
        if case .error(let message) = value {
            results.append(.failure(RedisError(.server, message)))
        } else {
            results.append(.success(value))
        }
        guard results.count == count else { return false }
        continuation.resume(returning: results)
        return true
    }

    /// Fails the replies not yet received and resumes the caller.
    func failRest(with error: RedisError) {
        while results.count < count { results.append(.failure(error)) }
        continuation.resume(returning: results)
    }
}

/// The channel handler: feeds received bytes to a hiredis reader (`redisReaderFeed`) and hands
/// every complete reply (`redisReaderGetReply`) to the connection, in order.
final class RedisReplyDecoder: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let connection: RedisConnection
    private let reader: UnsafeMutablePointer<redisReader>

    fileprivate init(connection: RedisConnection) {
        self.connection = connection
        // Only fails when out of memory, where nothing else would work either.
        self.reader = redisReaderCreate()!
    }

    deinit {
        redisReaderFree(reader)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        let fed = buffer.withUnsafeReadableBytes { bytes in
            redisReaderFeed(reader, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
        }
        guard fed == REDIS_OK else {
            connection.channelFailed(context.channel, RedisError(.protocolError, "protocol error: hiredis could not buffer the reply"))
            return
        }
        while true {
            var raw: UnsafeMutableRawPointer?
            guard redisReaderGetReply(reader, &raw) == REDIS_OK else {
                let text = withUnsafePointer(to: &reader.pointee.errstr) {
                    $0.withMemoryRebound(to: CChar.self, capacity: 128) { String(cString: $0) }
                }
                connection.channelFailed(context.channel, RedisError(.protocolError, "protocol error: \(text)"))
                return
            }
            guard let raw else { return }
            let value = Self.value(of: raw.assumingMemoryBound(to: redisReply.self))
            freeReplyObject(raw)
            connection.received(value, on: context.channel)
        }
    }

    /// A hiredis reply tree as a ``RedisValue`` (copied: the reply is freed right after).
    static func value(of reply: UnsafeMutablePointer<redisReply>) -> RedisValue {
        let r = reply.pointee
        switch r.type {
        case REDIS_REPLY_STRING:
            return .bulkString(r.len == 0 ? [] : Array(UnsafeRawBufferPointer(start: r.str, count: r.len)))
        case REDIS_REPLY_STATUS:
            return .simpleString(String(decoding: UnsafeRawBufferPointer(start: r.str, count: r.len), as: UTF8.self))
        case REDIS_REPLY_ERROR:
            return .error(String(decoding: UnsafeRawBufferPointer(start: r.str, count: r.len), as: UTF8.self))
        case REDIS_REPLY_INTEGER:
            return .integer(Int(r.integer))
        case REDIS_REPLY_ARRAY:
            var elements: [RedisValue] = []
            elements.reserveCapacity(r.elements)
            for index in 0..<r.elements { elements.append(value(of: r.element[index]!)) }
            return .array(elements)
        default:
            return .null
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        connection.readComplete(on: context.channel)
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        connection.channelInactive(context.channel)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        connection.channelFailed(context.channel, error)
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted = event as? TLSUserEvent {
            connection.tlsHandshakeCompleted(on: context.channel)
        }
        context.fireUserInboundEventTriggered(event)
    }
}

extension TimeAmount {
    /// A Swift `Duration` as NIO's nanoseconds (rounded down, at most `Int64.max`).
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        let (product, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        self = .nanoseconds(overflow ? .max : product &+ attoseconds / 1_000_000_000)
    }
}
