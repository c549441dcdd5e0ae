import Foundation

/// One checked property of the run.
struct InvariantResult: Sendable, Codable {
    var name: String
    var passed: Bool
    /// How many devices it applied to, and the first few violations.
    var detail: String
}

/// What the run was told to expect of faults (see ``FaultPolicy``).
struct FaultExpectations: Sendable {
    var policy = FaultPolicy()
    /// Writes acknowledged shortly before a fault and then missing (a Redis restart losing its last writes)
    /// are counted and reported instead of failing the run.
    var expectLostApprovals = false
    /// How long before the first fault the harness saw a lost write may have been acknowledged.
    var lossWindow: Duration = .seconds(3)
    /// When the harness saw faults.
    var log = FaultLog()
}

/// Figures of a run with faults, for the report (`--json` key `faults`).
struct FaultSummary: Sendable, Codable {
    /// RFC-shaped `503 temporarily_unavailable` answers (waited out and retried).
    var unavailableAnswers = 0
    /// Requests sent to another node after a failed connection or lost answer.
    var failovers = 0
    /// `device_authorization` re-sent after a lost answer (possible unused grants, expired by TTL).
    var resentIssues = 0
    /// Token polls whose answer never came (`503` or lost answer); each may have run in Redis.
    var pollsWithoutAnswer = 0
    /// Decisions submitted again after a lost answer, the page still showing the request pending.
    var resubmittedDecisions = 0
    /// Approvals the user saw confirmed, later missing (device ended `expired_token` / unknown code) right after a fault.
    var lostApprovals = 0
    /// Denials confirmed, later missing, right after a fault.
    var lostDenials = 0
    /// Codes handed to a device, later unknown, right after a fault.
    var lostIssues = 0
    /// Approved grants redeemed by a poll whose answer was lost: the next poll got `invalid_grant` (already used).
    var tokensLostInFlight = 0
    /// Redeemed grants that answered `authorization_pending` to the probe after the run: a fault lost both
    /// approval and redemption (no second token, but state was lost; counted with --expect-lost-approvals).
    var redemptionsForgotten = 0
    /// Polls made after a token (`--replay-probe`: right after it and once after the run), and how many got a second token (must be 0).
    var replayProbes = 0
    var probeTokens = 0
    /// Probes that got the device's own token again (within the server's retry window): not a replay.
    var probeRedeliveries = 0
    /// Well-behaved devices told `slow_down` right after a poll without an answer (that poll had counted).
    var slowDownsAfterUnansweredPolls = 0
    /// Largest latency of any request, in milliseconds.
    var maxLatencyMs = 0.0
}

/// The properties issue 5 asks of every run, checked over the devices' own observations
/// and the nodes' replay counters, with faults (issue 7) told apart from bugs.
enum Invariants {
    /// How one device's story ended, once faults are accounted for.
    enum Loss: Equatable {
        case none, approval, denial, issue, tokenInFlight
    }

    /// - Parameter reusesCounted: how much `deviceauth_refresh_reuse_detected_total` grew on all nodes during the
    ///   run (`nil`: not measured, no check).
    static func check(
        _ results: [DeviceResult], replayedBefore: Double?, replayedAfter: Double?,
        faults: FaultExpectations = FaultExpectations(), reusesCounted: Double? = nil
    ) -> (checks: [InvariantResult], summary: FaultSummary) {
        func make(_ name: String, _ devices: [DeviceResult], _ violation: (DeviceResult) -> String?) -> InvariantResult {
            let violations = devices.compactMap { device in violation(device).map { "device \(device.index): \($0)" } }
            let detail = violations.isEmpty ? "\(devices.count) devices" : "\(violations.count) of \(devices.count) devices; " + violations.prefix(3).joined(separator: "; ")
            return InvariantResult(name: name, passed: violations.isEmpty, detail: detail)
        }
        let policy = faults.policy
        // A refresh device is an approved device first.
        let approved = results.filter { $0.scenario == .approve || $0.scenario == .refresh }
        let denied = results.filter { $0.scenario == .deny }
        let abandoned = results.filter { $0.scenario == .abandon }
        let misbehaving = results.filter { $0.scenario == .misbehave }
        var summary = FaultSummary()
        var probeRetries = 0
        for device in results {
            summary.unavailableAnswers += device.unavailable
            summary.failovers += device.failovers
            summary.resentIssues += device.resentIssues
            summary.pollsWithoutAnswer += device.pollsWithoutAnswer
            summary.resubmittedDecisions += device.resubmittedDecisions
            if device.probeAnswer != nil { summary.replayProbes += 1 }
            if device.finalProbeAnswer != nil { summary.replayProbes += 1 }
            summary.probeTokens += device.probeTokens
            summary.probeRedeliveries += device.probeRedeliveries
            probeRetries += device.probeRetries
        }

        /// A write acknowledged at `instant` and later missing is put down to a fault only when the run expects
        /// lost writes and a fault was seen right after it; otherwise it is a bug.
        func lostByFault(_ instant: ContinuousClock.Instant?) -> Bool {
            guard faults.expectLostApprovals, let instant else { return false }
            return faults.log.faultSeen(after: instant, within: faults.lossWindow)
        }
        /// The code was unknown at the end (record gone), not merely redeemed.
        func unknownCode(_ device: DeviceResult) -> Bool {
            device.finalError == "invalid_grant" && !(device.finalErrorDescription ?? "").contains("already")
        }
        func loss(_ device: DeviceResult) -> Loss {
            guard device.tokens.isEmpty else { return .none }
            let approving = device.scenario == .approve || device.scenario == .refresh
            if approving, device.decisionAccepted, device.finalError == "invalid_grant",
                (device.finalErrorDescription ?? "").contains("already"), device.pollsWithoutAnswer > 0
            {
                return .tokenInFlight
            }
            if unknownCode(device), lostByFault(device.issuedAt) { return .issue }
            if approving || device.scenario == .deny, device.decisionAccepted,
                device.finalError == "expired_token" || unknownCode(device), lostByFault(device.decisionAt)
            {
                return approving ? .approval : .denial
            }
            // The user could not find a code that the device was given (GET /device 404), the code then unknown.
            if approving || device.scenario == .deny, !device.decisionAccepted, unknownCode(device), lostByFault(device.issuedAt) {
                return .issue
            }
            return .none
        }
        var losses: [Int: Loss] = [:]
        for device in results {
            let kind = loss(device)
            losses[device.index] = kind
            switch kind {
            case .approval: summary.lostApprovals += 1
            case .denial: summary.lostDenials += 1
            case .issue: summary.lostIssues += 1
            case .tokenInFlight: summary.tokensLostInFlight += 1
            case .none: break
            }
        }
        func lost(_ device: DeviceResult) -> Loss { losses[device.index] ?? .none }
        var checks: [InvariantResult] = []

        checks.append(
            make(
                "approved devices got exactly one token naming the approving user"
                    + (policy.isActive || faults.expectLostApprovals ? " (or a counted loss, see faults)" : ""), approved
            ) { device in
                if lost(device) != .none { return nil }
                if !device.decisionAccepted { return "approval not accepted (\(device.decisionError ?? "?")), final \(device.finalError ?? "none")" }
                if device.tokens.count != 1 { return "\(device.tokens.count) tokens, final error \(device.finalError ?? "none") \(device.finalErrorDescription ?? "")" }
                if device.tokenSubjects.first != device.user { return "token sub \(device.tokenSubjects.first ?? "nil") ≠ \(device.user ?? "nil")" }
                return nil
            })
        checks.append(
            make("no denied, abandoned or misbehaving device got a token", denied + abandoned + misbehaving) { device in
                device.tokens.isEmpty ? nil : "\(device.scenario.rawValue) device got \(device.tokens.count) token(s)"
            })
        checks.append(
            make("denied devices got access_denied", denied) { device in
                if lost(device) != .none { return nil }
                if !device.decisionAccepted { return "denial not accepted (\(device.decisionError ?? "?"))" }
                return device.finalError == "access_denied" ? nil : "ended with \(device.finalError ?? "no error")"
            })
        checks.append(
            make("abandoned devices got expired_token", abandoned) { device in
                if lost(device) != .none { return nil }
                return device.finalError == "expired_token" ? nil : "ended with \(device.finalError ?? "no error")"
            })
        checks.append(
            make("misbehaving devices saw slow_down, intervals 5 s apart", misbehaving) { device in
                if lost(device) != .none { return nil }
                guard let initial = device.initialInterval else { return "no code issued" }
                guard !device.slowDownIntervals.isEmpty else { return "no slow_down" }
                let expected = (1...device.slowDownIntervals.count).map { initial + 5 * $0 }
                if device.slowDownIntervals == expected { return nil }
                // A poll whose answer was lost may still have run and raised the interval: then steps of 5 may be skipped.
                let steps = device.slowDownIntervals.map { ($0 - initial) }
                let ordered = zip(steps, steps.dropFirst()).allSatisfy { $0 < $1 }
                if device.pollsWithoutAnswer > 0, ordered, steps.allSatisfy({ $0 > 0 && $0 % 5 == 0 }) { return nil }
                return "intervals \(device.slowDownIntervals), expected \(expected)"
            })
        let wellBehaved = approved + denied + abandoned
        summary.slowDownsAfterUnansweredPolls = wellBehaved.filter { !$0.slowDownIntervals.isEmpty && $0.slowDownAfterUnansweredPoll }.count
        checks.append(
            make(
                "well-behaved devices were never told slow_down"
                    + (policy.isActive ? " (except right after a poll whose answer was lost)" : ""), wellBehaved
            ) { device in
                if device.slowDownIntervals.isEmpty { return nil }
                if policy.isActive, device.slowDownAfterUnansweredPoll, device.slowDownIntervals.count == 1 { return nil }
                return "slow_down \(device.slowDownIntervals)"
            })
        checks.append(
            make(
                policy.isActive
                    ? "no 500s, malformed 503s, unrecovered transport errors or unanswered devices"
                    : "no transport errors, 5xx or unanswered devices", results
            ) { device in
                device.failures.isEmpty ? nil : device.failures.prefix(2).joined(separator: ", ")
            })
        if !faults.expectLostApprovals && policy.isActive {
            checks.append(
                InvariantResult(
                    name: "no acknowledged write lost (approval, denial, issued code)", passed: true,
                    detail: "strict: any loss fails the checks above"))
        }
        if policy.replayProbe {
            checks.append(
                make("no code redeemed twice (a poll after the token got invalid_grant or the same token)", approved.filter { !$0.tokens.isEmpty }) { device in
                    if device.probeTokens > 0 {
                        return device.finalProbeAnswer == "token"
                            ? "a second token for the same device code after the run (the redemption was lost)"
                            : "a second token for the same device code"
                    }
                    if device.tokens.count > 1 { return "\(device.tokens.count) tokens" }
                    let forgotten = ["authorization_pending", "slow_down", "expired_token"]
                    let refused = ["invalid_grant", "same token"]
                    if !refused.contains(device.probeAnswer ?? "") {
                        // A fault between the token and the probe lost approval and redemption: no second token, but state was lost.
                        if faults.expectLostApprovals, let answer = device.probeAnswer, forgotten.contains(answer) {
                            summary.redemptionsForgotten += 1
                            return nil
                        }
                        return "probe answered \(device.probeAnswer ?? "nothing")"
                    }
                    if let final = device.finalProbeAnswer, !refused.contains(final) {
                        // The grant forgot its redemption (and its approval): no second token, but state was lost.
                        if faults.expectLostApprovals && forgotten.contains(final) {
                            summary.redemptionsForgotten += 1
                            return nil
                        }
                        return "probe after the run answered \(final)"
                    }
                    return nil
                })
        }
        let expectedReplays = Double(summary.replayProbes - summary.probeTokens - summary.probeRedeliveries + summary.tokensLostInFlight + probeRetries)
        if let replayedBefore, let replayedAfter {
            let delta = replayedAfter - replayedBefore
            if policy.replayProbe || policy.isActive {
                // Probes and polls after a lost answer replay on purpose; anything beyond them is a real replay.
                checks.append(
                    InvariantResult(
                        name: "no code redeemed twice (deviceauth_grants_replayed_total, all nodes): only the harness's own replays",
                        passed: delta <= expectedReplays,
                        detail: "counted \(Int(delta)), harness replayed \(Int(expectedReplays)) (probes and polls after a lost answer)"))
            } else {
                checks.append(
                    InvariantResult(
                        name: "no code redeemed twice (deviceauth_grants_replayed_total, all nodes)", passed: delta == 0,
                        detail: "before \(Int(replayedBefore)), after \(Int(replayedAfter))"))
            }
        } else if policy.failover {
            checks.append(
                InvariantResult(
                    name: "no code redeemed twice (deviceauth_grants_replayed_total)", passed: true,
                    detail: "not every node answered /metrics (nodes were stopped); the probe check above decides"))
        } else {
            checks.append(
                InvariantResult(
                    name: "no code redeemed twice (deviceauth_grants_replayed_total, all nodes)", passed: false,
                    detail: "could not read /metrics from every node"))
        }
        checks += refreshChecks(results.filter { $0.refresh != nil }, policy: policy, reusesCounted: reusesCounted, make: make)
        if faults.expectLostApprovals {
            checks.append(
                InvariantResult(
                    name: "acknowledged writes lost by a fault (counted, not failed)", passed: true,
                    detail: "approvals \(summary.lostApprovals), denials \(summary.lostDenials), issued codes \(summary.lostIssues)"))
        }
        return (checks, summary)
    }

    /// An answer that tells something: the device saw it (not `no answer` after a fault, not a failure already reported).
    private static func answered(_ label: String?) -> Bool {
        guard let label else { return false }
        return label != RefreshRecord.noAnswer && label != "failed"
    }

    /// Issue 19's invariant "no family ever has two live refresh tokens", and what revocation promises,
    /// over the devices that used their refresh token. Empty when there are none.
    static func refreshChecks(
        _ devices: [DeviceResult], policy: FaultPolicy, reusesCounted: Double?,
        make: (String, [DeviceResult], (DeviceResult) -> String?) -> InvariantResult
    ) -> [InvariantResult] {
        guard !devices.isEmpty else { return [] }
        let invalidGrant = "invalid_grant"
        var checks: [InvariantResult] = []
        checks.append(
            make("refresh devices got a refresh token; the newest token of a live family always rotated to a new pair naming the user", devices) { device in
                guard let record = device.refresh else { return nil }
                if !record.issued { return "no refresh_token with the token" }
                if let refused = record.unexpectedRefusals.first { return "refused: \(refused)" }
                if let malformed = record.malformed.first { return malformed }
                if let pair = record.races.first(where: { $0.winners == 0 && $0.answers.allSatisfy { answered($0) } }) {
                    return "neither of a racing pair rotated: \(pair.answers.joined(separator: "+"))"
                }
                return nil
            })
        checks.append(
            make(
                "no family ever has two live refresh tokens: of a racing pair at most one rotated; a rotated token presented again "
                    + "was refused (invalid_grant) and its family died with it (the newest token refused too)", devices
            ) { device in
                guard let record = device.refresh else { return nil }
                for pair in record.races {
                    if pair.winners > 1 { return "both of a racing pair rotated: two live refresh tokens" }
                    if pair.winners == 1, let loser = pair.answers.first(where: { $0 != RefreshRecord.rotated }), answered(loser), loser != invalidGrant {
                        return "the loser of a racing pair answered \(loser), not invalid_grant"
                    }
                    if pair.after == RefreshRecord.rotated { return "the newest token rotated after a racing pair: the family survived a reuse" }
                    if answered(pair.after), pair.after != invalidGrant { return "the newest token after a racing pair answered \(pair.after!), not invalid_grant" }
                }
                if record.replay == RefreshRecord.rotated { return "a rotated refresh token rotated again" }
                if answered(record.replay), record.replay != invalidGrant { return "a rotated refresh token presented again answered \(record.replay!), not invalid_grant" }
                if record.afterReplay == RefreshRecord.rotated { return "the newest token rotated after its family's reuse" }
                if answered(record.afterReplay), record.afterReplay != invalidGrant {
                    return "the newest token after a reuse answered \(record.afterReplay!), not invalid_grant"
                }
                return nil
            })
        let revoking = devices.filter { $0.refresh?.revocationStatus != nil }
        checks.append(
            make("revocation (POST /oauth/revoke) answered 200 and the next refresh was refused with invalid_grant", revoking) { device in
                guard let record = device.refresh, let status = record.revocationStatus else { return nil }
                if status != 0 && status != 200 { return "revocation answered \(status)" }
                if record.afterRevocation == RefreshRecord.rotated { return "a revoked refresh token rotated" }
                if answered(record.afterRevocation), record.afterRevocation != invalidGrant {
                    return "the refresh after revocation answered \(record.afterRevocation!), not invalid_grant"
                }
                return nil
            })
        if let reusesCounted {
            let expected = RefreshSummary.expectedReuses(devices)
            if policy.isActive {
                // A refresh whose answer was lost may have rotated, so a later one may be a reuse the harness did not mean.
                checks.append(
                    InvariantResult(
                        name: "note: reuse detections (deviceauth_refresh_reuse_detected_total, all nodes)", passed: true,
                        detail: "counted \(Int(reusesCounted)), the harness re-presented \(expected) rotated tokens (not compared under faults)"))
            } else {
                checks.append(
                    InvariantResult(
                        name: "every rotated refresh token the harness presented again was detected as reuse, and nothing else was "
                            + "(deviceauth_refresh_reuse_detected_total, all nodes)",
                        passed: reusesCounted == Double(expected),
                        detail: "counted \(Int(reusesCounted)), the harness re-presented \(expected) (racing-pair losers and replays)"))
            }
        }
        return checks
    }
}
