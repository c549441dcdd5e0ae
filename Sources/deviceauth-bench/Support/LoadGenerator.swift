import NIOCore
import NIOPosix
import RedisClient

/// Latency percentiles of a set of samples.
struct LatencySummary: Sendable {
    /// The number of samples.
    var count: Int
    /// Median.
    var p50: Duration
    /// 99th percentile.
    var p99: Duration
    /// Largest sample.
    var max: Duration

    /// Summarises latencies given in nanoseconds (nearest-rank percentiles of the sorted samples).
    init(nanoseconds samples: [Int64]) {
        let sorted = samples.sorted()
        count = sorted.count
        func rank(_ fraction: Double) -> Duration {
            guard !sorted.isEmpty else { return .zero }
            let index = Swift.min(sorted.count - 1, Swift.max(0, Int((fraction * Double(sorted.count)).rounded(.up)) - 1))
            return .nanoseconds(sorted[index])
        }
        p50 = rank(0.50)
        p99 = rank(0.99)
        max = rank(1.0)
    }

    /// `p50=…ms p99=…ms max=…ms`.
    var summary: String {
        "p50=\(Self.milliseconds(p50))ms p99=\(Self.milliseconds(p99))ms max=\(Self.milliseconds(max))ms"
    }

    private static func milliseconds(_ duration: Duration) -> String {
        Console.fixed(duration.seconds * 1_000, 3)
    }
}

/// What a closed-loop run measured.
struct LoadResult: Sendable {
    /// Operations completed inside the measurement window.
    var operations: Int
    /// The length of the measurement window.
    var window: Duration
    /// Latencies of the operations completed inside the window.
    var latency: LatencySummary

    /// Completed operations per second of the window.
    var operationsPerSecond: Double { Double(operations) / window.seconds }
}

/// A closed-loop load generator: `concurrency` tasks, each running one operation after another.
enum LoadGenerator {
    /// Runs `operation` from `concurrency` child tasks for `warmup` and then `duration`, and
    /// measures the operations that complete during `duration` (the steady state).
    ///
    /// Each task records the latency of every operation that completes inside the window;
    /// the first error stops the run and is rethrown.
    static func run(
        concurrency: Int,
        warmup: Duration,
        duration: Duration,
        executors: [any TaskExecutor] = [],
        operation: @escaping @Sendable () async throws -> Void
    ) async throws -> LoadResult {
        let clock = ContinuousClock()
        let windowStart = clock.now + warmup
        let windowEnd = windowStart + duration
        let samples = try await withThrowingTaskGroup(of: [Int64].self) { group in
            for index in 0..<concurrency {
                group.addTask(executorPreference: executors.isEmpty ? nil : executors[index % executors.count]) {
                    var latencies: [Int64] = []
                    latencies.reserveCapacity(16_384)
                    while true {
                        let started = clock.now
                        if started >= windowEnd { break }
                        try await operation()
                        let finished = clock.now
                        if finished >= windowStart && finished <= windowEnd {
                            latencies.append((finished - started).nanoseconds)
                        }
                    }
                    return latencies
                }
            }
            var all: [Int64] = []
            for try await latencies in group { all.append(contentsOf: latencies) }
            return all
        }
        return LoadResult(operations: samples.count, window: duration, latency: LatencySummary(nanoseconds: samples))
    }
}
