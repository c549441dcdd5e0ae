import ArgumentParser
import DeviceAuthorizationHTTP
import Foundation
import Logging

/// `deviceauth-server`: the RFC 8628 API node. Argument parsing only; the wiring lives in
/// `DeviceAuthorizationServer` (DeviceAuthorizationHTTP), where tests can reach it.
@main
struct DeviceAuthServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deviceauth-server",
        abstract: "RFC 8628 device authorization server on Redis, with a verification page.",
        discussion: """
            Without a Redis URL the server starts a private redis-server on a Unix socket (development \
            mode: demo client 'demo-cli', login alice/alice, ephemeral signing key) and stops it on exit.
            Environment fallbacks: DEVICEAUTH_HOST, DEVICEAUTH_PORT, DEVICEAUTH_REDIS_URL, DEVICEAUTH_REDIS_CONNECTIONS, \
            DEVICEAUTH_CONFIG, DEVICEAUTH_SECRET, DEVICEAUTH_SECRET_FILE, DEVICEAUTH_SIGNING_KEY, DEVICEAUTH_METRICS_PORT, DEVICEAUTH_METRICS_HOST, \
            DEVICEAUTH_HEADER_READ_TIMEOUT, DEVICEAUTH_IDLE_TIMEOUT, DEVICEAUTH_MAX_CONNECTIONS, \
            DEVICEAUTH_LOG_LEVEL, DEVICEAUTH_LOG_FORMAT.
            """
    )

    @Option(help: "Address to listen on (env DEVICEAUTH_HOST).")
    var host: String?

    @Option(help: "Port to listen on (env DEVICEAUTH_PORT).")
    var port: String?

    @Option(name: .customLong("redis-url"), help: "redis://[user:password@]host:port/db or unix:///path (env DEVICEAUTH_REDIS_URL). Omit for an embedded development Redis.")
    var redisURL: String?

    @Option(
        name: .customLong("redis-connections"),
        help: "Redis connections of this node, spread over its event loops (env DEVICEAUTH_REDIS_CONNECTIONS; default: one per core, at least 2).")
    var redisConnections: String?

    @Option(help: "JSON configuration file: clients, users, proxies, secret, signing key, public URL (env DEVICEAUTH_CONFIG).")
    var config: String?

    @Option(help: "Shared secret, at least 32 bytes, the same on every node (env DEVICEAUTH_SECRET). Prefer --secret-file: argv is visible to every local user.")
    var secret: String?

    @Option(name: .customLong("secret-file"), help: "File holding the shared secret (env DEVICEAUTH_SECRET_FILE; one trailing line break ignored).")
    var secretFile: String?

    @Option(name: .customLong("signing-key"), help: "PEM file of the ES256 token signing key (env DEVICEAUTH_SIGNING_KEY).")
    var signingKey: String?

    @Option(
        name: .customLong("metrics-port"),
        help: "Serve GET /metrics on this port only; the main port then answers 404 there (env DEVICEAUTH_METRICS_PORT; default: /metrics on the main port).")
    var metricsPort: String?

    @Option(name: .customLong("metrics-host"), help: "Address of the metrics listener (env DEVICEAUTH_METRICS_HOST; default: --host).")
    var metricsHost: String?

    @Option(name: .customLong("header-read-timeout"), help: "Seconds a connection has to send a whole request head, 1-300 (env DEVICEAUTH_HEADER_READ_TIMEOUT; default 10).")
    var headerReadTimeout: String?

    @Option(name: .customLong("idle-timeout"), help: "Seconds a kept-alive connection may wait for its next request, 1-3600 (env DEVICEAUTH_IDLE_TIMEOUT; default 60).")
    var idleTimeout: String?

    @Option(name: .customLong("max-connections"), help: "Connections open at once; more are closed as they arrive, 1-1000000 (env DEVICEAUTH_MAX_CONNECTIONS; default 10000).")
    var maxConnections: String?

    @Flag(help: "Development defaults (demo client, dev login, ephemeral key) even with an external Redis.")
    var dev = false

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error, critical (env DEVICEAUTH_LOG_LEVEL).")
    var logLevel: String?

    @Option(name: .customLong("log-format"), help: "text or json (env DEVICEAUTH_LOG_FORMAT).")
    var logFormat: String?

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        func env(_ name: String) -> String? { environment[name].flatMap { $0.isEmpty ? nil : $0 } }
        /// A setting: the flag, else the environment variable, else the default. A value from either
        /// source that `parse` refuses stops the server with a message naming both; it never falls
        /// back to the default silently.
        func setting<Value>(
            _ flag: String?, _ option: String, env name: String, default defaultValue: Value,
            expected: String, parse: (String) -> Value?
        ) throws -> Value {
            guard let text = flag ?? env(name) else { return defaultValue }
            guard let value = parse(text) else {
                throw ValidationError("\(option) (\(name)) must be \(expected), not '\(text)'")
            }
            return value
        }
        func wholeNumber(_ flag: String?, _ option: String, env name: String, default defaultValue: Int, range: ClosedRange<Int>) throws -> Int {
            try setting(
                flag, option, env: name, default: defaultValue,
                expected: "a whole number from \(range.lowerBound) to \(range.upperBound)"
            ) { text in
                Int(text).flatMap { range.contains($0) ? $0 : nil }
            }
        }
        let levels = Logger.Level.allCases.map(\.rawValue)
        let level = try setting(
            logLevel, "--log-level", env: "DEVICEAUTH_LOG_LEVEL", default: Logger.Level.info,
            expected: "one of \(levels.joined(separator: ", "))"
        ) { Logger.Level(rawValue: $0) }
        let json = try setting(
            logFormat, "--log-format", env: "DEVICEAUTH_LOG_FORMAT", default: false,
            expected: "text or json"
        ) { ["text": false, "json": true][$0] }
        let port = try wholeNumber(self.port, "--port", env: "DEVICEAUTH_PORT", default: 8080, range: 1...65535)
        let metricsPort = try setting(
            self.metricsPort, "--metrics-port", env: "DEVICEAUTH_METRICS_PORT", default: Int?.none,
            expected: "a whole number from 1 to 65535"
        ) { text -> Int?? in
            // Explicitly doubly optional: a refused value must be `nil`, not `.some(nil)` (unset).
            guard let port = Int(text), (1...65535).contains(port) else { return nil }
            return .some(port)
        }
        /// An optional whole number: flag, else environment, else `nil` (the file's value or the default).
        func optionalWholeNumber(_ flag: String?, _ option: String, env name: String, range: ClosedRange<Int>) throws -> Int? {
            try setting(flag, option, env: name, default: Int?.none, expected: "a whole number from \(range.lowerBound) to \(range.upperBound)") { text -> Int?? in
                // Explicitly doubly optional: a refused value must be `nil`, not `.some(nil)` (unset).
                guard let value = Int(text), range.contains(value) else { return nil }
                return .some(value)
            }
        }
        let headerReadTimeout = try optionalWholeNumber(
            self.headerReadTimeout, "--header-read-timeout", env: "DEVICEAUTH_HEADER_READ_TIMEOUT",
            range: ServerConfigurationFile.Ranges.headerReadTimeoutSeconds)
        let idleTimeout = try optionalWholeNumber(
            self.idleTimeout, "--idle-timeout", env: "DEVICEAUTH_IDLE_TIMEOUT",
            range: ServerConfigurationFile.Ranges.idleTimeoutSeconds)
        let maxConnections = try optionalWholeNumber(
            self.maxConnections, "--max-connections", env: "DEVICEAUTH_MAX_CONNECTIONS",
            range: ServerConfigurationFile.Ranges.maxConnections)
        let connections = try wholeNumber(
            redisConnections, "--redis-connections", env: "DEVICEAUTH_REDIS_CONNECTIONS", default: ServerOptions.defaultRedisConnections, range: 1...64)
        LoggingSystem.bootstrap { label in
            var handler: any LogHandler = json ? JSONLogHandler(label: label) : StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "deviceauth")
        let options = ServerOptions(
            host: host ?? env("DEVICEAUTH_HOST") ?? "127.0.0.1",
            port: port,
            redisURL: redisURL ?? env("DEVICEAUTH_REDIS_URL"),
            redisConnections: connections,
            configPath: config ?? env("DEVICEAUTH_CONFIG"),
            secret: secret ?? env("DEVICEAUTH_SECRET"),
            secretFile: secretFile ?? env("DEVICEAUTH_SECRET_FILE"),
            signingKeyFile: signingKey ?? env("DEVICEAUTH_SIGNING_KEY"),
            development: dev,
            metricsPort: metricsPort,
            metricsHost: metricsHost ?? env("DEVICEAUTH_METRICS_HOST"),
            headerReadTimeoutSeconds: headerReadTimeout,
            idleTimeoutSeconds: idleTimeout,
            maxConnections: maxConnections
        )
        do {
            try await DeviceAuthorizationServer.run(options: options, logger: logger)
        } catch let error as DeviceAuthorizationHTTPError {
            logger.critical("\(error.message)")
            throw ExitCode.failure
        }
    }
}
