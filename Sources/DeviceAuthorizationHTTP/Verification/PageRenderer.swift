import Foundation
import Hummingbird
import HTTPTypes
import Mustache

/// Renders the verification page's templates (swift-mustache, from the bundle's `Templates`
/// folder) into responses with the page security headers.
struct PageRenderer: Sendable {
    private let library: MustacheLibrary
    private let serviceName: String

    init(serviceName: String) throws {
        guard let directory = Bundle.module.url(forResource: "Templates", withExtension: nil) else {
            throw DeviceAuthorizationHTTPError(.templates, "the Templates resource folder is missing from the bundle")
        }
        var library = MustacheLibrary()
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        for file in files where file.hasSuffix(".mustache") {
            let path = directory.appendingPathComponent(file).path
            do {
                let text = try String(contentsOfFile: path, encoding: .utf8)
                try library.register(text, named: String(file.dropLast(".mustache".count)))
            } catch {
                throw DeviceAuthorizationHTTPError(.templates, "template \(file) could not be loaded", underlying: error)
            }
        }
        self.library = library
        self.serviceName = serviceName
    }

    /// A page response: HTML, `no-store`, CSP without scripts, no framing, no referrer.
    func render(_ template: String, _ values: [String: Any], status: HTTPResponse.Status = .ok, cookies: [Cookie] = [],
                headers extra: [HTTPField.Name: String] = [:]) -> Response {
        var values = values
        values["service_name"] = serviceName
        let html = library.render(values, withTemplate: template) ?? "<!doctype html><title>Error</title><p>Page unavailable.</p>"
        var headers = HTTPFields()
        headers[.contentType] = "text/html; charset=utf-8"
        headers[.cacheControl] = "no-store"
        headers[.contentSecurityPolicy] = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        headers[.xFrameOptions] = "DENY"
        headers[.referrerPolicy] = "no-referrer"
        headers[.xContentTypeOptions] = "nosniff"
        for (name, value) in extra { headers[name] = value }
        var response = Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: html)))
        for cookie in cookies { response.setCookie(cookie) }
        return response
    }
}
