import Foundation
import HTTPTypes
import Hummingbird
import Mustache

/// Renders the verification page's templates (swift-mustache, from the bundle's `Templates`
/// folder) into responses with the page security headers.
///
/// Every `{{value}}` is escaped by ``ScalarHTMLContentType`` (per Unicode scalar), which the
/// renderer switches on at the top of every template itself, so no template can forget it.
struct PageRenderer: Sendable {
    /// The content-type pragma put in front of every template (partials included: a partial
    /// starts with the engine's default content type again).
    static let contentTypePragma = "{{% CONTENT_TYPE: \(ScalarHTMLContentType.name) }}"

    private let library: MustacheLibrary
    private let serviceName: String

    init(serviceName: String) throws {
        guard let directory = Bundle.module.url(forResource: "Templates", withExtension: nil) else {
            throw DeviceAuthorizationHTTPError(.templates, "the Templates resource folder is missing from the bundle")
        }
        ScalarHTMLContentType.register()
        var library = MustacheLibrary()
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        for file in files where file.hasSuffix(".mustache") {
            let path = directory.appendingPathComponent(file).path
            do {
                let text = try String(contentsOfFile: path, encoding: .utf8)
                try library.register(Self.contentTypePragma + text, named: String(file.dropLast(".mustache".count)))
            } catch {
                throw DeviceAuthorizationHTTPError(.templates, "template \(file) could not be loaded", underlying: error)
            }
        }
        self.library = library
        self.serviceName = serviceName
    }

    /// A page response: HTML, `no-store`, CSP without scripts, no framing, no referrer to other sites.
    func render(
        _ template: String, _ values: [String: Any], status: HTTPResponse.Status = .ok, cookies: [Cookie] = [],
        headers extra: [HTTPField.Name: String] = [:]
    ) -> Response {
        var values = values
        values["service_name"] = serviceName
        let html = library.render(values, withTemplate: template) ?? "<!doctype html><title>Error</title><p>Page unavailable.</p>"
        var headers = HTTPFields()
        headers[.contentType] = "text/html; charset=utf-8"
        headers[.cacheControl] = "no-store"
        headers[.contentSecurityPolicy] = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        headers[.xFrameOptions] = "DENY"
        // same-origin, not no-referrer: no Referer ever leaves the site either way, but under
        // no-referrer browsers send `Origin: null` with the page's own form posts (Fetch,
        // "serialize a request origin"), which the cross-site check must refuse.
        headers[.referrerPolicy] = "same-origin"
        headers[.xContentTypeOptions] = "nosniff"
        for (name, value) in extra { headers[name] = value }
        var response = Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: html)))
        for cookie in cookies { response.setCookie(cookie) }
        return response
    }
}

/// HTML escaping per Unicode scalar.
///
/// swift-mustache's built-in HTML content type compares whole `Character`s (grapheme clusters)
/// with `<`, `>`, `&`, `"`, `'`: a `<` followed by a combining mark (U+0301) or a zero-width
/// joiner, or preceded by a prepended concatenation mark (U+0600), is one cluster that equals
/// none of them and goes out unescaped — while the browser's tokenizer, which works per code
/// point, still sees a `<`. This type looks at scalars, as the browser does.
struct ScalarHTMLContentType: MustacheContentType {
    /// The name templates select it by (`{{% CONTENT_TYPE: … }}`).
    static let name = "DEVICEAUTH_HTML_SCALARS"

    private static let registration: Void = MustacheContentTypes.register(ScalarHTMLContentType(), named: name)

    /// Registers the type with swift-mustache (once per process; the registry is global).
    static func register() { _ = registration }

    func escapeText(_ text: String) -> String { Self.escape(text) }

    /// `text` with `&`, `<`, `>`, `"`, `'` replaced by character references, scalar by scalar.
    static func escape(_ text: String) -> String {
        var output = String.UnicodeScalarView()
        output.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": output.append(contentsOf: "&amp;".unicodeScalars)
            case "<": output.append(contentsOf: "&lt;".unicodeScalars)
            case ">": output.append(contentsOf: "&gt;".unicodeScalars)
            case "\"": output.append(contentsOf: "&quot;".unicodeScalars)
            case "'": output.append(contentsOf: "&#39;".unicodeScalars)
            default: output.append(scalar)
            }
        }
        return String(output)
    }
}
