import Foundation
import NIOHTTP1
import RedisClient

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

    var policy: FaultPolicy { settings.faults }

    func run(index: Int, scenario: Scenario, seed: UInt64) async -> DeviceResult {
        var rng = SplitMix64(seed: seed)
        var result = DeviceResult(index: index, scenario: scenario)
        let clientID = settings.clients[scenario] ?? "loadtest"

        // §3.1 device authorization request.
        let issued = await request(
            endpoint: "POST /oauth/device_authorization", method: .POST, path: "/oauth/device_authorization",
            form: [("client_id", clientID)], retryUnavailable: policy.retryUnavailable, resendLostAnswer: policy.failover,
            result: &result, rng: &rng
        ) { response in
            response.status == 200 ? "200" : "\(response.status) \(response.json?["error"] as? String ?? "")"
        }
        guard case .response(let response) = issued, response.status == 200, let json = response.json, let deviceCode = json["device_code"] as? String,
            let userCode = json["user_code"] as? String
        else {
            let detail =
                switch issued {
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
    struct Tally: Sendable {
        var unavailable = 0
        var failovers = 0
        var resent = 0
        var problems: [String] = []
    }

    /// One request with the fault policy applied: a connection that could not be made is re-sent to another
    /// node at once; a `503` is waited out (`Retry-After`) and re-sent when `retryUnavailable`; a lost answer is
    /// re-sent to another node only when `resendLostAnswer`. A `503` must be RFC-shaped (`Retry-After`, and
    /// `temporarily_unavailable` on OAuth endpoints); anything else is recorded as a problem.
    func send(
        endpoint: String, method: HTTPMethod, path: String, headers: [(String, String)] = [], form: [(String, String)]? = nil,
        retryUnavailable: Bool, resendLostAnswer: Bool, tally: inout Tally, rng: inout SplitMix64, node firstNode: String? = nil,
        classify: (SimpleResponse) -> String
    ) async -> SendOutcome {
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

    func request(
        endpoint: String, method: HTTPMethod, path: String, headers: [(String, String)] = [], form: [(String, String)]? = nil,
        retryUnavailable: Bool, resendLostAnswer: Bool, result: inout DeviceResult, rng: inout SplitMix64,
        classify: (SimpleResponse) -> String
    ) async -> SendOutcome {
        var tally = Tally()
        let outcome = await send(
            endpoint: endpoint, method: method, path: path, headers: headers, form: form, retryUnavailable: retryUnavailable,
            resendLostAnswer: resendLostAnswer, tally: &tally, rng: &rng, classify: classify)
        result.unavailable += tally.unavailable
        result.failovers += tally.failovers
        if endpoint.hasSuffix("device_authorization") { result.resentIssues += tally.resent }
        result.failures += tally.problems
        return outcome
    }

    /// Seconds to wait after a `503` (its `Retry-After`, capped; 1 without one).
    func retryAfter(_ response: SimpleResponse) -> Int {
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

    enum PollAnswer {
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

    func poll(deviceCode: String, clientID: String, result: inout DeviceResult, rng: inout SplitMix64) async -> PollAnswer {
        let outcome = await request(
            endpoint: "POST /oauth/token", method: .POST, path: "/oauth/token",
            form: [
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", deviceCode), ("client_id", clientID),
            ],
            retryUnavailable: false, resendLostAnswer: false, result: &result, rng: &rng
        ) { response in
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
    func pollPolitely(
        deviceCode: String, clientID: String, interval: Int, expiresIn: Int, result: inout DeviceResult,
        rng: inout SplitMix64
    ) async {
        var interval = interval
        var wait = interval
        var unansweredSinceLastAnswer = false
        let deadline = ContinuousClock.now + .seconds(expiresIn + 20)
        while !Task.isCancelled {
            do { try await Task.sleep(for: .seconds(wait)) } catch {
                result.failures.append("cancelled while polling")
                return
            }
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
    func misbehave(deviceCode: String, clientID: String, result: inout DeviceResult, rng: inout SplitMix64) async {
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
    func probe(deviceCode: String, clientID: String, result: inout DeviceResult, rng: inout SplitMix64) async {
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
            case .pending:
                result.probeAnswer = "authorization_pending"
                return
            case .slowDown:
                result.probeAnswer = "slow_down"
                return
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

}
