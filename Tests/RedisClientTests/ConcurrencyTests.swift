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
        let client = try TestRedis.client(connections: 1, commandTimeout: Self.blockingTimeout)
        let observer = try TestRedis.client(connections: 1)
        defer {
            client.shutdown()
            observer.shutdown()
        }
        let name = try await Self.name(client)
        for round in 0..<5 {
            let key = TestRedis.prefix() + "list\(round)"
            let waiting = Task { try await client.send("BLPOP", key, 90) }
            try await Self.waitUntilBlocked(name, observer: observer)
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

    /// Commands handed over while the connection has replies to come wait for the loop's next
    /// read (no wake-up each). A caller cancelled while its command waits there behind a
    /// blocking `BLPOP` still leaves at once, the commands behind it are answered once the
    /// `BLPOP` is, each with its own reply, and the connection stays in step.
    @Test func commandsQueuedBehindABlockedConnectionLeaveWhenCancelledAndAreAnsweredInOrder() async throws {
        let client = try TestRedis.client(connections: 1, commandTimeout: Self.blockingTimeout)
        let observer = try TestRedis.client(connections: 1)
        defer {
            client.shutdown()
            observer.shutdown()
        }
        let key = TestRedis.prefix() + "queued"
        // Connected first (by naming it), so the BLPOP goes out from the hand-over and the loop
        // then knows it has a reply to come (before a connect, commands are queued for it instead).
        let name = try await Self.name(client)
        let blocking = Task { try await client.send("BLPOP", key, 90) }
        try await Self.waitUntilBlocked(name, observer: observer)
        // 20 callers on Swift's pool behind the BLPOP; every other one is cancelled.
        let started = SharedCounter()
        let queued = (0..<20).map { index in
            Task {
                started.add()
                return try await client.send("ECHO", "queued-\(index)")
            }
        }
        // Cancelled once they are waiting in the queue (not before they start: that is the
        // test above); the pause only makes that likely, the outcome is checked either way.
        while started.value < 20 { await Task.yield() }
        try await Task.sleep(for: .milliseconds(200))
        for index in stride(from: 1, to: 20, by: 2) { queued[index].cancel() }
        for index in stride(from: 1, to: 20, by: 2) {
            let outcome = await queued[index].result
            #expect(throws: CancellationError.self) { try outcome.get() }
        }
        // The BLPOP is still blocked: the cancelled callers did not wait for it.
        #expect(try await Self.isBlocked(name, observer: observer))
        try await observer.send("RPUSH", key, "released")
        #expect(try await blocking.value.array?.last?.string == "released")
        for index in stride(from: 0, to: 20, by: 2) {
            #expect(try await queued[index].value.string == "queued-\(index)")
        }
        #expect(try await client.send("ECHO", "after").string == "after")
    }

    /// The command timeout of the clients whose connection a `BLPOP` (90 s, a hang guard) blocks:
    /// with the default 5 s a loaded machine could take longer than that between sending the
    /// `BLPOP` and releasing it, and the timeout would close the connection under the test.
    static let blockingTimeout: Duration = .seconds(120)

    /// Gives `client`'s (only) connection a unique name, so another test's blocked client on the
    /// same Redis (suites run in parallel) is never taken for this one.
    private static func name(_ client: RedisClient) async throws -> String {
        let name = "blpop-\(UUID().uuidString.prefix(8))"
        try await client.send("CLIENT", "SETNAME", name)
        return name
    }

    /// Whether the connection named `name` is blocked in a `BLPOP` (`CLIENT LIST`: flags b).
    private static func isBlocked(_ name: String, observer: RedisClient) async throws -> Bool {
        let list = try await observer.send("CLIENT", "LIST").string ?? ""
        return list.split(separator: "\n").contains { line in
            let fields = line.split(separator: " ")
            return fields.contains("name=\(name)") && fields.contains("cmd=blpop") && fields.contains { $0.hasPrefix("flags=") && $0.contains("b") }
        }
    }

    /// Waits until Redis is blocked in the named connection's BLPOP (hang guard 60 s of clock time).
    private static func waitUntilBlocked(_ name: String, observer: RedisClient) async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if try await isBlocked(name, observer: observer) { return }
            try await Task.sleep(for: .milliseconds(25))
        }
        Issue.record("\(name) never blocked in BLPOP")
    }
}
