import Crypto

/// A Lua script, identified by the SHA-1 of its source, run with `EVALSHA`.
///
/// The client sends `EVALSHA` and, when Redis answers `NOSCRIPT` (after `SCRIPT FLUSH`, a
/// restart or a failover), re-sends the same call as `EVAL` with the source. The script did not
/// run when `NOSCRIPT` came back, so the re-send cannot apply it twice.
///
/// ```swift
/// let incr = RedisScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
/// let value = try await client.eval(incr, keys: ["counter"], arguments: [5])
/// ```
public struct RedisScript: Sendable, Hashable {
    /// The Lua source.
    public let source: String
    /// The lowercase hex SHA-1 of ``source``, as `SCRIPT LOAD` would return it.
    public let sha1: String

    /// Creates a script from its Lua source.
    public init(_ source: String) {
        self.source = source
        self.sha1 = Insecure.SHA1.hash(data: Array(source.utf8)).map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }
}
