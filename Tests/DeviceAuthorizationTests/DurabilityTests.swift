import Foundation
import RedisClient
import Synchronization
import TestProcesses
import Testing

@testable import DeviceAuthorization

/// What the load of one kill round saw confirmed, shared by its tasks.
final class ConfirmedWrites: Sendable {
    /// `delivered`: the token answer each redeemed device code got (as the token endpoint redeems).
    struct State: Sendable {
        var approved: [(userCode: String, deviceCode: String)] = []
        var delivered: [String: [UInt8]] = [:]
    }
    private let state = Mutex(State())
    func withLock<T: Sendable>(_ body: (inout State) -> T) -> T { state.withLock { body(&$0) } }
}

/// `DeviceCodeStoreConfiguration.durability`: decisions and redemptions wait for replicas
/// (`WAIT`, `WAITAOF`) on private primaries and replicas, and what a confirmed write promises
/// when the primary is killed and its replica promoted.
@Suite("Durability: WAIT / WAITAOF behind decisions and redemptions", .serialized)
struct DurabilityTests {
    /// A primary and its replicas, linked and in sync.
    struct Topology: Sendable {
        let primary: PrivateRedis
        let replicas: [PrivateRedis]

        init(replicas count: Int, arguments: [String] = []) async throws {
            // No 5 s wait for more replicas before a diskless full sync.
            primary = try await PrivateRedis(arguments: arguments + ["--repl-diskless-sync-delay", "0"])
            var replicas: [PrivateRedis] = []
            for _ in 0..<count {
                replicas.append(try await PrivateRedis(arguments: arguments + ["--replicaof", "127.0.0.1", "\(primary.port)"]))
            }
            self.replicas = replicas
            let admin = try RedisClient(url: primary.url)
            defer { admin.shutdown() }
            for _ in 0..<600 {
                let info = try await admin.send("INFO", "replication").string ?? ""
                let online = info.split(whereSeparator: \.isNewline).filter { $0.hasPrefix("slave") && $0.contains("state=online") }.count
                if online == count { return }
                try await Task.sleep(for: .milliseconds(50))
            }
            throw RedisError(.timeout, "the replicas did not come online")
        }

        /// What a replica holds in the status field of a record.
        func status(onReplica index: Int = 0, key: String) async throws -> String? {
            let client = try RedisClient(url: replicas[index].url)
            defer { client.shutdown() }
            return try await client.send("HGET", key, "s").string
        }
    }

    static func durable(_ replicas: Int, timeout: Duration = .seconds(3), appendOnlyFile: Bool = false) -> (inout DeviceCodeStoreConfiguration) -> Void {
        { $0.durability = try? RedisDurability(replicas: replicas, timeout: timeout, appendOnlyFile: appendOnlyFile) }
    }

    @Test("An approval and a redemption that return are already on the replica, also 40 at once on one connection")
    func confirmedWritesAreOnTheReplica() async throws {
        let topology = try await Topology(replicas: 1)
        let fixture = try StoreFixture(connections: 1, url: topology.primary.url, configure: Self.durable(1))
        defer { fixture.shutdown() }
        let store = fixture.store
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<40 {
                group.addTask {
                    let issued = try await store.issue(clientID: "tv", scopes: ["profile"])
                    let key = try #require(store.recordKey(forDeviceCode: issued.deviceCode))
                    try await store.approve(userCode: issued.userCode, userID: "person-\(index)")
                    #expect(try await topology.status(key: key) == "a")
                    let outcome = try await store.poll(deviceCode: issued.deviceCode, clientID: "tv")
                    guard case .authorized(let userID, _, _) = outcome else {
                        Issue.record("got \(outcome)")
                        return
                    }
                    #expect(userID == "person-\(index)")
                    #expect(try await topology.status(key: key) == "r")
                }
            }
            try await group.waitForAll()
        }
        // The waits hold the one connection: pending polls behind them still get answered.
        let pending = try await fixture.store.issue(clientID: "tv", scopes: [])
        #expect(try await fixture.store.poll(deviceCode: pending.deviceCode, clientID: "tv") == .authorizationPending)
    }

    @Test("Fewer replicas than asked: the approval and the denial are notDurable (made on the primary), the redemption still gets its token")
    func shortfall() async throws {
        let topology = try await Topology(replicas: 1)
        let fixture = try StoreFixture(url: topology.primary.url, configure: Self.durable(2, timeout: .milliseconds(200)))
        defer { fixture.shutdown() }
        let approved = try await fixture.store.issue(clientID: "tv", scopes: [])
        let error = await #expect(throws: DeviceAuthorizationError.self) {
            try await fixture.store.approve(userCode: approved.userCode, userID: "alice")
        }
        #expect(error?.code == .notDurable)
        #expect(error?.message.contains("of 2 replicas") == true)
        // It was made: deciding again is refused, and the device gets its token.
        await #expect(throws: DeviceAuthorizationError.self) { try await fixture.store.approve(userCode: approved.userCode, userID: "mallory") }
        let outcome = try await fixture.store.poll(deviceCode: approved.deviceCode, clientID: "tv")
        guard case .authorized(let userID, _, _) = outcome else {
            Issue.record("got \(outcome)")
            return
        }
        #expect(userID == "alice")
        #expect(try await fixture.store.poll(deviceCode: approved.deviceCode, clientID: "tv") == .invalidGrant(.alreadyRedeemed))

        let denied = try await fixture.store.issue(clientID: "tv", scopes: [])
        let denial = await #expect(throws: DeviceAuthorizationError.self) { try await fixture.store.deny(userCode: denied.userCode) }
        #expect(denial?.code == .notDurable)
        #expect(try await fixture.store.poll(deviceCode: denied.deviceCode, clientID: "tv") == .accessDenied)

        // A refusal of the decision itself comes first: an unknown code is notFound, not notDurable.
        let unknown = await #expect(throws: DeviceAuthorizationError.self) { try await fixture.store.approve(userCode: "BCDFGHJK", userID: "alice") }
        #expect(unknown?.code == .notFound)
    }

    @Test("WAITAOF: with appendonly on a server that has it, confirmed; without it (Redis < 7.2, appendonly no) notDurable, never a silent success")
    func appendOnlyFile() async throws {
        for appendOnly in [true, false] {
            let topology = try await Topology(replicas: 1, arguments: ["--appendonly", appendOnly ? "yes" : "no"])
            let fixture = try StoreFixture(url: topology.primary.url, configure: Self.durable(1, appendOnlyFile: true))
            defer { fixture.shutdown() }
            // `COMMAND INFO WAITAOF` is [nil] where the command does not exist.
            let hasWaitAOF = try await fixture.client.send("COMMAND", "INFO", "WAITAOF").array?.first?.array != nil
            let issued = try await fixture.store.issue(clientID: "tv", scopes: [])
            if hasWaitAOF && appendOnly {
                try await fixture.store.approve(userCode: issued.userCode, userID: "alice")
                let key = try #require(fixture.store.recordKey(forDeviceCode: issued.deviceCode))
                #expect(try await topology.status(key: key) == "a")
            } else {
                let error = await #expect(throws: DeviceAuthorizationError.self) { try await fixture.store.approve(userCode: issued.userCode, userID: "alice") }
                #expect(error?.code == .notDurable)
                #expect(error?.message.contains("the wait failed") == true)
            }
        }
    }

    @Test("Durability settings out of range are refused with a typed error, also a wait as long as the command timeout")
    func settingsRefused() async throws {
        let client = try RedisClient(
            configuration: {
                var configuration = try RedisClientConfiguration(url: StoreFixture.redisURL ?? "redis://127.0.0.1:6379")
                configuration.commandTimeout = .seconds(2)
                return configuration
            }())
        defer { client.shutdown() }
        let error = await #expect(throws: RedisError.self) {
            _ = try await client.send(RedisCommand("PING"), durability: try RedisDurability(replicas: 1, timeout: .seconds(2)))
        }
        #expect(error?.code == .invalidArgument)
        #expect(throws: RedisError.self) { try RedisDurability(replicas: -1) }
        #expect(throws: RedisError.self) { try RedisDurability(replicas: 1, timeout: .zero) }
        #expect(throws: RedisError.self) { try RedisDurability(replicas: 1, timeout: .seconds(61)) }
    }

    /// One round: load on a primary with one replica, the primary SIGKILLed in the middle, the
    /// replica promoted (`REPLICAOF NO ONE`, as Sentinel does). Returns the confirmed approvals
    /// and redemptions the promoted replica lost, and the number that were confirmed.
    static func killRound(durable: Bool, round: Int) async throws -> (lostApprovals: Int, doubleRedemptions: Int, confirmed: Int) {
        let topology = try await Topology(replicas: 1)
        let fixture = try StoreFixture(connections: 2, url: topology.primary.url, configure: durable ? Self.durable(1) : { _ in })
        defer { fixture.shutdown() }
        let confirmed = ConfirmedWrites()
        // One counter for the whole round: every answer ever minted differs from every other.
        let mint = LostLoginTests.Minter()
        let grantsBeforeKill = 20 + 7 * round
        let store = fixture.store
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<8 {
                group.addTask {
                    for index in 0..<1_000 {
                        // Stops at the first failure: the primary is gone.
                        guard let issued = try? await store.issue(clientID: "tv", scopes: []) else { return }
                        guard (try? await store.approve(userCode: issued.userCode, userID: "p\(worker)-\(index)")) != nil else { return }
                        confirmed.withLock { $0.approved.append((issued.userCode, issued.deviceCode)) }
                        if index % 2 == 0,
                            case .answer(let answer)? = try? await store.poll(
                                deviceCode: issued.deviceCode, clientID: "tv",
                                origin: "198.51.100.1", answer: mint.callAsFunction)
                        {
                            confirmed.withLock { $0.delivered[issued.deviceCode] = answer.body }
                        }
                    }
                }
            }
            group.addTask {
                // Hang guards only: no assertion depends on how fast anything is.
                func waitFor(_ count: Int, within limit: Duration) async throws -> Bool {
                    let deadline = ContinuousClock.now + limit
                    while confirmed.withLock({ $0.approved.count }) < count {
                        guard ContinuousClock.now < deadline else { return false }
                        try await Task.sleep(for: .milliseconds(2))
                    }
                    return true
                }
                guard try await waitFor(grantsBeforeKill, within: .seconds(60)) else {
                    throw RedisError(.timeout, "the load confirmed too few approvals to kill the primary under it")
                }
                // The replica falls behind for good (it leaves replication, as a lagging replica
                // that is then promoted would be), so what the primary takes from now on reaches no
                // replica: with durability those approvals wait (and fail when the primary dies);
                // without, they are confirmed and then lost. Ten more are waited for, for 300 ms at
                // most. (A SIGSTOPped replica is not certain to miss them: the kernel still takes
                // the stream into its socket buffer, and the replica may read it after SIGCONT.)
                let replica = try RedisClient(url: topology.replicas[0].url)
                defer { replica.shutdown() }
                _ = try await replica.send("REPLICAOF", "NO", "ONE")
                let stalled = confirmed.withLock { $0.approved.count }
                _ = try await waitFor(stalled + 10, within: durable ? .milliseconds(300) : .seconds(60))
                topology.primary.stop()
            }
            try await group.waitForAll()
        }
        let promoted = try RedisClient(url: topology.replicas[0].url)
        defer { promoted.shutdown() }
        try await promoted.send("REPLICAOF", "NO", "ONE")
        // Checked without durability: the promoted node has no replica, so a wait would only time out.
        var checking = fixture.store.configuration
        checking.durability = nil
        let survivor = DeviceCodeStore(client: promoted, configuration: checking)
        let snapshot = confirmed.withLock { $0 }
        var lost = 0
        var doubles = 0
        for grant in snapshot.approved {
            // The device polls again after the failover, from its address: the answer it got (kept
            // for the retry window) or, if it never got one, its first; never another token.
            let result = try await survivor.poll(
                deviceCode: grant.deviceCode, clientID: "tv", origin: "198.51.100.1",
                answer: mint.callAsFunction)
            switch result {
            case .answer(let answer):
                if let delivered = snapshot.delivered[grant.deviceCode], delivered != answer.body { doubles += 1 }
            case .outcome(.invalidGrant(.alreadyRedeemed)): break
            default: lost += 1
            }
        }
        return (lost, doubles, snapshot.approved.count)
    }

    @Test("10 primary kills under load, the replica left behind before each: with WAIT 1, 0 confirmed approvals lost and 0 double redemptions; without, approvals lost")
    func primaryKills() async throws {
        var total = (lost: 0, doubles: 0, confirmed: 0)
        for round in 0..<10 {
            let result = try await Self.killRound(durable: true, round: round)
            total = (total.lost + result.lostApprovals, total.doubles + result.doubleRedemptions, total.confirmed + result.confirmed)
        }
        #expect(total.confirmed >= 10 * 20)
        #expect(total.lost == 0)
        #expect(total.doubles == 0)
        var off = (lost: 0, doubles: 0, confirmed: 0)
        for round in 0..<10 {
            let result = try await Self.killRound(durable: false, round: round)
            off = (off.lost + result.lostApprovals, off.doubles + result.doubleRedemptions, off.confirmed + result.confirmed)
        }
        // The replica left behind makes the loss certain without durability: it is what the test is about.
        #expect(off.lost > 0)
        print(
            "durability: 10 primary kills with WAIT 1: \(total.confirmed) approvals confirmed, \(total.lost) lost, \(total.doubles) redeemed twice; without: \(off.confirmed) confirmed, \(off.lost) lost, \(off.doubles) redeemed twice"
        )
    }
}
