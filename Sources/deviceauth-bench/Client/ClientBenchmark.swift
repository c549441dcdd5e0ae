import ArgumentParser
import RedisClient

/// `deviceauth-bench client`: ``RedisClient`` running the device-poll script as a Redis function
/// (`FCALL`, the client's default), against `redis-benchmark` sending the same `FCALL` to the same
/// key (a `--redis-url` ending in `?script_calls=eval`: `EVALSHA` on both sides).
///
/// For each concurrency C it prints `BENCH client.fcall.c<C>` (ours: C tasks sharing one client;
/// baseline: `redis-benchmark -c C`), and for C = 64 also `client.fcall.c64.vs-pipelined-P16`
/// (baseline: `redis-benchmark -c 64 -P 16`, the ceiling that explicit pipelining reaches).
struct ClientBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "client",
        abstract: "RedisClient script-call (FCALL) throughput and latency against redis-benchmark."
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
            try await target.withClient { client in
                let command = DevicePollScript.baselineCommand(client)
                let form = client.configuration.scriptCalls == .functions ? "fcall" : "evalsha"
                try await DevicePollScript.prepare(client)
                let tls = target.configuration.tls != nil
                for tasks in measurement.concurrency.values {
                    Console.progress(
                        "c=\(tasks): RedisClient (callers: \(measurement.callers)), \(measurement.connections) connection(s), \(measurement.duration)s after \(measurement.warmup)s warm-up"
                    )
                    let ours = try await LoadGenerator.run(
                        concurrency: tasks, warmup: warmupPeriod, duration: window,
                        executors: measurement.callerExecutors
                    ) {
                        _ = try await client.eval(script, keys: [key])
                    }
                    Console.progress("c=\(tasks): redis-benchmark -c \(tasks)")
                    let baseline = try await target.redisBenchmark.run(command: command, clients: tasks, duration: window)
                    let pipelined: RedisBenchmarkTool.Result? =
                        if tasks == Self.pipelinedComparisonConcurrency {
                            try await target.redisBenchmark.run(command: command, clients: tasks, pipeline: measurement.pipelineDepth, duration: window)
                        } else { nil }
                    let name = "client.\(form)\(tls ? ".tls" : "").c\(tasks)"
                    let settings =
                        "callers=\(measurement.callers) tasks=\(tasks) connections=\(measurement.connections) window=\(measurement.duration)s warmup=\(measurement.warmup)s ops=\(ours.operations)"
                    BenchComparison(
                        name: name, ours: ours.operationsPerSecond, baseline: baseline.requestsPerSecond, unit: "ops/s",
                        detail: "ours: \(ours.latency.summary) \(settings) | baseline: \(baseline.summary) | \(target.summary)"
                    ).print()
                    guard let pipelined else { continue }
                    BenchComparison(
                        name: "\(name).vs-pipelined-P\(measurement.pipelineDepth)",
                        ours: ours.operationsPerSecond, baseline: pipelined.requestsPerSecond, unit: "ops/s",
                        detail: "ours: \(ours.latency.summary) \(settings) | baseline: \(pipelined.summary) | \(target.summary)"
                    ).print()
                }
                try await DevicePollScript.cleanUp(client)
            }
        }
    }
}
