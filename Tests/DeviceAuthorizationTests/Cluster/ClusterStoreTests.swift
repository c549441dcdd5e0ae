import Foundation
import RedisClient
import Testing

@testable import DeviceAuthorization

/// Every store operation on a Redis Cluster: the single-node suites' own test bodies, run with
/// every ``StoreFixture`` on the test cluster (``StoreFixture/onCluster(_:)``), so both
/// deployments are held to the same assertions.
@Suite("Redis Cluster: every store operation", TestCluster.enabled)
struct ClusterStoreTests {
    // issue, find, TTLs, user-code index; lookup normalisation.
    @Test func issue() async throws { try await StoreFixture.onCluster { try await LifecycleTests().issueStoresAHashedGrantWithANativeTTL() } }
    @Test func lookup() async throws { try await StoreFixture.onCluster { try await LifecycleTests().lookupNormalizesWhatPeopleType() } }
    @Test func userCodeCollisions() async throws { try await StoreFixture.onCluster { try await LifecycleTests().userCodeCollisionsRetryWithANewCode() } }

    // approve, deny, poll: authorized once, access_denied, pending, expired, invalid_grant.
    @Test func approveAndRedeemOnce() async throws { try await StoreFixture.onCluster { try await LifecycleTests().approveThenPollRedeemsExactlyOnce() } }
    @Test func deny() async throws { try await StoreFixture.onCluster { try await LifecycleTests().denyReachesTheDeviceAndIsFinal() } }
    @Test func secondApproval() async throws { try await StoreFixture.onCluster { try await LifecycleTests().secondApprovalByAnyoneFailsAndChangesNothing() } }
    @Test func wrongClientAndMalformedCodes() async throws {
        try await StoreFixture.onCluster { try await LifecycleTests().wrongClientAndMalformedCodesGetInvalidGrantAndChangeNothing() }
    }
    @Test func ttlExpiry() async throws { try await StoreFixture.onCluster { try await LifecycleTests().expiryThenGraceThenGone() } }

    // The reference model: find, checkRateLimit, updatePollTime, authorize/deny on DeviceCode.
    @Test func referenceModelMethods() async throws { try await StoreFixture.onCluster { try await LifecycleTests().referenceModelMethodsAreAtomicToo() } }

    // slow_down and the rate limit.
    @Test func slowDown() async throws { try await StoreFixture.onCluster { try await SlowDownTests().earlyPollsGetSlowDownWithTenFifteenTwenty() } }
    @Test func onTimePolls() async throws { try await StoreFixture.onCluster { try await SlowDownTests().onTimePollsNeverGetSlowDown() } }

    // Concurrency: redemption exactly once, one decision, no lost interval increase.
    @Test func redemptionExactlyOnceUnderConcurrency() async throws {
        try await StoreFixture.onCluster { try await RacesTests().twoHundredConcurrentPollsThroughFourNodesRedeemOnce() }
    }
    @Test func approveDenyRace() async throws { try await StoreFixture.onCluster { try await RacesTests().approveAndDenyRacingOnOneCodeHaveOneWinnerTheDeviceSees() } }
    @Test func intervalIncreasesUnderConcurrency() async throws { try await StoreFixture.onCluster { try await RacesTests().concurrentEarlyPollsNeverLoseAnIntervalIncrease() } }

    // Secrets at rest and brute force ({bf} counters live in one slot of their own).
    @Test func noSecretsAtRest() async throws { try await StoreFixture.onCluster { try await AtRestAndBruteForceTests().redisNeverHoldsADeviceCodeOrUserCode() } }
    @Test func bruteForceLockout() async throws { try await StoreFixture.onCluster { try await AtRestAndBruteForceTests().failedLookupsLockOutACallerWithoutResetOnSuccess() } }
    @Test func globalBruteForceBudget() async throws { try await StoreFixture.onCluster { try await AtRestAndBruteForceTests().theGlobalBudgetStopsDistributedGuessing() } }

    // Exact guess limits: the {bf} counters and the grant are in different slots (two scripts).
    @Test func exactCallerLimit() async throws {
        try await StoreFixture.onCluster { try await ExactLimitsTests().perCallerLimitTenOf300ConcurrentWrongCodesAreAnsweredAndCorrectOnesPassFree() }
    }
    @Test func exactUserLimit() async throws { try await StoreFixture.onCluster { try await ExactLimitsTests().perUserLimitTenOf300ConcurrentWrongCodesFrom300Addresses() } }
    @Test func exactGlobalLimit() async throws { try await StoreFixture.onCluster { try await ExactLimitsTests().globalLimitTenOf300ConcurrentWrongCodesFrom300Addresses() } }

    // Forged records: the approval MAC is checked whatever node and slot.
    @Test func forgedApproval() async throws { try await StoreFixture.onCluster { try await ForgedRecordTests().aPendingRecordSetToApprovedWithoutTheSecretGivesNoToken() } }
    @Test func forgedFields() async throws { try await StoreFixture.onCluster { try await ForgedRecordTests().changedScopesUserOrClientOnAnApprovedRecordGiveNoToken() } }

    // Refresh tokens: one slot per family ({r<family>}), rotation once across nodes, forged records.
    @Test func refreshRotationOnce() async throws { try await StoreFixture.onCluster { try await RefreshStoreTests().rotationExactlyOnceAcrossNodes() } }
    @Test func refreshOneSlotNothingPlaintext() async throws { try await StoreFixture.onCluster { try await RefreshStoreTests().oneSlotNothingPlaintext() } }
    @Test func refreshForgedFamily() async throws { try await StoreFixture.onCluster { try await RefreshStoreTests().forgedFamily() } }

    // Operations: the eviction-policy check looks at every primary.
    @Test func evictionPolicyCheck() async throws { try await StoreFixture.onCluster { try await RedisConfigurationTests().warnsWhenTheEvictionPolicyCanDropDeviceCodes() } }

    @Test func grantsSpreadOverEveryPrimaryAndEachGrantStaysInOneSlot() async throws {
        try await StoreFixture.onCluster {
            let f = try StoreFixture()
            defer { f.shutdown() }
            for _ in 0..<30 { _ = try await f.store.issue(clientID: "tv", scopes: []) }
            var nodes = Set<Int>()
            var slotsPerTag: [String: Set<Int>] = [:]
            for (key, _) in try await f.dump() {
                let slot = RedisHashSlot.slot(of: key)
                if let port = f.client.node(servingSlot: slot).flatMap(TestCluster.port(of:)) { nodes.insert(port) }
                let tag = key.split(separator: "{").dropFirst().first?.split(separator: "}").first.map(String.init) ?? key
                slotsPerTag[tag, default: []].insert(slot)
            }
            #expect(nodes.count == 3, "30 grants land on all three primaries")
            #expect(slotsPerTag.count >= 20 && slotsPerTag.values.allSatisfy { $0.count == 1 })
        }
    }
}
