import DeviceAuthorization
import RedisClient

/// One issued grant as the benchmark sees it: the device's secret and the Redis key of its record.
struct BenchGrant: Sendable {
    /// The device code the device polls with.
    var deviceCode: String
    /// The device record's key, `<prefix>:{<tag>}:d:<id>`, as the store names it.
    var deviceKey: String
}

/// Issuing and checking the pending grants the store benchmark polls.
enum PendingGrants {
    /// The client every grant is issued to (and polled as).
    static let clientID = "bench-client"
    /// The scopes of every grant (they are stored in the record, so they count in its size).
    static let scopes = ["openid", "profile"]
    /// Long enough that no grant expires during a run (a poll then answers `expired_token`).
    static let lifetime = Duration.seconds(3_600)
    /// The address every grant was asked from, as the HTTP layer passes it (stored in the record).
    static let origin = "203.0.113.254"

    /// Issues `count` grants with interval 0 (so a poll never gets `slow_down`), at most
    /// `parallelism` at a time, and returns them in issue order.
    static func issue(_ count: Int, store: DeviceCodeStore, parallelism: Int = 32) async throws -> [BenchGrant] {
        var grants: [BenchGrant] = []
        grants.reserveCapacity(count)
        var next = 0
        while next < count {
            let batch = min(parallelism, count - next)
            let issued = try await withThrowingTaskGroup(of: IssuedDeviceCode.self) { group in
                for _ in 0..<batch {
                    group.addTask {
                        try await store.issue(clientID: clientID, scopes: scopes, lifetime: lifetime, interval: 0, origin: origin)
                    }
                }
                var batchResults: [IssuedDeviceCode] = []
                for try await one in group { batchResults.append(one) }
                return batchResults
            }
            for one in issued {
                guard let key = store.recordKey(forDeviceCode: one.deviceCode) else {
                    throw ChildProcess.Failure(description: "the store issued a malformed device code")
                }
                grants.append(BenchGrant(deviceCode: one.deviceCode, deviceKey: key))
            }
            next += batch
        }
        return grants
    }

    /// Checks that `grant`'s derived key really is its record in Redis, that a store poll answers
    /// `authorization_pending`, and that the raw `EVALSHA` the baseline sends answers `pending` too
    /// (redis-benchmark counts error replies as successes, so a wrong command would look fast).
    static func verify(_ grant: BenchGrant, store: DeviceCodeStore, client: RedisClient) async throws -> [String] {
        let outcome = try await store.poll(deviceCode: grant.deviceCode, clientID: clientID)
        guard outcome == .authorizationPending else {
            throw ChildProcess.Failure(description: "a store poll answered \(outcome), expected authorizationPending")
        }
        let storedClient = try await client.send("HGET", grant.deviceKey, "c").string
        guard storedClient == clientID else {
            throw ChildProcess.Failure(description: "\(grant.deviceKey) is not the grant's record (client field: \(storedClient ?? "none"))")
        }
        let functions = client.configuration.scriptCalls == .functions
        let loaded: Bool =
            if functions {
                !(try await client.send("FUNCTION", "LIST", "LIBRARYNAME", "l" + DeviceCodeStore.pollScriptSHA1).array ?? []).isEmpty
            } else {
                try await client.send("SCRIPT", "EXISTS", DeviceCodeStore.pollScriptSHA1).array?.first?.int == 1
            }
        guard loaded else {
            throw ChildProcess.Failure(description: "the poll script \(DeviceCodeStore.pollScriptSHA1) is not loaded on the server after a poll")
        }
        guard let digest = try await client.send("HMGET", grant.deviceKey, "h").array?.first?.string else {
            throw ChildProcess.Failure(description: "\(grant.deviceKey) has no device-code digest")
        }
        let command = baselineCommand(
            for: grant, digest: digest, tolerance: store.configuration.pollTolerance, maxInterval: store.configuration.maxInterval,
            functions: functions)
        let reply = try await client.send(RedisCommand(arguments: command))
        guard reply.array?.first?.string == "pending" else {
            throw ChildProcess.Failure(description: "\(command.joined(separator: " ")) answered \(reply), expected [pending]")
        }
        return command
    }

    /// The baseline's command: the store's poll script as the client sends it (`FCALL` of its
    /// function, or `EVALSHA` by SHA-1) on `grant`'s record, with the same arguments the store
    /// sends (client id, tolerance in milliseconds, interval cap in seconds, no retry window, the
    /// device code's digest as the record holds it).
    static func baselineCommand(for grant: BenchGrant, digest: String, tolerance: Duration, maxInterval: Int, functions: Bool) -> [String] {
        [
            functions ? "FCALL" : "EVALSHA", functions ? ProductScripts.pollFunctionName : DeviceCodeStore.pollScriptSHA1,
            "1", grant.deviceKey, clientID, "\(tolerance.milliseconds)", "\(maxInterval)", "0", digest,
        ]
    }
}
