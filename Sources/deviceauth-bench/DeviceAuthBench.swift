import ArgumentParser

/// The benchmark tool: every subcommand measures one part of the product against a baseline
/// in the same run and prints `BENCH <name> ours=… baseline=… unit=… ratio=…` lines
/// (see DESIGN.md, "Benchmarks").
///
/// To add a benchmark, write an `AsyncParsableCommand` in its own folder (like `Client/`), reuse
/// ``RedisOptions``, ``LoadGenerator``, ``RedisBenchmarkTool`` and ``BenchComparison`` from
/// `Support/`, and list it in ``configuration``'s `subcommands`.
@main
struct DeviceAuthBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deviceauth-bench",
        abstract: "Benchmarks for deviceauth, each measured against a baseline in the same run.",
        subcommands: [ClientBenchmark.self, StoreBenchmark.self, HTTPBenchmark.self, ClusterBenchmark.self, FormBenchmark.self]
    )
}
