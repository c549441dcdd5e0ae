import Foundation
import NIOHTTP1
import RedisClient

/// What the harness does when a node or Redis fails (all off by default: every failure is a failure).
struct FaultPolicy: Sendable {
    /// A `503` with `Retry-After` is waited out and the request sent again (polls: the next poll comes
    /// after `max(interval, Retry-After)`).
    var retryUnavailable = false
    /// A request whose connection failed goes to another node, as a load balancer would.
    var failover = false
    /// After its token, an approved device polls once more; the answer must be `invalid_grant`.
    var replayProbe = false
    /// Attempts per request (and per user decision) before giving up.
    var maxAttempts = 8
    /// Longest `Retry-After` honoured, in seconds.
    var maxRetryAfter = 30

    var isActive: Bool { retryUnavailable || failover }
}

/// Client ids and user-side settings of a run.
struct SimulationSettings: Sendable {
    /// Client per scenario (their lifetimes and intervals come from the server's configuration).
    var clients: [Scenario: String]
    var userHeader: String
    var thinkTime: ClosedRange<Int>
    /// Rapid polls a misbehaving device makes after its first, accepted poll.
    var misbehavingPolls: Int = 3
    var faults = FaultPolicy()
    var refresh = RefreshSettings()
}

/// What a `refresh` device does with its refresh token.
struct RefreshSettings: Sendable {
    /// Rotations after the token, each with the newest refresh token, on random nodes.
    var rotations = 3
    /// Chance (percent) that a rotation is sent twice at once to two nodes, as a racing client would.
    /// Reuse detection then revokes the family, so that is the device's last rotation.
    var racePercent = 20
    /// Chance (percent) that a device whose family is still live at the end revokes its newest token
    /// (`POST /oauth/revoke`) and refreshes once more.
    var revokePercent = 30
    /// Chance (percent) that a device whose family is still live and that did not revoke presents its
    /// previous, already rotated token again, then refreshes with the newest.
    var replayPercent = 20
    /// Pause before each refresh, in milliseconds (a device using its access token a while).
    var pause: ClosedRange<Int> = 50...300
}
