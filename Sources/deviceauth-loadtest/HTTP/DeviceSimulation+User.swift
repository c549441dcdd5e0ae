import Foundation
import NIOHTTP1
import RedisClient

/// The simulated person: open the page, sign in, look the code up, approve or deny.
extension DeviceSimulation {
    // MARK: - User side

    struct Decision {
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
    func decide(approve: Bool, userCode: String, user: String, seed: UInt64) async -> Decision {
        var rng = SplitMix64(seed: seed)
        var decision = Decision()
        var tally = Tally()
        let think = settings.thinkTime.lowerBound + Int(rng.next() % UInt64(settings.thinkTime.count))
        do { try await Task.sleep(for: .milliseconds(think)) } catch {
            decision.error = "cancelled"
            return decision
        }
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
            let formOutcome = await send(
                endpoint: "GET /device", method: .GET, path: "/device?user_code=" + query, headers: [(settings.userHeader, user)],
                retryUnavailable: policy.retryUnavailable, resendLostAnswer: true, tally: &tally, rng: &rng
            ) { response in
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
            let pageOutcome = await send(
                endpoint: "POST /device lookup", method: .POST, path: "/device", headers: lookupHeaders,
                form: [("csrf_token", formToken), ("user_code", userCode), ("action", "lookup")],
                retryUnavailable: policy.retryUnavailable, resendLostAnswer: true, tally: &tally, rng: &rng
            ) { response in
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
                let shownCode = HTMLForm.hiddenValue("user_code", in: page.body)
            else {
                decision.error = "POST /device lookup: \(page.status), no confirmation form"
                finish(&decision, tally)
                return decision
            }
            var headers = lookupHeaders
            let cookies = page.header("Set-Cookie").compactMap { $0.split(separator: ";").first.map(String.init) }
            if !cookies.isEmpty { headers = [(settings.userHeader, user), ("Cookie", cookies.joined(separator: "; "))] }
            if submittedWithoutAnswer { decision.resubmitted += 1 }
            let doneOutcome = await send(
                endpoint: "POST /device", method: .POST, path: "/device", headers: headers,
                form: [("csrf_token", csrf), ("user_code", shownCode), ("grant_id", grantID), ("action", action)],
                retryUnavailable: false, resendLostAnswer: false, tally: &tally, rng: &rng
            ) { response in
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
