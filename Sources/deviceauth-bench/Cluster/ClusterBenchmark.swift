import ArgumentParser
import DeviceAuthorization
import Foundation
import RedisClient

/// `deviceauth-bench cluster`: the store's `poll` on a 3-primary Redis Cluster against the same
/// polls on one Redis, and the cost of the `MOVED` storm right after a reshard.
///
/// The cluster is given (`--cluster-url` or `REDIS_CLUSTER_URL`; `make bench` starts one with
/// `Tests/Support/with-redis-cluster.sh`); the single `redis-server` is started here.
///
/// - `cluster.poll.c<C>`: ours = C tasks polling pending grants (spread over all of them, so over
///   all three primaries) through a cluster-mode client; baseline = the same on a private single
///   `redis-server`, same client settings. All servers and the benchmark share this machine.
/// - `cluster.poll.after-reshard.c<C>`: `redis-cli --cluster reshard` moves slots (with their grants)
///   between primaries while the client is idle, so its slot map is stale; ours = polls/s in the
///   first `--storm-window` seconds after the move (each stale slot costs a `MOVED` until the
///   refresh it triggers lands), baseline = steady state just before. The detail line gives the
///   `MOVED` count the nodes report (`INFO errorstats`) and both latencies.
struct ClusterBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract: "Store poll throughput on a 3-primary Redis Cluster vs one Redis, and the MOVED storm after a reshard."
    )

    @OptionGroup var measurement: MeasurementOptions

    @Option(help: "Pending grants to issue and poll (spread over the slots).")
    var grants: Int = 3_000

    @Option(name: .customLong("reshard-slots"), help: "Slots moved between primaries for the MOVED-storm measurement.")
    var reshardSlots: Int = 1_000

    @Option(name: .customLong("storm-window"), help: "Seconds measured right after the reshard.")
    var stormWindow: Double = 1

    @Option(
        name: .customLong("cluster-url"),
        help: ArgumentHelp(
            "The cluster to measure (redis+cluster://…), such as the one Tests/Support/with-redis-cluster.sh starts (default: $REDIS_CLUSTER_URL). Its slots are resharded.",
            valueName: "url"))
    var clusterURL: String?

    @Option(name: .customLong("redis-server"), help: ArgumentHelp("The redis-server for the single-node baseline (default: on PATH).", valueName: "path"))
    var redisServerPath: String?

    func validate() throws {
        guard grants >= 1 else { throw ValidationError("--grants must be at least 1") }
        guard (1..<RedisHashSlot.count).contains(reshardSlots) else { throw ValidationError("--reshard-slots must be 1…16383") }
        guard stormWindow > 0 else { throw ValidationError("--storm-window must be positive") }
    }

    func run() async throws {
        let window = Duration.seconds(measurement.duration)
        let warmup = Duration.seconds(measurement.warmup)
        guard let url = clusterURL ?? ProcessInfo.processInfo.environment["REDIS_CLUSTER_URL"] else {
            throw ValidationError("no cluster: pass --cluster-url or run under Tests/Support/with-redis-cluster.sh (make bench does)")
        }
        let single = try await RedisServerProcess.start(executable: ChildProcess.locate("redis-server", explicit: redisServerPath))
        do {
            var clusterConfiguration = try RedisClientConfiguration(url: url)
            clusterConfiguration.connectionCount = measurement.connections
            let singleConfiguration = RedisClientConfiguration(
                endpoint: .tcp(host: "127.0.0.1", port: single.port),
                connectionCount: measurement.connections)
            let clusterClient = RedisClient(configuration: clusterConfiguration)
            let singleClient = RedisClient(configuration: singleConfiguration)
            defer {
                clusterClient.shutdown()
                singleClient.shutdown()
            }
            let cluster = try await ClusterNodes(primaries: clusterClient.primaries())
            defer { cluster.shutdown() }
            let storeConfiguration = DeviceCodeStoreConfiguration(secret: StoreBenchmark.secret)
            let clusterStore = DeviceCodeStore(client: clusterClient, configuration: storeConfiguration)
            let singleStore = DeviceCodeStore(client: singleClient, configuration: storeConfiguration)

            Console.progress("issuing \(grants) pending grants on the cluster and on the single server")
            let clusterGrants = try await PendingGrants.issue(grants, store: clusterStore)
            let singleGrants = try await PendingGrants.issue(grants, store: singleStore)
            let clusterCursor = RoundRobin(count: clusterGrants.count)
            let singleCursor = RoundRobin(count: singleGrants.count)
            let settings = "connections=\(measurement.connections)/node window=\(measurement.duration)s warmup=\(measurement.warmup)s grants=\(grants)"

            for tasks in measurement.concurrency.values {
                Console.progress("c=\(tasks): store.poll on the cluster")
                let ours = try await LoadGenerator.run(concurrency: tasks, warmup: warmup, duration: window) {
                    try await StoreBenchmark.pollPending(clusterStore, clusterGrants[clusterCursor.next()].deviceCode)
                }
                Console.progress("c=\(tasks): store.poll on one redis-server")
                let baseline = try await LoadGenerator.run(concurrency: tasks, warmup: warmup, duration: window) {
                    try await StoreBenchmark.pollPending(singleStore, singleGrants[singleCursor.next()].deviceCode)
                }
                BenchComparison(
                    name: "cluster.poll.c\(tasks)", ours: ours.operationsPerSecond, baseline: baseline.operationsPerSecond, unit: "ops/s",
                    detail: "ours(3 primaries + 3 replicas): \(ours.latency.summary) | baseline(1 redis-server): \(baseline.latency.summary) | tasks=\(tasks) \(settings)"
                ).print()
            }

            let tasks = measurement.concurrency.values.max() ?? 64
            Console.progress("c=\(tasks): steady state before the reshard")
            let steady = try await LoadGenerator.run(concurrency: tasks, warmup: warmup, duration: window) {
                try await StoreBenchmark.pollPending(clusterStore, clusterGrants[clusterCursor.next()].deviceCode)
            }
            let movedBefore = try await cluster.movedErrors()
            Console.progress("moving \(reshardSlots) slots with redis-cli --cluster reshard (client idle)")
            let moveStart = ContinuousClock.now
            try await cluster.reshard(slots: reshardSlots)
            let moveTime = ContinuousClock.now - moveStart
            let storm = try await LoadGenerator.run(concurrency: tasks, warmup: .zero, duration: .seconds(stormWindow)) {
                try await StoreBenchmark.pollPending(clusterStore, clusterGrants[clusterCursor.next()].deviceCode)
            }
            let movedAfter = try await cluster.movedErrors()
            BenchComparison(
                name: "cluster.poll.after-reshard.c\(tasks)", ours: storm.operationsPerSecond, baseline: steady.operationsPerSecond, unit: "ops/s",
                detail: "first \(stormWindow)s after moving \(reshardSlots) slots (took \(Console.fixed(moveTime.seconds, 1))s, client idle): \(storm.latency.summary)"
                    + " MOVED answered=\(movedAfter - movedBefore) | steady state: \(steady.latency.summary) | tasks=\(tasks) \(settings)"
            ).print()
            await single.stop()
        } catch {
            await single.stop()
            throw error
        }
    }
}

/// Node-local access to a cluster's primaries, for `INFO errorstats` and resharding.
struct ClusterNodes: Sendable {
    let primaries: [RedisEndpoint]
    private let clients: [RedisClient]

    init(primaries: [RedisEndpoint]) {
        self.primaries = primaries
        self.clients = primaries.map { RedisClient(configuration: RedisClientConfiguration(endpoint: $0, connectionCount: 1)) }
    }

    func shutdown() { for client in clients { client.shutdown() } }

    /// `MOVED` error replies the primaries sent so far (`INFO errorstats`).
    func movedErrors() async throws -> Int {
        var total = 0
        for client in clients {
            let info = try await client.send("INFO", "errorstats").string ?? ""
            for line in info.split(whereSeparator: \.isNewline) where line.hasPrefix("errorstat_MOVED:count=") {
                total += Int(line.dropFirst("errorstat_MOVED:count=".count).prefix { $0.isNumber }) ?? 0
            }
        }
        return total
    }

    /// Moves `slots` slots from the first primary to the second with `redis-cli --cluster reshard`.
    func reshard(slots: Int) async throws {
        guard clients.count >= 2, case .tcp(let host, let port) = primaries[0] else {
            throw ChildProcess.Failure(description: "need two TCP primaries to reshard")
        }
        let from = try await clients[0].send("CLUSTER", "MYID").string ?? ""
        let to = try await clients[1].send("CLUSTER", "MYID").string ?? ""
        let output = try await ChildProcess.run(
            try ChildProcess.locate("redis-cli"),
            [
                "--cluster", "reshard", "\(host):\(port)", "--cluster-from", from, "--cluster-to", to,
                "--cluster-slots", "\(slots)", "--cluster-yes",
            ])
        guard output.status == 0 else {
            throw ChildProcess.Failure(description: "redis-cli --cluster reshard failed: \(output.standardError.suffix(500))")
        }
    }
}
