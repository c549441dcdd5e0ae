import DeviceAuthorization
import Foundation
import HTTPTypes
import Hummingbird

/// Authenticates the OAuth client of a request (RFC 6749 §2.3): HTTP Basic or `client_secret`
/// in the form for confidential clients, `client_id` alone for public clients.
///
/// Failed authentications of confidential clients are limited per client and per address: each
/// attempt is charged (``RequestRateLimiter/acquire(_:)``, one script on the Redis clock) before
/// the secret is compared and given back (``RequestRateLimiter/release(_:)``) when it is right. A
/// burst across any number of nodes so gets at most the limit of `invalid_client` answers; the
/// rest, the right secret included, get 429 until the window passes. Public clients (the token
/// endpoint's polls) pay nothing for this.
struct ClientAuthenticator: Sendable {
    let registry: any ClientRegistry
    var rateLimiter: RequestRateLimiter?
    var limits = RateLimitSettings.off

    /// The buckets one authentication attempt of `client` is charged to.
    func failureBuckets(client: RegisteredClient, origin: () -> RequestOrigin) -> [RateLimitBucket] {
        var buckets: [RateLimitBucket] = []
        if let limit = limits.failedClientAuthenticationsPerClient {
            buckets.append(RateLimitBucket(name: "caf", subject: client.clientID, limit: limit))
        }
        if let limit = limits.failedClientAuthenticationsPerIP {
            buckets.append(RateLimitBucket(name: "cai", subject: origin().rateLimitKey, limit: limit))
        }
        return buckets
    }

    func authenticate(request: Request, form: FormBody, origin: () -> RequestOrigin = { RequestOrigin() }) async throws -> RegisteredClient {
        var clientID = form["client_id"]
        var secret: String?
        if let authorization = request.headers.value(of: .authorization) {
            let parts = authorization.split(separator: " ", maxSplits: 1)
            guard parts.count == 2, parts[0].lowercased() == "basic" else {
                throw OAuthError.invalidClient("unsupported client authentication scheme")
            }
            guard let data = Data(base64Encoded: String(parts[1]).trimmingCharacters(in: .whitespaces)),
                let decoded = String(data: data, encoding: .utf8),
                let colon = decoded.firstIndex(of: ":")
            else {
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
            let buckets = rateLimiter == nil ? [] : failureBuckets(client: client, origin: origin)
            if let rateLimiter, !buckets.isEmpty,
                case .limited(let index, let retryAfter) = try await rateLimiter.acquire(buckets)
            {
                throw OAuthError.rateLimited(
                    buckets[index].name == "caf"
                        ? "too many failed authentications of this client"
                        : "too many failed client authentications from this address",
                    retryAfter: retryAfter)
            }
            guard let secret, client.verifySecret(secret) else {
                throw OAuthError.invalidClient(secret == nil ? "client authentication is required" : "client authentication failed")
            }
            // Right: the attempt was no failure, so it is given back.
            if let rateLimiter, !buckets.isEmpty { try await rateLimiter.release(buckets) }
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
