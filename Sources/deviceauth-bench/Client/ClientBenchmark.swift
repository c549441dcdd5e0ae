import ArgumentParser
import RedisClient

/// `deviceauth-bench client`: ``RedisClient`` running the device-poll script with `EVALSHA`,
/// against `redis-benchmark` sending the same `EVALSHA` to the same key.
///
/// For each concurrency C it prints `BENCH client.evalsha.c<C>` (ours: C tasks sharing one client;
/// baseline: `redis-benchmark -c C`), and for C = 64 also `client.evalsha.c64.vs-pipelined-P16`
/// (baseline: `redis-benchmark -c 64 -P 16`, the ceiling that explicit pipelining reaches).
struct ClientBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "client",
        abstract: "RedisClient EVALSHA throughput and latency against redis-benchmark."
    )

    @OptionGroup var redis: RedisOptions

    @OptionGroup var measurement: MeasurementOptions

    /// The concurrency whose ours is also compared with a pipelined redis-benchmark.
    static let pipelinedComparisonConcurrency = 64

    func run() async throws {
        let window = Duration.seconds(measurement.duration)
        let warmupPeriod = Duration.seconds(measurement.warmup)
        try await redis.withTarget(connectionCount: measurement.connections) { target in
            let script = DevicePollScript.script
            let key = DevicePollScript.key
            let command = ["EVALSHA", script.sha1, "1", key]
            try await target.withClient { client in
                try await DevicePollScript.prepare(client)
                for tasks in measurement.concurrency.values {
                    Console.progress("c=\(tasks): RedisClient, \(measurement.connections) connection(s), \(measurement.duration)s after \(measurement.warmup)s warm-up")
                    let ours = try await LoadGenerator.run(concurrency: tasks, warmup: warmupPeriod, duration: window) {
                        _ = try await client.eval(script, keys: [key])
                    }
                    Console.progress("c=\(tasks): redis-benchmark -c \(tasks)")
                    let baseline = try await target.redisBenchmark.run(command: command, clients: tasks, duration: window)
                    let settings = "tasks=\(tasks) measurement.connections=\(measurement.connections) window=\(measurement.duration)s measurement.warmup=\(measurement.warmup)s ops=\(ours.operations)"
                    BenchComparison(
                        name: "client.evalsha.c\(tasks)",
                        ours: ours.operationsPerSecond, baseline: baseline.requestsPerSecond, unit: "ops/s",
                        detail: "ours: \(ours.latency.summary) \(settings) | baseline: \(baseline.summary) | \(target.summary)"
                    ).print()

                    guard tasks == Self.pipelinedComparisonConcurrency else { continue }
                    Console.progress("c=\(tasks): redis-benchmark -c \(tasks) -P \(measurement.pipelineDepth)")
                    let pipelined = try await target.redisBenchmark.run(command: command, clients: tasks,
                                                                       pipeline: measurement.pipelineDepth, duration: window)
                    BenchComparison(
                        name: "client.evalsha.c\(tasks).vs-pipelined-P\(measurement.pipelineDepth)",
                        ours: ours.operationsPerSecond, baseline: pipelined.requestsPerSecond, unit: "ops/s",
                        detail: "ours: \(ours.latency.summary) \(settings) | baseline: \(pipelined.summary) | \(target.summary)"
                    ).print()
                }
                try await DevicePollScript.cleanUp(client)
            }
        }
    }
}
