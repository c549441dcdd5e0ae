@testable import deviceauth_loadtest
import Testing

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

    @Test("the scenario mix parses weights, rejects nonsense and assigns exact shares")
    func mix() throws {
        #expect(ScenarioMix(parsing: "approve=6,deny=2,abandon=1,misbehave=1") != nil)
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
