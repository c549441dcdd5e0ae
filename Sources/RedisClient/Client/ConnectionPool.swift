import Foundation
import Logging
import NIOCore
import Synchronization

/// A fixed set of connections to one server: the connection on the caller's own event loop when
/// there is one (no thread hop), else the next one round-robin. The single-node client has one
/// pool; in cluster mode there is one per primary.
final class ConnectionPool: Sendable {
    let endpoint: RedisEndpoint
    private let connections: [RedisConnection]
    /// The connections' loops, in the order of `connections`.
    private let eventLoops: [any EventLoop]
    /// Loads missing function libraries on this pool's node.
    let functions: FunctionLibraryLoader
    private let next = Atomic<Int>(0)

    /// Creates the connections (sockets connect on first use).
    /// - Parameter firstIndex: numbers the connections, so logs tell pools apart.
    init(configuration: RedisClientConfiguration, firstIndex: Int = 0, logger: Logger) {
        self.endpoint = configuration.endpoint
        self.functions = FunctionLibraryLoader(configuration: configuration, logger: logger)
        // `connectionCount` is a public var: a count set below 1 after `init` means one connection
        // (as in `init`), not an empty pool that would trap on the first command.
        // Connection i on loop i (mod the loops), not the group's shared round-robin `next()`: a
        // caller running on a loop (the API node's handlers) finds the connection of its own loop
        // whenever there are at least as many connections as loops.
        let loops = Array(configuration.eventLoopGroup.makeIterator())
        let connections = (0..<max(1, configuration.connectionCount)).map {
            ConnectionFactory.make(
                configuration: configuration, eventLoop: loops.isEmpty ? configuration.eventLoopGroup.next() : loops[$0 % loops.count],
                index: firstIndex + $0, logger: logger)
        }
        self.connections = connections
        self.eventLoops = connections.map(\.eventLoop)
    }

    /// The connection on the calling thread's event loop, else the next one round-robin.
    @inline(__always)
    func connection() -> RedisConnection {
        for index in eventLoops.indices where eventLoops[index].inEventLoop { return connections[index] }
        let index = next.wrappingAdd(1, ordering: .relaxed).oldValue
        return connections[Int(UInt(bitPattern: index) % UInt(connections.count))]
    }

    /// Sentinel mode: drops the connections to `old`, the primary before a failover.
    func primaryMoved(from old: RedisEndpoint) {
        for connection in connections { connection.primaryMoved(from: old) }
    }

    /// How many connections the pool holds.
    var count: Int { connections.count }

    /// Loads `script`'s function library on this pool's node.
    func loadLibrary(of script: RedisScript) async throws {
        try await functions.load(script, using: { [self] in connection() })
    }

    /// Recovers a script call that Redis answered with `NOSCRIPT` / `Function not found` (so it
    /// did not run): sends the `EVAL` form, or loads the library and sends the call again.
    /// `trailer` is sent right behind the recovered command, on its connection.
    func recoverMissingScript(_ command: RedisCommand, error: RedisError, trailer: [UInt8]?) async throws -> (RedisValue, Result<RedisValue, RedisError>?) {
        switch command.missingScriptRecovery {
        case .resend(let fallback)?:
            return try await connection().send(fallback.encoded, trailer: trailer)
        case .loadLibrary(let script)?:
            // A `FUNCTION FLUSH` between the load and the call (an operator, a failover to an
            // empty replica) makes the call miss again; it still did not run, so load and call
            // again, a bounded number of times.
            for attempt in 1...Self.functionLoadAttempts {
                try await loadLibrary(of: script)
                do {
                    return try await connection().send(command.encoded, trailer: trailer)
                } catch let again as RedisError where again.isMissingScript && attempt < Self.functionLoadAttempts {
                    continue
                }
            }
            throw error
        case nil:
            throw error
        }
    }

    /// How often a call that keeps answering `Function not found` loads its library again.
    static let functionLoadAttempts = 3

    /// Lets queued commands finish and closes every connection (without waiting; see ``closed()``).
    func shutdown() {
        for connection in connections { connection.shutdown() }
    }

    /// Returns once every connection has closed after ``shutdown()``.
    func closed() async {
        for connection in connections { await connection.closed() }
    }
}

/// Makes connections on the configuration's event loops, sharing one TLS context per TLS setting.
enum ConnectionFactory {
    static func make(configuration: RedisClientConfiguration, eventLoop: any EventLoop, index: Int, logger: Logger) -> RedisConnection {
        let tls = configuration.tls.map { TLSContextSource.shared(for: $0) }
        return RedisConnection(configuration: configuration, eventLoop: eventLoop, tls: tls, index: index, logger: logger)
    }

    /// A connection for one short exchange (a topology probe, a function load); shut down after use.
    static func oneOff(configuration: RedisClientConfiguration, logger: Logger) -> RedisConnection {
        var single = configuration
        single.connectionCount = 1
        return make(configuration: single, eventLoop: configuration.eventLoopGroup.next(), index: 9_999, logger: logger)
    }
}

/// The TLS context of one ``RedisTLSConfiguration``, shared by every connection that uses it and
/// rebuilt when one of its files changes on disk (a rotated CA or client certificate takes effect
/// on the next connect, without a restart).
final class TLSContextSource: Sendable {
    private let configuration: RedisTLSConfiguration
    private let current = Mutex<(stamp: [Date?], context: Result<TLSClientContext, RedisError>)?>(nil)

    private init(_ configuration: RedisTLSConfiguration) {
        self.configuration = configuration
    }

    private static let sources = Mutex<[RedisTLSConfiguration: TLSContextSource]>([:])

    static func shared(for configuration: RedisTLSConfiguration) -> TLSContextSource {
        sources.withLock { sources in
            if let source = sources[configuration] { return source }
            let source = TLSContextSource(configuration)
            sources[configuration] = source
            return source
        }
    }

    /// The context for a new connection.
    /// - Throws: ``RedisError/Code/tlsFailed`` when a file cannot be read or parsed.
    func context() throws -> TLSClientContext {
        let files = [configuration.caFile, configuration.certificateFile, configuration.privateKeyFile]
        let stamp = files.map { path in
            path.flatMap { try? FileManager.default.attributesOfItem(atPath: $0)[.modificationDate] as? Date }
        }
        return try current.withLock { current in
            if let current, current.stamp == stamp { return try current.context.get() }
            let made = Result { () throws(RedisError) -> TLSClientContext in
                do { return try TLSClientContext(configuration) } catch let error as RedisError { throw error } catch {
                    throw RedisError(.tlsFailed, "cannot set up TLS: \(error)", underlying: error)
                }
            }
            current = (stamp, made)
            return try made.get()
        }
    }
}
