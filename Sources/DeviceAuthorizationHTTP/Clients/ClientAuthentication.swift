import Foundation
import Hummingbird
import HTTPTypes

/// Authenticates the OAuth client of a request (RFC 6749 §2.3): HTTP Basic or `client_secret`
/// in the form for confidential clients, `client_id` alone for public clients.
struct ClientAuthenticator: Sendable {
    let registry: any ClientRegistry

    func authenticate(request: Request, form: FormBody) async throws -> RegisteredClient {
        var clientID = form["client_id"]
        var secret: String?
        if let authorization = request.headers[.authorization] {
            let parts = authorization.split(separator: " ", maxSplits: 1)
            guard parts.count == 2, parts[0].lowercased() == "basic" else {
                throw OAuthError.invalidClient("unsupported client authentication scheme")
            }
            guard let data = Data(base64Encoded: String(parts[1]).trimmingCharacters(in: .whitespaces)),
                  let decoded = String(data: data, encoding: .utf8),
                  let colon = decoded.firstIndex(of: ":") else {
                throw OAuthError.invalidClient("malformed HTTP Basic credentials")
            }
            // RFC 6749 §2.3.1: id and secret are form-encoded before Basic encoding.
            guard let basicID = Self.formDecode(decoded[..<colon]), let basicSecret = Self.formDecode(decoded[decoded.index(after: colon)...]) else {
                throw OAuthError.invalidClient("malformed HTTP Basic credentials")
            }
            if form.has("client_secret") {
                throw OAuthError.invalidRequest("use only one client authentication method")
            }
            if let formID = clientID, formID != basicID {
                throw OAuthError.invalidRequest("client_id does not match the authenticated client")
            }
            clientID = basicID
            secret = basicSecret
        } else {
            secret = form["client_secret"]
        }
        guard let clientID else {
            throw OAuthError.invalidRequest("missing parameter 'client_id'")
        }
        guard let client = try await registry.client(id: clientID) else {
            throw OAuthError.invalidClient("unknown client")
        }
        if client.isConfidential {
            guard let secret, client.verifySecret(secret) else {
                throw OAuthError.invalidClient(secret == nil ? "client authentication is required" : "client authentication failed")
            }
        } else if let secret, !secret.isEmpty {
            // A public client has no secret; a presented one means a misconfigured client.
            throw OAuthError.invalidClient("this client has no secret")
        }
        return client
    }

    private static func formDecode(_ text: Substring) -> String? {
        text.replacingOccurrences(of: "+", with: " ").removingPercentEncoding
    }
}
