import Logging
import Synchronization

/// Cluster mode of ``RedisClient``: routes each command to the primary serving the slot of its
/// keys, with one ``ConnectionPool`` (pipelined connections) per primary.
///
/// - The topology comes from `CLUSTER SLOTS`, asked of any known node (primaries, replicas,
///   then the configured seeds). It is learned on first use, refreshed every
///   ``RedisClientConfiguration/clusterRefreshInterval`` (checked when commands are routed: no
///   background task), and at once after `MOVED`, `CLUSTERDOWN` or a lost or refused
///   connection. One refresh runs at a time; concurrent callers wait for the same one.
/// - `MOVED` updates the slot's owner and retries there; `ASK` sends `ASKING` and the command in
///   one pipelined write on one connection of the target. At most
///   ``RedisClientConfiguration/clusterMaximumRedirects`` redirects per command.
/// - `TRYAGAIN` (a multi-key command during a slot migration), `CLUSTERDOWN`, an uncovered slot
///   and a refused connection mean the command did not run: it is retried with back-off
///   (10 ms doubling to 500 ms) until ``RedisClientConfiguration/clusterRetryTimeout``.
/// - A command in flight when its connection dies fails with ``RedisError/Code/connectionClosed``
///   and is never re-sent (it may have run); the topology is refreshed so later commands go to
///   the new primary.
/// - `NOSCRIPT` and `Function not found` are answered per node: the `EVAL` fallback goes to the
///   same node (or `ASK` target), and a missing function library is loaded on that node.
final class ClusterRouter: Sendable {
    struct State {
        var topology: ClusterTopology?
        /// One pool per node ever seen as a primary; kept when a node stops being one (it may
        /// become one again after a failover back) and shut down with the client.
        var pools: [RedisEndpoint: ConnectionPool] = [:]
        var refresh: Task<RedisError?, Never>?
        var nextRefresh: ContinuousClock.Instant = .now
        var isShutDown = false
        var keylessCounter = 0
    }

    let configuration: RedisClientConfiguration
    let logger: Logger
    let state = Mutex(State())

    init(configuration: RedisClientConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    // MARK: - Sending

    /// Where one attempt goes.
    enum Target {
        case slot(Int?)
        case ask(RedisEndpoint)
    }

    /// What to do after an error reply or failure.
    enum Recovery {
        case moved(slot: Int, RedisEndpoint)
        case ask(RedisEndpoint)
        case retryLater(refresh: Bool)
        case noScript
        case fail(refresh: Bool)
    }

    func send(_ command: RedisCommand) async throws -> RedisValue {
        try await send(command, trailer: nil).0
    }

    /// `command` on the primary of its slot, with `trailer` right behind it on the connection
    /// that finally ran it (after redirects and retries).
    func send(_ command: RedisCommand, trailer: [UInt8]?) async throws -> (RedisValue, Result<RedisValue, RedisError>?) {
        let slot = try CommandKeys.slot(of: command)
        return try await send(command, slot: slot, bytes: command.encoded, trailer: trailer)
    }

    func send(_ command: RedisCommand, slot: Int?, bytes initialBytes: [UInt8], trailer: [UInt8]? = nil) async throws -> (RedisValue, Result<RedisValue, RedisError>?) {
        var bytes = initialBytes
        var missingScriptRecoveries = 0
        var lastPool: ConnectionPool?
        // A command the key table does not know is sent anywhere; a MOVED then tells its slot.
        var routeSlot = slot
        var target = Target.slot(routeSlot)
        var redirects = 0
        var backoff = Duration.milliseconds(10)
        let deadline = ContinuousClock.now + configuration.clusterRetryTimeout
        while true {
            let result: Result<(RedisValue, Result<RedisValue, RedisError>?), RedisError>
            var asking = false
            if case .ask = target { asking = true }
            do {
                let pool = try await self.pool(for: target, deadline: deadline)
                lastPool = pool
                result = await Self.attempt(bytes, trailer: trailer, on: pool, asking: asking)
            } catch let error as RedisError {
                result = .failure(error)
            }
            let error: RedisError
            switch result {
            case .success(let value): return value
            case .failure(let failure): error = failure
            }
            switch recovery(for: error) {
            case .moved(let movedSlot, let endpoint):
                redirects += 1
                guard redirects <= configuration.clusterMaximumRedirects else { throw tooManyRedirects(error) }
                state.withLock { $0.topology?.assign(slot: movedSlot, to: endpoint) }
                startRefresh()
                routeSlot = movedSlot
                target = .slot(routeSlot)
            case .ask(let endpoint):
                redirects += 1
                guard redirects <= configuration.clusterMaximumRedirects else { throw tooManyRedirects(error) }
                target = .ask(endpoint)
            case .noScript:
                guard let recovery = command.missingScriptRecovery else { throw error }
                missingScriptRecoveries += 1
                switch recovery {
                case .resend(let fallback):
                    guard missingScriptRecoveries == 1 else { throw error }
                    bytes = fallback.encoded
                case .loadLibrary(let script):
                    // Loaded on the node that answered (the slot's owner, or the ASK target); again
                    // if a flush raced the load (see ConnectionPool.recoverMissingScript).
                    guard missingScriptRecoveries <= ConnectionPool.functionLoadAttempts, let lastPool else { throw error }
                    try await lastPool.loadLibrary(of: script)
                }
            case .retryLater(let refresh):
                guard ContinuousClock.now + backoff < deadline else { throw error }
                if refresh { _ = await self.refresh() }
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .milliseconds(500))
                target = .slot(routeSlot)
            case .fail(let refresh):
                if refresh { startRefresh() }
                throw error
            }
        }
    }

    static func attempt(_ bytes: [UInt8], trailer: [UInt8]?, on pool: ConnectionPool, asking: Bool) async -> Result<(RedisValue, Result<RedisValue, RedisError>?), RedisError> {
        if asking {
            let results = await pool.connection().sendPipeline(askingCommand + bytes + (trailer ?? []), count: trailer == nil ? 2 : 3)
            if case .failure(let error) = results[0], error.code != .server { return .failure(error) }
            return results[1].map { ($0, trailer == nil ? nil : results[2]) }
        }
        do { return .success(try await pool.connection().send(bytes, trailer: trailer)) } catch let error as RedisError { return .failure(error) } catch {
            return .failure(RedisError(.server, "\(error)", underlying: error))
        }
    }

    static let askingCommand = RedisCommand.encode(["ASKING"])

    func tooManyRedirects(_ last: RedisError) -> RedisError {
        RedisError(.tooManyRedirects, "more than \(configuration.clusterMaximumRedirects) MOVED/ASK redirects; last: \(last.message)", underlying: last)
    }

    func recovery(for error: RedisError) -> Recovery {
        switch error.code {
        case .server:
            switch error.serverErrorPrefix {
            case "MOVED", "ASK":
                // "MOVED 3999 127.0.0.1:6381" (the host may be empty: the answering node's host).
                let parts = error.message.split(separator: " ")
                guard parts.count >= 3, let slot = Int(parts[1]), (0..<RedisHashSlot.count).contains(slot),
                    let colon = parts[2].lastIndex(of: ":"), let port = Int(parts[2][parts[2].index(after: colon)...]),
                    RedisEndpoint.ports.contains(port)
                else {
                    return .fail(refresh: true)
                }
                var host = String(parts[2][..<colon])
                if host.isEmpty, case .tcp(let seedHost, _) = configuration.endpoint { host = seedHost }
                let endpoint = RedisEndpoint.tcp(host: host, port: port)
                return error.serverErrorPrefix == "MOVED" ? .moved(slot: slot, endpoint) : .ask(endpoint)
            case "TRYAGAIN": return .retryLater(refresh: false)
            case "CLUSTERDOWN": return .retryLater(refresh: true)
            case "NOSCRIPT": return .noScript
            case "ERR" where error.isMissingScript: return .noScript
            default: return .fail(refresh: false)
            }
        case .connectionFailed, .clusterUnavailable:
            // Nothing was written: the node is down (a failover may be under way) or unknown.
            return .retryLater(refresh: true)
        case .shutdown:
            return state.withLock { $0.isShutDown } ? .fail(refresh: false) : .retryLater(refresh: true)
        case .connectionClosed, .timeout, .protocolError:
            return .fail(refresh: true)
        default:
            return .fail(refresh: false)
        }
    }

    // MARK: - Pipelines

    /// Groups the commands by node, sends each group as one pipeline (so commands for one node
    /// keep their order) and the groups concurrently, then re-sends one by one, in order, those
    /// answered with a redirect, `TRYAGAIN`, `CLUSTERDOWN`, `NOSCRIPT` or a refused connection.
    func pipeline(_ commands: [RedisCommand]) async -> [Result<RedisValue, RedisError>] {
        var results = [Result<RedisValue, RedisError>](repeating: .failure(RedisError(.shutdown, "not sent")), count: commands.count)
        var slots = [Int?](repeating: nil, count: commands.count)
        var groups: [RedisEndpoint: [Int]] = [:]
        let deadline = ContinuousClock.now + configuration.clusterRetryTimeout
        for (index, command) in commands.enumerated() {
            do {
                slots[index] = try CommandKeys.slot(of: command)
                let pool = try await pool(for: .slot(slots[index]), deadline: deadline)
                groups[pool.endpoint, default: []].append(index)
            } catch {
                results[index] = .failure(error as? RedisError ?? RedisError(.server, "\(error)"))
            }
        }
        let groupResults = await withTaskGroup(of: ([Int], [Result<RedisValue, RedisError>]).self) { taskGroup in
            for (endpoint, indices) in groups {
                guard let pool = state.withLock({ $0.pools[endpoint] }) else { continue }
                var bytes: [UInt8] = []
                for index in indices { bytes += commands[index].encoded }
                taskGroup.addTask { (indices, await pool.connection().sendPipeline(bytes, count: indices.count)) }
            }
            return await taskGroup.reduce(into: []) { $0.append($1) }
        }
        var retry: [Int] = []
        for (indices, groupResult) in groupResults {
            for (position, index) in indices.enumerated() {
                results[index] = groupResult[position]
                if case .failure(let error) = groupResult[position] {
                    switch recovery(for: error) {
                    case .moved, .ask, .retryLater, .noScript: retry.append(index)
                    case .fail(let refresh): if refresh { startRefresh() }
                    }
                }
            }
        }
        for index in retry.sorted() {
            do { results[index] = .success(try await send(commands[index], slot: slots[index], bytes: commands[index].encoded).0) } catch {
                results[index] = .failure(error as? RedisError ?? RedisError(.server, "\(error)"))
            }
        }
        return results
    }

    // MARK: - Introspection and shutdown

    /// Sends `command` to every primary and returns each one's result (for `SCRIPT FLUSH`,
    /// `CONFIG GET`, `KEYS`, …), in the order of ``primaries()``.
    func sendToEachPrimary(_ command: RedisCommand) async -> [(RedisEndpoint, Result<RedisValue, RedisError>)] {
        if state.withLock({ $0.topology == nil }), let error = await refresh() {
            return [(configuration.endpoint, .failure(error))]
        }
        let pools: [ConnectionPool] = state.withLock { state in
            (state.topology?.primaries ?? []).map { Self.pool(for: $0, in: &state, configuration: configuration, logger: logger) }
        }
        var results: [(RedisEndpoint, Result<RedisValue, RedisError>)] = []
        for pool in pools {
            results.append((pool.endpoint, await Self.attempt(command.encoded, trailer: nil, on: pool, asking: false).map(\.0)))
        }
        return results
    }

    /// The pools of the primaries as last learned, learning them first when needed.
    func primaryPools() async throws -> [ConnectionPool] {
        if state.withLock({ $0.topology == nil }), let error = await refresh() { throw error }
        return state.withLock { state in
            (state.topology?.primaries ?? []).map { Self.pool(for: $0, in: &state, configuration: configuration, logger: logger) }
        }
    }

    /// The primaries as last learned, learning them first when needed.
    func primaries() async throws -> [RedisEndpoint] {
        if state.withLock({ $0.topology == nil }), let error = await refresh() { throw error }
        return state.withLock { $0.topology?.primaries ?? [] }
    }

    /// The primary serving `slot` as last learned (nil when unknown or uncovered).
    func owner(of slot: Int) -> RedisEndpoint? {
        state.withLock { $0.topology?.owner(of: slot) }
    }

    func shutdown() {
        let (pools, refresh): ([ConnectionPool], Task<RedisError?, Never>?) = state.withLock { state in
            state.isShutDown = true
            defer { state.pools = [:] }
            return (Array(state.pools.values), state.refresh)
        }
        refresh?.cancel()
        closingPools.withLock { $0 += pools }
        for pool in pools { pool.shutdown() }
    }

    /// The pools ``shutdown()`` closed, for ``closed()``.
    let closingPools = Mutex<[ConnectionPool]>([])

    /// Returns once every pool closed by ``shutdown()`` has closed its connections.
    func closed() async {
        for pool in closingPools.withLock({ $0 }) { await pool.closed() }
    }
}
