import Crypto
import DeviceAuthorization
import Foundation
import Hummingbird
import Logging
import Metrics
import NIOCore
import NIOPosix
import Prometheus
import RedisClient
import ServiceLifecycle
import UnixSignals

/// What `deviceauth-server` was asked for on its command line (flags and environment).
public struct ServerOptions: Sendable {
    /// Address to listen on.
    public var host: String
    /// Port to listen on.
    public var port: Int
    /// Redis URL; `nil` (and none in the file) starts an embedded development Redis.
    public var redisURL: String?
    /// Connections to Redis, spread over the event loops; per primary in cluster mode.
    public var redisConnections: Int
    /// JSON configuration file.
    public var configPath: String?
    /// Shared secret (≥ 32 bytes). Prefer ``secretFile``: argv is readable by every local user.
    public var secret: String?
    /// A file holding the shared secret (`--secret-file`, `DEVICEAUTH_SECRET_FILE`).
    public var secretFile: String?
    /// PEM file of the ES256 signing key.
    public var signingKeyFile: String?
    /// Force development defaults (demo client, dev user, ephemeral key) even with a Redis URL.
    public var development: Bool
    /// Port of a listener of its own for `GET /metrics` (`nil`: the file's `metrics_port`, else
    /// `/metrics` on the main listener). With one, the main listener answers 404 on `/metrics`.
    public var metricsPort: Int?
    /// Address of the metrics listener (`nil`: the file's `metrics_host`, else ``host``).
    public var metricsHost: String?
    /// Seconds a connection has to send a request head (`nil`: the file's `header_read_timeout_seconds`, else 10).
    public var headerReadTimeoutSeconds: Int?
    /// Seconds a kept-alive connection may idle (`nil`: the file's `idle_timeout_seconds`, else 60).
    public var idleTimeoutSeconds: Int?
    /// Connections open at once (`nil`: the file's `max_connections`, else 10 000).
    public var maxConnections: Int?

    /// One Redis connection per event loop (one loop per core), at least 2: a connection's
    /// handlers run on its loop (`EventLoopExecutor`) and find a Redis connection there.
    public static var defaultRedisConnections: Int { min(64, max(2, System.coreCount)) }

    /// Creates options.
    /// - Parameters:
    ///   - host: listen address (127.0.0.1).
    ///   - port: listen port (8080).
    ///   - redisURL: Redis URL (`nil`: embedded development Redis).
    ///   - redisConnections: Redis connections (``defaultRedisConnections``; at least 1).
    ///   - configPath: configuration file.
    ///   - secret: shared secret.
    ///   - secretFile: a file holding the shared secret.
    ///   - signingKeyFile: ES256 PEM file.
    ///   - development: development defaults.
    ///   - metricsPort: a separate metrics listener's port.
    ///   - metricsHost: the metrics listener's address.
    ///   - headerReadTimeoutSeconds: the request-head deadline.
    ///   - idleTimeoutSeconds: the keep-alive idle timeout.
    ///   - maxConnections: the connection cap.
    public init(
        host: String = "127.0.0.1", port: Int = 8080, redisURL: String? = nil, redisConnections: Int = ServerOptions.defaultRedisConnections, configPath: String? = nil,
        secret: String? = nil, secretFile: String? = nil, signingKeyFile: String? = nil, development: Bool = false, metricsPort: Int? = nil, metricsHost: String? = nil,
        headerReadTimeoutSeconds: Int? = nil, idleTimeoutSeconds: Int? = nil, maxConnections: Int? = nil
    ) {
        self.host = host
        self.port = port
        self.redisURL = redisURL
        self.redisConnections = max(1, redisConnections)
        self.configPath = configPath
        self.secret = secret
        self.secretFile = secretFile
        self.signingKeyFile = signingKeyFile
        self.development = development
        self.metricsPort = metricsPort
        self.metricsHost = metricsHost
        self.headerReadTimeoutSeconds = headerReadTimeoutSeconds
        self.idleTimeoutSeconds = idleTimeoutSeconds
        self.maxConnections = maxConnections
    }
}

/// Wires the API node together — configuration, Redis (or an embedded one), store, clients,
/// users, tokens, metrics, routes — and runs it until SIGTERM/SIGINT.
public enum DeviceAuthorizationServer {
    /// The development client available without a configuration file.
    public static let demoClient = ServerConfigurationFile.Client(clientID: "demo-cli", displayName: "Demo CLI", scopes: ["profile", "email"])

    /// Runs the server until a shutdown signal; in-flight requests finish first.
    /// - Throws: ``DeviceAuthorizationHTTPError`` for bad configuration, or what the services throw.
    public static func run(options: ServerOptions, logger: Logger) async throws {
        let file = try options.configPath.map(ServerConfigurationFile.load(path:)) ?? ServerConfigurationFile()
        var embedded: EmbeddedRedis?
        let redisURL: String
        if let url = options.redisURL ?? file.redisURL {
            redisURL = url
        } else {
            let redis = try EmbeddedRedis(logger: logger)
            embedded = redis
            redisURL = redis.url
        }
        let development = options.development || embedded != nil
        if development {
            logger.warning("Development mode: demo defaults are active (demo client, development login, ephemeral keys). Do not use in production.")
        }
        do {
            try await serve(options: options, file: file, redisURL: redisURL, development: development, logger: logger)
        } catch {
            embedded?.stop()
            throw error
        }
        embedded?.stop()
    }

    private static func serve(options: ServerOptions, file: ServerConfigurationFile, redisURL: String, development: Bool, logger: Logger) async throws {
        // Secret shared by all nodes: user-code hashes, CSRF tokens, session cookies.
        // The command line (flag or environment) wins over the file; each may name it or its file, not both.
        if options.secret != nil && options.secretFile != nil {
            throw DeviceAuthorizationHTTPError(.invalidConfiguration, "give one of --secret (DEVICEAUTH_SECRET) and --secret-file (DEVICEAUTH_SECRET_FILE)")
        }
        if file.secret != nil && file.secretFile != nil {
            throw DeviceAuthorizationHTTPError(.invalidConfiguration, "give one of \"secret\" and \"secret_file\" in the configuration file")
        }
        let secret: [UInt8]
        if let text = options.secret ?? (options.secretFile == nil ? file.secret : nil) {
            guard text.utf8.count >= 32 else {
                throw DeviceAuthorizationHTTPError(.invalidConfiguration, "the secret must be at least 32 bytes")
            }
            secret = Array(text.utf8)
        } else if let path = options.secretFile ?? file.secretFile {
            secret = try SecretFile.read(path, setting: options.secretFile != nil ? "--secret-file" : "secret_file", minimumLength: 32)
        } else if development {
            logger.warning("No secret configured: using a random one; codes and sessions do not survive a restart")
            secret = randomBytes(32)
        } else {
            throw DeviceAuthorizationHTTPError(
                .invalidConfiguration,
                "a secret is required with an external Redis: pass --secret-file FILE (DEVICEAUTH_SECRET_FILE), set \"secret_file\" in the configuration, or DEVICEAUTH_SECRET (the same on every node)"
            )
        }

        let urlHost = ["0.0.0.0", "::", ""].contains(options.host) ? "127.0.0.1" : options.host
        let publicBaseURL = file.publicBaseURL ?? "http://\(urlHost.contains(":") ? "[\(urlHost)]" : urlHost):\(options.port)"
        let issuer = file.issuer ?? publicBaseURL
        let metricsPort = options.metricsPort ?? file.metricsPort
        let metricsHost = options.metricsHost ?? file.metricsHost ?? options.host
        if let metricsPort, metricsPort == options.port, metricsHost == options.host {
            throw DeviceAuthorizationHTTPError(.invalidConfiguration, "metrics_port (--metrics-port) must differ from the main port \(options.port)")
        }
        let configuration = DeviceAuthorizationHTTPConfiguration(
            issuer: issuer, publicBaseURL: publicBaseURL, trustedProxies: try file.trustedProxySettings(),
            secret: secret, secureCookies: file.secureCookies, maxFormParameters: file.maxFormParameters ?? FormBody.defaultMaxParameters,
            rateLimits: try file.rateLimits?.settings() ?? RateLimitSettings(), metricsOnMainListener: metricsPort == nil)

        // Metrics: the store's swift-metrics counters land in the same Prometheus registry.
        let metrics = DeviceAuthorizationMetrics()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: metrics.registry))

        // One set of event loops for HTTP and Redis: a command issued on a request's loop is
        // written and answered on that loop's connection, with no thread hop.
        let eventLoopGroup = MultiThreadedEventLoopGroup.singleton
        var redisConfiguration = try RedisClientConfiguration(url: redisURL)
        redisConfiguration.connectionCount = options.redisConnections
        redisConfiguration.eventLoopGroup = eventLoopGroup
        let redis = RedisClient(configuration: redisConfiguration, logger: logger)
        var storeConfiguration = DeviceCodeStoreConfiguration(keyPrefix: file.keyPrefix ?? "da", secret: secret)
        if let seconds = file.codeLifetimeSeconds { storeConfiguration.lifetime = .seconds(seconds) }
        if let seconds = file.refreshTokenIdleSeconds { storeConfiguration.refreshIdleLifetime = .seconds(seconds) }
        if let seconds = file.refreshTokenAbsoluteSeconds { storeConfiguration.refreshAbsoluteLifetime = .seconds(seconds) }
        if let seconds = file.intervalSeconds { storeConfiguration.interval = seconds }
        if let limit = file.maxFailuresPerCaller { storeConfiguration.maxFailuresPerCaller = limit }
        if let limit = file.maxFailuresPerUser { storeConfiguration.maxFailuresPerUser = limit }
        if let seconds = file.maxIntervalSeconds { storeConfiguration.maxInterval = seconds }
        if let seconds = file.redemptionRetrySeconds { storeConfiguration.redemptionRetryWindow = .seconds(seconds) }
        storeConfiguration.durability = try file.durability?.setting()
        let store = DeviceCodeStore(client: redis, configuration: storeConfiguration, logger: logger)

        var clientEntries = file.clients ?? []
        if clientEntries.isEmpty {
            guard development else { throw DeviceAuthorizationHTTPError(.invalidConfiguration, "no clients configured: add \"clients\" to the configuration file") }
            clientEntries = [demoClient]
            logger.notice("Development mode: client 'demo-cli' (public, scopes: profile email)")
        }
        let clients = StaticClientRegistry(clients: try clientEntries.map { try $0.registeredClient(allowPlaintextSecret: development) })

        // Plaintext passwords in the file are refused outside development, even when user_header
        // makes them unused: the file should not hold them at all.
        if let accounts = file.users, !accounts.isEmpty, !development {
            throw DeviceAuthorizationHTTPError(
                .invalidConfiguration,
                """
                "users" (development login, plaintext passwords in the file) is accepted only in development mode (--dev); \
                in production set "user_header" behind an authenticating proxy
                """)
        }
        let users: any UserAuthenticator
        if let header = file.userHeader {
            if configuration.trustedProxies.isEmpty {
                logger.warning("user_header is set but trusted_proxies is empty: nobody can sign in")
            }
            if file.allowWideTrustedProxies == true {
                logger.warning("allow_wide_trusted_proxies is set: every host in trusted_proxies can sign in as anyone")
            }
            if !configuration.trustedProxies.requiresProxySecret {
                logger.warning("user_header without proxy_secret_file: the proxies are trusted by address alone")
            }
            users = try TrustedHeaderAuthenticator(headerName: header)
        } else if let accounts = file.users, !accounts.isEmpty {
            logger.warning("Using the development login with users from the configuration file; put an authenticating proxy in front for production")
            users = DevelopmentLoginAuthenticator(users: accounts, secret: secret, secureCookies: configuration.secureCookies)
        } else if development {
            logger.notice("Development mode: sign in as alice / alice")
            users = DevelopmentLoginAuthenticator(users: ["alice": "alice"], secret: secret, secureCookies: configuration.secureCookies)
        } else {
            throw DeviceAuthorizationHTTPError(.invalidConfiguration, "no way to identify users: set \"user_header\" (with trusted_proxies) or \"users\"")
        }

        let keyPath = options.signingKeyFile ?? file.signingKeyFile
        let pem: String?
        if let keyPath {
            do { pem = try String(contentsOfFile: keyPath, encoding: .utf8) } catch {
                throw DeviceAuthorizationHTTPError(.signingKey, "cannot read signing key \(keyPath)", underlying: error)
            }
        } else if development {
            logger.warning("No signing key configured: tokens are signed with an ephemeral ES256 key that changes on every start")
            pem = nil
        } else {
            throw DeviceAuthorizationHTTPError(
                .signingKey, "a signing key is required: pass --signing-key FILE (an ES256 PEM: openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt)")
        }
        if let audience = file.audience, audience.isEmpty {
            throw DeviceAuthorizationHTTPError(.invalidConfiguration, "audience must not be empty (omit it for the issuer)")
        }
        let tokens = try await JWTTokenIssuer(
            issuer: issuer, privateKeyPEM: pem, audience: file.audience,
            lifetime: .seconds(file.tokenLifetimeSeconds ?? 3600))

        let routes = try DeviceAuthorizationRoutes(
            store: store, redis: redis, clients: clients, users: users, tokens: tokens,
            metrics: metrics, configuration: configuration)
        let defaults = ConnectionLimits()
        let limits = ConnectionLimits(
            headerReadTimeout: (options.headerReadTimeoutSeconds ?? file.headerReadTimeoutSeconds).map { .seconds($0) } ?? defaults.headerReadTimeout,
            idleTimeout: (options.idleTimeoutSeconds ?? file.idleTimeoutSeconds).map { .seconds($0) } ?? defaults.idleTimeout,
            maxConnections: options.maxConnections ?? file.maxConnections ?? defaults.maxConnections)
        var app = Application(
            router: routes.makeRouter(),
            server: .deviceAuthorization(limits: limits, logger: logger),
            configuration: ApplicationConfiguration(address: .hostname(options.host, port: options.port), serverName: "deviceauth"),
            onServerRunning: { _ in
                logger.notice("deviceauth-server listening", metadata: ["address": "\(options.host):\(options.port)", "verification_uri": "\(publicBaseURL)/device"])
            },
            eventLoopGroupProvider: .shared(eventLoopGroup),
            logger: logger
        )
        app.beforeServerStarts {
            do {
                try await ProductScripts.load(on: redis)
            } catch {
                // Not fatal: an operator may have loaded them, and a missing one is loaded on use.
                logger.warning(
                    "Could not load the product's Redis functions at start-up; requests will fail until they are loaded (give the Redis user +function|load, or set function_loader_user/function_loader_password in the Redis URL)",
                    metadata: ["error": "\(error)"])
            }
            await store.checkRedisConfiguration()
        }
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: redis), .init(service: app)]
        if let metricsPort {
            let metricsApp = Application(
                router: routes.makeMetricsRouter(),
                server: .deviceAuthorization(limits: limits, logger: logger),
                configuration: ApplicationConfiguration(address: .hostname(metricsHost, port: metricsPort), serverName: "deviceauth"),
                onServerRunning: { _ in logger.notice("metrics listening", metadata: ["address": "\(metricsHost):\(metricsPort)"]) },
                logger: logger)
            services.append(.init(service: metricsApp))
        }
        // Shutdown runs in reverse order: the HTTP servers drain first, then Redis closes.
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: services,
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        do {
            try await group.run()
        } catch let error as IOError {
            // NIO says "bind(descriptor:ptr:bytes:): Address already in use"; say which address and what to do.
            let reason: String? =
                switch error.errnoCode {
                case EADDRINUSE: "the port is in use (another server on it?)"
                case EACCES: "permission denied (ports below 1024 need privileges)"
                case EADDRNOTAVAIL: "this machine has no such address"
                default: nil
                }
            guard let reason else { throw error }
            throw DeviceAuthorizationHTTPError(.listen, "cannot listen on \(options.host):\(options.port): \(reason)", underlying: error)
        } catch let error as SocketAddressError.UnknownHost {
            throw DeviceAuthorizationHTTPError(
                .listen, "cannot listen on \(options.host):\(options.port): the host does not resolve (\(error.errorDescription))", underlying: error)
        }
        logger.notice("deviceauth-server stopped")
    }
}
