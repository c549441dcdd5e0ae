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
        {"public_base_url": "https://auth.example.com", "trusted_proxies": ["10.0.0.0/8"], "user_header": "X-Forwarded-User",
         "clients": [
           {"client_id": "tv", "display_name": "Living-room TV", "scopes": ["profile"], "code_lifetime_seconds": 300, "interval_seconds": 7},
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
        #expect(!clients[0].isConfidential)
        #expect(clients[1].isConfidential)
        #expect(clients[1].verifySecret("secret"))   // sha256("secret")
        #expect(!clients[1].verifySecret("Secret"))

        let bad = ServerConfigurationFile.Client(clientID: "x", secretSHA256: "abc")
        #expect(throws: DeviceAuthorizationHTTPError.self) { try bad.registeredClient() }
        #expect(throws: DeviceAuthorizationHTTPError.self) { try ServerConfigurationFile.load(path: "/nonexistent/deviceauth.json") }
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
        redis.stop()   // idempotent
    }
}
