import HTTPTypes
import Hummingbird

/// Strict routing, before the router: a path that is not exactly a served route is 404 (the
/// router's own answer and `NotFound` metrics label), and a wrong method on a served path is 405
/// (see ``DeviceAuthorizationRoutes/methodNotAllowed(_:paths:)``).
///
/// Hummingbird's trie splits paths on `/` and drops empty components, so `/metrics/`,
/// `/metrics//` and `/device/` would reach `/metrics` and `/device`: a proxy that hides
/// `location = /metrics` then still leaks the metrics through `/metrics/`.
struct StrictRoutingMiddleware<Context: RequestContext>: RouterMiddleware {
    let routes: DeviceAuthorizationRoutes
    let paths: [String: OpenAPIDocument.PathEntry]

    init(routes: DeviceAuthorizationRoutes, paths: [String: OpenAPIDocument.PathEntry]? = nil) {
        self.routes = routes
        self.paths = paths ?? routes.servedPaths
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard paths[request.uri.path] != nil else {
            context.coreContext.endpointPath.value = "NotFound"
            throw HTTPError(.notFound)
        }
        if let response = routes.methodNotAllowed(request, paths: paths) { return response }
        return try await next(request, context)
    }
}

/// Headers on every answer of the routes, errors and 404s included: `X-Content-Type-Options:
/// nosniff` (a browser must not read a JSON error or the metrics as HTML or script), and
/// `Strict-Transport-Security` when the public base URL is https (a browser that once reached the
/// page over TLS never again sends a session cookie or a user code in clear).
struct SecurityHeadersMiddleware<Context: RequestContext>: RouterMiddleware {
    /// One year, the value HSTS preload lists ask for; no `includeSubDomains`: the server cannot
    /// know that every sibling host speaks TLS.
    static var hstsValue: String { "max-age=31536000" }

    let hsts: Bool

    init(configuration: DeviceAuthorizationHTTPConfiguration) {
        self.hsts = configuration.publicBaseURL.lowercased().hasPrefix("https://")
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response: Response
        do {
            response = try await next(request, context)
        } catch let error as any HTTPResponseError {
            // The router's 404 and other thrown answers: render them here so they get the headers too.
            response = try error.response(from: request, context: context)
        }
        // Only where missing: the prebuilt JSON and page headers carry it already, and writing it
        // again would copy their shared storage on every answer (the token endpoint's hot path).
        if response.headers.value(of: .xContentTypeOptions) == nil { response.headers[.xContentTypeOptions] = "nosniff" }
        if hsts { response.headers[.strictTransportSecurity] = Self.hstsValue }
        return response
    }
}

extension HTTPField.Name {
    static let strictTransportSecurity = HTTPField.Name("Strict-Transport-Security")!
}
