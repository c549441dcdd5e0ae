import Foundation
import RedisClient
import Testing
@testable import DeviceAuthorization

/// A store on the shared test Redis (REDIS_URL, started by `make test`), with its own key prefix.
struct StoreFixture {
    let client: RedisClient
    let store: DeviceCodeStore
    let prefix: String

    init(connections: Int = 2, configure: (inout DeviceCodeStoreConfiguration) -> Void = { _ in }) throws {
        guard let url = ProcessInfo.processInfo.environment["REDIS_URL"] else {
            fatalError("REDIS_URL is not set: run the tests with `make test`, which starts redis-server")
        }
        var redis = try RedisClientConfiguration(url: url)
        redis.connectionCount = connections
        client = RedisClient(configuration: redis)
        prefix = "t" + UUID().uuidString.prefix(8).lowercased()
        var configuration = DeviceCodeStoreConfiguration(keyPrefix: prefix, secret: Array("a-test-secret-of-at-least-32-bytes!!".utf8))
        configure(&configuration)
        store = DeviceCodeStore(client: client, configuration: configuration)
    }

    /// Another store instance (own connections) on the same Redis and prefix: another API node.
    func anotherNode() throws -> DeviceCodeStore {
        let other = try RedisClient(url: ProcessInfo.processInfo.environment["REDIS_URL"]!)
        return DeviceCodeStore(client: other, configuration: store.configuration)
    }

    /// Every key of this fixture and its content, as Redis holds them.
    func dump() async throws -> [(key: String, content: [String])] {
        var cursor = "0"
        var keys: [String] = []
        repeat {
            let reply = try await client.send("SCAN", cursor, "MATCH", prefix + ":*", "COUNT", 1000).array ?? []
            cursor = reply[0].string ?? "0"
            keys += (reply[1].array ?? []).compactMap(\.string)
        } while cursor != "0"
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
