/// Finds the keys of a command, for routing it in a Redis Cluster.
///
/// Only cluster mode calls this, so the single-node path never pays for it. It reads the
/// command's own RESP encoding (which ``RedisCommand`` keeps anyway) instead of storing the
/// arguments a second time.
///
/// Key positions come from a small table of the commands this product and its tests use
/// (strings, hashes, expiry, scripts, introspection such as `MEMORY USAGE`). A command that is
/// not in the table is treated as keyless and sent to any primary; if it did have a key in
/// another node's slot, that node answers `MOVED` and the router follows it, so the table is an
/// optimisation, not a correctness requirement. ``RedisCommand/init(arguments:routingKey:)``
/// overrides the table.
enum CommandKeys {
    /// Where a command's keys are.
    enum Positions {
        case none
        /// The argument at this index (1 = right after the command name).
        case single(Int)
        /// Every argument from this index on (DEL, EXISTS, MGET, …).
        case all(from: Int)
        /// Every other argument from this index on (MSET key value key value …).
        case pairs(from: Int)
        /// Scripts: argument 2 holds the number of keys, which follow it.
        case script
    }

    /// The hash slot of the command's keys, or `nil` for a keyless command.
    /// - Throws: ``RedisError/Code/crossSlot`` when the keys hash to different slots.
    static func slot(of command: RedisCommand) throws -> Int? {
        if command.routingSlot >= 0 { return command.routingSlot }
        return try command.encoded.withUnsafeBytes { bytes -> Int? in
            let arguments = spans(of: bytes)
            guard let name = arguments.first else { return nil }
            let positions = self.positions(name: uppercased(bytes, name), subcommand: arguments.count > 1 ? uppercased(bytes, arguments[1]) : "")
            var keyIndices: [Int] = []
            switch positions {
            case .none: return nil
            case .single(let index): keyIndices = index < arguments.count ? [index] : []
            case .all(let from): keyIndices = Array(from..<max(from, arguments.count))
            case .pairs(let from): keyIndices = Array(stride(from: from, to: arguments.count, by: 2))
            case .script:
                guard arguments.count > 2, let count = Int(uppercased(bytes, arguments[2])), count >= 0,
                    3 + count <= arguments.count
                else { return nil }
                keyIndices = Array(3..<(3 + count))
            }
            var slot: Int?
            for index in keyIndices {
                let span = arguments[index]
                let keySlot = RedisHashSlot.slot(ofBytes: UnsafeRawBufferPointer(rebasing: bytes[span]))
                if let slot, slot != keySlot {
                    throw RedisError(.crossSlot, "the keys of \(uppercased(bytes, name)) hash to different cluster slots (\(slot) and \(keySlot)); put a common {hash tag} in them")
                }
                slot = keySlot
            }
            return slot
        }
    }

    /// The byte ranges of the arguments of a RESP-encoded command (`*N\r\n` then `$len\r\n…\r\n` each).
    static func spans(of bytes: UnsafeRawBufferPointer) -> [Range<Int>] {
        var position = 0
        func number() -> Int? {
            var value = 0
            var digits = 0
            while position < bytes.count, bytes[position] >= 48, bytes[position] <= 57 {
                value = value * 10 + Int(bytes[position] - 48)
                position += 1
                digits += 1
            }
            guard digits > 0, position + 1 < bytes.count, bytes[position] == 13 else { return nil }
            position += 2
            return value
        }
        guard bytes.count > 0, bytes[0] == UInt8(ascii: "*") else { return [] }
        position = 1
        guard let count = number() else { return [] }
        var result: [Range<Int>] = []
        result.reserveCapacity(count)
        for _ in 0..<count {
            guard position < bytes.count, bytes[position] == UInt8(ascii: "$") else { return result }
            position += 1
            guard let length = number(), position + length <= bytes.count else { return result }
            result.append(position..<(position + length))
            position += length + 2
        }
        return result
    }

    private static func uppercased(_ bytes: UnsafeRawBufferPointer, _ span: Range<Int>) -> String {
        String(decoding: UnsafeRawBufferPointer(rebasing: bytes[span]), as: UTF8.self).uppercased()
    }

    /// The key positions of a command name (and its subcommand, for MEMORY and OBJECT).
    static func positions(name: String, subcommand: String) -> Positions {
        switch name {
        case "EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO":
            return .script
        case "DEL", "UNLINK", "EXISTS", "MGET", "TOUCH", "WATCH":
            return .all(from: 1)
        case "MSET", "MSETNX":
            return .pairs(from: 1)
        case "MEMORY":
            return subcommand == "USAGE" ? .single(2) : .none
        case "OBJECT":
            return ["ENCODING", "FREQ", "IDLETIME", "REFCOUNT"].contains(subcommand) ? .single(2) : .none
        case "GET", "SET", "SETNX", "SETEX", "PSETEX", "GETDEL", "GETEX", "GETSET", "GETRANGE", "SETRANGE",
            "INCR", "INCRBY", "INCRBYFLOAT", "DECR", "DECRBY", "APPEND", "STRLEN",
            "HGET", "HSET", "HSETNX", "HMSET", "HMGET", "HGETALL", "HDEL", "HINCRBY", "HEXISTS", "HLEN",
            "HKEYS", "HVALS", "HSTRLEN",
            "EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT", "EXPIRETIME", "PEXPIRETIME", "TTL", "PTTL",
            "PERSIST", "TYPE", "DUMP", "RESTORE",
            "LPUSH", "RPUSH", "LPOP", "RPOP", "LRANGE", "LLEN", "LINDEX",
            "SADD", "SREM", "SMEMBERS", "SCARD", "SISMEMBER",
            "ZADD", "ZREM", "ZRANGE", "ZCARD", "ZSCORE", "ZINCRBY":
            return .single(1)
        default:
            return .none
        }
    }
}
