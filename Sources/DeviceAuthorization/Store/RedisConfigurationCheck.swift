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
    ///   `appendfsync everysec` (see ``appendOnlyFileWarnings(info:node:)``).
    ///
    /// In a Redis Cluster every primary is checked. Returns the warnings it logged.
    @discardableResult
    public func checkRedisConfiguration() async -> [String] {
        let appendOnlyFile = configuration.durability?.appendOnlyFile == true
        // One INFO per primary; the product's ACL user has no `+config|get` (it would also read
        // the passwords) and no `+command`, so everything comes from INFO.
        let command = appendOnlyFile ? RedisCommand("INFO", "memory", "server", "persistence") : RedisCommand("INFO", "memory")
        var warnings: [String] = []
        for (node, result) in await client.sendToEachPrimary(command) {
            let where_ = client.isCluster ? " on \(node)" : ""
            let info: String
            do {
                info = try result.get().string ?? ""
            } catch {
                warnings.append(
                    "Could not read INFO from Redis\(where_) (\(error)); make sure maxmemory-policy is 'noeviction'"
                        + (appendOnlyFile ? " and that it has WAITAOF and appendonly yes (durability.append_only_file)." : "."))
                continue
            }
            if let policy = Self.infoField("maxmemory_policy", in: info) {
                if policy != "noeviction" {
                    warnings.append(
                        "Redis maxmemory-policy\(where_) is '\(policy)': Redis may evict device codes (keys with a TTL) under memory pressure, and a person's login is then lost. Use 'noeviction'."
                    )
                }
            } else {
                warnings.append("Could not read Redis maxmemory-policy\(where_) (INFO memory has no maxmemory_policy); make sure it is 'noeviction'.")
            }
            if appendOnlyFile { warnings += Self.appendOnlyFileWarnings(info: info, node: where_) }
        }
        for warning in warnings { logger.warning("\(warning)") }
        return warnings
    }

    /// What is wrong for `WAITAOF` durability on one server, from its `INFO server persistence`.
    /// `node` is `""` or `" on host:port"`.
    ///
    /// Valkey up to 9.1 (and Redis 7.2–7.4) acknowledge `WAITAOF`'s local fsync under
    /// `appendfsync everysec` as soon as the write reached the file, before any fsync
    /// (redis/redis#13793, fixed in Redis 8.0; reproduced by `Tests/Faults/run.sh
    /// powerloss-waitaof-everysec`): such an acknowledgement survives a crash of the server, not a
    /// power loss. `appendfsync always` is not affected; `INFO` does not show the setting, so on
    /// those versions the warning names it.
    static func appendOnlyFileWarnings(info: String, node: String) -> [String] {
        let server = ServerVersion(info: info)
        guard server.hasWaitAOF else {
            return [
                "Redis\(node) (\(server.description)) has no WAITAOF: with durability.append_only_file every approval and denial is answered 'not confirmed yet' and every redemption is held. Use Redis ≥ 7.2 or Valkey ≥ 8, or turn append_only_file off."
            ]
        }
        if infoField("aof_enabled", in: info) == "0" {
            return [
                "Redis\(node) runs with appendonly no: WAITAOF never confirms, so with durability.append_only_file every approval and denial is answered 'not confirmed yet' and every redemption is held. Set appendonly yes."
            ]
        }
        guard server.acknowledgesWAITAOFEarlyUnderEverysec else { return [] }
        return [
            "Redis\(node) (\(server.description)) confirms WAITAOF before the write is fsynced when appendfsync is everysec (redis/redis#13793): a confirmed approval or redemption then survives a crash of Redis but not a power loss. Unless this server runs appendfsync always, set it for durability.append_only_file to hold."
        ]
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

    /// Whether it has `WAITAOF` (Redis ≥ 7.2, Valkey ≥ 8); an unreadable version counts as yes.
    var hasWaitAOF: Bool {
        guard version.count >= 2 else { return true }
        return isValkey ? version[0] >= 8 : (version[0], version[1]) >= (7, 2)
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
