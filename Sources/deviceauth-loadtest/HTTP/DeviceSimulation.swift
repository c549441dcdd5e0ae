import Foundation
import NIOHTTP1

/// Client ids and user-side settings of a run.
struct SimulationSettings: Sendable {
    /// Client per scenario (their lifetimes and intervals come from the server's configuration).
    var clients: [Scenario: String]
    var userHeader: String
    var thinkTime: ClosedRange<Int>
    /// Rapid polls a misbehaving device makes after its first, accepted poll.
    var misbehavingPolls: Int = 3
}

/// Runs one device through RFC 8628 (§3.1–3.5) against random nodes, with its user on the verification page.
struct DeviceSimulation: Sendable {
    let client: NodeClient
    let settings: SimulationSettings

    func run(index: Int, scenario: Scenario, seed: UInt64) async -> DeviceResult {
        var rng = SplitMix64(seed: seed)
        var result = DeviceResult(index: index, scenario: scenario)
        let clientID = settings.clients[scenario] ?? "loadtest"

        // §3.1 device authorization request.
        let issued = await client.send(endpoint: "POST /oauth/device_authorization", method: .POST,
                                       url: client.pickNode(&rng) + "/oauth/device_authorization",
                                       form: [("client_id", clientID)]) { response in
            response.status == 200 ? "200" : "\(response.status) \(response.json?["error"] as? String ?? "")"
        }
        guard let issued, issued.status == 200, let json = issued.json, let deviceCode = json["device_code"] as? String,
              let userCode = json["user_code"] as? String else {
            result.failures.append("device authorization failed: \(issued.map { "\($0.status) \($0.body.prefix(200))" } ?? "transport error")")
            return result
        }
        let interval = (json["interval"] as? Int) ?? 5
        let expiresIn = (json["expires_in"] as? Int) ?? 600
        result.initialInterval = interval

        switch scenario {
        case .misbehave:
            await misbehave(deviceCode: deviceCode, clientID: clientID, result: &result, rng: &rng)
        case .abandon:
            await pollPolitely(deviceCode: deviceCode, clientID: clientID, interval: interval, expiresIn: expiresIn, result: &result, rng: &rng)
        case .approve, .deny:
            let user = "user-\(index)"
            result.user = user
            let userSeed = rng.next()
            async let decision = decide(approve: scenario == .approve, userCode: userCode, user: user, seed: userSeed)
            await pollPolitely(deviceCode: deviceCode, clientID: clientID, interval: interval, expiresIn: expiresIn, result: &result, rng: &rng)
            let outcome = await decision
            result.decisionAccepted = outcome.accepted
            result.decisionError = outcome.error
        }
        return result
    }

    // MARK: - Device side

    private enum PollAnswer {
        case pending
        case slowDown(Int)
        case token(String)
        case error(String)
        case failed(String)
    }

    private func poll(deviceCode: String, clientID: String, rng: inout SplitMix64) async -> PollAnswer {
        let response = await client.send(endpoint: "POST /oauth/token", method: .POST, url: client.pickNode(&rng) + "/oauth/token",
                                         form: [("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                                                ("device_code", deviceCode), ("client_id", clientID)]) { response in
            if response.status == 200 { return "200 token" }
            return "\(response.status) \(response.json?["error"] as? String ?? "?")"
        }
        guard let response else { return .failed("token request: transport error") }
        guard let json = response.json else { return .failed("token request: \(response.status), not JSON") }
        if response.status == 200, let token = json["access_token"] as? String { return .token(token) }
        switch json["error"] as? String {
        case "authorization_pending": return .pending
        case "slow_down": return .slowDown((json["interval"] as? Int) ?? -1)
        case let error?: return response.status >= 500 ? .failed("token request: \(response.status) \(error)") : .error(error)
        case nil: return .failed("token request: \(response.status) without error")
        }
    }

    /// Obeys the interval (and every `slow_down`) until a terminal answer or shortly after expiry.
    private func pollPolitely(deviceCode: String, clientID: String, interval: Int, expiresIn: Int, result: inout DeviceResult,
                              rng: inout SplitMix64) async {
        var interval = interval
        let deadline = ContinuousClock.now + .seconds(expiresIn + 20)
        while !Task.isCancelled {
            do { try await Task.sleep(for: .seconds(interval)) } catch { result.failures.append("cancelled while polling"); return }
            result.polls += 1
            switch await poll(deviceCode: deviceCode, clientID: clientID, rng: &rng) {
            case .pending:
                break
            case .slowDown(let newInterval):
                result.slowDownIntervals.append(newInterval)
                interval = newInterval > 0 ? newInterval : interval + 5
            case .token(let token):
                result.tokens.append(token)
                result.tokenSubjects.append(JWT.subject(of: token) ?? "<unreadable token>")
                return
            case .error(let error):
                result.finalError = error
                return
            case .failed(let message):
                result.failures.append(message)
            }
            if ContinuousClock.now > deadline {
                result.failures.append("no terminal answer \(expiresIn + 20) s after issue")
                return
            }
        }
    }

    /// One accepted poll, then polls far faster than the interval: each must be `slow_down`.
    private func misbehave(deviceCode: String, clientID: String, result: inout DeviceResult, rng: inout SplitMix64) async {
        for attempt in 0...settings.misbehavingPolls {
            result.polls += 1
            switch await poll(deviceCode: deviceCode, clientID: clientID, rng: &rng) {
            case .pending:
                if attempt > 0 { result.failures.append("rapid poll \(attempt) was answered authorization_pending, not slow_down") }
            case .slowDown(let newInterval):
                result.slowDownIntervals.append(newInterval)
            case .token(let token):
                result.tokens.append(token)
                return
            case .error(let error):
                result.finalError = error
                return
            case .failed(let message):
                result.failures.append(message)
            }
        }
    }

    // MARK: - User side

    /// The person: opens `verification_uri_complete` on some node, then approves or denies on another,
    /// identified by the trusted proxy header.
    private func decide(approve: Bool, userCode: String, user: String, seed: UInt64) async -> (accepted: Bool, error: String?) {
        var rng = SplitMix64(seed: seed)
        let think = settings.thinkTime.lowerBound + Int(rng.next() % UInt64(settings.thinkTime.count))
        do { try await Task.sleep(for: .milliseconds(think)) } catch { return (false, "cancelled") }
        let query = FormEncoding.escape(userCode)
        guard let page = await client.send(endpoint: "GET /device", method: .GET, url: client.pickNode(&rng) + "/device?user_code=" + query,
                                           headers: [(settings.userHeader, user)], classify: { response in
            response.status == 200 && response.body.contains("grant_id") ? "200 confirm" : "\(response.status)"
        }) else { return (false, "GET /device: transport error") }
        guard page.status == 200, let csrf = HTMLForm.hiddenValue("csrf_token", in: page.body),
              let grantID = HTMLForm.hiddenValue("grant_id", in: page.body),
              let shownCode = HTMLForm.hiddenValue("user_code", in: page.body) else {
            return (false, "GET /device: \(page.status), no confirmation form")
        }
        var headers = [(settings.userHeader, user)]
        let cookies = page.header("Set-Cookie").compactMap { $0.split(separator: ";").first.map(String.init) }
        if !cookies.isEmpty { headers.append(("Cookie", cookies.joined(separator: "; "))) }
        let action = approve ? "approve" : "deny"
        let expected = approve ? "Device connected" : "Request denied"
        guard let done = await client.send(endpoint: "POST /device", method: .POST, url: client.pickNode(&rng) + "/device", headers: headers,
                                           form: [("csrf_token", csrf), ("user_code", shownCode), ("grant_id", grantID), ("action", action)],
                                           classify: { response in
            response.status == 200 && response.body.contains(expected) ? "200 \(action)" : "\(response.status)"
        }) else { return (false, "POST /device: transport error") }
        guard done.status == 200, done.body.contains(expected) else { return (false, "POST /device \(action): \(done.status)") }
        return (true, nil)
    }
}

/// Reads hidden form fields from the server-rendered pages.
enum HTMLForm {
    static func hiddenValue(_ name: String, in html: String) -> String? {
        guard let nameRange = html.range(of: "name=\"\(name)\"") else { return nil }
        let rest = html[nameRange.upperBound...]
        guard let valueStart = rest.range(of: "value=\""), let end = rest[valueStart.upperBound...].firstIndex(of: "\"") else { return nil }
        return unescape(String(rest[valueStart.upperBound..<end]))
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

    static func subject(of token: String) -> String? {
        claims(of: token)?["sub"] as? String
    }
}
