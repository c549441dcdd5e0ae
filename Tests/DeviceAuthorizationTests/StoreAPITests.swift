import Foundation
import RedisClient
import Testing

@testable import DeviceAuthorization

@Suite("Lookup attempts, request origin, decisions bound to the grant shown, limiter refunds")
struct StoreAPITests {
    @Test func everyCallerBucketOfAnAttemptIsLimitedOnItsOwn() async throws {
        let f = try StoreFixture { $0.maxFailuresPerCaller = 3 }
        defer { f.shutdown() }
        // One /48 with two /64s: the /64s share the /48's budget.
        for index in 0..<3 {
            let error = await decisionError {
                _ = try await f.store.lookup(userCode: "ZZZZ-ZZZZ", attempt: LookupAttempt(callers: ["2001:db8:1:\(index % 2)::/64", "2001:db8:1::/48"]))
            }
            #expect(error?.code == .notFound)
        }
        let locked = await decisionError {
            _ = try await f.store.lookup(userCode: "ZZZZ-ZZZZ", attempt: LookupAttempt(callers: ["2001:db8:1:7::/64", "2001:db8:1::/48"]))
        }
        #expect(locked?.code == .tooManyAttempts, "a fresh /64 in an exhausted /48 is refused")
        #expect(locked?.message.contains("caller") == true)
        let other = await decisionError {
            _ = try await f.store.lookup(userCode: "ZZZZ-ZZZZ", attempt: LookupAttempt(callers: ["2001:db8:2:1::/64", "2001:db8:2::/48"]))
        }
        #expect(other?.code == .notFound, "another /48 is unaffected")
        // The convenience form charges exactly one bucket.
        let single = await decisionError { _ = try await f.store.lookup(userCode: "ZZZZ-ZZZZ", caller: "2001:db8:1::/48") }
        #expect(single?.code == .tooManyAttempts)
    }

    @Test func thePersonIsLimitedAcrossAddresses() async throws {
        let f = try StoreFixture { $0.maxFailuresPerUser = 4 }
        defer { f.shutdown() }
        let issued = try await f.store.issue(clientID: "tv", scopes: [])
        for index in 0..<4 {
            let error = await decisionError { _ = try await f.store.lookup(userCode: "ZZZZ-ZZZZ", attempt: LookupAttempt(callers: ["ip-\(index)"], userID: "mallory")) }
            #expect(error?.code == .notFound)
        }
        let locked = await decisionError { _ = try await f.store.lookup(userCode: issued.userCode, attempt: LookupAttempt(callers: ["ip-new"], userID: "mallory")) }
        #expect(locked?.code == .tooManyAttempts, "even the right code, from a fresh address")
        #expect(locked?.message.contains("account") == true)
        let retry = try #require(locked?.retryAfter)
        #expect(retry > .seconds(800) && retry <= .seconds(900), "the default per-person window is 15 minutes")
        #expect(try await f.store.lookup(userCode: issued.userCode, attempt: LookupAttempt(callers: ["ip-new"], userID: "alice")).grantID == issued.grantID)
        #expect(
            try await f.store.lookup(userCode: issued.userCode, attempt: LookupAttempt(callers: ["ip-new"])).grantID == issued.grantID,
            "before sign-in only the address counts")
    }

    @Test func aFoundCodeGivesItsChargeBackAndNothingMore() async throws {
        let f = try StoreFixture { $0.maxFailuresPerCaller = 2 }
        defer { f.shutdown() }
        let issued = try await f.store.issue(clientID: "tv", scopes: [])
        for _ in 0..<20 { _ = try await f.store.lookup(userCode: issued.userCode, caller: "ip-a") }
        #expect(try await f.dump().filter { $0.key.contains("{bf}") }.isEmpty, "20 successes leave no counter behind")
        for _ in 0..<2 { #expect(await decisionError { _ = try await f.store.lookup(userCode: "ZZZZ-ZZZZ", caller: "ip-a") }?.code == .notFound) }
        #expect(await decisionError { _ = try await f.store.lookup(userCode: issued.userCode, caller: "ip-a") }?.code == .tooManyAttempts)
    }

    @Test func theOriginIsStoredCutTo64BytesAndReadBack() async throws {
        let f = try StoreFixture()
        defer { f.shutdown() }
        let plain = try await f.store.issue(clientID: "tv", scopes: [], origin: "2001:db8::7")
        #expect(try await f.store.lookup(userCode: plain.userCode, caller: "x").requestOrigin == "2001:db8::7")
        let none = try await f.store.issue(clientID: "tv", scopes: [])
        #expect(try await f.store.lookup(userCode: none.userCode, caller: "x").requestOrigin == nil)
        #expect(try await f.store.find(deviceCode: none.deviceCode)?.requestOrigin == nil)
        // 63 ASCII bytes and a 2-byte character: the character does not fit and is not cut in half.
        let long = String(repeating: "a", count: 63) + "é" + String(repeating: "b", count: 100)
        let cut = try await f.store.issue(clientID: "tv", scopes: [], origin: long)
        #expect(try await f.store.find(deviceCode: cut.deviceCode)?.requestOrigin == String(repeating: "a", count: 63))
        let exact = try await f.store.issue(clientID: "tv", scopes: [], origin: String(repeating: "é", count: 40))
        #expect(try await f.store.find(deviceCode: exact.deviceCode)?.requestOrigin == String(repeating: "é", count: 32))
        for address in ["203.0.113.254", "2001:db8::7"] {
            let issued = try await f.store.issue(clientID: "tv", scopes: [], origin: address)
            #expect(try await f.store.find(deviceCode: issued.deviceCode)?.requestOrigin == address)
            #expect(try await f.store.lookup(userCode: issued.userCode, caller: "x").requestOrigin == address)
            let stored = try await f.client.send("HMGET", try #require(f.store.recordKey(forDeviceCode: issued.deviceCode)), "o").array?.first?.bytes
            #expect(stored?.count == (address.contains(":") ? 17 : 5), "kept as the address's bytes")
        }
        let key = f.store.recordKey(forDeviceCode: exact.deviceCode)
        let record = try #require(try await f.dump().first { $0.key == key })
        #expect(record.content.firstIndex(of: "o").map { record.content[$0 + 1].utf8.count } == 64)
    }

    @Test func aDecisionWithAGrantIDIsRefusedWhenTheCodeLeadsElsewhere() async throws {
        let f = try StoreFixture()
        defer { f.shutdown() }
        let shown = try await f.store.issue(clientID: "tv", scopes: [])
        let other = try await f.store.issue(clientID: "tv", scopes: [])
        // Another grant's id (another tag), or one that is not a grant id at all.
        for wrong in [other.grantID, "nonsense", String(shown.grantID.prefix(4)) + String(other.grantID.dropFirst(4))] {
            #expect(await decisionError { try await f.store.approve(userCode: shown.userCode, userID: "alice", grantID: wrong) }?.code == .grantChanged)
            #expect(await decisionError { try await f.store.deny(userCode: shown.userCode, grantID: wrong) }?.code == .grantChanged)
        }
        #expect(try await f.store.poll(deviceCode: shown.deviceCode, clientID: "tv") == .authorizationPending, "nothing was decided")
        // The user code's record replaced by a later grant (as when a code is issued again after expiry):
        // another device-code digest.
        let key = try #require(f.store.recordKey(forDeviceCode: shown.deviceCode))
        let digest = try #require(try await f.client.send("HMGET", key, "h").array?.first?.string)
        _ = try await f.client.send("HSET", key, "h", "AAAAAAAAAAA")
        #expect(await decisionError { try await f.store.approve(userCode: shown.userCode, userID: "alice", grantID: shown.grantID) }?.code == .grantChanged)
        #expect(await decisionError { try await f.store.deny(userCode: shown.userCode, grantID: shown.grantID) }?.code == .grantChanged)
        _ = try await f.client.send("HSET", key, "h", digest)
        try await f.store.approve(userCode: shown.userCode, userID: "alice", grantID: shown.grantID)
        guard case .authorized(let user, _, _) = try await f.store.poll(deviceCode: shown.deviceCode, clientID: "tv") else {
            Issue.record("the approval with the right grant id did not authorize")
            return
        }
        #expect(user == "alice")
    }

    @Test func releaseGivesBackOneEventAndNeverGoesBelowZero() async throws {
        let f = try StoreFixture()
        defer { f.shutdown() }
        let bucket = RateLimitBucket(name: "pw", subject: "alice", limit: RateLimit(3, per: .seconds(3600)))
        let limiter = RequestRateLimiterTests.limiter(f)
        for _ in 0..<5 { try await limiter.release([bucket]) }
        #expect(try await f.dump().isEmpty, "a release without a counter writes nothing")
        for _ in 0..<3 { #expect(try await limiter.acquire([bucket]) == .allowed) }
        try await limiter.release([bucket])
        #expect(try await limiter.acquire([bucket]) == .allowed, "the refund made room for one")
        for _ in 0..<10 { try await limiter.release([bucket]) }
        let counter = try #require(try await f.dump().first)
        #expect(counter.content.firstIndex(of: "c").map { counter.content[$0 + 1] } == "0", "never below zero")
        for _ in 0..<3 { #expect(try await limiter.acquire([bucket]) == .allowed) }
        #expect(try await limiter.acquire([bucket]) != .allowed, "ten refunds of nothing did not make room")
    }

    @Test func releaseAfterTheWindowMovedOnTakesTheEventFromThePreviousWindow() async throws {
        let f = try StoreFixture()
        defer { f.shutdown() }
        let window = Duration.seconds(3600)
        let bucket = RateLimitBucket(name: "pw", subject: "bob", limit: RateLimit(2, per: window))
        let limiter = RequestRateLimiterTests.limiter(f)
        let key = limiter.key(of: bucket)
        // Two events in a window, the counter's window then set one window back (as if time moved on).
        for _ in 0..<2 { #expect(try await limiter.acquire([bucket]) == .allowed) }
        let start = Int(try #require(try await f.client.send("HGET", key, "w").string))!
        _ = try await f.client.send("HSET", key, "w", String(start - 3_600_000))
        try await limiter.release([bucket])
        #expect(try await f.client.send("HGET", key, "c").string == "1", "taken from the previous window's count")
        // Two windows back: nothing left to give back.
        _ = try await f.client.send("HSET", key, "w", String(start - 7_200_000))
        try await limiter.release([bucket])
        #expect(try await f.client.send("HGET", key, "c").string == "1")
    }
}
