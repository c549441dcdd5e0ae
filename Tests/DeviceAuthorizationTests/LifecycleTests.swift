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
        #expect(keys.count == 2, "one device record and one user-code index")
        let record = try #require(keys.first { $0.key.contains(":d:") })
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
        #expect(try await f.store.poll(deviceCode: issued.deviceCode, clientID: "tv")
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
        // Generous grace: the checks below must finish inside it even on a loaded 2-core CI box.
        let f = try StoreFixture { $0.gracePeriod = .milliseconds(2500) }
        defer { f.shutdown() }
        // Lifetime 3 s: issue + approve (three round trips: GET of the index, the read for the
        // MAC, the script) must land before expiry even when every suite runs at once on a busy
        // machine (1 s was missed once with a release build running beside the tests). The
        // functions are loaded first, so no call pays for a load. The waits count from after both
        // issues returned, so both grants' times have surely passed.
        try await ProductScripts.load(on: f.client)
        let issued = try await f.store.issue(clientID: "tv", scopes: [], lifetime: .milliseconds(3000), interval: 0)
        let approvedButNeverRedeemed = try await f.store.issue(clientID: "tv", scopes: [], lifetime: .milliseconds(3000), interval: 0)
        let issuedAt = ContinuousClock.now
        try await f.store.approve(userCode: approvedButNeverRedeemed.userCode, userID: "alice")
        try await Task.sleep(until: issuedAt + .milliseconds(3100))
        #expect(try await f.store.poll(deviceCode: issued.deviceCode, clientID: "tv") == .expiredToken)
        #expect(try await f.store.poll(deviceCode: approvedButNeverRedeemed.deviceCode, clientID: "tv") == .expiredToken,
                "an approved code that was never redeemed still expires")
        let approve = await decisionError { try await f.store.approve(userCode: issued.userCode, userID: "alice") }
        #expect(approve?.code == .expired)
        let lookup = await decisionError { _ = try await f.store.lookup(userCode: issued.userCode, caller: "ip") }
        #expect(lookup?.code == .expired)
        try await Task.sleep(until: issuedAt + .milliseconds(3000 + 2500 + 300))
        #expect(try await f.store.poll(deviceCode: issued.deviceCode, clientID: "tv") == .invalidGrant(.unknown))
        #expect(try await f.dump().filter { !$0.key.contains("{bf}") }.isEmpty, "Redis removed both keys of both grants by TTL")
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
        #expect(try await f.dump().count == 4, "failed attempts leave nothing behind")
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

    @Test("issue refuses an out-of-range lifetime or interval with invalidArgument and writes nothing (10^17 s used to trap)",
          arguments: [(Duration.seconds(100_000_000_000_000_000), 5), (.seconds(367 * 86_400), 5), (.zero, 5), (.seconds(-1), 5),
                      (.seconds(60), -1), (.seconds(60), 86_401), (.seconds(60), Int.max)])
    func issueRefusesOutOfRangeSettings(lifetime: Duration, interval: Int) async throws {
        let f = try StoreFixture()
        let error = await decisionError { _ = try await f.store.issue(clientID: "tv", scopes: [], lifetime: lifetime, interval: interval) }
        #expect(error?.code == .invalidArgument)
        #expect(try await f.dump().isEmpty)
    }

    @Test("a configured grace period or failure window of 10^17 s is a typed Redis error, not a trap")
    func hugeConfiguredDurationsAreTypedErrors() async throws {
        let f = try StoreFixture { $0.gracePeriod = .seconds(100_000_000_000_000_000); $0.callerWindow = .seconds(100_000_000_000_000_000) }
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
