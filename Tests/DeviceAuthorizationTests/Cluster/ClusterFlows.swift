import Foundation
import RedisClient
import Synchronization
import Testing

@testable import DeviceAuthorization

/// What concurrent device flows saw, for the invariants of the resharding and failover tests.
final class FlowLedger: Sendable {
    struct Counts {
        /// `authorized` outcomes per grant id: the invariant is ≤ 1 each.
        var tokens: [String: Int] = [:]
        /// Flows that ended with a token.
        var completed = 0
        /// Flows that ended with a token and started after `mark` was set.
        var completedAfterMark = 0
        /// Flows whose grant was gone after a failure (an acknowledged write lost in a failover).
        var lostGrants = 0
        /// Flows whose redeeming poll failed in flight and whose grant then read as redeemed.
        var redeemedWithoutReply = 0
        /// Approvals that were acknowledged and later read as pending.
        var lostApprovals = 0
        /// Errors the store passed on, by code.
        var errors: [String: Int] = [:]
        /// Routing tags (`{tag}` of the keys) of every grant issued.
        var tags: [String] = []
    }

    let counts = Mutex(Counts())
    /// Set by the test at a point of interest (the kill); flows started after it are counted apart.
    let mark = Atomic<Bool>(false)
    /// Set by the test to let looping flows finish.
    let stop = Atomic<Bool>(false)

    func record(error: any Error) {
        let code = (error as? RedisError).map { "\($0.code)" } ?? "\(type(of: error)): \(error)"
        counts.withLock { $0.errors[code, default: 0] += 1 }
    }

    var snapshot: Counts { counts.withLock { $0 } }
}

/// One device flow as an API node runs it (issue, approve, poll until the token), retrying
/// whatever failed the way a device and a person would: a failed call is tried again, a grant
/// that disappeared is started over.
struct DeviceFlow {
    let store: DeviceCodeStore
    let ledger: FlowLedger

    /// Runs one flow to its token, starting over when the grant is lost (bounded attempts);
    /// then, with `replayUntilStopped`, keeps polling the redeemed grant (replays) until
    /// ``FlowLedger/stop``, to keep load on its slot.
    func run(pollsBeforeApproval: Int = 1, pause: Duration = .milliseconds(5), replayUntilStopped: Bool = false) async {
        for _ in 0..<50 {
            let startedAfterMark = ledger.mark.load(ordering: .relaxed)
            guard let issued = await retrying({ try await store.issue(clientID: "tv", scopes: ["s"], lifetime: .seconds(120), interval: 0) }) else { continue }
            ledger.counts.withLock { $0.tags.append(String(issued.grantID.prefix(4))) }
            switch await finish(issued, pollsBeforeApproval: pollsBeforeApproval, pause: pause) {
            case .token:
                ledger.counts.withLock {
                    $0.completed += 1
                    if startedAfterMark { $0.completedAfterMark += 1 }
                }
                if replayUntilStopped { await pollUntilStopped(issued) }
                return
            case .lost:
                ledger.counts.withLock { $0.lostGrants += 1 }
            }
        }
        Issue.record("a device flow never got its token in 50 attempts")
    }

    private enum End { case token, lost }

    private func finish(_ issued: IssuedDeviceCode, pollsBeforeApproval: Int, pause: Duration) async -> End {
        var polls = 0
        var approved = false
        var pollFailed = false
        for _ in 0..<10_000 {
            if !approved && polls >= pollsBeforeApproval {
                do {
                    try await store.approve(userCode: issued.userCode, userID: "u")
                    approved = true
                } catch let error as DeviceAuthorizationError where error.code == .alreadyDecided {
                    approved = true  // an earlier approve ran but its reply was lost
                } catch let error as DeviceAuthorizationError where error.code == .notFound {
                    return .lost
                } catch {
                    ledger.record(error: error)
                }
            }
            do {
                let outcome = try await store.poll(deviceCode: issued.deviceCode, clientID: "tv")
                polls += 1
                switch outcome {
                case .authorized(_, _, let grantID):
                    ledger.counts.withLock { $0.tokens[grantID, default: 0] += 1 }
                    return .token
                case .authorizationPending:
                    if approved {
                        // An acknowledged approval that is gone: lost with a failed primary
                        // (asynchronous replication). The person approves again.
                        ledger.counts.withLock { $0.lostApprovals += 1 }
                        approved = false
                    }
                case .invalidGrant(.alreadyRedeemed) where pollFailed:
                    ledger.counts.withLock {
                        $0.tokens[issued.grantID, default: 0] += 0
                        $0.redeemedWithoutReply += 1
                    }
                    return .token
                case .invalidGrant(.unknown):
                    return .lost
                default:
                    Issue.record("unexpected poll outcome \(outcome)")
                    return .lost
                }
            } catch {
                pollFailed = true
                ledger.record(error: error)
            }
            try? await Task.sleep(for: pause)
        }
        return .lost
    }

    /// Keeps polling a redeemed grant (load on its slot) until the test says stop.
    private func pollUntilStopped(_ issued: IssuedDeviceCode) async {
        while !ledger.stop.load(ordering: .relaxed) {
            do {
                let outcome = try await store.poll(deviceCode: issued.deviceCode, clientID: "tv")
                if case .authorized = outcome { ledger.counts.withLock { $0.tokens[issued.grantID, default: 0] += 1 } }
            } catch {
                ledger.record(error: error)
            }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    private func retrying<T>(_ body: () async throws -> T) async -> T? {
        for _ in 0..<50 {
            do { return try await body() } catch {
                ledger.record(error: error)
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
        return nil
    }
}
