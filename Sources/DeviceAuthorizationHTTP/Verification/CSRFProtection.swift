import Crypto
import DeviceAuthorization
import Foundation
import HTTPTypes
import Hummingbird

/// CSRF protection of the verification page's forms, bound to the session.
///
/// A random per-session nonce lives in a `SameSite=Strict`, `HttpOnly` cookie; each form carries
/// `HMAC(secret, nonce, user id)`, where the user id is the signed-in person's (`""` before
/// sign-in). So a cookie and token obtained by one person do not fit another person's session, a
/// token from before sign-in does not work after it, and the nonce is replaced at sign-in
/// (``rotatedCookie()``), so a nonce planted before sign-in is gone after it.
///
/// With an https public base URL the cookie is `__Host-`-prefixed (`Secure`, `Path=/`, no
/// `Domain`): a sibling subdomain cannot set or overwrite it.
///
/// Independently of the token, ``isCrossSite(_:)`` refuses browser POSTs that say they come from
/// another site (`Sec-Fetch-Site`, `Origin`).
struct CSRFProtection: Sendable {
    /// The cookie name with a plain-HTTP base URL.
    static let plainCookieName = "deviceauth_csrf"
    /// The cookie name with an https base URL.
    static let hostCookieName = "__Host-deviceauth_csrf"
    static let formField = "csrf_token"

    private let key: SymmetricKey
    private let secureCookies: Bool
    /// The cookie this node sets and reads (only this one: a plain-named cookie that a sibling
    /// subdomain planted is ignored when the `__Host-` one is in use).
    let cookieName: String
    /// The public base URL's origin (`https://auth.example.com`), what `Origin` must say.
    let expectedOrigin: String?

    /// - Parameters:
    ///   - secret: the node secret (the same on every node).
    ///   - secureCookies: whether cookies get `Secure`.
    ///   - publicBaseURL: where people reach the page; https turns on the `__Host-` prefix.
    init(secret: [UInt8], secureCookies: Bool, publicBaseURL: String) {
        self.key = SymmetricKey(data: HMAC<SHA256>.authenticationCode(for: Array("deviceauth-csrf-v2".utf8), using: SymmetricKey(data: secret)))
        self.expectedOrigin = Self.origin(of: publicBaseURL)
        // `__Host-` requires `Secure`; with cookies explicitly not Secure (plain-HTTP development
        // behind an https name) the prefix would make browsers drop the cookie.
        let https = publicBaseURL.lowercased().hasPrefix("https://")
        self.secureCookies = secureCookies
        self.cookieName = https && secureCookies ? Self.hostCookieName : Self.plainCookieName
    }

    /// The form token for this request and user, and a cookie to set when the browser has no
    /// well-formed nonce yet.
    /// - Parameter userID: the signed-in user's id, `nil` before sign-in.
    func token(for request: Request, userID: String?) -> (token: String, cookie: Cookie?) {
        if let nonce = nonce(of: request) {
            return (mac(nonce: nonce, userID: userID), nil)
        }
        let (nonce, cookie) = freshNonce()
        return (mac(nonce: nonce, userID: userID), cookie)
    }

    /// A new nonce cookie, set with the session at sign-in, and the token that fits it for `userID`.
    func rotatedCookie(userID: String) -> (token: String, cookie: Cookie) {
        let (nonce, cookie) = freshNonce()
        return (mac(nonce: nonce, userID: userID), cookie)
    }

    /// Whether the form's token is the MAC of this browser's nonce and `userID` (`nil`: not signed in).
    func isValid(request: Request, formToken: String?, userID: String?) -> Bool {
        guard let formToken, let nonce = nonce(of: request) else { return false }
        return constantTimeEquals(Array(mac(nonce: nonce, userID: userID).utf8), Array(formToken.utf8))
    }

    /// Whether a browser says this request comes from another site: `Sec-Fetch-Site` other than
    /// `same-origin` or `none` (user-initiated), or an `Origin` that is not the public base
    /// URL's (`null` included). Requests with neither header (non-browser clients, which carry
    /// no ambient cookies of a victim) are not refused here; the token still applies.
    func isCrossSite(_ request: Request) -> Bool {
        let fetchSite = request.headers[values: .secFetchSite]
        if fetchSite.count > 1 { return true }
        if let site = fetchSite.first?.trimmingCharacters(in: .whitespaces).lowercased(), site != "same-origin", site != "none" {
            return true
        }
        let origins = request.headers[values: .origin]
        if origins.count > 1 { return true }
        if let origin = origins.first {
            guard let expectedOrigin, let presented = Self.origin(of: origin.trimmingCharacters(in: .whitespaces), serialized: true) else { return true }
            return presented != expectedOrigin
        }
        return false
    }

    // MARK: - Internals

    private func nonce(of request: Request) -> String? {
        guard let value = request.cookies[cookieName]?.value, Self.isWellFormed(value) else { return nil }
        return value
    }

    private func freshNonce() -> (String, Cookie) {
        let nonce = Data(randomBytes(32)).base64URLEncoded
        // Path=/ and no Domain: required by `__Host-`, and the same cookie serves every page.
        let cookie = Cookie(name: cookieName, value: nonce, path: "/", secure: secureCookies, httpOnly: true, sameSite: .strict)
        return (nonce, cookie)
    }

    private func mac(nonce: String, userID: String?) -> String {
        // The nonce has a fixed length (43), so nonce ‖ 0 ‖ user id is unambiguous.
        let message = Array(nonce.utf8) + [0] + Array((userID ?? "").utf8)
        return Data(HMAC<SHA256>.authenticationCode(for: message, using: key)).base64URLEncoded
    }

    private static func isWellFormed(_ value: String) -> Bool {
        value.utf8.count == 43 && value.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || $0 == 45 || $0 == 95 }
    }

    /// The RFC 6454 origin of a URL (`scheme://host[:port]`, lower case, default port dropped),
    /// or `nil` for `null`, opaque or malformed values.
    /// - Parameter serialized: `text` is an `Origin` header, which has no path, query or fragment.
    static func origin(of text: String, serialized: Bool = false) -> String? {
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(),
            scheme == "https" || scheme == "http", let host = components.host?.lowercased(), !host.isEmpty,
            components.user == nil, components.password == nil
        else { return nil }
        if serialized, !components.path.isEmpty || components.query != nil || components.fragment != nil { return nil }
        let defaultPort = scheme == "https" ? 443 : 80
        if let port = components.port, port != defaultPort { return "\(scheme)://\(host):\(port)" }
        return "\(scheme)://\(host)"
    }
}

extension HTTPField.Name {
    static let secFetchSite = HTTPField.Name("Sec-Fetch-Site")!
}
