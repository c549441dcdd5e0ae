import Foundation
import TestProcesses
import Testing

@testable import RedisClient

@Suite("Connecting: URLs, authentication, failures and timeouts")
struct ConnectionTests {
    @Test func parsesRedisAndUnixURLs() throws {
        let plain = try RedisClientConfiguration(url: "redis://localhost")
        #expect(plain.endpoint == .tcp(host: "localhost", port: 6379))
        #expect(plain.database == 0 && plain.password == nil && plain.username == nil)

        let full = try RedisClientConfiguration(url: "redis://app%40x:p%3Ass@10.1.2.3:6380/4")
        #expect(full.endpoint == .tcp(host: "10.1.2.3", port: 6380))
        #expect(full.username == "app@x" && full.password == "p:ss" && full.database == 4)

        let passwordOnly = try RedisClientConfiguration(url: "redis://:secret@127.0.0.1:7000")
        #expect(passwordOnly.username == nil && passwordOnly.password == "secret")

        let unix = try RedisClientConfiguration(url: "unix:///var/run/redis.sock?db=3")
        #expect(unix.endpoint == .unix(path: "/var/run/redis.sock") && unix.database == 3)
        #expect(!plain.isCluster && !unix.isCluster)
    }

    @Test func parsesRedisClusterURLs() throws {
        let cluster = try RedisClientConfiguration(url: "redis+cluster://app:p%40ss@10.0.0.1:7000,10.0.0.2,[::1]:7002/0")
        #expect(cluster.isCluster && cluster.username == "app" && cluster.password == "p@ss" && cluster.database == 0)
        #expect(cluster.clusterSeeds == [.tcp(host: "10.0.0.1", port: 7000), .tcp(host: "10.0.0.2", port: 6379), .tcp(host: "::1", port: 7002)])
        #expect(cluster.endpoint == .tcp(host: "10.0.0.1", port: 7000))
        let one = try RedisClientConfiguration(url: "REDIS+CLUSTER://127.0.0.1:30001")
        #expect(one.clusterSeeds == [.tcp(host: "127.0.0.1", port: 30001)] && one.password == nil)
    }

    @Test(arguments: [
        ("http://127.0.0.1", RedisError.Code.invalidURL),
        ("rediss://", .invalidURL),
        ("rediss://127.0.0.1:6379?tls_cert_file=/only-the-certificate.pem", .invalidURL),
        ("redis://127.0.0.1:6379?tls_ca_file=/ca-without-tls.pem", .invalidURL),
        ("redis://", .invalidURL),
        ("redis://127.0.0.1:6379/notanumber", .invalidURL),
        ("redis://127.0.0.1:6379/-1", .invalidURL),
        ("unix://", .invalidURL),
        ("unix:///tmp/r.sock?db=x", .invalidURL),
        ("not a url at all", .invalidURL),
        ("redis://user@127.0.0.1", .invalidURL),
        ("redis+cluster://", .invalidURL),
        ("redis+cluster://127.0.0.1:7000/1", .invalidURL),
        ("redis+cluster://127.0.0.1:99999", .invalidURL),
        ("redis+cluster://127.0.0.1:x", .invalidURL),
        ("redis+cluster://user@127.0.0.1:7000", .invalidURL),
    ])
    func refusesMalformedURLs(url: String, code: RedisError.Code) {
        #expect {
            _ = try RedisClientConfiguration(url: url)
        } throws: { error in
            (error as? RedisError)?.code == code && !((error as? RedisError)?.message.isEmpty ?? true)
        }
    }

    @Test func authenticatesAsACLUser() async throws {
        let env = ProcessInfo.processInfo.environment
        let user = try #require(env["REDIS_ACL_USER"])
        let password = try #require(env["REDIS_ACL_PASSWORD"])
        let client = try RedisClient(url: "redis://\(user):\(password)@127.0.0.1:\(TestRedis.port)/0")
        defer { client.shutdown() }
        #expect(try await client.send("ACL", "WHOAMI").string == user)
    }

    @Test func wrongPasswordGivesAClearConnectionError() async throws {
        let env = ProcessInfo.processInfo.environment
        let user = try #require(env["REDIS_ACL_USER"])
        let client = try RedisClient(url: "redis://\(user):wrong-password@127.0.0.1:\(TestRedis.port)/0")
        defer { client.shutdown() }
        let error = await expectRedisError { try await client.send("PING") }
        #expect(error?.code == .connectionFailed)
        #expect(error?.message.contains("WRONGPASS") == true)
        #expect(error?.message.contains("wrong-password") == false, "the password must never appear in errors")
    }

    @Test func unixSocketWithDatabaseSelection() async throws {
        let socketURL = try #require(ProcessInfo.processInfo.environment["REDIS_SOCKET_URL"])
        let client = try RedisClient(url: socketURL + "?db=3")
        defer { client.shutdown() }
        let p = TestRedis.prefix()
        try await client.send("SET", p + "db3", "here")
        let tcp = try TestRedis.client()
        defer { tcp.shutdown() }
        #expect(try await tcp.send("GET", p + "db3") == .null, "db 0 must not see db 3's key")
        let info = try await client.send("CLIENT", "INFO").string ?? ""
        #expect(info.contains(" db=3 "))
    }

    @Test func nothingListeningIsAConnectionError() async throws {
        let port = try freeLoopbackPort()
        var configuration = RedisClientConfiguration(endpoint: .tcp(host: "127.0.0.1", port: port), connectionCount: 1)
        configuration.connectTimeout = .seconds(1)
        let client = RedisClient(configuration: configuration)
        defer { client.shutdown() }
        let error = await expectRedisError { try await client.send("PING") }
        #expect(error?.code == .connectionFailed)
        #expect(error?.message.contains("127.0.0.1:\(port)") == true)
    }

    @Test func listenerThatNeverAnswersTimesOutInTime() async throws {
        let listener = try SilentListener()
        let configuration = RedisClientConfiguration(
            endpoint: .tcp(host: "127.0.0.1", port: listener.port),
            connectTimeout: .milliseconds(300), commandTimeout: .milliseconds(300), connectionCount: 1)
        let client = RedisClient(configuration: configuration)
        defer { client.shutdown() }
        let start = ContinuousClock.now
        let error = await expectRedisError { try await client.send("PING") }
        let elapsed = ContinuousClock.now - start
        #expect(error?.code == .timeout)
        #expect(elapsed < .seconds(3), "timed out after \(elapsed), configured 300 ms")
    }

    @Test("an endpoint port outside 1–65535 is a connection error naming it, not a trap", arguments: [70_000, 1 << 40, 0, -1])
    func endpointPortOutOfRangeIsAConnectionError(port: Int) async throws {
        let client = RedisClient(configuration: RedisClientConfiguration(endpoint: .tcp(host: "127.0.0.1", port: port), connectionCount: 1))
        defer { client.shutdown() }
        let error = await expectRedisError { try await client.send("PING") }
        #expect(error?.code == .connectionFailed)
        #expect(error?.message.contains("port \(port) is out of range") == true, "\(String(describing: error))")
    }

    @Test(
        "a zero or negative command timeout still times out (it is 1 ms), instead of waiting forever",
        arguments: [Duration.zero, .milliseconds(-5)])
    func nonPositiveCommandTimeoutStillTimesOut(timeout: Duration) async throws {
        let listener = try SilentListener()
        var configuration = RedisClientConfiguration(endpoint: .tcp(host: "127.0.0.1", port: listener.port), connectionCount: 1)
        configuration.commandTimeout = timeout
        let client = RedisClient(configuration: configuration)
        defer { client.shutdown() }
        let start = ContinuousClock.now
        let error = await expectRedisError { try await client.send("PING") }
        #expect(error?.code == .timeout)
        #expect(ContinuousClock.now - start < .seconds(3))
    }

    @Test("CLUSTER SLOTS with a primary port outside 1–65535 is a protocol error; such a replica is skipped")
    func clusterSlotsPortOutOfRange() throws {
        func node(_ port: Int) -> RedisValue { .array([.bulkString(Array("10.0.0.1".utf8)), .integer(port)]) }
        let badPrimary = RedisValue.array([.array([.integer(0), .integer(16383), node(70_000)])])
        #expect(throws: RedisError.self) { try ClusterTopology(slots: badPrimary, defaultHost: "h") }
        let badReplica = RedisValue.array([.array([.integer(0), .integer(16383), node(7000), node(1 << 33), node(7001)])])
        let topology = try ClusterTopology(slots: badReplica, defaultHost: "h")
        #expect(topology.primaries == [.tcp(host: "10.0.0.1", port: 7000)])
        #expect(topology.replicas == [.tcp(host: "10.0.0.1", port: 7001)])
        #expect(topology.coveredSlots == 16384)
    }

    @Test("a connection count set below 1 after init gives one working connection, not a trap", arguments: [0, -3])
    func connectionCountBelowOneMeansOne(count: Int) async throws {
        let client = try TestRedis.client(connections: count)
        defer { client.shutdown() }
        #expect(client.poolConnectionCount == 1)
        let key = TestRedis.prefix() + "count"
        for _ in 0..<5 { _ = try await client.send("INCR", key) }
        #expect(try await client.send("GET", key).string == "5")
        _ = try await client.send("DEL", key)
    }

    @Test func shutdownClosesEveryConnectionAndRefusesLaterCommands() async throws {
        let observer = try TestRedis.client()
        defer { observer.shutdown() }
        for _ in 0..<10 {
            let client = try TestRedis.client(connections: 3)
            // Three CLIENT IDs, one per connection (round-robin from a task off the event loops).
            var ids: Set<Int> = []
            for _ in 0..<3 { ids.insert(try #require(try await client.send("CLIENT", "ID").int)) }
            #expect(ids.count == 3)
            client.shutdown()
            await client.closed()
            let error = await expectRedisError { try await client.send("PING") }
            #expect(error?.code == .shutdown)
            // The server sees all three go (it notices a close a moment after the client made it).
            let list = ["CLIENT", "LIST", "ID"] + ids.sorted().map(String.init)
            var remaining = "?"
            for _ in 0..<200 {
                remaining = try await observer.send(RedisCommand(arguments: list)).string ?? ""
                if remaining.isEmpty { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(remaining.isEmpty, "this client's 3 connections are closed on the server")
        }
    }

}
