import Foundation
import Logging
import RedisClient

extension DeviceCodeStore {
    /// Checks the Redis settings this product relies on and logs a warning for each problem.
    ///
    /// - An eviction policy that may evict keys with a TTL (`volatile-*`, `allkeys-*`) would drop
    ///   live grants under memory pressure: a lost login. Read from `INFO memory`
    ///   (`maxmemory_policy`), not `CONFIG GET`, so the product's ACL user needs no `+config|get`.
    /// - With ``DeviceCodeStoreConfiguration/durability`` on the append-only file (`WAITAOF`): a
    ///   server without `WAITAOF` or with `appendonly no` (every decision would be answered "not
    ///   confirmed yet"), and a server known to acknowledge `WAITAOF` before the fsync under
    ///   `appendfsync everysec` (see ``appendOnlyFileWarnings(info:appendfsync:hasWaitAOF:node:)``).
    ///
    /// In a Redis Cluster every primary is checked. Returns the warnings it logged.
    @discardableResult
    public func checkRedisConfiguration() async -> [String] {
        var warnings: [String] = []
        let replies = await client.sendToEachPrimary(RedisCommand("INFO", "memory"))
        for (node, result) in replies {
            let where_ = client.isCluster ? " on \(node)" : ""
            do {
                let info = try result.get().string ?? ""
                guard let policy = Self.infoField("maxmemory_policy", in: info) else {
                    warnings.append("Could not read Redis maxmemory-policy\(where_) (INFO memory has no maxmemory_policy); make sure it is 'noeviction'.")
                    continue
                }
                if policy != "noeviction" {
                    warnings.append("Redis maxmemory-policy\(where_) is '\(policy)': Redis may evict device codes (keys with a TTL) under memory pressure, and a person's login is then lost. Use 'noeviction'.")
                }
            } catch {
                warnings.append("Could not read Redis maxmemory-policy\(where_) (\(error)); make sure it is 'noeviction'.")
            }
        }
        if configuration.durability?.appendOnlyFile == true {
            warnings += await appendOnlyFileWarnings()
        }
        for warning in warnings { logger.warning("\(warning)") }
        return warnings
    }

    /// The append-only-file checks on every primary: `INFO server` and `INFO persistence`,
    /// `COMMAND INFO WAITAOF`, and `CONFIG GET appendfsync` where the user may read it.
    private func appendOnlyFileWarnings() async -> [String] {
        var warnings: [String] = []
        let infos = await client.sendToEachPrimary(RedisCommand("INFO", "server", "persistence"))
        let commands = Self.byNode(await client.sendToEachPrimary(RedisCommand("COMMAND", "INFO", "WAITAOF")))
        let fsyncs = Self.byNode(await client.sendToEachPrimary(RedisCommand("CONFIG", "GET", "appendfsync")))
        for (node, result) in infos {
            let where_ = client.isCluster ? " on \(node)" : ""
            guard let info = try? result.get().string else {
                warnings.append("Could not read INFO persistence from Redis\(where_); make sure it has WAITAOF and appendonly yes (durability.append_only_file).")
                continue
            }
            // `COMMAND INFO WAITAOF` answers [nil] where the command does not exist.
            let hasWaitAOF = (try? commands[node]?.get())?.array?.first?.array != nil
            // CONFIG GET answers [name, value]; nil when the ACL user lacks +config|get.
            let appendfsync = (try? fsyncs[node]?.get())?.array.flatMap { $0.count == 2 ? $0[1].string : nil }
            warnings += Self.appendOnlyFileWarnings(info: info, appendfsync: appendfsync, hasWaitAOF: hasWaitAOF, node: where_)
        }
        return warnings
    }

    private static func byNode(_ replies: [(node: RedisEndpoint, result: Result<RedisValue, RedisError>)]) -> [RedisEndpoint: Result<RedisValue, RedisError>] {
        Dictionary(replies.map { ($0.node, $0.result) }, uniquingKeysWith: { first, _ in first })
    }

    /// What is wrong for `WAITAOF` durability on one server, from its `INFO server persistence`,
    /// its `appendfsync` (`nil`: unreadable) and whether it has `WAITAOF`. `node` is `""` or
    /// `" on host:port"`.
    ///
    /// Valkey up to 9.1 (and Redis 7.2–7.4) acknowledge `WAITAOF`'s local fsync under
    /// `appendfsync everysec` as soon as the write reached the file, before any fsync
    /// (redis/redis#13793, fixed in Redis 8.0; reproduced here by `Tests/Faults/run.sh
    /// powerloss-waitaof-everysec`): such an acknowledgement survives a crash of the server, not a
    /// power loss. `appendfsync always` is not affected.
    static func appendOnlyFileWarnings(info: String, appendfsync: String?, hasWaitAOF: Bool, node: String) -> [String] {
        let server = ServerVersion(info: info)
        guard hasWaitAOF else {
            return ["Redis\(node) (\(server.description)) has no WAITAOF: with durability.append_only_file every approval and denial is answered 'not confirmed yet' and every redemption is held. Use Redis ≥ 7.2 or Valkey ≥ 8, or turn append_only_file off."]
        }
        if infoField("aof_enabled", in: info) == "0" {
            return ["Redis\(node) runs with appendonly no: WAITAOF never confirms, so with durability.append_only_file every approval and denial is answered 'not confirmed yet' and every redemption is held. Set appendonly yes."]
        }
        // `appendfsync no` never confirms a local fsync at all (WAITAOF waits in vain): not this warning.
        guard server.acknowledgesWAITAOFEarlyUnderEverysec, appendfsync == nil || appendfsync == "everysec" else { return [] }
        let setting = appendfsync.map { "appendfsync \($0)" } ?? "an appendfsync this user cannot read (CONFIG GET)"
        return ["Redis\(node) (\(server.description)) with \(setting): this server confirms WAITAOF before the write is fsynced under appendfsync everysec (redis/redis#13793), so a confirmed approval or redemption survives a crash of the server but not a power loss. Set appendfsync always for durability.append_only_file to hold."]
    }

    /// The value of `name:value` in an `INFO` reply (lines end in CRLF).
    static func infoField(_ name: String, in info: String) -> String? {
        for line in info.split(whereSeparator: \.isNewline) {
            let line = line.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix(name + ":") { return String(line.dropFirst(name.count + 1)) }
        }
        return nil
    }
}

/// The server's name and version from `INFO server` (`valkey_version` when it is Valkey, else
/// `redis_version`).
struct ServerVersion: Sendable, Equatable, CustomStringConvertible {
    let isValkey: Bool
    /// Major, minor, patch; empty when unreadable.
    let version: [Int]

    init(info: String) {
        let valkey = DeviceCodeStore.infoField("valkey_version", in: info)
        isValkey = valkey != nil || DeviceCodeStore.infoField("server_name", in: info) == "valkey"
        let text = valkey ?? DeviceCodeStore.infoField("redis_version", in: info) ?? ""
        version = text.split(separator: ".").prefix(3).compactMap { Int($0) }
    }

    var description: String {
        (isValkey ? "Valkey " : "Redis ") + (version.isEmpty ? "of unknown version" : version.map(String.init).joined(separator: "."))
    }

    /// The versions known to release `WAITAOF` before the fsync under `everysec`: Valkey up to
    /// 9.1 (every release so far), Redis 7.2–7.4. An unreadable version counts as affected.
    var acknowledgesWAITAOFEarlyUnderEverysec: Bool {
        guard version.count >= 2 else { return true }
        let majorMinor = (version[0], version[1])
        if isValkey { return majorMinor <= (9, 1) }
        return majorMinor >= (7, 2) && majorMinor < (8, 0)
    }
}
