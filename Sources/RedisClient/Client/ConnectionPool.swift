import Logging
import Synchronization

/// A fixed set of ``RedisConnection``s to one server, used round-robin. The single-node client
/// has one; in cluster mode there is one per primary.
final class ConnectionPool: Sendable {
    let endpoint: RedisEndpoint
    private let connections: [RedisConnection]
    /// Loads missing function libraries on this pool's node.
    let functions: FunctionLibraryLoader
    private let next = Atomic<Int>(0)

    /// Creates the connections (threads start now; sockets connect on first use).
    /// - Parameter firstIndex: numbers the connection threads, so logs tell pools apart.
    init(configuration: RedisClientConfiguration, firstIndex: Int = 0, logger: Logger) {
        self.endpoint = configuration.endpoint
        self.functions = FunctionLibraryLoader(configuration: configuration, logger: logger)
        // `connectionCount` is a public var: a count set below 1 after `init` means one connection
        // (as in `init`), not an empty pool that would trap on the first command.
        self.connections = (0..<max(1, configuration.connectionCount)).map {
            RedisConnection(configuration: configuration, index: firstIndex + $0, logger: logger)
        }
    }

    /// The next connection, round-robin.
    @inline(__always)
    func connection() -> RedisConnection {
        let index = next.wrappingAdd(1, ordering: .relaxed).oldValue
        return connections[Int(UInt(bitPattern: index) % UInt(connections.count))]
    }

    /// Loads `script`'s function library on this pool's node.
    func loadLibrary(of script: RedisScript) async throws {
        try await functions.load(script, using: { [self] in connection() })
    }

    /// Recovers a script call that Redis answered with `NOSCRIPT` / `Function not found` (so it
    /// did not run): sends the `EVAL` form, or loads the library and sends the call again.
    func recoverMissingScript(_ command: RedisCommand, error: RedisError) async throws -> RedisValue {
        switch command.missingScriptRecovery {
        case .resend(let fallback)?:
            return try await connection().send(fallback.encoded)
        case .loadLibrary(let script)?:
            // A `FUNCTION FLUSH` between the load and the call (an operator, a failover to an
            // empty replica) makes the call miss again; it still did not run, so load and call
            // again, a bounded number of times.
            for attempt in 1...Self.functionLoadAttempts {
                try await loadLibrary(of: script)
                do {
                    return try await connection().send(command.encoded)
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

    /// Kernel thread ids of the connections' threads (tests check they are joined at shutdown).
    var kernelThreadIDs: [Int32] { connections.map(\.kernelThreadID) }

    /// Lets queued commands finish, closes every connection and joins their threads.
    func shutdown() {
        for connection in connections { connection.shutdown() }
    }
}
