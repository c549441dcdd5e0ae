/// How many copies a write must reach before it counts as made: `WAIT` (replicas that received
/// it) or, with ``appendOnlyFile``, `WAITAOF` (copies fsynced to an append-only file).
///
/// Redis replication is asynchronous: a primary that dies right after a write can be replaced
/// by a replica that never saw it. Waiting for acknowledgements narrows that window to the
/// writes that were *not* acknowledged; it does not make Redis strongly consistent (a write
/// that timed out may still be on the primary, or on some replicas, and a failover may still
/// promote a replica that lacks it when fewer replicas than ``replicas`` are in sync).
public struct RedisDurability: Sendable, Hashable {
    /// Replicas that must acknowledge the write (`WAIT numreplicas`; `WAITAOF … numreplicas`).
    public var replicas: Int
    /// How long to wait for them (each wait holds its connection that long at most).
    public var timeout: Duration
    /// Also require the write fsynced to the primary's append-only file and to `replicas`
    /// replicas' ones (`WAITAOF 1 replicas timeout`: Redis ≥ 7.2, Valkey ≥ 8.0, with
    /// `appendonly yes`). Survives a power loss of the primary, not only a crash.
    public var appendOnlyFile: Bool

    /// - Throws: ``RedisError/Code/invalidArgument`` for a negative replica count or a timeout
    ///   outside 1 ms…60 s (`WAIT 0 0` would block forever).
    public init(replicas: Int, timeout: Duration = .milliseconds(500), appendOnlyFile: Bool = false) throws {
        guard (0...64).contains(replicas) else { throw RedisError(.invalidArgument, "durability needs 0…64 replicas, got \(replicas)") }
        guard timeout >= .milliseconds(1), timeout <= .seconds(60) else {
            throw RedisError(.invalidArgument, "the durability timeout must be 1 ms…60 s")
        }
        self.replicas = replicas
        self.timeout = timeout
        self.appendOnlyFile = appendOnlyFile
    }

    /// The command sent right after the write, on the same connection.
    var command: RedisCommand {
        let milliseconds = max(1, timeout.milliseconds)
        return appendOnlyFile ? RedisCommand("WAITAOF", 1, replicas, milliseconds) : RedisCommand("WAIT", replicas, milliseconds)
    }

    /// Reads the reply of ``command``.
    func acknowledgement(from reply: RedisValue) throws -> RedisAcknowledgement {
        if appendOnlyFile {
            guard let parts = reply.array, parts.count == 2, let local = parts[0].int, let replicated = parts[1].int else {
                throw RedisError(.protocolError, "WAITAOF answered \(reply)")
            }
            return RedisAcknowledgement(required: self, replicas: replicated, localAppendOnlyFile: local > 0)
        }
        guard let replicated = reply.int else { throw RedisError(.protocolError, "WAIT answered \(reply)") }
        return RedisAcknowledgement(required: self, replicas: replicated, localAppendOnlyFile: nil)
    }
}

/// What Redis confirmed of a write sent with a ``RedisDurability``.
public struct RedisAcknowledgement: Sendable, Hashable {
    /// What was asked for.
    public let required: RedisDurability
    /// Replicas that acknowledged (with ``RedisDurability/appendOnlyFile``: that fsynced it).
    public let replicas: Int
    /// With ``RedisDurability/appendOnlyFile``: whether the primary fsynced it; else `nil`.
    public let localAppendOnlyFile: Bool?

    /// Whether every copy asked for confirmed the write in time.
    public var isSatisfied: Bool {
        replicas >= required.replicas && (localAppendOnlyFile ?? true)
    }
}

extension RedisConnection {
    /// Sends one command and, when `trailer` is given, one more right behind it in the same write
    /// (so on the same connection: `WAIT` counts that connection's writes). Throws the first
    /// command's error; the trailer's result is returned as it came.
    func send(_ bytes: [UInt8], trailer: [UInt8]?) async throws -> (RedisValue, Result<RedisValue, RedisError>?) {
        guard let trailer else { return (try await send(bytes), nil) }
        let results = await sendPipeline(bytes + trailer, count: 2)
        return (try results[0].get(), results[1])
    }
}
