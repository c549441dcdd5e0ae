import RedisClient

/// The Lua scripts that make every decision atomic across API nodes. Each reads the Redis
/// server's clock (`TIME`), so nodes with skewed clocks agree.
///
/// Record fields: `s` status (`p` pending, `a` authorized, `d` denied, `r` redeemed), `c` client
/// id, `sc` scopes, `e` expiry (ms), `l` last accepted poll (ms), `i` interval (s), `u` user id,
/// `ca` created (ms), `dt` decided (ms), `rp` replayed polls.
///
/// Flags: `issue` is `deny-oom` (the default for scripts with a shebang): at `maxmemory` it is
/// refused before it runs, so a grant is written whole or not at all. Polls and decisions only
/// touch existing records and are `allow-oom`, so they keep working at `maxmemory`.
enum StoreScripts {
    static let now = """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        """

    /// KEYS: user-code index, device record. ARGV: record id, lifetime ms, grace ms, interval s,
    /// client id, scopes. Returns the expiry (ms), or 0 when the user code is taken.
    static let issue = RedisScript("""
        #!lua
        \(now)
        local lifetime = tonumber(ARGV[2])
        local grace = tonumber(ARGV[3])
        local expires = now + lifetime
        if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', lifetime + grace) then return 0 end
        redis.call('HSET', KEYS[2], 's', 'p', 'c', ARGV[5], 'sc', ARGV[6], 'e', expires, 'i', ARGV[4], 'ca', now)
        redis.call('PEXPIREAT', KEYS[2], expires + grace)
        return expires
        """)

    /// KEYS: device record. ARGV: client id, tolerance ms.
    /// The token endpoint in one round trip: rate limit, poll time, outcome, single-use redemption.
    static let poll = RedisScript("""
        #!lua flags=allow-oom
        local r = redis.call('HMGET', KEYS[1], 's', 'c', 'e', 'l', 'i', 'u', 'sc')
        local s = r[1]
        if not s then return {'unknown'} end
        if r[2] ~= ARGV[1] then return {'wrong_client'} end
        if s == 'r' then
          redis.call('HINCRBY', KEYS[1], 'rp', 1)
          return {'replay'}
        end
        if s == 'd' then return {'denied'} end
        \(now)
        if now >= tonumber(r[3]) then return {'expired'} end
        if s == 'a' then
          redis.call('HSET', KEYS[1], 's', 'r', 'l', now)
          return {'authorized', r[6], r[7] or ''}
        end
        local interval = tonumber(r[5])
        if r[4] and now - tonumber(r[4]) < interval * 1000 - tonumber(ARGV[2]) then
          interval = interval + 5
          redis.call('HSET', KEYS[1], 'i', interval)
          return {'slow_down', interval}
        end
        redis.call('HSET', KEYS[1], 'l', now)
        return {'pending'}
        """)

    /// KEYS: device record, and optionally the user-code index that led to it. ARGV: record id
    /// (checked against the index when given), new status `a` or `d`, user id.
    /// PENDING → AUTHORIZED / DENIED, nothing else.
    ///
    /// Both keys are declared (the caller reads the index first) rather than the record key being
    /// derived in Lua from the index value: in a Redis Cluster an undeclared key is invisible to
    /// slot migration, so while the slot moves the script would fail ("non local key") or, on
    /// the importing node, silently miss a record that has not arrived yet. Declared, the
    /// cluster answers `ASK`/`TRYAGAIN` instead and the client retries.
    static let decide = RedisScript("""
        #!lua flags=allow-oom
        if KEYS[2] and redis.call('GET', KEYS[2]) ~= ARGV[1] then return {'not_found'} end
        local r = redis.call('HMGET', KEYS[1], 's', 'e')
        if not r[1] then return {'not_found'} end
        if r[1] ~= 'p' then return {'decided', r[1]} end
        \(now)
        if now >= tonumber(r[2]) then return {'expired'} end
        if ARGV[2] == 'a' then
          redis.call('HSET', KEYS[1], 's', 'a', 'u', ARGV[3], 'dt', now)
        else
          redis.call('HSET', KEYS[1], 's', 'd', 'dt', now)
        end
        return {'ok'}
        """)

    /// KEYS: device record, and optionally the user-code index that led to it (see ``decide``).
    /// ARGV: record id. Returns {id, now, s, c, sc, e, l, i, u, ca} or an empty array.
    static let read = RedisScript("""
        #!lua flags=no-writes
        if KEYS[2] and redis.call('GET', KEYS[2]) ~= ARGV[1] then return {} end
        local r = redis.call('HMGET', KEYS[1], 's', 'c', 'sc', 'e', 'l', 'i', 'u', 'ca')
        if not r[1] then return {} end
        \(now)
        return {ARGV[1], tostring(now), r[1], r[2], r[3] or '', r[4], r[5] or '', r[6], r[7] or '', r[8] or ''}
        """)

    /// KEYS: device record. ARGV: interval s, tolerance ms. The reference's `checkRateLimit`:
    /// 1 (slow down; the stored interval grows by 5), 0 (in time), -1 (unknown).
    static let checkRateLimit = RedisScript("""
        #!lua flags=allow-oom
        local r = redis.call('HMGET', KEYS[1], 's', 'l', 'i')
        if not r[1] then return -1 end
        \(now)
        local interval = math.max(tonumber(ARGV[1]), tonumber(r[3]))
        if r[2] and now - tonumber(r[2]) < tonumber(ARGV[1]) * 1000 - tonumber(ARGV[2]) then
          redis.call('HSET', KEYS[1], 'i', interval + 5)
          return 1
        end
        return 0
        """)

    /// KEYS: device record. The reference's `updatePollTime`: 1, or 0 when unknown.
    static let updatePollTime = RedisScript("""
        #!lua flags=allow-oom
        if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
        \(now)
        redis.call('HSET', KEYS[1], 'l', now)
        return 1
        """)

    /// KEYS: caller counter, global counter. ARGV: caller limit, global limit.
    /// Returns {0} when under both limits, else {1 or 2, ms until the window ends}.
    static let checkFailures = RedisScript("""
        #!lua flags=no-writes
        if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[1]) then
          return {1, redis.call('PTTL', KEYS[1])}
        end
        if tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[2]) then
          return {2, redis.call('PTTL', KEYS[2])}
        end
        return {0}
        """)

    /// KEYS: caller counter, global counter. ARGV: caller window ms, global window ms.
    /// Counts one failed lookup in both fixed windows.
    static let recordFailure = RedisScript("""
        #!lua flags=allow-oom
        if redis.call('INCR', KEYS[1]) == 1 or redis.call('PTTL', KEYS[1]) < 0 then
          redis.call('PEXPIRE', KEYS[1], ARGV[1])
        end
        if redis.call('INCR', KEYS[2]) == 1 or redis.call('PTTL', KEYS[2]) < 0 then
          redis.call('PEXPIRE', KEYS[2], ARGV[2])
        end
        return 1
        """)
}
