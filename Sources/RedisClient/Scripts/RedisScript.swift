import Crypto

/// A Lua script, identified by the SHA-1 of its source.
///
/// How it runs depends on ``RedisClientConfiguration/scriptCalls``:
/// - ``RedisScriptCalls/functions`` (the default): the script is a Redis 7 **function** in a
///   library of its own, named after its SHA-1 (``libraryName``, ``functionName``), called with
///   `FCALL` (`FCALL_RO` for `no-writes` scripts). When Redis answers `Function not found` (a
///   new or restarted server without persistence, a flushed library), the client loads the library
///   with `FUNCTION LOAD REPLACE` on that node — as the
///   ``RedisClientConfiguration/functionLoader`` user when one is configured — and calls it again.
///   Because a Redis user can be allowed `FCALL` without `EVAL`, `EVALSHA` and `FUNCTION LOAD`,
///   the application's own ACL user then runs only the functions that were loaded, never
///   arbitrary Lua.
/// - ``RedisScriptCalls/eval``: `EVALSHA`, re-sent as `EVAL` with the source when Redis answers
///   `NOSCRIPT` (for servers before Redis 7).
///
/// Either way the call was refused before the script ran, so the second attempt cannot apply it
/// twice.
///
/// The source is written as for `EVAL`: `KEYS` and `ARGV`, and flags on a first line
/// `#!lua flags=no-writes,allow-oom`. As a function the body becomes the callback
/// `function(KEYS, ARGV) … end` and the flags become the function's flags, so the same text means
/// the same thing in both modes. (A script without a `#!lua` line runs as a function with no
/// flags, which Redis treats like a shebang script without flags: it may write, and is refused at
/// `maxmemory`.)
///
/// ```swift
/// let incr = RedisScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
/// let value = try await client.eval(incr, keys: ["counter"], arguments: [5])
/// ```
public struct RedisScript: Sendable, Hashable {
    /// The Lua source.
    public let source: String
    /// The lowercase hex SHA-1 of ``source``, as `SCRIPT LOAD` would return it.
    public let sha1: String
    /// The flags of the `#!lua flags=…` line (`no-writes`, `allow-oom`, …), in order.
    public let flags: [String]
    /// The name of the function this script is as a Redis function: `f` and the SHA-1.
    public let functionName: String
    /// The `FUNCTION LOAD` source of the one-function library this script is.
    public let library: String

    /// Creates a script from its Lua source.
    public init(_ source: String) {
        self.source = source
        let sha1 = Insecure.SHA1.hash(data: Array(source.utf8)).map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
        self.sha1 = sha1
        let (flags, body) = Self.splitShebang(source)
        self.flags = flags
        self.functionName = "f" + sha1
        let flagList = flags.map { "'\($0)'" }.joined(separator: ", ")
        // The body's line numbers in Redis's error messages are off by one (the register line).
        self.library =
            "#!lua name=l\(sha1)\n"
            + "redis.register_function{function_name='f\(sha1)', flags={\(flagList)}, callback=function(KEYS, ARGV)\n"
            + body
            + "\nend}\n"
    }

    /// Whether the script declares `no-writes` (then it is called with `FCALL_RO`).
    public var isReadOnly: Bool { flags.contains("no-writes") }

    /// The flags of a leading `#!lua flags=a,b` line, and the source without that line.
    private static func splitShebang(_ source: String) -> (flags: [String], body: Substring) {
        let text = Substring(source)
        guard text.hasPrefix("#!") else { return ([], text) }
        let lineEnd = text.firstIndex(of: "\n") ?? text.endIndex
        let line = text[..<lineEnd]
        let body = lineEnd == text.endIndex ? Substring("") : text[text.index(after: lineEnd)...]
        var flags: [String] = []
        for word in line.split(separator: " ") where word.hasPrefix("flags=") {
            flags += word.dropFirst("flags=".count).split(separator: ",").map(String.init)
        }
        return (flags, body)
    }
}

/// How ``RedisClient/eval(_:keys:arguments:)`` runs scripts.
public enum RedisScriptCalls: String, Sendable, Hashable, CaseIterable {
    /// As Redis 7 functions: `FCALL` / `FCALL_RO`, loading the script's library when missing.
    /// An ACL user then needs `+fcall` (`+fcall_ro`) only; loading needs `+function|load`, which
    /// ``RedisClientConfiguration/functionLoader`` can keep on a separate user.
    case functions
    /// As scripts: `EVALSHA`, falling back to `EVAL` on `NOSCRIPT` (for Redis 6 and older).
    case eval
}
