import RedisClient
import Testing

@testable import deviceauth_loadtest

/// The load test is how we prove the system correct under load, so its checks must be able to fail:
/// each test hands `Invariants.check` the observations of an honest run, breaks one of them the way a
/// broken server would, and expects exactly that invariant to fail.
@Suite("Load-test invariants")
struct InvariantsTests {
    /// Devices of every scenario, as an honest server leaves them (initial interval 5 s).
    static func honestRun() -> [DeviceResult] {
        var approved = DeviceResult(index: 0, scenario: .approve, user: "user-0")
        approved.decisionAccepted = true
        approved.tokens = ["token-a"]
        approved.tokenSubjects = ["user-0"]
        var denied = DeviceResult(index: 1, scenario: .deny, user: "user-1")
        denied.decisionAccepted = true
        denied.finalError = "access_denied"
        var abandoned = DeviceResult(index: 2, scenario: .abandon)
        abandoned.finalError = "expired_token"
        var misbehaving = DeviceResult(index: 3, scenario: .misbehave)
        misbehaving.initialInterval = 5
        misbehaving.slowDownIntervals = [10, 15, 20]
        misbehaving.finalError = "expired_token"
        return [approved, denied, abandoned, misbehaving]
    }

    static func failed(_ results: [DeviceResult], replayedAfter: Double = 0) -> [String] {
        Invariants.check(results, replayedBefore: 0, replayedAfter: replayedAfter).checks.filter { !$0.passed }.map(\.name)
    }

    @Test("an honest run passes every invariant")
    func honest() {
        let checks = Invariants.check(Self.honestRun(), replayedBefore: 3, replayedAfter: 3).checks
        #expect(checks.count >= 6)
        let failed = checks.filter { !$0.passed }
        #expect(failed.isEmpty, "\(failed)")
    }

    @Test("a second token for an approved device fails")
    func twoTokens() {
        var run = Self.honestRun()
        run[0].tokens.append("token-b")
        run[0].tokenSubjects.append("user-0")
        #expect(Self.failed(run) == ["approved devices got exactly one token naming the approving user"])
    }

    @Test("a token naming another user fails")
    func wrongSubject() {
        var run = Self.honestRun()
        run[0].tokenSubjects = ["mallory"]
        #expect(Self.failed(run) == ["approved devices got exactly one token naming the approving user"])
    }

    @Test("a token for a denied device fails twice: it got a token and no access_denied")
    func deniedGotToken() {
        var run = Self.honestRun()
        run[1].tokens = ["token-x"]
        run[1].finalError = nil
        #expect(Self.failed(run) == ["no denied, abandoned or misbehaving device got a token", "denied devices got access_denied"])
    }

    @Test("an abandoned device that does not end with expired_token fails")
    func abandonedWrongEnd() {
        var run = Self.honestRun()
        run[2].finalError = "invalid_grant"
        #expect(Self.failed(run) == ["abandoned devices got expired_token"])
    }

    @Test("slow_down intervals not 5 s apart fail, and a well-behaved device told slow_down fails")
    func slowDown() {
        var run = Self.honestRun()
        run[3].slowDownIntervals = [10, 12]
        #expect(Self.failed(run) == ["misbehaving devices saw slow_down, intervals 5 s apart"])
        run = Self.honestRun()
        run[3].slowDownIntervals = []
        #expect(Self.failed(run) == ["misbehaving devices saw slow_down, intervals 5 s apart"])
        run = Self.honestRun()
        run[0].slowDownIntervals = [10]
        #expect(Self.failed(run) == ["well-behaved devices were never told slow_down"])
    }

    @Test("a replay counted by the servers fails; unreadable counters fail")
    func replays() {
        #expect(Self.failed(Self.honestRun(), replayedAfter: 1) == ["no code redeemed twice (deviceauth_grants_replayed_total, all nodes)"])
        let unread = Invariants.check(Self.honestRun(), replayedBefore: nil, replayedAfter: nil).checks.filter { !$0.passed }
        #expect(unread.count == 1)
    }

    @Test("a transport error or 5xx fails")
    func failures() {
        var run = Self.honestRun()
        run[2].failures = ["POST /oauth/token: 500"]
        #expect(Self.failed(run) == ["no transport errors, 5xx or unanswered devices"])
    }

    // MARK: - Refresh devices (issue 19)

    static let refreshWorks = "refresh devices got a refresh token; the newest token of a live family always rotated to a new pair naming the user"
    static let oneLiveToken =
        "no family ever has two live refresh tokens: of a racing pair at most one rotated; a rotated token presented again "
        + "was refused (invalid_grant) and its family died with it (the newest token refused too)"
    static let revocation = "revocation (POST /oauth/revoke) answered 200 and the next refresh was refused with invalid_grant"
    static let reuseCount =
        "every rotated refresh token the harness presented again was detected as reuse, and nothing else was "
        + "(deviceauth_refresh_reuse_detected_total, all nodes)"
    static let transport = "no transport errors, 5xx or unanswered devices"

    /// The honest run plus three refresh devices as an honest server leaves them: one that raced (one winner, the
    /// family then dead), one that revoked, one that presented its rotated token again. Two reuses in all.
    static func honestRefreshRun() -> [DeviceResult] {
        func device(_ index: Int, _ record: RefreshRecord) -> DeviceResult {
            var device = DeviceResult(index: index, scenario: .refresh, user: "user-\(index)")
            device.decisionAccepted = true
            device.tokens = ["token-\(index)"]
            device.tokenSubjects = ["user-\(index)"]
            device.refresh = record
            return device
        }
        var raced = RefreshRecord(issued: true, rotations: 1)
        raced.races = [.init(answers: ["invalid_grant", "rotated"], after: "invalid_grant")]
        var revoked = RefreshRecord(issued: true, rotations: 3)
        revoked.revocationStatus = 200
        revoked.afterRevocation = "invalid_grant"
        var replayed = RefreshRecord(issued: true, rotations: 3)
        replayed.replay = "invalid_grant"
        replayed.afterReplay = "invalid_grant"
        return honestRun() + [device(4, raced), device(5, revoked), device(6, replayed)]
    }

    static func failedChecks(_ results: [DeviceResult], reusesCounted: Double? = 2, faults: FaultExpectations = FaultExpectations()) -> [String] {
        Invariants.check(results, replayedBefore: 0, replayedAfter: 0, faults: faults, reusesCounted: reusesCounted).checks.filter { !$0.passed }.map(\.name)
    }

    @Test("an honest run with refresh devices passes every invariant, the refresh ones among them")
    func honestRefresh() {
        let checks = Invariants.check(Self.honestRefreshRun(), replayedBefore: 0, replayedAfter: 0, reusesCounted: 2).checks
        for name in [Self.refreshWorks, Self.oneLiveToken, Self.revocation, Self.reuseCount] {
            #expect(checks.contains { $0.name == name && $0.passed }, "\(name) missing or failed: \(checks)")
        }
        #expect(checks.filter { !$0.passed }.isEmpty, "\(checks.filter { !$0.passed })")
        let summary = RefreshSummary(Self.honestRefreshRun(), reuseDetections: 2)
        #expect(summary.devices == 3 && summary.rotations == 8 && summary.racingPairsOneWinner == 1 && summary.familiesDeadAfterRace == 1)
        #expect(summary.revocations == 1 && summary.refusedAfterRevocation == 1 && summary.replaysRefused == 1 && summary.expectedReuseDetections == 2)
        // Without refresh devices there is no refresh check at all.
        let plain = Invariants.check(Self.honestRun(), replayedBefore: 0, replayedAfter: 0, reusesCounted: 0).checks.map(\.name)
        #expect(!plain.contains(Self.oneLiveToken) && !plain.contains(Self.reuseCount))
    }

    @Test("both refreshes of a racing pair rotating fails: two live refresh tokens in one family")
    func racingPairTwoWinners() {
        var run = Self.honestRefreshRun()
        run[4].refresh?.races = [.init(answers: ["rotated", "rotated"], after: "invalid_grant")]
        #expect(Self.failedChecks(run, reusesCounted: 1) == [Self.oneLiveToken])
    }

    @Test("the newest token rotating after a racing pair fails: the family survived the reuse")
    func familySurvivesRace() {
        var run = Self.honestRefreshRun()
        run[4].refresh?.races[0].after = "rotated"
        #expect(Self.failedChecks(run) == [Self.oneLiveToken])
        // Refused, but not with invalid_grant (RFC 6749 §5.2).
        run[4].refresh?.races[0].after = "invalid_request"
        #expect(Self.failedChecks(run) == [Self.oneLiveToken])
        // The loser refused with another error.
        run = Self.honestRefreshRun()
        run[4].refresh?.races[0].answers = ["rotated", "invalid_client"]
        #expect(Self.failedChecks(run, reusesCounted: 1) == [Self.oneLiveToken])
    }

    @Test("a rotated token that rotates again fails, and so does a family that lives on after its reuse")
    func replayOfRotatedToken() {
        var run = Self.honestRefreshRun()
        run[6].refresh?.replay = "rotated"
        #expect(Self.failedChecks(run, reusesCounted: 1) == [Self.oneLiveToken])
        run = Self.honestRefreshRun()
        run[6].refresh?.afterReplay = "rotated"
        #expect(Self.failedChecks(run) == [Self.oneLiveToken])
    }

    @Test("a refresh after a revocation that is not refused with invalid_grant fails; a revocation that is not 200 fails")
    func refreshAfterRevocation() {
        var run = Self.honestRefreshRun()
        run[5].refresh?.afterRevocation = "rotated"
        #expect(Self.failedChecks(run) == [Self.revocation])
        run[5].refresh?.afterRevocation = "invalid_request"
        #expect(Self.failedChecks(run) == [Self.revocation])
        run = Self.honestRefreshRun()
        run[5].refresh?.revocationStatus = 401
        #expect(Self.failedChecks(run) == [Self.revocation])
    }

    @Test("a live family's newest token refused, no refresh token, or a new access token for another user fails")
    func liveFamilyRefused() {
        var run = Self.honestRefreshRun()
        run[5].refresh?.unexpectedRefusals = ["rotation 2: invalid_grant the refresh token is not valid for this client"]
        #expect(Self.failedChecks(run) == [Self.refreshWorks])
        run = Self.honestRefreshRun()
        run[5].refresh?.issued = false
        #expect(Self.failedChecks(run) == [Self.refreshWorks])
        run = Self.honestRefreshRun()
        run[5].refresh?.malformed = ["rotation 1: access token sub mallory ≠ user-5"]
        #expect(Self.failedChecks(run) == [Self.refreshWorks])
        // Neither of a racing pair rotated, both answered: the family was lost.
        run = Self.honestRefreshRun()
        run[4].refresh?.races = [.init(answers: ["invalid_grant", "invalid_grant"], after: "invalid_grant")]
        #expect(Self.failedChecks(run, reusesCounted: 1) == [Self.refreshWorks])
        // A refresh device without its token fails like an approved one.
        run = Self.honestRefreshRun()
        run[4].tokens = []
        run[4].refresh = nil
        #expect(Self.failedChecks(run, reusesCounted: 1) == ["approved devices got exactly one token naming the approving user"])
    }

    @Test("reuse detections counted by the nodes other than the harness's own re-presentations fail")
    func reuseDetections() {
        #expect(Self.failedChecks(Self.honestRefreshRun(), reusesCounted: 3) == [Self.reuseCount])
        #expect(Self.failedChecks(Self.honestRefreshRun(), reusesCounted: 1) == [Self.reuseCount])
        #expect(Self.failedChecks(Self.honestRefreshRun(), reusesCounted: 2).isEmpty)
        // Under faults a lost answer may have rotated: the count is reported, not compared.
        let faults = FaultExpectations(policy: FaultPolicy(retryUnavailable: true, failover: true))
        let checks = Invariants.check(Self.honestRefreshRun(), replayedBefore: 0, replayedAfter: 0, faults: faults, reusesCounted: 7).checks
        #expect(checks.filter { !$0.passed }.isEmpty, "\(checks.filter { !$0.passed })")
    }

    @Test("a 5xx or transport error on a refresh fails; a lost answer under faults does not")
    func refreshFailures() {
        var run = Self.honestRefreshRun()
        run[4].failures = ["refresh: 500 internal"]
        #expect(Self.failedChecks(run) == [Self.transport])
        run = Self.honestRefreshRun()
        run[4].refresh?.races = [.init(answers: ["no answer", "invalid_grant"], after: nil)]
        run[4].refresh?.withoutAnswer = 1
        let faults = FaultExpectations(policy: FaultPolicy(retryUnavailable: true, failover: true))
        #expect(Self.failedChecks(run, reusesCounted: 1, faults: faults).isEmpty)
    }

    @Test("the scenario mix parses weights, rejects nonsense and assigns exact shares")
    func mix() throws {
        #expect(ScenarioMix(parsing: "approve=6,deny=2,abandon=1,misbehave=1") != nil)
        #expect(ScenarioMix(parsing: "approve=50,refresh=20,deny=10,abandon=10,misbehave=10")?.weights.map { $0.0 } == [.approve, .refresh, .deny, .abandon, .misbehave])
        #expect(ScenarioMix(parsing: "approve=0") == nil)
        #expect(ScenarioMix(parsing: "teleport=3") == nil)
        #expect(ScenarioMix(parsing: "approve=-1,deny=2") == nil)
        let mix = try #require(ScenarioMix(parsing: "approve=60,deny=15,abandon=10,misbehave=15"))
        var rng = SplitMix64(seed: 42)
        let scenarios = mix.assign(count: 1000, rng: &rng)
        #expect(scenarios.filter { $0 == .approve }.count == 600)
        #expect(scenarios.filter { $0 == .deny }.count == 150)
        #expect(scenarios.filter { $0 == .abandon }.count == 100)
        #expect(scenarios.filter { $0 == .misbehave }.count == 150)
    }
}
