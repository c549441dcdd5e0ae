import Foundation
import RedisClient
import TestProcesses
import Testing

@testable import DeviceAuthorization

/// The start-up check for `WAITAOF` durability (`durability.append_only_file`): a server that
/// cannot confirm, or confirms too early (Valkey ≤ 9.1 under `appendfsync everysec`, the bug the
/// power-loss fault scenario found), is named in a warning before the first approval.
@Suite("Redis configuration check for WAITAOF durability")
struct AppendOnlyFileCheckTests {
    /// On the server the suite runs on (`REDIS_SERVER_BIN`: Debian's Redis 7.0 in `make test`,
    /// Valkey 9.1 in `make test-valkey`), with each AOF setting.
    @Test(arguments: [["--appendonly", "no"], ["--appendonly", "yes", "--appendfsync", "everysec"], ["--appendonly", "yes", "--appendfsync", "always"]])
    func warnsAboutWhatWouldBreakTheConfirmation(arguments: [String]) async throws {
        let server = try await PrivateRedis(arguments: arguments)
        let fixture = try StoreFixture(url: "redis://127.0.0.1:\(server.port)/0", configure: DurabilityTests.durable(0, appendOnlyFile: true))
        defer { fixture.shutdown() }
        let hasWaitAOF = try await fixture.client.send("COMMAND", "INFO", "WAITAOF").array?.first?.array != nil
        let info = try await fixture.client.send("INFO", "server").string ?? ""
        let valkey = info.contains("valkey_version:")
        let warnings = await fixture.store.checkRedisConfiguration()
        let appendOnly = arguments[1] == "yes"

        #expect(warnings.contains { $0.contains("has no WAITAOF") } == !hasWaitAOF, "\(warnings)")
        #expect(warnings.contains { $0.contains("appendonly no") } == (hasWaitAOF && !appendOnly), "\(warnings)")
        // Valkey 9.1 is affected; Debian's Redis 7.0 has no WAITAOF at all (the first warning).
        // INFO does not show appendfsync (and the product's user cannot CONFIG GET it): the
        // warning is there under always too, and names the setting.
        #expect(warnings.contains { $0.contains("redis/redis#13793") && $0.contains("appendfsync always") } == (hasWaitAOF && valkey && appendOnly), "\(warnings)")
    }

    @Test("The version rules, from INFO text: Valkey 8–9.1 and Redis 7.2–7.4 are named; Redis 8 and a later Valkey are not; older ones have no WAITAOF")
    func rules() {
        func warnings(_ info: String) -> [String] {
            DeviceCodeStore.appendOnlyFileWarnings(info: info + "\r\naof_enabled:1\r\n", node: "")
        }
        let early = { (list: [String]) in list.contains { $0.contains("redis/redis#13793") } }
        #expect(early(warnings("redis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:9.1.2")))
        #expect(early(warnings("redis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.0.1")))
        #expect(early(warnings("redis_version:7.4.2")))
        #expect(!early(warnings("redis_version:8.0.0")))
        #expect(!early(warnings("redis_version:7.2.4\r\nvalkey_version:9.2.0")))
        #expect(warnings("redis_version:8.2.1").isEmpty)
        #expect(warnings("redis_version:7.0.15").count == 1)
        #expect(warnings("redis_version:7.0.15")[0].contains("has no WAITAOF"))
        #expect(warnings("redis_version:7.2.4\r\nvalkey_version:7.2.5")[0].contains("has no WAITAOF"))
        // Hostile or empty INFO text never crashes and counts as an unknown (affected) version.
        #expect(early(warnings("redis_version:\u{0}x.y\r\n::::")))
        #expect(ServerVersion(info: "").description == "Redis of unknown version")
        #expect(
            DeviceCodeStore.appendOnlyFileWarnings(info: "aof_enabled:0\r\nredis_version:8.2.1", node: " on n:1")
                .first?.contains("Redis on n:1 runs with appendonly no") == true)
    }
}
