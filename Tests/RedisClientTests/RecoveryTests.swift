import Foundation
import RedisClient
import Synchronization
import TestProcesses
import Testing

@Suite("Recovery: timeouts, killed connections, restarts, flushed scripts")
struct RecoveryTests {
    @Test func commandTimeoutFailsTheCommandOnceAndTheClientRecovers() async throws {
        let server = try await PrivateRedisServer()
        var configuration = try RedisClientConfiguration(url: server.url)
        configuration.connectionCount = 1
        configuration.commandTimeout = .milliseconds(300)
        let client = RedisClient(configuration: configuration)
        defer { client.shutdown() }
        let blocker = try RedisClient(url: server.url)
        defer { blocker.shutdown() }

        try await client.send("SET", "counter", 0)
        // Writes of every client are held for 3 s (`CLIENT PAUSE … WRITE`, in effect once it
        // answered; reads still answer), so the INCR below cannot be answered before its 300 ms
        // timeout however loaded the machine is. (A `DEBUG SLEEP` sent from another connection
        // 100 ms earlier could reach Redis after the INCR under load: this test failed so once.)
        try await blocker.send("CLIENT", "PAUSE", "3000", "WRITE")
        let error = await expectRedisError { try await client.send("INCR", "counter") }
        #expect(error?.code == .timeout)
        #expect(try await blocker.send("GET", "counter").int == 0, "the timeout ended the command while writes were still held")
        try await blocker.send("CLIENT", "UNPAUSE")
        // The connection recovers, and the timed-out INCR was never re-sent: it ran at most once
        // (Redis drops a held command whose client has gone).
        #expect(try await client.send("PING") == .simpleString("PONG"))
        for _ in 0..<5 { _ = try await client.send("PING") }
        #expect([0, 1].contains(try await client.send("GET", "counter").int ?? -1))
    }

    // Both CLIENT KILL tests use a private server: killing connections on the shared one would
    // break the tests running in parallel.
    @Test func clientKillThenLaterCommandsSucceed() async throws {
        let server = try await PrivateRedisServer()
        let client = try RedisClient(url: server.url)
        defer { client.shutdown() }
        let admin = try RedisClient(url: server.url)
        defer { admin.shutdown() }
        let p = TestRedis.prefix()
        // Learn the victim connections' ids through the connections themselves.
        var ids = Set<Int>()
        for _ in 0..<4 { ids.insert(try await client.send("CLIENT", "ID").int ?? -1) }
        #expect(ids.count == 2)
        for id in ids { #expect(try await admin.send("CLIENT", "KILL", "ID", id) == .integer(1)) }
        // Killed while idle: the client notices before writing, so nothing is lost.
        for index in 0..<10 {
            #expect(try await client.send("SET", p + "\(index)", index) == .simpleString("OK"))
        }
        let newIDs = Set(try await [client.send("CLIENT", "ID").int ?? -1, client.send("CLIENT", "ID").int ?? -1])
        #expect(newIDs.isDisjoint(with: ids))
    }

    @Test func clientKillUnderLoadFailsOnlyInFlightCommandsWithAClearError() async throws {
        let server = try await PrivateRedisServer()
        let client = try RedisClient(url: server.url)
        defer { client.shutdown() }
        let admin = try RedisClient(url: server.url)
        defer { admin.shutdown() }
        let p = TestRedis.prefix()
        let outcomes = try await withThrowingTaskGroup(of: (ok: Int, closed: Int, other: Int).self) { group in
            for worker in 0..<20 {
                group.addTask {
                    var ok = 0
                    var closed = 0
                    var other = 0
                    for index in 0..<300 {
                        do {
                            let value = try await client.send("INCR", p + "w\(worker)")
                            if value.int != nil { ok += 1 }
                            _ = index
                        } catch let error as RedisError where error.code == .connectionClosed {
                            closed += 1
                        } catch {
                            other += 1
                        }
                    }
                    return (ok, closed, other)
                }
            }
            group.addTask {
                for _ in 0..<3 {
                    try await Task.sleep(for: .milliseconds(20))
                    _ = try await admin.send("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
                }
                return (0, 0, 0)
            }
            var total = (ok: 0, closed: 0, other: 0)
            for try await result in group { total = (total.ok + result.ok, total.closed + result.closed, total.other + result.other) }
            return total
        }
        #expect(outcomes.other == 0, "in-flight commands fail as connectionClosed, nothing else")
        #expect(outcomes.ok + outcomes.closed == 6000)
        // Never re-sent: each counter is at most the number of calls, at least the successes.
        var sum = 0
        for worker in 0..<20 { sum += try await client.send("GET", p + "w\(worker)").int ?? 0 }
        #expect(sum >= outcomes.ok && sum <= 6000)
        #expect(try await client.send("PING") == .simpleString("PONG"))
    }

    @Test func serverRestartThenLaterCommandsSucceed() async throws {
        let server = try await PrivateRedisServer()
        var configuration = try RedisClientConfiguration(url: server.url)
        configuration.connectionCount = 2
        configuration.connectTimeout = .milliseconds(500)
        let client = RedisClient(configuration: configuration)
        defer { client.shutdown() }
        try await client.send("SET", "before", "1")
        server.stop()
        let down = await expectRedisError { try await client.send("PING") }
        #expect(down?.code == .connectionFailed || down?.code == .connectionClosed)
        try await server.start()
        var recovered = false
        let deadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < deadline {
            if (try? await client.send("PING")) == .simpleString("PONG") {
                recovered = true
                break
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(recovered, "the client reconnects by itself after a restart")
        #expect(try await client.send("SET", "after", "2") == .simpleString("OK"))
        #expect(try await client.send("GET", "before") == .null, "no persistence: the restarted server is empty")
    }

    @Test func scriptFlushIsRecoveredTransparentlyAlsoInPipelines() async throws {
        let server = try await PrivateRedisServer()
        var configuration = try RedisClientConfiguration(url: server.url)
        configuration.scriptCalls = .eval
        let client = RedisClient(configuration: configuration)
        defer { client.shutdown() }
        let script = RedisScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        #expect(try await client.eval(script, keys: ["n"], arguments: [2]) == .integer(2))
        try await client.send("SCRIPT", "FLUSH")
        #expect(try await client.send("SCRIPT", "EXISTS", script.sha1) == .array([.integer(0)]))
        #expect(try await client.eval(script, keys: ["n"], arguments: [3]) == .integer(5))
        try await client.send("SCRIPT", "FLUSH")
        let results = await client.pipeline([
            .evalSHA(script, keys: ["n"], arguments: [10]),
            RedisCommand("GET", "n"),
        ])
        #expect(try results[0].get() == .integer(15))
        #expect(try await client.send("GET", "n").int == 15, "the script ran exactly once after NOSCRIPT")
    }
}
