import Foundation
import RedisClient
import Testing

/// The client in cluster mode against a real 3-primary Redis Cluster.
@Suite("Redis Cluster: routing, redirects, scripts", TestCluster.enabled, .serialized)
struct ClusterRoutingTests {
    @Test func hashSlotsMatchTheServerIncludingHashTags() async throws {
        let admin = ClusterAdmin()
        defer { admin.shutdown() }
        let port = try #require(TestCluster.ports.first)
        let keys =
            [
                "foo", "bar", "{user1000}.following", "{user1000}.followers", "a{b}c", "{}x", "x{}{y}",
                "{{a}}", "}{a}", "{a", "a}", "da:{3f2a}:d:0123456789abcdef01234567", "da:{3f2a}:u:89ab", "", "é{ü}",
            ]
            + (0..<200).map { "random-\($0)-\(UUID().uuidString)" }
        for key in keys {
            #expect(RedisHashSlot.slot(of: key) == (try await admin.keySlot(key, port: port)), "slot of \(key)")
        }
        #expect(RedisHashSlot.slot(of: "{user1000}.following") == RedisHashSlot.slot(of: "{user1000}.followers"))
        #expect(RedisHashSlot.slot(of: "da:{3f2a}:d:x") == RedisHashSlot.slot(of: "3f2a"))
    }

    @Test func keysSpreadOverAllThreePrimariesAndEachLivesOnItsSlotsOwner() async throws {
        let client = try TestCluster.client()
        let admin = ClusterAdmin()
        defer {
            client.shutdown()
            admin.shutdown()
        }
        let prefix = "route:\(UUID().uuidString.prefix(8)):"
        let keys = (0..<60).map { "\(prefix)\($0)" }
        for (index, key) in keys.enumerated() { try await client.send("SET", key, index) }
        for (index, key) in keys.enumerated() { #expect(try await client.send("GET", key).int == index) }
        let primaries = try await client.primaries()
        #expect(primaries.count == 3)
        var perNode: [Int: Int] = [:]
        for key in keys {
            let owner = try #require(client.node(servingSlot: RedisHashSlot.slot(of: key)).flatMap(TestCluster.port(of:)))
            // Asked directly, without the cluster client: the owner has the key (no MOVED).
            #expect(try await admin.node(owner).send("EXISTS", key).int == 1)
            perNode[owner, default: 0] += 1
        }
        #expect(perNode.count == 3, "keys on all three primaries: \(perNode)")
        // Multi-key commands with one hash tag, keyless commands, TTL and MEMORY USAGE.
        let tagged = ["{\(prefix)}a", "{\(prefix)}b"]
        try await client.send("MSET", tagged[0], "1", tagged[1], "2")
        #expect(try await client.send("MGET", tagged[0], tagged[1]).array?.compactMap(\.int) == [1, 2])
        #expect(try await client.send("EXISTS", tagged[0], tagged[1]).int == 2)
        try await client.send("EXPIRE", tagged[0], 100)
        #expect((try await client.send("TTL", tagged[0]).int ?? 0) > 90)
        #expect((try await client.send("MEMORY", "USAGE", tagged[0]).int ?? 0) > 0)
        #expect(try await client.send("DEL", tagged[0], tagged[1]).int == 2)
        for _ in 0..<6 { #expect(try await client.send("PING").string == "PONG") }
        #expect(try await client.send("TIME").array?.count == 2)
        // pipeline(): grouped by node, answered in the order given.
        let results = await client.pipeline(keys.map { RedisCommand("GET", $0) })
        #expect(results.map { try? $0.get().int } == keys.indices.map { Optional($0) })
    }

    @Test func commandsWhoseKeysSpanSlotsAreRefusedBeforeTheyAreSent() async throws {
        let client = try TestCluster.client()
        defer { client.shutdown() }
        let (a, b) = ("cross:a", "cross:b")
        #expect(RedisHashSlot.slot(of: a) != RedisHashSlot.slot(of: b))
        for command in [
            RedisCommand("MGET", a, b), RedisCommand("DEL", a, b), RedisCommand("MSET", a, "1", b, "2"),
            .evalSHA(RedisScript("return 1"), keys: [a, b], arguments: []),
        ] {
            let error = await #expect(throws: RedisError.self) { try await client.send(command) }
            #expect(error?.code == .crossSlot, "refused in Swift, not answered CROSSSLOT by Redis: \(String(describing: error))")
        }
        let results = await client.pipeline([RedisCommand("MGET", a, b), RedisCommand("PING")])
        #expect(results.count == 2)
        if case .failure(let error) = results[0] { #expect(error.code == .crossSlot) } else { Issue.record("cross-slot command succeeded") }
        #expect((try? results[1].get().string) == "PONG")
    }

    @Test func noscriptIsHandledPerNodeAfterScriptFlushOnOne() async throws {
        let client = try TestCluster.client { $0.scriptCalls = .eval }
        let admin = ClusterAdmin()
        defer {
            client.shutdown()
            admin.shutdown()
        }
        let script = RedisScript("return redis.call('INCR', KEYS[1]) -- noscript test \(UUID().uuidString)")
        // One key per primary.
        var keyOf: [Int: String] = [:]
        _ = try await client.primaries()
        for index in 0..<1000 where keyOf.count < 3 {
            let key = "noscript:\(index)"
            let port = try #require(client.node(servingSlot: RedisHashSlot.slot(of: key)).flatMap(TestCluster.port(of:)))
            keyOf[port] = keyOf[port] ?? key
        }
        for key in keyOf.values { #expect(try await client.eval(script, keys: [key]).int == 1) }
        for port in keyOf.keys {
            #expect(try await admin.node(port).send("SCRIPT", "EXISTS", script.sha1).array?.first?.int == 1)
        }
        let flushed = try #require(keyOf.keys.sorted().first)
        try await admin.node(flushed).send("SCRIPT", "FLUSH")
        #expect(try await admin.node(flushed).send("SCRIPT", "EXISTS", script.sha1).array?.first?.int == 0)
        for (_, key) in keyOf.sorted(by: { $0.key < $1.key }) {
            #expect(try await client.eval(script, keys: [key]).int == 2, "EVALSHA → NOSCRIPT → EVAL on that node only")
        }
        #expect(try await admin.node(flushed).send("SCRIPT", "EXISTS", script.sha1).array?.first?.int == 1, "EVAL loaded it again")
    }

    @Test func missingFunctionIsLoadedPerNodeAfterFunctionFlushOnOne() async throws {
        let client = try TestCluster.client()
        let admin = ClusterAdmin()
        defer {
            client.shutdown()
            admin.shutdown()
        }
        #expect(client.configuration.scriptCalls == .functions, "functions are the default")
        let script = RedisScript("#!lua\nreturn redis.call('INCR', KEYS[1]) -- function test \(UUID().uuidString)")
        var keyOf: [Int: String] = [:]
        _ = try await client.primaries()
        for index in 0..<1000 where keyOf.count < 3 {
            let key = "fn:\(UUID().uuidString.prefix(6)):\(index)"
            let port = try #require(client.node(servingSlot: RedisHashSlot.slot(of: key)).flatMap(TestCluster.port(of:)))
            keyOf[port] = keyOf[port] ?? key
        }
        func loaded(_ port: Int) async throws -> Bool {
            let libraries = try await admin.node(port).send("FUNCTION", "LIST", "LIBRARYNAME", "l" + script.sha1).array ?? []
            return !libraries.isEmpty
        }
        for port in keyOf.keys { #expect(try await loaded(port) == false) }
        for key in keyOf.values { #expect(try await client.eval(script, keys: [key]).int == 1) }
        for port in keyOf.keys {
            #expect(try await loaded(port), "FCALL → Function not found → FUNCTION LOAD on \(port)")
            #expect(try await admin.node(port).send("SCRIPT", "EXISTS", script.sha1).array?.first?.int == 0, "never sent as EVAL")
        }
        let flushed = try #require(keyOf.keys.sorted().first)
        try await admin.node(flushed).send("FUNCTION", "FLUSH")
        #expect(try await loaded(flushed) == false)
        for (_, key) in keyOf.sorted(by: { $0.key < $1.key }) {
            #expect(try await client.eval(script, keys: [key]).int == 2, "the function ran exactly once on every node")
        }
        #expect(try await loaded(flushed), "loaded again on the flushed node")
        for port in keyOf.keys { try await admin.node(port).send("FUNCTION", "DELETE", "l" + script.sha1) }
    }

    @Test func movedAfterASlotMoveAndAskDuringItAreFollowed() async throws {
        let client = try TestCluster.client()
        let admin = ClusterAdmin()
        defer {
            client.shutdown()
            admin.shutdown()
        }
        let tag = "move-\(UUID().uuidString.prefix(8))"
        let old = "{\(tag)}:old"
        try await client.send("SET", old, "before")
        let slot = RedisHashSlot.slot(of: old)
        let source = try #require(client.node(servingSlot: slot).flatMap(TestCluster.port(of:)))
        let primaries = try await admin.primaryPorts()
        let target = try #require(primaries.first { $0 != source })
        try await admin.moveSlot(slot, from: source, to: target) {
            // Migrating: the source has `old` and answers it; a new key is not on the source,
            // so it answers ASK, and the client sends ASKING + SET to the target.
            #expect(try await client.send("GET", old).string == "before")
            try await client.send("SET", "{\(tag)}:new", "during")
            let onTarget = try await admin.node(target).pipeline([RedisCommand("ASKING"), RedisCommand("GET", "{\(tag)}:new")])
            #expect((try? onTarget[1].get().string) == "during", "the ASK target holds the new key")
            #expect(client.node(servingSlot: slot).flatMap(TestCluster.port(of:)) == source, "ASK does not change the slot map")
        }
        // The client still maps the slot to the source: the next command gets MOVED, follows it
        // and updates the map, without a restart.
        #expect(try await client.send("GET", old).string == "before")
        #expect(try await client.send("GET", "{\(tag)}:new").string == "during")
        #expect(client.node(servingSlot: slot).flatMap(TestCluster.port(of:)) == target)
        #expect(try await admin.node(target).send("EXISTS", old, "{\(tag)}:new").int == 2)
        // Put the slot back, so other suites see the usual layout.
        try await admin.moveSlot(slot, from: target, to: source, keyByKey: false)
        #expect(try await client.send("GET", old).string == "before")
    }
}
