import Foundation
import HTTPTypes

/// The HTTP API as an OpenAPI 3 document, `OpenAPI/openapi.json` (a resource of this module),
/// served at `GET /openapi.json`, and the one source of the routes' table: which paths exist,
/// which methods each takes (any other gets 405 with `Allow`) and whether it answers with HTML.
///
/// `OpenAPITests` checks that the router serves exactly the documented routes, and
/// `make test-security` runs schemathesis against a live server with this document.
struct OpenAPIDocument: Sendable {
    /// A documented path: its methods (in the order of their names) and whether its answers
    /// are HTML pages (the verification page) rather than JSON.
    struct PathEntry: Sendable, Equatable {
        let methods: [HTTPRequest.Method]
        let html: Bool
    }

    /// The document as served.
    let bytes: [UInt8]
    /// Every documented path.
    let paths: [String: PathEntry]

    /// The bundled document, read and checked once per process.
    static let bundled: Result<OpenAPIDocument, DeviceAuthorizationHTTPError> = Result { () throws(DeviceAuthorizationHTTPError) in try load() }

    /// The OpenAPI operation keys of a path item (the others, `parameters`, `summary`…, are not methods).
    static let operationKeys: Set<String> = ["get", "put", "post", "delete", "options", "head", "patch", "trace"]

    private struct Document: Decodable {
        let paths: [String: [String: Operation]]
    }

    private struct Operation: Decodable {
        let responses: [String: Response]?

        init(from decoder: any Decoder) throws {
            // Path-level entries that are not operations (`parameters`, `summary`) are not objects
            // with responses; they decode as an operation without any.
            responses = try? decoder.container(keyedBy: Key.self).decodeIfPresent([String: Response].self, forKey: .responses)
        }

        private enum Key: String, CodingKey { case responses }
    }

    private struct Response: Decodable {
        let content: [String: IgnoredValue]?
    }

    private struct IgnoredValue: Decodable {
        init(from decoder: any Decoder) throws {}
    }

    static func load() throws(DeviceAuthorizationHTTPError) -> OpenAPIDocument {
        guard let url = Bundle.module.url(forResource: "openapi", withExtension: "json"),
            let data = try? Data(contentsOf: url)
        else {
            throw DeviceAuthorizationHTTPError(.openAPIDocument, "openapi.json is missing from the bundle")
        }
        return try parse(Array(data))
    }

    /// Reads the routes' table out of a document's bytes.
    static func parse(_ bytes: [UInt8]) throws(DeviceAuthorizationHTTPError) -> OpenAPIDocument {
        let document: Document
        do {
            document = try JSONDecoder().decode(Document.self, from: Data(bytes))
        } catch {
            throw DeviceAuthorizationHTTPError(.openAPIDocument, "openapi.json is not an OpenAPI document with paths", underlying: error)
        }
        var paths: [String: PathEntry] = [:]
        for (path, item) in document.paths {
            let operations = item.filter { operationKeys.contains($0.key) }
            let methods = operations.keys.sorted().compactMap { HTTPRequest.Method($0.uppercased()) }
            guard !methods.isEmpty else {
                throw DeviceAuthorizationHTTPError(.openAPIDocument, "openapi.json documents no operation for \(path)")
            }
            let html = operations.values.contains { operation in
                operation.responses?.values.contains { $0.content?.keys.contains("text/html") == true } == true
            }
            paths[path] = PathEntry(methods: methods, html: html)
        }
        return OpenAPIDocument(bytes: bytes, paths: paths)
    }
}
