import Logging
import ServiceLifecycle
import Synchronization

/// Finds the primary of a Redis Sentinel deployment and follows failovers.
///
/// ``primary()`` asks the sentinels of ``RedisClientConfiguration/sentinel`` in order
/// (`SENTINEL GET-MASTER-ADDR-BY-NAME <master>`), takes the first address one of them names, and
/// accepts it only when that node answers `ROLE` with `master` (asked with the data nodes'
/// credentials): a sentinel with a stale view, or a node that was demoted, is never taken for the
/// primary. A sentinel that is unreachable, does not know the master, or names a node that is not
/// a primary, moves the search on to the next sentinel; a round that finds nothing is repeated with
/// back-off (50 ms doubling to 500 ms) until ``RedisClientConfiguration/clusterRetryTimeout``,
/// then ``primary()`` throws ``RedisError/Code/primaryUnavailable`` with what each sentinel said.
///
/// The verified primary is cached until ``invalidate(_:)`` drops it (call that when the primary
/// answers `READONLY`, a connection to it is lost, or a connect to it is refused). ``run()`` asks
/// the sentinels every ``RedisClientConfiguration/sentinelCheckInterval`` and, when they name a
/// different node that verifies as master, moves the cache there. Every change of the verified
/// primary, found by ``run()`` or by ``primary()`` after an ``invalidate(_:)``, is logged at
/// notice level and reported once to the switch handler, with the old and the new address, so
/// that connections to the old primary can be dropped.
///
/// Each sentinel gets one small ``RedisClient`` (one connection, made on first use and reused)
/// with a short connect and command timeout (the smaller of
/// ``RedisClientConfiguration/connectTimeout`` and 1 s). The `ROLE` check uses a short-lived client
/// of its own: it runs only when the cache is empty or the sentinels name a new node.
///
/// ```swift
/// let resolver = try SentinelResolver(configuration: RedisClientConfiguration(
///     url: "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster"))
/// resolver.setSwitchHandler { old, new in print("primary moved from \(old) to \(new)") }
/// let primary = try await resolver.primary()   // e.g. .tcp(host: "10.0.0.7", port: 6379)
/// ```
public final class SentinelResolver: Sendable, Service {
    /// Called with the old and the new primary after the verified primary changed.
    public typealias SwitchHandler = @Sendable (_ old: RedisEndpoint, _ new: RedisEndpoint) -> Void

    struct State {
        /// The verified primary; `nil` after ``invalidate(_:)`` until the next resolution.
        var current: RedisEndpoint?
        /// The last verified primary, kept through ``invalidate(_:)``: the "old" of a switch.
        var lastKnown: RedisEndpoint?
        /// The resolution in progress; concurrent ``primary()`` calls wait for the same one.
        var resolution: Task<Void, Never>?
        /// The callers of ``primary()`` waiting for ``resolution``, by ticket, so that a cancelled
        /// caller can leave at once while the resolution goes on for the others.
        var waiters: [Int: CheckedContinuation<RedisEndpoint, any Error>] = [:]
        var nextTicket = 0
        /// One client per sentinel (same index as the configuration's list), made on first use.
        var sentinelClients: [RedisClient?]
        /// The sentinel that answered last: asked first next time, so a dead sentinel early in the
        /// list does not cost a connect timeout on every question.
        var preferred = 0
        var onSwitch: SwitchHandler?
        var isShutDown = false
        /// Whether the last ``run()`` check found no primary (logged once, not every interval).
        var checkFailing = false
    }

    /// The sentinels and the master's name.
    public let sentinel: RedisSentinelConfiguration
    let configuration: RedisClientConfiguration
    let queryTimeout: Duration
    let logger: Logger
    /// For the clients of the sentinels and the `ROLE` check: their connection errors are the
    /// resolver's to report (in ``RedisError/Code/primaryUnavailable`` and one warning per
    /// outage), not a warning per attempt every check interval.
    let clientLogger: Logger
    let state: Mutex<State>

    /// Creates a resolver for the Sentinel configuration in `configuration`; nothing is asked
    /// until ``primary()`` or ``run()``.
    /// - Parameters:
    ///   - configuration: a configuration with ``RedisClientConfiguration/sentinel`` set; its user,
    ///     password and timeouts are used for the `ROLE` check, its
    ///     ``RedisClientConfiguration/clusterRetryTimeout`` bounds ``primary()`` and its
    ///     ``RedisClientConfiguration/sentinelCheckInterval`` paces ``run()``.
    ///   - logger: where switches (notice) and outages (warning) are logged; never passwords.
    ///   - onSwitch: called with the old and the new primary after each change (see
    ///     ``setSwitchHandler(_:)``).
    /// - Throws: ``RedisError/Code/invalidArgument`` when the configuration is not in Sentinel
    ///   mode, lists no sentinel or has an empty master name.
    public init(configuration: RedisClientConfiguration, logger: Logger = Logger(label: "redis-client"), onSwitch: SwitchHandler? = nil) throws {
        guard let sentinel = configuration.sentinel else {
            throw RedisError(.invalidArgument, "SentinelResolver needs a configuration with `sentinel` set (redis+sentinel://…)")
        }
        guard !sentinel.sentinels.isEmpty, !sentinel.masterName.isEmpty else {
            throw RedisError(.invalidArgument, "a Sentinel configuration needs at least one sentinel and a master name")
        }
        self.sentinel = sentinel
        self.configuration = configuration
        self.queryTimeout = min(configuration.connectTimeout, .seconds(1))
        var logger = logger
        logger[metadataKey: "redis.sentinel.master"] = "\(sentinel.masterName)"
        self.logger = logger
        var clientLogger = logger
        clientLogger.logLevel = max(logger.logLevel, .error)
        self.clientLogger = clientLogger
        self.state = Mutex(State(sentinelClients: Array(repeating: nil, count: sentinel.sentinels.count), onSwitch: onSwitch))
    }

    deinit {
        shutdown()
    }

    /// Sets (or replaces) the handler called with the old and the new primary after each change.
    /// It runs on the task that noticed the change, outside any lock; keep it short.
    public func setSwitchHandler(_ handler: SwitchHandler?) {
        state.withLock { $0.onSwitch = handler }
    }

    /// The verified primary as cached now, or `nil` (not resolved yet, or invalidated).
    public var cachedPrimary: RedisEndpoint? { state.withLock { $0.current } }

    // MARK: - Following failovers

    /// Asks the sentinels every ``RedisClientConfiguration/sentinelCheckInterval`` (the first time
    /// at once) and follows a change of primary (see the type's documentation). Returns on
    /// graceful shutdown, cancellation or ``shutdown()``; it never throws.
    public func run() async throws {
        let interval = configuration.sentinelCheckInterval
        await cancelWhenGracefulShutdown {
            while !self.state.withLock({ $0.isShutDown }) && !Task.isCancelled {
                await self.check()
                do { try await Task.sleep(for: max(interval, .milliseconds(10))) } catch { return }
            }
        }
    }

    /// One check: one round over the sentinels, trusting the cached primary when a sentinel
    /// still names it (no `ROLE` round trip when nothing changed).
    func check() async {
        let (current, isShutDown) = state.withLock { ($0.current, $0.isShutDown) }
        guard !isShutDown else { return }
        let result = await round(trusting: current)
        var failed = false
        if case .none = result { failed = true }
        let wasFailing = state.withLock { state in
            defer { state.checkFailing = failed }
            return state.checkFailing
        }
        switch result {
        case .found(let endpoint):
            if endpoint != current { adopt(endpoint) }
            if wasFailing { logger.info("Redis Sentinel: sentinels name a primary again", metadata: ["redis.primary": "\(endpoint)"]) }
        case .none(let notes):
            if !wasFailing {
                logger.warning(
                    "Redis Sentinel: no sentinel names a verified primary; keeping the last one",
                    metadata: ["redis.primary": "\(current.map { "\($0)" } ?? "none")", "sentinels": "\(notes.joined(separator: "; "))"])
            }
        }
    }

    /// Stops ``run()`` and any resolution in progress and closes the sentinel connections.
    /// Later ``primary()`` calls throw ``RedisError/Code/shutdown``.
    public func shutdown() {
        let (clients, resolution, waiters) = state.withLock { state in
            state.isShutDown = true
            defer {
                state.sentinelClients = Array(repeating: nil, count: state.sentinelClients.count)
                state.resolution = nil
                state.waiters = [:]
            }
            return (state.sentinelClients.compactMap { $0 }, state.resolution, Array(state.waiters.values))
        }
        resolution?.cancel()
        for waiter in waiters { waiter.resume(throwing: RedisError(.shutdown, "the Sentinel resolver was shut down")) }
        for client in clients { client.shutdown() }
    }
}
