import ArgumentParser
import DeviceAuthorization
import Foundation
import RedisClient
import Synchronization

/// `deviceauth-bench refresh`: refreshes per second through ``RefreshTokenStore/refresh(token:clientID:scopes:accessToken:)``
/// (each one rotation script, one round trip) against `redis-benchmark` sending the same rotation
/// script (`FCALL` of its function, or `EVALSHA`) as a standing rotation of one family; and the
/// Redis memory a family takes.
///
/// Ours: C tasks refresh families taken from a pool of 2·C (each task takes a family, rotates
/// it, puts the new token back), so no two refreshes race on one token, as with real clients;
/// each refresh also records a planned access token, as the server does. For each C it prints
/// `BENCH refresh.rotate.c<C>`. Last, `refresh.bytes-per-family` compares the `used_memory` growth per
/// family while creating `--families` with the `MEMORY USAGE` of one record.
struct RefreshBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "refresh",
        abstract: "Refresh-token rotations per second against redis-benchmark running the rotation script, and bytes per family."
    )

    @OptionGroup var redis: RedisOptions

    @OptionGroup var measurement: MeasurementOptions

    @Option(help: "Families to create for the memory measurement.")
    var families: Int = 10_000

    static let clientID = "tv-app"
    static let scopes = ["profile", "offline_access"]

    func validate() throws {
        guard families >= 1 else { throw ValidationError("--families must be at least 1") }
    }

    func run() async throws {
        let window = Duration.seconds(measurement.duration)
        let warmupPeriod = Duration.seconds(measurement.warmup)
        let sharedServer = redis.redisURL != nil
        try await redis.withTarget(connectionCount: measurement.connections) { target in
            try await target.withClient { client in
                let store = RefreshTokenStore(client: client, configuration: DeviceCodeStoreConfiguration(keyPrefix: "dabench", secret: StoreBenchmark.secret))

                // The standing family redis-benchmark rotates; a first refresh loads the script.
                Console.progress("creating the baseline family and checking the baseline command")
                let standing = try await Self.create(store, index: 0)
                guard case .rotated(let rotated) = try await store.refresh(token: standing, clientID: Self.clientID) else {
                    throw ChildProcess.Failure(description: "the first refresh of a new family did not rotate")
                }
                guard let call = store.standingRotation(token: rotated.token, clientID: Self.clientID) else {
                    throw ChildProcess.Failure(description: "the rotated token is not one of this store's")
                }
                let functions = client.configuration.scriptCalls == .functions
                let command = [functions ? "FCALL" : "EVALSHA", functions ? call.function : call.sha1, "\(call.keys.count)"] + call.keys + call.arguments
                for _ in 0..<2 {
                    let reply = try await client.send(RedisCommand(arguments: command))
                    guard reply.array?.first?.string == "rotated" else {
                        throw ChildProcess.Failure(description: "the baseline command answered \(reply), expected a rotation")
                    }
                }

                for tasks in measurement.concurrency.values {
                    let pool = TokenPool(try await (0..<(2 * tasks)).asyncMap { try await Self.create(store, index: $0) })
                    Console.progress(
                        "c=\(tasks): store.refresh over \(2 * tasks) families, \(measurement.connections) connection(s), \(measurement.duration)s after \(measurement.warmup)s warm-up"
                    )
                    let ours = try await LoadGenerator.run(concurrency: tasks, warmup: warmupPeriod, duration: window) {
                        let token = pool.take()
                        let outcome = try await store.refresh(
                            token: token, clientID: Self.clientID,
                            accessToken: AccessTokenReference(tokenID: UUID().uuidString.lowercased(), expiresAt: Date().addingTimeInterval(3600)))
                        guard case .rotated(let next) = outcome else {
                            throw ChildProcess.Failure(description: "a refresh answered \(outcome), expected a rotation")
                        }
                        pool.put(next.token)
                    }
                    Console.progress("c=\(tasks): redis-benchmark -c \(tasks) (standing rotation of one family)")
                    let baseline = try await target.redisBenchmark.run(command: command, clients: tasks, duration: window)
                    BenchComparison(
                        name: "refresh.rotate.c\(tasks)",
                        ours: ours.operationsPerSecond, baseline: baseline.requestsPerSecond, unit: "ops/s",
                        detail: "ours: \(ours.latency.summary) ops=\(ours.operations) tasks=\(tasks) families=\(2 * tasks) connections=\(measurement.connections)"
                            + " | baseline: \(baseline.summary) \(functions ? "FCALL" : "EVALSHA") rotate, 1 family | \(target.summary)"
                    ).print()
                }

                Console.progress("creating \(families) families for the memory measurement")
                let memoryBefore = try await GrantMemory.usedMemory(client)
                let created = try await Self.createMany(store, count: families)
                let memoryAfter = try await GrantMemory.usedMemory(client)
                let sample = try await client.send("MEMORY", "USAGE", store.familyKey(forToken: created) ?? "").int ?? 0
                let perFamily = Double(memoryAfter - memoryBefore) / Double(families)
                BenchComparison(
                    name: "refresh.bytes-per-family",
                    ours: perFamily, baseline: Double(sample), unit: "bytes",
                    detail: "used_memory delta per family over \(families) families (\(memoryBefore)→\(memoryAfter))"
                        + "\(sharedServer ? " (shared server: other traffic may skew used_memory)" : "") | baseline: MEMORY USAGE of one record"
                        + " | scopes=\"\(Self.scopes.joined(separator: " "))\" client_id=\(Self.clientID), one access token each | \(target.summary)"
                ).print()
            }
        }
    }

    /// A family as the server creates one at redemption (a user id, two scopes, one access token).
    static func create(_ store: RefreshTokenStore, index: Int) async throws -> String {
        // Ten minutes idle: families left on a shared server expire soon; the record is the same size.
        try await store.createFamily(
            clientID: clientID, userID: "user-\(index)@example.com", scopes: scopes, idleLifetime: .seconds(600),
            accessToken: AccessTokenReference(tokenID: UUID().uuidString.lowercased(), expiresAt: Date().addingTimeInterval(3600))
        ).token
    }

    /// Creates `count` families from 32 tasks; returns one of their tokens.
    static func createMany(_ store: RefreshTokenStore, count: Int) async throws -> String {
        try await withThrowingTaskGroup(of: String.self) { group in
            for worker in 0..<32 {
                group.addTask {
                    var last = ""
                    for index in stride(from: worker, to: count, by: 32) { last = try await create(store, index: index) }
                    return last
                }
            }
            var any = ""
            for try await token in group where !token.isEmpty { any = token }
            return any
        }
    }
}

/// Refresh tokens that concurrent tasks take and put back, so no two tasks hold one family.
final class TokenPool: Sendable {
    private let tokens: Mutex<[String]>

    init(_ tokens: [String]) { self.tokens = Mutex(tokens) }

    /// A token nobody else holds (the pool is larger than the number of tasks).
    func take() -> String { tokens.withLock { $0.removeLast() } }

    func put(_ token: String) { tokens.withLock { $0.append(token) } }
}

extension Sequence where Element: Sendable {
    /// `map` with an async transform, one element after another.
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var result: [T] = []
        for element in self { result.append(try await transform(element)) }
        return result
    }
}
