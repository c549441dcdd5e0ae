import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import RedisClient

/// `deviceauth-loadtest http`: many devices through the whole RFC 8628 flow against the given nodes.
struct HTTPLoadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "http",
        abstract: "Simulate devices and users running RFC 8628 against one or more API nodes.",
        discussion: """
            Every request goes to a random node. Approve/deny users use the verification page with the \
            trusted proxy header; abandoned devices must end with expired_token; misbehaving devices poll \
            too fast and must get slow_down with intervals 5 s apart. Lifetimes and intervals come from the \
            server's per-client configuration (see deploy/loadtest-config.json). Exit status 1 if an invariant fails.

            Faults (Tests/Faults): --fault-tolerant waits out RFC-shaped 503s (Retry-After), sends requests whose \
            connection failed to another node, re-sends device_authorization after a lost answer (a duplicate only \
            leaves an unused grant), never re-sends a token poll at once (the device polls again after \
            max(interval, Retry-After)), and after a lost approval reloads the page and decides again only if the \
            request is still pending. Every redeemed code is polled again right after its token and after the run: \
            a second token always fails. --expect-lost-approvals counts writes acknowledged just before a fault \
            and then missing instead of failing on them.

            Refresh devices (--mix …,refresh=N; client --refresh-client, which must have refresh tokens) are approved, \
            then rotate their refresh token --refreshes times on random nodes, each time with the newest one; a \
            rotation is sent twice at once to two nodes with --refresh-race-percent, after which reuse detection must \
            have revoked the family. A device whose family is live at the end revokes it (--refresh-revoke-percent) \
            or presents its previous, rotated token again (--refresh-replay-percent), and refreshes once more: that \
            must be refused with invalid_grant. No family may ever have two live refresh tokens.
            """
    )

    @Option(help: "Comma-separated base URLs of the API nodes (env NODE_URLS when omitted).")
    var nodes: String?

    @Option(help: "Devices to simulate (default: unlimited, bounded by --duration).")
    var devices: Int?

    @Option(help: "Devices in flight at once.")
    var concurrency = 50

    @Option(help: "Seconds after which no new device starts; devices in flight finish.")
    var duration: Int?

    @Option(help: "Scenario weights.")
    var mix = "approve=60,deny=15,abandon=10,misbehave=15"

    @Option(name: .customLong("think-time-ms"), help: "User think time before deciding: N or MIN-MAX milliseconds.")
    var thinkTime = "200-1000"

    @Option(help: "Seed for scenario assignment, node choice and think times (default: random).")
    var seed: UInt64?

    @Option(help: "Write the report as JSON to this file.")
    var json: String?

    @Option(help: "Write a self-contained HTML report (inline SVG charts) to this file.")
    var html: String?

    @Option(name: .customLong("user-header"), help: "Trusted proxy header naming the user (the server's user_header).")
    var userHeader = "X-Forwarded-User"

    @Option(help: "client_id for approve and deny devices.")
    var client = "loadtest"

    @Option(name: .customLong("abandon-client"), help: "client_id for abandoned devices (give it a short code lifetime).")
    var abandonClient = "loadtest-abandon"

    @Option(name: .customLong("misbehave-client"), help: "client_id for misbehaving devices.")
    var misbehaveClient = "loadtest-misbehave"

    @Option(name: .customLong("refresh-client"), help: "client_id for refresh devices (it must have refresh tokens).")
    var refreshClient = "loadtest-refresh"

    @Option(help: "Rotations of its refresh token each refresh device makes.")
    var refreshes = 3

    @Option(name: .customLong("refresh-race-percent"), help: "Chance (percent) that a rotation is sent twice at once to two nodes (the family then dies).")
    var refreshRacePercent = 20

    @Option(name: .customLong("refresh-revoke-percent"), help: "Share (percent) of refresh devices with a live family that revoke it at the end, then refresh once more.")
    var refreshRevokePercent = 30

    @Option(name: .customLong("refresh-replay-percent"), help: "Share (percent) of refresh devices with a live family that present their rotated token again at the end.")
    var refreshReplayPercent = 20

    @Option(name: .customLong("refresh-pause-ms"), help: "Pause before each refresh: N or MIN-MAX milliseconds.")
    var refreshPause = "50-300"

    @Option(name: .customLong("request-timeout"), help: "Per-request timeout in seconds.")
    var requestTimeout = 30

    @Option(help: "HTTP connections per node at most (default: about twice the concurrency per node). Thousands of devices in flight need not mean thousands of sockets.")
    var connectionsPerNode: Int?

    @Flag(name: .customLong("allow-remote"), help: "Allow node URLs that are not loopback addresses.")
    var allowRemote = false

    @Flag(name: .customLong("retry-unavailable"), help: "Wait out 503 temporarily_unavailable (Retry-After) and retry instead of failing; a 503 must carry Retry-After.")
    var retryUnavailable = false

    @Flag(help: "Send a request whose connection failed to another node, like a load balancer; see the retry policy in --help.")
    var failover = false

    @Flag(name: .customLong("replay-probe"), help: "After its token, each approved device polls once more and must get invalid_grant.")
    var replayProbe = false

    @Flag(name: .customLong("fault-tolerant"), help: "Faults are injected during the run: --retry-unavailable, --failover and --replay-probe together.")
    var faultTolerant = false

    @Flag(
        name: .customLong("expect-lost-approvals"),
        help: "Count approvals, denials and codes acknowledged just before a fault and later missing (a Redis restart losing its last writes) instead of failing; report them.")
    var expectLostApprovals = false

    @Option(name: .customLong("loss-window-ms"), help: "With --expect-lost-approvals: a lost write must have been acknowledged at most this long before a fault the harness saw.")
    var lossWindowMs = 3000

    // MARK: Open model (issue 18)

    @Option(help: "closed: --concurrency devices in flight (the default); open: devices arrive at a rate, each waiting as a record in a due-time heap.")
    var model = "closed"

    @Option(name: .customLong("arrival-rate"), help: "Open model: new devices per second for --duration (e.g. 50 or 50/s).")
    var arrivalRate: String?

    @Option(help: "Open model: arrival rate ramped linearly from A to B devices per second over --duration (A-B).")
    var ramp: String?

    @Option(help: "Open model: arrival steps, \"rate:seconds,rate:seconds\".")
    var steps: String?

    @Option(name: .customLong("approval-delay"), help: "Open model: seconds until the person decides: lognormal[:MEDIAN[:SIGMA[:MIN-MAX]]], MIN-MAX (uniform) or N.")
    var approvalDelay = "lognormal:20:0.75:5-120"

    @Option(name: .customLong("open-client"), help: "Open model: client_id of approve and deny devices (its interval and lifetime are the server's).")
    var openClient = "loadtest-open"

    @Option(name: .customLong("open-abandon-client"), help: "Open model: client_id of abandoned devices (they poll until expired_token).")
    var openAbandonClient = "loadtest-open-abandon"

    @Option(help: "Open model: worker event loops, each owning a share of the waiting devices (default: the number of cores).")
    var workers: Int?

    @Option(name: .customLong("source-addresses"), help: "Open model: loopback source addresses connections bind to in turn (127.0.0.1 … 127.0.0.N).")
    var sourceAddresses = 1

    @Option(help: "Open model: seconds after the last arrival that waiting devices may take to finish (the rest are reported as still waiting).")
    var drain: Double = 180

    @Option(name: .customLong("timeline-seconds"), help: "Open model: the timeline's period in seconds.")
    var timelineSeconds = 1

    @Flag(name: .customLong("find-max"), help: "Open model: raise the arrival rate step by step until --max-p99-ms or --max-error-rate breaks; report the knee.")
    var findMax = false

    @Option(name: .customLong("find-max-steps"), help: "With --find-max: START:STEP:SECONDS:MAX arrivals per second.")
    var findMaxSteps = "20:20:15:2000"

    @Option(name: .customLong("max-p99-ms"), help: "Open model: p99 objective for token polls (ms, from the intended send time); exit status 3 if broken.")
    var maxP99Ms: Double?

    @Option(name: .customLong("max-error-rate"), help: "Open model: largest share of requests that may fail (5xx, transport); exit status 3 if broken.")
    var maxErrorRate: Double?

    func run() async throws {
        if model == "open" { return try await runOpen() }
        guard model == "closed" else { throw ValidationError("--model closed or open") }
        let nodeList = (nodes ?? ProcessInfo.processInfo.environment["NODE_URLS"] ?? "")
            .split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            .map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
        guard !nodeList.isEmpty else { throw ValidationError("give --nodes URL[,URL…] or NODE_URLS") }
        for node in nodeList {
            guard let url = URL(string: node), url.scheme == "http" || url.scheme == "https", let host = url.host else {
                throw ValidationError("not an http(s) URL: \(node)")
            }
            if !allowRemote && !["127.0.0.1", "localhost", "::1", "[::1]"].contains(host) && !host.hasPrefix("127.") {
                throw ValidationError("\(node) is not a loopback address; pass --allow-remote to load-test it")
            }
        }
        guard devices != nil || duration != nil else { throw ValidationError("give --devices and/or --duration to bound the run") }
        if let devices, devices <= 0 { throw ValidationError("--devices must be positive") }
        if let duration, duration <= 0 { throw ValidationError("--duration must be positive") }
        guard concurrency > 0 else { throw ValidationError("--concurrency must be positive") }
        if let connectionsPerNode, connectionsPerNode <= 0 { throw ValidationError("--connections-per-node must be positive") }
        guard let scenarioMix = ScenarioMix(parsing: mix) else { throw ValidationError("--mix: e.g. approve=60,deny=15,abandon=10,misbehave=15,refresh=10") }
        let think = try Self.parseRange(thinkTime)
        guard refreshes >= 0 else { throw ValidationError("--refreshes must not be negative") }
        for (name, percent) in [
            ("--refresh-race-percent", refreshRacePercent), ("--refresh-revoke-percent", refreshRevokePercent),
            ("--refresh-replay-percent", refreshReplayPercent),
        ] where !(0...100).contains(percent) {
            throw ValidationError("\(name) must be 0…100")
        }
        guard refreshRevokePercent + refreshReplayPercent <= 100 else { throw ValidationError("--refresh-revoke-percent + --refresh-replay-percent must not exceed 100") }
        let refreshSettings = RefreshSettings(
            rotations: refreshes, racePercent: refreshRacePercent, revokePercent: refreshRevokePercent,
            replayPercent: refreshReplayPercent, pause: try Self.parseRange(refreshPause, option: "--refresh-pause-ms"))
        let seed = seed ?? UInt64.random(in: 0...UInt64.max)

        var httpConfiguration = HTTPClient.Configuration()
        httpConfiguration.redirectConfiguration = .disallow
        httpConfiguration.connectionPool = .init(
            idleTimeout: .seconds(60),
            concurrentHTTP1ConnectionsPerHostSoftLimit: connectionsPerNode ?? max(8, concurrency * 2 / nodeList.count + 1))
        // With failover, a refused connection must fail at once (and go to another node), not be retried until the deadline.
        if failover || faultTolerant { httpConfiguration.connectionPool.retryConnectionEstablishment = false }
        httpConfiguration.timeout = .init(connect: .seconds(10), read: .seconds(Int64(requestTimeout)))
        let http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: httpConfiguration)

        let outcome: (report: RunReport, failed: Bool)
        do {
            outcome = try await runLoad(http: http, nodes: nodeList, mix: scenarioMix, think: think, refresh: refreshSettings, seed: seed)
        } catch {
            try? await http.shutdown()
            throw error
        }
        try await http.shutdown()
        try outcome.report.publish(json: json, html: html)
        if outcome.failed { throw ExitCode.failure }
    }

    func runLoad(
        http: HTTPClient, nodes: [String], mix: ScenarioMix, think: ClosedRange<Int>, refresh: RefreshSettings,
        seed: UInt64
    ) async throws -> (report: RunReport, failed: Bool) {
        let scraper = MetricsScraper(http: http, nodes: nodes)
        let replayedBefore = await scraper.perNode("deviceauth_grants_replayed_total")
        let refreshing = mix.weights.contains { $0.0 == .refresh && $0.1 > 0 }
        var reusesBefore: [String: Double] = [:]
        if refreshing { reusesBefore = await scraper.perNode(Self.reuseCounter) }
        let recorder = Recorder()
        let policy = FaultPolicy(
            retryUnavailable: retryUnavailable || faultTolerant, failover: failover || faultTolerant,
            replayProbe: replayProbe || faultTolerant)
        let expectations = FaultExpectations(
            policy: policy, expectLostApprovals: expectLostApprovals,
            lossWindow: .milliseconds(max(0, lossWindowMs)))
        let client = NodeClient(http: http, nodes: nodes, recorder: recorder, timeout: .seconds(Int64(requestTimeout)), faults: expectations.log)
        let settings = SimulationSettings(
            clients: [
                .approve: self.client, .deny: self.client,
                .abandon: abandonClient, .misbehave: misbehaveClient, .refresh: refreshClient,
            ],
            userHeader: userHeader, thinkTime: think, faults: policy, refresh: refresh)
        let simulation = DeviceSimulation(client: client, settings: settings)
        var rng = SplitMix64(seed: seed)
        let planned = devices.map { mix.assign(count: $0, rng: &rng) }
        let stopStarting = duration.map { ContinuousClock.now + .seconds($0) }
        Self.say(
            "deviceauth-loadtest http: \(nodes.count) node(s) \(nodes.joined(separator: ",")), devices \(devices.map(String.init) ?? "unbounded"), "
                + "concurrency \(concurrency), duration \(duration.map { "\($0) s" } ?? "unbounded"), mix \(mix), think \(think.lowerBound)-\(think.upperBound) ms, seed \(seed)\n")
        let progress = Progress(recorder: recorder, total: devices)
        let progressTask = Task { await progress.run() }
        defer { progressTask.cancel() }

        var results: [DeviceResult] = []
        await withTaskGroup(of: DeviceResult.self) { group in
            var next = 0
            func canStart() -> Bool {
                if let devices, next >= devices { return false }
                if let stopStarting, ContinuousClock.now >= stopStarting { return false }
                return true
            }
            func start() {
                let index = next
                let scenario = planned?[index] ?? mix.draw(rng: &rng)
                let deviceSeed = seed &+ UInt64(index + 1) &* 0x9E37_79B9_7F4A_7C15
                next += 1
                progress.started()
                group.addTask { await simulation.run(index: index, scenario: scenario, seed: deviceSeed) }
            }
            while next < concurrency && canStart() { start() }
            for await result in group {
                results.append(result)
                recorder.flowDone()
                if canStart() { start() }
            }
        }
        progressTask.cancel()
        _ = await progressTask.value
        if policy.replayProbe {
            // Once more, after every fault: a redemption lost by a Redis restart would show here as a second token.
            let redeemed = results.indices.filter { results[$0].deviceCode != nil && !results[$0].tokens.isEmpty }
            for chunk in stride(from: 0, to: redeemed.count, by: 32) {
                let batch = Array(redeemed[chunk..<min(chunk + 32, redeemed.count)])
                let probed = await withTaskGroup(of: (Int, DeviceResult).self) { group in
                    for index in batch {
                        let device = results[index]
                        group.addTask {
                            var copy = device
                            await simulation.finalProbe(&copy, seed: seed &+ UInt64(index) &* 31)
                            return (index, copy)
                        }
                    }
                    var done: [(Int, DeviceResult)] = []
                    for await item in group { done.append(item) }
                    return done
                }
                for (index, device) in probed { results[index] = device }
            }
        }
        let elapsed = ContinuousClock.now - recorder.start
        let replayedAfter = await scraper.perNode("deviceauth_grants_replayed_total")
        // Nodes stopped during the run took their counters with them: with failover, compare the nodes that answered both times.
        var before: Double?
        var after: Double?
        if replayedBefore.count == nodes.count, replayedAfter.count == nodes.count || (policy.failover && !replayedAfter.isEmpty) {
            let answered = replayedAfter.keys.filter { replayedBefore[$0] != nil }
            before = answered.reduce(0) { $0 + replayedBefore[$1]! }
            after = answered.reduce(0) { $0 + replayedAfter[$1]! }
        }
        // Reuse detections: only when every node answered both times (a node's counter dies with it).
        var reusesCounted: Double?
        if refreshing {
            let reusesAfter = await scraper.perNode(Self.reuseCounter)
            if reusesBefore.count == nodes.count, reusesAfter.count == nodes.count {
                reusesCounted = reusesAfter.values.reduce(0, +) - reusesBefore.values.reduce(0, +)
            }
        }
        let sorted = results.sorted { $0.index < $1.index }
        var (invariants, faultSummary) = Invariants.check(
            sorted, replayedBefore: before, replayedAfter: after,
            faults: expectations, reusesCounted: reusesCounted)
        if refreshing, reusesCounted == nil {
            invariants.append(
                InvariantResult(
                    name: "reuse detections (\(Self.reuseCounter), all nodes)", passed: policy.failover,
                    detail: "could not read /metrics from every node" + (policy.failover ? " (nodes were stopped)" : "")))
        }
        if policy.failover, replayedAfter.count < nodes.count {
            let down = nodes.filter { replayedAfter[$0] == nil }
            invariants.append(
                InvariantResult(
                    name: "note: nodes that did not answer /metrics at the end", passed: true,
                    detail: "\(down.joined(separator: ",")) (their counters are not in the replay check)"))
        }
        var scenarioCounts: [String: Int] = [:]
        for result in results { scenarioCounts[result.scenario.rawValue, default: 0] += 1 }
        var report = RunReport(
            mode: "http", target: nodes.joined(separator: ","),
            settings: [
                "nodes": "\(nodes.count)", "devices": "\(results.count)", "concurrency": "\(concurrency)",
                "duration": duration.map { "\($0) s" } ?? "-", "mix": "\(mix)", "think_time_ms": "\(think.lowerBound)-\(think.upperBound)", "seed": "\(seed)",
            ], elapsed: elapsed, recorder: recorder, invariants: invariants, scenarioCounts: scenarioCounts)
        if refreshing {
            report.settings["refresh"] =
                "\(refresh.rotations) rotations, race \(refresh.racePercent)%, revoke \(refresh.revokePercent)%, "
                + "replay \(refresh.replayPercent)%, pause \(refresh.pause.lowerBound)-\(refresh.pause.upperBound) ms, client \(refreshClient)"
        }
        if sorted.contains(where: { $0.refresh != nil }) {
            report.refresh = RefreshSummary(sorted, reuseDetections: reusesCounted)
        }
        if policy.isActive || policy.replayProbe || expectLostApprovals {
            faultSummary.maxLatencyMs = report.rows.map(\.maxMs).max() ?? 0
            report.faults = faultSummary
        }
        return (report, invariants.contains { !$0.passed })
    }

}

/// Reads Prometheus counters from every node's `/metrics`.
struct MetricsScraper: Sendable {
    let http: HTTPClient
    let nodes: [String]

    /// The sum of a counter over all nodes (all label sets), or `nil` if a node did not answer.
    func sum(_ name: String) async -> Double? {
        let values = await perNode(name)
        return values.count == nodes.count ? values.values.reduce(0, +) : nil
    }

    /// A counter per node (all label sets summed); nodes that do not answer are left out.
    func perNode(_ name: String) async -> [String: Double] {
        var values: [String: Double] = [:]
        for node in nodes {
            do {
                let response = try await http.execute(HTTPClientRequest(url: node + "/metrics"), timeout: .seconds(10))
                guard response.status == .ok else { continue }
                let text = String(buffer: try await response.body.collect(upTo: 16 << 20))
                var total = 0.0
                for line in text.split(separator: "\n") where line.hasPrefix(name) {
                    let rest = line.dropFirst(name.count)
                    guard rest.first == " " || rest.first == "{" else { continue }
                    if let value = line.split(separator: " ").last.flatMap({ Double($0) }) { total += value }
                }
                values[node] = total
            } catch {
                continue
            }
        }
        return values
    }
}
