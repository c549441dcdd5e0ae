import CHiredis
import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One hiredis connection, owned by its own thread: the transport before ``RedisConnection``
/// (SwiftNIO), kept for one release so the benchmarks can measure both in one run
/// (``RedisClientConfiguration/transport`` `.threads`).
///
/// Async callers append encoded commands to a queue and suspend. The connection's thread takes
/// everything queued at once, writes it with `redisAppendFormattedCommand` (one `write` for the
/// whole batch), reads the replies in order with `redisGetReply`, and resumes each caller. So
/// commands that arrive while a batch is in flight are pipelined together in the next batch,
/// and no blocking hiredis call ever runs on Swift's cooperative thread pool.
final class ThreadedRedisConnection: PooledConnection, @unchecked Sendable {
    enum Completion {
        case single(UnsafeContinuation<RedisValue, any Error>)
        case multiple(count: Int, UnsafeContinuation<[Result<RedisValue, RedisError>], Never>)
    }

    struct Pending {
        let bytes: [UInt8]
        let completion: Completion
    }

    private let configuration: RedisClientConfiguration
    private let logger: Logger
    private let lock = ConditionLock()

    // Guarded by `lock`.
    private var queue: [Pending] = []
    private var isShuttingDown = false
    private var thread: pthread_t?
    /// The kernel id of the connection's thread (0 until it runs), so tests can see it is joined.
    private(set) var kernelThreadID: Int32 {
        get { lock.withLock { _kernelThreadID } }
        set { lock.withLock { _kernelThreadID = newValue } }
    }
    private var _kernelThreadID: Int32 = 0

    // Owned by the connection's thread.
    private var context: UnsafeMutablePointer<redisContext>?
    private var reconnectDelay: Duration
    private var nextConnectAttempt: ContinuousClock.Instant?

    init(configuration: RedisClientConfiguration, index: Int, logger: Logger) {
        self.configuration = configuration
        self.reconnectDelay = configuration.initialReconnectDelay
        var logger = logger
        logger[metadataKey: "redis.connection"] = "\(index)"
        self.logger = logger
        let thread = startThread { [self] in
            chiredis_set_current_thread_name("redis-conn-\(index % 10_000)")
            kernelThreadID = chiredis_current_thread_id()
            runLoop()
        }
        lock.withLock { self.thread = thread }
    }

    /// Sends one encoded command and waits for its reply.
    func send(_ bytes: [UInt8]) async throws -> RedisValue {
        try await withUnsafeThrowingContinuation { continuation in
            if !enqueue(Pending(bytes: bytes, completion: .single(continuation))) {
                continuation.resume(throwing: RedisError(.shutdown, "the Redis client was shut down"))
            }
        }
    }

    /// Sends `count` encoded commands back to back on this connection and waits for all replies.
    func sendPipeline(_ bytes: [UInt8], count: Int) async -> [Result<RedisValue, RedisError>] {
        await withUnsafeContinuation { continuation in
            if !enqueue(Pending(bytes: bytes, completion: .multiple(count: count, continuation))) {
                continuation.resume(returning: Array(repeating: .failure(RedisError(.shutdown, "the Redis client was shut down")), count: count))
            }
        }
    }

    private func enqueue(_ pending: Pending) -> Bool {
        lock.lock()
        if isShuttingDown {
            lock.unlock()
            return false
        }
        queue.append(pending)
        let wasEmpty = queue.count == 1
        lock.unlock()
        if wasEmpty { lock.signal() }
        return true
    }

    /// Stops accepting commands, lets queued ones finish, closes the socket and joins the thread.
    func shutdown() {
        let thread: pthread_t? = lock.withLock {
            isShuttingDown = true
            defer { self.thread = nil }
            return self.thread
        }
        lock.signal()
        if let thread { pthread_join(thread, nil) }
    }

    /// ``shutdown()`` joins the thread, so once it returned the connection is closed.
    func closed() async {}

    // MARK: - The connection's thread

    private func runLoop() {
        var batch: [Pending] = []
        while true {
            lock.lock()
            while queue.isEmpty && !isShuttingDown { lock.wait() }
            if queue.isEmpty {
                lock.unlock()
                break
            }
            swap(&batch, &queue)
            lock.unlock()
            process(batch)
            batch.removeAll(keepingCapacity: true)
        }
        disconnect()
    }

    private func process(_ batch: [Pending]) {
        let ctx: UnsafeMutablePointer<redisContext>
        switch connectIfNeeded() {
        case .success(let connected): ctx = connected
        case .failure(let error):
            fail(batch[...], with: error)
            return
        }
        for pending in batch {
            let appended = pending.bytes.withUnsafeBufferPointer { buffer in
                buffer.withMemoryRebound(to: CChar.self) { chars in
                    redisAppendFormattedCommand(ctx, chars.baseAddress, chars.count)
                }
            }
            if appended != REDIS_OK {
                // Out of memory in hiredis' output buffer: nothing can be trusted on this context.
                let error = RedisError(.connectionClosed, "hiredis could not buffer the command")
                disconnect()
                fail(batch[...], with: error)
                return
            }
        }
        for index in batch.indices {
            switch batch[index].completion {
            case .single(let continuation):
                switch readReply(ctx) {
                case .success(.error(let message)):
                    continuation.resume(throwing: RedisError(.server, message))
                case .success(let value):
                    continuation.resume(returning: value)
                case .failure(let error):
                    continuation.resume(throwing: error)
                    fail(batch[(index + 1)...], with: error)
                    return
                }
            case .multiple(let count, let continuation):
                var results: [Result<RedisValue, RedisError>] = []
                results.reserveCapacity(count)
                var connectionError: RedisError?
                for _ in 0..<count {
                    if let connectionError {
                        results.append(.failure(connectionError))
                        continue
                    }
                    switch readReply(ctx) {
                    case .success(.error(let message)): results.append(.failure(RedisError(.server, message)))
                    case .success(let value): results.append(.success(value))
                    case .failure(let error):
                        connectionError = error
                        results.append(.failure(error))
                    }
                }
                continuation.resume(returning: results)
                if let connectionError {
                    fail(batch[(index + 1)...], with: connectionError)
                    return
                }
            }
        }
    }

    private func fail(_ pendings: ArraySlice<Pending>, with error: RedisError) {
        for pending in pendings {
            switch pending.completion {
            case .single(let continuation): continuation.resume(throwing: error)
            case .multiple(let count, let continuation):
                continuation.resume(returning: Array(repeating: .failure(error), count: count))
            }
        }
    }

    /// Reads one reply. A failure here is a connection-level failure: the context is freed and
    /// every command still in flight on it fails (none is re-sent).
    private func readReply(_ ctx: UnsafeMutablePointer<redisContext>) -> Result<RedisValue, RedisError> {
        var raw: UnsafeMutableRawPointer?
        if redisGetReply(ctx, &raw) != REDIS_OK || raw == nil {
            let savedErrno = errno
            let error = Self.contextError(ctx, errno: savedErrno, whileConnecting: false)
            logger.warning("Redis connection lost", metadata: ["error": "\(error.message)"])
            disconnect()
            return .failure(error)
        }
        let reply = raw!.assumingMemoryBound(to: redisReply.self)
        defer { freeReplyObject(raw) }
        return .success(Self.value(of: reply))
    }

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

    private static func contextError(_ ctx: UnsafeMutablePointer<redisContext>, errno savedErrno: Int32, whileConnecting: Bool) -> RedisError {
        let text = withUnsafePointer(to: &ctx.pointee.errstr) {
            $0.withMemoryRebound(to: CChar.self, capacity: 128) { String(cString: $0) }
        }
        let timedOut = savedErrno == EAGAIN || savedErrno == EWOULDBLOCK || savedErrno == ETIMEDOUT
            || text.contains("temporarily unavailable") || text.contains("timed out")
        if timedOut { return RedisError(.timeout, "Redis did not answer in time (\(text))") }
        switch ctx.pointee.err {
        case REDIS_ERR_EOF: return RedisError(.connectionClosed, "Redis closed the connection: \(text)")
        case REDIS_ERR_PROTOCOL: return RedisError(.protocolError, "protocol error: \(text)")
        default: return RedisError(whileConnecting ? .connectionFailed : .connectionClosed, text)
        }
    }

    // MARK: Connecting

    private func connectIfNeeded() -> Result<UnsafeMutablePointer<redisContext>, RedisError> {
        if let ctx = context {
            if !Self.peerHasClosed(ctx) { return .success(ctx) }
            // Closed while idle (CLIENT KILL, server restart, idle timeout): nothing of this batch
            // was written yet, so reconnecting before writing loses nothing.
            logger.info("Redis connection closed while idle; reconnecting")
            disconnect()
        }
        if let next = nextConnectAttempt {
            let wait = next - ContinuousClock.now
            if wait > .zero { Self.sleep(wait) }
        }
        do {
            let ctx = try connect()
            context = ctx
            if nextConnectAttempt != nil { logger.info("Reconnected to Redis", metadata: ["endpoint": "\(configuration.endpoint)"]) }
            nextConnectAttempt = nil
            reconnectDelay = configuration.initialReconnectDelay
            return .success(ctx)
        } catch {
            let redisError = error as? RedisError ?? RedisError(.connectionFailed, "\(error)")
            logger.warning("Cannot connect to Redis", metadata: ["endpoint": "\(configuration.endpoint)", "error": "\(redisError.message)"])
            nextConnectAttempt = .now + reconnectDelay
            reconnectDelay = min(reconnectDelay * 2, configuration.maximumReconnectDelay)
            return .failure(redisError)
        }
    }

    private func connect() throws -> UnsafeMutablePointer<redisContext> {
        if case .tcp(_, let port) = configuration.endpoint, !RedisEndpoint.ports.contains(port) {
            throw RedisError(.connectionFailed, "cannot connect to Redis at \(configuration.endpoint): port \(port) is out of range (1–65535)")
        }
        let connectTimeout = Self.timeval(configuration.connectTimeout)
        let made: UnsafeMutablePointer<redisContext>? = switch configuration.endpoint {
        case .tcp(let host, let port): redisConnectWithTimeout(host, Int32(port), connectTimeout)
        case .unix(let path): redisConnectUnixWithTimeout(path, connectTimeout)
        }
        guard let ctx = made else { throw RedisError(.connectionFailed, "cannot allocate a hiredis context") }
        if ctx.pointee.err != 0 {
            let error = Self.contextError(ctx, errno: errno, whileConnecting: true)
            redisFree(ctx)
            throw RedisError(error.code == .timeout ? .timeout : .connectionFailed,
                             "cannot connect to Redis at \(configuration.endpoint): \(error.message)")
        }
        redisSetTimeout(ctx, connectTimeout)
        if case .tcp = configuration.endpoint { _ = redisEnableKeepAlive(ctx) }
        do {
            if let password = configuration.password {
                var auth: [any RedisArgument] = ["AUTH"]
                if let username = configuration.username { auth.append(username) }
                auth.append(password)
                try handshake(ctx, auth, what: "authentication")
            }
            if configuration.database != 0 {
                try handshake(ctx, ["SELECT", configuration.database], what: "SELECT \(configuration.database)")
            }
        } catch {
            redisFree(ctx)
            throw error
        }
        redisSetTimeout(ctx, Self.timeval(configuration.commandTimeout))
        return ctx
    }

    private func handshake(_ ctx: UnsafeMutablePointer<redisContext>, _ arguments: [any RedisArgument], what: String) throws {
        let bytes = RedisCommand.encode(arguments)
        bytes.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { _ = redisAppendFormattedCommand(ctx, $0.baseAddress, $0.count) }
        }
        var raw: UnsafeMutableRawPointer?
        if redisGetReply(ctx, &raw) != REDIS_OK || raw == nil {
            let error = Self.contextError(ctx, errno: errno, whileConnecting: true)
            throw RedisError(error.code == .timeout ? .timeout : .connectionFailed,
                             "\(what) with Redis at \(configuration.endpoint) failed: \(error.message)")
        }
        defer { freeReplyObject(raw) }
        if case .error(let message) = Self.value(of: raw!.assumingMemoryBound(to: redisReply.self)) {
            throw RedisError(.connectionFailed, "\(what) with Redis at \(configuration.endpoint) failed: \(message)")
        }
    }

    private func disconnect() {
        if let ctx = context {
            redisFree(ctx)
            context = nil
        }
    }

    /// Whether the server closed an idle connection (readable with nothing in flight means EOF).
    private static func peerHasClosed(_ ctx: UnsafeMutablePointer<redisContext>) -> Bool {
        var descriptor = pollfd(fd: ctx.pointee.fd, events: Int16(POLLIN), revents: 0)
        return poll(&descriptor, 1, 0) > 0
    }

    /// A socket timeout of at least 1 ms: for `SO_RCVTIMEO`/`SO_SNDTIMEO` zero means no timeout,
    /// and a negative one is refused (leaving none), so either would wait forever.
    private static func timeval(_ duration: Duration) -> timeval {
        let (seconds, attoseconds) = max(duration, .milliseconds(1)).components
        return CHiredis.timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
    }

    private static func sleep(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        var request = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
        nanosleep(&request, nil)
    }
}
