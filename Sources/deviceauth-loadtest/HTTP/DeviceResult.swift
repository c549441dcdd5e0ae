/// What one simulated device and its user experienced; the invariants are checked over these.
struct DeviceResult: Sendable {
    var index: Int
    var scenario: Scenario
    /// The user who approved or denied (for `approve` / `deny`).
    var user: String?
    /// Whether the user's decision went through (the "Device connected" / "Request denied" page).
    var decisionAccepted = false
    var decisionError: String?
    /// When the harness learned that the decision was stored (the page, or "already used" after a lost answer).
    var decisionAt: ContinuousClock.Instant?
    /// When the device received its codes.
    var issuedAt: ContinuousClock.Instant?
    /// Interval the server returned when the code was issued.
    var initialInterval: Int?
    /// Access tokens received.
    var tokens: [String] = []
    /// The `sub` claim of each token.
    var tokenSubjects: [String] = []
    /// The error that ended polling (`access_denied`, `expired_token`, …), if any.
    var finalError: String?
    /// Its `error_description` (tells an already redeemed code from an unknown one).
    var finalErrorDescription: String?
    /// Intervals carried by `slow_down` answers, in order.
    var slowDownIntervals: [Int] = []
    /// Requests that failed in transport or with a 5xx, and other surprises.
    var failures: [String] = []
    var polls = 0

    // Faults (with --retry-unavailable / --failover / --replay-probe).
    /// RFC-shaped `503 temporarily_unavailable` answers (each waited out and retried).
    var unavailable = 0
    /// Requests re-sent to another node after a failed connection or a lost answer.
    var failovers = 0
    /// `device_authorization` requests re-sent after a lost answer (each may have left an unused grant that expires).
    var resentIssues = 0
    /// Token polls that may have run in Redis without the device learning the answer (`503`, lost answer).
    var pollsWithoutAnswer = 0
    /// Set when such a poll came before a `slow_down` (the unseen poll counted as the previous one).
    var slowDownAfterUnansweredPoll = false
    /// User decisions submitted again after a lost answer, once the page still showed the request pending.
    var resubmittedDecisions = 0
    /// The answer to polling once more after the token (`--replay-probe`): `invalid_grant` is right, a token is a double redemption.
    var probeAnswer: String?
    var probeTokens = 0
    /// Probes answered with the device's own token again (the server's retry window for a lost answer).
    var probeRedeliveries = 0
    /// The device code (kept for approved devices, for the probe after the run).
    var deviceCode: String?
    /// The answer to one more poll after the whole run (after every fault): `invalid_grant` is right.
    var finalProbeAnswer: String?
    /// Probe polls re-sent after a `503` or lost answer (each may have counted a replay on the server).
    var probeRetries = 0

    /// The refresh token that came with the token (scenario `refresh`). Kept in memory only: never reported.
    var refreshToken: String?
    /// What the device's refresh token did (scenario `refresh`, once it had its token).
    var refresh: RefreshRecord?
}

/// One device's refresh-token story: rotations, racing pairs, a revocation or a replay, and every answer.
///
/// Answers are written as `rotated` (200 with a new pair), the RFC 6749 error code (`invalid_grant`, …),
/// or `no answer` (a `503` or a lost answer under `--fault-tolerant`: the story stops there, since the
/// refresh may have run).
struct RefreshRecord: Sendable, Codable, Equatable {
    /// Two refreshes of one token sent at once to two nodes, and what came after.
    struct RacingPair: Sendable, Codable, Equatable {
        /// The answer to each of the two.
        var answers: [String]
        /// The answer to the refresh with the newest token right after the pair (the winner's token,
        /// or the raced one if none won): the loser re-presented a rotated token, so it must be refused.
        var after: String?

        var winners: Int { answers.filter { $0 == RefreshRecord.rotated }.count }
    }

    static let rotated = "rotated"
    static let noAnswer = "no answer"

    /// Whether the first token answer carried a `refresh_token`.
    var issued = false
    /// Refreshes of the newest token, one at a time, that gave a new pair.
    var rotations = 0
    /// Refreshes of the newest token of a live family that were refused (`"rotation 2: invalid_grant …"`): a lost family.
    var unexpectedRefusals: [String] = []
    /// Rotations whose answer was not a new pair naming the user (no `refresh_token`, the same one again, another `sub`).
    var malformed: [String] = []
    var races: [RacingPair] = []
    /// `POST /oauth/revoke` of the newest token: its HTTP status (`nil`: not revoked; `0`: no answer).
    var revocationStatus: Int?
    /// The answer to the refresh with the revoked token.
    var afterRevocation: String?
    /// The answer to presenting the previous, already rotated token again (one at a time).
    var replay: String?
    /// The answer to the refresh with the newest token right after that replay.
    var afterReplay: String?
    /// Refreshes (or revocations) whose answer never came (fault runs); the story stopped there.
    var withoutAnswer = 0
    /// Refused refreshes by RFC 6749 error code, every step counted.
    var refusals: [String: Int] = [:]
    /// Every step in order, for the report (`rotated`, `race rotated+invalid_grant`, `after race: invalid_grant`, …).
    var events: [String] = []
}
