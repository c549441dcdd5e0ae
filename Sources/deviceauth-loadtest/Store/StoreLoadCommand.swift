import ArgumentParser
import DeviceAuthorization
import Foundation
import Logging
import RedisClient

/// `deviceauth-loadtest store`: drives `DeviceCodeStore` directly, to measure the store and Redis without HTTP.
struct StoreLoadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store",
        abstract: "Drive DeviceCodeStore directly (issue, poll, approve or a mix) for a fixed duration.",
        discussion: """
            poll: polls a pool of pending codes issued up front (interval 0, so every poll runs the full script). \
            issue: issues codes. approve: issues a code, then approves it (only the approval is timed). \
            mixed: issue → poll (pending) → approve → poll (redeemed), each timed. Keys use a fresh prefix \
            and expire by themselves (--lifetime).
            """
    )

    enum Operation: String, ExpressibleByArgument, CaseIterable, Sendable {
        case poll, issue, approve, mixed
    }

    @Option(name: .customLong("redis-url"), help: "redis://host:port/db or unix:///path (env REDIS_URL).")
    var redisURL: String?

    @Option(help: "poll, issue, approve or mixed.")
    var op: Operation = .mixed

    @Option(help: "Concurrent tasks.")
    var concurrency = 16

    @Option(help: "Seconds to run.")
    var duration = 10

    @Option(help: "Redis connections of the client.")
    var connections = 2

    @Option(name: .customLong("pool-size"), help: "Pending codes issued up front for --op poll.")
    var poolSize = 1000

    @Option(help: "Lifetime in seconds of the codes the run creates.")
    var lifetime = 60

    @Option(name: .customLong("key-prefix"), help: "Key prefix (default: a fresh loadtest prefix).")
    var keyPrefix: String?

    @Option(help: "Write the report as JSON to this file.")
    var json: String?

    @Option(help: "Write a self-contained HTML report to this file.")
    var html: String?

    func run() async throws {
        guard let url = redisURL ?? ProcessInfo.processInfo.environment["REDIS_URL"] else { throw ValidationError("give --redis-url or REDIS_URL") }
        guard concurrency > 0, duration > 0, connections > 0, poolSize > 0, lifetime > 0 else {
            throw ValidationError("--concurrency, --duration, --connections, --pool-size and --lifetime must be positive")
        }
        var redisConfiguration = try RedisClientConfiguration(url: url)
        redisConfiguration.connectionCount = connections
        let redis = RedisClient(configuration: redisConfiguration)
        defer { redis.shutdown() }
        let prefix = keyPrefix ?? "loadtest-\(UInt32.random(in: 0...UInt32.max))"
        let secret = (0..<32).map { _ in UInt8.random(in: 0...255) }
        let store = DeviceCodeStore(client: redis, configuration: DeviceCodeStoreConfiguration(keyPrefix: prefix, secret: secret, interval: 0))
        let lifetime = Duration.seconds(self.lifetime)
        let clientID = "loadtest-store"

        var pool: [String] = []
        if op == .poll {
            for _ in 0..<poolSize { pool.append(try await store.issue(clientID: clientID, scopes: [], lifetime: lifetime).deviceCode) }
        }
        HTTPLoadCommand.say("deviceauth-loadtest store: op \(op.rawValue), concurrency \(concurrency), duration \(duration) s, connections \(connections), prefix \(prefix)\n")
        let recorder = Recorder()
        let progress = Progress(recorder: recorder, total: nil)
        let progressTask = Task { await progress.run() }
        let deadline = ContinuousClock.now + .seconds(duration)
        let op = self.op
        let concurrency = self.concurrency
        let codes = pool
        await withTaskGroup(of: Void.self) { group in
            for worker in 0..<concurrency {
                group.addTask {
                    var next = worker
                    while ContinuousClock.now < deadline {
                        switch op {
                        case .poll:
                            _ = await Self.timed("poll", recorder) { try await store.poll(deviceCode: codes[next % codes.count], clientID: clientID) }
                            next += concurrency
                        case .issue:
                            _ = await Self.timed("issue", recorder) { try await store.issue(clientID: clientID, scopes: [], lifetime: lifetime) }
                        case .approve:
                            guard let issued = try? await store.issue(clientID: clientID, scopes: [], lifetime: lifetime) else { continue }
                            _ = await Self.timed("approve", recorder) { try await store.approve(userCode: issued.userCode, userID: "user-\(worker)") }
                        case .mixed:
                            guard let issued = await Self.timed("issue", recorder, { try await store.issue(clientID: clientID, scopes: [], lifetime: lifetime) }) else { continue }
                            _ = await Self.timed("poll (pending)", recorder) { try await store.poll(deviceCode: issued.deviceCode, clientID: clientID) }
                            _ = await Self.timed("approve", recorder) { try await store.approve(userCode: issued.userCode, userID: "user-\(worker)") }
                            _ = await Self.timed("poll (redeem)", recorder) { try await store.poll(deviceCode: issued.deviceCode, clientID: clientID) }
                        }
                        recorder.flowDone()
                    }
                }
            }
        }
        progressTask.cancel()
        _ = await progressTask.value
        let report = RunReport(
            mode: "store", target: url.replacingOccurrences(of: #"//[^@/]*@"#, with: "//***@", options: .regularExpression),
            settings: ["op": op.rawValue, "concurrency": "\(concurrency)", "duration": "\(duration) s", "connections": "\(connections)"],
            elapsed: ContinuousClock.now - recorder.start, recorder: recorder, invariants: [])
        try report.publish(json: json, html: html)
        let errors = report.rows.filter { !$0.outcome.hasPrefix("ok") }.reduce(0) { $0 + $1.count }
        if errors > 0 { print("\(errors) operations failed") }
    }

    /// Runs one store call, recording its latency under `name` with outcome `ok …` or the error code.
    private static func timed<T: Sendable>(_ name: String, _ recorder: Recorder, _ body: () async throws -> T) async -> T? {
        let began = ContinuousClock.now
        do {
            let value = try await body()
            var outcome = "ok"
            if let poll = value as? PollOutcome { outcome = "ok " + (poll.oauthError ?? "token") }
            recorder.record(MetricKey(endpoint: "store." + name, outcome: outcome), latency: .now - began)
            return value
        } catch let error as DeviceAuthorizationError {
            recorder.record(MetricKey(endpoint: "store." + name, outcome: "\(error.code)"), latency: .now - began, isError: true)
        } catch let error as RedisError {
            recorder.record(MetricKey(endpoint: "store." + name, outcome: "redis \(error.code)"), latency: .now - began, isError: true)
        } catch {
            recorder.record(MetricKey(endpoint: "store." + name, outcome: "error"), latency: .now - began, isError: true)
        }
        return nil
    }
}
