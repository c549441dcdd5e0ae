import RedisClient

/// The Lua scripts of refresh tokens (RFC 6749 §6, RFC 9700 §4.14), revocation (RFC 7009) and
/// introspection (RFC 7662). Like ``StoreScripts`` they decide on the Redis server's clock, and a
/// rotation is one script, so racing refreshes of one token on any number of nodes rotate it once.
///
/// Family record `{r<family>}:f` (a hash; its TTL is the idle expiry, never past the absolute one):
/// `c` client id, `u` user id, `sc` the family's scopes (what the person approved; a refresh may
/// ask for fewer, never more), `ca` created (ms), `ae` absolute expiry (ms), `i` idle lifetime
/// (ms), `l` last rotation (ms), `n` rotations, `t` the id of the one live refresh token
/// (`KeySchema.refreshTokenID`: a keyed hash, never the token), `m` the family's MAC
/// (`KeySchema.familyMAC`), `j` the family's recent access tokens as `"<jti> <exp s> …"`
/// (at most ARGV-given many, expired ones dropped), denylisted when the family is revoked.
///
/// Denylist `{r<family>}:x` (a hash): `j:<jti>` → the token's `exp` (s), `mx` the latest expiry
/// (ms); its TTL is `mx` + 60 s, so an entry outlives the token it blocks even for resource
/// servers whose clocks are a minute behind.
///
/// A revoked family is deleted (`PEXPIRE 0`: the deployed ACL has no `DEL`), so every later
/// refresh with any of its tokens, the newest included, finds nothing: `invalid_grant`.
enum RefreshScripts {
    /// Lua: denylists the live access tokens of `j` (the family's `j` field) in KEYS[2] and deletes
    /// the family KEYS[1]. Needs `now`.
    static let revokeFamily = """
        local function revoke_family(j)
          local mx = tonumber(redis.call('HMGET', KEYS[2], 'mx')[1]) or 0
          local listed = false
          for jti, exp in string.gmatch(j or '', '(%S+) (%d+)') do
            local e = tonumber(exp) * 1000
            if e > now then
              redis.call('HSET', KEYS[2], 'j:' .. jti, exp)
              if e > mx then mx = e end
              listed = true
            end
          end
          if listed then
            redis.call('HSET', KEYS[2], 'mx', mx)
            redis.call('PEXPIREAT', KEYS[2], mx + 60000)
          end
          redis.call('PEXPIRE', KEYS[1], 0)
        end
        """

    /// Lua: `j` with the expired entries dropped, `ARGV[jti]`/`ARGV[exp]` appended (when the jti is
    /// not empty), and only the newest `max` kept.
    static let appendAccessToken = """
        local function append_access_token(j, jti, exp, max)
          local kept = {}
          for t, e in string.gmatch(j or '', '(%S+) (%d+)') do
            if tonumber(e) * 1000 > now then kept[#kept + 1] = t .. ' ' .. e end
          end
          if jti ~= '' then kept[#kept + 1] = jti .. ' ' .. exp end
          while #kept > max do table.remove(kept, 1) end
          return table.concat(kept, ' ')
        end
        """

    /// KEYS: family record. ARGV: token id, client id, user id, scopes, idle ms, absolute ms, MAC,
    /// access-token jti ('' none), its exp (s). Creates the family; returns its absolute expiry
    /// (ms), or 0 when the family id is taken (64 random bits: practically never; the caller
    /// draws another).
    static let create = RedisScript(
        """
        #!lua
        if redis.call('HMGET', KEYS[1], 'c')[1] then return 0 end
        \(StoreScripts.now)
        local idle, absolute = tonumber(ARGV[5]), tonumber(ARGV[6])
        local ae = now + absolute
        local j = ''
        if ARGV[8] ~= '' then j = ARGV[8] .. ' ' .. ARGV[9] end
        redis.call('HSET', KEYS[1], 'c', ARGV[2], 'u', ARGV[3], 'sc', ARGV[4], 'ca', now, 'ae', ae, 'i', idle, 'l', now,
                   'n', 0, 't', ARGV[1], 'm', ARGV[7], 'j', j)
        redis.call('PEXPIREAT', KEYS[1], math.min(now + idle, ae))
        return ae
        """)

    /// KEYS: family record, family denylist. ARGV: presented token id, client id, requested scopes
    /// (space-separated; '' = the family's), new token id, new access-token jti ('' none), its exp
    /// (s), most access tokens kept per family.
    ///
    /// The rotation in one step: `{'unknown'}` (no family: never issued, revoked, or expired by
    /// TTL), `{'wrong_client'}` (nothing changes), `{'expired'}` (absolute lifetime over; the
    /// family is deleted), `{'reused'}` (the token is a rotated one: the family is revoked, see
    /// ``revokeFamily``), `{'invalid_scope'}` (nothing changes), or
    /// `{'rotated', user, family scopes, MAC, absolute expiry}`: the presented token is dead and the
    /// new id is the one live token. The node checked the token's own MAC before, so only a token
    /// this deployment issued can be taken for a reused one.
    ///
    /// `allow-oom`: it only rewrites an existing record (its access-token list is bounded), so
    /// refreshes keep working at `maxmemory`.
    static let rotate = RedisScript(
        """
        #!lua flags=allow-oom
        local r = redis.call('HMGET', KEYS[1], 'c', 'u', 'sc', 't', 'ae', 'm', 'j', 'ca', 'l', 'i')
        if not r[1] then return {'unknown'} end
        if r[1] ~= ARGV[2] then return {'wrong_client'} end
        \(StoreScripts.now)
        \(StoreScripts.clampNow("r[8]", "r[9]"))
        \(revokeFamily)
        \(appendAccessToken)
        local ae = tonumber(r[5])
        if now >= ae then
          redis.call('PEXPIRE', KEYS[1], 0)
          return {'expired'}
        end
        if r[4] ~= ARGV[1] then
          revoke_family(r[7])
          return {'reused'}
        end
        local granted = {}
        for s in string.gmatch(r[3], '%S+') do granted[s] = true end
        for s in string.gmatch(ARGV[3], '%S+') do
          if not granted[s] then return {'invalid_scope'} end
        end
        redis.call('HSET', KEYS[1], 't', ARGV[4], 'l', now, 'j', append_access_token(r[7], ARGV[5], ARGV[6], tonumber(ARGV[7])))
        redis.call('HINCRBY', KEYS[1], 'n', 1)
        redis.call('PEXPIREAT', KEYS[1], math.min(now + tonumber(r[10]), ae))
        return {'rotated', r[2], r[3], r[6], tostring(ae)}
        """)

    /// KEYS: family record, family denylist. ARGV: presented token id, client id.
    /// RFC 7009 for a refresh token: any token of the family, the live one or a rotated one,
    /// revokes the whole family (its holder had it). `'revoked'`, `'unknown'` or `'wrong_client'`
    /// (nothing changes).
    static let revoke = RedisScript(
        """
        #!lua flags=allow-oom
        local r = redis.call('HMGET', KEYS[1], 'c', 'j', 'ca', 'l')
        if not r[1] then return 'unknown' end
        if r[1] ~= ARGV[2] then return 'wrong_client' end
        \(StoreScripts.now)
        \(StoreScripts.clampNow("r[3]", "r[4]"))
        \(revokeFamily)
        revoke_family(r[2])
        return 'revoked'
        """)

    /// KEYS: a denylist (a family's, or one access token's own). ARGV: jti, exp (s).
    /// Denylists one access token until 60 s after its expiry. Returns 1.
    ///
    /// `allow-oom`, like ``rotate`` and ``revoke`` (which write the family's denylist): a
    /// revocation must not fail at `maxmemory`; each is bounded (one field per token its client
    /// holds, expiring with the token).
    static let denylist = RedisScript(
        """
        #!lua flags=allow-oom
        local mx = tonumber(redis.call('HMGET', KEYS[1], 'mx')[1]) or 0
        local e = tonumber(ARGV[2]) * 1000
        if e > mx then mx = e end
        redis.call('HSET', KEYS[1], 'j:' .. ARGV[1], ARGV[2], 'mx', mx)
        redis.call('PEXPIREAT', KEYS[1], mx + 60000)
        return 1
        """)

    /// KEYS: a denylist. ARGV: jti. 1 when the access token is denylisted, else 0.
    static let isDenylisted = RedisScript(
        """
        #!lua flags=no-writes
        if redis.call('HMGET', KEYS[1], 'j:' .. ARGV[1])[1] then return 1 end
        return 0
        """)

    /// KEYS: family record. ARGV: presented token id. For introspection: `{}` unless the token is
    /// the family's live one, else `{client, user, scopes, MAC, created ms, expiry ms, now ms}`,
    /// expiry being the earlier of the idle and the absolute one.
    static let read = RedisScript(
        """
        #!lua flags=no-writes
        local r = redis.call('HMGET', KEYS[1], 'c', 'u', 'sc', 't', 'ae', 'm', 'ca', 'l', 'i')
        if not r[1] or r[4] ~= ARGV[1] then return {} end
        \(StoreScripts.now)
        \(StoreScripts.clampNow("r[7]", "r[8]"))
        local expires = math.min(tonumber(r[8]) + tonumber(r[9]), tonumber(r[5]))
        if now >= expires then return {} end
        return {r[1], r[2], r[3], r[6], r[7], tostring(expires), tostring(now)}
        """)

    /// Every refresh script, for ``ProductScripts/all``.
    static var all: [RedisScript] { [create, rotate, revoke, denylist, isDenylisted, read] }
}
