import Crypto
import RedisClient
import Synchronization

/// At most ``limit`` events per sliding ``window``.
public struct RateLimit: Sendable, Hashable, CustomStringConvertible {
    /// Events allowed per window (at least 1).
    public var limit: Int
    /// The window.
    public var window: Duration

    /// Creates a limit.
    /// - Parameters:
    ///   - limit: events allowed per window; values below 1 are raised to 1.
    ///   - window: the window (at least 1 ms).
    public init(_ limit: Int, per window: Duration) {
        self.limit = max(1, limit)
        self.window = max(window, .milliseconds(1))
    }

    /// `N/window`, for logs.
    public var description: String { "\(limit)/\(window)" }
}

/// One counter a request is charged to: what is counted (`name`), for whom (`subject`, such as an
/// IP address or a client id; only its keyed hash reaches Redis) and the limit.
public struct RateLimitBucket: Sendable, Hashable {
    /// Short name of what is counted, part of the key (`dai` device authorizations per IP, …).
    public var name: String
    /// Who is counted: an IP bucket, a client id. Hashed with the secret before it becomes a key.
    public var subject: String
    /// The limit of this counter.
    public var limit: RateLimit

    /// Creates a bucket.
    public init(name: String, subject: String, limit: RateLimit) {
        self.name = name
        self.subject = subject
        self.limit = limit
    }
}

/// The answer of a rate-limit check.
public enum RateLimitDecision: Sendable, Hashable {
    /// Under every limit.
    case allowed
    /// Over the limit of `bucket` (an index into the buckets passed); a retry can succeed after `retryAfter`.
    case limited(bucket: Int, retryAfter: Duration)

    /// Whether the request may go on.
    public var isAllowed: Bool { self == .allowed }
}

/// What ``RequestRateLimiter/record(_:)`` found when it counted an event.
public struct RateLimitRecord: Sendable, Hashable {
    /// Whether every bucket still had room for this event when it was counted. When `false` the
    /// event was over a limit (and is counted all the same).
    public var admitted: Bool
    /// Whether the *next* event would be allowed.
    public var next: RateLimitDecision

    /// Creates a record.
    public init(admitted: Bool, next: RateLimitDecision) {
        self.admitted = admitted
        self.next = next
    }
}

/// Request rate limits shared by every API node: counters in Redis, one Lua script per decision,
/// on the Redis server's clock (`TIME`), so nodes with skewed clocks agree.
///
/// Each counter is a *sliding window* approximated from two fixed windows (the current and the
/// previous one, weighted by how much of the previous one still overlaps): unlike a plain fixed
/// window it does not allow a double burst across a window boundary, and it costs one small hash
/// per subject that expires two windows after its last event.
///
/// Keys: `<prefix>:{rl}:<name>:<hmac>`, where `<hmac>` is 128 bits of HMAC-SHA256(secret, subject)
/// in hex: addresses and client ids are not stored in plaintext. All counters share the hash tag
/// `{rl}`, so one script can check several of them in a Redis Cluster.
///
/// **Node-local memory of refusals.** When Redis answers that a bucket is over its limit, the
/// limiter remembers that bucket until the promised retry time (measured from when the request
/// was sent, so never past Redis's own promise) and refuses it again without a round trip:
/// counts only grow, so a limit never lifts earlier than Redis said. ``knownLimit(_:)`` reads
/// that memory alone, for callers that count after the fact (``record(_:)``) and want to refuse
/// a limited subject before doing any work. The memory holds a bounded number of buckets
/// (10,000 by default); when it is full of live entries, new refusals are simply not remembered
/// (Redis still decides).
///
/// ```swift
/// let limiter = RequestRateLimiter(client: redis, keyPrefix: "da", secret: secret)
/// let buckets = [RateLimitBucket(name: "dai", subject: clientIP, limit: RateLimit(30, per: .seconds(60)))]
/// if case .limited(_, let retryAfter) = try await limiter.acquire(buckets) { … answer 429 … }
/// ```
public final class RequestRateLimiter: Sendable {
    private let client: RedisClient
    private let keyPrefix: String
    /// HMAC state after the key: copied for each subject, so the key schedule runs once.
    private let keyedHMAC: HMAC<SHA256>
    /// Buckets (`name` NUL `subject`) Redis said are over their limit, until when.
    private let knownLimited = Mutex<[String: ContinuousClock.Instant]>([:])
    /// At most this many refused buckets are remembered.
    private let knownLimitedCapacity: Int

    /// Creates a limiter.
    /// - Parameters:
    ///   - client: the Redis client (the store's).
    ///   - keyPrefix: the store's key prefix (`da`).
    ///   - secret: the shared secret (the same on every node), for hashing subjects.
    ///   - knownLimitedCapacity: how many refused buckets this node remembers (10,000).
    public init(client: RedisClient, keyPrefix: String, secret: [UInt8], knownLimitedCapacity: Int = 10_000) {
        self.client = client
        self.knownLimitedCapacity = max(0, knownLimitedCapacity)
        self.keyPrefix = keyPrefix
        self.keyedHMAC = HMAC<SHA256>(key: SymmetricKey(data: HMAC<SHA256>.authenticationCode(for: Array("deviceauth-rate-limit".utf8), using: SymmetricKey(data: secret))))
    }

    /// The Redis key of a bucket (for tests and operators).
    public func key(of bucket: RateLimitBucket) -> String {
        var hmac = keyedHMAC
        hmac.update(data: Array(bucket.subject.utf8))
        let mac = Array(hmac.finalize())
        return "\(keyPrefix):{rl}:\(bucket.name):\(hexString(mac[0..<16]))"
    }

    /// Counts one event in every bucket if all of them are under their limits; if one is at its
    /// limit, counts nothing and says which one and when to retry.
    public func acquire(_ buckets: [RateLimitBucket]) async throws -> RateLimitDecision {
        let known = knownLimit(buckets)
        guard known.isAllowed else { return known }
        let sent = ContinuousClock.now
        let reply = try await run(Self.acquireScript, buckets)
        return remember(Self.decision(reply), buckets, sent: sent)
    }

    /// Whether one more event would be allowed in every bucket; writes nothing.
    public func check(_ buckets: [RateLimitBucket]) async throws -> RateLimitDecision {
        let known = knownLimit(buckets)
        guard known.isAllowed else { return known }
        let sent = ContinuousClock.now
        let reply = try await run(Self.checkScript, buckets)
        return remember(Self.decision(reply), buckets, sent: sent)
    }

    /// Counts one event in every bucket, whatever their state (for events found out after the
    /// fact, such as an unknown device code); says whether the event had room and whether the
    /// next one would. Always asks Redis, so every event is counted.
    @discardableResult
    public func record(_ buckets: [RateLimitBucket]) async throws -> RateLimitRecord {
        guard !buckets.isEmpty else { return RateLimitRecord(admitted: true, next: .allowed) }
        let sent = ContinuousClock.now
        let reply = try await run(Self.recordScript, buckets)
        let next = remember(Self.decision(reply), buckets, sent: sent)
        return RateLimitRecord(admitted: (reply.count > 2 ? reply[2].int ?? 0 : 0) == 0, next: next)
    }

    /// Gives back one event counted by an earlier ``acquire(_:)`` (or ``record(_:)``) in every
    /// bucket: for "charge before the answer, refund on success", such as a failed client
    /// authentication or sign-in password that must be limited exactly while a correct one must not
    /// use up the budget. Acquire first, do the work, release when it succeeded.
    ///
    /// Never takes a counter below zero. If the window has moved on since the event was counted,
    /// the event is taken from where it now counts (the previous window); once the counter has
    /// gone past both windows there is nothing left to give back. A refund does not clear this
    /// node's memory of refusals (a refused bucket was refused before this event).
    public func release(_ buckets: [RateLimitBucket]) async throws {
        guard !buckets.isEmpty else { return }
        _ = try await run(Self.releaseScript, buckets)
    }

    /// What this node already knows without asking Redis: `.limited` when an earlier answer of
    /// Redis put one of `buckets` over its limit and its retry time has not come yet.
    public func knownLimit(_ buckets: [RateLimitBucket]) -> RateLimitDecision {
        let now = ContinuousClock.now
        return knownLimited.withLock { known in
            guard !known.isEmpty else { return .allowed }
            for (index, bucket) in buckets.enumerated() {
                if let until = known[Self.memoryKey(bucket)], until > now {
                    return .limited(bucket: index, retryAfter: max(.milliseconds(1), until - now))
                }
            }
            return .allowed
        }
    }

    /// Whether this node remembers any refusal at all (a cheap test before working out a subject).
    public var remembersRefusals: Bool { knownLimited.withLock { !$0.isEmpty } }

    private static func memoryKey(_ bucket: RateLimitBucket) -> String { bucket.name + "\u{0}" + bucket.subject }

    /// Remembers a refusal until `sent + retryAfter` (no later than Redis's own promise).
    private func remember(_ decision: RateLimitDecision, _ buckets: [RateLimitBucket], sent: ContinuousClock.Instant) -> RateLimitDecision {
        guard case .limited(let index, let retryAfter) = decision, buckets.indices.contains(index) else { return decision }
        let key = Self.memoryKey(buckets[index])
        let until = sent + retryAfter
        knownLimited.withLock { known in
            if known.count >= knownLimitedCapacity && known[key] == nil {
                let now = ContinuousClock.now
                known = known.filter { $0.value > now }
                guard known.count < knownLimitedCapacity else { return }
            }
            known[key] = max(until, known[key] ?? until)
        }
        return decision
    }

    private func run(_ script: RedisScript, _ buckets: [RateLimitBucket]) async throws -> [RedisValue] {
        guard !buckets.isEmpty else { return [] }
        var arguments: [any RedisArgument] = []
        for bucket in buckets {
            arguments.append(bucket.limit.limit)
            arguments.append(max(1, bucket.limit.window.milliseconds))
        }
        return try await client.eval(script, keys: buckets.map(key(of:)), arguments: arguments).array ?? []
    }

    /// `{0}` → allowed; `{i, retry ms, …}` → bucket `i - 1` limited.
    private static func decision(_ reply: [RedisValue]) -> RateLimitDecision {
        guard let index = reply.first?.int, index > 0 else { return .allowed }
        let retry = reply.count > 1 ? reply[1].int ?? 1000 : 1000
        return .limited(bucket: index - 1, retryAfter: .milliseconds(max(1, retry)))
    }

    // MARK: - Scripts

    /// Lua shared by the scripts: `now` from `TIME`, and `window_state(key, limit, window)` →
    /// window start, current count, previous count, ms until one more event fits (0: it fits now).
    ///
    /// The estimate is `previous × (part of the previous window still inside the sliding window)
    /// + current`. An event fits while `estimate + 1 ≤ limit`.
    ///
    /// `now` never goes back before the stored window start: after a Redis clock jump backwards the
    /// counter stays in its window (as if no time had passed) instead of starting a fresh one.
    static let common =
        StoreScripts.now + "\n" + """
            local function window_state(key, limit, window)
              local h = redis.call('HMGET', key, 'w', 'c', 'p')
              local ws = tonumber(h[1])
              local now = now
              if ws and now < ws then now = ws end
              local start = now - (now % window)
              local c = tonumber(h[2]) or 0
              local p = tonumber(h[3]) or 0
              if ws == nil then
                c = 0; p = 0
              elseif ws ~= start then
                if ws == start - window then p = c else p = 0 end
                c = 0
              end
              local elapsed = now - start
              local estimate = p * (window - elapsed) / window + c
              local retry = 0
              if estimate + 1 > limit then
                if c + 1 > limit then
                  retry = (start + window - now) + math.ceil(window * (1 - (limit - 1) / c))
                else
                  retry = math.ceil(window * (1 - (limit - 1 - c) / p)) - elapsed
                end
                if retry < 1 then retry = 1 end
              end
              return start, c, p, retry
            end
            local function count(key, start, c, p, window)
              redis.call('HSET', key, 'w', start, 'c', c + 1, 'p', p)
              redis.call('PEXPIREAT', key, start + 2 * window)
            end
            """

    /// KEYS: counters. ARGV: limit, window ms per key. {0} and every counter +1, or {i, retry ms}
    /// (1-based index of the first counter at its limit) and nothing counted.
    /// `deny-oom` (no `allow-oom`): it creates keys, so at `maxmemory` Redis refuses it.
    static let acquireScript = RedisScript(
        """
        #!lua
        \(common)
        local states = {}
        for i, key in ipairs(KEYS) do
          local limit, window = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
          local start, c, p, retry = window_state(key, limit, window)
          if retry > 0 then return {i, retry} end
          states[i] = {start, c, p, window}
        end
        for i, key in ipairs(KEYS) do
          local s = states[i]
          count(key, s[1], s[2], s[3], s[4])
        end
        return {0}
        """)

    /// As `acquire`, but writes nothing.
    static let checkScript = RedisScript(
        """
        #!lua flags=no-writes
        \(common)
        for i, key in ipairs(KEYS) do
          local limit, window = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
          local start, c, p, retry = window_state(key, limit, window)
          if retry > 0 then return {i, retry} end
        end
        return {0}
        """)

    /// Counts one event in every counter unconditionally; then {next, retry ms, over}: `next` the
    /// first counter where one more event would not fit (0: none), `over` the first counter that
    /// had no room for this event (0: every one had). `deny-oom`, as `acquire`.
    static let recordScript = RedisScript(
        """
        #!lua
        \(common)
        local next_i, next_retry, over = 0, 0, 0
        for i, key in ipairs(KEYS) do
          local limit, window = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
          local start, c, p, retry = window_state(key, limit, window)
          if retry > 0 and over == 0 then over = i end
          count(key, start, c, p, window)
          if next_i == 0 then
            local _, _, _, retry2 = window_state(key, limit, window)
            if retry2 > 0 then next_i = i; next_retry = retry2 end
          end
        end
        return {next_i, next_retry, over}
        """)

    /// KEYS: counters. ARGV: limit, window ms per key (the limit is unused). One event less per
    /// counter: from the current window's count while it has one, else from the previous
    /// window's; a counter last written in the previous window still holds the event in `c`
    /// (which becomes `p` with the next count), so it is taken from there. Never below zero;
    /// older counters are left alone. Only changes existing keys, so `allow-oom`.
    static let releaseScript = RedisScript(
        """
        #!lua flags=allow-oom
        \(common)
        for i, key in ipairs(KEYS) do
          local window = tonumber(ARGV[2 * i])
          local h = redis.call('HMGET', key, 'w', 'c', 'p')
          local ws = tonumber(h[1])
          if ws then
            local t = now
            if t < ws then t = ws end
            local start = t - (t % window)
            if ws == start or ws == start - window then
              if tonumber(h[2] or '0') > 0 then
                redis.call('HINCRBY', key, 'c', -1)
              elseif ws == start and tonumber(h[3] or '0') > 0 then
                redis.call('HINCRBY', key, 'p', -1)
              end
            end
          end
        end
        return {0}
        """)
}
