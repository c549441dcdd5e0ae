import Foundation
import RedisClient
import TestProcesses
import Testing

@testable import DeviceAuthorization

/// Whoever can write to Redis, without the node secret, cannot mint a token.
@Suite("Redis is not a token oracle: forged records get invalid_grant")
struct ForgedRecordTests {
    static func recordKey(_ f: StoreFixture, _ issued: IssuedDeviceCode) throws -> String {
        try #require(f.store.recordKey(forDeviceCode: issued.deviceCode))
    }

    @Test func aPendingRecordSetToApprovedWithoutTheSecretGivesNoToken() async throws {
        let f = try StoreFixture()
        defer { f.shutdown() }
        let issued = try await f.store.issue(clientID: "tv", scopes: ["profile"])
        let key = try Self.recordKey(f, issued)
        _ = try await f.client.send("HSET", key, "s", "a", "u", "victim")
        #expect(try await f.store.poll(deviceCode: issued.deviceCode, clientID: "tv") == .invalidGrant(.forged))
        #expect(try await f.store.poll(deviceCode: issued.deviceCode, clientID: "tv") == .invalidGrant(.alreadyRedeemed), "burnt, not armed")
        // With a made-up MAC too.
        let other = try await f.store.issue(clientID: "tv", scopes: ["profile"])
        _ = try await f.client.send("HSET", try Self.recordKey(f, other), "s", "a", "u", "victim", "m", String(repeating: "0", count: 32))
        #expect(try await f.store.poll(deviceCode: other.deviceCode, clientID: "tv") == .invalidGrant(.forged))
    }

    @Test func aMACCopiedFromAnotherApprovedRecordDoesNotFit() async throws {
        let f = try StoreFixture()
        defer { f.shutdown() }
        let approved = try await f.store.issue(clientID: "tv", scopes: ["profile"])
        try await f.store.approve(userCode: approved.userCode, userID: "victim")
        let mac = try #require(try await f.client.send("HGET", try Self.recordKey(f, approved), "m").string)
        #expect(mac.utf8.count == 32, "128 bits, hex")
        let mine = try await f.store.issue(clientID: "tv", scopes: ["profile"])
        _ = try await f.client.send("HSET", try Self.recordKey(f, mine), "s", "a", "u", "victim", "m", mac)
        #expect(try await f.store.poll(deviceCode: mine.deviceCode, clientID: "tv") == .invalidGrant(.forged))
        #expect(
            try await f.store.poll(deviceCode: approved.deviceCode, clientID: "tv") == .authorized(userID: "victim", scopes: ["profile"], grantID: approved.grantID),
            "the genuine approval still works")
    }

    @Test func changedScopesUserOrClientOnAnApprovedRecordGiveNoToken() async throws {
        let f = try StoreFixture()
        defer { f.shutdown() }
        for (field, value, client) in [("sc", "profile admin", "tv"), ("u", "root", "tv"), ("c", "evil-app", "evil-app")] {
            let issued = try await f.store.issue(clientID: "tv", scopes: ["profile"])
            try await f.store.approve(userCode: issued.userCode, userID: "alice")
            _ = try await f.client.send("HSET", try Self.recordKey(f, issued), field, value)
            #expect(try await f.store.poll(deviceCode: issued.deviceCode, clientID: client) == .invalidGrant(.forged), "changed \(field)")
        }
    }

    @Test func theRecordKeyIsNotComputableFromTheDeviceCodeWithoutTheSecret() async throws {
        let f = try StoreFixture()
        defer { f.shutdown() }
        let issued = try await f.store.issue(clientID: "tv", scopes: [])
        let other = DeviceCodeStore(client: f.client, configuration: DeviceCodeStoreConfiguration(keyPrefix: f.prefix, secret: Array("another-secret-of-at-least-32-bytes!".utf8)))
        #expect(other.recordKey(forDeviceCode: issued.deviceCode) != f.store.recordKey(forDeviceCode: issued.deviceCode))
        #expect(try await other.poll(deviceCode: issued.deviceCode, clientID: "tv") == .invalidGrant(.unknown), "a node without the secret does not find the record")
    }

    @Test func theApprovalIsRefusedWhenTheRecordChangesUnderIt() async throws {
        let f = try StoreFixture()
        defer { f.shutdown() }
        let issued = try await f.store.issue(clientID: "tv", scopes: ["profile"])
        let snapshot = try #require(try await f.store.find(deviceCode: issued.deviceCode))
        _ = try await f.client.send("HSET", try Self.recordKey(f, issued), "sc", "profile admin")
        let error = await decisionError { try await f.store.authorize(snapshot, userID: "alice") }
        #expect(error?.code == .grantChanged, "the snapshot's scopes are not the record's any more")
        #expect(try await f.store.poll(deviceCode: issued.deviceCode, clientID: "tv") == .authorizationPending)
    }
}

@Suite("slow_down interval cap")
struct IntervalCapTests {
    @Test func slowDownRaisesTheIntervalByFiveUpToTheCap() async throws {
        let f = try StoreFixture { $0.maxInterval = 20 }
        defer { f.shutdown() }
        let issued = try await f.store.issue(clientID: "tv", scopes: [])
        #expect(try await f.store.poll(deviceCode: issued.deviceCode, clientID: "tv") == .authorizationPending)
        var intervals: [Int] = []
        for _ in 0..<6 {
            if case .slowDown(let interval) = try await f.store.poll(deviceCode: issued.deviceCode, clientID: "tv") { intervals.append(interval) }
        }
        #expect(intervals == [10, 15, 20, 20, 20, 20])
        #expect(try await f.store.find(deviceCode: issued.deviceCode)?.interval == 20)
    }

    @Test func theDefaultCapIsSixtySecondsAndAnIntervalIssuedAboveItIsKept() async throws {
        let f = try StoreFixture()
        defer { f.shutdown() }
        #expect(f.store.configuration.maxInterval == 60)
        let issued = try await f.store.issue(clientID: "tv", scopes: [])
        _ = try await f.store.poll(deviceCode: issued.deviceCode, clientID: "tv")
        var last = 0
        for _ in 0..<30 {
            if case .slowDown(let interval) = try await f.store.poll(deviceCode: issued.deviceCode, clientID: "tv") { last = max(last, interval) }
        }
        #expect(last == 60)
        let slow = try await f.store.issue(clientID: "tv", scopes: [], interval: 90)
        _ = try await f.store.poll(deviceCode: slow.deviceCode, clientID: "tv")
        #expect(try await f.store.poll(deviceCode: slow.deviceCode, clientID: "tv") == .slowDown(newInterval: 90))
        // The reference model's checkRateLimit obeys the cap too.
        let code = try #require(try await f.store.find(deviceCode: issued.deviceCode))
        #expect(try await f.store.checkRateLimit(code, intervalSeconds: 60))
        #expect(try await f.store.find(deviceCode: issued.deviceCode)?.interval == 60)
    }
}

/// Redis's clock jumping backwards. libfaketime (0.9.10) cannot be preloaded into redis-server 7.0
/// (its jemalloc calls `clock_gettime` while libfaketime initializes: "unexpected recursive calls",
/// the server does not start), so these tests create the same situation from the other side: they
/// move the stored times an hour ahead of Redis's clock, which is what every script sees after
/// the clock went back an hour. Deterministic, on the shared server, no waiting.
@Suite("Redis clock behind the stored times")
struct ClockTests {
    static let hour = 3_600_000

    /// Moves hash fields of `key` (stored millisecond times) `by` ms.
    static func shift(_ f: StoreFixture, _ key: String, _ fields: [String], by offset: Int = hour) async throws {
        for field in fields {
            guard let value = try await f.client.send("HGET", key, field).string.flatMap({ Int($0) }) else { continue }
            _ = try await f.client.send("HSET", key, field, String(value + offset))
        }
    }

    @Test func failureWindowsDoNotRestartAndRetryAfterStaysWithinTheWindow() async throws {
        let f = try StoreFixture {
            $0.maxFailuresPerCaller = 3
            $0.callerWindow = .seconds(60)
        }
        defer { f.shutdown() }
        for _ in 0..<3 { #expect(await decisionError { _ = try await f.store.lookup(userCode: "ZZZZ-ZZZZ", caller: "ip") }?.code == .notFound) }
        try await Self.shift(f, f.store.keys.callerFailuresKey("ip"), ["w"])
        let locked = await decisionError { _ = try await f.store.lookup(userCode: "ZZZZ-ZZZZ", caller: "ip") }
        #expect(locked?.code == .tooManyAttempts, "the window did not restart")
        let retry = try #require(locked?.retryAfter)
        #expect(retry <= .seconds(60), "retry-after is at most the window, not the window plus the jump")
    }

    @Test func rateLimiterWindowsDoNotRestart() async throws {
        let f = try StoreFixture()
        defer { f.shutdown() }
        let bucket = RateLimitBucket(name: "pw", subject: "alice", limit: RateLimit(2, per: .seconds(60)))
        let limiter = RequestRateLimiterTests.limiter(f)
        for _ in 0..<2 { #expect(try await limiter.acquire([bucket]) == .allowed) }
        try await Self.shift(f, limiter.key(of: bucket), ["w"])
        // A node that never saw a refusal asks Redis.
        let fresh = RequestRateLimiterTests.limiter(f)
        #expect(try await fresh.acquire([bucket]) != .allowed, "the counter stays in its window when Redis's clock is behind it")
        #expect(try await fresh.record([bucket]).admitted == false)
    }

    @Test func pollsWithTheClockBehindGetBoundedSlowDownsAndTheTokenOnce() async throws {
        let f = try StoreFixture()
        defer { f.shutdown() }
        let issued = try await f.store.issue(clientID: "tv", scopes: [], lifetime: .seconds(7200))
        #expect(try await f.store.poll(deviceCode: issued.deviceCode, clientID: "tv") == .authorizationPending)
        let key = try #require(f.store.recordKey(forDeviceCode: issued.deviceCode))
        try await Self.shift(f, key, ["ca", "l"])
        let snapshot = try #require(try await f.store.find(deviceCode: issued.deviceCode))
        #expect(snapshot.observedAt >= snapshot.createdAt, "a grant never looks issued in the future")
        #expect(snapshot.currentStatus == .pending)
        var intervals: [Int] = []
        for _ in 0..<20 {
            if case .slowDown(let interval) = try await f.store.poll(deviceCode: issued.deviceCode, clientID: "tv") { intervals.append(interval) }
        }
        #expect(intervals.count == 20 && intervals.max() == 60, "slow_down up to the cap, never beyond")
        try await f.store.approve(userCode: issued.userCode, userID: "alice")
        #expect(try await f.store.poll(deviceCode: issued.deviceCode, clientID: "tv") == .authorized(userID: "alice", scopes: [], grantID: issued.grantID))
        let stored = try await f.client.send("HMGET", key, "l", "dt").array?.compactMap { $0.string.flatMap { Int($0) } } ?? []
        let lastPoll = try #require(snapshot.lastPolledAt).timeIntervalSince1970 * 1000
        #expect(stored.count == 2 && stored.allSatisfy { Double($0) >= lastPoll - 1 }, "the last poll and decision times never go back")
    }
}

/// Scripts that create keys are refused at `maxmemory`; the ones that only touch existing records
/// keep working (a private server: `maxmemory` is server-wide).
@Suite("Redis at maxmemory")
struct MaxMemoryTests {
    static func isOOM(_ body: () async throws -> Void) async -> Bool {
        do {
            try await body()
            return false
        } catch let error as RedisError { return error.serverErrorPrefix == "OOM" } catch { return false }
    }

    @Test func keyCreatingScriptsAreRefusedAndPollsAndDecisionsStillWork() async throws {
        let server = try await PrivateRedis(arguments: ["--maxmemory-policy", "noeviction"])
        let f = try StoreFixture(server: server)
        defer { f.shutdown() }
        let issued = try await f.store.issue(clientID: "tv", scopes: [])
        let limiter = RequestRateLimiterTests.limiter(f)
        let bucket = RateLimitBucket(name: "dai", subject: "203.0.113.1", limit: RateLimit(100, per: .seconds(60)))
        // As a node does at start-up: FUNCTION LOAD is itself refused at maxmemory.
        try await ProductScripts.load(on: f.client)
        // Fill past a limit set below what is used.
        _ = try await f.client.send("SET", "\(f.prefix):ballast", String(repeating: "x", count: 4 << 20))
        let used = try #require(StoreFixtureInfo.usedMemory(try await f.client.send("INFO", "memory").string ?? ""))
        _ = try await f.client.send("CONFIG", "SET", "maxmemory", "\(used / 2)")
        let before = try await f.dump().map(\.key)
        #expect(await Self.isOOM { _ = try await f.store.lookup(userCode: "ZZZZ-ZZZZ", caller: "ip") }, "the failure charge is deny-oom")
        #expect(await Self.isOOM { _ = try await limiter.acquire([bucket]) })
        #expect(await Self.isOOM { try await limiter.record([bucket]) })
        #expect(await Self.isOOM { _ = try await f.store.issue(clientID: "tv", scopes: []) })
        #expect(try await f.dump().map(\.key).sorted() == before.sorted(), "nothing was created")
        #expect(try await f.store.poll(deviceCode: issued.deviceCode, clientID: "tv") == .authorizationPending)
        try await f.store.approve(userCode: issued.userCode, userID: "alice")
        #expect(try await f.store.poll(deviceCode: issued.deviceCode, clientID: "tv") == .authorized(userID: "alice", scopes: [], grantID: issued.grantID))
        try await limiter.release([bucket])
    }
}

enum StoreFixtureInfo {
    static func usedMemory(_ info: String) -> Int? { DeviceCodeStore.infoField("used_memory", in: info).flatMap { Int($0) } }
}

@Suite("Redis configuration check without CONFIG GET")
struct ConfigurationCheckWithoutConfigTests {
    @Test func theEvictionPolicyIsReadFromINFOByAUserWithoutConfig() async throws {
        for (policy, warned) in [("allkeys-lru", true), ("noeviction", false)] {
            let server = try await PrivateRedis(arguments: ["--maxmemory-policy", policy])
            let admin = try RedisClient(url: server.url)
            defer { admin.shutdown() }
            _ = try await admin.send("ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", "-config")
            let f = try StoreFixture(url: "redis://app:pw@127.0.0.1:\(server.port)/0")
            defer { f.shutdown() }
            await #expect(throws: RedisError.self) { _ = try await f.client.send("CONFIG", "GET", "maxmemory-policy") }
            let warnings = await f.store.checkRedisConfiguration()
            #expect(warnings.count == (warned ? 1 : 0), "\(policy): \(warnings)")
            #expect(warnings.allSatisfy { $0.contains(policy) && !$0.contains("Could not read") })
        }
    }
}
