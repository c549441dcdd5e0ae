import DeviceAuthorization
import RedisClient

/// A Lua script shaped like the token endpoint's device-code poll, and the hash it touches.
///
/// Like the real poll it reads the server clock (`TIME`), reads the record's status, interval and
/// last poll time from one hash, writes the poll time back and answers with a small integer:
/// 0 `authorization_pending`, 1 `slow_down`, 2 already decided, 3 unknown code.
enum DevicePollScript {
    /// The script; `KEYS[1]` is the device record.
    static let script = RedisScript(
        StoreScripts.now + "\n" + """
            local record = redis.call('HMGET', KEYS[1], 's', 'lp', 'iv')
            if not record[1] then return 3 end
            redis.call('HSET', KEYS[1], 'lp', now)
            if record[1] ~= 'pending' then return 2 end
            if now - tonumber(record[2] or '0') < tonumber(record[3] or '5') * 1000 then return 1 end
            return 0
            """)

    /// The device record the benchmark polls (a hash tag keeps it cluster-ready).
    static let key = "deviceauth-bench:{poll}:device"

    /// The command redis-benchmark sends: the same script the way the client sends it (`FCALL`
    /// of its function, or `EVALSHA` in eval mode).
    static func baselineCommand(_ client: RedisClient) -> [String] {
        client.configuration.scriptCalls == .functions ? ["FCALL", script.functionName, "1", key] : ["EVALSHA", script.sha1, "1", key]
    }

    /// Loads the script (as a function, or with `SCRIPT LOAD`) and creates the pending device
    /// record it polls (expiring after an hour, so a run against a shared server leaves nothing
    /// behind for long).
    /// - Throws: when Redis fails or answers `SCRIPT LOAD` with another SHA-1 than ours.
    static func prepare(_ client: RedisClient) async throws {
        if client.configuration.scriptCalls == .functions {
            try await client.loadFunctions([script])
        } else {
            let sha = try await client.send("SCRIPT", "LOAD", script.source).string
            guard sha == script.sha1 else {
                throw ChildProcess.Failure(description: "SCRIPT LOAD returned \(sha ?? "nothing"), expected \(script.sha1)")
            }
        }
        try await client.send("DEL", key)
        try await client.send("HSET", key, "s", "pending", "iv", 5, "lp", 0, "c", "deviceauth-bench", "sc", "openid profile")
        try await client.send("EXPIRE", key, 3_600)
        let answer = try await client.eval(script, keys: [key])
        guard let code = answer.int, (0...1).contains(code) else {
            throw ChildProcess.Failure(description: "the poll script answered \(answer), expected 0 or 1")
        }
        // redis-benchmark counts error replies as successes: check the raw command answers too.
        let raw = try await client.send(RedisCommand(arguments: baselineCommand(client)))
        guard let rawCode = raw.int, (0...1).contains(rawCode) else {
            throw ChildProcess.Failure(description: "\(baselineCommand(client).joined(separator: " ")) answered \(raw), expected 0 or 1")
        }
    }

    /// Deletes the device record.
    static func cleanUp(_ client: RedisClient) async throws {
        try await client.send("DEL", key)
    }
}
