import Crypto
import Foundation
import Hummingbird

/// Double-submit CSRF protection: a random value in a `SameSite=Strict`, `HttpOnly` cookie, and
/// in each form its HMAC under a server secret. A POST is accepted only when the form token is
/// the HMAC of the cookie the browser sent — another site can neither read the cookie nor
/// compute the token.
struct CSRFProtection: Sendable {
    static let cookieName = "deviceauth_csrf"
    static let formField = "csrf_token"

    private let key: SymmetricKey
    private let secureCookies: Bool

    init(secret: [UInt8], secureCookies: Bool) {
        self.key = SymmetricKey(data: HMAC<SHA256>.authenticationCode(for: Array("deviceauth-csrf".utf8), using: SymmetricKey(data: secret)))
        self.secureCookies = secureCookies
    }

    /// The form token for this request, and a cookie to set when the browser has none yet.
    func token(for request: Request) -> (token: String, cookie: Cookie?) {
        if let value = request.cookies[Self.cookieName]?.value, Self.isWellFormed(value) {
            return (mac(value), nil)
        }
        let value = Data(secureRandomBytes(32)).base64URLEncoded
        let cookie = Cookie(name: Self.cookieName, value: value, path: "/device", secure: secureCookies, httpOnly: true, sameSite: .strict)
        return (mac(value), cookie)
    }

    /// Whether the form's token matches the cookie.
    func isValid(request: Request, formToken: String?) -> Bool {
        guard let formToken, let value = request.cookies[Self.cookieName]?.value, Self.isWellFormed(value) else { return false }
        return constantTimeEquals(Array(mac(value).utf8), Array(formToken.utf8))
    }

    private func mac(_ value: String) -> String {
        Data(HMAC<SHA256>.authenticationCode(for: Array(value.utf8), using: key)).base64URLEncoded
    }

    private static func isWellFormed(_ value: String) -> Bool {
        value.utf8.count == 43 && value.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || $0 == 45 || $0 == 95 }
    }
}
