import Foundation
import NIOHTTP1
import RedisClient

/// Refresh tokens in a simulated flow: rotate, replay a used one, revoke.
extension DeviceSimulation {
    // MARK: - Refresh tokens

    /// The answer to one refresh (RFC 6749 §6).
    enum RefreshAnswer: Sendable {
        case rotated(accessToken: String, refreshToken: String)
        /// A 4xx with an RFC 6749 error.
        case refused(String, description: String?)
        /// A 200 that is not a new pair.
        case malformed(String)
        /// An RFC-shaped `503` or a lost answer (fault runs): the refresh may have run.
        case noAnswer
        /// A transport error, a 5xx or a body that is no OAuth answer (recorded in `failures`).
        case failed(String)

        var label: String {
            switch self {
            case .rotated: RefreshRecord.rotated
            case .refused(let error, _): error
            case .malformed: "malformed 200"
            case .noAnswer: RefreshRecord.noAnswer
            case .failed: "failed"
            }
        }

        var isUnanswered: Bool {
            switch self {
            case .noAnswer, .failed: true
            default: false
            }
        }
    }

    /// One refresh, never re-sent once it may have reached a server: a second send of a token that did
    /// rotate is a reuse and would revoke the family (only a connection that could not be made goes to
    /// another node). Takes its own generator and tally, so two can race.
    func refreshRequest(
        _ token: String, clientID: String, endpoint: String, node: String? = nil,
        seed: UInt64
    ) async -> (answer: RefreshAnswer, tally: Tally) {
        var rng = SplitMix64(seed: seed)
        var tally = Tally()
        let outcome = await send(
            endpoint: endpoint, method: .POST, path: "/oauth/token",
            form: [("grant_type", "refresh_token"), ("refresh_token", token), ("client_id", clientID)],
            retryUnavailable: false, resendLostAnswer: false, tally: &tally, rng: &rng, node: node
        ) { response in
            response.status == 200 ? "200 rotated" : "\(response.status) \(response.json?["error"] as? String ?? "?")"
        }
        return (refreshAnswer(outcome, presented: token), tally)
    }

    func refreshAnswer(_ outcome: SendOutcome, presented: String) -> RefreshAnswer {
        let response: SimpleResponse
        switch outcome {
        case .response(let answered): response = answered
        case .failed(let failure):
            if policy.failover, case .ambiguous = failure { return .noAnswer }
            return .failed("refresh: transport error (\(failure.message.prefix(120)))")
        }
        if response.status == 503 && policy.retryUnavailable { return .noAnswer }
        if response.status >= 500 { return .failed("refresh: \(response.status) \(response.body.prefix(120))") }
        guard let json = response.json else { return .failed("refresh: \(response.status), not JSON") }
        if response.status == 200 {
            guard let access = json["access_token"] as? String, let refresh = json["refresh_token"] as? String else {
                return .malformed("200 without access_token and refresh_token")
            }
            return refresh == presented ? .malformed("200 with the presented refresh token again") : .rotated(accessToken: access, refreshToken: refresh)
        }
        guard let error = json["error"] as? String else { return .failed("refresh: \(response.status) without error") }
        return .refused(error, description: json["error_description"] as? String)
    }

    /// One refresh whose answer only needs recording (after a race, a revocation or a replay):
    /// sent, absorbed into `result`, and counted when it rotated.
    func probeRefresh(
        _ token: String, clientID: String, endpoint: String, into result: inout DeviceResult,
        rng: inout SplitMix64
    ) async -> RefreshAnswer {
        let (answer, tally) = await refreshRequest(token, clientID: clientID, endpoint: endpoint, seed: rng.next())
        absorb(tally, answer, into: &result)
        if case .rotated = answer { client.recorder.countRefresh(rotations: 1) }
        return answer
    }

    func absorb(_ tally: Tally, _ answer: RefreshAnswer?, into result: inout DeviceResult) {
        result.unavailable += tally.unavailable
        result.failovers += tally.failovers
        result.failures += tally.problems
        if case .failed(let message) = answer { result.failures.append(message) }
        if case .noAnswer = answer { result.refresh?.withoutAnswer += 1 }
        if case .refused(let error, _) = answer { result.refresh?.refusals[error, default: 0] += 1 }
    }

    /// A new access token must name the approving user: records it when it does not.
    static func checkSubject(_ accessToken: String, step: String, result: inout DeviceResult) {
        let subject = JWT.subject(of: accessToken)
        if subject != result.user { result.refresh?.malformed.append("\(step): access token sub \(subject ?? "unreadable") ≠ \(result.user ?? "nil")") }
    }

    func pause(_ rng: inout SplitMix64) async {
        let range = settings.refresh.pause
        try? await Task.sleep(for: .milliseconds(range.lowerBound + Int(rng.next() % UInt64(range.count))))
    }

    /// The device keeps using its refresh token: rotations with the newest token on random nodes, some
    /// sent twice at once to two nodes (after which reuse detection must have killed the family), and
    /// for a live family at the end a revocation or a replay of the rotated token, each followed by
    /// a refresh that must be refused. Stops where an answer was lost: the family's state is then unknown.
    func refreshes(clientID: String, result: inout DeviceResult, rng: inout SplitMix64) async {
        let plan = settings.refresh
        let recorder = client.recorder
        result.refresh = RefreshRecord()
        guard var newest = result.refreshToken else {
            result.refresh?.events.append("no refresh_token with the token")
            return
        }
        result.refresh?.issued = true
        var previous: String?
        var step = 0
        while step < plan.rotations {
            step += 1
            await pause(&rng)
            if Int(rng.next() % 100) < plan.racePercent {
                let first = client.pickNode(&rng)
                let second = client.pickNode(&rng, avoiding: first)
                let seeds = (rng.next(), rng.next())
                let raced = newest
                async let one = refreshRequest(raced, clientID: clientID, endpoint: "POST /oauth/token refresh (race)", node: first, seed: seeds.0)
                async let other = refreshRequest(raced, clientID: clientID, endpoint: "POST /oauth/token refresh (race)", node: second, seed: seeds.1)
                let answers = await [one, other]
                var pair = RefreshRecord.RacingPair(answers: answers.map(\.answer.label))
                for (answer, tally) in answers {
                    absorb(tally, answer, into: &result)
                    switch answer {
                    case .rotated(let access, let token):
                        newest = token
                        Self.checkSubject(access, step: "race at rotation \(step)", result: &result)
                    case .malformed(let why):
                        result.refresh?.malformed.append("race at rotation \(step): \(why)")
                    default: break
                    }
                }
                recorder.countRefresh(rotations: pair.winners, races: 1)
                result.refresh?.events.append("race " + pair.answers.joined(separator: "+"))
                guard !answers.contains(where: { $0.answer.isUnanswered }) else {
                    result.refresh?.races.append(pair)
                    return
                }
                // Whichever won, the other presented a rotated token: the family must be revoked, the newest token with it.
                await pause(&rng)
                let after = await probeRefresh(newest, clientID: clientID, endpoint: "POST /oauth/token refresh (dead family)", into: &result, rng: &rng)
                pair.after = after.label
                result.refresh?.races.append(pair)
                result.refresh?.events.append("after race: \(after.label)")
                return
            }
            let (answer, tally) = await refreshRequest(newest, clientID: clientID, endpoint: "POST /oauth/token refresh", seed: rng.next())
            absorb(tally, answer, into: &result)
            result.refresh?.events.append(answer.label)
            switch answer {
            case .rotated(let access, let token):
                result.refresh?.rotations += 1
                recorder.countRefresh(rotations: 1)
                Self.checkSubject(access, step: "rotation \(step)", result: &result)
                previous = newest
                newest = token
            case .refused(let error, let description):
                result.refresh?.unexpectedRefusals.append("rotation \(step): \(error) \(description ?? "")")
                return
            case .malformed(let why):
                result.refresh?.malformed.append("rotation \(step): \(why)")
                return
            case .noAnswer, .failed:
                return
            }
        }
        // The family is live: a share of devices ends it by revocation, another by presenting its rotated token again.
        let draw = Int(rng.next() % 100)
        if draw < plan.revokePercent {
            await pause(&rng)
            var tally = Tally()
            // Revocation is idempotent (RFC 7009 §2.2 answers 200 for a token already revoked), so it may be re-sent.
            let outcome = await send(
                endpoint: "POST /oauth/revoke", method: .POST, path: "/oauth/revoke",
                form: [("token", newest), ("token_type_hint", "refresh_token"), ("client_id", clientID)],
                retryUnavailable: policy.retryUnavailable, resendLostAnswer: true, tally: &tally, rng: &rng
            ) { "\($0.status)" }
            absorb(tally, nil, into: &result)
            switch outcome {
            case .response(let response) where response.status == 503 && policy.retryUnavailable:
                result.refresh?.revocationStatus = 0
                result.refresh?.withoutAnswer += 1
                result.refresh?.events.append("revocation: no answer")
                return
            case .response(let response):
                result.refresh?.revocationStatus = response.status
                result.refresh?.events.append("revocation: \(response.status)")
                if response.status >= 500 { result.failures.append("revocation: \(response.status) \(response.body.prefix(120))") }
                guard response.status == 200 else { return }
            case .failed(let failure):
                result.refresh?.revocationStatus = 0
                result.refresh?.events.append("revocation: no answer")
                if policy.failover, case .ambiguous = failure {
                    result.refresh?.withoutAnswer += 1
                } else {
                    result.failures.append("revocation: transport error (\(failure.message.prefix(120)))")
                }
                return
            }
            recorder.countRefresh(revocations: 1)
            await pause(&rng)
            let after = await probeRefresh(newest, clientID: clientID, endpoint: "POST /oauth/token refresh (revoked)", into: &result, rng: &rng)
            result.refresh?.afterRevocation = after.label
            result.refresh?.events.append("after revocation: \(after.label)")
        } else if draw < plan.revokePercent + plan.replayPercent, let previous {
            await pause(&rng)
            let replay = await probeRefresh(previous, clientID: clientID, endpoint: "POST /oauth/token refresh (replay)", into: &result, rng: &rng)
            result.refresh?.replay = replay.label
            result.refresh?.events.append("replay: \(replay.label)")
            guard !replay.isUnanswered else { return }
            let after = await probeRefresh(newest, clientID: clientID, endpoint: "POST /oauth/token refresh (dead family)", into: &result, rng: &rng)
            result.refresh?.afterReplay = after.label
            result.refresh?.events.append("after replay: \(after.label)")
        }
    }
}
