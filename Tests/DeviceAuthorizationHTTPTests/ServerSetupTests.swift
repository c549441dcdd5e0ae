import DeviceAuthorization
import DeviceAuthorizationHTTP
import Foundation
import Logging
import RedisClient
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite("Server set-up: configuration file, embedded Redis")
struct ServerSetupTests {
    @Test("configuration file: clients with hashed secrets, per-client settings, validation")
    func configurationFile() throws {
        let json = """
            {"public_base_url": "https://auth.example.com", "trusted_proxies": ["10.20.0.0/16"], "user_header": "X-Forwarded-User",
             "refresh_token_idle_seconds": 3600, "refresh_token_absolute_seconds": 86400,
             "clients": [
               {"client_id": "tv", "display_name": "Living-room TV", "scopes": ["profile"], "code_lifetime_seconds": 300, "interval_seconds": 7,
                "refresh_tokens": true, "refresh_token_idle_seconds": 600, "refresh_token_absolute_seconds": 7200},
               {"client_id": "svc", "scopes": ["profile"], "secret_sha256": "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"}
             ]}
            """
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("deviceauth-config-\(UUID().uuidString).json").path
        try json.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let file = try ServerConfigurationFile.load(path: path)
        #expect(file.publicBaseURL == "https://auth.example.com")
        let clients = try (file.clients ?? []).map { try $0.registeredClient() }
        #expect(clients[0].displayName == "Living-room TV")
        #expect(clients[0].codeLifetime == .seconds(300))
        #expect(clients[0].pollingInterval == 7)
        #expect(clients[0].refreshTokens && clients[0].refreshIdleLifetime == .seconds(600) && clients[0].refreshAbsoluteLifetime == .seconds(7200))
        #expect(!clients[1].refreshTokens && clients[1].refreshIdleLifetime == nil)
        #expect(file.refreshTokenIdleSeconds == 3600 && file.refreshTokenAbsoluteSeconds == 86400)
        #expect(!clients[0].isConfidential)
        #expect(clients[1].isConfidential)
        #expect(clients[1].verifySecret("secret"))  // sha256("secret")
        #expect(!clients[1].verifySecret("Secret"))

        let bad = ServerConfigurationFile.Client(clientID: "x", secretSHA256: "abc")
        #expect(throws: DeviceAuthorizationHTTPError.self) { try bad.registeredClient() }
        #expect(throws: DeviceAuthorizationHTTPError.self) { try ServerConfigurationFile.load(path: "/nonexistent/deviceauth.json") }
    }

    @Test(
        "configuration file: a lifetime, interval or failure limit outside its range stops the server at load, naming the setting",
        arguments: [
            ("code_lifetime_seconds", -5), ("code_lifetime_seconds", 0), ("code_lifetime_seconds", 100_000_000_000_000_000),
            ("interval_seconds", -1), ("interval_seconds", 3_601), ("token_lifetime_seconds", 0),
            ("token_lifetime_seconds", 31_536_001), ("max_failures_per_caller", 0),
            ("max_form_parameters", 7), ("max_form_parameters", 1_001), ("metrics_port", 0), ("metrics_port", 65_536),
            ("header_read_timeout_seconds", 0), ("idle_timeout_seconds", 3_601), ("max_connections", 0),
            ("max_failures_per_user", 0), ("max_interval_seconds", 4), ("max_interval_seconds", 3_601),
            ("redemption_retry_seconds", -1), ("redemption_retry_seconds", 601),
            ("refresh_token_idle_seconds", 0), ("refresh_token_idle_seconds", 315_360_001), ("refresh_token_absolute_seconds", -1),
        ])
    func outOfRangeSettingsAreRefused(name: String, value: Int) throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("deviceauth-config-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try #"{"\#(name)": \#(value), "clients": [{"client_id": "tv", "scopes": ["profile"]}]}"#.write(toFile: path, atomically: true, encoding: .utf8)
        let error = #expect(throws: DeviceAuthorizationHTTPError.self) { try ServerConfigurationFile.load(path: path) }
        #expect(error?.code == .invalidConfiguration)
        let range = bounds(name)
        #expect(error?.message == "\(name) must be from \(range.lowerBound) to \(range.upperBound), not \(value)")

        // The same numbers per client (where a client may set them).
        if ["code_lifetime_seconds", "interval_seconds"].contains(name) {
            let client = ServerConfigurationFile.Client(
                clientID: "tv", scopes: ["profile"],
                codeLifetimeSeconds: name == "code_lifetime_seconds" ? value : nil,
                intervalSeconds: name == "interval_seconds" ? value : nil)
            let clientError = #expect(throws: DeviceAuthorizationHTTPError.self) { try client.registeredClient() }
            #expect(clientError?.message.hasPrefix("client tv: \(name) must be from") == true)
        }
        if name.hasPrefix("refresh_token_") {
            var client = ServerConfigurationFile.Client(clientID: "tv", scopes: ["profile"])
            if name == "refresh_token_idle_seconds" { client.refreshTokenIdleSeconds = value } else { client.refreshTokenAbsoluteSeconds = value }
            let clientError = #expect(throws: DeviceAuthorizationHTTPError.self) { try client.registeredClient() }
            #expect(clientError?.message.hasPrefix("client tv: \(name) must be from") == true)
        }
        // The bounds themselves are accepted.
        for edge in [range.lowerBound, range.upperBound] {
            try #"{"\#(name)": \#(edge), "clients": [{"client_id": "tv", "scopes": ["profile"]}]}"#.write(toFile: path, atomically: true, encoding: .utf8)
            _ = try ServerConfigurationFile.load(path: path)
        }
    }

    @Test("configuration file: \"durability\" becomes the store's WAIT/WAITAOF setting; a replica count or timeout out of range stops the server at load")
    func durabilitySetting() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("deviceauth-config-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        func load(_ durability: String) throws -> ServerConfigurationFile {
            try #"{"durability": \#(durability), "clients": [{"client_id": "tv", "scopes": ["profile"]}]}"#.write(toFile: path, atomically: true, encoding: .utf8)
            return try ServerConfigurationFile.load(path: path)
        }
        let setting = try #require(try load(#"{"replicas": 2, "timeout_ms": 250, "append_only_file": true}"#).durability?.setting())
        #expect(setting.replicas == 2 && setting.timeout == .milliseconds(250) && setting.appendOnlyFile)
        let defaults = try #require(try load(#"{"replicas": 1}"#).durability?.setting())
        #expect(defaults.timeout == .milliseconds(500) && !defaults.appendOnlyFile)
        // A single Redis with AOF: its own fsync only (WAITAOF 1 0); without append_only_file 0 is refused below.
        let local = try #require(try load(#"{"replicas": 0, "append_only_file": true}"#).durability?.setting())
        #expect(local.replicas == 0 && local.appendOnlyFile)
        for (json, message) in [
            (#"{"replicas": 0}"#, "durability.replicas must be from 1 to 64, not 0"),
            (#"{"replicas": 65}"#, "durability.replicas must be from 1 to 64, not 65"),
            (#"{"replicas": -1, "append_only_file": true}"#, "durability.replicas must be from 0 to 64, not -1"),
            (#"{"replicas": 1, "timeout_ms": 0}"#, "durability.timeout_ms must be from 1 to 60000, not 0"),
            (#"{"replicas": 1, "timeout_ms": 60001}"#, "durability.timeout_ms must be from 1 to 60000, not 60001"),
        ] {
            let error = #expect(throws: DeviceAuthorizationHTTPError.self) { try load(json) }
            #expect(error?.message == message)
        }
        #expect(throws: (any Error).self) { try load(#"{"timeout_ms": 5}"#) }
    }

    @Test("embedded Redis starts on a Unix socket, answers, and really stops")
    func embeddedRedis() async throws {
        let redis = try EmbeddedRedis(logger: Logger(label: "test"))
        let pid = redis.processIdentifier
        let client = try RedisClient(url: redis.url)
        #expect(try await client.send("PING").string == "PONG")
        client.shutdown()
        redis.stop()
        #expect(kill(pid, 0) != 0, "redis-server must be gone after stop()")
        #expect(!FileManager.default.fileExists(atPath: redis.directory.path))
        redis.stop()  // idempotent
    }
}

/// The documented range of a numeric configuration setting.
private func bounds(_ name: String) -> ClosedRange<Int> {
    switch name {
    case "code_lifetime_seconds": ServerConfigurationFile.Ranges.codeLifetimeSeconds
    case "interval_seconds": ServerConfigurationFile.Ranges.intervalSeconds
    case "token_lifetime_seconds": ServerConfigurationFile.Ranges.tokenLifetimeSeconds
    case "max_form_parameters": ServerConfigurationFile.Ranges.maxFormParameters
    case "metrics_port": ServerConfigurationFile.Ranges.port
    case "header_read_timeout_seconds": ServerConfigurationFile.Ranges.headerReadTimeoutSeconds
    case "idle_timeout_seconds": ServerConfigurationFile.Ranges.idleTimeoutSeconds
    case "max_connections": ServerConfigurationFile.Ranges.maxConnections
    case "max_failures_per_user": ServerConfigurationFile.Ranges.maxFailuresPerUser
    case "max_interval_seconds": ServerConfigurationFile.Ranges.maxIntervalSeconds
    case "redemption_retry_seconds": ServerConfigurationFile.Ranges.redemptionRetrySeconds
    case "refresh_token_idle_seconds", "refresh_token_absolute_seconds": ServerConfigurationFile.Ranges.refreshTokenSeconds
    default: ServerConfigurationFile.Ranges.maxFailuresPerCaller
    }
}
