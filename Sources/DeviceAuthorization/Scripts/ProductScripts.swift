import RedisClient

/// Every Lua script the product runs, so a node can load them all as Redis functions at start-up
/// (``load(on:)``): a missing `+function|load` permission then shows before the
/// first request, and no request pays for a load. (A script missing later — a flushed or new node —
/// is still loaded on first use.)
public enum ProductScripts {
    /// The store's, the rate limiter's and the refresh tokens' scripts.
    public static var all: [RedisScript] {
        [
            StoreScripts.issue, StoreScripts.poll, StoreScripts.redeem, StoreScripts.countReplay, StoreScripts.confirmRedemption, StoreScripts.decide, StoreScripts.read,
            StoreScripts.checkRateLimit, StoreScripts.updatePollTime,
            StoreScripts.chargeFailures, StoreScripts.releaseFailures,
            RequestRateLimiter.acquireScript, RequestRateLimiter.checkScript, RequestRateLimiter.recordScript,
            RequestRateLimiter.releaseScript,
        ] + RefreshScripts.all
    }

    /// The name of the poll script's Redis function, so benchmarks can `FCALL` the same script
    /// with `redis-benchmark`.
    public static var pollFunctionName: String { StoreScripts.poll.functionName }

    /// Loads every product script as a Redis function on every primary of `client`, as its
    /// function-loader user when one is configured. Does nothing in `eval` mode.
    /// - Throws: ``RedisError`` (for example `NOPERM` when the user may not load functions).
    public static func load(on client: RedisClient) async throws {
        try await client.loadFunctions(all)
    }
}
