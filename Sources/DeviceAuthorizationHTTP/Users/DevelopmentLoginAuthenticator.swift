import Crypto
import DeviceAuthorization
import Foundation
import Hummingbird

/// A development login: users and passwords from the configuration file, a login form, and an
/// HMAC-signed session cookie. Not for production (passwords live in a file).
public struct DevelopmentLoginAuthenticator: UserAuthenticator {
    /// The name of the session cookie.
    public static let cookieName = "deviceauth_session"

    private let passwordHashes: [String: [UInt8]]
    private let key: SymmetricKey
    private let sessionLifetime: Duration
    private let secureCookies: Bool

    /// Creates the authenticator.
    /// - Parameters:
    ///   - users: user id → password.
    ///   - secret: key material for signing session cookies (≥ 32 bytes).
    ///   - sessionLifetime: how long a login lasts (1 hour).
    ///   - secureCookies: whether cookies get the `Secure` attribute (default `true`; pass `false` only for plain-HTTP development).
    public init(users: [String: String], secret: [UInt8], sessionLifetime: Duration = .seconds(3600), secureCookies: Bool = true) {
        self.passwordHashes = users.mapValues { Array(SHA256.hash(data: Array($0.utf8))) }
        self.key = SymmetricKey(data: HMAC<SHA256>.authenticationCode(for: Array("deviceauth-session".utf8), using: SymmetricKey(data: secret)))
        self.sessionLifetime = sessionLifetime
        self.secureCookies = secureCookies
    }

    /// Shows a login form.
    public var supportsLoginForm: Bool { true }

    /// The user of a valid, unexpired session cookie.
    public func authenticate(request: Request, origin: RequestOrigin) async throws -> AuthenticatedUser? {
        guard let value = request.cookies[Self.cookieName]?.value else { return nil }
        let parts = value.split(separator: ".")
        guard parts.count == 3, let userData = Data(base64URLEncoded: parts[0]), let expiry = Int(parts[1]),
            let mac = Data(base64URLEncoded: parts[2])
        else { return nil }
        let signed = Array("\(parts[0]).\(parts[1])".utf8)
        guard HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: signed, using: key) else { return nil }
        guard Int(Date().timeIntervalSince1970) < expiry, let user = String(data: userData, encoding: .utf8),
            passwordHashes[user] != nil
        else { return nil }
        return AuthenticatedUser(id: user)
    }

    /// Checks the password (constant time) and makes a signed session cookie.
    public func logIn(username: String, password: String) async throws -> LoginSession? {
        let presented = Array(SHA256.hash(data: Array(password.utf8)))
        // Compare against a dummy for unknown users so timing does not reveal user names.
        let stored = passwordHashes[username] ?? Array(SHA256.hash(data: Array("\u{0}unknown".utf8)))
        guard constantTimeEquals(presented, stored), passwordHashes[username] != nil else { return nil }
        let expiry = Int(Date().timeIntervalSince1970) + Int(sessionLifetime.components.seconds)
        let payload = "\(Data(username.utf8).base64URLEncoded).\(expiry)"
        let mac = Data(HMAC<SHA256>.authenticationCode(for: Array(payload.utf8), using: key)).base64URLEncoded
        let cookie = Cookie(
            name: Self.cookieName, value: "\(payload).\(mac)", maxAge: Int(sessionLifetime.components.seconds),
            path: "/", secure: secureCookies, httpOnly: true, sameSite: .strict)
        return LoginSession(user: AuthenticatedUser(id: username), cookie: cookie)
    }

    /// Expires the session cookie.
    public var logoutCookie: Cookie? {
        Cookie(name: Self.cookieName, value: "", maxAge: 0, path: "/", secure: secureCookies, httpOnly: true, sameSite: .strict)
    }
}
