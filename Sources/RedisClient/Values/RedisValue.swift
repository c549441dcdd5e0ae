/// A reply from Redis: every RESP2 reply type, nested arrays included.
///
/// Error replies at the top level of a command are thrown as ``RedisError`` with code
/// ``RedisError/Code/server``; inside an array (for example the result of `EXEC`) they stay
/// values, as ``error(_:)``.
public enum RedisValue: Sendable, Hashable {
    /// A status reply such as `+OK`.
    case simpleString(String)
    /// An error reply such as `-ERR unknown command`, when nested inside an array.
    case error(String)
    /// An integer reply.
    case integer(Int)
    /// A binary-safe bulk string.
    case bulkString([UInt8])
    /// The nil bulk string or nil array.
    case null
    /// An array of replies, possibly nested.
    case array([RedisValue])

    /// The value as text: bulk strings (decoded as UTF-8), status replies and integers.
    public var string: String? {
        switch self {
        case .bulkString(let bytes): String(decoding: bytes, as: UTF8.self)
        case .simpleString(let text): text
        case .integer(let value): String(value)
        default: nil
        }
    }

    /// The value as an integer: integer replies, and bulk strings that hold a decimal integer.
    public var int: Int? {
        switch self {
        case .integer(let value): value
        case .bulkString(let bytes): Int(String(decoding: bytes, as: UTF8.self))
        default: nil
        }
    }

    /// The elements of an array reply, or `nil` for any other reply.
    public var array: [RedisValue]? {
        if case .array(let values) = self { return values }
        return nil
    }

    /// The raw bytes of a bulk string, or `nil` for any other reply.
    public var bytes: [UInt8]? {
        if case .bulkString(let bytes) = self { return bytes }
        return nil
    }

    /// Whether this is the nil reply.
    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }
}
