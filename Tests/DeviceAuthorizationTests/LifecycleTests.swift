import Foundation
import RedisClient
import Testing

@testable import DeviceAuthorization

@Suite("Lifecycle: every transition and every forbidden one")
struct LifecycleTests {
    @Test func issueStoresAHashedGrantWithANativeTTL() async throws {
        let f = try StoreFixture()
        defer { f.shutdown() }
        let issued = try await f.store.issue(clientID: "tv", scopes: ["profile", "email"])
        #expect(issued.userCode.count == 9 && issued.userCode.dropFirst(4).first == "-")
        #expect(issued.expiresIn == 600 && issued.interval == 5)
        let keys = try await f.dump()
        #expect(keys.count == 1, "one key per grant: its record (the user code leads to it by its keyed hash)")
        let record = try #require(keys.first { $0.key.contains(":d:") })
        #expect(record.key == f.store.recordKey(forDeviceCode: issued.deviceCode))
        let digest = record.content.firstIndex(of: "h").map { record.content[$0 + 1] }
        #expect(digest == f.store.keys.decode(deviceCode: issued.deviceCode)?.digest, "h: the device code's keyed digest, not the code")
        let ttl = try await f.client.send("PTTL", record.key).int ?? 0
        #expect(ttl > 890_000 && ttl <= 900_000, "lifetime 600 s + grace 300 s, got \(ttl) ms")
        let code = try #require(try await f.store.find(deviceCode: issued.deviceCode))
        #expect(code.status == .pending && code.clientID == "tv" && code.scopes == ["profile", "email"])
        #expect(code.lastPolledAt == nil && code.interval == 5 && code.isPending(at: code.observedAt))
        #expect(abs(code.expiresAt.timeIntervalSince(code.createdAt) - 600) < 0.001)
    }

    @Test func lookupNormalizesWhatPeopleType() async throws {
        let f = try StoreFixture()
        defer { f.shutdown() }
        let issued = try await f.store.issue(clientID: "tv", scopes: [])
        let plain = issued.userCode.replacingOccurrences(of: "-", with: "")
        for typed in [issued.userCode, plain, plain.lowercased(), " " + issued.userCode.lowercased() + " ", String(plain.prefix(4)) + " " + String(plain.suffix(4))] {
            let found = try await f.store.lookup(userCode: typed, caller: "ip1")
            #expect(found.grantID == issued.grantID && found.userCode == issued.userCode)
        }
    }

    @Test func approveThenPollRedeemsExactlyOnce() async throws {
        let f = try StoreFixture()
        defer { f.shutdown() }
        let issued = try await f.store.issue(clientID: "tv", scopes: ["profile"])
        #expect(try await f.store.poll(deviceCode: issued.deviceCode, clientID: "tv") == .authorizationPending)
        try await f.store.approve(userCode: issued.userCode, userID: "alice")
        // No slow_down for an approved code, even right after the last poll.
        #expect(
            try await f.store.poll(deviceCode: issued.deviceCode, clientID: "tv")
                == .authorized(userID: "alice", scopes: ["profile"], grantID: issued.grantID))
        #expect(try await f.store.poll(deviceCode: issued.deviceCode, clientID: "tv") == .invalidGrant(.alreadyRedeemed))
        let record = try #require(try await f.store.find(deviceCode: issued.deviceCode))
        #expect(record.isRedeemed && record.status == .authorized && record.userID == "alice")
        // A redeemed code can never be approved or denied again.
        let again = await decisionError { try await f.store.approve(userCode: issued.userCode, userID: "mallory") }
        #expect(again?.code == .alreadyDecided && again?.isRedeemed == true)
        #expect(try await f.store.find(deviceCode: issued.deviceCode)?.userID == "alice")
    }

    @Test func denyReachesTheDeviceAndIsFinal() async throws {
        let f = try StoreFixture()
        defer { f.shutdown() }
        let issued = try await f.store.issue(clientID: "tv", scopes: [])
        try await f.store.deny(userCode: issued.userCode)
        #expect(try await f.store.poll(deviceCode: issued.deviceCode, clientID: "tv") == .accessDenied)
        #expect(try await f.store.poll(deviceCode: issued.deviceCode, clientID: "tv") == .accessDenied)
        let approve = await decisionError { try await f.store.approve(userCode: issued.userCode, userID: "alice") }
        #expect(approve?.code == .alreadyDecided && approve?.status == .denied)
        let denyAgain = await decisionError { try await f.store.deny(userCode: issued.userCode) }
        #expect(denyAgain?.code == .alreadyDecided)
        #expect(try await f.store.find(deviceCode: issued.deviceCode)?.status == .denied)
    }

    @Test func secondApprovalByAnyoneFailsAndChangesNothing() async throws {
        let f = try StoreFixture()
        defer { f.shutdown() }
        let issued = try await f.store.issue(clientID: "tv", scopes: [])
        try await f.store.approve(userCode: issued.userCode, userID: "alice")
        for user in ["alice", "bob"] {
            let error = await decisionError { try await f.store.approve(userCode: issued.userCode, userID: user) }
            #expect(error?.code == .alreadyDecided && error?.status == .authorized)
        }
        let deny = await decisionError { try await f.store.deny(userCode: issued.userCode) }
        #expect(deny?.code == .alreadyDecided)
        #expect(try await f.store.poll(deviceCode: issued.deviceCode, clientID: "tv") == .authorized(userID: "alice", scopes: [], grantID: issued.grantID))
    }

    @Test func expiryThenGraceThenGone() async throws {
        let f = try StoreFixture { $0.gracePeriod = .milliseconds(2500) }
        defer { f.shutdown() }
        // Lifetime 3 s, grace 2.5 s. Each state is checked inside its window as measured here;
        // when the machine stalled so long that a step may have landed outside it (seen once: an
        // 18 s stall under a full parallel run), the attempt proves nothing and is repeated on
        // fresh grants, after its keys are gone. No outcome depends on how fast the machine is.
        try await ProductScripts.load(on: f.client)
        let lifetime = Duration.milliseconds(3000)
        let grace = Duration.milliseconds(2500)
        for attempt in 1...5 {
            let issued = try await f.store.issue(clientID: "tv", scopes: [], lifetime: lifetime, interval: 0)
            let approvedButNeverRedeemed = try await f.store.issue(clientID: "tv", scopes: [], lifetime: lifetime, interval: 0)
            let issuedAt = ContinuousClock.now
            let approvedInTime: Bool
            do {
                try await f.store.approve(userCode: approvedButNeverRedeemed.userCode, userID: "alice")
                approvedInTime = ContinuousClock.now < issuedAt + lifetime - .milliseconds(100)
            } catch let error as DeviceAuthorizationError where error.code == .expired {
                approvedInTime = false
            }
            try await Task.sleep(until: issuedAt + lifetime + .milliseconds(100))
            let polled = try await f.store.poll(deviceCode: issued.deviceCode, clientID: "tv")
            let polledApproved = try await f.store.poll(deviceCode: approvedButNeverRedeemed.deviceCode, clientID: "tv")
            let approve = await decisionError { try await f.store.approve(userCode: issued.userCode, userID: "alice") }
            let lookup = await decisionError { _ = try await f.store.lookup(userCode: issued.userCode, caller: "ip") }
            // Issued before `issuedAt`, so their grace ends no earlier than issuedAt + lifetime + grace.
            guard approvedInTime, ContinuousClock.now < issuedAt + lifetime + grace - .milliseconds(200) else {
                print("expiryThenGraceThenGone: attempt \(attempt) stalled past a window; again on fresh grants")
                try await Task.sleep(until: issuedAt + lifetime + grace + .milliseconds(1000))
                continue
            }
            #expect(polled == .expiredToken)
            #expect(polledApproved == .expiredToken, "an approved code that was never redeemed still expires")
            #expect(approve?.code == .expired)
            #expect(lookup?.code == .expired)
            try await Task.sleep(until: issuedAt + lifetime + grace + .milliseconds(300))
            #expect(try await f.store.poll(deviceCode: issued.deviceCode, clientID: "tv") == .invalidGrant(.unknown))
            #expect(try await f.dump().filter { !$0.key.contains("{bf}") }.isEmpty, "Redis removed both keys of both grants by TTL")
            return
        }
        Issue.record("every attempt stalled past its window: the machine is too busy to tell")
    }

    @Test func wrongClientAndMalformedCodesGetInvalidGrantAndChangeNothing() async throws {
        let f = try StoreFixture()
        defer { f.shutdown() }
        let issued = try await f.store.issue(clientID: "tv", scopes: [])
        try await f.store.approve(userCode: issued.userCode, userID: "alice")
        #expect(try await f.store.poll(deviceCode: issued.deviceCode, clientID: "other") == .invalidGrant(.wrongClient))
        // Near misses must really differ from the code: its last character is "A" one time in 16.
        let otherLast = issued.deviceCode.hasSuffix("A") ? "E" : "A"
        let otherTag = issued.deviceCode.hasPrefix("ffff.") ? "0000." : "ffff."
        for bad in ["", "x", String(repeating: "a", count: 5000), String(issued.deviceCode.dropLast()) + otherLast, otherTag + String(issued.deviceCode.dropFirst(5))] {
            #expect(bad != issued.deviceCode)
            #expect(try await f.store.poll(deviceCode: bad, clientID: "tv") == .invalidGrant(.unknown))
        }
        #expect(try await f.store.poll(deviceCode: issued.deviceCode, clientID: "tv") == .authorized(userID: "alice", scopes: [], grantID: issued.grantID))
    }

    @Test func userCodeCollisionsRetryWithANewCode() async throws {
        let f = try StoreFixture()
        defer { f.shutdown() }
        let first = try await f.store.issue(clientID: "tv", scopes: [], lifetime: nil, interval: nil, userCodes: { "BCDFGHJK" })
        #expect(first.userCode == "BCDF-GHJK")
        var candidates = ["BCDFGHJK", "BCDFGHJK", "LMNPQRST"]
        let second = try await f.store.issue(clientID: "tv", scopes: [], lifetime: nil, interval: nil, userCodes: { candidates.removeFirst() })
        #expect(second.userCode == "LMNP-QRST")
        #expect(try await f.store.lookup(userCode: "BCDF-GHJK", caller: "ip").grantID == first.grantID, "the first grant keeps its code")
        let exhausted = await decisionError {
            _ = try await f.store.issue(clientID: "tv", scopes: [], lifetime: nil, interval: nil, userCodes: { "BCDFGHJK" })
        }
        #expect(exhausted?.code == .userCodeSpaceExhausted)
        #expect(try await f.dump().count == 2, "two grants, one key each: failed attempts leave nothing behind")
    }

    @Test func referenceModelMethodsAreAtomicToo() async throws {
        let f = try StoreFixture()
        defer { f.shutdown() }
        let issued = try await f.store.issue(clientID: "tv", scopes: [])
        var code = try #require(try await f.store.find(deviceCode: issued.deviceCode))
        #expect(try await f.store.checkRateLimit(code, intervalSeconds: 5) == false, "the first poll is never throttled")
        try await f.store.updatePollTime(code)
        #expect(try await f.store.checkRateLimit(code, intervalSeconds: 5) == true)
        code = try #require(try await f.store.find(deviceCode: issued.deviceCode))
        #expect(code.interval == 10 && code.lastPolledAt != nil)
        try await f.store.authorize(code, userID: "alice")
        let denied = await decisionError { try await f.store.deny(code) }
        #expect(denied?.code == .alreadyDecided)
        #expect(try await f.store.find(deviceCode: issued.deviceCode)?.status == .authorized)
    }

    @Test(
        "issue refuses an out-of-range lifetime or interval with invalidArgument and writes nothing (10^17 s used to trap)",
        arguments: [
            (Duration.seconds(100_000_000_000_000_000), 5), (.seconds(367 * 86_400), 5), (.zero, 5), (.seconds(-1), 5),
            (.seconds(60), -1), (.seconds(60), 86_401), (.seconds(60), Int.max),
        ])
    func issueRefusesOutOfRangeSettings(lifetime: Duration, interval: Int) async throws {
        let f = try StoreFixture()
        let error = await decisionError { _ = try await f.store.issue(clientID: "tv", scopes: [], lifetime: lifetime, interval: interval) }
        #expect(error?.code == .invalidArgument)
        #expect(try await f.dump().isEmpty)
    }

    @Test("a configured grace period or failure window of 10^17 s is a typed Redis error, not a trap")
    func hugeConfiguredDurationsAreTypedErrors() async throws {
        let f = try StoreFixture {
            $0.gracePeriod = .seconds(100_000_000_000_000_000)
            $0.callerWindow = .seconds(100_000_000_000_000_000)
        }
        await #expect(throws: RedisError.self) { _ = try await f.store.issue(clientID: "tv", scopes: []) }
        await #expect(throws: RedisError.self) { _ = try await f.store.lookup(userCode: "BCDF-GHJK", caller: "203.0.113.9") }
    }
}

func decisionError(_ body: () async throws -> Void) async -> DeviceAuthorizationError? {
    do {
        try await body()
        Issue.record("expected a DeviceAuthorizationError")
        return nil
    } catch let error as DeviceAuthorizationError {
        return error
    } catch {
        Issue.record("expected a DeviceAuthorizationError, got \(error)")
        return nil
    }
}

@Suite("Redis configuration checks")
struct RedisConfigurationTests {
    @Test func warnsWhenTheEvictionPolicyCanDropDeviceCodes() async throws {
        let f = try StoreFixture()
        defer { f.shutdown() }
        // CONFIG SET is global; restore at once. Other tests never read this setting.
        // In a cluster this reaches one primary: the check must look at every primary.
        try await f.client.send("CONFIG", "SET", "maxmemory-policy", "volatile-lru")
        let warnings = await f.store.checkRedisConfiguration()
        for (_, result) in await f.client.sendToEachPrimary(RedisCommand("CONFIG", "SET", "maxmemory-policy", "noeviction")) {
            _ = try result.get()
        }
        #expect(warnings.count == 1 && warnings[0].contains("volatile-lru"))
    }
}
