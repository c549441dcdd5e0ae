import DeviceAuthorization
import DeviceAuthorizationHTTP
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import RedisClient
import Testing

@Suite("Verification page /device")
struct VerificationPageTests {
    @Test("the whole flow through the HTML forms: login, enter code, confirm, approve; the device gets its token")
    func approveThroughForms() async throws {
        let fixture = try await HTTPFixture()
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            let issued = try await client.issue(clientID: "fast", scope: "profile email")
            let userCode = issued.userCode
            let browser = Browser()

            // Not signed in: the login form, with security headers.
            let login = try await browser.get(client, "/device")
            #expect(login.status == .ok)
            #expect(login.text.contains("action=\"/device/login\""))
            #expect(login.headers[.contentSecurityPolicy]?.contains("default-src 'none'") == true)
            #expect(login.headers[.contentSecurityPolicy]?.contains("frame-ancestors 'none'") == true)
            #expect(login.headers[HTTPField.Name("X-Frame-Options")!] == "DENY")
            #expect(login.headers[HTTPField.Name("Referrer-Policy")!] == "same-origin")
            #expect(login.headers[.cacheControl] == "no-store")
            let csrfCookie = try #require(
                login.headers[values: .setCookie].first { $0.hasPrefix("__Host-deviceauth_csrf=") },
                "an https base URL gives the CSRF cookie the __Host- prefix")
            #expect(csrfCookie.contains("Path=/;") || csrfCookie.hasSuffix("Path=/"), "\(csrfCookie)")
            #expect(!csrfCookie.lowercased().contains("domain="), "\(csrfCookie)")
            #expect(csrfCookie.contains("HttpOnly"))
            #expect(csrfCookie.contains("SameSite=Strict"))
            #expect(csrfCookie.contains("Secure"), "the public URL is https, so cookies are Secure")

            // Wrong password, then right password.
            let token = try #require(hiddenField("csrf_token", in: login.text))
            let wrong = try await browser.post(client, "/device/login", [("username", "alice"), ("password", "nope"), ("csrf_token", token)])
            #expect(wrong.status == .unauthorized)
            try await browser.logIn(client)

            // Enter the code in lower case without the dash: normalized as the store does.
            let enter = try await browser.get(client, "/device")
            #expect(enter.text.contains("Enter the code"))
            let typed = userCode.lowercased().replacingOccurrences(of: "-", with: " ")
            let confirm = try await browser.post(
                client, "/device",
                [
                    ("action", "lookup"), ("user_code", typed),
                    ("csrf_token", hiddenField("csrf_token", in: enter.text)!),
                ])
            #expect(confirm.status == .ok)
            #expect(confirm.text.contains(userCode))
            #expect(confirm.text.contains("Fast poller"))
            #expect(confirm.text.contains("<li>profile</li>") && confirm.text.contains("<li>email</li>"))
            #expect(confirm.text.contains("Only approve a code your own device shows"))
            #expect(!confirm.text.contains("<script"))

            let approved = try await browser.decide(client, "approve", on: confirm)
            #expect(approved.status == .ok)
            #expect(approved.text.contains("Device connected"))

            let tokenResponse = try await client.poll(deviceCode: issued.deviceCode, clientID: "fast")
            #expect(tokenResponse.status == .ok)
            #expect(tokenResponse.json["access_token"] is String)

            // The same code again: "already used".
            let again = try await browser.lookup(client, "\(userCode)")
            #expect(again.status == .conflict)
            #expect(again.text.contains("already used"))
        }
    }

    @Test("verification_uri_complete fills in the code but still asks; Deny reaches the device")
    func completeURIThenDeny() async throws {
        let fixture = try await HTTPFixture()
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            let issued = try await client.issue(clientID: "fast")
            let completeText = try #require(issued["verification_uri_complete"] as? String)
            let complete = try #require(URL(string: completeText))
            let browser = Browser()
            try await browser.logIn(client)
            // Opening the link only fills in the code form: no lookup, no buttons to decide with.
            let form = try await browser.get(client, complete.path + "?" + (try #require(complete.query)))
            #expect(form.status == .ok)
            #expect(form.text.contains("name=\"user_code\" value=\"\(issued.userCode)\""), "the code from the link is prefilled")
            #expect(!form.text.contains("value=\"approve\"") && !form.text.contains("name=\"grant_id\""))
            // Nothing was decided by merely opening the link.
            expectOAuthError(try await client.poll(deviceCode: issued.deviceCode, clientID: "fast"), "authorization_pending")
            let token = try #require(hiddenField("csrf_token", in: form.text))
            let page = try await browser.post(client, "/device", [("action", "lookup"), ("user_code", issued.userCode), ("csrf_token", token)])
            #expect(page.status == .ok)
            #expect(page.text.contains("value=\"approve\"") && page.text.contains("value=\"deny\""))

            let denied = try await browser.decide(client, "deny", on: page)
            #expect(denied.text.contains("Request denied"))
            expectOAuthError(try await client.poll(deviceCode: issued.deviceCode, clientID: "fast"), "access_denied")
        }
    }

    @Test(
        "durability asked of a Redis without replicas: the approval page says 503 'Not confirmed yet'; the token is held back (503 temporarily_unavailable, Retry-After) until the hold ends, then sent once"
    )
    func unconfirmedApproval() async throws {
        // The shared test Redis has no replica, so `WAIT 1` answers 0 after its timeout, every time.
        let fixture = try await HTTPFixture(configureStore: {
            $0.durability = try? RedisDurability(replicas: 1, timeout: .milliseconds(20))
            $0.unconfirmedRedemptionHold = .milliseconds(300)
        })
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            let issued = try await client.issue(clientID: "fast")
            let browser = Browser()
            try await browser.logIn(client)
            let page = try await browser.lookup(client, issued.userCode)
            #expect(page.status == .ok)
            let approved = try await browser.decide(client, "approve", on: page)
            #expect(approved.status == .serviceUnavailable)
            #expect(approved.text.contains("Not confirmed yet"))
            #expect(!approved.text.contains("Device connected"))
            #expect(approved.headers[.retryAfter] == "5")
            // It was made on the primary. The redemption is not confirmed either: the device is told
            // to retry while the answer is held back, then gets it (a replica outage delays a login,
            // never loses it), and the same answer again after that.
            let held = try await client.poll(deviceCode: issued.deviceCode, clientID: "fast")
            expectOAuthError(held, "temporarily_unavailable", status: .serviceUnavailable)
            #expect(held.headers[.retryAfter] == "2")
            var token = try await client.poll(deviceCode: issued.deviceCode, clientID: "fast")
            for _ in 0..<100 where token.status != .ok {  // a hang guard, not a timing assertion
                #expect(token.oauthError == "temporarily_unavailable")
                try await Task.sleep(for: .milliseconds(100))
                token = try await client.poll(deviceCode: issued.deviceCode, clientID: "fast")
            }
            #expect(token.status == .ok)
            expectSameToken(try await client.poll(deviceCode: issued.deviceCode, clientID: "fast"), as: token)
            // Entering the code again shows it as used, not a second confirmation page.
            let again = try await browser.lookup(client, issued.userCode)
            #expect(!again.text.contains("value=\"approve\""))
        }
    }

    @Test("POST without a valid CSRF token is rejected and nothing is approved")
    func csrfRequired() async throws {
        let fixture = try await HTTPFixture()
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            let issued = try await client.issue(clientID: "fast")
            let userCode = issued.userCode
            let browser = Browser()
            try await browser.logIn(client)
            let missing = try await browser.post(client, "/device", [("action", "approve"), ("user_code", userCode)])
            #expect(missing.status == .forbidden)
            let forged = try await browser.post(
                client, "/device",
                [
                    ("action", "approve"), ("user_code", userCode),
                    ("csrf_token", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
                ])
            #expect(forged.status == .forbidden)
            // A token from another browser's cookie does not fit this browser's cookie.
            let other = Browser()
            let otherPage = try await other.get(client, "/device")
            let stolen = try await browser.post(
                client, "/device",
                [
                    ("action", "approve"), ("user_code", userCode),
                    ("csrf_token", hiddenField("csrf_token", in: otherPage.text)!),
                ])
            #expect(stolen.status == .forbidden)
            expectOAuthError(try await client.poll(deviceCode: issued.deviceCode, clientID: "fast"), "authorization_pending")
            // Login without a token is refused too.
            let fresh = Browser()
            let login = try await fresh.post(client, "/device/login", [("username", "alice"), ("password", "wonderland")])
            #expect(login.status == .forbidden)
        }
    }

    @Test("unknown, malformed and expired codes get clear pages")
    func errorPages() async throws {
        let fixture = try await HTTPFixture()
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            let browser = Browser()
            try await browser.logIn(client)
            let unknown = try await browser.lookup(client, "BBBB-BBBB")
            #expect(unknown.status == .notFound)
            #expect(unknown.text.contains("could not find a request"))
            let malformed = try await browser.lookup(client, "12")
            #expect(malformed.status == .badRequest)
            #expect(malformed.text.contains("not a valid code"))

            let issued = try await client.issue(clientID: "short")
            try await Task.sleep(for: .milliseconds(1_200))
            let expired = try await browser.lookup(client, "\(issued.userCode)")
            #expect(expired.status == .gone)
            #expect(expired.text.contains("expired"))
        }
    }

    @Test("too many wrong codes from one IP → 429 page with Retry-After, even for a right code")
    func lockout() async throws {
        let fixture = try await HTTPFixture(configureStore: { $0.maxFailuresPerCaller = 3 })
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            let issued = try await client.issue(clientID: "fast")
            let browser = Browser()
            try await browser.logIn(client)
            for _ in 0..<3 {
                #expect(try await browser.lookup(client, "BBBB-BBBB").status == .notFound)
            }
            let locked = try await browser.lookup(client, "\(issued.userCode)")
            #expect(locked.status == .tooManyRequests)
            #expect(locked.headers[.retryAfter].flatMap(Int.init).map { $0 > 0 } == true)
            #expect(locked.text.contains("Too many attempts"))
        }
    }

    @Test("HTML-special characters are not reflected")
    func escaping() async throws {
        let fixture = try await HTTPFixture()
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            let browser = Browser()
            try await browser.logIn(client)
            let page = try await browser.get(client, "/device?user_code=%3Cscript%3Ealert(1)%3C%2Fscript%3E")
            #expect(!page.text.contains("<script>alert"))
            let looked = try await browser.lookup(client, "<script>alert(1)</script>")
            #expect(looked.status == .badRequest)
            #expect(!looked.text.contains("<script>alert") && !looked.text.contains("&lt;script"), "only code-alphabet characters are shown again")
        }
    }
}
