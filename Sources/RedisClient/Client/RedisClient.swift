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
public final class RedisClient: Sendable {
    /// The configuration the client was created with.
    public let configuration: RedisClientConfiguration
    private let connections: [RedisConnection]
    private let nextConnection = Atomic<Int>(0)

    /// Creates a client; connections are made on first use.
    public init(configuration: RedisClientConfiguration, logger: Logger = Logger(label: "redis-client")) {
        self.configuration = configuration
        self.connections = (0..<configuration.connectionCount).map {
            RedisConnection(configuration: configuration, index: $0, logger: logger)
        }
    }

    deinit {
        shutdown()
    }

    /// Creates a client from a `redis://` or `unix://` URL (see ``RedisClientConfiguration/init(url:)``).
    public convenience init(url: String, logger: Logger = Logger(label: "redis-client")) throws {
        try self.init(configuration: RedisClientConfiguration(url: url), logger: logger)
    }

    private func connection() -> RedisConnection {
        let index = nextConnection.wrappingAdd(1, ordering: .relaxed).oldValue
        return connections[Int(UInt(bitPattern: index) % UInt(connections.count))]
    }

    /// Sends one command and returns its reply.
    /// - Throws: ``RedisError``; an error reply from Redis has code ``RedisError/Code/server``.
    @discardableResult
    public func send(_ command: RedisCommand) async throws -> RedisValue {
        do {
            return try await connection().send(command.encoded)
        } catch let error as RedisError where error.serverErrorPrefix == "NOSCRIPT" {
            guard let fallback = command.evalFallback else { throw error }
            return try await connection().send(fallback.encoded)
        }
    }

    /// Sends one command given as its arguments, the command name first.
    @discardableResult
    public func send(_ arguments: any RedisArgument...) async throws -> RedisValue {
        try await send(RedisCommand(arguments: arguments))
    }

    /// Runs a Lua script with `EVALSHA`, falling back to `EVAL` when Redis answers `NOSCRIPT`.
    @discardableResult
    public func eval(_ script: RedisScript, keys: [any RedisArgument] = [], arguments: [any RedisArgument] = []) async throws -> RedisValue {
        try await send(.evalSHA(script, keys: keys, arguments: arguments))
    }

    /// Sends several commands back to back on one connection and returns each one's result, in order.
    ///
    /// An error reply fails only its own command. Scripts answered with `NOSCRIPT` are re-sent
    /// as `EVAL` after the batch, so they then run after the batch's other commands.
    public func pipeline(_ commands: [RedisCommand]) async -> [Result<RedisValue, RedisError>] {
        guard !commands.isEmpty else { return [] }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(commands.reduce(0) { $0 + $1.encoded.count })
        for command in commands { bytes.append(contentsOf: command.encoded) }
        var results = await connection().sendPipeline(bytes, count: commands.count)
        for index in results.indices {
            guard case .failure(let error) = results[index], error.serverErrorPrefix == "NOSCRIPT",
                  let fallback = commands[index].evalFallback else { continue }
            do { results[index] = .success(try await connection().send(fallback.encoded)) }
            catch { results[index] = .failure(error as? RedisError ?? RedisError(.server, "\(error)")) }
        }
        return results
    }

    /// Lets queued commands finish, closes every connection and joins their threads.
    /// Later commands fail with ``RedisError/Code/shutdown``.
    public func shutdown() {
        for connection in connections { connection.shutdown() }
    }
}

extension RedisClient: Service {
    /// Waits for graceful shutdown of the service group, then shuts the client down.
    public func run() async throws {
        try? await gracefulShutdown()
        shutdown()
    }
}
