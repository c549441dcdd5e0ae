import Foundation
import RedisClient
import Synchronization
import TestProcesses
import Testing

@testable import DeviceAuthorization

/// No lost logins (issue 16): a device whose token answer was lost completes its login on its next
/// poll, never with a second token, and a stolen code polled from elsewhere is still a replay.
@Suite("Lost logins")
struct LostLoginTests {
    static let device = "198.51.100.7"
    static let elsewhere = "203.0.113.99"

    /// Mints a recognisable answer and counts how often it was asked to.
    final class Minter: Sendable {
        let count = Atomic<Int>(0)
        func callAsFunction(_ grant: ApprovedGrant) -> [UInt8] {
            let n = count.add(1, ordering: .relaxed).newValue
            return Array("{\"access_token\":\"tok-\(grant.grantID)-\(n)-secret-access-token\"}".utf8)
        }
    }

    static func body(_ result: TokenPollResult) -> (String, TokenAnswer.Source)? {
        guard case .answer(let answer) = result else { return nil }
        return (String(decoding: answer.body, as: UTF8.self), answer.source)
    }

    @Test("a lost answer is sent again to the same address in the window: same token, never to another address or client; Redis holds it sealed")
    func redelivery() async throws {
        let fixture = try StoreFixture()
        defer { fixture.shutdown() }
        let store = fixture.store
        let mint = Minter()
        let issued = try await store.issue(clientID: "tv", scopes: ["profile"], interval: 0)
        #expect(try await store.poll(deviceCode: issued.deviceCode, clientID: "tv", origin: Self.device, answer: mint.callAsFunction) == .outcome(.authorizationPending))
        try await store.approve(userCode: issued.userCode, userID: "alice")

        let first = try #require(Self.body(try await store.poll(deviceCode: issued.deviceCode, clientID: "tv", origin: Self.device, answer: mint.callAsFunction)))
        #expect(first.1 == .minted)
        // The device never saw `first` (lost on the way): it polls again, through another node.
        let other = try fixture.anotherNode()
        let again = try #require(Self.body(try await other.poll(deviceCode: issued.deviceCode, clientID: "tv", origin: Self.device, answer: mint.callAsFunction)))
        #expect(again.0 == first.0 && again.1 == .redelivered)
        #expect(mint.count.load(ordering: .relaxed) == 1, "a redelivery mints nothing")

        // Someone else holding the code, from another address or as another client: no token.
        #expect(
            try await store.poll(deviceCode: issued.deviceCode, clientID: "tv", origin: Self.elsewhere, answer: mint.callAsFunction)
                == .outcome(.invalidGrant(.alreadyRedeemed)))
        #expect(
            try await store.poll(deviceCode: issued.deviceCode, clientID: "tv", origin: nil, answer: mint.callAsFunction)
                == .outcome(.invalidGrant(.alreadyRedeemed)))
        #expect(
            try await store.poll(deviceCode: issued.deviceCode, clientID: "other", origin: Self.device, answer: mint.callAsFunction)
                == .outcome(.invalidGrant(.wrongClient)))

        // What Redis holds: no token in plaintext anywhere; the replays are counted.
        let dump = try await fixture.dump()
        let record = try #require(dump.first { $0.key.contains(":d:") })
        for (_, content) in dump { #expect(!content.joined().contains("secret-access-token")) }
        let raw = try await fixture.client.send("HMGET", record.key, "t", "rp").array ?? []
        let sealed = try #require(raw.first?.bytes)
        #expect(sealed.count == 12 + first.0.utf8.count + 16, "nonce, ciphertext, tag")
        #expect(!String(decoding: sealed, as: UTF8.self).contains("secret-access-token"))
        #expect(raw.last?.string == "2")
    }

    @Test("after the retry window (Redis's clock) the device's own address gets invalid_grant too, and the kept answer is cleared")
    func afterTheWindow() async throws {
        let fixture = try StoreFixture { $0.redemptionRetryWindow = .milliseconds(100) }
        defer { fixture.shutdown() }
        let store = fixture.store
        let mint = Minter()
        let issued = try await store.issue(clientID: "tv", scopes: [], interval: 0)
        try await store.approve(userCode: issued.userCode, userID: "alice")
        _ = try await store.poll(deviceCode: issued.deviceCode, clientID: "tv", origin: Self.device, answer: mint.callAsFunction)
        let key = try #require(store.recordKey(forDeviceCode: issued.deviceCode))
        #expect(try await fixture.client.send("HMGET", key, "t").array?.first?.bytes?.isEmpty == false)
        // Wait until Redis's clock is past the window (a hang guard, not a timing assertion).
        let end = try #require(try await fixture.client.send("HMGET", key, "w").array?.first?.string.flatMap { Int($0) })
        for _ in 0..<100 {
            let time = try await fixture.client.send("TIME").array ?? []
            if let seconds = time.first?.string.flatMap({ Int($0) }), seconds * 1000 > end + 1000 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(
            try await store.poll(deviceCode: issued.deviceCode, clientID: "tv", origin: Self.device, answer: mint.callAsFunction)
                == .outcome(.invalidGrant(.alreadyRedeemed)))
        #expect(try await fixture.client.send("HMGET", key, "t").array?.first?.string == "")
        #expect(mint.count.load(ordering: .relaxed) == 1)
    }

    @Test("a sealed answer copied into another redeemed record (a Redis writer without the secret) does not open there: no token")
    func copiedAnswerIsRefused() async throws {
        let fixture = try StoreFixture()
        defer { fixture.shutdown() }
        let store = fixture.store
        let mint = Minter()
        var codes: [IssuedDeviceCode] = []
        for _ in 0..<2 {
            let issued = try await store.issue(clientID: "tv", scopes: [], interval: 0)
            try await store.approve(userCode: issued.userCode, userID: "mallory")
            codes.append(issued)
        }
        // The victim's grant is redeemed with its answer kept; the attacker's own grant too.
        _ = try await store.poll(deviceCode: codes[0].deviceCode, clientID: "tv", origin: Self.device, answer: mint.callAsFunction)
        _ = try await store.poll(deviceCode: codes[1].deviceCode, clientID: "tv", origin: Self.elsewhere, answer: mint.callAsFunction)
        let victim = try #require(store.recordKey(forDeviceCode: codes[0].deviceCode))
        let own = try #require(store.recordKey(forDeviceCode: codes[1].deviceCode))
        let stolen = try await fixture.client.send("HMGET", victim, "t").array?.first?.bytes ?? []
        _ = try await fixture.client.send(RedisCommand("HSET", own, "t", stolen))
        #expect(
            try await store.poll(deviceCode: codes[1].deviceCode, clientID: "tv", origin: Self.elsewhere, answer: mint.callAsFunction)
                == .outcome(.invalidGrant(.forged)))
    }

    @Test("16 concurrent polls of one approved code: from one address all get the one token; from 16 addresses one does, 15 are replays (10 rounds)")
    func concurrentPolls() async throws {
        let fixture = try StoreFixture(connections: 4)
        defer { fixture.shutdown() }
        let nodes = [fixture.store, try fixture.anotherNode(), try fixture.anotherNode()]
        for round in 0..<10 {
            for sameAddress in [true, false] {
                let issued = try await fixture.store.issue(clientID: "tv", scopes: ["profile"], interval: 0)
                try await fixture.store.approve(userCode: issued.userCode, userID: "alice")
                let mint = Minter()
                let results = try await withThrowingTaskGroup(of: TokenPollResult.self) { group in
                    for index in 0..<16 {
                        let origin = sameAddress ? Self.device : "192.0.2.\(index + 1)"
                        group.addTask {
                            try await nodes[index % nodes.count].poll(deviceCode: issued.deviceCode, clientID: "tv", origin: origin, answer: mint.callAsFunction)
                        }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
                let answers = results.compactMap(Self.body)
                #expect(Set(answers.map(\.0)).count == 1, "round \(round): one token, however many polls")
                #expect(answers.filter { $0.1 == .minted }.count == 1, "round \(round)")
                if sameAddress {
                    #expect(answers.count == 16, "round \(round): every poll from the device's address gets the token")
                } else {
                    #expect(answers.count == 1, "round \(round): polls from other addresses get no token")
                    #expect(results.filter { $0 == .outcome(.invalidGrant(.alreadyRedeemed)) }.count == 15, "round \(round)")
                }
            }
        }
    }

    @Test("the redeeming write times out during DEBUG SLEEP: the device's next poll gets the token that write stored (no lost login, one token)")
    func answerLostToATimeout() async throws {
        let server = try await PrivateRedis(arguments: ["--enable-debug-command", "local"])
        defer { server.stop() }
        var configuration = try RedisClientConfiguration(url: server.url)
        configuration.commandTimeout = .seconds(1)
        // One connection, warmed by the issue and approval below: the redeeming write goes out at
        // once (a connection still in its handshake would hold it back, and it would never run).
        configuration.connectionCount = 1
        let client = RedisClient(configuration: configuration)
        var adminConfiguration = try RedisClientConfiguration(url: server.url)
        adminConfiguration.commandTimeout = .seconds(15)
        let admin = RedisClient(configuration: adminConfiguration)
        let probeConfiguration = try { () throws -> RedisClientConfiguration in
            var probe = try RedisClientConfiguration(url: server.url)
            probe.commandTimeout = .seconds(1)
            return probe
        }()
        /// Puts Redis to sleep for 5 s and returns once it sleeps: a probe's PING (1 s timeout)
        /// fails only then, with a wide margin over what a busy machine delays a local PING by.
        @Sendable func putRedisToSleep() async throws -> Task<RedisValue, any Error> {
            let sleeper = Task { try await admin.send("DEBUG", "SLEEP", "5") }
            let probe = RedisClient(configuration: probeConfiguration)
            defer { probe.shutdown() }
            while (try? await probe.send("PING")) != nil { try await Task.sleep(for: .milliseconds(20)) }
            return sleeper
        }
        defer {
            client.shutdown()
            admin.shutdown()
        }
        let store = DeviceCodeStore(client: client, configuration: DeviceCodeStoreConfiguration(keyPrefix: "lost", secret: Array("a-test-secret-of-at-least-32-bytes!!".utf8)))
        // As a node does at start-up: else the redeeming FCALL, run after the sleep, would only
        // find its function missing (and the client, gone, could not load it and send it again).
        try await ProductScripts.load(on: client)
        let issued = try await store.issue(clientID: "tv", scopes: [], interval: 0)
        try await store.approve(userCode: issued.userCode, userID: "alice")

        let mint = Minter()
        var sleeper: Task<RedisValue, any Error>?
        let lost = await #expect(throws: RedisError.self) {
            _ = try await store.poll(deviceCode: issued.deviceCode, clientID: "tv", origin: Self.device) { grant in
                // Mint, then make sure Redis is asleep before the redeeming write goes out: a
                // probe's PING times out only once DEBUG SLEEP runs.
                let body = mint(grant)
                sleeper = try await putRedisToSleep()
                return body
            }
        }
        #expect(lost?.code == .timeout)
        _ = try await sleeper?.value
        // Redis woke and ran the redemption the node had given up on; the device polls again.
        let next = try #require(Self.body(try await store.poll(deviceCode: issued.deviceCode, clientID: "tv", origin: Self.device, answer: mint.callAsFunction)))
        #expect(next.1 == .redelivered)
        #expect(next.0.contains("-1-secret"), "the answer minted before the timeout")
        #expect(mint.count.load(ordering: .relaxed) == 1)
        // The same scenario with the retry window off loses the login: what the window is for.
        let oneStep = DeviceCodeStore(
            client: client,
            configuration: DeviceCodeStoreConfiguration(
                keyPrefix: "lost1", secret: Array("a-test-secret-of-at-least-32-bytes!!".utf8), redemptionRetryWindow: .zero))
        let second = try await oneStep.issue(clientID: "tv", scopes: [], interval: 0)
        try await oneStep.approve(userCode: second.userCode, userID: "alice")
        let sleeper2 = try await putRedisToSleep()
        await #expect(throws: RedisError.self) {
            _ = try await oneStep.poll(deviceCode: second.deviceCode, clientID: "tv", origin: Self.device, answer: mint.callAsFunction)
        }
        _ = try await sleeper2.value
        #expect(
            try await oneStep.poll(deviceCode: second.deviceCode, clientID: "tv", origin: Self.device, answer: mint.callAsFunction)
                == .outcome(.invalidGrant(.alreadyRedeemed)))
    }
}
