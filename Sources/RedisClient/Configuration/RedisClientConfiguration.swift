import Foundation

/// Where a Redis server listens.
public enum RedisEndpoint: Sendable, Hashable, CustomStringConvertible {
    /// A TCP host and port.
    case tcp(host: String, port: Int)
    /// A Unix domain socket path.
    case unix(path: String)

    public var description: String {
        switch self {
        case .tcp(let host, let port): "\(host):\(port)"
        case .unix(let path): "unix:\(path)"
        }
    }
}

/// How a ``RedisClient`` connects: endpoint, credentials, database, timeouts and pool size.
public struct RedisClientConfiguration: Sendable {
    /// Where the server listens.
    public var endpoint: RedisEndpoint
    /// ACL user name (Redis 6+); `nil` authenticates as `default` when a password is set.
    public var username: String?
    /// Password sent with `AUTH`; never logged.
    public var password: String?
    /// Database selected with `SELECT` after connecting.
    public var database: Int
    /// Longest wait for a TCP connect and the handshake.
    public var connectTimeout: Duration
    /// Longest wait for one read or write of a command; past it the connection is dropped and
    /// the commands in flight fail with ``RedisError/Code/timeout``.
    public var commandTimeout: Duration
    /// Number of connections (each with its own thread). Two or more keep Redis busy while one
    /// connection reads replies.
    public var connectionCount: Int
    /// First delay before reconnecting after a failed connect; doubles up to ``maximumReconnectDelay``.
    public var initialReconnectDelay: Duration
    /// Longest delay between reconnect attempts.
    public var maximumReconnectDelay: Duration

    /// Creates a configuration.
    /// - Parameters:
    ///   - endpoint: where the server listens.
    ///   - username: ACL user, or `nil`.
    ///   - password: password for `AUTH`, or `nil`.
    ///   - database: database index for `SELECT`.
    ///   - connectTimeout: limit for connecting and the handshake.
    ///   - commandTimeout: limit for each read or write.
    ///   - connectionCount: number of pooled connections.
    ///   - initialReconnectDelay: first back-off delay.
    ///   - maximumReconnectDelay: largest back-off delay.
    public init(
        endpoint: RedisEndpoint = .tcp(host: "127.0.0.1", port: 6379),
        username: String? = nil,
        password: String? = nil,
        database: Int = 0,
        connectTimeout: Duration = .seconds(2),
        commandTimeout: Duration = .seconds(5),
        connectionCount: Int = 2,
        initialReconnectDelay: Duration = .milliseconds(20),
        maximumReconnectDelay: Duration = .seconds(1)
    ) {
        self.endpoint = endpoint
        self.username = username
        self.password = password
        self.database = database
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
        self.connectionCount = max(1, connectionCount)
        self.initialReconnectDelay = initialReconnectDelay
        self.maximumReconnectDelay = maximumReconnectDelay
    }

    /// Creates a configuration from a URL.
    ///
    /// Accepted forms: `redis://[[user]:password@]host[:port][/db]` and
    /// `unix:///path/to/socket[?db=N][&password=…]`. `rediss://` is refused with
    /// ``RedisError/Code/unsupported`` because Debian's hiredis 0.14 has no TLS.
    /// - Throws: ``RedisError`` with ``RedisError/Code/invalidURL`` for a malformed URL.
    public init(url: String) throws {
        self.init()
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased() else {
            throw RedisError(.invalidURL, "not a URL: expected redis://host:port/db or unix:///path")
        }
        func decoded(_ text: String?) -> String? { text?.removingPercentEncoding.flatMap { $0.isEmpty ? nil : $0 } }
        let query = Dictionary((components.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { _, last in last })
        switch scheme {
        case "redis":
            guard let host = components.host, !host.isEmpty else {
                throw RedisError(.invalidURL, "redis URL has no host")
            }
            let port = components.port ?? 6379
            guard (1...65535).contains(port) else { throw RedisError(.invalidURL, "port \(port) is out of range") }
            endpoint = .tcp(host: host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host, port: port)
            let path = components.path.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
            if !path.isEmpty {
                guard let db = Int(path), db >= 0 else { throw RedisError(.invalidURL, "database '\(path)' is not a non-negative integer") }
                database = db
            }
            username = decoded(components.percentEncodedUser)
            password = decoded(components.percentEncodedPassword)
        case "unix":
            guard !components.path.isEmpty, components.path.hasPrefix("/") else {
                throw RedisError(.invalidURL, "unix URL needs an absolute socket path: unix:///path/to/redis.sock")
            }
            endpoint = .unix(path: components.path)
            username = decoded(components.percentEncodedUser)
            password = decoded(components.percentEncodedPassword) ?? query["password"].flatMap { $0.isEmpty ? nil : $0 }
        case "rediss":
            throw RedisError(.unsupported, "rediss:// (TLS) is not supported: Debian's hiredis 0.14 has no TLS; use a TLS proxy such as stunnel or a private network")
        default:
            throw RedisError(.invalidURL, "unknown scheme '\(scheme)': expected redis:// or unix://")
        }
        if let db = query["db"] {
            guard let value = Int(db), value >= 0 else { throw RedisError(.invalidURL, "db '\(db)' is not a non-negative integer") }
            database = value
        }
        if username != nil && password == nil {
            throw RedisError(.invalidURL, "a user name needs a password: redis://user:password@host")
        }
    }
}
