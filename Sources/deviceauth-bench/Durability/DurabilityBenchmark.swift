import ArgumentParser
import DeviceAuthorization
import RedisClient

/// `deviceauth-bench durability`: what ``DeviceCodeStoreConfiguration/durability`` (`WAIT 1`)
/// costs, on a private primary with one replica, in the same run: ours is the store with
/// `WAIT 1`, the baseline the same store without it.
///
/// Three operations, each `--concurrency` tasks for `--duration` seconds:
/// - `durability.poll`: pending polls (they never wait; the line shows they pay nothing);
/// - `durability.approve`: issue + approve (the approval waits for the replica);
/// - `durability.redeem`: issue + approve + the redeeming poll as the token endpoint makes it (the approval and the sealing `redeem` script wait).
struct DurabilityBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "durability",
        abstract: "Poll, approve and redemption throughput and latency with WAIT 1 against without, on a primary with one replica."
    )

    @Option(name: .customLong("redis-server"), help: ArgumentHelp("The redis-server to start (default: found on PATH).", valueName: "path"))
    var redisServerPath: String?

    @Option(help: "Seconds measured per run, after the warm-up.")
    var duration: Double = 5

    @Option(help: "Seconds of warm-up before each run (not measured).")
    var warmup: Double = 1

    @Option(help: "Concurrent tasks.")
    var concurrency: Int = 16

    @Option(help: "Milliseconds WAIT may take.")
    var timeoutMs: Int = 500

    func validate() throws {
        guard duration > 0, warmup >= 0, concurrency >= 1 else { throw ValidationError("--duration > 0, --warmup >= 0, --concurrency >= 1") }
        guard (1...4_000).contains(timeoutMs) else { throw ValidationError("--timeout-ms must be 1…4000 (below the 5 s command timeout)") }
    }

    func run() async throws {
        let executable = try ChildProcess.locate("redis-server", explicit: redisServerPath)
        let primary = try await RedisServerProcess.start(executable: executable, arguments: ["--repl-diskless-sync-delay", "0"])
        let replica: RedisServerProcess
        do {
            replica = try await RedisServerProcess.start(executable: executable, arguments: ["--replicaof", "127.0.0.1", "\(primary.port)"])
        } catch {
            await primary.stop()
            throw error
        }
        do {
            try await measure(primaryURL: "redis://127.0.0.1:\(primary.port)/0", replicaPort: replica.port)
        } catch {
            await replica.stop()
            await primary.stop()
            throw error
        }
        await replica.stop()
        await primary.stop()
    }

    /// What the redeeming poll mints: as many bytes as a JWT access token answer with a refresh token.
    static let tokenAnswer = [UInt8](repeating: UInt8(ascii: "x"), count: 760)

    private func measure(primaryURL: String, replicaPort: Int) async throws {
        let client = try RedisClient(url: primaryURL)
        defer { client.shutdown() }
        try await Self.waitForReplica(client)
        let durable = DeviceCodeStore(
            client: client,
            configuration: DeviceCodeStoreConfiguration(
                keyPrefix: "dw", secret: StoreBenchmark.secret, durability: try RedisDurability(replicas: 1, timeout: .milliseconds(timeoutMs))))
        let plain = DeviceCodeStore(client: client, configuration: DeviceCodeStoreConfiguration(keyPrefix: "dn", secret: StoreBenchmark.secret))
        let window = Duration.seconds(duration)
        let warm = Duration.seconds(warmup)
        let settings = "tasks=\(concurrency) window=\(duration)s warmup=\(warmup)s WAIT 1 \(timeoutMs)ms | primary \(primaryURL), replica 127.0.0.1:\(replicaPort) (loopback)"

        Console.progress("issuing pending grants for the poll runs")
        let pendingDurable = try await PendingGrants.issue(1_000, store: durable)
        let pendingPlain = try await PendingGrants.issue(1_000, store: plain)
        let cursor = RoundRobin(count: 1_000)
        typealias Operation = @Sendable (DeviceCodeStore) async throws -> Void
        let operations: [(name: String, run: Operation)] = [
            (
                "poll",
                { store in
                    let grants = store === durable ? pendingDurable : pendingPlain
                    try await StoreBenchmark.pollPending(store, grants[cursor.next()].deviceCode)
                }
            ),
            (
                "approve",
                { store in
                    let issued = try await store.issue(clientID: PendingGrants.clientID, scopes: PendingGrants.scopes, interval: 0)
                    try await store.approve(userCode: issued.userCode, userID: "bench-person")
                }
            ),
            (
                "redeem",
                { store in
                    let issued = try await store.issue(clientID: PendingGrants.clientID, scopes: PendingGrants.scopes, interval: 0)
                    try await store.approve(userCode: issued.userCode, userID: "bench-person")
                    // As the token endpoint redeems: mint (a token answer's size), then the sealing `redeem` script.
                    let result = try await store.poll(deviceCode: issued.deviceCode, clientID: PendingGrants.clientID, origin: PendingGrants.origin) { _ in
                        Self.tokenAnswer
                    }
                    guard case .answer(let answer) = result, answer.source == .minted else {
                        throw ChildProcess.Failure(description: "a redeeming poll answered \(result)")
                    }
                }
            ),
        ]
        for operation in operations {
            // Alternating order, so neither side always runs on the warmer server.
            Console.progress("\(operation.name): without durability")
            let without = try await LoadGenerator.run(concurrency: concurrency, warmup: warm, duration: window, executors: []) { try await operation.run(plain) }
            Console.progress("\(operation.name): with WAIT 1")
            let with = try await LoadGenerator.run(concurrency: concurrency, warmup: warm, duration: window, executors: []) { try await operation.run(durable) }
            BenchComparison(
                name: "durability.\(operation.name).wait1-vs-none", ours: with.operationsPerSecond, baseline: without.operationsPerSecond, unit: "ops/s",
                detail: "with WAIT 1: \(with.latency.summary) | without: \(without.latency.summary) | \(settings)"
            ).print()
        }
    }

    /// Waits until the replica is online (its initial sync done), 30 s at most.
    private static func waitForReplica(_ client: RedisClient) async throws {
        for _ in 0..<300 {
            let info = try await client.send("INFO", "replication").string ?? ""
            if info.contains("state=online") { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ChildProcess.Failure(description: "the replica did not come online within 30 s")
    }
}
