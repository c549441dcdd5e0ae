import Logging
import Synchronization

/// The cluster's topology: `CLUSTER SHARDS` (or `SLOTS`) from a seed or a known node, the slot
/// map, and refreshing it after a redirect or on the interval.
extension ClusterRouter {
    // MARK: - Topology

    /// The pool for a target, learning the topology first when there is none yet.
    func pool(for target: Target, deadline: ContinuousClock.Instant) async throws -> ConnectionPool {
        enum Lookup {
            case pool(ConnectionPool)
            case noTopology, uncovered, shutdown
        }
        let now = ContinuousClock.now
        var refreshDue = false
        let lookup: Lookup = state.withLock { state in
            if state.isShutDown { return .shutdown }
            guard let topology = state.topology else { return .noTopology }
            if now >= state.nextRefresh && state.refresh == nil {
                refreshDue = true
                state.nextRefresh = now + configuration.clusterRefreshInterval
            }
            let endpoint: RedisEndpoint?
            switch target {
            case .ask(let askTarget): endpoint = askTarget
            case .slot(.some(let slot)): endpoint = topology.owner(of: slot)
            case .slot(.none):
                state.keylessCounter &+= 1
                endpoint = topology.primaries.isEmpty ? nil : topology.primaries[state.keylessCounter % topology.primaries.count]
            }
            guard let endpoint else { return .uncovered }
            return .pool(Self.pool(for: endpoint, in: &state, configuration: configuration, logger: logger))
        }
        if refreshDue { startRefresh() }
        switch lookup {
        case .pool(let pool): return pool
        case .shutdown: throw RedisError(.shutdown, "the Redis client was shut down")
        case .uncovered: throw RedisError(.clusterUnavailable, "no primary serves this slot (yet)")
        case .noTopology:
            if let error = await refresh() { throw error }
            return try await pool(for: target, deadline: deadline)
        }
    }

    static func pool(for endpoint: RedisEndpoint, in state: inout State, configuration: RedisClientConfiguration, logger: Logger) -> ConnectionPool {
        if let pool = state.pools[endpoint] { return pool }
        var nodeConfiguration = configuration
        nodeConfiguration.endpoint = endpoint
        var nodeLogger = logger
        nodeLogger[metadataKey: "redis.node"] = "\(endpoint)"
        let pool = ConnectionPool(configuration: nodeConfiguration, firstIndex: state.pools.count * configuration.connectionCount, logger: nodeLogger)
        state.pools[endpoint] = pool
        return pool
    }

    /// Starts a topology refresh unless one is running; does not wait for it.
    func startRefresh() {
        _ = refreshTask()
    }

    /// Refreshes the topology (or joins the refresh under way) and returns its error, if any.
    @discardableResult
    func refresh() async -> RedisError? {
        guard let task = refreshTask() else { return RedisError(.shutdown, "the Redis client was shut down") }
        return await task.value
    }

    func refreshTask() -> Task<RedisError?, Never>? {
        state.withLock { current -> Task<RedisError?, Never>? in
            if current.isShutDown { return nil }
            if let running = current.refresh { return running }
            let task = Task { [self] () -> RedisError? in
                let error = await performRefresh()
                state.withLock { $0.refresh = nil }
                return error
            }
            current.refresh = task
            return task
        }
    }

    func performRefresh() async -> RedisError? {
        let candidates: [RedisEndpoint] = state.withLock { state in
            var list = (state.topology?.primaries ?? []) + (state.topology?.replicas ?? []) + configuration.clusterSeeds
            var seen = Set<RedisEndpoint>()
            list.removeAll { !seen.insert($0).inserted }
            return list
        }
        var lastError = RedisError(.clusterUnavailable, "no cluster node to ask for the topology")
        for endpoint in candidates {
            do {
                let reply = try await Self.ask(endpoint, configuration: configuration, logger: logger)
                guard case .tcp(let host, _) = endpoint else { continue }
                let topology = try ClusterTopology(slots: reply, defaultHost: host)
                guard topology.coveredSlots > 0 else {
                    lastError = RedisError(.clusterUnavailable, "\(endpoint) serves no slots (not part of a cluster yet?)")
                    continue
                }
                let changed: Bool = state.withLock { state in
                    let changed = state.topology?.primaries != topology.primaries
                    state.topology = topology
                    state.nextRefresh = .now + configuration.clusterRefreshInterval
                    return changed
                }
                if changed {
                    logger.info(
                        "Redis Cluster topology",
                        metadata: [
                            "primaries": "\(topology.primaries.map(\.description).joined(separator: ","))",
                            "covered_slots": "\(topology.coveredSlots)",
                        ])
                }
                return nil
            } catch let error as RedisError {
                lastError = RedisError(.clusterUnavailable, "cannot read the topology from \(endpoint): \(error.message)", underlying: error)
            } catch {
                lastError = RedisError(.clusterUnavailable, "cannot read the topology from \(endpoint): \(error)", underlying: error)
            }
        }
        logger.warning("Cannot refresh the Redis Cluster topology", metadata: ["error": "\(lastError.message)"])
        return lastError
    }

    /// `CLUSTER SLOTS` on a short-lived connection of its own, so a pool that is backing off
    /// from a dead node never delays a refresh.
    static func ask(_ endpoint: RedisEndpoint, configuration: RedisClientConfiguration, logger: Logger) async throws -> RedisValue {
        var probe = configuration
        probe.endpoint = endpoint
        probe.connectionCount = 1
        probe.connectTimeout = min(configuration.connectTimeout, .seconds(1))
        probe.commandTimeout = min(configuration.commandTimeout, .seconds(2))
        let connection = ConnectionFactory.oneOff(configuration: probe, logger: logger)
        defer { connection.shutdown() }
        return try await connection.send(RedisCommand.encode(["CLUSTER", "SLOTS"]))
    }
}
