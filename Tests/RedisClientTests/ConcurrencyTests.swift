import Foundation
import RedisClient
import Testing

@Suite("Concurrency: auto-pipelining never mixes up replies")
struct ConcurrencyTests {
    @Test func tenThousandCommandsFromTwoHundredTasksEachGetTheirOwnReply() async throws {
        let client = try TestRedis.client(connections: 3)
        defer { client.shutdown() }
        let p = TestRedis.prefix()
        let mismatches = try await withThrowingTaskGroup(of: Int.self) { group in
            for task in 0..<200 {
                group.addTask {
                    var wrong = 0
                    for index in 0..<50 {
                        let payload = "\(p)\(task)-\(index)-" + String(repeating: "x", count: (task * 7 + index) % 300)
                        if index % 10 == 9 {
                            let results = await client.pipeline([RedisCommand("ECHO", payload), RedisCommand("ECHO", payload + "!")])
                            if (try? results[0].get().string) != payload || (try? results[1].get().string) != payload + "!" { wrong += 1 }
                        } else if try await client.send("ECHO", payload).string != payload {
                            wrong += 1
                        }
                    }
                    return wrong
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(mismatches == 0)
    }

    @Test func concurrentIncrementsAreAllAppliedExactlyOnce() async throws {
        let client = try TestRedis.client(connections: 2)
        defer { client.shutdown() }
        let p = TestRedis.prefix()
        let script = RedisScript("return redis.call('INCR', KEYS[1])")
        let replies = try await withThrowingTaskGroup(of: [Int].self) { group in
            for _ in 0..<64 {
                group.addTask {
                    var seen: [Int] = []
                    for _ in 0..<100 { seen.append(try await client.eval(script, keys: [p + "n"]).int ?? -1) }
                    return seen
                }
            }
            return try await group.reduce(into: [Int]()) { $0 += $1 }
        }
        #expect(Set(replies) == Set(1...6400), "every INCR result appears exactly once")
        #expect(try await client.send("GET", p + "n").int == 6400)
    }

    /// A caller cancelled while its command is in flight (a `BLPOP` that blocks its connection)
    /// gets `CancellationError` before the command is answered; the reply that comes later is read
    /// and dropped, so the next command on the same (only) connection gets its own reply.
    @Test func aCancelledCallerReturnsAtOnceAndTheConnectionStaysInStep() async throws {
        let client = try TestRedis.client(connections: 1)
        let observer = try TestRedis.client(connections: 1)
        defer { client.shutdown(); observer.shutdown() }
        for round in 0..<5 {
            let key = TestRedis.prefix() + "list\(round)"
            let waiting = Task { try await client.send("BLPOP", key, 30) }
            // Wait until Redis is blocked in this BLPOP (hang guard 10 s).
            for _ in 0..<400 {
                let clients = try await observer.send("CLIENT", "LIST").string ?? ""
                if clients.contains("cmd=blpop") { break }
                try await Task.sleep(for: .milliseconds(25))
            }
            waiting.cancel()
            let outcome = await waiting.result
            #expect(throws: CancellationError.self) { try outcome.get() }
            // Only now is the BLPOP answered: its reply arrives after the caller left.
            try await observer.send("RPUSH", key, "taken-by-the-cancelled-BLPOP")
            #expect(try await client.send("ECHO", "mine-\(round)").string == "mine-\(round)")
            #expect(try await observer.send("LLEN", key).int == 0, "the cancelled BLPOP did run and took the element")
        }
        // Cancelled before it started: never sent.
        let early = Task { try await client.send("INCR", TestRedis.prefix() + "never") }
        early.cancel()
        _ = await early.result
        #expect(try await client.send("PING") == .simpleString("PONG"))
    }
}
