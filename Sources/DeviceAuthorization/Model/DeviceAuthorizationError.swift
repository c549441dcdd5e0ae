/// The one error type of the device-authorization store. Match on ``code``.
public struct DeviceAuthorizationError: Error, Sendable, CustomStringConvertible {
    /// What went wrong.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case notFound, expired, alreadyDecided, tooManyAttempts, invalidUserCode, invalidArgument, userCodeSpaceExhausted, grantChanged, notDurable
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// No live grant has this user code.
        public static let notFound = Code(.notFound)
        /// The grant expired before the decision.
        public static let expired = Code(.expired)
        /// The grant was already approved or denied (see ``DeviceAuthorizationError/status``).
        public static let alreadyDecided = Code(.alreadyDecided)
        /// Too many failed user-code lookups; retry after ``DeviceAuthorizationError/retryAfter``.
        public static let tooManyAttempts = Code(.tooManyAttempts)
        /// The input cannot be a user code (wrong length after normalization).
        public static let invalidUserCode = Code(.invalidUserCode)
        /// An argument was refused (empty client id, bad scope characters, …).
        public static let invalidArgument = Code(.invalidArgument)
        /// No free user code was found after several tries.
        public static let userCodeSpaceExhausted = Code(.userCodeSpaceExhausted)
        /// The user code no longer leads to the grant the person was shown (the `grantID` passed to
        /// ``DeviceCodeStore/approve(userCode:userID:grantID:)`` or ``DeviceCodeStore/deny(userCode:grantID:)``);
        /// nothing was decided.
        public static let grantChanged = Code(.grantChanged)
        /// The decision was made on the Redis primary, but fewer copies than
        /// ``DeviceCodeStoreConfiguration/durability`` asks for confirmed it in time: a failover
        /// now could lose it. Show the person that it is not confirmed (if the device does not
        /// continue, they enter the code again and see either "already decided" or the request).
        public static let notDurable = Code(.notDurable)

        public var description: String { base.rawValue }
    }

    /// What went wrong.
    public var code: Code
    /// A human-readable explanation, free of secrets.
    public var message: String
    /// For ``Code/alreadyDecided``: the status the grant has.
    public var status: DeviceCodeStatus?
    /// For ``Code/alreadyDecided``: whether the grant was already redeemed.
    public var isRedeemed: Bool
    /// For ``Code/tooManyAttempts``: how long until a retry can succeed.
    public var retryAfter: Duration?

    public init(_ code: Code, _ message: String, status: DeviceCodeStatus? = nil, isRedeemed: Bool = false, retryAfter: Duration? = nil) {
        self.code = code
        self.message = message
        self.status = status
        self.isRedeemed = isRedeemed
        self.retryAfter = retryAfter
    }

    public var description: String { "DeviceAuthorizationError(\(code)): \(message)" }
}
