import Foundation
import RedisClient
import Synchronization
import Testing

@testable import DeviceAuthorization

@Suite("Redis Cluster: resharding under load", TestCluster.enabled)
struct ClusterReshardingTests {
    /// Slots holding grants of running flows move between primaries, key by key (so a grant's
    /// index and record sit on different nodes for a moment), while the flows issue, approve
    /// and poll: `ASK`, `TRYAGAIN` and then `MOVED` are followed, every flow gets exactly one
    /// token, and no call fails.
    @Test func flowsCompleteWhileTheirSlotsMove() async throws {
        try await StoreFixture.onCluster {
            let f = try StoreFixture()
            let admin = ClusterAdmin()
            defer {
                f.shutdown()
                admin.shutdown()
            }
            let ledger = FlowLedger()
            let flow = DeviceFlow(store: f.store, ledger: ledger)
            let flows = Task {
                await withTaskGroup(of: Void.self) { group in
                    for index in 0..<40 {
                        group.addTask {
                            if index.isMultiple(of: 2) {
                                // Long flows that then replay-poll their redeemed grant.
                                await flow.run(pollsBeforeApproval: 30, pause: .milliseconds(10), replayUntilStopped: true)
                            } else {
                                // Short flows, one after another: issues during the move.
                                while !ledger.stop.load(ordering: .relaxed) {
                                    await flow.run(pollsBeforeApproval: 3, pause: .milliseconds(10))
                                }
                            }
                        }
                    }
                }
            }
            // Wait (bounded) until the flows have issued grants, then move those grants' slots.
            for _ in 0..<500 where ledger.snapshot.tags.count < 40 { try await Task.sleep(for: .milliseconds(10)) }
            let primaries = try await admin.primaryPorts()
            #expect(primaries.count == 3)
            var bySource: [Int: Set<Int>] = [:]
            var tagOfSlot: [Int: String] = [:]
            for tag in ledger.snapshot.tags {
                let slot = RedisHashSlot.slot(of: tag)
                tagOfSlot[slot] = tag
                if let owner = try await admin.owner(of: slot, askingPort: primaries[0]) { bySource[owner, default: []].insert(slot) }
            }
            let (source, slots) = try #require(bySource.max { $0.value.count < $1.value.count })
            let target = try #require(primaries.first { $0 != source })
            for slot in slots.sorted() {
                try await admin.moveSlot(slot, from: source, to: target) {
                    try await Task.sleep(for: .milliseconds(30))  // let traffic meet the migrating slot
                }
            }
            ledger.stop.store(true, ordering: .relaxed)
            await flows.value
            let counts = ledger.snapshot
            for slot in slots {
                #expect(try await admin.owner(of: slot, askingPort: target) == target)
                // A slot no flow touched after its move is still mapped to the source until the
                // next command there (MOVED) or the next refresh; one command settles it.
                let tag = try #require(tagOfSlot[slot])
                #expect(try await f.client.send("EXISTS", "{\(tag)}:probe").int == 0)
                #expect(f.client.node(servingSlot: slot).flatMap(TestCluster.port(of:)) == target, "the client learned the move")
            }
            #expect(slots.count >= 5, "moved \(slots.count) slots holding live grants")
            #expect(counts.errors.isEmpty, "no call failed during resharding: \(counts.errors)")
            #expect(counts.lostGrants == 0 && counts.lostApprovals == 0)
            #expect(counts.completed >= 40)
            #expect(counts.tokens.count == counts.completed && counts.tokens.values.allSatisfy { $0 == 1 }, "exactly one token per grant")
            // Every grant's two keys ended up together on the node serving their slot.
            for (key, _) in try await f.dump() {
                let owner = try #require(f.client.node(servingSlot: RedisHashSlot.slot(of: key)).flatMap(TestCluster.port(of:)))
                #expect(try await admin.node(owner).send("EXISTS", key).int == 1, "\(key) is on its slot's owner")
            }
            Swift.print("resharding: moved \(slots.count) slots \(source) → \(target); \(counts.completed) flows, \(counts.tags.count) grants")
        }
    }
}
