import Foundation
import RedisClient
import TestProcesses
import Testing

@testable import DeviceAuthorization

/// The refresh-token store on its own (single Redis, and the same bodies on a Redis Cluster in
/// ``ClusterStoreTests``): rotation exactly once across nodes, one slot per family, nothing
/// plaintext at rest, forged records, and the bytes a family costs.
@Suite("Refresh-token store")
struct RefreshStoreTests {
    static func refreshStore(_ f: StoreFixture) -> RefreshTokenStore {
        RefreshTokenStore(client: f.client, configuration: f.store.configuration)
    }

    @Test("100 concurrent refreshes of one token through four nodes rotate it once; the family is then revoked (reuse)")
    func rotationExactlyOnceAcrossNodes() async throws {
        let f = try StoreFixture()
        defer { f.shutdown() }
        var clients: [RedisClient] = [f.client]
        for _ in 0..<3 { clients.append(try RedisClient(url: f.serverURL)) }
        defer { for client in clients.dropFirst() { client.shutdown() } }
        let nodes = clients.map { RefreshTokenStore(client: $0, configuration: f.store.configuration) }
        for _ in 0..<5 {
            let issued = try await nodes[0].createFamily(clientID: "tv", userID: "alice", scopes: ["s"])
            let answers = try await withThrowingTaskGroup(of: (Int, RefreshOutcome).self) { group in
                for index in 0..<100 {
                    group.addTask {
                        (
                            index,
                            try await nodes[index % nodes.count].refresh(
                                token: issued.token, clientID: "tv",
                                accessToken: AccessTokenReference(tokenID: "a\(index)", expiresAt: Date().addingTimeInterval(600)))
                        )
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let outcomes = answers.map(\.1)
            let winners = answers.compactMap { index, outcome in if case .rotated(let r) = outcome { (index, r) } else { nil } }
            #expect(winners.count == 1)
            #expect(outcomes.filter { $0 == .invalidGrant(.reused) }.count == 1, "the first late one revokes, the rest find nothing")
            #expect(outcomes.filter { $0 == .invalidGrant(.unknown) }.count == 98)
            if let (index, winner) = winners.first {
                #expect(try await nodes[1].refresh(token: winner.token, clientID: "tv") == .invalidGrant(.unknown))
                // The winner's access token went on the family's denylist with the revocation.
                #expect(try await nodes[2].isAccessTokenRevoked(tokenID: "a\(index)", familyID: issued.familyID))
            }
        }
    }

    @Test("a family's keys are one slot; Redis holds no token, random part or MAC; lifetimes are the TTL")
    func oneSlotNothingPlaintext() async throws {
        let f = try StoreFixture()
        defer { f.shutdown() }
        let refresh = Self.refreshStore(f)
        let issued = try await refresh.createFamily(
            clientID: "tv", userID: "alice", scopes: ["a", "b"], idleLifetime: .seconds(60), absoluteLifetime: .seconds(3600),
            accessToken: AccessTokenReference(tokenID: "jti-1", expiresAt: Date().addingTimeInterval(600)))
        guard
            case .rotated(let rotated) = try await refresh.refresh(
                token: issued.token, clientID: "tv", scopes: ["a"],
                accessToken: AccessTokenReference(tokenID: "jti-2", expiresAt: Date().addingTimeInterval(600)))
        else {
            Issue.record("no rotation")
            return
        }
        #expect(rotated.scopes == ["a"] && rotated.familyScopes == ["a", "b"] && rotated.userID == "alice")
        let familyKey = try #require(refresh.familyKey(forToken: rotated.token))
        let ttl = try await f.client.send("PTTL", familyKey).int ?? -9
        #expect(ttl > 0 && ttl <= 60_000)
        // Reuse: the family goes, both access tokens are denylisted.
        #expect(try await refresh.refresh(token: issued.token, clientID: "tv") == .invalidGrant(.reused))
        #expect(try await refresh.isAccessTokenRevoked(tokenID: "jti-1", familyID: issued.familyID))
        #expect(try await refresh.isAccessTokenRevoked(tokenID: "jti-2", familyID: issued.familyID))
        #expect(try await !refresh.isAccessTokenRevoked(tokenID: "jti-3", familyID: issued.familyID))
        let other = try await refresh.createFamily(clientID: "tv", userID: "bob", scopes: [])
        try await refresh.revokeAccessToken(tokenID: "lonely", familyID: nil, expiresAt: Date().addingTimeInterval(60))
        #expect(try await refresh.isAccessTokenRevoked(tokenID: "lonely", familyID: nil))

        let dump = try await f.dump()
        let familyKeys = dump.map(\.key).filter { $0.contains("{r\(issued.familyID)}") }
        #expect(familyKeys.count == 1, "the denylist outlives the record: \(familyKeys)")
        #expect(Set(familyKeys.map { RedisHashSlot.slot(of: $0) }).count == 1)
        #expect(RedisHashSlot.slot(of: familyKey) == RedisHashSlot.slot(of: f.store.configuration.keyPrefix + ":{r\(issued.familyID)}:x"))
        let text = dump.map { $0.key + " " + $0.content.joined(separator: " ") }.joined(separator: "\n")
        for token in [issued.token, rotated.token, other.token] {
            let parts = token.split(separator: ".")
            #expect(!text.contains(token) && !text.contains(String(parts[1])) && !text.contains(String(parts[2])))
        }
    }

    @Test("a family record changed without the secret (user, scopes, client, MAC) gives no token")
    func forgedFamily() async throws {
        let f = try StoreFixture()
        defer { f.shutdown() }
        let refresh = Self.refreshStore(f)
        for (field, value) in [("u", "mallory"), ("sc", "a admin"), ("m", String(repeating: "0", count: 32))] {
            let issued = try await refresh.createFamily(clientID: "tv", userID: "alice", scopes: ["a"])
            _ = try await f.client.send("HSET", try #require(refresh.familyKey(forToken: issued.token)), field, value)
            let outcome = try await refresh.refresh(token: issued.token, clientID: "tv", scopes: field == "sc" ? ["admin"] : nil)
            #expect(outcome == .invalidGrant(.forged), "\(field)")
        }
        // A client id written by an attacker: the script compares it, so the real client is refused.
        let issued = try await refresh.createFamily(clientID: "tv", userID: "alice", scopes: ["a"])
        _ = try await f.client.send("HSET", try #require(refresh.familyKey(forToken: issued.token)), "c", "evil")
        #expect(try await refresh.refresh(token: issued.token, clientID: "evil") == .invalidGrant(.forged))
    }

    @Test("at maxmemory a new family is refused (nothing written) while refreshes, revocations and denylisting still work (private Redis)")
    func maxMemory() async throws {
        let server = try await PrivateRedis(arguments: ["--maxmemory-policy", "noeviction"])
        let f = try StoreFixture(server: server)
        defer { f.shutdown() }
        let refresh = Self.refreshStore(f)
        let live = try await refresh.createFamily(clientID: "tv", userID: "alice", scopes: ["a"])
        let doomed = try await refresh.createFamily(clientID: "tv", userID: "bob", scopes: ["a"])
        try await ProductScripts.load(on: f.client)
        _ = try await f.client.send("SET", "\(f.prefix):ballast", String(repeating: "x", count: 4 << 20))
        let used = try #require(StoreFixtureInfo.usedMemory(try await f.client.send("INFO", "memory").string ?? ""))
        _ = try await f.client.send("CONFIG", "SET", "maxmemory", "\(used / 2)")
        let before = try await f.dump().map(\.key)
        #expect(await MaxMemoryTests.isOOM { _ = try await refresh.createFamily(clientID: "tv", userID: "carol", scopes: []) })
        #expect(try await f.dump().map(\.key).sorted() == before.sorted(), "nothing was created")
        guard
            case .rotated = try await refresh.refresh(
                token: live.token, clientID: "tv",
                accessToken: AccessTokenReference(tokenID: "j1", expiresAt: Date().addingTimeInterval(600)))
        else {
            Issue.record("a refresh at maxmemory did not rotate")
            return
        }
        #expect(try await refresh.revoke(refreshToken: doomed.token, clientID: "tv") == .revoked)
        try await refresh.revokeAccessToken(tokenID: "lonely", familyID: nil, expiresAt: Date().addingTimeInterval(60))
        #expect(try await refresh.isAccessTokenRevoked(tokenID: "lonely", familyID: nil))
        #expect(try await refresh.refresh(token: live.token, clientID: "tv") == .invalidGrant(.reused), "reuse revokes at maxmemory too")
        #expect(try await refresh.isAccessTokenRevoked(tokenID: "j1", familyID: live.familyID))
    }

    @Test("bytes per family: MEMORY USAGE of one record and the used_memory delta over 10,000 families (private Redis)")
    func bytesPerFamily() async throws {
        let server = try await PrivateRedis()
        let f = try StoreFixture(connections: 4, url: server.url)
        defer { f.shutdown() }
        let refresh = Self.refreshStore(f)
        let before = try #require(StoreFixtureInfo.usedMemory(try await f.client.send("INFO", "memory").string ?? ""))
        let count = 10_000
        var sample = ""
        try await withThrowingTaskGroup(of: String.self) { group in
            for worker in 0..<32 {
                group.addTask {
                    var last = ""
                    for index in stride(from: worker, to: count, by: 32) {
                        // As the server creates them: a user id, two scopes, one access token.
                        last = try await refresh.createFamily(
                            clientID: "tv-app", userID: "user-\(index)@example.com", scopes: ["profile", "offline_access"],
                            accessToken: AccessTokenReference(
                                tokenID: UUID().uuidString.lowercased(),
                                expiresAt: Date().addingTimeInterval(3600))
                        ).token
                    }
                    return last
                }
            }
            for try await token in group where !token.isEmpty { sample = token }
        }
        let after = try #require(StoreFixtureInfo.usedMemory(try await f.client.send("INFO", "memory").string ?? ""))
        let usage = try await f.client.send("MEMORY", "USAGE", try #require(refresh.familyKey(forToken: sample))).int ?? 0
        let perFamily = (after - before) / count
        print(
            "BENCH refresh_family_bytes ours=\(perFamily) baseline=\(usage) unit=bytes ratio=\(String(format: "%.2f", Double(perFamily) / Double(max(usage, 1)))) (used_memory delta per family over \(count) families; baseline = MEMORY USAGE of one record)"
        )
        #expect(usage > 0 && usage < 512, "MEMORY USAGE \(usage)")
        #expect(perFamily > 0 && perFamily < 768, "used_memory per family \(perFamily)")
    }
}
