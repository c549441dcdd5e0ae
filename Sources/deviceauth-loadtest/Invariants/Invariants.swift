/// One checked property of the run.
struct InvariantResult: Sendable, Codable {
    var name: String
    var passed: Bool
    /// How many devices it applied to, and the first few violations.
    var detail: String
}

/// The properties issue 5 asks of every run, checked over the devices' own observations
/// and the nodes' replay counters.
enum Invariants {
    static func check(_ results: [DeviceResult], replayedBefore: Double?, replayedAfter: Double?) -> [InvariantResult] {
        func make(_ name: String, _ devices: [DeviceResult], _ violation: (DeviceResult) -> String?) -> InvariantResult {
            let violations = devices.compactMap { device in violation(device).map { "device \(device.index): \($0)" } }
            let detail = violations.isEmpty ? "\(devices.count) devices" : "\(violations.count) of \(devices.count) devices; " + violations.prefix(3).joined(separator: "; ")
            return InvariantResult(name: name, passed: violations.isEmpty, detail: detail)
        }
        let approved = results.filter { $0.scenario == .approve }
        let denied = results.filter { $0.scenario == .deny }
        let abandoned = results.filter { $0.scenario == .abandon }
        let misbehaving = results.filter { $0.scenario == .misbehave }
        var checks: [InvariantResult] = []

        checks.append(make("approved devices got exactly one token naming the approving user", approved) { device in
            if !device.decisionAccepted { return "approval not accepted (\(device.decisionError ?? "?"))" }
            if device.tokens.count != 1 { return "\(device.tokens.count) tokens, final error \(device.finalError ?? "none")" }
            if device.tokenSubjects.first != device.user { return "token sub \(device.tokenSubjects.first ?? "nil") ≠ \(device.user ?? "nil")" }
            return nil
        })
        checks.append(make("no denied, abandoned or misbehaving device got a token", denied + abandoned + misbehaving) { device in
            device.tokens.isEmpty ? nil : "\(device.scenario.rawValue) device got \(device.tokens.count) token(s)"
        })
        checks.append(make("denied devices got access_denied", denied) { device in
            if !device.decisionAccepted { return "denial not accepted (\(device.decisionError ?? "?"))" }
            return device.finalError == "access_denied" ? nil : "ended with \(device.finalError ?? "no error")"
        })
        checks.append(make("abandoned devices got expired_token", abandoned) { device in
            device.finalError == "expired_token" ? nil : "ended with \(device.finalError ?? "no error")"
        })
        checks.append(make("misbehaving devices saw slow_down, intervals 5 s apart", misbehaving) { device in
            guard let initial = device.initialInterval else { return "no code issued" }
            guard !device.slowDownIntervals.isEmpty else { return "no slow_down" }
            let expected = (1...device.slowDownIntervals.count).map { initial + 5 * $0 }
            return device.slowDownIntervals == expected ? nil : "intervals \(device.slowDownIntervals), expected \(expected)"
        })
        checks.append(make("well-behaved devices were never told slow_down", approved + denied + abandoned) { device in
            device.slowDownIntervals.isEmpty ? nil : "slow_down \(device.slowDownIntervals)"
        })
        checks.append(make("no transport errors, 5xx or unanswered devices", results) { device in
            device.failures.isEmpty ? nil : device.failures.prefix(2).joined(separator: ", ")
        })
        if let replayedBefore, let replayedAfter {
            checks.append(InvariantResult(name: "no code redeemed twice (deviceauth_grants_replayed_total, all nodes)", passed: replayedAfter == replayedBefore,
                                          detail: "before \(Int(replayedBefore)), after \(Int(replayedAfter))"))
        } else {
            checks.append(InvariantResult(name: "no code redeemed twice (deviceauth_grants_replayed_total, all nodes)", passed: false,
                                          detail: "could not read /metrics from every node"))
        }
        return checks
    }
}
