import Foundation
import RedisClient
import Testing

@testable import DeviceAuthorization

@Suite("Property: random operations and clock steps")
struct PropertyTests {
    enum Operation: CaseIterable { case approve, deny, poll, wait }

    @Test func aCodeLeavesPendingOnceAndIssuesAtMostOneToken() async throws {
        let f = try StoreFixture { $0.gracePeriod = .seconds(60) }
        defer { f.shutdown() }
        let other = try f.anotherNode()
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<12 {
            let grants = try await (0..<3).asyncMap { _ in
                try await f.store.issue(clientID: "tv", scopes: [], lifetime: .milliseconds(Int.random(in: 150...500, using: &generator)), interval: 0)
            }
            var firstDecision: [String: DeviceCodeStatus] = [:]
            var tokens: [String: Int] = [:]
            var approvedBy: [String: String] = [:]
            for step in 0..<16 {
                let grant = grants.randomElement(using: &generator)!
                let node = Bool.random(using: &generator) ? f.store : other
                switch Operation.allCases.randomElement(using: &generator)! {
                case .approve:
                    if (try? await node.approve(userCode: grant.userCode, userID: "user\(step)")) != nil {
                        #expect(firstDecision[grant.grantID] == nil, "a second decision succeeded")
                        firstDecision[grant.grantID] = .authorized
                        approvedBy[grant.grantID] = "user\(step)"
                    }
                case .deny:
                    if (try? await node.deny(userCode: grant.userCode)) != nil {
                        #expect(firstDecision[grant.grantID] == nil, "a second decision succeeded")
                        firstDecision[grant.grantID] = .denied
                    }
                case .poll:
                    let outcome = try await node.poll(deviceCode: grant.deviceCode, clientID: "tv")
                    switch outcome {
                    case .authorized(let user, _, _):
                        tokens[grant.grantID, default: 0] += 1
                        #expect(firstDecision[grant.grantID] == .authorized && approvedBy[grant.grantID] == user)
                    case .accessDenied:
                        #expect(firstDecision[grant.grantID] == .denied)
                    case .authorizationPending, .slowDown:
                        #expect(firstDecision[grant.grantID] == nil)
                    case .expiredToken:
                        #expect(firstDecision[grant.grantID] != .denied)
                        if firstDecision[grant.grantID] == nil { firstDecision[grant.grantID] = .expired }
                    case .invalidGrant(let reason):
                        #expect(reason == .alreadyRedeemed && tokens[grant.grantID, default: 0] == 1)
                    }
                case .wait:
                    try await Task.sleep(for: .milliseconds(Int.random(in: 20...200, using: &generator)))
                }
                // The stored state agrees with the first decision, whatever came after it.
                if let decided = firstDecision[grant.grantID], decided != .expired {
                    #expect(try await f.store.find(deviceCode: grant.deviceCode)?.status == decided)
                }
            }
            #expect(tokens.values.allSatisfy { $0 <= 1 }, "a token is issued at most once")
        }
    }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var result: [T] = []
        for element in self { result.append(try await transform(element)) }
        return result
    }
}
