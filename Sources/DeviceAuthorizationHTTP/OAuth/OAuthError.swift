import DeviceAuthorization
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import RedisClient

/// An OAuth 2.0 error answer (RFC 6749 §5.2, RFC 8628 §3.5): HTTP status, the `error` code and a
/// description free of secrets. Every OAuth response carries `Cache-Control: no-store`.
public struct OAuthError: Error, Sendable, Equatable {
    /// The RFC `error` value, such as `invalid_request` or `authorization_pending`.
    public var code: String
    /// A human-readable `error_description` (never contains codes, tokens or secrets).
    public var description: String
    /// The HTTP status (400 for most errors, 401 for `invalid_client`, 503 when Redis is down).
    public var status: HTTPResponse.Status
    /// Extra JSON members (for example `interval` on `slow_down`).
    public var extra: [String: Int]
    /// Extra response headers (`WWW-Authenticate`, `Retry-After`).
    public var headers: [String: String]

    /// Creates an error answer.
    /// - Parameters:
    ///   - code: the RFC error code.
    ///   - description: the `error_description`.
    ///   - status: the HTTP status (400).
    ///   - extra: additional integer members of the body.
    ///   - headers: additional response headers.
    public init(
        _ code: String, _ description: String, status: HTTPResponse.Status = .badRequest,
        extra: [String: Int] = [:], headers: [String: String] = [:]
    ) {
        self.code = code
        self.description = description
        self.status = status
        self.extra = extra
        self.headers = headers
    }

    /// `invalid_request` (400).
    static func invalidRequest(_ description: String) -> OAuthError { OAuthError("invalid_request", description) }

    /// `invalid_client` (401) with a `WWW-Authenticate` challenge.
    static func invalidClient(_ description: String) -> OAuthError {
        OAuthError(
            "invalid_client", description, status: .unauthorized,
            headers: ["WWW-Authenticate": #"Basic realm="deviceauth", charset="UTF-8""#])
    }

    /// `temporarily_unavailable` (503) with `Retry-After`, when Redis cannot be reached.
    static let temporarilyUnavailable = OAuthError(
        "temporarily_unavailable", "the authorization server is temporarily unavailable; retry later",
        status: .serviceUnavailable, headers: ["Retry-After": "5"])

    /// `temporarily_unavailable` (503, `Retry-After: 2`) for a poll whose token answer is kept but not
    /// yet on enough Redis copies (`TokenPollResult.unconfirmed`): poll again shortly.
    static let notConfirmedYet = OAuthError(
        "temporarily_unavailable", "the token is not confirmed by enough Redis copies yet; poll again",
        status: .serviceUnavailable, headers: ["Retry-After": "2"])

    /// `temporarily_unavailable` with HTTP 429 and `Retry-After` (whole seconds, rounded up), for
    /// a request over a rate limit. RFC 6749 §4.1.2.1 defines the code for a server "unable to
    /// handle the request due to a temporary overloading"; clients that know only RFC errors then
    /// retry later instead of giving up for good.
    static func rateLimited(_ description: String, retryAfter: Duration) -> OAuthError {
        let seconds = retryAfter.wholeSecondsRoundedUp(atLeast: 1)
        return OAuthError(
            "temporarily_unavailable", "\(description); retry after \(seconds) s", status: .tooManyRequests,
            headers: ["Retry-After": String(seconds)])
    }

    /// The token endpoint's constant answers, encoded once per process: most polls get one of
    /// these, and building the JSON for each showed in the endpoint's CPU profile.
    static let authorizationPendingResponse = OAuthError("authorization_pending", "the user has not yet approved the request").response
    static let accessDeniedResponse = OAuthError("access_denied", "the user denied the request").response
    static let expiredTokenResponse = OAuthError("expired_token", "the device code has expired; start a new request").response

    /// `server_error` (500), for failures that are not the caller's fault.
    static let serverError = OAuthError("server_error", "the authorization server failed to answer", status: .internalServerError)

    /// The JSON response.
    var response: Response {
        var response = JSONResponse.make(status: status, body: ErrorBody(error: code, description: description, extra: extra))
        for (name, value) in headers {
            if let field = HTTPField.Name(name) { response.headers[field] = value }
        }
        return response
    }

    /// Maps a form-parsing failure to `invalid_request` (413 for oversized bodies).
    static func from(_ failure: FormBody.Failure) -> OAuthError {
        switch failure {
        case .tooLarge: OAuthError("invalid_request", failure.description, status: .contentTooLarge)
        default: .invalidRequest(failure.description)
        }
    }
}

extension OAuthError: HTTPResponseError {
    /// Thrown out of a handler, an OAuth error renders itself (the RFC 6749 §5.2 body and headers).
    public func response(from request: Request, context: some RequestContext) throws -> Response { response }

    /// The answer of an OAuth endpoint to any error: the one place where store and Redis errors
    /// become responses. Redis unreachable is 503 `temporarily_unavailable` (logged), a store
    /// argument error is `invalid_request`, anything else 500 `server_error` (logged).
    static func answer(to error: any Error, logger: Logger) -> Response {
        switch error {
        case let error as OAuthError:
            return error.response
        case let error as RedisError:
            logger.error("Redis unavailable", metadata: ["error": "\(error.code)"])
            return OAuthError.temporarilyUnavailable.response
        case let error as DeviceAuthorizationError where error.code == .invalidArgument:
            return OAuthError.invalidRequest(error.message).response
        default:
            logger.error("unexpected error", metadata: ["error": "\(error)"])
            return OAuthError.serverError.response
        }
    }
}
