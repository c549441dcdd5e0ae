import Foundation
import RedisClient

/// Runs `redis-benchmark`, the baseline of the Redis benchmarks, and reads its CSV report.
struct RedisBenchmarkTool: Sendable {
    /// What one `redis-benchmark` run measured.
    struct Result: Sendable {
        /// Requests per second, as redis-benchmark reports them.
        var requestsPerSecond: Double
        /// Median latency in milliseconds.
        var p50Milliseconds: Double
        /// 99th-percentile latency in milliseconds.
        var p99Milliseconds: Double
        /// The total number of requests sent (`-n`).
        var requests: Int
        /// The number of parallel connections (`-c`).
        var clients: Int
        /// The pipeline depth (`-P`).
        var pipeline: Int

        /// The settings and latencies, for a detail line.
        var summary: String {
            let pipelined = pipeline > 1 ? " -P \(pipeline)" : ""
            return "redis-benchmark -c \(clients)\(pipelined) -n \(requests): "
                + "p50=\(Console.fixed(p50Milliseconds, 3))ms p99=\(Console.fixed(p99Milliseconds, 3))ms"
        }
    }

    /// The absolute path of `redis-benchmark`.
    var executable: String
    /// Host, port, socket, database and credential arguments (see ``RedisTarget``).
    var connectionArguments: [String]

    /// Runs `command` with `clients` connections and `pipeline` depth for about `duration`.
    ///
    /// A short first run estimates the rate (and warms the server up); the measured run then
    /// sends as many requests as that rate fits into `duration`.
    func run(command: [String], clients: Int, pipeline: Int = 1, duration: Duration) async throws -> Result {
        let probe = try await run(
            command: command, clients: clients, pipeline: pipeline,
            requests: max(20_000, clients * pipeline * 200))
        let requests = max(1_000, Int(probe.requestsPerSecond * duration.seconds))
        return try await run(command: command, clients: clients, pipeline: pipeline, requests: requests)
    }

    /// Runs `command` exactly `requests` times with `clients` connections and `pipeline` depth.
    func run(command: [String], clients: Int, pipeline: Int = 1, requests: Int) async throws -> Result {
        var arguments = connectionArguments + ["-c", "\(clients)", "-n", "\(requests)", "--csv"]
        if pipeline > 1 { arguments += ["-P", "\(pipeline)"] }
        arguments += command
        let output = try await ChildProcess.run(executable, arguments)
        guard output.status == 0, !output.terminatedBySignal else {
            throw ChildProcess.Failure(description: "redis-benchmark failed (status \(output.status)): \(output.standardError)\(output.standardOutput)")
        }
        guard let row = Self.parseCSV(output.standardOutput) else {
            throw ChildProcess.Failure(description: "cannot read redis-benchmark's CSV output: \(output.standardOutput) \(output.standardError)")
        }
        return Result(
            requestsPerSecond: row.rps, p50Milliseconds: row.p50, p99Milliseconds: row.p99,
            requests: requests, clients: clients, pipeline: pipeline)
    }

    /// Reads the first data row of redis-benchmark's `--csv` report, whose header is
    /// `"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"`.
    static func parseCSV(_ text: String) -> (rps: Double, p50: Double, p99: Double)? {
        let lines = text.split(whereSeparator: \.isNewline)
        guard let headerIndex = lines.firstIndex(where: { $0.hasPrefix("\"test\"") }) else { return nil }
        let header = fields(lines[headerIndex])
        guard headerIndex + 1 < lines.count,
            let rpsColumn = header.firstIndex(of: "rps"),
            let p50Column = header.firstIndex(of: "p50_latency_ms"),
            let p99Column = header.firstIndex(of: "p99_latency_ms")
        else { return nil }
        // The test name (the command) comes first and never contains `","`, so splitting on commas
        // from the right keeps the numeric columns intact.
        let row = fields(lines[headerIndex + 1])
        guard row.count >= header.count else { return nil }
        let numbers = Array(row.suffix(header.count - 1))
        func value(_ column: Int) -> Double? { Double(numbers[column - 1]) }
        guard let rps = value(rpsColumn), let p50 = value(p50Column), let p99 = value(p99Column) else { return nil }
        return (rps, p50, p99)
    }

    private static func fields(_ line: Substring) -> [String] {
        line.split(separator: ",", omittingEmptySubsequences: false)
            .map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "\" ")) }
    }
}
