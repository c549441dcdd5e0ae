import Foundation
import Hummingbird

/// A person signed in on the verification page.
public struct AuthenticatedUser: Sendable, Hashable {
    /// The stable user id that becomes the token's `sub`.
    public var id: String
    /// A name to greet the person with.
    public var displayName: String

    /// Creates a user.
    public init(id: String, displayName: String? = nil) {
        self.id = id
        self.displayName = displayName ?? id
    }
}

/// A successful login through the page's login form: the user and the session cookie to set.
public struct LoginSession: Sendable {
    /// Who logged in.
    public var user: AuthenticatedUser
    /// The session cookie to set on the response.
    public var cookie: Cookie

    /// Creates a session answer.
    public init(user: AuthenticatedUser, cookie: Cookie) {
        self.user = user
        self.cookie = cookie
    }
}

/// Decides who the person on the verification page is.
///
/// Shipped implementations: ``TrustedHeaderAuthenticator`` (a reverse proxy that already logged
/// the person in sends a header) and ``DevelopmentLoginAuthenticator`` (users and passwords from
/// the configuration file, with a login form).
public protocol UserAuthenticator: Sendable {
    /// The signed-in user of `request`, or `nil`.
    /// - Parameters:
    ///   - request: the request (headers, cookies).
    ///   - origin: who sent it (whether the peer is a trusted proxy).
    func authenticate(request: Request, origin: RequestOrigin) async throws -> AuthenticatedUser?

    /// Whether the page shows a username/password form to unauthenticated people
    /// (otherwise they get a 401 page).
    var supportsLoginForm: Bool { get }

    /// Checks a username and password from the login form and returns a session, or `nil` when
    /// they are wrong.
    func logIn(username: String, password: String) async throws -> LoginSession?

    /// A cookie that ends the session (for a "sign out" button), if sessions are used.
    var logoutCookie: Cookie? { get }
}

extension UserAuthenticator {
    /// No login form by default.
    public var supportsLoginForm: Bool { false }
    /// No login by default.
    public func logIn(username: String, password: String) async throws -> LoginSession? { nil }
    /// No session by default.
    public var logoutCookie: Cookie? { nil }
}
