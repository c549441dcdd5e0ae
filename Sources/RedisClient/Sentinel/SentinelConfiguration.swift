import Foundation

/// Where to find the primary of a Redis Sentinel deployment: the sentinels, the name of the
/// monitored master, and the sentinels' own credentials.
///
/// Held in ``RedisClientConfiguration/sentinel``; the data nodes' user, password and database
/// stay in ``RedisClientConfiguration/username``, ``RedisClientConfiguration/password`` and
/// ``RedisClientConfiguration/database``.
///
/// ```swift
/// let configuration = try RedisClientConfiguration(
///     url: "redis+sentinel://app:secret@10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379/mymaster?db=0")
/// configuration.sentinel?.masterName   // "mymaster"
/// ```
public struct RedisSentinelConfiguration: Sendable, Hashable {
    /// The port a sentinel listens on when a URL gives none.
    public static let defaultPort = 26379

    /// The sentinels, asked in order (starting with the one that answered last). One reachable
    /// sentinel that knows the master is enough; list all of them so a dead one does not matter.
    public var sentinels: [RedisEndpoint]
    /// The master's name in the sentinels' `sentinel monitor <name> …` line.
    public var masterName: String
    /// The sentinels' ACL user and password (`requirepass` / `user` in sentinel.conf), or `nil`
    /// when the sentinels need none. Never the data nodes' credentials.
    public var credentials: RedisCredentials?

    /// Creates a Sentinel configuration.
    /// - Parameters:
    ///   - sentinels: the sentinels to ask, in order.
    ///   - masterName: the monitored master's name.
    ///   - credentials: the sentinels' own user and password, or `nil`.
    public init(sentinels: [RedisEndpoint], masterName: String, credentials: RedisCredentials? = nil) {
        self.sentinels = sentinels
        self.masterName = masterName
        self.credentials = credentials
    }
}

extension RedisClientConfiguration {
    /// Whether the client runs in Redis Sentinel mode (``sentinel`` is set).
    public var isSentinel: Bool { sentinel != nil }

    /// The longest master name accepted from a URL (Sentinel keeps names in its config file).
    static let maximumMasterNameLength = 256

    /// What follows the scheme of a Sentinel URL in `url`, and whether it asks for TLS
    /// (`rediss+sentinel://`, also spelled `redis+sentinel+tls://`), or `nil` when `url` is not a
    /// Sentinel URL. Schemes that combine Sentinel with Cluster are refused here so that they get a
    /// specific message rather than "unknown scheme".
    static func sentinelURLRemainder(_ url: String) throws -> (remainder: Substring, tls: Bool)? {
        guard let separator = url.range(of: "://") else { return nil }
        let scheme = url[..<separator.lowerBound].lowercased()
        let parts = scheme.split(separator: "+", omittingEmptySubsequences: false)
        guard parts.contains("sentinel") else { return nil }
        if parts.contains("cluster") {
            throw RedisError(.invalidURL, "Redis Sentinel and Redis Cluster cannot be combined: use redis+sentinel:// or redis+cluster://, not '\(scheme.prefix(32))://'")
        }
        let tls: Bool
        switch scheme {
        case "redis+sentinel": tls = false
        case "rediss+sentinel", "redis+sentinel+tls": tls = true
        default:
            throw RedisError(
                .invalidURL, "unknown scheme '\(scheme.prefix(32))': a Sentinel URL is redis+sentinel:// (or rediss+sentinel:// for TLS) host:port[,host:port…]/master-name")
        }
        return (url[separator.upperBound...], tls)
    }

    /// Parses what follows `redis+sentinel://`:
    /// `[[user]:password@]host[:port][,host[:port]…]/master-name[?db=N&sentinel_username=…&…]`.
    /// With `tls`, the TLS options (`tls_ca_file`, …) apply to the sentinels and the data nodes alike.
    mutating func parseSentinelURL(_ remainder: Substring, tls: Bool) throws {
        var rest = remainder
        var options: [String: String] = [:]
        if let question = rest.firstIndex(of: "?") {
            // A query that is not valid percent-encoding would make URLComponents return nil and
            // its options vanish silently (a db=… or password option ignored): refuse it instead.
            guard let items = URLComponents(string: "redis://x/" + rest[question...])?.queryItems else {
                throw RedisError(.invalidURL, "the query of the redis+sentinel URL is not valid percent-encoding")
            }
            options = Dictionary(items.map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { _, last in last })
            rest = rest[..<question]
        }
        if rest.contains("#") {
            throw RedisError(.invalidURL, "a redis+sentinel URL has no fragment ('#')")
        }
        guard let slash = rest.firstIndex(of: "/") else {
            throw RedisError(.invalidURL, "redis+sentinel URL has no master name: redis+sentinel://host:port[,host:port…]/master-name")
        }
        let encodedName = rest[rest.index(after: slash)...]
        var authority = rest[..<slash]

        guard !encodedName.isEmpty else {
            throw RedisError(.invalidURL, "redis+sentinel URL has no master name: redis+sentinel://host:port[,host:port…]/master-name")
        }
        guard !encodedName.contains("/") else {
            throw RedisError(.invalidURL, "redis+sentinel URL path must be only the master name; give the database as ?db=N")
        }
        guard let name = String(encodedName).removingPercentEncoding else {
            throw RedisError(.invalidURL, "the master name in the redis+sentinel URL is not valid percent-encoding")
        }
        // Printable ASCII without spaces: a name with CR/LF or spaces would be a different
        // command argument than the one the sentinel's config holds, or smuggle text into logs.
        guard name.utf8.count <= Self.maximumMasterNameLength,
            name.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F })
        else {
            throw RedisError(.invalidURL, "master name must be 1–\(Self.maximumMasterNameLength) printable ASCII characters without spaces")
        }

        if let at = authority.lastIndex(of: "@") {
            let userInfo = authority[..<at]
            authority = authority[authority.index(after: at)...]
            let parts = userInfo.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            func decoded(_ text: Substring?) throws -> String? {
                guard let text else { return nil }
                guard let value = String(text).removingPercentEncoding else {
                    throw RedisError(.invalidURL, "the user or password in the redis+sentinel URL is not valid percent-encoding")
                }
                return value.isEmpty ? nil : value
            }
            username = try decoded(parts.first)
            password = try decoded(parts.count > 1 ? parts[1] : nil)
        }
        if username != nil && password == nil {
            throw RedisError(.invalidURL, "a user name needs a password: redis+sentinel://user:password@host:port/master-name")
        }

        var sentinels: [RedisEndpoint] = []
        for item in authority.split(separator: ",", omittingEmptySubsequences: false) {
            sentinels.append(try Self.sentinelEndpoint(item))
        }
        guard !sentinels.isEmpty else {
            throw RedisError(.invalidURL, "redis+sentinel URL has no sentinel: redis+sentinel://host:port[,host:port…]/master-name")
        }

        if let db = options["db"] {
            guard let value = Int(db), value >= 0 else {
                throw RedisError(.invalidURL, "database '\(db.prefix(32))' is not a non-negative integer")
            }
            database = value
        }

        let sentinelUser = options["sentinel_username"].flatMap { $0.isEmpty ? nil : $0 }
        var sentinelPassword = options["sentinel_password"].flatMap { $0.isEmpty ? nil : $0 }
        if let path = options["sentinel_password_file"], !path.isEmpty {
            guard sentinelPassword == nil else {
                throw RedisError(.invalidURL, "give sentinel_password or sentinel_password_file, not both")
            }
            sentinelPassword = try Self.readPasswordFile(path, option: "sentinel_password_file")
        }
        var credentials: RedisCredentials?
        if let sentinelPassword {
            credentials = RedisCredentials(username: sentinelUser, password: sentinelPassword)
        } else if sentinelUser != nil {
            throw RedisError(.invalidURL, "sentinel_username needs sentinel_password or sentinel_password_file")
        }

        sentinel = RedisSentinelConfiguration(sentinels: sentinels, masterName: name, credentials: credentials)
        endpoint = sentinels[0]
        clusterSeeds = []
        try applyScriptOptions(options)
        try applyTLSOptions(options, enabled: tls)
    }

    /// One `host[:port]` or `[ipv6][:port]` of a Sentinel URL (port 26379 when none is given).
    private static func sentinelEndpoint(_ item: Substring) throws -> RedisEndpoint {
        try addressEndpoint(item, defaultPort: RedisSentinelConfiguration.defaultPort, what: "sentinel address", scheme: "redis+sentinel")
    }

    /// One `host[:port]` or `[ipv6][:port]` of a URL's host list (`defaultPort` when none is
    /// given), strictly: an IPv6 address only in brackets, a port of digits only (`Int` alone
    /// would take `+5`) within 1–65535, a host ``validateHost(_:)`` accepts. `what` and `scheme`
    /// name the list in errors.
    static func addressEndpoint(_ item: Substring, defaultPort: Int, what: String, scheme: String) throws -> RedisEndpoint {
        var host = item
        var portText: Substring?
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else {
                throw RedisError(.invalidURL, "unclosed '[' in \(what) '\(item.prefix(64))'")
            }
            let after = host[host.index(after: close)...]
            host = host[host.index(after: host.startIndex)..<close]
            if !after.isEmpty {
                guard after.hasPrefix(":") else {
                    throw RedisError(.invalidURL, "bad \(what) '\(item.prefix(64))': expected [ipv6]:port")
                }
                portText = after.dropFirst()
            }
        } else if let colon = host.firstIndex(of: ":") {
            // A second colon: an IPv6 address without brackets, whose last group would be taken for the port.
            guard host[host.index(after: colon)...].firstIndex(of: ":") == nil else {
                throw RedisError(.invalidURL, "write an IPv6 \(what) in brackets: [\(item.prefix(64))]:\(defaultPort)")
            }
            portText = host[host.index(after: colon)...]
            host = host[..<colon]
        }
        guard !host.isEmpty else {
            throw RedisError(.invalidURL, "empty host in \(scheme) URL (in '\(item.prefix(64))')")
        }
        let bareHost = String(host)
        try validateHost(bareHost)
        var port = defaultPort
        if let portText {
            // Int("+5") and Int("-1") parse; a port is digits only.
            guard !portText.isEmpty, portText.utf8.count <= 5, portText.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                let parsed = Int(portText)
            else {
                throw RedisError(.invalidURL, "bad port '\(portText.prefix(16))' in \(what) '\(item.prefix(64))'")
            }
            port = parsed
        }
        guard RedisEndpoint.ports.contains(port) else {
            throw RedisError(.invalidURL, "port \(port) is out of range (1–65535) in \(what) '\(item.prefix(64))'")
        }
        return .tcp(host: bareHost, port: port)
    }
}
