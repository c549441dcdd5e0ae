import RedisClient

/// The Lua scripts that make every decision atomic across API nodes. Each reads the Redis
/// server's clock (`TIME`), so nodes with skewed clocks agree.
///
/// Record fields: `h` the device code's digest (`KeySchema.decode(deviceCode:)`; every script that acts
/// for a device code or a grant id checks it), `s` status (`p` pending, `a` authorized, `d` denied, `r` redeemed), `c` client
/// id, `sc` scopes, `e` expiry (ms), `l` last accepted poll (ms), `i` interval (s), `u` user id,
/// `ca` created (ms), `dt` decided (ms), `rp` replayed polls, `o` the address the device asked from
/// (at most 64 bytes, absent when unknown), `m` the approval's MAC (see `KeySchema.approvalMAC`);
/// after a redemption with a retry window: `t` the token answer sealed under the node secret
/// (`AnswerSeal`), `w` the window's end (ms), `ro` the redeeming poll's origin digest.
///
/// Clock: Redis's `TIME` can jump backwards (NTP step, a restored VM). Every script that compares
/// or stores times first raises `now` to the latest time the record (or counter) holds, with
/// ``clampNow(_:)``, so a jump back never makes a grant younger, never measures a negative poll
/// spacing from an earlier poll, and never restarts a counter's window. (A jump back then shows
/// as time standing still until the clock has caught up.)
///
/// Flags: `issue` is `deny-oom` (the default for scripts with a shebang): at `maxmemory` it is
/// refused before it runs, so a grant is written whole or not at all. Polls and decisions only
/// touch existing records and are `allow-oom`, so they keep working at `maxmemory`.
package enum StoreScripts {
    /// Lua setting `now` (milliseconds) from the Redis server's clock: the one clock of every
    /// script of the package.
    package static let now = """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        """

    /// Lua raising `now` to the largest of the stored times in `fields` (Lua expressions).
    static func clampNow(_ fields: String...) -> String {
        // Unrolled rather than `ipairs` over the fields: a missing field must not end the loop.
        fields.map { "do local v = tonumber(\($0)); if v and v > now then now = v end end" }.joined(separator: "\n")
    }

    /// KEYS: the grant's record (its key comes from the user code). ARGV: device-code digest,
    /// lifetime ms, grace ms, interval s, client id, scopes, origin (empty: not stored). Returns
    /// the expiry (ms), or 0 when the user code is taken (its record exists, until expiry + grace).
    static let issue = RedisScript(
        """
        #!lua
        if redis.call('HMGET', KEYS[1], 'c')[1] then return 0 end
        \(now)
        local expires = now + tonumber(ARGV[2])
        redis.call('HSET', KEYS[1], 's', 'p', 'c', ARGV[5], 'sc', ARGV[6], 'e', expires, 'i', ARGV[4], 'ca', now, 'h', ARGV[1])
        if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'o', ARGV[7]) end
        redis.call('PEXPIREAT', KEYS[1], expires + tonumber(ARGV[3]))
        return expires
        """)

    /// KEYS: device record. ARGV: client id, tolerance ms, interval cap s, retry window ms (`0`:
    /// redeem in this script), device-code digest (a record with another `h` is not this code's:
    /// unknown).
    /// The token endpoint in one round trip: rate limit, poll time, outcome, and (window `0`)
    /// single-use redemption.
    /// - Approved, window `0`: redeems and returns `{'authorized', user, scopes, mac}`. The node
    ///   checks the MAC before it issues a token (Lua has no secret), so a forged approval still
    ///   costs this one round trip and burns the record.
    /// - Approved, window > 0: returns `{'approved', user, scopes, mac}` and changes nothing; the
    ///   node mints the answer and redeems with ``redeem``, which stores it sealed.
    /// - Redeemed, retry window open: `{'redeemed', sealed answer, origin digest of the redeeming
    ///   poll, ms since the redemption}`, counting nothing: the node sends the answer again if this
    ///   poll comes from that origin (a device whose answer was lost, polling again), else counts a
    ///   replay with ``countReplay``. (The node works out the poll's origin only then, so pending
    ///   polls never pay for it.) Otherwise a replay, counted in `rp` (after the window the sealed
    ///   answer is cleared).
    /// `slow_down` raises the interval by 5 s up to the cap (an interval already above it, as
    /// issued, is left alone).
    static let poll = RedisScript(
        """
        #!lua flags=allow-oom
        local r = redis.call('HMGET', KEYS[1], 's', 'c', 'e', 'l', 'i', 'u', 'sc', 'm', 'ca', 'dt', 'w', 'ro', 'h')
        local s = r[1]
        if not s or r[13] ~= ARGV[5] then return {\(PollReply.unknown.lua)} end
        if r[2] ~= ARGV[1] then return {\(PollReply.wrongClient.lua)} end
        \(now)
        \(clampNow("r[4]", "r[9]", "r[10]"))
        if s == 'r' then
          local w = tonumber(r[11])
          if w and now < w then
            local t = redis.call('HMGET', KEYS[1], 't')[1]
            if t and t ~= '' then return {\(PollReply.redeemed.lua), t, r[12] or '', now - (tonumber(r[4]) or now)} end
          end
          -- Window over: the sealed answer is no longer needed (HSET: the ACL has no HDEL).
          if w and w > 0 and now >= w then redis.call('HSET', KEYS[1], 't', '', 'w', 0) end
          redis.call('HINCRBY', KEYS[1], 'rp', 1)
          return {\(PollReply.replay.lua)}
        end
        if s == 'd' then return {\(PollReply.denied.lua)} end
        if now >= tonumber(r[3]) then return {\(PollReply.expired.lua)} end
        if s == 'a' then
          if ARGV[4] ~= '0' then return {\(PollReply.approved.lua), r[6] or '', r[7] or '', r[8] or ''} end
          redis.call('HSET', KEYS[1], 's', 'r', 'l', now)
          return {\(PollReply.authorized.lua), r[6] or '', r[7] or '', r[8] or ''}
        end
        local interval = tonumber(r[5])
        if r[4] and now - tonumber(r[4]) < interval * 1000 - tonumber(ARGV[2]) then
          local cap = tonumber(ARGV[3])
          if interval < cap then
            interval = math.min(interval + 5, cap)
            redis.call('HSET', KEYS[1], 'i', interval)
          end
          return {\(PollReply.slowDown.lua), interval}
        end
        redis.call('HSET', KEYS[1], 'l', now)
        return {\(PollReply.pending.lua)}
        """)

    /// KEYS: device record. A poll of a redeemed code from another origin than the redeeming
    /// poll's, within the retry window (see ``poll``): a replay, counted in `rp`. 0 when the
    /// record is not redeemed (gone).
    static let countReplay = RedisScript(
        """
        #!lua flags=allow-oom
        if redis.call('HMGET', KEYS[1], 's')[1] ~= 'r' then return 0 end
        redis.call('HINCRBY', KEYS[1], 'rp', 1)
        return 1
        """)

    /// KEYS: device record. ARGV: client id, the approval MAC the node checked, sealed answer,
    /// retry window ms, origin digest, grace ms, device-code digest.
    /// Single-use redemption of an approved grant with its answer (the second step of a poll
    /// with a retry window): approved → redeemed, storing the sealed answer (`t`), the window's
    /// end (`w`) and the redeeming poll's origin digest (`ro`); the record then lives at least
    /// until the window ends. `{'redeemed'}`; `{'taken', sealed}` when another poll of the same
    /// origin redeemed first (its answer is the one to send, so one grant gives one token);
    /// `{'replay'}` (counted) when a poll of another origin did; `{'gone'}` when the record is
    /// no longer the approval that was checked.
    static let redeem = RedisScript(
        """
        #!lua flags=allow-oom
        local r = redis.call('HMGET', KEYS[1], 's', 'c', 'm', 'e', 'l', 'ca', 'dt', 'ro', 't', 'h')
        if not r[1] or r[2] ~= ARGV[1] or r[10] ~= ARGV[7] then return {\(RedeemReply.gone.lua)} end
        if r[1] == 'r' then
          if r[8] == ARGV[5] and r[9] and r[9] ~= '' then return {\(RedeemReply.taken.lua), r[9]} end
          redis.call('HINCRBY', KEYS[1], 'rp', 1)
          return {\(RedeemReply.replay.lua)}
        end
        if r[1] ~= 'a' or r[3] ~= ARGV[2] then return {\(RedeemReply.gone.lua)} end
        \(now)
        \(clampNow("r[5]", "r[6]", "r[7]"))
        local window = tonumber(ARGV[4])
        redis.call('HSET', KEYS[1], 's', 'r', 'l', now, 't', ARGV[3], 'w', now + window, 'ro', ARGV[5])
        if now + window > tonumber(r[4]) + tonumber(ARGV[6]) then redis.call('PEXPIREAT', KEYS[1], now + window) end
        return {\(RedeemReply.redeemed.lua)}
        """)

    /// KEYS: device record. A write behind a redemption, on the connection that sends the `WAIT`
    /// (the poll itself is sent without one, so pending polls never wait): the wait then covers
    /// the redemption too, which is earlier in the replication stream. Rewrites `s` of a redeemed
    /// record as it is (`HSET` is propagated even when nothing changes); 0 when not redeemed.
    static let confirmRedemption = RedisScript(
        """
        #!lua flags=allow-oom
        if redis.call('HMGET', KEYS[1], 's')[1] ~= 'r' then return 0 end
        redis.call('HSET', KEYS[1], 's', 'r')
        return 1
        """)

    /// KEYS: device record. ARGV: the device-code digest of the grant the person was shown (`''`:
    /// whichever grant the user code has now), new status `a` or `d`, user id, and for `a` the
    /// approval MAC and the client id and scopes the node computed it over: `{'changed'}` unless
    /// the record still holds exactly those (the MAC would not match them).
    /// PENDING → AUTHORIZED / DENIED, nothing else. `{'changed'}` when the record is another grant
    /// than the one shown (its user code was issued again).
    static let decide = RedisScript(
        """
        #!lua flags=allow-oom
        local r = redis.call('HMGET', KEYS[1], 's', 'e', 'c', 'sc', 'ca', 'l', 'h')
        if not r[1] then return {\(DecideReply.notFound.lua)} end
        if ARGV[1] ~= '' and r[7] ~= ARGV[1] then return {\(DecideReply.changed.lua)} end
        if r[1] ~= 'p' then return {\(DecideReply.decided.lua), r[1]} end
        \(now)
        \(clampNow("r[5]", "r[6]"))
        if now >= tonumber(r[2]) then return {\(DecideReply.expired.lua)} end
        if ARGV[2] == 'a' then
          if r[3] ~= ARGV[5] or (r[4] or '') ~= ARGV[6] then return {\(DecideReply.changed.lua)} end
          redis.call('HSET', KEYS[1], 's', 'a', 'u', ARGV[3], 'm', ARGV[4], 'dt', now)
        else
          redis.call('HSET', KEYS[1], 's', 'd', 'dt', now)
        end
        return {\(DecideReply.ok.lua)}
        """)

    /// KEYS: device record. ARGV: the device-code digest it must have (`''`: any). Returns
    /// {h, now, s, c, sc, e, l, i, u, ca, o} or an empty array.
    static let read = RedisScript(
        """
        #!lua flags=no-writes
        local r = redis.call('HMGET', KEYS[1], 's', 'c', 'sc', 'e', 'l', 'i', 'u', 'ca', 'o', 'dt', 'h')
        if not r[1] or not r[11] or (ARGV[1] ~= '' and r[11] ~= ARGV[1]) then return {} end
        \(now)
        \(clampNow("r[5]", "r[8]", "r[10]"))
        return {r[11], tostring(now), r[1], r[2], r[3] or '', r[4], r[5] or '', r[6], r[7] or '', r[8] or '', r[9] or ''}
        """)

    /// KEYS: device record. ARGV: interval s, tolerance ms, interval cap s, device-code digest. The reference's
    /// `checkRateLimit`: 1 (slow down; the stored interval grows by 5, up to the cap), 0 (in
    /// time), -1 (unknown).
    static let checkRateLimit = RedisScript(
        """
        #!lua flags=allow-oom
        local r = redis.call('HMGET', KEYS[1], 's', 'l', 'i', 'ca', 'h')
        if not r[1] or r[5] ~= ARGV[4] then return -1 end
        \(now)
        \(clampNow("r[2]", "r[4]"))
        local interval = math.max(tonumber(ARGV[1]), tonumber(r[3]))
        if r[2] and now - tonumber(r[2]) < tonumber(ARGV[1]) * 1000 - tonumber(ARGV[2]) then
          local cap = tonumber(ARGV[3])
          if interval < cap then redis.call('HSET', KEYS[1], 'i', math.min(interval + 5, cap)) end
          return 1
        end
        return 0
        """)

    /// KEYS: device record. ARGV: device-code digest. The reference's `updatePollTime`: 1, or 0 when unknown.
    static let updatePollTime = RedisScript(
        """
        #!lua flags=allow-oom
        local r = redis.call('HMGET', KEYS[1], 's', 'l', 'ca', 'h')
        if not r[1] or r[4] ~= ARGV[1] then return 0 end
        \(now)
        \(clampNow("r[2]", "r[3]"))
        redis.call('HSET', KEYS[1], 'l', now)
        return 1
        """)

    /// KEYS: the failure counters of one lookup attempt (each caller bucket, the user, global; all
    /// `{bf}`). ARGV: limit, window ms per key.
    ///
    /// Charge before the answer: if every counter has room, counts the attempt in all of them and
    /// returns `{0, window start of each counter…}` (what ``releaseFailures`` needs to give the
    /// charge back); else counts nothing and returns `{i, ms until counter i's window ends}`.
    /// Because the check and the count are one script, a burst across any number of nodes gets at
    /// most `limit` charges per window admitted, whatever the interleaving.
    ///
    /// Each counter is a hash: `w` window start (ms), `c` attempts in it. A fixed window that
    /// starts with its first attempt. `now` never goes back before `w`, so a Redis clock jump
    /// backwards does not restart a window (it lasts longer in wall time instead).
    /// `deny-oom` (no `allow-oom`): it creates keys, so at `maxmemory` Redis refuses it and the
    /// lookup fails with a ``RedisError`` instead of growing Redis.
    static let chargeFailures = RedisScript(
        """
        #!lua
        \(now)
        local states = {}
        for i, key in ipairs(KEYS) do
          local limit, window = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
          local h = redis.call('HMGET', key, 'w', 'c')
          local w, c = tonumber(h[1]), tonumber(h[2]) or 0
          local t = now
          if w and t < w then t = w end
          if w == nil or t >= w + window then w = t; c = 0 end
          if c >= limit then return {i, w + window - t} end
          states[i] = {w, c, window}
        end
        local reply = {0}
        for i, key in ipairs(KEYS) do
          local st = states[i]
          redis.call('HSET', key, 'w', st[1], 'c', st[2] + 1)
          redis.call('PEXPIREAT', key, st[1] + st[3])
          reply[i + 1] = st[1]
        end
        return reply
        """)

    /// KEYS: the counters of an admitted charge. ARGV: the window start ``chargeFailures`` returned
    /// for each. Gives the charge back: one attempt less in each counter that is still in that
    /// window (never below zero; a counter whose window has ended already let the charge go).
    /// A counter back at zero is deleted, so honest lookups leave nothing in Redis; that is safe
    /// because a zero counter holds no charge a later refund could still mean (the next charge
    /// starts a fresh window). Touches only existing keys, so `allow-oom`: a refund is never
    /// refused at `maxmemory`.
    static let releaseFailures = RedisScript(
        """
        #!lua flags=allow-oom
        for i, key in ipairs(KEYS) do
          local h = redis.call('HMGET', key, 'w', 'c')
          if h[1] == ARGV[i] and tonumber(h[2] or '0') > 0 then
            -- PEXPIRE 0 deletes the key; it is in the deployed ACL, DEL is not.
            if redis.call('HINCRBY', key, 'c', -1) == 0 then redis.call('PEXPIRE', key, 0) end
          end
        end
        return 1
        """)
}
