import Foundation
import RedisClient

/// What a simulated device and its user do.
enum Scenario: String, CaseIterable, Sendable, Codable {
    /// The user approves after the think time; the device must get exactly one token naming the user.
    case approve
    /// The user denies; the device must get `access_denied`.
    case deny
    /// Nobody answers; the device polls politely until `expired_token`.
    case abandon
    /// The device polls faster than told; it must get `slow_down`, the interval growing 5 s each time.
    case misbehave
    /// Approved like `approve` (for a client with refresh tokens); then the device keeps refreshing
    /// (RFC 6749 §6), sometimes twice at once with one token, and may revoke its token (RFC 7009).
    case refresh
}

/// The share of each scenario, e.g. `approve=60,deny=15,abandon=10,misbehave=15` or `approve=50,refresh=20,…`.
struct ScenarioMix: Sendable, CustomStringConvertible {
    var weights: [(Scenario, Int)]

    init(weights: [(Scenario, Int)]) {
        self.weights = weights
    }

    init?(parsing text: String) {
        var weights: [(Scenario, Int)] = []
        for part in text.split(separator: ",") {
            let pair = part.split(separator: "=", maxSplits: 1)
            guard pair.count == 2, let scenario = Scenario(rawValue: pair[0].trimmingCharacters(in: .whitespaces)),
                let weight = Int(pair[1].trimmingCharacters(in: .whitespaces)), weight >= 0
            else { return nil }
            weights.append((scenario, weight))
        }
        guard weights.contains(where: { $0.1 > 0 }) else { return nil }
        self.weights = weights
    }

    /// The scenario of device number `index` (of `count`): exact proportions, order shuffled by the caller.
    func assign(count: Int, rng: inout SplitMix64) -> [Scenario] {
        let total = weights.reduce(0) { $0 + $1.1 }
        var result: [Scenario] = []
        var assigned = 0
        for (offset, (scenario, weight)) in weights.enumerated() {
            let share = offset == weights.count - 1 ? count - assigned : count * weight / total
            result += Array(repeating: scenario, count: max(0, share))
            assigned += max(0, share)
        }
        result.shuffle(using: &rng)
        return result
    }

    /// One scenario drawn at random (used when the run is bounded by duration only).
    func draw(rng: inout SplitMix64) -> Scenario {
        let total = weights.reduce(0) { $0 + $1.1 }
        var pick = Int(rng.next() % UInt64(total))
        for (scenario, weight) in weights {
            if pick < weight { return scenario }
            pick -= weight
        }
        return weights[0].0
    }

    var description: String {
        weights.map { "\($0.0.rawValue)=\($0.1)" }.joined(separator: ",")
    }
}
