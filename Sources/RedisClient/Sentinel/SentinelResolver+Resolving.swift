import Logging
import ServiceLifecycle
import Synchronization

/// Resolving the primary: ask the sentinels in turn, verify the named node answers `ROLE` with
/// `master`, and say what each sentinel said when none does.
extension SentinelResolver {
    // MARK: - Resolving

    /// The primary: the cached one, or the first address a sentinel names that answers `ROLE`
    /// with `master`. Concurrent callers share one resolution.
    /// - Throws: ``RedisError/Code/primaryUnavailable`` when no sentinel named a verified primary
    ///   within ``RedisClientConfiguration/clusterRetryTimeout`` (the message names the master and
    ///   what each sentinel said in the last round); ``RedisError/Code/shutdown`` after
    ///   ``shutdown()``; `CancellationError` at once when the calling task is cancelled.
    public func primary() async throws -> RedisEndpoint {
        enum Next {
            case cached(RedisEndpoint)
            case wait(ticket: Int)
        }
        let next: Next = try state.withLock { state in
            guard !state.isShutDown else { throw RedisError(.shutdown, "the Sentinel resolver was shut down") }
            if let current = state.current { return .cached(current) }
            state.nextTicket += 1
            return .wait(ticket: state.nextTicket)
        }
        let ticket: Int
        switch next {
        case .cached(let endpoint): return endpoint
        case .wait(let waiting): ticket = waiting
        }
        // A cancelled caller gets CancellationError at once; the resolution it may have started
        // runs on (bounded by the retry timeout) for the other callers and the cache.
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<RedisEndpoint, any Error>) in
                enum Registration {
                    case waiting
                    case done(Result<RedisEndpoint, any Error>)
                }
                let registration: Registration = state.withLock { state in
                    if state.isShutDown { return .done(.failure(RedisError(.shutdown, "the Sentinel resolver was shut down"))) }
                    if let current = state.current { return .done(.success(current)) }
                    // Checked under the lock that the cancellation handler takes too: either the
                    // handler finds this waiter, or this sees the cancellation.
                    if Task.isCancelled { return .done(.failure(CancellationError())) }
                    state.waiters[ticket] = continuation
                    if state.resolution == nil {
                        state.resolution = Task { await self.resolveForWaiters() }
                    }
                    return .waiting
                }
                if case .done(let result) = registration { continuation.resume(with: result) }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: ticket) }
            waiter?.resume(throwing: CancellationError())
        }
    }

    /// Runs one resolution and hands its result to every caller waiting at its end.
    func resolveForWaiters() async {
        let result = await resolve()
        let waiters = state.withLock { state in
            state.resolution = nil
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume(with: result.mapError { $0 as any Error }) }
    }

    /// Drops the cached primary if it is `endpoint` (a later ``primary()`` asks the sentinels
    /// again). An `endpoint` that is no longer the cached one (the cache already moved on) is
    /// ignored, so a late error from an old connection does not undo a switch.
    public func invalidate(_ endpoint: RedisEndpoint) {
        let dropped = state.withLock { state in
            guard state.current == endpoint else { return false }
            state.current = nil
            return true
        }
        if dropped { logger.debug("Redis Sentinel: primary invalidated", metadata: ["redis.primary": "\(endpoint)"]) }
    }

    /// Whether `error`, from a command or connect to the cached primary, means it may no longer be
    /// the primary, so the pool should call ``invalidate(_:)`` with that endpoint: a refused or
    /// failed connect (`.connectionFailed`), a connection lost (`.connectionClosed`), or a
    /// `READONLY` reply (a demoted primary; the command did not run). A timeout is not one of
    /// them: a slow primary is still the primary, and the sentinels decide when it is not.
    static func invalidatesPrimary(_ error: RedisError) -> Bool {
        switch error.code {
        case .connectionFailed, .connectionClosed: true
        case .server: error.serverErrorPrefix == "READONLY"
        default: false
        }
    }

    /// Asks `endpoint` for `ROLE` (with the data nodes' credentials) and returns only when it
    /// answers `master`.
    /// - Throws: ``RedisError/Code/primaryUnavailable`` when the node answers another role (a
    ///   replica says `slave`), or the ``RedisError`` of a failed connect or command.
    public func verifyPrimary(_ endpoint: RedisEndpoint) async throws {
        var node = configuration
        node.endpoint = endpoint
        node.clusterSeeds = []
        node.sentinel = nil
        node.primaryResolver = nil
        node.database = 0
        node.connectionCount = 1
        node.connectTimeout = queryTimeout
        node.commandTimeout = queryTimeout
        node.initialReconnectDelay = .milliseconds(10)
        node.maximumReconnectDelay = .milliseconds(100)
        let client = RedisClient(configuration: node, logger: clientLogger)
        defer { client.shutdown() }
        let reply = try await client.send("ROLE")
        guard let fields = reply.array, let role = fields.first?.string else {
            throw RedisError(.protocolError, "\(endpoint) answered ROLE with \(Self.describe(reply))")
        }
        guard role == "master" else {
            var detail = "ROLE says \(role.prefix(32))"
            // A replica's ROLE is [slave, master-host, master-port, state, offset].
            if role == "slave", fields.count >= 3, let host = fields[1].string, let port = fields[2].int {
                detail += " of \(host.prefix(64)):\(port)"
            }
            throw RedisError(.primaryUnavailable, "\(endpoint) is not a primary: \(detail)")
        }
    }

    /// Rounds over the sentinels with back-off until one names a verified primary or the retry
    /// timeout has passed.
    func resolve() async -> Result<RedisEndpoint, RedisError> {
        let timeout = configuration.clusterRetryTimeout
        let deadline = ContinuousClock.now + timeout
        var backoff = Duration.milliseconds(50)
        var rounds = 0
        while true {
            if state.withLock({ $0.isShutDown }) || Task.isCancelled {
                return .failure(RedisError(.shutdown, "the Sentinel resolver was shut down"))
            }
            rounds += 1
            switch await round(trusting: nil) {
            case .found(let endpoint):
                adopt(endpoint)
                return .success(endpoint)
            case .none(let notes):
                let remaining = deadline - .now
                guard remaining > .zero else {
                    let error = RedisError(
                        .primaryUnavailable,
                        "no sentinel named a primary for master '\(sentinel.masterName)' that answers ROLE with master, within \(timeout) (\(rounds) rounds); last round: \(notes.joined(separator: "; "))"
                    )
                    logger.warning("Redis Sentinel: no primary", metadata: ["error": "\(error.message)"])
                    return .failure(error)
                }
                try? await Task.sleep(for: min(backoff, remaining))
                backoff = min(backoff * 2, .milliseconds(500))
            }
        }
    }

    /// One question to each sentinel in turn (the last one that answered first) until one names
    /// a node that verifies as master. `trusting` is accepted without a `ROLE` check (the
    /// primary already verified, when ``run()`` checks that nothing changed).
    /// - Returns: the primary, or one note per sentinel on what it said.
    func round(trusting trusted: RedisEndpoint?) async -> RoundOutcome {
        let count = sentinel.sentinels.count
        let start = state.withLock { $0.preferred } % count
        var notes: [String] = []
        var refused: [RedisEndpoint: String] = [:]
        for offset in 0..<count {
            let index = (start + offset) % count
            let address = sentinel.sentinels[index]
            let candidate: RedisEndpoint
            switch await ask(index) {
            case .failure(let error):
                notes.append("sentinel \(address): \(error.message)")
                continue
            case .success(let named):
                candidate = named
            }
            if candidate == trusted {
                state.withLock { $0.preferred = index }
                return .found(candidate)
            }
            if let reason = refused[candidate] {
                notes.append("sentinel \(address) names \(candidate): \(reason)")
                continue
            }
            do {
                try await verifyPrimary(candidate)
                state.withLock { $0.preferred = index }
                return .found(candidate)
            } catch {
                let reason = (error as? RedisError)?.message ?? "\(error)"
                refused[candidate] = reason
                notes.append("sentinel \(address) names \(candidate): \(reason)")
            }
        }
        return .none(notes)
    }

    /// What one round over the sentinels found.
    enum RoundOutcome {
        case found(RedisEndpoint)
        /// One note per sentinel on what it said.
        case none([String])
    }

    /// Asks sentinel `index` for the master's address.
    func ask(_ index: Int) async -> Result<RedisEndpoint, RedisError> {
        let client: RedisClient
        do { client = try sentinelClient(index) } catch { return .failure(error as? RedisError ?? RedisError(.shutdown, "\(error)")) }
        do {
            let reply = try await client.send("SENTINEL", "GET-MASTER-ADDR-BY-NAME", sentinel.masterName)
            return Result { try Self.masterAddress(from: reply, masterName: sentinel.masterName) }
                .mapError { $0 as? RedisError ?? RedisError(.protocolError, "\($0)") }
        } catch let error as RedisError {
            return .failure(error)
        } catch {
            return .failure(RedisError(.connectionFailed, "\(error)"))
        }
    }

    func sentinelClient(_ index: Int) throws -> RedisClient {
        try state.withLock { state in
            guard !state.isShutDown else { throw RedisError(.shutdown, "the Sentinel resolver was shut down") }
            if let client = state.sentinelClients[index] { return client }
            let credentials = sentinel.credentials
            // Sentinels have no databases and run no scripts: only the address, the credentials
            // and TLS (rediss+sentinel:// speaks TLS to the sentinels as to the data nodes).
            var sentinelConfiguration = RedisClientConfiguration(
                endpoint: sentinel.sentinels[index],
                username: credentials?.username,
                password: credentials?.password,
                connectTimeout: queryTimeout,
                commandTimeout: queryTimeout,
                connectionCount: 1,
                initialReconnectDelay: .milliseconds(10),
                maximumReconnectDelay: .milliseconds(100))
            sentinelConfiguration.tls = configuration.tls
            sentinelConfiguration.eventLoopGroup = configuration.eventLoopGroup
            let client = RedisClient(configuration: sentinelConfiguration, logger: clientLogger)
            state.sentinelClients[index] = client
            return client
        }
    }

    /// The address in a `SENTINEL GET-MASTER-ADDR-BY-NAME` reply: `[host, port]`, or nil when the
    /// sentinel does not monitor the master. The reply comes from the network, so the host must
    /// be a host name or IP address and the port a port, or the answer is refused.
    static func masterAddress(from reply: RedisValue, masterName: String) throws -> RedisEndpoint {
        if reply.isNull {
            throw RedisError(.primaryUnavailable, "does not monitor a master named '\(masterName)'")
        }
        guard let fields = reply.array, fields.count == 2, let hostBytes = fields[0].bytes, let portBytes = fields[1].bytes else {
            throw RedisError(.protocolError, "answered GET-MASTER-ADDR-BY-NAME with \(describe(reply))")
        }
        let host = String(decoding: hostBytes, as: UTF8.self)
        guard !host.isEmpty, hostBytes.count <= 253, (try? RedisClientConfiguration.validateHost(host)) != nil else {
            throw RedisError(.protocolError, "answered GET-MASTER-ADDR-BY-NAME with a host that is not a host name or IP address")
        }
        guard !portBytes.isEmpty, portBytes.count <= 5, portBytes.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
            let port = Int(String(decoding: portBytes, as: UTF8.self)), RedisEndpoint.ports.contains(port)
        else {
            throw RedisError(.protocolError, "answered GET-MASTER-ADDR-BY-NAME with a port that is not 1–65535")
        }
        return .tcp(host: host, port: port)
    }

    /// A short description of an unexpected reply (its kind, not its bytes: it came off the network).
    static func describe(_ reply: RedisValue) -> String {
        switch reply {
        case .simpleString: "a status reply"
        case .error(let message): "an error (\(message.prefix(64)))"
        case .integer: "an integer"
        case .bulkString(let bytes): "a \(bytes.count)-byte string"
        case .null: "nil"
        case .array(let values): "an array of \(values.count)"
        }
    }

    /// Makes `endpoint` the verified primary and reports a change of it.
    func adopt(_ endpoint: RedisEndpoint) {
        let (old, handler): (RedisEndpoint?, SwitchHandler?) = state.withLock { state in
            let old = state.lastKnown
            state.current = endpoint
            state.lastKnown = endpoint
            return (old, state.onSwitch)
        }
        guard let old else {
            logger.info("Redis Sentinel: primary found", metadata: ["redis.primary": "\(endpoint)"])
            return
        }
        guard old != endpoint else { return }
        logger.notice("Redis Sentinel: primary switched", metadata: ["redis.primary.old": "\(old)", "redis.primary.new": "\(endpoint)"])
        handler?(old, endpoint)
    }
}
