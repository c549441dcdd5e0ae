import RedisClient

/// The first element of each store script's reply: one enum per script, whose raw values are the
/// Lua tokens. The scripts are written with these values (`StoreScripts` interpolates
/// ``ScriptReply/lua``), and the store decodes a reply with `init(reply:)`, so a token is spelled
/// once. A reply that is not one of them decodes to `nil` (answered as an unknown code).
protocol ScriptReply: RawRepresentable<String>, CaseIterable {}

extension ScriptReply {
    /// The token as a Lua string literal, for the scripts' `return {…}`.
    var lua: String { "'\(rawValue)'" }

    /// The reply's token, or `nil` when it is none of this script's.
    init?(reply parts: [RedisValue]) {
        guard let token = parts.first?.string else { return nil }
        self.init(rawValue: token)
    }
}

/// `StoreScripts.poll`.
enum PollReply: String, ScriptReply {
    case unknown
    case wrongClient = "wrong_client"
    /// Redeemed, retry window open: sealed answer, redeeming origin, ms since the redemption.
    case redeemed
    case replay
    case denied
    case expired
    /// Approved, with a retry window: user, scopes, MAC; the node redeems with `redeem`.
    case approved
    /// Approved and redeemed by this poll (no retry window): user, scopes, MAC.
    case authorized
    /// The new interval.
    case slowDown = "slow_down"
    case pending
}

/// `StoreScripts.redeem`.
enum RedeemReply: String, ScriptReply {
    case redeemed
    /// Another poll of the same origin redeemed first: its sealed answer.
    case taken
    case replay
    case gone
}

/// `StoreScripts.decide`.
enum DecideReply: String, ScriptReply {
    case ok
    case notFound = "not_found"
    case changed
    /// Already decided: the stored status.
    case decided
    case expired
}
