import DeviceAuthorization
import DeviceAuthorizationHTTP
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

/// RFC 8628 §5.3–5.4 (remote phishing, clickjacking) on every page the verification flow shows.
@Suite("Page security headers and cookies")
struct PageSecurityTests {
    static func expectPageHeaders(_ response: TestResponse, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let csp = response.headers[.contentSecurityPolicy] ?? ""
        #expect(csp.contains("frame-ancestors 'none'"), "\(what): CSP \(csp)", sourceLocation: sourceLocation)
        #expect(csp.contains("default-src 'none'"), "\(what): CSP \(csp)", sourceLocation: sourceLocation)
        #expect(!csp.contains("script-src"), "\(what): no scripts at all", sourceLocation: sourceLocation)
        #expect(response.headers[HTTPField.Name("X-Frame-Options")!] == "DENY", "\(what)", sourceLocation: sourceLocation)
        #expect(response.headers[HTTPField.Name("Referrer-Policy")!] == "same-origin", "\(what)", sourceLocation: sourceLocation)
        #expect(response.headers[HTTPField.Name("X-Content-Type-Options")!] == "nosniff", "\(what)", sourceLocation: sourceLocation)
        #expect(response.headers[.cacheControl] == "no-store", "\(what)", sourceLocation: sourceLocation)
        #expect(response.headers[.contentType]?.hasPrefix("text/html") == true, "\(what)", sourceLocation: sourceLocation)
    }

    static func cookie(_ name: String, in response: TestResponse) -> String? {
        response.headers[values: .setCookie].first { $0.hasPrefix(name + "=") }
    }

    @Test("every page kind sends CSP frame-ancestors 'none', X-Frame-Options DENY, Referrer-Policy same-origin, nosniff, no-store")
    func everyPage() async throws {
        let fixture = try await HTTPFixture(configureStore: { $0.maxFailuresPerCaller = 2 })
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            let issued = try await client.issue(clientID: "cli", scope: "profile email")
            let browser = Browser()
            Self.expectPageHeaders(try await browser.get(client, "/device"), "sign-in page")
            try await browser.logIn(client)
            let enter = try await browser.get(client, "/device")
            Self.expectPageHeaders(enter, "code entry page")
            let confirm = try await browser.lookup(client, "\(issued.userCode)")
            Self.expectPageHeaders(confirm, "confirmation page")
            Self.expectPageHeaders(try await browser.lookup(client, "BBBB-BBBB"), "not found page")
            Self.expectPageHeaders(try await browser.lookup(client, "12"), "invalid code page")
            Self.expectPageHeaders(try await browser.post(client, "/device", [("action", "approve"), ("user_code", "x")]), "CSRF failure page")
            Self.expectPageHeaders(try await client.execute(uri: "/device", method: .put), "405 page")
            _ = try await browser.lookup(client, "BBBB-BBBC")
            let locked = try await browser.lookup(client, "BBBB-BBBD")
            #expect(locked.status == .tooManyRequests)
            Self.expectPageHeaders(locked, "lockout page")
        }
    }

    @Test("the confirmation page names the client and every requested scope, shows the code, and warns (RFC 8628 §5.4)")
    func confirmationContent() async throws {
        let fixture = try await HTTPFixture()
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            let issued = try await client.issue(clientID: "cli", scope: "email admin")
            let userCode = issued.userCode
            let browser = Browser()
            try await browser.logIn(client)
            let page = try await browser.lookup(client, "\(userCode.lowercased())")
            #expect(page.status == .ok)
            #expect(page.text.contains("Allow Test CLI to access your account?"))
            #expect(page.text.contains("(cli)"))
            #expect(page.text.contains("<li>email</li>") && page.text.contains("<li>admin</li>"))
            #expect(!page.text.contains("<li>profile</li>"), "only the requested scopes")
            #expect(page.text.contains(userCode), "the code to compare with the device")
            #expect(page.text.contains("Only approve a code your own device shows"))
            #expect(page.text.contains("If someone sent you this code or link, choose Deny"))
        }
    }

    @Test("cookies: HttpOnly and SameSite=Strict always; Secure with https (default) and not when configured off")
    func cookies() async throws {
        for secure in [true, false] {
            let fixture = try await HTTPFixture(secureCookies: secure ? nil : false)
            defer { fixture.shutdown() }
            try await fixture.app.test(.router) { client in
                let browser = Browser()
                let login = try await browser.get(client, "/device")
                // `__Host-` needs `Secure`: with cookies configured not Secure the plain name is used.
                let csrfName = secure ? "__Host-deviceauth_csrf" : "deviceauth_csrf"
                let csrf = try #require(Self.cookie(csrfName, in: login))
                let token = try #require(hiddenField("csrf_token", in: login.text))
                let signedIn = try await browser.post(client, "/device/login", [("username", "alice"), ("password", "wonderland"), ("csrf_token", token)])
                #expect(signedIn.status == .seeOther)
                let session = try #require(signedIn.headers[values: .setCookie].first { $0.hasPrefix("deviceauth_session=") })
                let rotated = try #require(Self.cookie(csrfName, in: signedIn), "sign-in sets a fresh CSRF nonce")
                #expect(rotated != csrf)
                for cookie in [csrf, session, rotated] {
                    #expect(cookie.contains("HttpOnly"), "\(cookie)")
                    #expect(cookie.contains("SameSite=Strict"), "\(cookie)")
                    #expect(cookie.contains("; Secure") == secure, "secure=\(secure): \(cookie)")
                }
            }
        }
    }
}
