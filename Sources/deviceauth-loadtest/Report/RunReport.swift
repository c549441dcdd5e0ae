import Foundation
import Histogram
import RedisClient

/// Everything a run reports: the table rows, the invariants, throughput over time. Encoded as-is for `--json`.
struct RunReport: Sendable, Codable {
    struct Row: Sendable, Codable {
        var endpoint: String
        var outcome: String
        var count: UInt64
        /// Per second of the whole run.
        var rate: Double
        var p50Ms: Double
        var p90Ms: Double
        var p99Ms: Double
        var p999Ms: Double
        var maxMs: Double
        var meanMs: Double
    }

    /// Latency at a percentile, for the distribution chart.
    struct Point: Sendable, Codable {
        var percentile: Double
        var latencyMs: Double
    }

    static let distributionPercentiles: [Double] = [0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 100]

    var mode: String
    var target: String
    var settings: [String: String]
    var startedAt: Date
    var elapsedSeconds: Double
    var rows: [Row]
    /// Latency distribution per endpoint (all outcomes merged).
    var distributions: [String: [Point]]
    var requestsPerSecond: [Int]
    /// Completed device flows (http) or operations (store) per second.
    var completedPerSecond: [Int]
    var scenarioCounts: [String: Int]
    var invariants: [InvariantResult]
    /// Fault figures, for runs with --retry-unavailable, --failover, --replay-probe or --expect-lost-approvals.
    var faults: FaultSummary?
    /// Refresh-token figures and every refresh device's steps, for runs with `refresh` devices.
    var refresh: RefreshSummary?

    /// The open model's timeline, scheduling lag, find-max and thresholds (`--model open`).
    var open: OpenReport?

    var passed: Bool { invariants.allSatisfy(\.passed) }

    init(
        mode: String, target: String, settings: [String: String], elapsed: Duration, recorder: Recorder,
        invariants: [InvariantResult], scenarioCounts: [String: Int] = [:], completedPerSecond: [Int]? = nil
    ) {
        let snapshot = recorder.snapshot()
        self.init(
            mode: mode, target: target, settings: settings, elapsed: elapsed, histograms: snapshot.histograms,
            requestsPerSecond: snapshot.requestsPerSecond, completedPerSecond: completedPerSecond ?? snapshot.flowsPerSecond,
            invariants: invariants, scenarioCounts: scenarioCounts)
    }

    init(
        mode: String, target: String, settings: [String: String], elapsed: Duration, histograms: [MetricKey: Histogram<UInt64>],
        requestsPerSecond: [Int], completedPerSecond: [Int], invariants: [InvariantResult], scenarioCounts: [String: Int] = [:]
    ) {
        let snapshot = (histograms: histograms, requestsPerSecond: requestsPerSecond, flowsPerSecond: completedPerSecond)
        let seconds = max(0.001, elapsed.seconds)
        func ms(_ micros: UInt64) -> Double { Double(micros) / 1000 }
        self.mode = mode
        self.target = target
        self.settings = settings
        self.startedAt = Date(timeIntervalSinceNow: -seconds)
        self.elapsedSeconds = seconds
        self.rows = snapshot.histograms.keys.sorted().map { key in
            let histogram = snapshot.histograms[key]!
            return Row(
                endpoint: key.endpoint, outcome: key.outcome, count: histogram.totalCount, rate: Double(histogram.totalCount) / seconds,
                p50Ms: ms(histogram.valueAtPercentile(50)), p90Ms: ms(histogram.valueAtPercentile(90)),
                p99Ms: ms(histogram.valueAtPercentile(99)), p999Ms: ms(histogram.valueAtPercentile(99.9)),
                maxMs: ms(histogram.max), meanMs: histogram.mean / 1000)
        }
        var merged: [String: Histogram<UInt64>] = [:]
        for (key, histogram) in snapshot.histograms {
            if merged[key.endpoint] == nil { merged[key.endpoint] = histogram } else { merged[key.endpoint]!.add(histogram) }
        }
        self.distributions = merged.mapValues { histogram in
            Self.distributionPercentiles.map { Point(percentile: $0, latencyMs: ms($0 >= 100 ? histogram.max : histogram.valueAtPercentile($0))) }
        }
        self.requestsPerSecond = snapshot.requestsPerSecond
        self.completedPerSecond = snapshot.flowsPerSecond
        self.scenarioCounts = scenarioCounts
        self.invariants = invariants
    }
}

/// `--json FILE`.
enum JSONReport {
    static func write(_ report: RunReport, to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        encoder.keyEncodingStrategy = .convertToSnakeCase
        try encoder.encode(report).write(to: URL(fileURLWithPath: path))
    }
}

/// The plain-text table printed at the end of every run.
enum TableReport {
    static func render(_ report: RunReport) -> String {
        var lines: [String] = []
        let totalRequests = report.rows.reduce(0) { $0 + $1.count }
        let completed = report.completedPerSecond.reduce(0, +)
        lines.append("")
        lines.append(
            "\(report.mode) run: \(fmt(report.elapsedSeconds, 1)) s, \(totalRequests) requests (\(fmt(Double(totalRequests) / report.elapsedSeconds, 1))/s), "
                + "\(completed) \(report.mode == "http" ? "device flows" : "operations") completed (\(fmt(Double(completed) / report.elapsedSeconds, 1))/s)")
        if !report.scenarioCounts.isEmpty {
            lines.append("scenarios: " + report.scenarioCounts.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
        }
        let header = ["endpoint", "outcome", "count", "rate/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"]
        let table = report.rows.map { row in
            [row.endpoint, row.outcome, "\(row.count)", fmt(row.rate, 1), fmt(row.p50Ms, 2), fmt(row.p90Ms, 2), fmt(row.p99Ms, 2), fmt(row.p999Ms, 2), fmt(row.maxMs, 2)]
        }
        let widths = header.indices.map { column in ([header] + table).map { $0[column].count }.max() ?? 0 }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { column, cell in
                column < 2
                    ? cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
                    : String(repeating: " ", count: widths[column] - cell.count) + cell
            }.joined(separator: "  ")
        }
        lines.append(line(header))
        lines.append(widths.map { String(repeating: "-", count: $0) }.joined(separator: "  "))
        lines += table.map(line)
        if let faults = report.faults {
            lines.append("")
            lines.append(
                "faults: \(faults.unavailableAnswers) x 503 temporarily_unavailable (retried), \(faults.failovers) failovers, "
                    + "\(faults.pollsWithoutAnswer) polls without answer, \(faults.resentIssues) re-sent device_authorization, "
                    + "\(faults.resubmittedDecisions) re-submitted decisions; lost after acknowledgement: approvals \(faults.lostApprovals), "
                    + "denials \(faults.lostDenials), codes \(faults.lostIssues); tokens lost in flight \(faults.tokensLostInFlight); "
                    + "redemptions forgotten \(faults.redemptionsForgotten); replay probes \(faults.replayProbes) (same token again \(faults.probeRedeliveries), second tokens \(faults.probeTokens)); max latency \(fmt(faults.maxLatencyMs, 1)) ms"
            )
        }
        if let refresh = report.refresh {
            lines.append("")
            lines.append("refresh: " + RefreshSummary.describe(refresh))
        }
        if let open = report.open { lines += open.describe() }
        if !report.invariants.isEmpty {
            lines.append("")
            lines.append("invariants:")
            for invariant in report.invariants {
                lines.append("  [\(invariant.passed ? "PASS" : "FAIL")] \(invariant.name): \(invariant.detail)")
            }
            lines.append(report.passed ? "ALL INVARIANTS PASSED" : "INVARIANT FAILURE")
        }
        return lines.joined(separator: "\n")
    }

    static func fmt(_ value: Double, _ digits: Int) -> String {
        String(format: "%.\(digits)f", value)
    }
}

extension RunReport {
    /// The table on stdout, and the JSON and HTML reports where asked: every run of the harness
    /// (`http` in both models, `store`) ends with this.
    func publish(json: String?, html: String?) throws {
        print(TableReport.render(self))
        if let json {
            try JSONReport.write(self, to: json)
            print("JSON report: \(json)")
        }
        if let html {
            try HTMLReport.write(self, to: html)
            print("HTML report: \(html)")
        }
    }
}
