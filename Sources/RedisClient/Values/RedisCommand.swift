/// A value that can be sent as one argument of a Redis command (a RESP bulk string).
public protocol RedisArgument: Sendable {
    /// Calls `body` with the argument's raw bytes (without RESP framing).
    func withRedisBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R
}

extension String: RedisArgument {
    public func withRedisBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        var copy = self
        return try copy.withUTF8 { try body(UnsafeRawBufferPointer($0)) }
    }
}

extension Substring: RedisArgument {
    public func withRedisBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try String(self).withRedisBytes(body)
    }
}

extension Array: RedisArgument where Element == UInt8 {
    public func withRedisBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withUnsafeBytes(body)
    }
}

extension Int: RedisArgument {
    public func withRedisBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try String(self).withRedisBytes(body)
    }
}

/// One Redis command, encoded as RESP once, on the caller's thread.
///
/// ```swift
/// let command = RedisCommand("SET", "greeting", "hello")
/// ```
public struct RedisCommand: Sendable {
    /// The RESP encoding of the command, ready to be written.
    public let encoded: [UInt8]
    /// When this is an `EVALSHA` or `FCALL` of a ``RedisScript``: the script and its arguments, to
    /// recover from `NOSCRIPT` / `Function not found`.
    let scriptFallback: ScriptInvocation?
    /// The cluster slot given with ``init(arguments:routingKey:)``, or -1: then cluster mode
    /// finds the keys in ``encoded`` (single mode never looks).
    let routingSlot: Int

    struct ScriptInvocation: Sendable {
        let script: RedisScript
        let keys: [any RedisArgument]
        let arguments: [any RedisArgument]
        let isFunction: Bool
    }

    /// How a script call answered `NOSCRIPT` / `Function not found` is recovered (it did not run).
    enum MissingScriptRecovery {
        /// Send this command instead (`EVAL` with the source).
        case resend(RedisCommand)
        /// Load this script's library on the node that answered, then send the same command again.
        case loadLibrary(RedisScript)
    }

    /// Creates a command from its arguments; the first is the command name.
    public init(_ arguments: any RedisArgument...) {
        self.init(arguments: arguments)
    }

    /// Creates a command from its arguments; the first is the command name.
    ///
    /// Only the RESP encoding is kept: every poll builds a command, so nothing else is derived
    /// here. In cluster mode the client finds the keys in the encoding, from a table of common
    /// commands (GET, SET, DEL, EXISTS, HGETALL, HSET, EXPIRE, PTTL, MEMORY USAGE, EVAL, …);
    /// other commands are sent to any primary (see ``init(arguments:routingKey:)``).
    public init(arguments: [any RedisArgument]) {
        self.encoded = RedisCommand.encode(arguments)
        self.scriptFallback = nil
        self.routingSlot = -1
    }

    /// Creates a command that a Redis Cluster client routes by `routingKey`, whatever the command.
    ///
    /// Use it for commands the client does not know the key positions of. The key is hashed
    /// here (a few nanoseconds), also in single-node mode, where it is then ignored.
    /// ```swift
    /// let command = RedisCommand(arguments: ["XADD", "events:{42}", "*", "k", "v"], routingKey: "events:{42}")
    /// ```
    public init(arguments: [any RedisArgument], routingKey: some RedisArgument) {
        self.encoded = RedisCommand.encode(arguments)
        self.scriptFallback = nil
        self.routingSlot = RedisHashSlot.slot(of: routingKey)
    }

    /// An `EVALSHA` of `script` that transparently falls back to `EVAL` when Redis answers `NOSCRIPT`.
    public static func evalSHA(_ script: RedisScript, keys: [any RedisArgument], arguments: [any RedisArgument]) -> RedisCommand {
        RedisCommand(script: script, keys: keys, arguments: arguments, form: .evalSHA)
    }

    /// An `FCALL` (`FCALL_RO` for a `no-writes` script) of `script` as a Redis function; when Redis
    /// answers `Function not found`, the client loads the script's library and calls it again.
    public static func functionCall(_ script: RedisScript, keys: [any RedisArgument], arguments: [any RedisArgument]) -> RedisCommand {
        RedisCommand(script: script, keys: keys, arguments: arguments, form: .function)
    }

    /// The ways a script is sent.
    enum ScriptForm { case evalSHA, eval, function }

    init(script: RedisScript, keys: [any RedisArgument], arguments: [any RedisArgument], form: ScriptForm) {
        var all: [any RedisArgument]
        switch form {
        case .evalSHA: all = ["EVALSHA", script.sha1, keys.count]
        case .eval: all = ["EVAL", script.source, keys.count]
        case .function: all = [script.isReadOnly ? "FCALL_RO" : "FCALL", script.functionName, keys.count]
        }
        all.append(contentsOf: keys)
        all.append(contentsOf: arguments)
        self.encoded = RedisCommand.encode(all)
        self.scriptFallback = form == .eval ? nil : ScriptInvocation(script: script, keys: keys, arguments: arguments, isFunction: form == .function)
        self.routingSlot = -1
    }

    /// What to do when Redis answers that this command's script is missing, or `nil` when this
    /// is not a script call that can recover.
    var missingScriptRecovery: MissingScriptRecovery? {
        guard let invocation = scriptFallback else { return nil }
        if invocation.isFunction { return .loadLibrary(invocation.script) }
        return .resend(RedisCommand(script: invocation.script, keys: invocation.keys, arguments: invocation.arguments, form: .eval))
    }

    static func encode(_ arguments: [any RedisArgument]) -> [UInt8] {
        var buffer: [UInt8] = []
        buffer.reserveCapacity(16 + arguments.count * 24)
        appendDecimal(UInt8(ascii: "*"), arguments.count, to: &buffer)
        for argument in arguments {
            argument.withRedisBytes { bytes in
                appendDecimal(UInt8(ascii: "$"), bytes.count, to: &buffer)
                buffer.append(contentsOf: bytes)
                buffer.append(13)
                buffer.append(10)
            }
        }
        return buffer
    }

    private static func appendDecimal(_ prefix: UInt8, _ value: Int, to buffer: inout [UInt8]) {
        buffer.append(prefix)
        if value == 0 {
            buffer.append(UInt8(ascii: "0"))
        } else {
            var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
                (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
            var count = 0
            var remaining = value
            withUnsafeMutableBytes(of: &digits) { raw in
                while remaining > 0 {
                    raw[count] = UInt8(ascii: "0") + UInt8(remaining % 10)
                    remaining /= 10
                    count += 1
                }
                for index in stride(from: count - 1, through: 0, by: -1) { buffer.append(raw[index]) }
            }
        }
        buffer.append(13)
        buffer.append(10)
    }
}
