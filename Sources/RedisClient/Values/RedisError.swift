/// The one error type of the Redis client. Match on ``code``; more codes may be added later.
public struct RedisError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure happened.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case connectionFailed, timeout, server, protocolError, connectionClosed
            case invalidURL, unsupported, invalidArgument, shutdown
            case crossSlot, tooManyRedirects, clusterUnavailable
            case tlsFailed
            case primaryUnavailable
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The client could not connect (refused, unreachable, authentication failed).
        public static let connectionFailed = Code(.connectionFailed)
        /// A connect or command exceeded its configured timeout; the connection was dropped.
        public static let timeout = Code(.timeout)
        /// Redis answered with an error reply; ``RedisError/message`` holds it.
        public static let server = Code(.server)
        /// The bytes received were not valid RESP.
        public static let protocolError = Code(.protocolError)
        /// The connection closed while the command was in flight. The command may or may not
        /// have run; the client never re-sends it.
        public static let connectionClosed = Code(.connectionClosed)
        /// A Redis URL could not be parsed.
        public static let invalidURL = Code(.invalidURL)
        /// The configuration asks for something this build cannot do (for example TLS).
        public static let unsupported = Code(.unsupported)
        /// A command was refused before it was sent (for example keys in several cluster slots).
        public static let invalidArgument = Code(.invalidArgument)
        /// The client was shut down.
        public static let shutdown = Code(.shutdown)
        /// Cluster mode: the command's keys hash to more than one slot, so no node can run it.
        /// Refused before anything is sent; put a common `{hash tag}` in the keys.
        public static let crossSlot = Code(.crossSlot)
        /// Cluster mode: the command was redirected (`MOVED`/`ASK`) more often than
        /// ``RedisClientConfiguration/clusterMaximumRedirects`` allows.
        public static let tooManyRedirects = Code(.tooManyRedirects)
        /// Cluster mode: no node could tell the topology, or no reachable primary serves the
        /// command's slot within ``RedisClientConfiguration/clusterRetryTimeout``.
        public static let clusterUnavailable = Code(.clusterUnavailable)
        /// TLS could not be set up: a CA or certificate file that cannot be read, or a handshake
        /// that failed (unknown CA, expired certificate, a host name the certificate does not name).
        public static let tlsFailed = Code(.tlsFailed)
        /// Sentinel mode: no sentinel named a primary for the master that answered `ROLE` with
        /// `master` within ``RedisClientConfiguration/clusterRetryTimeout``; the message names the
        /// master and what each sentinel said.
        public static let primaryUnavailable = Code(.primaryUnavailable)

        public var description: String { base.rawValue }
    }

    /// What kind of failure happened.
    public var code: Code
    /// A human-readable explanation; for ``Code/server`` the error reply as Redis sent it.
    public var message: String
    /// The underlying error, where there is one.
    public var underlying: (any Error)?

    public init(_ code: Code, _ message: String, underlying: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying
    }

    /// For server errors, the first word of the reply (`NOSCRIPT`, `WRONGTYPE`, `MOVED`, …).
    public var serverErrorPrefix: Substring? {
        guard code == .server else { return nil }
        return message.split(separator: " ", maxSplits: 1).first
    }

    /// Whether Redis refused a script call because it does not have the script: `NOSCRIPT` for
    /// `EVALSHA`, `ERR Function not found` for `FCALL`. The script did not run.
    public var isMissingScript: Bool {
        guard code == .server else { return false }
        return message.hasPrefix("NOSCRIPT") || message.hasPrefix("ERR Function not found")
    }

    public var description: String { "RedisError(\(code)): \(message)" }
}
