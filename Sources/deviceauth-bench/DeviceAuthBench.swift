import ArgumentParser
import Foundation
import NIOCore
import NIOPosix

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
        subcommands: [
            ClientBenchmark.self, StoreBenchmark.self, HTTPBenchmark.self, ClusterBenchmark.self, FormBenchmark.self, JSONBenchmark.self, RefreshBenchmark.self,
            DurabilityBenchmark.self,
        ]
    )

    /// `DEVICEAUTH_BENCH_NIO_EXECUTOR=1` makes NIO's event loops Swift's global executor first, so
    /// every task (a Hummingbird handler, a benchmark caller) runs on a loop and a Redis command
    /// is written and answered there: the placement an API node would get from the same switch.
    static func main() async {
        if ProcessInfo.processInfo.environment["DEVICEAUTH_BENCH_NIO_EXECUTOR"] == "1" {
            let installed = NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
            Console.progress("NIO's event loops as the global executor: \(installed ? "installed" : "not installed (too late)")")
        }
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}
