import Foundation
import RedisClient
import Testing

@testable import DeviceAuthorization

/// The scripts' reply tokens are spelled once (the enums' raw values): each token a script returns
/// is a case the store decodes, and each case is a token its script returns.
@Suite("Store scripts: reply tokens")
struct ScriptRepliesTests {
    /// The first elements of the `return {…}` replies in a script's Lua source.
    static func returnedTokens(_ script: String) -> Set<String> {
        var tokens = Set<String>()
        var rest = Substring(script)
        while let start = rest.range(of: "return {'") {
            rest = rest[start.upperBound...]
            guard let end = rest.firstIndex(of: "'") else { break }
            tokens.insert(String(rest[..<end]))
        }
        return tokens
    }

    @Test func pollRepliesAreTheEnumsCases() {
        #expect(Self.returnedTokens(StoreScripts.poll.source) == Set(PollReply.allCases.map(\.rawValue)))
    }

    @Test func redeemRepliesAreTheEnumsCases() {
        #expect(Self.returnedTokens(StoreScripts.redeem.source) == Set(RedeemReply.allCases.map(\.rawValue)))
    }

    @Test func decideRepliesAreTheEnumsCases() {
        #expect(Self.returnedTokens(StoreScripts.decide.source) == Set(DecideReply.allCases.map(\.rawValue)))
    }

    @Test func anUnknownTokenDecodesToNil() {
        #expect(PollReply(reply: [.bulkString(Array("pending".utf8))]) == .pending)
        #expect(PollReply(reply: [.bulkString(Array("PENDING".utf8))]) == nil)
        #expect(PollReply(reply: []) == nil)
    }
}
