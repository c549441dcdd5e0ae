import Logging
import ServiceLifecycle
import Synchronization

/// A Redis client for async Swift: a pool of hiredis connections, each on its own thread, with
/// automatic pipelining.
///
/// Many tasks may call it at once. Commands that arrive while a connection is busy go out
/// together in its next batch, so throughput grows with concurrency. A command in flight when
/// its connection dies fails with ``RedisError/Code/connectionClosed`` and is never re-sent;
/// the next command reconnects (with back-off).
///
/// ```swift
/// let client = try RedisClient(url: "redis://127.0.0.1:6379/0")
/// defer { client.shutdown() }
/// try await client.send("SET", "greeting", "hello")
/// let value = try await client.send("GET", "greeting").string   // "hello"
/// let script = RedisScript("return redis.call('INCR', KEYS[1])")
/// let count = try await client.eval(script, keys: ["visits"]).int
/// ```
///
/// Run it as a swift-service-lifecycle `Service` to have it shut down with the application, or
/// call ``shutdown()`` yourself.
///
/// **Redis Cluster.** With ``RedisClientConfiguration/clusterSeeds`` set (URL
/// `redis+cluster://host:port,host:port`) the same API routes every command by the hash slot of
/// its keys to the primary serving it, one pool of pipelined connections per primary, following
/// `MOVED` and `ASK`, retrying `TRYAGAIN`/`CLUSTERDOWN` and refused connections, and refreshing
/// the topology after errors and every ``RedisClientConfiguration/clusterRefreshInterval``.
/// Keys of one command or script must share a slot (use a `{hash tag}`), or the command fails
/// with ``RedisError/Code/crossSlot`` before it is sent. Keyless commands (`PING`, `TIME`,
/// `CONFIG GET`, `SCRIPT LOAD`) go to any primary; ``sendToEachPrimary(_:)`` reaches all.
public final class RedisClient: Sendable {
    /// The configuration the client was created with.
    public let configuration: RedisClientConfiguration
    /// Single-node mode: the pool. Cluster mode: `nil`.
    private let pool: ConnectionPool?
    /// Cluster mode: the router. Single-node mode: `nil`.
    private let cluster: ClusterRouter?

    /// Creates a client; connections are made (and a cluster's topology learned) on first use.
    public init(configuration: RedisClientConfiguration, logger: Logger = Logger(label: "redis-client")) {
        self.configuration = configuration
        var configuration = configuration
        var resolver: SentinelResolver?
        var setupError: RedisError?
        if configuration.isSentinel && !configuration.isCluster {
            do {
                resolver = try SentinelResolver(configuration: configuration, logger: logger)
                configuration.primaryResolver = resolver
            } catch {
                setupError = error as? RedisError ?? RedisError(.invalidArgument, "\(error)")
            }
        }
        self.resolver = resolver
        self.setupError = setupError
        if configuration.isCluster {
            self.pool = nil
            self.cluster = ClusterRouter(configuration: configuration, logger: logger)
        } else {
            let pool = ConnectionPool(configuration: configuration, logger: logger)
            self.pool = pool
            self.cluster = nil
            resolver?.setSwitchHandler { [weak pool] old, _ in pool?.primaryMoved(from: old) }
        }
    }

    /// Sentinel mode: finds and follows the primary.
    private let resolver: SentinelResolver?
    /// A Sentinel configuration the resolver refused; every command fails with it.
    private let setupError: RedisError?

    /// Sentinel mode: sends `command` again while it certainly did not run — a refused connect
    /// (the old primary is down, the new one not yet named) or `READONLY` (it reached a demoted
    /// primary) — with back-off, up to ``RedisClientConfiguration/clusterRetryTimeout``. A
    /// command that was in flight when its connection died is never sent again.
    private func sendFollowingPrimary(_ command: RedisCommand, trailer: [UInt8]?, pool: ConnectionPool) async throws -> (RedisValue, Result<RedisValue, RedisError>?) {
        let deadline = ContinuousClock.now + configuration.clusterRetryTimeout
        var delay = Duration.milliseconds(20)
        while true {
            do {
                return try await pool.connection().send(command.encoded, trailer: trailer)
            } catch let error as RedisError where error.code == .connectionFailed || error.serverErrorPrefix == "READONLY" {
                guard ContinuousClock.now + delay < deadline else { throw error }
                try await Task.sleep(for: delay)
                delay = min(delay * 2, .milliseconds(500))
            }
        }
    }

    deinit {
        shutdown()
    }

    /// Creates a client from a `redis://`, `unix://` or `redis+cluster://` URL (see
    /// ``RedisClientConfiguration/init(url:)``); the scheme chooses single-node or cluster mode.
    public convenience init(url: String, logger: Logger = Logger(label: "redis-client")) throws {
        try self.init(configuration: RedisClientConfiguration(url: url), logger: logger)
    }

    /// Whether this client talks to a Redis Cluster.
    public var isCluster: Bool { cluster != nil }

    /// Sends one command and returns its reply.
    /// - Throws: ``RedisError``; an error reply from Redis has code ``RedisError/Code/server``;
    ///   in cluster mode also ``RedisError/Code/crossSlot``, ``RedisError/Code/tooManyRedirects``
    ///   and ``RedisError/Code/clusterUnavailable``.
    @discardableResult
    public func send(_ command: RedisCommand) async throws -> RedisValue {
        try await send(command, trailer: nil).0
    }

    /// Sends one write and waits, on the same connection, until the copies `durability` asks
    /// for have it (`WAIT`, or `WAITAOF`; in cluster mode on the primary that ran the write).
    /// - Returns: the write's reply, and what was acknowledged; a failed wait (an older server
    ///   without `WAITAOF`, `appendonly no`, a dropped connection) is the acknowledgement's
    ///   error. The write itself ran in both cases: only its reply's error is thrown.
    /// - Throws: as ``send(_:)``, for the write; ``RedisError/Code/invalidArgument`` (nothing
    ///   sent) when the wait is not shorter than ``RedisClientConfiguration/commandTimeout``
    ///   (the connection would be given up while Redis still waits).
    public func send(_ command: RedisCommand, durability: RedisDurability) async throws -> (reply: RedisValue, acknowledgement: Result<RedisAcknowledgement, RedisError>) {
        guard durability.timeout < configuration.commandTimeout else {
            throw RedisError(.invalidArgument, "the durability timeout (\(durability.timeout)) must be shorter than the command timeout (\(configuration.commandTimeout))")
        }
        let (reply, trailer) = try await send(command, trailer: durability.command.encoded)
        let acknowledgement: Result<RedisAcknowledgement, RedisError> =
            switch trailer {
            case .success(let value)?:
                Result { try durability.acknowledgement(from: value) }.mapError { $0 as? RedisError ?? RedisError(.protocolError, "\($0)") }
            case .failure(let error)?: .failure(error)
            case nil: .failure(RedisError(.protocolError, "no acknowledgement was read"))
            }
        return (reply, acknowledgement)
    }

    /// Runs a script as ``eval(_:keys:arguments:)`` and waits for `durability` (see
    /// ``send(_:durability:)``).
    public func eval(
        _ script: RedisScript, keys: [any RedisArgument] = [], arguments: [any RedisArgument] = [],
        durability: RedisDurability
    ) async throws -> (reply: RedisValue, acknowledgement: Result<RedisAcknowledgement, RedisError>) {
        try await send(scriptCommand(script, keys: keys, arguments: arguments), durability: durability)
    }

    /// `command`, and `trailer` right behind it on the same connection, whichever path (and
    /// retry, script recovery, redirect) the command takes.
    private func send(_ command: RedisCommand, trailer: [UInt8]?) async throws -> (RedisValue, Result<RedisValue, RedisError>?) {
        guard let pool else {
            // Force-unwrap-free: exactly one of `pool` and `cluster` is set by the initializer.
            guard let cluster else { throw RedisError(.shutdown, "the Redis client has no connections") }
            return try await cluster.send(command, trailer: trailer)
        }
        if let setupError { throw setupError }
        do {
            if resolver != nil { return try await sendFollowingPrimary(command, trailer: trailer, pool: pool) }
            return try await pool.connection().send(command.encoded, trailer: trailer)
        } catch let error as RedisError where error.isMissingScript {
            return try await pool.recoverMissingScript(command, error: error, trailer: trailer)
        }
    }

    /// Sends one command given as its arguments, the command name first.
    @discardableResult
    public func send(_ arguments: any RedisArgument...) async throws -> RedisValue {
        try await send(RedisCommand(arguments: arguments))
    }

    /// Runs a Lua script: as a Redis function with `FCALL` (loading its library when the node
    /// lacks it), or with `EVALSHA` falling back to `EVAL` on `NOSCRIPT`, as
    /// ``RedisClientConfiguration/scriptCalls`` says (see ``RedisScript``).
    @discardableResult
    public func eval(_ script: RedisScript, keys: [any RedisArgument] = [], arguments: [any RedisArgument] = []) async throws -> RedisValue {
        try await send(scriptCommand(script, keys: keys, arguments: arguments))
    }

    /// The command ``eval(_:keys:arguments:)`` sends, for pipelines.
    public func scriptCommand(_ script: RedisScript, keys: [any RedisArgument] = [], arguments: [any RedisArgument] = []) -> RedisCommand {
        switch configuration.scriptCalls {
        case .functions: .functionCall(script, keys: keys, arguments: arguments)
        case .eval: .evalSHA(script, keys: keys, arguments: arguments)
        }
    }

    /// Loads the function libraries of `scripts` on every primary now (`FUNCTION LOAD REPLACE`, as
    /// the ``RedisClientConfiguration/functionLoader`` user when one is set), so that the first
    /// calls need no load and a missing permission shows at start-up. Functions mode only; in
    /// `eval` mode it does nothing.
    /// - Throws: the first ``RedisError`` of any node.
    public func loadFunctions(_ scripts: [RedisScript]) async throws {
        guard configuration.scriptCalls == .functions else { return }
        let pools: [ConnectionPool]
        if let pool {
            pools = [pool]
        } else if let cluster {
            pools = try await cluster.primaryPools()
        } else {
            return
        }
        for pool in pools {
            for script in scripts { try await pool.loadLibrary(of: script) }
        }
    }

    /// Sends several commands back to back on one connection and returns each one's result, in order.
    ///
    /// An error reply fails only its own command. Scripts answered with `NOSCRIPT` are re-sent
    /// as `EVAL` after the batch, and function calls answered `Function not found` are re-sent
    /// after their library was loaded, so they then run after the batch's other commands.
    ///
    /// In cluster mode the commands are grouped by primary: each group is one pipeline on one
    /// connection (commands for one node, and so for one slot, keep their order), the groups go
    /// out concurrently, and results come back in the order given. Commands answered with a
    /// redirect, `TRYAGAIN` or `CLUSTERDOWN` are then re-sent one by one, in order.
    public func pipeline(_ commands: [RedisCommand]) async -> [Result<RedisValue, RedisError>] {
        guard !commands.isEmpty else { return [] }
        guard let pool else {
            guard let cluster else { return commands.map { _ in .failure(RedisError(.shutdown, "the Redis client has no connections")) } }
            return await cluster.pipeline(commands)
        }
        func connection() -> RedisConnection { pool.connection() }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(commands.reduce(0) { $0 + $1.encoded.count })
        for command in commands { bytes.append(contentsOf: command.encoded) }
        var results = await connection().sendPipeline(bytes, count: commands.count)
        for index in results.indices {
            guard case .failure(let error) = results[index], error.isMissingScript,
                commands[index].missingScriptRecovery != nil
            else { continue }
            do { results[index] = .success(try await pool.recoverMissingScript(commands[index], error: error, trailer: nil).0) } catch {
                results[index] = .failure(error as? RedisError ?? RedisError(.server, "\(error)"))
            }
        }
        return results
    }

    /// Sends one command to every primary (single-node mode: to the server) and returns each
    /// node's result: for node-wide commands such as `SCRIPT FLUSH`, `CONFIG GET`, `DBSIZE`.
    public func sendToEachPrimary(_ command: RedisCommand) async -> [(node: RedisEndpoint, result: Result<RedisValue, RedisError>)] {
        guard let pool else {
            guard let cluster else { return [] }
            return await cluster.sendToEachPrimary(command).map { (node: $0.0, result: $0.1) }
        }
        let node = resolver?.cachedPrimary ?? pool.endpoint
        do { return [(node, .success(try await send(command)))] } catch {
            return [(resolver?.cachedPrimary ?? node, .failure(error as? RedisError ?? RedisError(.server, "\(error)")))]
        }
    }

    /// Cluster mode: the primaries as last learned (learning the topology first when needed).
    /// Single-node mode: the one server.
    /// - Throws: ``RedisError/Code/clusterUnavailable`` when no node tells the topology.
    public func primaries() async throws -> [RedisEndpoint] {
        if let resolver { return [try await resolver.primary()] }
        guard let cluster else { return [configuration.endpoint] }
        return try await cluster.primaries()
    }

    /// Cluster mode: the primary that serves `slot` according to the client's current map
    /// (which `MOVED` answers and refreshes update); `nil` in single-node mode or when unknown.
    public func node(servingSlot slot: Int) -> RedisEndpoint? {
        guard (0..<RedisHashSlot.count).contains(slot) else { return nil }
        return cluster?.owner(of: slot)
    }

    /// Cluster mode: re-reads the topology now (it is also refreshed on errors and periodically).
    /// - Throws: ``RedisError/Code/clusterUnavailable`` when no node answers `CLUSTER SLOTS`.
    public func refreshTopology() async throws {
        if let cluster, let error = await cluster.refresh() { throw error }
    }

    /// The single-node pool's connection count (0 in cluster mode); for tests.
    var poolConnectionCount: Int { pool?.count ?? 0 }

    /// Lets queued commands finish and closes every connection, without waiting for them (see
    /// ``closed()``). Later commands fail with ``RedisError/Code/shutdown``.
    public func shutdown() {
        pool?.shutdown()
        cluster?.shutdown()
        resolver?.shutdown()
    }

    /// Returns once every connection has closed after ``shutdown()``.
    public func closed() async {
        await pool?.closed()
        await cluster?.closed()
    }
}

extension RedisClient: Service {
    /// Waits for graceful shutdown of the service group, then shuts the client down and returns
    /// once its connections are closed.
    public func run() async throws {
        if let resolver {
            // Sentinel mode: ask the sentinels every check interval, to follow a failover before
            // an error shows it (the resolver's loop ends on graceful shutdown too).
            try? await resolver.run()
        }
        try? await gracefulShutdown()
        shutdown()
        await closed()
    }
}
