import Foundation
import Histogram
import NIOCore
import NIOHTTP1
import NIOPosix
import RedisClient
import Synchronization

/// `--find-max` and the thresholds of a run.
struct OpenObjectives: Sendable {
    var findMax = false
    var maxP99Ms: Double?
    var maxErrorRate: Double?
}

/// Runs the open model: W workers (event loops) with their heaps and pools, the progress line, find-max,
/// then the invariants from the counters and the nodes' `/metrics`, and the report.
struct OpenModelRun {
    let settings: OpenSettings
    let nodeURLs: [String]
    let objectives: OpenObjectives

    /// Exit status: 0, 1 (an invariant failed) or 3 (a threshold broke).
    func run() async throws -> (report: RunReport, status: Int32) {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: settings.workers)
        defer { group.shutdownGracefully { _ in } }
        let replayedBefore = await Self.scrape(group: group, nodes: settings.nodes, counter: "deviceauth_grants_replayed_total")
        let start = NIODeadline.now()
        let clockStart = ContinuousClock.now
        let workers = (0..<settings.workers).map { OpenWorker(index: $0, loop: group.next(), settings: settings, start: start) }
        let finished = Atomic<Int>(0)
        let futures = workers.map { worker in
            let future = worker.run()
            future.whenComplete { _ in finished.wrappingAdd(1, ordering: .relaxed) }
            return future
        }
        HTTPLoadCommand.say(
            "deviceauth-loadtest http --model open: \(settings.nodes.count) node(s), arrivals \(settings.schedule), mix \(settings.mix), "
                + "decision delay \(settings.delay), \(settings.workers) workers, \(settings.connectionsPerNode) connections per node, seed \(settings.seed)\n")
        let isTerminal = isatty(STDERR_FILENO) != 0
        var lastRequests = 0
        var lastInstant = ContinuousClock.now
        var findMaxSteps: [FindMax.StepResult] = []
        var knee: FindMax.Knee?
        let stepRates: [Double] = if case .steps(let steps) = settings.schedule { steps.map(\.rate) } else { [] }
        var printed = ContinuousClock.now - .seconds(10)
        while finished.load(ordering: .relaxed) < workers.count {
            try? await Task.sleep(for: .milliseconds(250))
            let snapshots = (try? await EventLoopFuture.whenAllSucceed(workers.map { $0.snapshot() }, on: group.next()).get()) ?? []
            var counters = OpenCounters()
            var waiting = 0
            var queued = 0
            var connections = 0
            var steps: [StepTally] = []
            for snapshot in snapshots {
                counters.add(snapshot.counters)
                waiting += snapshot.waiting
                queued += snapshot.queued
                connections += snapshot.connections
                for (index, tally) in snapshot.steps.enumerated() {
                    while steps.count <= index { steps.append(StepTally()) }
                    steps[index].add(tally)
                }
            }
            let now = ContinuousClock.now
            let elapsed = Self.seconds(now - clockStart)
            if objectives.findMax, knee == nil, !stepRates.isEmpty {
                // A step is judged once the next one has run 2 s (its last polls answered).
                let current = settings.schedule.stepIndex(at: max(0, elapsed - 2))
                while findMaxSteps.count < min(current, steps.count) {
                    let index = findMaxSteps.count
                    let tally = steps[index]
                    let seconds: Double = if case .steps(let all) = settings.schedule { all[index].seconds } else { 1 }
                    let result = FindMax.StepResult(
                        arrivalRate: stepRates[index], requests: UInt64(tally.requests), errors: UInt64(tally.errors),
                        p99Ms: tally.poll.percentileMs(99), pollsPerSecond: Double(tally.polls) / seconds,
                        waitingDevices: tally.peakWaiting)
                    findMaxSteps.append(result)
                    HTTPLoadCommand.say(
                        String(
                            format: "find-max: %.0f arrivals/s: p99 %.1f ms, error rate %.4f, %.0f polls/s, %d waiting\n",
                            result.arrivalRate, result.p99Ms, result.errorRate, result.pollsPerSecond, result.waitingDevices))
                    if FindMax.violation(result, maxP99Ms: objectives.maxP99Ms ?? .infinity, maxErrorRate: objectives.maxErrorRate ?? 1) != nil {
                        knee = FindMax.knee(findMaxSteps, maxP99Ms: objectives.maxP99Ms ?? .infinity, maxErrorRate: objectives.maxErrorRate ?? 1)
                        for worker in workers { worker.stop() }
                        break
                    }
                }
            }
            guard now - printed >= (isTerminal ? .milliseconds(500) : .seconds(5)) else { continue }
            printed = now
            let rate = Double(counters.requests - lastRequests) / max(0.001, Self.seconds(now - lastInstant))
            lastRequests = counters.requests
            lastInstant = now
            let line =
                String(format: "[%6.1fs] ", elapsed) + "arrivals \(counters.arrivals), waiting \(waiting), done \(counters.finished), "
                + String(format: "%.0f req/s", rate) + ", \(counters.requests) requests, \(counters.errors) errors, \(connections) connections, \(queued) queued"
            FileHandle.standardError.write(Data((isTerminal ? "\r\u{1B}[2K" + line : line + "\n").utf8))
        }
        if isTerminal { FileHandle.standardError.write(Data("\n".utf8)) }
        let results = try await EventLoopFuture.whenAllSucceed(futures, on: group.next()).get()
        let elapsed = ContinuousClock.now - clockStart
        let replayedAfter = await Self.scrape(group: group, nodes: settings.nodes, counter: "deviceauth_grants_replayed_total")

        var counters = OpenCounters()
        var histograms: [MetricKey: Histogram<UInt64>] = [:]
        var lag = Histogram<UInt64>(highestTrackableValue: Recorder.highestTrackableMicroseconds, numberOfSignificantValueDigits: .two)
        var timeline: [TimelineBucket] = []
        var peakWaiting = 0
        for result in results {
            counters.add(result.counters)
            for (key, histogram) in result.histograms {
                if histograms[key] == nil { histograms[key] = histogram } else { histograms[key]!.add(histogram) }
            }
            lag.add(result.lag)
            for (index, bucket) in result.timeline.enumerated() {
                while timeline.count <= index { timeline.append(TimelineBucket()) }
                timeline[index].add(bucket)
            }
            peakWaiting += result.peakWaiting
        }
        if objectives.findMax, knee == nil {
            knee = FindMax.knee(findMaxSteps, maxP99Ms: objectives.maxP99Ms ?? .infinity, maxErrorRate: objectives.maxErrorRate ?? 1)
        }
        let invariants = Self.invariants(counters, replayedBefore: replayedBefore, replayedAfter: replayedAfter, nodes: settings.nodes.count)
        var open = OpenReport(
            schedule: settings.schedule.description, delay: settings.delay.description, counters: counters,
            peakWaiting: peakWaiting, lag: lag, timeline: timeline, timelineSeconds: settings.timelineSeconds,
            findMax: objectives.findMax ? OpenReport.FindMaxReport(steps: findMaxSteps, knee: knee ?? FindMax.Knee()) : nil)
        // Thresholds: p99 of token polls (coordinated-omission corrected) and the error rate of all requests.
        var pollHistogram: Histogram<UInt64>?
        for (key, histogram) in histograms where key.endpoint == OpenEndpoint.poll.name {
            if pollHistogram == nil { pollHistogram = histogram } else { pollHistogram!.add(histogram) }
        }
        let pollP99 = Double(pollHistogram?.valueAtPercentile(99) ?? 0) / 1000
        let errorRate = counters.requests == 0 ? 0 : Double(counters.errors) / Double(counters.requests)
        if !objectives.findMax {
            if let max = objectives.maxP99Ms {
                open.thresholds.append(
                    .init(
                        name: "p99 of POST /oauth/token (corrected) <= \(max) ms", passed: pollP99 <= max,
                        detail: String(format: "%.2f ms", pollP99)))
            }
            if let max = objectives.maxErrorRate {
                open.thresholds.append(
                    .init(
                        name: "error rate <= \(max)", passed: errorRate <= max,
                        detail: String(format: "%.5f (%d of %d requests)", errorRate, counters.errors, counters.requests)))
            }
        }
        var report = RunReport(
            mode: "http", target: nodeURLs.joined(separator: ","),
            settings: [
                "model": "open", "nodes": "\(settings.nodes.count)", "arrivals": settings.schedule.description, "mix": "\(settings.mix)",
                "decision_delay": settings.delay.description, "workers": "\(settings.workers)", "connections_per_node": "\(settings.connectionsPerNode)",
                "source_addresses": settings.sourceAddresses.joined(separator: " "), "seed": "\(settings.seed)",
            ], elapsed: elapsed, histograms: histograms, requestsPerSecond: timeline.map(\.requests),
            completedPerSecond: timeline.map { $0.approved + $0.denied + $0.expired + $0.failed }, invariants: invariants)
        report.open = open
        let status: Int32 = invariants.contains { !$0.passed } ? 1 : open.thresholds.contains { !$0.passed } ? 3 : 0
        return (report, status)
    }

    static func seconds(_ duration: Duration) -> Double {
        duration.seconds
    }

    /// The invariants, from counters only (bounded memory whatever the number of devices).
    static func invariants(_ c: OpenCounters, replayedBefore: [Int: Double], replayedAfter: [Int: Double], nodes: Int) -> [InvariantResult] {
        var checks: [InvariantResult] = []
        let complete = c.unfinished == 0
        checks.append(
            InvariantResult(
                name: "every approved device got exactly one token naming its approver",
                passed: c.tokensWrongSubject == 0 && c.tokensUnexpected == 0 && c.secondTokens == 0 && c.approvedWithoutToken == 0
                    && c.tokens <= c.approvedDecisions && (!complete || c.tokens == c.approvedDecisions),
                detail: "\(c.approvedDecisions) approvals, \(c.tokens) tokens, \(c.tokensWrongSubject) naming someone else, "
                    + "\(c.tokensUnexpected) without an approval, \(c.secondTokens) second tokens, \(c.approvedWithoutToken) refused"))
        checks.append(
            InvariantResult(
                name: "every denied device got access_denied",
                passed: c.deniedWrong == 0 && c.deniedOK <= c.deniedDecisions && (!complete || c.deniedOK == c.deniedDecisions),
                detail: "\(c.deniedDecisions) denials, \(c.deniedOK) access_denied, \(c.deniedWrong) wrong answers"))
        checks.append(
            InvariantResult(
                name: "every abandoned device got expired_token", passed: c.abandonedWrong == 0,
                detail: "\(c.abandonedExpired) expired_token, \(c.abandonedWrong) wrong answers, "
                    + "\(c.expiredBeforeDecision) expired before their person decided (delay beyond the lifetime)"))
        checks.append(
            InvariantResult(
                name: "slow_down raises the interval by exactly 5 s", passed: c.slowDownWrong == 0 && c.slowDownMissing == 0,
                detail: "\(c.slowDownExact) exact, \(c.slowDownWrong) other intervals, \(c.slowDownMissing) fast polls without slow_down"))
        checks.append(
            InvariantResult(
                name: "every person's decision went through", passed: c.decisionFailures == 0,
                detail: "\(c.approvedDecisions + c.deniedDecisions) decisions, \(c.decisionFailures) failed"))
        if replayedBefore.count == nodes, replayedAfter.count == nodes {
            let delta = replayedAfter.values.reduce(0, +) - replayedBefore.values.reduce(0, +)
            checks.append(
                InvariantResult(
                    name: "no code redeemed twice (deviceauth_grants_replayed_total, all nodes): only the harness's probes",
                    passed: Int(delta) == c.probesInvalidGrant,
                    detail: "counted \(Int(delta)), probes answered invalid_grant \(c.probesInvalidGrant), the same token again \(c.probesSameToken)"))
        } else {
            checks.append(
                InvariantResult(
                    name: "no code redeemed twice (deviceauth_grants_replayed_total, all nodes)", passed: false,
                    detail: "could not read /metrics from every node"))
        }
        checks.append(
            InvariantResult(
                name: "note: devices still waiting when the run ended", passed: true,
                detail: "\(c.unfinished) (not judged; raise --drain to let them finish)"))
        return checks
    }

    /// A counter per node from `/metrics` (all label sets summed); nodes that do not answer are left out.
    static func scrape(group: any EventLoopGroup, nodes: [(host: String, port: Int)], counter: String) async -> [Int: Double] {
        var values: [Int: Double] = [:]
        for (index, node) in nodes.enumerated() {
            let loop = group.next()
            let promise = loop.makePromise(of: LeanResponse?.self)
            loop.execute {
                let pool = LeanPool(eventLoop: loop, host: node.host, port: node.port, maxConnections: 1, sourceAddresses: [], timeout: .seconds(10))
                pool.send(LeanRequest(method: .GET, path: "/metrics", headers: [("Connection", "close")])) { result in
                    promise.succeed(try? result.get())
                }
            }
            guard let response = try? await promise.futureResult.get(), response.status == 200 else { continue }
            var total = 0.0
            for line in response.bodyString.split(separator: "\n") where line.hasPrefix(counter) {
                let rest = line.dropFirst(counter.count)
                guard rest.first == " " || rest.first == "{" else { continue }
                if let value = line.split(separator: " ").last.flatMap({ Double($0) }) { total += value }
            }
            values[index] = total
        }
        return values
    }
}

/// The open model's part of the report: counters, scheduling lag, the timeline, find-max, thresholds.
struct OpenReport: Sendable, Codable {
    struct Lag: Sendable, Codable {
        var p50Ms: Double, p99Ms: Double, p999Ms: Double, maxMs: Double, count: UInt64
    }

    struct EndpointPoint: Sendable, Codable {
        var count: UInt64, p50Ms: Double, p99Ms: Double, p999Ms: Double
    }

    struct TimelinePoint: Sendable, Codable {
        var second: Int
        var arrivals: Int, polls: Int, requests: Int, errors: Int, waiting: Int
        var approved: Int, denied: Int, expired: Int, failed: Int
        var endpoints: [String: EndpointPoint]
    }

    struct FindMaxReport: Sendable, Codable {
        var steps: [FindMax.StepResult]
        var knee: FindMax.Knee
    }

    var schedule: String
    var delay: String
    var counters: OpenCounters
    var peakWaiting: Int
    /// How late the harness was in starting each due action (heap pop time − intended time).
    var schedulingLag: Lag
    var timeline: [TimelinePoint]
    var findMax: FindMaxReport?
    var thresholds: [InvariantResult] = []

    init(
        schedule: String, delay: String, counters: OpenCounters, peakWaiting: Int, lag: Histogram<UInt64>, timeline: [TimelineBucket],
        timelineSeconds: Int, findMax: FindMaxReport?
    ) {
        self.schedule = schedule
        self.delay = delay
        self.counters = counters
        self.peakWaiting = peakWaiting
        schedulingLag = Lag(
            p50Ms: Double(lag.valueAtPercentile(50)) / 1000, p99Ms: Double(lag.valueAtPercentile(99)) / 1000,
            p999Ms: Double(lag.valueAtPercentile(99.9)) / 1000, maxMs: Double(lag.max) / 1000, count: lag.totalCount)
        self.timeline = timeline.enumerated().map { index, bucket in
            var endpoints: [String: EndpointPoint] = [:]
            for endpoint in OpenEndpoint.allCases {
                let histogram = bucket.latency[endpoint.rawValue]
                guard histogram.total > 0 else { continue }
                endpoints[endpoint.name] = EndpointPoint(
                    count: histogram.total, p50Ms: histogram.percentileMs(50), p99Ms: histogram.percentileMs(99),
                    p999Ms: histogram.percentileMs(99.9))
            }
            return TimelinePoint(
                second: index * timelineSeconds, arrivals: bucket.arrivals, polls: bucket.polls, requests: bucket.requests,
                errors: bucket.errors, waiting: bucket.waiting, approved: bucket.approved, denied: bucket.denied,
                expired: bucket.expired, failed: bucket.failed, endpoints: endpoints)
        }
        self.findMax = findMax
    }

    /// Lines for the terminal table.
    func describe() -> [String] {
        var lines = [
            "", "open model: arrivals \(schedule), decision delay \(delay)",
            "  \(counters.arrivals) arrivals, peak \(peakWaiting) waiting devices, \(counters.polls) polls, \(counters.finished) finished, \(counters.unfinished) still waiting",
            String(
                format: "  harness scheduling lag: p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms (%d due actions)",
                schedulingLag.p50Ms, schedulingLag.p99Ms, schedulingLag.p999Ms, schedulingLag.maxMs, schedulingLag.count),
            "  latencies are counted from each request's intended send time (coordinated-omission corrected)",
        ]
        if let findMax {
            for step in findMax.steps {
                lines.append(
                    String(
                        format: "  find-max step %.0f/s: p99 %.1f ms, error rate %.4f, %.0f polls/s, %d waiting",
                        step.arrivalRate, step.p99Ms, step.errorRate, step.pollsPerSecond, step.waitingDevices))
            }
            if let rate = findMax.knee.arrivalRate {
                lines.append(
                    String(format: "  KNEE: %.0f arrivals/s (%.0f polls/s, %d waiting)", rate, findMax.knee.pollsPerSecond ?? 0, findMax.knee.waitingDevices ?? 0)
                        + (findMax.knee.brokeAt.map { String(format: "; broke at %.0f/s: ", $0) + (findMax.knee.reason ?? "") } ?? "; never broke"))
            } else {
                lines.append("  KNEE: none (the first step broke: \(findMax.knee.reason ?? "?"))")
            }
        }
        for threshold in thresholds { lines.append("  [\(threshold.passed ? "PASS" : "FAIL")] threshold \(threshold.name): \(threshold.detail)") }
        return lines
    }
}
