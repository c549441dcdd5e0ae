import Foundation
import HTTPTypes
import Hummingbird

/// Believes a user header (such as `X-Forwarded-User`) set by an authenticating reverse proxy —
/// but only on requests whose TCP peer is one of the trusted proxies. Anyone else can set the
/// header too, so from other addresses it is ignored and the person gets a 401 page.
public struct TrustedHeaderAuthenticator: UserAuthenticator {
    private let header: HTTPField.Name

    /// Creates the authenticator.
    /// - Parameter headerName: the header carrying the user id (`X-Forwarded-User`).
    /// - Throws: ``DeviceAuthorizationHTTPError`` when the name is not a valid header name.
    public init(headerName: String = "X-Forwarded-User") throws {
        guard let header = HTTPField.Name(headerName) else {
            throw DeviceAuthorizationHTTPError(.invalidConfiguration, "'\(headerName)' is not a valid header name")
        }
        self.header = header
    }

    /// The header's user, when the peer is a trusted proxy and the header occurs exactly once.
    public func authenticate(request: Request, origin: RequestOrigin) async throws -> AuthenticatedUser? {
        guard origin.peerIsTrustedProxy else { return nil }
        let values = request.headers[values: header]
        guard values.count == 1 else { return nil }
        let user = values[0].trimmingCharacters(in: .whitespaces)
        guard !user.isEmpty, user.utf8.count <= 256 else { return nil }
        return AuthenticatedUser(id: user)
    }
}
