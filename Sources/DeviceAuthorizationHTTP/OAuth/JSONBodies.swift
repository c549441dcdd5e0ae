import Foundation
import HTTPTypes
import Hummingbird

/// JSON responses with `Cache-Control: no-store` (RFC 6749 §5.1), from Codable bodies.
///
/// `JSONEncoder` with the bodies below writes the same bytes as the hand-written flat-object writer
/// of before (keys sorted, slashes unescaped) in a third to a seventh of the time
/// (`deviceauth-bench json`, BENCHMARKS.md).
enum JSONResponse {
    /// Shared: `JSONEncoder` is `Sendable` and encodes concurrently.
    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()

    static func make(status: HTTPResponse.Status = .ok, body: some Encodable) -> Response {
        make(status: status, bytes: encode(body))
    }

    /// A body already encoded (``encode(_:)``), for example a token answer sent again.
    static func make(status: HTTPResponse.Status = .ok, bytes: [UInt8]) -> Response {
        Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    /// The body's JSON. The bodies are plain strings, numbers and arrays: encoding cannot fail
    /// (a failure would answer `{}`, never crash).
    static func encode(_ body: some Encodable) -> [UInt8] {
        (try? Array(encoder.encode(body))) ?? Array("{}".utf8)
    }

    /// An object of another library's making (the JWKS): `JSONSerialization`.
    static func make(status: HTTPResponse.Status = .ok, object: [String: any Sendable]) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        return make(status: status, bytes: Array(data))
    }

    /// `Content-Type`, `Cache-Control: no-store`, `Pragma: no-cache` and `nosniff` (built once:
    /// ``SecurityHeadersMiddleware`` then finds `nosniff` present and leaves these shared fields
    /// uncopied on every poll).
    static let headers: HTTPFields = {
        var headers = HTTPFields()
        headers[.contentType] = "application/json; charset=utf-8"
        headers[.cacheControl] = "no-store"
        headers[.pragma] = "no-cache"
        headers[.xContentTypeOptions] = "nosniff"
        return headers
    }()
}

/// RFC 6749 §5.2 (and RFC 8628 §3.5): `error`, `error_description`, and integer extras (`interval`).
struct ErrorBody: Encodable {
    let error: String
    let description: String
    var extra: [String: Int] = [:]

    private struct Key: CodingKey {
        let stringValue: String
        init(_ string: String) { stringValue = string }
        init?(stringValue: String) { self.stringValue = stringValue }
        var intValue: Int? { nil }
        init?(intValue: Int) { nil }
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Key.self)
        try container.encode(error, forKey: Key("error"))
        try container.encode(description, forKey: Key("error_description"))
        for (key, value) in extra where key != "error" && key != "error_description" {
            try container.encode(value, forKey: Key(key))
        }
    }
}

/// RFC 8628 §3.2.
struct DeviceAuthorizationBody: Encodable {
    let deviceCode: String
    let userCode: String
    let verificationURI: String
    let verificationURIComplete: String
    let expiresIn: Int
    let interval: Int

    enum CodingKeys: String, CodingKey {
        case deviceCode = "device_code"
        case userCode = "user_code"
        case verificationURI = "verification_uri"
        case verificationURIComplete = "verification_uri_complete"
        case expiresIn = "expires_in"
        case interval
    }
}

/// RFC 6749 §5.1 (`scope` and `refresh_token` only when there are some).
struct TokenBody: Encodable {
    let accessToken: String
    let tokenType: String
    let expiresIn: Int
    let scope: String?
    let refreshToken: String?

    enum CodingKeys: String, CodingKey {
        case accessToken = "access_token"
        case tokenType = "token_type"
        case expiresIn = "expires_in"
        case scope
        case refreshToken = "refresh_token"
    }
}

/// RFC 7662 §2.2: `active`, and for an active token what it is.
struct IntrospectionBody: Encodable {
    var active: Bool
    var tokenType: String?
    var clientID: String?
    var subject: String?
    var tokenID: String?
    var issuedAt: Int?
    var expiresAt: Int?
    var issuer: String?
    var audience: [String]?
    var scope: String?
    var sessionID: String?

    /// Nothing but `active: false`, whatever the reason.
    static let inactive = IntrospectionBody(active: false)

    enum CodingKeys: String, CodingKey {
        case active
        case tokenType = "token_type"
        case clientID = "client_id"
        case subject = "sub"
        case tokenID = "jti"
        case issuedAt = "iat"
        case expiresAt = "exp"
        case issuer = "iss"
        case audience = "aud"
        case scope
        case sessionID = "sid"
    }
}

/// `/healthz` and `/readyz`.
struct StatusBody: Encodable {
    let status: String
    var redis: String?
}

/// RFC 8414 authorization server metadata.
struct ServerMetadataBody: Encodable {
    let issuer: String
    let deviceAuthorizationEndpoint: String
    let tokenEndpoint: String
    let jwksURI: String
    let grantTypesSupported: [String]
    let responseTypesSupported: [String]
    let tokenEndpointAuthMethodsSupported: [String]
    let revocationEndpoint: String
    let revocationEndpointAuthMethodsSupported: [String]
    let introspectionEndpoint: String
    let introspectionEndpointAuthMethodsSupported: [String]

    enum CodingKeys: String, CodingKey {
        case issuer
        case deviceAuthorizationEndpoint = "device_authorization_endpoint"
        case tokenEndpoint = "token_endpoint"
        case jwksURI = "jwks_uri"
        case grantTypesSupported = "grant_types_supported"
        case responseTypesSupported = "response_types_supported"
        case tokenEndpointAuthMethodsSupported = "token_endpoint_auth_methods_supported"
        case revocationEndpoint = "revocation_endpoint"
        case revocationEndpointAuthMethodsSupported = "revocation_endpoint_auth_methods_supported"
        case introspectionEndpoint = "introspection_endpoint"
        case introspectionEndpointAuthMethodsSupported = "introspection_endpoint_auth_methods_supported"
    }
}

/// RFC 7009 §2.2: a 200 with an empty object.
struct EmptyBody: Encodable {}

/// The endpoints' bodies for `deviceauth-bench json`, encoded exactly as the endpoints do. Not API.
@_spi(Benchmarks)
public enum JSONBodyBenchmark {
    public static func deviceAuthorization(deviceCode: String, userCode: String, verificationURI: String, complete: String, expiresIn: Int, interval: Int)
        -> [UInt8]
    {
        JSONResponse.encode(
            DeviceAuthorizationBody(
                deviceCode: deviceCode, userCode: userCode, verificationURI: verificationURI, verificationURIComplete: complete,
                expiresIn: expiresIn, interval: interval))
    }

    public static func token(accessToken: String, tokenType: String, expiresIn: Int, scope: String?, refreshToken: String?) -> [UInt8] {
        JSONResponse.encode(TokenBody(accessToken: accessToken, tokenType: tokenType, expiresIn: expiresIn, scope: scope, refreshToken: refreshToken))
    }

    public static func error(_ code: String, _ description: String) -> [UInt8] {
        JSONResponse.encode(ErrorBody(error: code, description: description))
    }
}
