import RedisClient
import Foundation
import NIOHTTP1

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

/// Runs one device through RFC 8628 (§3.1–3.5) against random nodes, with its user on the verification page.
///
/// Retry policy under faults (``FaultPolicy``), by what a re-sent request can do:
/// - a connection that could not be made never reached a server: any request goes to another node;
/// - `POST /oauth/device_authorization` is re-sent after a `503` or a lost answer: a duplicate only
///   leaves an unused pending grant that nobody knows and that expires by its TTL;
/// - a token poll is never re-sent blindly: the device polls again on its own schedule, after
///   `max(interval, Retry-After)`, like any RFC 8628 client (an immediate re-send of a poll that did
///   run would rightly earn `slow_down`);
/// - `GET /device` (the code form) and `POST /device` with `action=lookup` (the confirmation page; a
///   lookup that finds its code gives its guess charge back) are re-sent; approve / deny is not: after a lost
///   answer the person reloads the page and decides again only if it still shows the request pending
///   (the decision is a compare-and-set, so at most one of the two submissions can apply);
/// - a refresh (`grant_type=refresh_token`) is never re-sent once it may have reached a server: if it
///   did rotate, the second send would be a reuse and revoke the family. The device's refresh story
///   ends there (counted as without answer). A revocation is idempotent and is re-sent.
struct DeviceSimulation: Sendable {
    let client: NodeClient
    let settings: SimulationSettings

    private var policy: FaultPolicy { settings.faults }

    func run(index: Int, scenario: Scenario, seed: UInt64) async -> DeviceResult {
        var rng = SplitMix64(seed: seed)
        var result = DeviceResult(index: index, scenario: scenario)
        let clientID = settings.clients[scenario] ?? "loadtest"

        // §3.1 device authorization request.
        let issued = await request(endpoint: "POST /oauth/device_authorization", method: .POST, path: "/oauth/device_authorization",
                                   form: [("client_id", clientID)], retryUnavailable: policy.retryUnavailable, resendLostAnswer: policy.failover,
                                   result: &result, rng: &rng) { response in
            response.status == 200 ? "200" : "\(response.status) \(response.json?["error"] as? String ?? "")"
        }
        guard case .response(let response) = issued, response.status == 200, let json = response.json, let deviceCode = json["device_code"] as? String,
              let userCode = json["user_code"] as? String else {
            let detail = switch issued {
            case .response(let response): "\(response.status) \(response.body.prefix(200))"
            case .failed(let failure): "transport error (\(failure.message.prefix(120)))"
            }
            result.failures.append("device authorization failed: \(detail)")
            return result
        }
        result.issuedAt = .now
        let interval = (json["interval"] as? Int) ?? 5
        let expiresIn = (json["expires_in"] as? Int) ?? 600
        result.initialInterval = interval

        switch scenario {
        case .misbehave:
            await misbehave(deviceCode: deviceCode, clientID: clientID, result: &result, rng: &rng)
        case .abandon:
            await pollPolitely(deviceCode: deviceCode, clientID: clientID, interval: interval, expiresIn: expiresIn, result: &result, rng: &rng)
        case .approve, .deny, .refresh:
            let user = "user-\(index)"
            result.user = user
            let userSeed = rng.next()
            async let decision = decide(approve: scenario != .deny, userCode: userCode, user: user, seed: userSeed)
            await pollPolitely(deviceCode: deviceCode, clientID: clientID, interval: interval, expiresIn: expiresIn, result: &result, rng: &rng)
            let outcome = await decision
            result.decisionAccepted = outcome.accepted
            result.decisionError = outcome.error
            result.decisionAt = outcome.at
            result.unavailable += outcome.unavailable
            result.failovers += outcome.failovers
            result.resubmittedDecisions = outcome.resubmitted
            if policy.replayProbe, !result.tokens.isEmpty {
                result.deviceCode = deviceCode
                await probe(deviceCode: deviceCode, clientID: clientID, result: &result, rng: &rng)
            }
            if scenario == .refresh, !result.tokens.isEmpty {
                await refreshes(clientID: clientID, result: &result, rng: &rng)
            }
        }
        return result
    }

    // MARK: - Sending under faults

    /// Counters of one request series, kept apart from `DeviceResult` because the user runs concurrently with the device.
    private struct Tally: Sendable {
        var unavailable = 0
        var failovers = 0
        var resent = 0
        var problems: [String] = []
    }

    /// One request with the fault policy applied: a connection that could not be made is re-sent to another
    /// node at once; a `503` is waited out (`Retry-After`) and re-sent when `retryUnavailable`; a lost answer is
    /// re-sent to another node only when `resendLostAnswer`. A `503` must be RFC-shaped (`Retry-After`, and
    /// `temporarily_unavailable` on OAuth endpoints); anything else is recorded as a problem.
    private func send(endpoint: String, method: HTTPMethod, path: String, headers: [(String, String)] = [], form: [(String, String)]? = nil,
                      retryUnavailable: Bool, resendLostAnswer: Bool, tally: inout Tally, rng: inout SplitMix64, node firstNode: String? = nil,
                      classify: (SimpleResponse) -> String) async -> SendOutcome {
        var avoided: String?
        var outcome = SendOutcome.failed(.notSent("no attempt"))
        for attempt in 1...max(1, policy.maxAttempts) {
            let node = attempt == 1 ? firstNode ?? client.pickNode(&rng, avoiding: avoided) : client.pickNode(&rng, avoiding: avoided)
            outcome = await client.sendDetailed(endpoint: endpoint, method: method, url: node + path, headers: headers, form: form, classify: classify)
            guard attempt < policy.maxAttempts else { break }
            switch outcome {
            case .response(let response) where response.status == 503 && policy.retryUnavailable:
                if let problem = Self.checkUnavailable(response, oauth: path.hasPrefix("/oauth/")) { tally.problems.append("\(endpoint): \(problem)") }
                tally.unavailable += 1
                guard retryUnavailable else { return outcome }
                do { try await Task.sleep(for: .seconds(retryAfter(response))) } catch { return outcome }
            case .failed(.notSent) where policy.failover:
                tally.failovers += 1
                avoided = node
            case .failed(.ambiguous) where policy.failover && resendLostAnswer:
                tally.failovers += 1
                tally.resent += 1
                avoided = node
            default:
                return outcome
            }
        }
        return outcome
    }

    private func request(endpoint: String, method: HTTPMethod, path: String, headers: [(String, String)] = [], form: [(String, String)]? = nil,
                         retryUnavailable: Bool, resendLostAnswer: Bool, result: inout DeviceResult, rng: inout SplitMix64,
                         classify: (SimpleResponse) -> String) async -> SendOutcome {
        var tally = Tally()
        let outcome = await send(endpoint: endpoint, method: method, path: path, headers: headers, form: form, retryUnavailable: retryUnavailable,
                                 resendLostAnswer: resendLostAnswer, tally: &tally, rng: &rng, classify: classify)
        result.unavailable += tally.unavailable
        result.failovers += tally.failovers
        if endpoint.hasSuffix("device_authorization") { result.resentIssues += tally.resent }
        result.failures += tally.problems
        return outcome
    }

    /// Seconds to wait after a `503` (its `Retry-After`, capped; 1 without one).
    private func retryAfter(_ response: SimpleResponse) -> Int {
        let seconds = response.header("Retry-After").first.flatMap { Int($0.trimmingCharacters(in: .whitespaces)) } ?? 1
        return min(max(0, seconds), policy.maxRetryAfter)
    }

    /// What is wrong with a `503`, if anything: it must say when to come back, and OAuth endpoints must
    /// answer `temporarily_unavailable` (RFC 6749 §4.1.2.1) in JSON.
    static func checkUnavailable(_ response: SimpleResponse, oauth: Bool) -> String? {
        guard let value = response.header("Retry-After").first, Int(value.trimmingCharacters(in: .whitespaces)) != nil else {
            return "503 without a Retry-After in seconds"
        }
        if oauth, response.json?["error"] as? String != "temporarily_unavailable" {
            return "503 without error temporarily_unavailable: \(response.body.prefix(120))"
        }
        return nil
    }

    // MARK: - Device side

    private enum PollAnswer {
        case pending
        case slowDown(Int)
        case token(String, refreshToken: String?)
        case error(String, description: String?)
        /// RFC-shaped 503: poll again after this many seconds. The poll may have run in Redis.
        case unavailable(Int)
        /// The answer was lost (connection broke after sending). The poll may have run.
        case lostAnswer(String)
        case failed(String)
    }

    private func poll(deviceCode: String, clientID: String, result: inout DeviceResult, rng: inout SplitMix64) async -> PollAnswer {
        let outcome = await request(endpoint: "POST /oauth/token", method: .POST, path: "/oauth/token",
                                    form: [("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                                           ("device_code", deviceCode), ("client_id", clientID)],
                                    retryUnavailable: false, resendLostAnswer: false, result: &result, rng: &rng) { response in
            if response.status == 200 { return "200 token" }
            return "\(response.status) \(response.json?["error"] as? String ?? "?")"
        }
        let response: SimpleResponse
        switch outcome {
        case .response(let answered): response = answered
        case .failed(let failure):
            if policy.failover, case .ambiguous = failure { return .lostAnswer(failure.message) }
            return .failed("token request: transport error (\(failure.message.prefix(120)))")
        }
        if response.status == 503 && policy.retryUnavailable { return .unavailable(retryAfter(response)) }
        guard let json = response.json else { return .failed("token request: \(response.status), not JSON") }
        if response.status == 200, let token = json["access_token"] as? String { return .token(token, refreshToken: json["refresh_token"] as? String) }
        switch json["error"] as? String {
        case "authorization_pending": return .pending
        case "slow_down": return .slowDown((json["interval"] as? Int) ?? -1)
        case let error?:
            return response.status >= 500 ? .failed("token request: \(response.status) \(error)") : .error(error, description: json["error_description"] as? String)
        case nil: return .failed("token request: \(response.status) without error")
        }
    }

    /// Obeys the interval (and every `slow_down`, and `Retry-After`) until a terminal answer or shortly after expiry.
    private func pollPolitely(deviceCode: String, clientID: String, interval: Int, expiresIn: Int, result: inout DeviceResult,
                              rng: inout SplitMix64) async {
        var interval = interval
        var wait = interval
        var unansweredSinceLastAnswer = false
        let deadline = ContinuousClock.now + .seconds(expiresIn + 20)
        while !Task.isCancelled {
            do { try await Task.sleep(for: .seconds(wait)) } catch { result.failures.append("cancelled while polling"); return }
            wait = interval
            result.polls += 1
            let answer = await poll(deviceCode: deviceCode, clientID: clientID, result: &result, rng: &rng)
            switch answer {
            case .pending:
                break
            case .slowDown(let newInterval):
                result.slowDownIntervals.append(newInterval)
                if unansweredSinceLastAnswer { result.slowDownAfterUnansweredPoll = true }
                interval = newInterval > 0 ? newInterval : interval + 5
                wait = interval
            case .token(let token, let refreshToken):
                result.tokens.append(token)
                result.tokenSubjects.append(JWT.subject(of: token) ?? "<unreadable token>")
                result.refreshToken = refreshToken
                return
            case .error(let error, let description):
                result.finalError = error
                result.finalErrorDescription = description
                return
            case .unavailable(let seconds):
                result.pollsWithoutAnswer += 1
                wait = max(interval, seconds)
            case .lostAnswer:
                result.pollsWithoutAnswer += 1
            case .failed(let message):
                result.failures.append(message)
            }
            switch answer {
            case .unavailable, .lostAnswer: unansweredSinceLastAnswer = true
            case .failed: break
            default: unansweredSinceLastAnswer = false
            }
            if ContinuousClock.now > deadline {
                result.failures.append("no terminal answer \(expiresIn + 20) s after issue")
                return
            }
        }
    }

    /// One accepted poll, then polls far faster than the interval: each must be `slow_down`.
    /// Under faults a misbehaving device ignores `Retry-After` too and simply polls again.
    private func misbehave(deviceCode: String, clientID: String, result: inout DeviceResult, rng: inout SplitMix64) async {
        var answered = 0
        var attempts = 0
        let extraAttempts = policy.isActive ? policy.maxAttempts : 0
        while answered <= settings.misbehavingPolls && attempts <= settings.misbehavingPolls + extraAttempts {
            attempts += 1
            result.polls += 1
            switch await poll(deviceCode: deviceCode, clientID: clientID, result: &result, rng: &rng) {
            case .pending:
                if answered > 0 { result.failures.append("rapid poll \(answered) was answered authorization_pending, not slow_down") }
                answered += 1
            case .slowDown(let newInterval):
                result.slowDownIntervals.append(newInterval)
                answered += 1
            case .token(let token, _):
                result.tokens.append(token)
                return
            case .error(let error, let description):
                result.finalError = error
                result.finalErrorDescription = description
                return
            case .unavailable, .lostAnswer:
                result.pollsWithoutAnswer += 1
                try? await Task.sleep(for: .milliseconds(100))
            case .failed(let message):
                result.failures.append(message)
                answered += 1
            }
        }
    }

    /// Polls once more after the token: a redeemed code must answer `invalid_grant`, or (within the
    /// server's retry window, from the same address) the same token again; never a second token.
    private func probe(deviceCode: String, clientID: String, result: inout DeviceResult, rng: inout SplitMix64) async {
        for _ in 0..<max(1, policy.maxAttempts) {
            switch await poll(deviceCode: deviceCode, clientID: clientID, result: &result, rng: &rng) {
            case .token(let token, _):
                if token == result.tokens.last {
                    result.probeRedeliveries += 1
                    result.probeAnswer = "same token"
                } else {
                    result.probeTokens += 1
                    result.probeAnswer = "token"
                }
                return
            case .error(let error, _):
                result.probeAnswer = error
                return
            case .pending: result.probeAnswer = "authorization_pending"; return
            case .slowDown: result.probeAnswer = "slow_down"; return
            case .unavailable(let seconds):
                result.probeRetries += 1
                try? await Task.sleep(for: .seconds(seconds))
            case .lostAnswer:
                result.probeRetries += 1
            case .failed(let message):
                result.probeAnswer = "failed: \(message)"
                return
            }
        }
        result.probeAnswer = result.probeAnswer ?? "no answer"
    }

    /// Polls a redeemed code once more after the whole run, when every fault is over (a Redis restart
    /// that lost the redemption would make it redeemable again). Sets `finalProbeAnswer`.
    func finalProbe(_ result: inout DeviceResult, seed: UInt64) async {
        guard let deviceCode = result.deviceCode, !result.tokens.isEmpty else { return }
        var rng = SplitMix64(seed: seed)
        let clientID = settings.clients[result.scenario] ?? "loadtest"
        let probeBefore = (result.probeAnswer, result.probeTokens)
        await probe(deviceCode: deviceCode, clientID: clientID, result: &result, rng: &rng)
        result.finalProbeAnswer = result.probeAnswer
        if result.probeTokens > probeBefore.1 { result.finalProbeAnswer = "token" }
        result.probeAnswer = probeBefore.0
    }

    // MARK: - Refresh tokens

    /// The answer to one refresh (RFC 6749 §6).
    private enum RefreshAnswer: Sendable {
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
    private func refreshRequest(_ token: String, clientID: String, endpoint: String, node: String? = nil,
                                seed: UInt64) async -> (answer: RefreshAnswer, tally: Tally) {
        var rng = SplitMix64(seed: seed)
        var tally = Tally()
        let outcome = await send(endpoint: endpoint, method: .POST, path: "/oauth/token",
                                 form: [("grant_type", "refresh_token"), ("refresh_token", token), ("client_id", clientID)],
                                 retryUnavailable: false, resendLostAnswer: false, tally: &tally, rng: &rng, node: node) { response in
            response.status == 200 ? "200 rotated" : "\(response.status) \(response.json?["error"] as? String ?? "?")"
        }
        return (refreshAnswer(outcome, presented: token), tally)
    }

    private func refreshAnswer(_ outcome: SendOutcome, presented: String) -> RefreshAnswer {
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
    private func probeRefresh(_ token: String, clientID: String, endpoint: String, into result: inout DeviceResult,
                              rng: inout SplitMix64) async -> RefreshAnswer {
        let (answer, tally) = await refreshRequest(token, clientID: clientID, endpoint: endpoint, seed: rng.next())
        absorb(tally, answer, into: &result)
        if case .rotated = answer { client.recorder.countRefresh(rotations: 1) }
        return answer
    }

    private func absorb(_ tally: Tally, _ answer: RefreshAnswer?, into result: inout DeviceResult) {
        result.unavailable += tally.unavailable
        result.failovers += tally.failovers
        result.failures += tally.problems
        if case .failed(let message) = answer { result.failures.append(message) }
        if case .noAnswer = answer { result.refresh?.withoutAnswer += 1 }
        if case .refused(let error, _) = answer { result.refresh?.refusals[error, default: 0] += 1 }
    }

    /// A new access token must name the approving user: records it when it does not.
    private static func checkSubject(_ accessToken: String, step: String, result: inout DeviceResult) {
        let subject = JWT.subject(of: accessToken)
        if subject != result.user { result.refresh?.malformed.append("\(step): access token sub \(subject ?? "unreadable") ≠ \(result.user ?? "nil")") }
    }

    private func pause(_ rng: inout SplitMix64) async {
        let range = settings.refresh.pause
        try? await Task.sleep(for: .milliseconds(range.lowerBound + Int(rng.next() % UInt64(range.count))))
    }

    /// The device keeps using its refresh token: rotations with the newest token on random nodes, some
    /// sent twice at once to two nodes (after which reuse detection must have killed the family), and
    /// for a live family at the end a revocation or a replay of the rotated token, each followed by
    /// a refresh that must be refused. Stops where an answer was lost: the family's state is then unknown.
    private func refreshes(clientID: String, result: inout DeviceResult, rng: inout SplitMix64) async {
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
            let outcome = await send(endpoint: "POST /oauth/revoke", method: .POST, path: "/oauth/revoke",
                                     form: [("token", newest), ("token_type_hint", "refresh_token"), ("client_id", clientID)],
                                     retryUnavailable: policy.retryUnavailable, resendLostAnswer: true, tally: &tally, rng: &rng) { "\($0.status)" }
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

    // MARK: - User side

    private struct Decision {
        var accepted = false
        var error: String?
        var at: ContinuousClock.Instant?
        var unavailable = 0
        var failovers = 0
        var resubmitted = 0
    }

    /// The person: opens `verification_uri_complete` on some node, then approves or denies on another,
    /// identified by the trusted proxy header. After a lost answer they reload the page and decide again
    /// only if the request is still pending.
    private func decide(approve: Bool, userCode: String, user: String, seed: UInt64) async -> Decision {
        var rng = SplitMix64(seed: seed)
        var decision = Decision()
        var tally = Tally()
        let think = settings.thinkTime.lowerBound + Int(rng.next() % UInt64(settings.thinkTime.count))
        do { try await Task.sleep(for: .milliseconds(think)) } catch { decision.error = "cancelled"; return decision }
        let query = FormEncoding.escape(userCode)
        let action = approve ? "approve" : "deny"
        let expected = approve ? "Device connected" : "Request denied"
        var submittedWithoutAnswer = false
        func finish(_ decision: inout Decision, _ tally: Tally) {
            decision.unavailable = tally.unavailable
            decision.failovers = tally.failovers
            if decision.error == nil, !tally.problems.isEmpty { decision.error = tally.problems.joined(separator: "; ") }
        }
        for _ in 0..<max(1, policy.isActive ? policy.maxAttempts : 1) {
            // GET only fills in the code form (no lookup); the lookup is the form's POST.
            let formOutcome = await send(endpoint: "GET /device", method: .GET, path: "/device?user_code=" + query, headers: [(settings.userHeader, user)],
                                         retryUnavailable: policy.retryUnavailable, resendLostAnswer: true, tally: &tally, rng: &rng) { response in
                response.status == 200 && response.body.contains("csrf_token") ? "200 form" : "\(response.status)"
            }
            guard case .response(let form) = formOutcome, form.status == 200, let formToken = HTMLForm.hiddenValue("csrf_token", in: form.body) else {
                if case .response(let form) = formOutcome {
                    decision.error = "GET /device: \(form.status), no code form"
                } else {
                    decision.error = "GET /device: transport error"
                }
                finish(&decision, tally)
                return decision
            }
            var lookupHeaders = [(settings.userHeader, user)]
            let formCookies = form.header("Set-Cookie").compactMap { $0.split(separator: ";").first.map(String.init) }
            if !formCookies.isEmpty { lookupHeaders.append(("Cookie", formCookies.joined(separator: "; "))) }
            // A lookup that finds its code is given back by the store, so re-sending it is safe.
            let pageOutcome = await send(endpoint: "POST /device lookup", method: .POST, path: "/device", headers: lookupHeaders,
                                         form: [("csrf_token", formToken), ("user_code", userCode), ("action", "lookup")],
                                         retryUnavailable: policy.retryUnavailable, resendLostAnswer: true, tally: &tally, rng: &rng) { response in
                response.status == 200 && response.body.contains("grant_id") ? "200 confirm" : "\(response.status)"
            }
            guard case .response(let page) = pageOutcome else {
                decision.error = "POST /device lookup: transport error"
                finish(&decision, tally)
                return decision
            }
            if page.status == 409 && submittedWithoutAnswer {
                // "Already used": the submission whose answer was lost went through.
                decision.accepted = true
                decision.at = .now
                finish(&decision, tally)
                return decision
            }
            guard page.status == 200, let csrf = HTMLForm.hiddenValue("csrf_token", in: page.body),
                  let grantID = HTMLForm.hiddenValue("grant_id", in: page.body),
                  let shownCode = HTMLForm.hiddenValue("user_code", in: page.body) else {
                decision.error = "POST /device lookup: \(page.status), no confirmation form"
                finish(&decision, tally)
                return decision
            }
            var headers = lookupHeaders
            let cookies = page.header("Set-Cookie").compactMap { $0.split(separator: ";").first.map(String.init) }
            if !cookies.isEmpty { headers = [(settings.userHeader, user), ("Cookie", cookies.joined(separator: "; "))] }
            if submittedWithoutAnswer { decision.resubmitted += 1 }
            let doneOutcome = await send(endpoint: "POST /device", method: .POST, path: "/device", headers: headers,
                                         form: [("csrf_token", csrf), ("user_code", shownCode), ("grant_id", grantID), ("action", action)],
                                         retryUnavailable: false, resendLostAnswer: false, tally: &tally, rng: &rng) { response in
                response.status == 200 && response.body.contains(expected) ? "200 \(action)" : "\(response.status)"
            }
            switch doneOutcome {
            case .response(let done) where done.status == 200 && done.body.contains(expected):
                decision.accepted = true
                decision.at = .now
                finish(&decision, tally)
                return decision
            case .response(let done) where done.status == 503 && policy.retryUnavailable:
                submittedWithoutAnswer = true
                try? await Task.sleep(for: .seconds(retryAfter(done)))
            case .response(let done) where done.status == 409 && submittedWithoutAnswer:
                decision.accepted = true
                decision.at = .now
                finish(&decision, tally)
                return decision
            case .response(let done):
                decision.error = "POST /device \(action): \(done.status)"
                finish(&decision, tally)
                return decision
            case .failed(.ambiguous) where policy.failover:
                submittedWithoutAnswer = true
                tally.failovers += 1
            case .failed(let failure):
                decision.error = "POST /device: transport error (\(failure.message.prefix(120)))"
                finish(&decision, tally)
                return decision
            }
        }
        decision.error = "POST /device \(action): no answer after \(policy.maxAttempts) attempts"
        finish(&decision, tally)
        return decision
    }
}

/// Reads hidden form fields from the server-rendered pages.
enum HTMLForm {
    /// The `value` of the first field named `name`: the first `value="…"` after `name="<name>"`.
    /// Searched in the page's UTF-8 bytes: Foundation's `range(of:)` (bridged to CFString, UTF-16)
    /// was a fifth of the open model's CPU per request.
    static func hiddenValue(_ name: String, in html: String) -> String? {
        var html = html
        let marker = Array("name=\"\(name)\"".utf8)
        return html.withUTF8 { bytes -> String? in
            guard let nameEnd = end(of: marker, in: bytes, from: 0),
                  let valueStart = end(of: valuePrefix, in: bytes, from: nameEnd),
                  let valueEnd = bytes[valueStart...].firstIndex(of: UInt8(ascii: "\"")) else { return nil }
            return unescape(String(decoding: UnsafeBufferPointer(rebasing: bytes[valueStart..<valueEnd]), as: UTF8.self))
        }
    }

    private static let valuePrefix = Array("value=\"".utf8)

    /// The index just past the first occurrence of `needle` in `bytes` at or after `start`.
    private static func end(of needle: [UInt8], in bytes: UnsafeBufferPointer<UInt8>, from start: Int) -> Int? {
        guard !needle.isEmpty, needle.count <= bytes.count else { return nil }
        var index = start
        while index <= bytes.count - needle.count {
            if bytes[index] == needle[0] {
                var matched = 1
                while matched < needle.count && bytes[index + matched] == needle[matched] { matched += 1 }
                if matched == needle.count { return index + matched }
            }
            index += 1
        }
        return nil
    }

    static func unescape(_ text: String) -> String {
        guard text.contains("&") else { return text }
        var result = text
        for (entity, character) in [("&quot;", "\""), ("&#39;", "'"), ("&#x27;", "'"), ("&#x3D;", "="), ("&#61;", "="), ("&lt;", "<"), ("&gt;", ">"),
                                    ("&#x2F;", "/"), ("&#47;", "/"), ("&#x60;", "`"), ("&amp;", "&")] {
            result = result.replacingOccurrences(of: entity, with: character)
        }
        return result
    }
}

/// Reads a JWT's claims without verifying it (the harness checks who it names, not who signed it).
enum JWT {
    static func claims(of token: String) -> [String: Any]? {
        let parts = token.split(separator: ".")
        guard parts.count == 3 else { return nil }
        var base64 = parts[1].replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        guard let data = Data(base64Encoded: base64) else { return nil }
        return (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
    }

    /// The `sub` claim. A compact payload's `"sub":"…"` is read from the decoded bytes; any other
    /// shape (spaces, escapes, no such member) goes through ``claims(of:)``.
    static func subject(of token: String) -> String? {
        let parts = token.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 3 else { return nil }
        var base64 = parts[1].map { $0 == UInt8(ascii: "-") ? UInt8(ascii: "+") : $0 == UInt8(ascii: "_") ? UInt8(ascii: "/") : $0 }
        while base64.count % 4 != 0 { base64.append(UInt8(ascii: "=")) }
        guard let payload = Data(base64Encoded: Data(base64)) else { return nil }
        let bytes = [UInt8](payload), marker = Array("\"sub\":\"".utf8)
        if let start = bytes.indices.first(where: { bytes[$0...].starts(with: marker) }).map({ $0 + marker.count }),
           let end = bytes[start...].firstIndex(of: UInt8(ascii: "\"")), !bytes[start..<end].contains(UInt8(ascii: "\\")) {
            return String(decoding: bytes[start..<end], as: UTF8.self)
        }
        return claims(of: token)?["sub"] as? String
    }
}
