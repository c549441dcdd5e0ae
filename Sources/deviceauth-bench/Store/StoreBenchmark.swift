import ArgumentParser
import DeviceAuthorization
import RedisClient
import Synchronization

/// `deviceauth-bench store`: ``DeviceCodeStore/poll(deviceCode:clientID:)`` of pending grants,
/// against `redis-benchmark` sending the store's own poll script (`FCALL` of its function, same arguments) to
/// one grant's record; and the Redis memory a pending grant takes.
///
/// Grants are issued with interval 0, so every poll answers `authorization_pending` (a device
/// waiting for its person) and writes its poll time, as in steady state.
///
/// For each concurrency C it prints `BENCH store.poll.c<C>`: ours is C tasks polling ONE grant
/// through the store, like redis-benchmark's single key; the detail line also gives ours with the
/// tasks spread over all issued grants. For C = 64 it also prints `store.poll.c64.vs-pipelined-P16`
/// (baseline `redis-benchmark -c 64 -P 16`). Last, `store.bytes-per-pending-grant` compares the
/// `used_memory` growth per grant while issuing `--grants` (which counts the keyspace and TTL
/// tables too: what a grant really costs) with the 250-byte target; the detail line adds the
/// `MEMORY USAGE` of the grant's one key.
struct StoreBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store",
        abstract: "DeviceCodeStore poll throughput and latency against redis-benchmark, and bytes per pending grant."
    )

    @OptionGroup var redis: RedisOptions

    @OptionGroup var measurement: MeasurementOptions

    @Option(help: "Pending grants to issue (polled round-robin, and measured for memory).")
    var grants: Int = 1_000

    @Option(name: .customLong("memory-sample"), help: "Grants whose record is measured with MEMORY USAGE.")
    var memorySample: Int = 200

    /// The concurrency whose ours is also compared with a pipelined redis-benchmark.
    static let pipelinedComparisonConcurrency = 64

    /// The memory target of one pending grant (issue 16: 250 B of used_memory), the baseline of the memory line.
    static let bytesPerGrantBudget = 250.0

    /// A fixed 32-byte HMAC secret: runs are comparable, and nothing here is secret.
    static let secret: [UInt8] = Array(0..<32)

    func validate() throws {
        guard grants >= 1 else { throw ValidationError("--grants must be at least 1") }
        guard memorySample >= 1 else { throw ValidationError("--memory-sample must be at least 1") }
    }

    func run() async throws {
        let window = Duration.seconds(measurement.duration)
        let warmupPeriod = Duration.seconds(measurement.warmup)
        let sharedServer = redis.redisURL != nil
        try await redis.withTarget(connectionCount: measurement.connections) { target in
            try await target.withClient { client in
                let store = DeviceCodeStore(client: client, configuration: DeviceCodeStoreConfiguration(secret: Self.secret))

                // The single grant every task polls in the comparison runs. Issuing and polling it
                // first also loads both scripts, so the memory delta below holds only grants.
                Console.progress("issuing the single-key grant and checking the baseline command")
                let single = try await PendingGrants.issue(1, store: store)[0]
                let command = try await PendingGrants.verify(single, store: store, client: client)

                Console.progress("issuing \(grants) pending grants for \(PendingGrants.clientID) (interval 0)")
                let memoryBefore = try await GrantMemory.usedMemory(client)
                let issueStart = ContinuousClock.now
                let spread = try await PendingGrants.issue(grants, store: store)
                let issueTime = ContinuousClock.now - issueStart
                let memoryAfter = try await GrantMemory.usedMemory(client)
                Console.progress("issued in \(Console.fixed(issueTime.seconds, 2))s (\(Console.fixed(Double(grants) / issueTime.seconds, 0)) grants/s)")

                let sampleKeys = spread.prefix(memorySample).map(\.deviceKey)
                let fresh = try await GrantMemory.measure(client, recordKeys: sampleKeys)

                let cursor = RoundRobin(count: spread.count)
                let executors = measurement.callerExecutors
                for tasks in measurement.concurrency.values {
                    Console.progress(
                        "c=\(tasks): store.poll on 1 grant (callers: \(measurement.callers)), \(measurement.connections) connection(s), \(measurement.duration)s after \(measurement.warmup)s warm-up"
                    )
                    let ours = try await LoadGenerator.run(concurrency: tasks, warmup: warmupPeriod, duration: window, executors: executors) {
                        try await Self.pollPending(store, single.deviceCode)
                    }
                    Console.progress("c=\(tasks): store.poll over \(spread.count) grants")
                    let oursSpread = try await LoadGenerator.run(concurrency: tasks, warmup: warmupPeriod, duration: window, executors: executors) {
                        try await Self.pollPending(store, spread[cursor.next()].deviceCode)
                    }
                    Console.progress("c=\(tasks): redis-benchmark -c \(tasks)")
                    let baseline = try await target.redisBenchmark.run(command: command, clients: tasks, duration: window)
                    let settings =
                        "callers=\(measurement.callers) tasks=\(tasks) connections=\(measurement.connections) window=\(measurement.duration)s warmup=\(measurement.warmup)s"
                    let oursDetail =
                        "ours(1 grant): \(ours.latency.summary) ops=\(ours.operations)"
                        + " | ours(\(spread.count) grants): \(Console.fixed(oursSpread.operationsPerSecond, 0)) ops/s \(oursSpread.latency.summary)"
                    BenchComparison(
                        name: "store.poll.c\(tasks)",
                        ours: ours.operationsPerSecond, baseline: baseline.requestsPerSecond, unit: "ops/s",
                        detail: "\(oursDetail) \(settings) | baseline: \(baseline.summary) FCALL poll 1 key | \(target.summary)"
                    ).print()

                    guard tasks == Self.pipelinedComparisonConcurrency else { continue }
                    Console.progress("c=\(tasks): redis-benchmark -c \(tasks) -P \(measurement.pipelineDepth)")
                    let pipelined = try await target.redisBenchmark.run(
                        command: command, clients: tasks,
                        pipeline: measurement.pipelineDepth, duration: window)
                    BenchComparison(
                        name: "store.poll.c\(tasks).vs-pipelined-P\(measurement.pipelineDepth)",
                        ours: ours.operationsPerSecond, baseline: pipelined.requestsPerSecond, unit: "ops/s",
                        detail: "\(oursDetail) \(settings) | baseline: \(pipelined.summary) FCALL poll 1 key | \(target.summary)"
                    ).print()
                }

                // The same grants again, now that every one has been polled (the record gained `l`).
                let polled = try await GrantMemory.measure(client, recordKeys: sampleKeys)
                let deltaPerGrant = Double(memoryAfter - memoryBefore) / Double(grants)
                let caveat = sharedServer ? " (shared server: other traffic may skew used_memory)" : ""
                BenchComparison(
                    name: "store.bytes-per-pending-grant",
                    ours: deltaPerGrant, baseline: Self.bytesPerGrantBudget, unit: "bytes",
                    detail: "used_memory delta over \(grants) grants (\(memoryBefore)→\(memoryAfter))\(caveat); baseline = the 250 B target"
                        + " | MEMORY USAGE of the one key right after issue: \(fresh.summary)"
                        + " | after polling: \(Console.fixed(polled.recordBytes, 1))B"
                        + " | scopes=\"\(PendingGrants.scopes.joined(separator: " "))\" client_id=\(PendingGrants.clientID) origin=\(PendingGrants.origin) | \(target.summary)"
                ).print()

                if sharedServer {
                    Console.progress("deleting the \(spread.count + 1) benchmark grants")
                    try await Self.delete([single] + spread, client: client)
                }
            }
        }
    }

    /// One store poll that must answer `authorization_pending`; anything else stops the run.
    @Sendable
    static func pollPending(_ store: DeviceCodeStore, _ deviceCode: String) async throws {
        let outcome = try await store.poll(deviceCode: deviceCode, clientID: PendingGrants.clientID)
        guard case .authorizationPending = outcome else {
            throw ChildProcess.Failure(description: "a poll answered \(outcome), expected authorizationPending")
        }
    }

    /// Deletes `grants` (one key each) from a shared server.
    private static func delete(_ grants: [BenchGrant], client: RedisClient) async throws {
        for grant in grants { try await client.send("DEL", grant.deviceKey) }
    }
}

/// A shared cursor that hands out indices 0, 1, …, count-1, 0, 1, … to concurrent tasks.
final class RoundRobin: Sendable {
    private let counter = Atomic<Int>(0)
    private let count: Int

    init(count: Int) { self.count = count }

    /// The next index.
    func next() -> Int {
        let value = counter.wrappingAdd(1, ordering: .relaxed).oldValue
        return Int(UInt(bitPattern: value) % UInt(count))
    }
}
