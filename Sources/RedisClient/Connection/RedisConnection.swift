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
    let configuration: RedisClientConfiguration
    let tls: TLSContextSource?
    let logger: Logger
    let ids = Atomic<UInt64>(1)

    // MARK: Event-loop state

    enum State {
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

    enum Completion {
        case single(UnsafeContinuation<RedisValue, any Error>)
        case pipeline(PipelineReplies)
        /// AUTH / SELECT of a new connection.
        case handshake(what: String)
        /// The caller was cancelled: the reply is read and dropped.
        case dropped
    }

    struct Request {
        let id: UInt64
        let bytes: [UInt8]
        let completion: Completion
        let replies: Int
    }

    struct Waiter {
        let id: UInt64
        let sentAt: NIODeadline
        var completion: Completion
    }

    var state: State = .idle
    /// Where this connection connects: the configured endpoint, or in Sentinel mode the primary
    /// the resolver named at the last connect.
    var endpoint: RedisEndpoint
    /// Commands waiting for a connection (never written).
    var unsent: CircularBuffer<Request> = []
    /// Commands written (or appended to ``outbox``), in the order their replies will come.
    var inFlight: CircularBuffer<Waiter> = []
    /// Bytes appended since the last flush.
    var outbox: ByteBuffer?
    var flushScheduled = false
    var isShuttingDown = false
    var timeoutCheck: Scheduled<Void>?
    var connectDeadline: Scheduled<Void>?
    var generation = 0
    var reconnectDelay: Duration
    var nextConnectAttempt: NIODeadline?
    var closedWaiters: [UnsafeContinuation<Void, Never>] = []
    /// The TLS context of the connect in progress or the current channel.
    var currentTLS: TLSClientContext?

    /// The channel of a connect in progress (before it is ready).
    var connectingChannel: (any Channel)?

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
    struct Handover {
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
    let incoming = Mutex(Handover())

    /// Passes `request` to the loop: directly when already on it.
    func hand(_ request: Request) {
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
    func drainIncoming() {
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
    func updateHandover() {
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
    var repliesPending: Bool {
        guard case .connected = state else { return false }
        return !inFlight.isEmpty
    }

    /// The decoder finished a read: commands handed over meanwhile go out now.
    func readComplete(on channel: any Channel) {
        guard case .connected(let current) = state, current === channel else { return }
        drainIncoming()
    }

    // MARK: On the loop: sending

    func submit(_ request: Request) {
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

    func append(_ bytes: [UInt8], waiter: Waiter, channel: any Channel) {
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

    func flush() {
        flushScheduled = false
        guard let bytes = outbox else { return }
        outbox = nil
        guard case .connected(let channel) = state else { return }
        channel.writeAndFlush(bytes, promise: nil)
    }

    func cancel(_ id: UInt64) {
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
    func received(_ value: RedisValue, on channel: any Channel) {
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

    func isCurrent(_ channel: any Channel) -> Bool {
        switch state {
        case .connected(let current): current === channel
        case .connecting: connectingChannel === channel
        default: false
        }
    }

    // MARK: On the loop: shutting down

    func beginShutdown() {
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

    func close() {
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

    var channelClosed = false

    func resumeClosedWaiters() {
        channelClosed = true
        let waiters = closedWaiters
        closedWaiters = []
        for waiter in waiters { waiter.resume() }
    }

}
