import Foundation
import RedisClient
import Synchronization
import Testing

@testable import DeviceAuthorization

#if canImport(Glibc)
    import Glibc
#endif

@Suite("Redis Cluster: failover under load", TestCluster.enabled)
struct ClusterFailoverTests {
    /// A primary is SIGKILLed while 48 tasks run device flows; its replica is promoted (node
    /// timeout 1 s in the test cluster). Flows complete, the same client re-routes to the new
    /// primary without a restart, and no grant is redeemed twice. Commands in flight at the kill
    /// fail with `connectionClosed` (never re-sent); the flows retry them as a device would.
    ///
    /// This test leaves the cluster with a dead node, so `make test-cluster` runs it last.
    @Test func flowsCompleteAcrossAPrimaryKillAndNoGrantIsRedeemedTwice() async throws {
        let client = try TestCluster.client { $0.clusterRetryTimeout = .seconds(30) }
        let admin = ClusterAdmin()
        defer {
            client.shutdown()
            admin.shutdown()
        }
        let configuration = DeviceCodeStoreConfiguration(
            keyPrefix: "fo" + UUID().uuidString.prefix(6).lowercased(),
            secret: Array("a-test-secret-of-at-least-32-bytes!!".utf8))
        let store = DeviceCodeStore(client: client, configuration: configuration)
        let ledger = FlowLedger()
        let flow = DeviceFlow(store: store, ledger: ledger)
        let flows = Task {
            await withTaskGroup(of: Void.self) { group in
                for _ in 0..<48 {
                    group.addTask {
                        // Keep running flows until the test says stop (after the failover).
                        while !ledger.stop.load(ordering: .relaxed) {
                            await flow.run(pollsBeforeApproval: 2, pause: .milliseconds(5))
                        }
                    }
                }
            }
        }
        // Kill a primary once flows are well under way.
        for _ in 0..<1000 where ledger.snapshot.completed < 100 { try await Task.sleep(for: .milliseconds(10)) }
        let primaries = try await admin.primaryPorts()
        let victim = try #require(primaries.first)
        let survivor = try #require(primaries.last)
        let victimSlot = try #require((0..<RedisHashSlot.count).first { client.node(servingSlot: $0).flatMap(TestCluster.port(of:)) == victim })
        let pid = try await admin.pid(victim)
        ledger.mark.store(true, ordering: .relaxed)
        let completedAtKill = ledger.snapshot.completed
        #expect(kill(pid, SIGKILL) == 0)
        let newOwner = try await admin.waitForFailover(of: victimSlot, oldOwner: victim, dead: [victim])
        // Flows go on after the promotion: wait (bounded) for a good number of complete rounds.
        for _ in 0..<3000 where ledger.snapshot.completed < completedAtKill + 300 { try await Task.sleep(for: .milliseconds(10)) }
        ledger.stop.store(true, ordering: .relaxed)
        await flows.value

        let counts = ledger.snapshot
        #expect(counts.tokens.values.allSatisfy { $0 <= 1 }, "no grant redeemed twice")
        #expect(counts.completedAfterMark >= 200, "flows started after the kill completed: \(counts.completedAfterMark)")
        // The same client now routes the victim's slots to the promoted replica.
        #expect(client.node(servingSlot: victimSlot).flatMap(TestCluster.port(of:)) == newOwner)
        #expect(newOwner != victim && newOwner != survivor)
        let key = (0..<100_000).lazy.map { "after-failover-\($0)" }.first { RedisHashSlot.slot(of: $0) == victimSlot }
        let probe = try #require(key)
        try await client.send("SET", probe, "ok")
        #expect(try await admin.node(newOwner).send("GET", probe).string == "ok")
        // Only commands in flight at the kill may fail, and only as connection losses.
        let allowed: Set<String> = ["\(RedisError.Code.connectionClosed)", "\(RedisError.Code.timeout)"]
        #expect(Set(counts.errors.keys).isSubset(of: allowed), "errors: \(counts.errors)")
        Swift.print(
            "failover: killed primary \(victim) (pid \(pid)); replica \(newOwner) promoted; flows: \(counts.completed) complete (\(counts.completedAfterMark) started after the kill), errors \(counts.errors), redeemed-but-reply-lost \(counts.redeemedWithoutReply), lost grants \(counts.lostGrants), lost approvals \(counts.lostApprovals)"
        )
    }
}
