import DeviceAuthorization
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import RedisClient

/// The operational and discovery endpoints: RFC 8414 metadata, the JWKS, `/healthz`, `/readyz`
/// (Redis reachable), `/metrics` (Prometheus, when on the main listener) and `/openapi.json`.
struct OperationsController: Sendable {
    let redis: RedisClient
    let tokens: any TokenIssuer
    let metrics: DeviceAuthorizationMetrics
    let configuration: DeviceAuthorizationHTTPConfiguration
    let apiDocument: OpenAPIDocument

    func addRoutes(to router: Router<DeviceAuthorizationRequestContext>) {
        router.get("/.well-known/oauth-authorization-server") { _, _ in self.serverMetadata() }
        router.get("/.well-known/jwks.json") { _, _ in await self.jwks() }
        router.get("/healthz") { _, _ in JSONResponse.make(object: ["status": "ok"]) }
        router.get("/readyz") { _, context in await self.readiness(context) }
        if configuration.metricsOnMainListener { addMetricsRoute(to: router) }
        router.get("/openapi.json") { _, _ in self.openAPIResponse() }
    }

    func addMetricsRoute(to router: Router<DeviceAuthorizationRequestContext>) {
        router.get("/metrics") { _, _ in self.metricsText() }
    }

    func serverMetadata() -> Response {
        let base = configuration.publicBaseURL
        return JSONResponse.make(object: [
            "issuer": configuration.issuer,
            "device_authorization_endpoint": base + "/oauth/device_authorization",
            "token_endpoint": base + "/oauth/token",
            "jwks_uri": base + "/.well-known/jwks.json",
            "grant_types_supported": [DeviceAuthorizationRoutes.deviceCodeGrantType, DeviceAuthorizationRoutes.refreshTokenGrantType],
            "response_types_supported": [String](),
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "revocation_endpoint": base + "/oauth/revoke",
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "introspection_endpoint": base + "/oauth/introspect",
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        ])
    }

    func jwks() async -> Response {
        guard let set = try? await tokens.jsonWebKeySet() else {
            return JSONResponse.make(status: .notFound, object: ["error": "not_found", "error_description": "this server publishes no keys"])
        }
        var response = JSONResponse.make(object: set)
        response.headers[.contentType] = "application/jwk-set+json"
        return response
    }

    func readiness(_ context: DeviceAuthorizationRequestContext) async -> Response {
        do {
            let reply = try await redis.send("PING")
            guard reply.string == "PONG" else { throw RedisError(.protocolError, "unexpected PING reply") }
            return JSONResponse.make(object: ["status": "ready", "redis": "ok"])
        } catch {
            context.logger.warning("readiness check failed: Redis unreachable", metadata: ["error": "\(error)"])
            var response = JSONResponse.make(status: .serviceUnavailable, object: ["status": "unavailable", "redis": "unreachable"])
            response.headers[.retryAfter] = "5"
            return response
        }
    }

    func metricsText() -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
        headers[.cacheControl] = "no-store"
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: metrics.render())))
    }

    /// `GET /openapi.json`: the API description (``OpenAPIDocument``).
    func openAPIResponse() -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json; charset=utf-8"
        headers[.cacheControl] = "public, max-age=300"
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: apiDocument.bytes)))
    }

    // MARK: - OAuth endpoints
}
