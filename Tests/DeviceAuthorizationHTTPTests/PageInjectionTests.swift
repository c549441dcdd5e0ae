import DeviceAuthorization
import DeviceAuthorizationHTTP
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

/// The verification page's reflected values against HTML injection: payloads that a
/// per-grapheme-cluster escaper lets through (`<`, `>`, `"` followed by a combining mark or a
/// zero-width joiner, or preceded by U+0600), rendered by the real routes and parsed by Python's
/// html.parser. A page with a payload must have exactly the elements and attributes of the same
/// page with a harmless value.
@Suite("Page injection")
struct PageInjectionTests {
    static let userHeader = HTTPField.Name("X-Forwarded-User")!

    /// Each payload class of the issue, once with each of the three characters.
    static let payloads: [(name: String, value: String)] = [
        ("\" + U+0301: attributes on the input", "x\"\u{301} autofocus onfocus=alert(1) y=\"\u{301}"),
        ("\" + U+200D: attributes on the input", "x\"\u{200D} autofocus onfocus=alert(1) y=\"\u{200D}"),
        ("U+0600 + \": attributes on the input", "x\u{600}\" autofocus onfocus=alert(1) y=\u{600}\""),
        ("U+0600 + < and >: an <a href>", "\u{600}\"\u{600}>\u{600}<a href=//evil.test\u{600}>x"),
        ("U+0600: <meta http-equiv=refresh>", "\u{600}\"\u{600}>\u{600}<meta http-equiv=refresh content=0;url=//evil.test\u{600}>"),
        ("< + U+200D, > + U+0301", "\"\u{301}>\u{301}<\u{200D}a href=//evil.test>\u{301}x"),
        ("plain ASCII", "\"><a href=//evil.test>x</a>"),
    ]

    /// `[[tag, [attribute names]], …]` of a page, from Python's html.parser.
    static func structure(_ html: String, sourceLocation: SourceLocation = #_sourceLocation) async throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", PythonClient.script("html_structure.py")]
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        let status: Int32 = try await withCheckedThrowingContinuation { continuation in
            process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
            do { try process.run() } catch { continuation.resume(throwing: error) }
            input.fileHandleForWriting.write(Data(html.utf8))
            try? input.fileHandleForWriting.close()
        }
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        try #require(status == 0, "html_structure.py failed", sourceLocation: sourceLocation)
        return text
    }

    static func expectSameStructure(
        _ page: TestResponse, as baseline: TestResponse, _ what: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        #expect(page.status == baseline.status, "\(what): status", sourceLocation: sourceLocation)
        let (got, expected) = (try await structure(page.text), try await structure(baseline.text))
        #expect(got == expected, "\(what): injected markup\n\(page.text)", sourceLocation: sourceLocation)
    }

    static func query(_ value: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return value.addingPercentEncoding(withAllowedCharacters: allowed)!
    }

    @Test(
        "the code from a link, typed into the form and carried through sign-in: no element or attribute beyond the page's own",
        arguments: payloads.map(\.name))
    func userCodeFields(_ name: String) async throws {
        let payload = try #require(Self.payloads.first { $0.name == name }).value
        let fixture = try await HTTPFixture(configureStore: {
            $0.maxFailuresPerCaller = 10_000
            $0.maxFailuresPerUser = 10_000
            $0.maxFailuresGlobal = 10_000
        })
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            // Not signed in: the sign-in page's hidden user_code.
            let anonymous = Browser()
            try await Self.expectSameStructure(
                try await anonymous.get(client, "/device?user_code=" + Self.query(payload)),
                as: try await Browser().get(client, "/device?user_code=BCDF"), "sign-in page from a link")
            // The sign-in form posted with the payload: wrong password (the page again), right one (the redirect).
            let loginPage = try await anonymous.get(client, "/device")
            let token = try #require(hiddenField("csrf_token", in: loginPage.text))
            let wrong = try await anonymous.post(client, "/device/login", [("username", "alice"), ("password", "x"), ("csrf_token", token), ("user_code", payload)])
            let plainBrowser = Browser()
            let plainToken = try #require(hiddenField("csrf_token", in: try await plainBrowser.get(client, "/device").text))
            let plainWrong = try await plainBrowser.post(client, "/device/login", [("username", "alice"), ("password", "x"), ("csrf_token", plainToken), ("user_code", "BCDF")])
            try await Self.expectSameStructure(wrong, as: plainWrong, "sign-in page after a wrong password")
            let signedIn = try await anonymous.post(client, "/device/login", [("username", "alice"), ("password", "wonderland"), ("csrf_token", token), ("user_code", payload)])
            #expect(signedIn.status == .seeOther)
            let location = try #require(signedIn.headers[.location])
            #expect(
                location.range(of: #"^/device(\?user_code=[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4})?$"#, options: .regularExpression) != nil,
                "the redirect after sign-in carries only a normalized code: \(location)")

            // Signed in: the prefilled code, and the code typed into the form (an invalid or unknown code page).
            let browser = anonymous
            let baseline = Browser()
            try await baseline.logIn(client)
            try await Self.expectSameStructure(
                try await browser.get(client, "/device?user_code=" + Self.query(payload)),
                as: try await baseline.get(client, "/device?user_code=BCDF"), "code form from a link")
            let looked = try await browser.lookup(client, payload)
            let plain = try await baseline.lookup(client, looked.status == .notFound ? "BBBB-BBBB" : "BCD")
            try await Self.expectSameStructure(looked, as: plain, "code form after a lookup (\(looked.status))")
        }
    }

    @Test("the display name from the proxy's user header: no element or attribute beyond the page's own", arguments: payloads.map(\.name))
    func displayName(_ name: String) async throws {
        let payload = try #require(Self.payloads.first { $0.name == name }).value
        let fixture = try await HTTPFixture(users: try TrustedHeaderAuthenticator(headerName: "X-Forwarded-User"), trustedProxies: ["127.0.0.0/8", "::1"])
        defer { fixture.shutdown() }
        try await fixture.app.test(.live) { client in
            let issued = try await client.issue(clientID: "fast", scope: "profile email")
            let hostile = Browser()
            let plain = Browser()
            let page = try await hostile.get(client, "/device", headers: [Self.userHeader: payload])
            #expect(page.text.contains("alert(1)") || page.text.contains("evil.test"), "the header reached the page: \(page.text)")
            try await Self.expectSameStructure(page, as: try await plain.get(client, "/device", headers: [Self.userHeader: "carol"]), "code form")
            let confirm = try await hostile.lookup(client, issued.userCode, headers: [Self.userHeader: payload])
            try await Self.expectSameStructure(
                confirm, as: try await plain.lookup(client, issued.userCode, headers: [Self.userHeader: "carol"]),
                "confirmation page")
        }
    }
}
