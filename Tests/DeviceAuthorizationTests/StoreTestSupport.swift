import Foundation
import RedisClient
import TestProcesses
import Testing

@testable import DeviceAuthorization

/// A store on the shared test Redis (REDIS_URL, started by `make test`), with its own key prefix.
///
/// Inside ``onCluster(_:)`` every fixture uses the test Redis Cluster instead, so the same test
/// bodies check the store on both.
struct StoreFixture {
    let client: RedisClient
    let store: DeviceCodeStore
    let prefix: String
    /// The server this fixture is on.
    let serverURL: String

    /// The URL fixtures connect to: REDIS_URL, or the cluster's inside ``onCluster(_:)``.
    @TaskLocal static var redisURL: String? = TestEnvironment.redisURLIfSet

    /// Runs `body` (typically another suite's test method) with every fixture on the test cluster.
    static func onCluster(_ body: () async throws -> Void) async throws {
        try await $redisURL.withValue(try TestCluster.url(), operation: body)
    }

    private static func url() -> String {
        guard let url = redisURL else {
            fatalError("REDIS_URL is not set: run the tests with `make test`, which starts redis-server")
        }
        return url
    }

    init(connections: Int = 2, url: String? = nil, configure: (inout DeviceCodeStoreConfiguration) -> Void = { _ in }) throws {
        serverURL = url ?? Self.url()
        var redis = try RedisClientConfiguration(url: serverURL)
        redis.connectionCount = connections
        client = RedisClient(configuration: redis)
        prefix = "t" + UUID().uuidString.prefix(8).lowercased()
        var configuration = DeviceCodeStoreConfiguration(keyPrefix: prefix, secret: Array("a-test-secret-of-at-least-32-bytes!!".utf8))
        configure(&configuration)
        store = DeviceCodeStore(client: client, configuration: configuration)
    }

    /// Another store instance (own connections) on the same Redis and prefix: another API node.
    func anotherNode() throws -> DeviceCodeStore {
        let other = try RedisClient(url: serverURL)
        return DeviceCodeStore(client: other, configuration: store.configuration)
    }

    /// Every key of this fixture and its content, as Redis holds them (on every primary).
    func dump() async throws -> [(key: String, content: [String])] {
        var keys: [String] = []
        for (_, result) in await client.sendToEachPrimary(RedisCommand("KEYS", prefix + ":*")) {
            keys += (try result.get().array ?? []).compactMap(\.string)
        }
        var result: [(String, [String])] = []
        for key in keys {
            let type = try await client.send("TYPE", key).string
            let content: RedisValue = type == "hash" ? try await client.send("HGETALL", key) : try await client.send("GET", key)
            result.append((key, (content.array ?? [content]).compactMap(\.string)))
        }
        return result
    }

    func shutdown() { client.shutdown() }
}
