import Foundation
import NIOCore
import NIOPosix

/// Where a Redis server listens.
public enum RedisEndpoint: Sendable, Hashable, CustomStringConvertible {
    /// A TCP host and port.
    case tcp(host: String, port: Int)
    /// A Unix domain socket path.
    case unix(path: String)

    /// The TCP ports a connection is attempted on. A port outside them (set in code, or sent by a
    /// cluster node in `CLUSTER SLOTS` or `MOVED`) is refused with a typed error, never converted.
    public static let ports = 1...65535

    public var description: String {
        switch self {
        case .tcp(let host, let port): "\(host):\(port)"
        case .unix(let path): "unix:\(path)"
        }
    }
}

/// An ACL user name and password (for example of the ``RedisClientConfiguration/functionLoader``).
public struct RedisCredentials: Sendable, Hashable, CustomStringConvertible {
    /// The ACL user; `nil` is `default`.
    public var username: String?
    /// The password; never logged.
    public var password: String

    /// Creates credentials.
    public init(username: String?, password: String) {
        self.username = username
        self.password = password
    }

    /// The user name only: passwords are never printed.
    public var description: String { "RedisCredentials(user: \(username ?? "default"))" }
}

/// TLS for the connections to Redis (`rediss://`): certificate verification is always on.
///
/// The server's certificate must chain to ``caFile`` (or, without one, to the system's trust
/// roots) and name the host: ``serverName`` when set, else the host of the URL; an IP address
/// is checked against the certificate's IP addresses. A client certificate and key give mutual
/// TLS (`tls-auth-clients yes`).
public struct RedisTLSConfiguration: Sendable, Hashable {
    /// PEM file of the CA certificates to trust; `nil` trusts the system's roots.
    public var caFile: String?
    /// PEM file of the client certificate (chain), for mutual TLS; needs ``privateKeyFile``.
    public var certificateFile: String?
    /// PEM file of the client certificate's private key.
    public var privateKeyFile: String?
    /// The name sent as SNI and verified in the server's certificate, when it differs from the
    /// host connected to (an IP address, or a cluster node's address).
    public var serverName: String?

    /// Creates a TLS configuration.
    public init(caFile: String? = nil, certificateFile: String? = nil, privateKeyFile: String? = nil, serverName: String? = nil) {
        self.caFile = caFile
        self.certificateFile = certificateFile
        self.privateKeyFile = privateKeyFile
        self.serverName = serverName
    }
}

/// How a ``RedisClient`` connects: endpoint, credentials, database, timeouts and pool size.
///
/// Single node: set ``endpoint`` (or use `redis://` / `unix://`). Redis Cluster: set
/// ``clusterSeeds`` (or use `redis+cluster://host:port,host:port`); the client then learns the
/// topology from any seed and keeps ``connectionCount`` connections to each primary.
public struct RedisClientConfiguration: Sendable {
    /// Where the server listens (single-node mode; in cluster mode the first seed).
    public var endpoint: RedisEndpoint
    /// Cluster mode when not empty: nodes to ask for the topology (`CLUSTER SLOTS`), in order.
    /// Any one reachable node is enough; list several so a dead seed does not matter.
    public var clusterSeeds: [RedisEndpoint]
    /// Cluster mode: how often the topology is refreshed even when nothing went wrong. It is
    /// also refreshed after `MOVED`, `CLUSTERDOWN` and lost or refused connections.
    public var clusterRefreshInterval: Duration
    /// Cluster mode: most `MOVED`/`ASK` redirects one command follows before it fails with
    /// ``RedisError/Code/tooManyRedirects``.
    public var clusterMaximumRedirects: Int
    /// Cluster mode: how long a command keeps being retried while it was certainly not run —
    /// `TRYAGAIN`, `CLUSTERDOWN`, a refused connection (a failover in progress), an uncovered slot.
    /// A command in flight when its connection dies is never retried. Sentinel mode: how long
    /// ``SentinelResolver/primary()`` keeps asking before ``RedisError/Code/primaryUnavailable``.
    public var clusterRetryTimeout: Duration
    /// ACL user name (Redis 6+); `nil` authenticates as `default` when a password is set.
    public var username: String?
    /// Password sent with `AUTH`; never logged.
    public var password: String?
    /// Database selected with `SELECT` after connecting.
    public var database: Int
    /// Longest wait for a TCP connect and the handshake. Below 1 ms it counts as 1 ms (a zero or
    /// negative time would otherwise mean "wait forever" to the socket).
    public var connectTimeout: Duration
    /// Longest wait for one read or write of a command; past it the connection is dropped and
    /// the commands in flight fail with ``RedisError/Code/timeout``. Below 1 ms it counts as 1 ms.
    public var commandTimeout: Duration
    /// Number of connections, spread over ``eventLoopGroup``'s loops in turn; a caller running on
    /// one of those loops uses the connection on its own loop (no thread hop), so one per loop is
    /// the useful minimum. A value below 1 means one connection.
    public var connectionCount: Int
    /// First delay before reconnecting after a failed connect; doubles up to ``maximumReconnectDelay``.
    public var initialReconnectDelay: Duration
    /// Longest delay between reconnect attempts.
    public var maximumReconnectDelay: Duration
    /// How ``RedisClient/eval(_:keys:arguments:)`` runs scripts: as Redis 7 functions (`FCALL`,
    /// the default) or with `EVALSHA`/`EVAL` (Redis 6 and older). See ``RedisScript``.
    public var scriptCalls: RedisScriptCalls
    /// Functions mode: the ACL user that loads a missing function library (`FUNCTION LOAD`), on
    /// a short-lived connection of its own to the node that lacks it. `nil`: the client's own
    /// user loads it. Keeping `+function|load` on a separate user lets the application's user run
    /// only the product's functions (`+fcall`), never Lua of its own choosing.
    public var functionLoader: RedisCredentials?
    /// TLS for every connection (`rediss://`, `rediss+cluster://`, `rediss+sentinel://`: in
    /// Sentinel mode to the sentinels and the data nodes alike); `nil` is plain TCP.
    public var tls: RedisTLSConfiguration?
    /// The event loops the connections live on; by default NIO's shared singleton group, which
    /// is also Hummingbird's default, so an API node's commands and requests share its loops.
    public var eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    /// Sentinel mode, set by ``RedisClient``: where every connect asks for the primary.
    var primaryResolver: SentinelResolver?

    // MARK: Redis Sentinel

    /// Sentinel mode when set: the sentinels to ask for the primary of a named master (URL
    /// `redis+sentinel://host:port,host:port/master-name`). ``username``, ``password`` and
    /// ``database`` are then those of the data nodes; ``endpoint`` is the first sentinel until a
    /// ``SentinelResolver`` has found the primary. The sentinels' own credentials come from the
    /// URL options `sentinel_username` with `sentinel_password` or, better,
    /// `sentinel_password_file=/path` (read once, surrounding whitespace dropped). `nil`: not
    /// Sentinel mode.
    public var sentinel: RedisSentinelConfiguration?
    /// Sentinel mode: how often ``SentinelResolver/run()`` asks the sentinels whether the primary
    /// changed (a failover), so that connections follow it without waiting for an error.
    public var sentinelCheckInterval: Duration

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
    ///   - clusterSeeds: cluster mode when not empty: nodes to learn the topology from.
    ///   - clusterRefreshInterval: periodic topology refresh in cluster mode (30 s).
    ///   - clusterMaximumRedirects: `MOVED`/`ASK` redirects followed per command (5).
    ///   - clusterRetryTimeout: how long unsent commands are retried during `TRYAGAIN`,
    ///     `CLUSTERDOWN` or a failover (5 s).
    ///   - scriptCalls: scripts as functions (`FCALL`, default) or `EVALSHA`.
    ///   - functionLoader: the user that loads missing function libraries (`nil`: this user).
    ///   - sentinel: Sentinel mode when set: the sentinels and the master's name.
    ///   - sentinelCheckInterval: how often Sentinel mode asks the sentinels for the primary (1 s).
    public init(
        endpoint: RedisEndpoint = .tcp(host: "127.0.0.1", port: 6379),
        username: String? = nil,
        password: String? = nil,
        database: Int = 0,
        connectTimeout: Duration = .seconds(2),
        commandTimeout: Duration = .seconds(5),
        connectionCount: Int = 2,
        initialReconnectDelay: Duration = .milliseconds(20),
        maximumReconnectDelay: Duration = .seconds(1),
        clusterSeeds: [RedisEndpoint] = [],
        clusterRefreshInterval: Duration = .seconds(30),
        clusterMaximumRedirects: Int = 5,
        clusterRetryTimeout: Duration = .seconds(5),
        scriptCalls: RedisScriptCalls = .functions,
        functionLoader: RedisCredentials? = nil,
        sentinel: RedisSentinelConfiguration? = nil,
        sentinelCheckInterval: Duration = .seconds(1)
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
        self.clusterSeeds = clusterSeeds
        self.clusterRefreshInterval = clusterRefreshInterval
        self.clusterMaximumRedirects = max(0, clusterMaximumRedirects)
        self.clusterRetryTimeout = clusterRetryTimeout
        self.scriptCalls = scriptCalls
        self.functionLoader = functionLoader
        self.sentinel = sentinel
        self.sentinelCheckInterval = sentinelCheckInterval
        if let first = clusterSeeds.first { self.endpoint = first }
        if clusterSeeds.isEmpty, let first = sentinel?.sentinels.first { self.endpoint = first }
    }

    /// Whether the client runs in Redis Cluster mode (``clusterSeeds`` is not empty).
    public var isCluster: Bool { !clusterSeeds.isEmpty }

    /// Creates a configuration from a URL.
    ///
    /// Accepted forms: `redis://[[user]:password@]host[:port][/db]`, with TLS
    /// `rediss://…` (same form), `unix:///path/to/socket[?db=N][&password=…]`, for a Redis
    /// Cluster `redis+cluster://[[user]:password@]host[:port][,host[:port]…]` (seed nodes, any one
    /// reachable is enough; database 0 only, as Redis Cluster has no other), with TLS
    /// `rediss+cluster://…` (also spelled `redis+cluster+tls://`), and for Redis Sentinel
    /// `redis+sentinel://[[user]:password@]host[:port][,host[:port]…]/master-name[?db=N]`
    /// (the sentinels, port 26379 by default; the user and password are the data nodes'; see
    /// ``sentinel`` for the `sentinel_username` / `sentinel_password[_file]` options), with TLS to
    /// the sentinels and the data nodes `rediss+sentinel://…` (also spelled `redis+sentinel+tls://`).
    ///
    /// TLS takes the query options `tls_ca_file`, `tls_cert_file`, `tls_key_file` and
    /// `tls_server_name` (``RedisTLSConfiguration``). Every form takes `script_calls=functions|eval`
    /// (``scriptCalls``) and `function_loader_user=…&function_loader_password_file=/path` (or
    /// `…_password=…`; ``functionLoader``).
    /// - Throws: ``RedisError`` with ``RedisError/Code/invalidURL`` for a malformed URL.
    public init(url: String) throws {
        self.init()
        if let sentinelURL = try Self.sentinelURLRemainder(url) {
            try parseSentinelURL(sentinelURL.remainder, tls: sentinelURL.tls)
            return
        }
        for (prefix, tls) in [("redis+cluster://", false), ("rediss+cluster://", true), ("redis+cluster+tls://", true)]
        where url.lowercased().hasPrefix(prefix) {
            try parseClusterURL(String(url.dropFirst(prefix.count)), tls: tls)
            return
        }
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased() else {
            throw RedisError(.invalidURL, "not a URL: expected redis://host:port/db or unix:///path")
        }
        func decoded(_ text: String?) -> String? { text?.removingPercentEncoding.flatMap { $0.isEmpty ? nil : $0 } }
        let query = Dictionary((components.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { _, last in last })
        switch scheme {
        case "redis", "rediss":
            guard let host = components.host, !host.isEmpty else {
                throw RedisError(.invalidURL, "redis URL has no host")
            }
            let port = components.port ?? 6379
            guard RedisEndpoint.ports.contains(port) else { throw RedisError(.invalidURL, "port \(port) is out of range") }
            let bareHost = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
            try Self.validateHost(bareHost)
            endpoint = .tcp(host: bareHost, port: port)
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
        default:
            throw RedisError(.invalidURL, "unknown scheme '\(scheme.prefix(32))': expected redis://, rediss://, redis+cluster://, rediss+cluster://, redis+sentinel:// or unix://")
        }
        if let db = query["db"] {
            guard let value = Int(db), value >= 0 else { throw RedisError(.invalidURL, "db '\(db)' is not a non-negative integer") }
            database = value
        }
        if username != nil && password == nil {
            throw RedisError(.invalidURL, "a user name needs a password: redis://user:password@host")
        }
        try applyScriptOptions(query)
        try applyTLSOptions(query, enabled: scheme == "rediss")
    }

    /// The URL query options of TLS (`tls_ca_file`, `tls_cert_file`, `tls_key_file`,
    /// `tls_server_name`); they need a TLS scheme, so a plain-TCP URL never silently ignores them.
    mutating func applyTLSOptions(_ query: [String: String], enabled: Bool) throws {
        func option(_ name: String) -> String? { query[name].flatMap { $0.isEmpty ? nil : $0 } }
        let names = ["tls_ca_file", "tls_cert_file", "tls_key_file", "tls_server_name"]
        guard enabled else {
            if let given = names.first(where: { query[$0] != nil }) {
                throw RedisError(.invalidURL, "\(given) needs TLS: use rediss:// (or rediss+cluster://, rediss+sentinel://)")
            }
            return
        }
        let tls = RedisTLSConfiguration(
            caFile: option("tls_ca_file"), certificateFile: option("tls_cert_file"),
            privateKeyFile: option("tls_key_file"), serverName: option("tls_server_name"))
        if (tls.certificateFile == nil) != (tls.privateKeyFile == nil) {
            throw RedisError(.invalidURL, "a client certificate needs both tls_cert_file and tls_key_file")
        }
        if let name = tls.serverName { try Self.validateHost(name) }
        self.tls = tls
    }

    /// The password in the file at `path` (a `…_password_file` URL option), read now; surrounding
    /// whitespace is dropped, so a trailing newline is not part of it.
    static func readPasswordFile(_ path: String, option: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8),
            case let password = text.trimmingCharacters(in: .whitespacesAndNewlines), !password.isEmpty
        else {
            throw RedisError(.invalidURL, "\(option) \(path) cannot be read or is empty")
        }
        return password
    }

    /// The URL query options about scripts: `script_calls=functions|eval` and the function
    /// loader's `function_loader_user` with `function_loader_password` or, better,
    /// `function_loader_password_file` (a path, read now; surrounding whitespace is dropped), so
    /// that the URL itself never carries the loader's password.
    mutating func applyScriptOptions(_ query: [String: String]) throws {
        if let calls = query["script_calls"] {
            guard let value = RedisScriptCalls(rawValue: calls) else {
                throw RedisError(.invalidURL, "script_calls must be 'functions' or 'eval', not '\(calls.prefix(32))'")
            }
            scriptCalls = value
        }
        let loaderUser = query["function_loader_user"].flatMap { $0.isEmpty ? nil : $0 }
        var loaderPassword = query["function_loader_password"].flatMap { $0.isEmpty ? nil : $0 }
        if let path = query["function_loader_password_file"], !path.isEmpty {
            guard loaderPassword == nil else {
                throw RedisError(.invalidURL, "give function_loader_password or function_loader_password_file, not both")
            }
            loaderPassword = try Self.readPasswordFile(path, option: "function_loader_password_file")
        }
        if let loaderPassword {
            functionLoader = RedisCredentials(username: loaderUser, password: loaderPassword)
        } else if loaderUser != nil {
            throw RedisError(.invalidURL, "function_loader_user needs function_loader_password")
        }
    }
}

extension RedisClientConfiguration {
    /// A host must be a DNS name or an IP address: letters, digits, `.`, `-`, `_` and (IPv6) `:`.
    /// Percent-decoding must not smuggle in `@`, `/`, spaces or other characters.
    static func validateHost(_ host: String) throws {
        let allowed = host.utf8.allSatisfy { byte in
            (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "-")
                || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ":")
        }
        guard allowed else { throw RedisError(.invalidURL, "'\(host)' is not a host name or IP address") }
    }

    /// Parses what follows `redis+cluster://`: `[[user]:password@]host[:port],host[:port]…[/0]`.
    private mutating func parseClusterURL(_ rest: String, tls: Bool) throws {
        var rest = Substring(rest)
        var options: [String: String] = [:]
        if let query = rest.firstIndex(of: "?") {
            let items = URLComponents(string: "redis://x/" + rest[query...])?.queryItems ?? []
            options = Dictionary(items.map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { _, last in last })
            rest = rest[..<query]
        }
        var hostList = rest
        if let at = rest.lastIndex(of: "@") {
            let userInfo = rest[..<at]
            hostList = rest[rest.index(after: at)...]
            let parts = userInfo.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            func decoded(_ text: Substring?) -> String? { text.flatMap { String($0).removingPercentEncoding }.flatMap { $0.isEmpty ? nil : $0 } }
            username = decoded(parts.first)
            password = decoded(parts.count > 1 ? parts[1] : nil)
        }
        if let slash = hostList.firstIndex(of: "/") {
            let path = hostList[hostList.index(after: slash)...]
            guard path.isEmpty || path == "0" else {
                throw RedisError(.invalidURL, "a Redis Cluster has only database 0, not '\(path)'")
            }
            hostList = hostList[..<slash]
        }
        var seeds: [RedisEndpoint] = []
        for item in hostList.split(separator: ",", omittingEmptySubsequences: true) {
            seeds.append(try Self.addressEndpoint(item, defaultPort: 6379, what: "cluster seed", scheme: "redis+cluster"))
        }
        guard let first = seeds.first else {
            throw RedisError(.invalidURL, "redis+cluster URL has no seed node: redis+cluster://host:port[,host:port…]")
        }
        if username != nil && password == nil {
            throw RedisError(.invalidURL, "a user name needs a password: redis+cluster://user:password@host:port")
        }
        clusterSeeds = seeds
        endpoint = first
        database = 0
        try applyScriptOptions(options)
        try applyTLSOptions(options, enabled: tls)
    }
}
