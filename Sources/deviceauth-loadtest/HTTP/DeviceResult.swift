/// What one simulated device and its user experienced; the invariants are checked over these.
struct DeviceResult: Sendable {
    var index: Int
    var scenario: Scenario
    /// The user who approved or denied (for `approve` / `deny`).
    var user: String?
    /// Whether the user's decision went through (the "Device connected" / "Request denied" page).
    var decisionAccepted = false
    var decisionError: String?
    /// Interval the server returned when the code was issued.
    var initialInterval: Int?
    /// Access tokens received.
    var tokens: [String] = []
    /// The `sub` claim of each token.
    var tokenSubjects: [String] = []
    /// The error that ended polling (`access_denied`, `expired_token`, …), if any.
    var finalError: String?
    /// Intervals carried by `slow_down` answers, in order.
    var slowDownIntervals: [Int] = []
    /// Requests that failed in transport or with a 5xx, and other surprises.
    var failures: [String] = []
    var polls = 0
}
