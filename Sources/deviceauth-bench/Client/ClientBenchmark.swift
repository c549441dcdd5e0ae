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

    @Option(help: "Seconds measured per run, after the warm-up.")
    var duration: Double = 5

    @Option(help: "Seconds of warm-up before each of our runs (not measured).")
    var warmup: Double = 1

    @Option(help: ArgumentHelp("Concurrent tasks (and redis-benchmark clients) to measure, comma-separated.",
                               valueName: "list"))
    var concurrency = IntegerList([1, 16, 64])

    @Option(help: "Connections in RedisClient's pool.")
    var connections: Int = 2

    @Option(name: .customLong("pipelined-baseline-depth"),
            help: "The -P depth of the extra pipelined redis-benchmark baseline run at concurrency 64.")
    var pipelineDepth: Int = 16

    /// The concurrency whose ours is also compared with a pipelined redis-benchmark.
    static let pipelinedComparisonConcurrency = 64

    func validate() throws {
        guard duration > 0 else { throw ValidationError("--duration must be positive") }
        guard warmup >= 0 else { throw ValidationError("--warmup must not be negative") }
        guard connections >= 1 else { throw ValidationError("--connections must be at least 1") }
        guard pipelineDepth >= 1 else { throw ValidationError("--pipelined-baseline-depth must be at least 1") }
    }

    func run() async throws {
        let window = Duration.seconds(duration)
        let warmupPeriod = Duration.seconds(warmup)
        try await redis.withTarget(connectionCount: connections) { target in
            let script = DevicePollScript.script
            let key = DevicePollScript.key
            let command = ["EVALSHA", script.sha1, "1", key]
            try await target.withClient { client in
                try await DevicePollScript.prepare(client)
                for tasks in concurrency.values {
                    Console.progress("c=\(tasks): RedisClient, \(connections) connection(s), \(duration)s after \(warmup)s warm-up")
                    let ours = try await LoadGenerator.run(concurrency: tasks, warmup: warmupPeriod, duration: window) {
                        _ = try await client.eval(script, keys: [key])
                    }
                    Console.progress("c=\(tasks): redis-benchmark -c \(tasks)")
                    let baseline = try await target.redisBenchmark.run(command: command, clients: tasks, duration: window)
                    let settings = "tasks=\(tasks) connections=\(connections) window=\(duration)s warmup=\(warmup)s ops=\(ours.operations)"
                    BenchComparison(
                        name: "client.evalsha.c\(tasks)",
                        ours: ours.operationsPerSecond, baseline: baseline.requestsPerSecond, unit: "ops/s",
                        detail: "ours: \(ours.latency.summary) \(settings) | baseline: \(baseline.summary) | \(target.summary)"
                    ).print()

                    guard tasks == Self.pipelinedComparisonConcurrency else { continue }
                    Console.progress("c=\(tasks): redis-benchmark -c \(tasks) -P \(pipelineDepth)")
                    let pipelined = try await target.redisBenchmark.run(command: command, clients: tasks,
                                                                       pipeline: pipelineDepth, duration: window)
                    BenchComparison(
                        name: "client.evalsha.c\(tasks).vs-pipelined-P\(pipelineDepth)",
                        ours: ours.operationsPerSecond, baseline: pipelined.requestsPerSecond, unit: "ops/s",
                        detail: "ours: \(ours.latency.summary) \(settings) | baseline: \(pipelined.summary) | \(target.summary)"
                    ).print()
                }
                try await DevicePollScript.cleanUp(client)
            }
        }
    }
}
