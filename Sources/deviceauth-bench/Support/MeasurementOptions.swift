import ArgumentParser
import NIOPosix
import RedisClient

/// The options every Redis-level comparison shares: how long, how concurrent, how many
/// connections, and the pipelined baseline's depth.
struct MeasurementOptions: ParsableArguments {
    @Option(help: "Seconds measured per run, after the warm-up.")
    var duration: Double = 5

    @Option(help: "Seconds of warm-up before each of our runs (not measured).")
    var warmup: Double = 1

    @Option(
        help: ArgumentHelp(
            "Concurrent tasks (and redis-benchmark clients) to measure, comma-separated.",
            valueName: "list"))
    var concurrency = IntegerList([1, 16, 64])

    @Option(help: "Connections in RedisClient's pool.")
    var connections: Int = 2

    @Option(
        name: .customLong("pipelined-baseline-depth"),
        help: "The -P depth of the extra pipelined redis-benchmark baseline run at concurrency 64.")
    var pipelineDepth: Int = 16

    @Option(
        help: ArgumentHelp(
            "Where our caller tasks run: pool (Swift's global executor, like a Hummingbird handler) or event-loop (a task executor on NIO's loops, so a command is written and answered on its connection's loop).",
            valueName: "pool|event-loop"))
    var callers = "pool"

    /// The task executors of `--callers` for ``LoadGenerator`` (none: Swift's global executor).
    var callerExecutors: [EventLoopExecutor] {
        callers == "event-loop" ? EventLoopExecutor.forEachLoop(of: MultiThreadedEventLoopGroup.singleton) : []
    }

    func validate() throws {
        guard ["pool", "event-loop"].contains(callers) else { throw ValidationError("--callers must be pool or event-loop") }
        guard duration > 0 else { throw ValidationError("--duration must be positive") }
        guard warmup >= 0 else { throw ValidationError("--warmup must not be negative") }
        guard connections >= 1 else { throw ValidationError("--connections must be at least 1") }
        guard pipelineDepth >= 1 else { throw ValidationError("--pipelined-baseline-depth must be at least 1") }
    }
}
