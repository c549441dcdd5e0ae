/// The error type of the HTTP layer's set-up (configuration files, keys, embedded Redis).
/// Request-time problems become HTTP answers instead. Match on ``code``.
public struct DeviceAuthorizationHTTPError: Error, Sendable, CustomStringConvertible {
    /// What went wrong.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case invalidConfiguration, signingKey, embeddedRedis, templates, listen, openAPIDocument
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// A configuration value is missing or malformed.
        public static let invalidConfiguration = Code(.invalidConfiguration)
        /// The token signing key could not be read or used.
        public static let signingKey = Code(.signingKey)
        /// The embedded development `redis-server` could not be started.
        public static let embeddedRedis = Code(.embeddedRedis)
        /// The page templates could not be loaded.
        public static let templates = Code(.templates)
        /// The HTTP server could not listen on the configured host and port.
        public static let listen = Code(.listen)
        /// The bundled OpenAPI document (the routes' table) is missing or unreadable.
        public static let openAPIDocument = Code(.openAPIDocument)

        /// The code's name.
        public var description: String { base.rawValue }
    }

    /// What went wrong.
    public var code: Code
    /// A human-readable explanation, free of secrets.
    public var message: String
    /// The error that caused this one, if any.
    public var underlying: (any Error)?

    /// Creates an error.
    public init(_ code: Code, _ message: String, underlying: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying
    }

    /// `DeviceAuthorizationHTTPError(code): message`.
    public var description: String { "DeviceAuthorizationHTTPError(\(code)): \(message)" }
}
