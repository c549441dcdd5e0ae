import Foundation
import RedisClient
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The test Redis Cluster that `make test-cluster` starts (Tests/Support/with-redis-cluster.sh):
/// 3 primaries, 3 replicas, on the loopback ports in REDIS_CLUSTER_PORTS.
enum TestCluster {
    static let environment = ProcessInfo.processInfo.environment

    /// Whether a missing cluster is a failure (`make test-cluster` sets DEVICEAUTH_REQUIRE_CLUSTER=1)
    /// rather than a skip.
    static var isRequired: Bool { environment["DEVICEAUTH_REQUIRE_CLUSTER"] == "1" }

    /// Runs a suite when REDIS_CLUSTER_URL is set, or when a cluster is required (then the
    /// missing URL fails each test); otherwise skips it with a message saying how to run it.
    static let enabled = ConditionTrait.enabled(
        if: environment["REDIS_CLUSTER_URL"] != nil || isRequired,
        "REDIS_CLUSTER_URL is not set: the Redis Cluster suites run with `make test-cluster` (Tests/Support/with-redis-cluster.sh)"
    )

    /// The seed URL (`redis+cluster://…`).
    static func url() throws -> String {
        guard let url = environment["REDIS_CLUSTER_URL"] else {
            throw RedisError(.invalidURL, "REDIS_CLUSTER_URL is not set but DEVICEAUTH_REQUIRE_CLUSTER=1: run `make test-cluster`")
        }
        return url
    }

    /// The six node ports.
    static var ports: [Int] { (environment["REDIS_CLUSTER_PORTS"] ?? "").split(separator: ",").compactMap { Int($0) } }

    /// A cluster-mode client.
    static func client(connections: Int = 2, configure: (inout RedisClientConfiguration) -> Void = { _ in }) throws -> RedisClient {
        var configuration = try RedisClientConfiguration(url: url())
        configuration.connectionCount = connections
        configure(&configuration)
        return RedisClient(configuration: configuration)
    }

    /// A single-node client to one node, for looking behind the cluster client's back.
    static func node(_ port: Int) -> RedisClient {
        RedisClient(configuration: RedisClientConfiguration(endpoint: .tcp(host: "127.0.0.1", port: port), connectionCount: 1))
    }

    static func port(of endpoint: RedisEndpoint) -> Int? {
        if case .tcp(_, let port) = endpoint { return port }
        return nil
    }
}

/// Cluster administration for tests, done the way an operator would, with node-local commands.
struct ClusterAdmin {
    /// One client per node port, shut down by ``shutdown()``.
    private let nodes: [Int: RedisClient]

    init() {
        nodes = Dictionary(uniqueKeysWithValues: TestCluster.ports.map { ($0, TestCluster.node($0)) })
    }

    func shutdown() { for client in nodes.values { client.shutdown() } }

    func node(_ port: Int) throws -> RedisClient {
        guard let client = nodes[port] else { throw RedisError(.invalidArgument, "port \(port) is not a test cluster node") }
        return client
    }

    /// The ports of the nodes that are primaries now (asked of the nodes themselves).
    func primaryPorts(excluding dead: Set<Int> = []) async throws -> [Int] {
        var primaries: [Int] = []
        for port in TestCluster.ports.sorted() where !dead.contains(port) {
            let role = try await node(port).send("ROLE").array?.first?.string
            if role == "master" { primaries.append(port) }
        }
        return primaries
    }

    func id(_ port: Int) async throws -> String {
        try await node(port).send("CLUSTER", "MYID").string ?? ""
    }

    /// The port of the primary serving `slot`, according to node `askingPort`.
    func owner(of slot: Int, askingPort: Int) async throws -> Int? {
        let ranges = try await node(askingPort).send("CLUSTER", "SLOTS").array ?? []
        for range in ranges {
            guard let fields = range.array, fields.count >= 3, let start = fields[0].int, let end = fields[1].int else { continue }
            if (start...end).contains(slot) { return fields[2].array?[1].int }
        }
        return nil
    }

    /// The server's own slot for a key (`CLUSTER KEYSLOT`).
    func keySlot(_ key: String, port: Int) async throws -> Int {
        try await node(port).send("CLUSTER", "KEYSLOT", key).int ?? -1
    }

    /// Moves `slot` from primary `source` to primary `target` as `redis-cli --cluster reshard`
    /// does: `SETSLOT IMPORTING`/`MIGRATING`, `MIGRATE … KEYS` (one key at a time when
    /// `keyByKey`, so a grant's two keys are split between the nodes for a moment), then
    /// `SETSLOT NODE` on the target, the source and every other primary.
    /// - Parameter whileMigrating: runs after the slot is marked migrating, before keys move.
    func moveSlot(
        _ slot: Int, from source: Int, to target: Int, keyByKey: Bool = true,
        whileMigrating: () async throws -> Void = {}
    ) async throws {
        let sourceID = try await id(source)
        let targetID = try await id(target)
        try await node(target).send("CLUSTER", "SETSLOT", slot, "IMPORTING", sourceID)
        try await node(source).send("CLUSTER", "SETSLOT", slot, "MIGRATING", targetID)
        try await whileMigrating()
        while true {
            let keys = (try await node(source).send("CLUSTER", "GETKEYSINSLOT", slot, keyByKey ? 1 : 100).array ?? []).compactMap(\.string)
            if keys.isEmpty { break }
            var migrate: [any RedisArgument] = ["MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS"]
            migrate += keys
            try await node(source).send(RedisCommand(arguments: migrate))
        }
        try await node(target).send("CLUSTER", "SETSLOT", slot, "NODE", targetID)
        try await node(source).send("CLUSTER", "SETSLOT", slot, "NODE", targetID)
        for port in try await primaryPorts() where port != source && port != target {
            try await node(port).send("CLUSTER", "SETSLOT", slot, "NODE", targetID)
        }
    }

    /// The process id of a node (`INFO server`).
    func pid(_ port: Int) async throws -> Int32 {
        let info = try await node(port).send("INFO", "server").string ?? ""
        let line = info.split(whereSeparator: \.isNewline).first { $0.hasPrefix("process_id:") }
        guard let line, let pid = Int32(line.dropFirst("process_id:".count)) else {
            throw RedisError(.protocolError, "no process_id in INFO server")
        }
        return pid
    }

    /// Waits (polling, bounded) until every live node says `cluster_state:ok` and `slot`
    /// is served by a node other than `oldOwner`. Returns the new owner's port.
    func waitForFailover(of slot: Int, oldOwner: Int, dead: Set<Int>) async throws -> Int {
        for _ in 0..<600 {
            var allOK = true
            var newOwner: Int?
            for port in TestCluster.ports where !dead.contains(port) {
                let info = (try? await node(port).send("CLUSTER", "INFO").string) ?? ""
                if !info.contains("cluster_state:ok") { allOK = false }
                if let owner = try? await self.owner(of: slot, askingPort: port), owner != oldOwner { newOwner = owner } else { allOK = false }
            }
            if allOK, let newOwner { return newOwner }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw RedisError(.clusterUnavailable, "no replica took over slot \(slot) from \(oldOwner)")
    }
}
