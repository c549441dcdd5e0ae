import Foundation
import Histogram
import RedisClient
import Synchronization

/// One row of the report: an endpoint and what it answered.
struct MetricKey: Hashable, Sendable, Comparable {
    var endpoint: String
    var outcome: String

    static func < (lhs: MetricKey, rhs: MetricKey) -> Bool {
        (lhs.endpoint, lhs.outcome) < (rhs.endpoint, rhs.outcome)
    }
}

/// Latencies (microseconds) per endpoint and outcome, and completions per second of the run.
///
/// Shared by every simulated device; a `Mutex` keeps recording cheap compared with a request.
final class Recorder: Sendable {
    static let highestTrackableMicroseconds: UInt64 = 300_000_000

    private struct State {
        var histograms: [MetricKey: Histogram<UInt64>] = [:]
        var requestsPerSecond: [Int] = []
        var flowsPerSecond: [Int] = []
        var requests = 0
        var errors = 0
        var flowsDone = 0
        var refresh = RefreshCounters()
    }

    /// Refresh-token steps so far, for the progress line.
    struct RefreshCounters: Sendable, Equatable {
        var rotations = 0
        var races = 0
        var revocations = 0
    }

    let start: ContinuousClock.Instant
    private let state = Mutex(State())

    init(start: ContinuousClock.Instant = .now) {
        self.start = start
    }

    private func second(_ instant: ContinuousClock.Instant) -> Int {
        max(0, Int((instant - start).components.seconds))
    }

    /// Records one request that finished now.
    func record(_ key: MetricKey, latency: Duration, isError: Bool = false) {
        let micros = UInt64(clamping: max(1, latency.microseconds))
        let value = min(micros, Self.highestTrackableMicroseconds)
        let index = second(.now)
        state.withLock { state in
            state.histograms[key, default: Histogram<UInt64>(highestTrackableValue: Self.highestTrackableMicroseconds, numberOfSignificantValueDigits: .three)]
                .record(value)
            while state.requestsPerSecond.count <= index { state.requestsPerSecond.append(0) }
            state.requestsPerSecond[index] += 1
            state.requests += 1
            if isError { state.errors += 1 }
        }
    }

    /// Records one device whose flow ended now.
    func flowDone() {
        let index = second(.now)
        state.withLock { state in
            while state.flowsPerSecond.count <= index { state.flowsPerSecond.append(0) }
            state.flowsPerSecond[index] += 1
            state.flowsDone += 1
        }
    }

    /// Counts refresh-token steps (rotations include race winners).
    func countRefresh(rotations: Int = 0, races: Int = 0, revocations: Int = 0) {
        state.withLock { state in
            state.refresh.rotations += rotations
            state.refresh.races += races
            state.refresh.revocations += revocations
        }
    }

    var refreshCounters: RefreshCounters {
        state.withLock { $0.refresh }
    }

    var counters: (requests: Int, errors: Int, flowsDone: Int) {
        state.withLock { ($0.requests, $0.errors, $0.flowsDone) }
    }

    /// A copy of everything recorded so far.
    func snapshot() -> (histograms: [MetricKey: Histogram<UInt64>], requestsPerSecond: [Int], flowsPerSecond: [Int]) {
        state.withLock { state in
            let length = max(state.requestsPerSecond.count, state.flowsPerSecond.count)
            var requests = state.requestsPerSecond
            var flows = state.flowsPerSecond
            while requests.count < length { requests.append(0) }
            while flows.count < length { flows.append(0) }
            return (state.histograms, requests, flows)
        }
    }
}
