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
        router.get("/healthz") { _, _ in JSONResponse.make(body: StatusBody(status: "ok")) }
        router.get("/readyz") { _, context in await self.readiness(context) }
        if configuration.metricsOnMainListener { addMetricsRoute(to: router) }
        router.get("/openapi.json") { _, _ in self.openAPIResponse() }
    }

    func addMetricsRoute(to router: Router<DeviceAuthorizationRequestContext>) {
        router.get("/metrics") { _, _ in self.metricsText() }
    }

    func serverMetadata() -> Response {
        let base = configuration.publicBaseURL
        return JSONResponse.make(
            body: ServerMetadataBody(
                issuer: configuration.issuer,
                deviceAuthorizationEndpoint: base + "/oauth/device_authorization",
                tokenEndpoint: base + "/oauth/token",
                jwksURI: base + "/.well-known/jwks.json",
                grantTypesSupported: [DeviceAuthorizationRoutes.deviceCodeGrantType, DeviceAuthorizationRoutes.refreshTokenGrantType],
                responseTypesSupported: [],
                tokenEndpointAuthMethodsSupported: ["client_secret_basic", "client_secret_post", "none"],
                revocationEndpoint: base + "/oauth/revoke",
                revocationEndpointAuthMethodsSupported: ["client_secret_basic", "client_secret_post", "none"],
                introspectionEndpoint: base + "/oauth/introspect",
                introspectionEndpointAuthMethodsSupported: ["client_secret_basic", "client_secret_post"]))
    }

    func jwks() async -> Response {
        guard let set = try? await tokens.jsonWebKeySet() else {
            return JSONResponse.make(status: .notFound, body: ErrorBody(error: "not_found", description: "this server publishes no keys"))
        }
        var response = JSONResponse.make(object: set)
        response.headers[.contentType] = "application/jwk-set+json"
        return response
    }

    func readiness(_ context: DeviceAuthorizationRequestContext) async -> Response {
        do {
            let reply = try await redis.send("PING")
            guard reply.string == "PONG" else { throw RedisError(.protocolError, "unexpected PING reply") }
            return JSONResponse.make(body: StatusBody(status: "ready", redis: "ok"))
        } catch {
            context.logger.warning("readiness check failed: Redis unreachable", metadata: ["error": "\(error)"])
            var response = JSONResponse.make(status: .serviceUnavailable, body: StatusBody(status: "unavailable", redis: "unreachable"))
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
