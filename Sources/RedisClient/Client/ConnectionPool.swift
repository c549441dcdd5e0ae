import Logging
import Synchronization

/// A fixed set of ``RedisConnection``s to one server, used round-robin. The single-node client
/// has one; in cluster mode there is one per primary.
final class ConnectionPool: Sendable {
    let endpoint: RedisEndpoint
    private let connections: [RedisConnection]
    private let next = Atomic<Int>(0)

    /// Creates the connections (threads start now; sockets connect on first use).
    /// - Parameter firstIndex: numbers the connection threads, so logs tell pools apart.
    init(configuration: RedisClientConfiguration, firstIndex: Int = 0, logger: Logger) {
        self.endpoint = configuration.endpoint
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

    /// Kernel thread ids of the connections' threads (tests check they are joined at shutdown).
    var kernelThreadIDs: [Int32] { connections.map(\.kernelThreadID) }

    /// Lets queued commands finish, closes every connection and joins their threads.
    func shutdown() {
        for connection in connections { connection.shutdown() }
    }
}
