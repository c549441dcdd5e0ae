import DeviceAuthorization
import DeviceAuthorizationHTTP
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

/// CSRF bound to the session, cross-site refusal, and consent that cannot be skipped, attacked as
/// an attacker would: another person's pair, a planted cookie, a token from before sign-in,
/// cross-site browser posts, decisions without the confirmation page — across two nodes.
@Suite("Session-bound CSRF and cross-site refusal")
struct SessionCSRFTests {
    static let csrfCookie = "__Host-deviceauth_csrf"

    /// A raw cookie header from name → value pairs.
    static func cookieHeader(_ cookies: [(String, String)], extra: HTTPFields = [:]) -> HTTPFields {
        var headers = extra
        headers[.cookie] = cookies.map { "\($0.0)=\($0.1)" }.joined(separator: "; ")
        return headers
    }

    /// A signed-in browser and the confirmation page it got for `userCode`.
    static func confirmation(_ client: some TestClientProtocol, user: String, password: String, userCode: String) async throws -> (Browser, TestResponse) {
        let browser = Browser()
        try await browser.logIn(client, user: user, password: password)
        let page = try await browser.lookup(client, userCode)
        try #require(page.status == .ok, "confirmation page: \(page.status)")
        return (browser, page)
    }

    @Test("another person's cookie + token pair, across two nodes and 200 concurrent posts → 403 every time, nothing approved")
    func anotherPersonsPair() async throws {
        let prefix = HTTPFixture.uniquePrefix()
        let nodeA = try await HTTPFixture(keyPrefix: prefix)
        let nodeB = try await HTTPFixture(keyPrefix: prefix)
        defer {
            nodeA.shutdown()
            nodeB.shutdown()
        }
        try await nodeA.app.test(.router) { a in
            try await nodeB.app.test(.router) { b in
                let issued = try await a.issue(clientID: "fast")
                // Alice (the attacker) gets a valid pair for her own session; Bob is the victim.
                let (alice, alicePage) = try await Self.confirmation(a, user: "alice", password: "wonderland", userCode: issued.userCode)
                let (bob, _) = try await Self.confirmation(b, user: "bob", password: "builder", userCode: issued.userCode)
                let aliceNonce = try #require(alice.cookies[Self.csrfCookie])
                let aliceToken = try #require(hiddenField("csrf_token", in: alicePage.text))
                let bobSession = try #require(bob.cookies[DevelopmentLoginAuthenticator.cookieName])
                let grantID = try #require(hiddenField("grant_id", in: alicePage.text))
                let form = formEncode([("action", "approve"), ("user_code", issued.userCode), ("grant_id", grantID), ("csrf_token", aliceToken)])
                // Bob's session with Alice's planted nonce and her token, and Bob's own nonce with her token.
                let bobNonce = try #require(bob.cookies[Self.csrfCookie])
                let variants = [
                    Self.cookieHeader([(Self.csrfCookie, aliceNonce), (DevelopmentLoginAuthenticator.cookieName, bobSession)]),
                    Self.cookieHeader([(Self.csrfCookie, bobNonce), (DevelopmentLoginAuthenticator.cookieName, bobSession)]),
                ]
                let statuses = try await withThrowingTaskGroup(of: HTTPResponse.Status.self) { group in
                    for index in 0..<200 {
                        var headers = variants[index % 2]
                        headers[.contentType] = "application/x-www-form-urlencoded"
                        let node: any TestClientProtocol = index % 4 < 2 ? a : b
                        group.addTask { try await node.execute(uri: "/device", method: .post, headers: headers, body: ByteBuffer(string: form)).status }
                    }
                    var statuses: [HTTPResponse.Status] = []
                    for try await status in group { statuses.append(status) }
                    return statuses
                }
                #expect(statuses.count == 200 && statuses.allSatisfy { $0 == .forbidden }, "\(Dictionary(grouping: statuses, by: \.code).mapValues(\.count))")
                expectOAuthError(try await a.poll(deviceCode: issued.deviceCode, clientID: "fast"), "authorization_pending")
                // Alice's pair still works for Alice: the refusals were about the session, not the token.
                #expect(try await alice.decide(a, "deny", on: alicePage).status == .ok)
            }
        }
    }

    @Test("a planted cookie with the planter's token → 403 for the victim: a sibling's plain-named cookie is ignored, a pre-sign-in nonce is rotated away")
    func plantedCookie() async throws {
        let fixture = try await HTTPFixture()
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            let issued = try await client.issue(clientID: "fast")
            // The planter's pre-session pair (what a sibling subdomain could set and read).
            let planter = Browser()
            let planterPage = try await planter.get(client, "/device")
            let plantedNonce = try #require(planter.cookies[Self.csrfCookie])
            let plantedToken = try #require(hiddenField("csrf_token", in: planterPage.text))

            // The victim has the planted nonce when signing in: sign-in replaces it.
            let victim = Browser()
            let loginForm = try await victim.get(client, "/device", headers: Self.cookieHeader([(Self.csrfCookie, plantedNonce)]))
            let loginToken = try #require(hiddenField("csrf_token", in: loginForm.text))
            #expect(victim.cookies[Self.csrfCookie] == nil, "a well-formed nonce is kept until sign-in")
            let signedIn = try await victim.post(
                client, "/device/login", [("username", "bob"), ("password", "builder"), ("csrf_token", loginToken)],
                headers: Self.cookieHeader([(Self.csrfCookie, plantedNonce)]))
            #expect(signedIn.status == .seeOther)
            let rotated = try #require(victim.cookies[Self.csrfCookie], "sign-in sets a fresh nonce")
            #expect(rotated != plantedNonce)
            let session = try #require(victim.cookies[DevelopmentLoginAuthenticator.cookieName])

            let grantPage = try await victim.lookup(client, issued.userCode)
            let grantID = try #require(hiddenField("grant_id", in: grantPage.text))
            let approve = [("action", "approve"), ("user_code", issued.userCode), ("grant_id", grantID), ("csrf_token", plantedToken)]
            // The planter's token with the planted nonce (as if the browser still had it), with
            // the victim's rotated nonce, and through a plain-named cookie a sibling could set.
            for cookies in [[(Self.csrfCookie, plantedNonce)], [(Self.csrfCookie, rotated)], [("deviceauth_csrf", plantedNonce)]] {
                let response = try await client.postForm(
                    "/device", approve,
                    headers: Self.cookieHeader(cookies + [(DevelopmentLoginAuthenticator.cookieName, session)]))
                #expect(response.status == .forbidden, "\(cookies.map(\.0))")
            }
            expectOAuthError(try await client.poll(deviceCode: issued.deviceCode, clientID: "fast"), "authorization_pending")
        }
    }

    @Test("a token from before sign-in does not work after it")
    func tokenFromBeforeSignIn() async throws {
        let fixture = try await HTTPFixture()
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            let issued = try await client.issue(clientID: "fast")
            let browser = Browser()
            let before = try await browser.get(client, "/device")
            let oldNonce = try #require(browser.cookies[Self.csrfCookie])
            let oldToken = try #require(hiddenField("csrf_token", in: before.text))
            try await browser.logIn(client)
            let page = try await browser.lookup(client, issued.userCode)
            let grantID = try #require(hiddenField("grant_id", in: page.text))
            let session = try #require(browser.cookies[DevelopmentLoginAuthenticator.cookieName])
            let approve = [("action", "approve"), ("user_code", issued.userCode), ("grant_id", grantID), ("csrf_token", oldToken)]
            // With the browser's current (rotated) nonce, and with the old nonce it had when the token was made.
            #expect(try await browser.post(client, "/device", approve).status == .forbidden)
            #expect(
                try await client.postForm("/device", approve, headers: Self.cookieHeader([(Self.csrfCookie, oldNonce), (DevelopmentLoginAuthenticator.cookieName, session)])).status
                    == .forbidden)
            expectOAuthError(try await client.poll(deviceCode: issued.deviceCode, clientID: "fast"), "authorization_pending")
            #expect(try await browser.decide(client, "approve", on: page).status == .ok, "the page's own token works")
        }
    }

    @Test(
        "POST /device with Sec-Fetch-Site cross-site or same-site, or a foreign or null Origin → 403, nothing approved; same-origin, none, the right Origin or no header → allowed")
    func crossSiteApproval() async throws {
        let fixture = try await HTTPFixture()
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            let issued = try await client.issue(clientID: "fast")
            let browser = Browser()
            try await browser.logIn(client)
            let page = try await browser.lookup(client, issued.userCode)
            let refused: [HTTPFields] = [
                [HTTPField.Name("Sec-Fetch-Site")!: "cross-site"],
                [HTTPField.Name("Sec-Fetch-Site")!: "same-site"],
                [.origin: "https://evil.test"],
                [.origin: "null"],
                [.origin: "https://auth.test.evil.test"],
                [.origin: "http://auth.test"],
                [.origin: "https://auth.test:8443"],
                [.origin: "https://auth.test", HTTPField.Name("Sec-Fetch-Site")!: "cross-site"],
            ]
            for headers in refused {
                for action in ["approve", "deny", "lookup"] {
                    let response = try await browser.decide(client, action, on: page, headers: headers)
                    #expect(response.status == .forbidden, "\(action) with \(headers)")
                    #expect(response.text.contains("did not come from this site"))
                }
            }
            expectOAuthError(try await client.poll(deviceCode: issued.deviceCode, clientID: "fast"), "authorization_pending")
            let allowed: [HTTPFields] = [
                [HTTPField.Name("Sec-Fetch-Site")!: "same-origin", .origin: "https://auth.test"],
                [HTTPField.Name("Sec-Fetch-Site")!: "none"],
                [.origin: "HTTPS://AUTH.TEST:443"],
                [:],
            ]
            for headers in allowed {
                #expect(try await browser.decide(client, "lookup", on: page, headers: headers).status == .ok, "\(headers)")
            }
            #expect(try await browser.decide(client, "approve", on: page, headers: allowed[0]).status == .ok)
            #expect(try await client.poll(deviceCode: issued.deviceCode, clientID: "fast").status == .ok)
        }
    }

    @Test("POST /device/login cross-site (Sec-Fetch-Site or Origin) → 403 and no session, even with a valid token")
    func crossSiteLogin() async throws {
        let fixture = try await HTTPFixture()
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            let browser = Browser()
            let form = try await browser.get(client, "/device")
            let token = try #require(hiddenField("csrf_token", in: form.text))
            let credentials = [("username", "alice"), ("password", "wonderland"), ("csrf_token", token)]
            for headers: HTTPFields in [
                [HTTPField.Name("Sec-Fetch-Site")!: "cross-site"], [HTTPField.Name("Sec-Fetch-Site")!: "same-site"],
                [.origin: "https://evil.test"], [.origin: "null"],
            ] {
                let response = try await browser.post(client, "/device/login", credentials, headers: headers)
                #expect(response.status == .forbidden, "\(headers)")
                #expect(!response.headers[values: .setCookie].contains { $0.hasPrefix(DevelopmentLoginAuthenticator.cookieName + "=") }, "no session")
            }
            #expect(try await browser.post(client, "/device/login", credentials, headers: [.origin: "https://auth.test"]).status == .seeOther)
        }
    }

    @Test("approve or deny without the confirmation page's grant_id → 400, nothing decided; another grant's id → 409")
    func grantIDRequired() async throws {
        let fixture = try await HTTPFixture()
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            let issued = try await client.issue(clientID: "fast")
            let browser = Browser()
            try await browser.logIn(client)
            let page = try await browser.lookup(client, issued.userCode)
            let token = try #require(hiddenField("csrf_token", in: page.text))
            for action in ["approve", "deny"] {
                for grant in [nil, ""] as [String?] {
                    var form = [("action", action), ("user_code", issued.userCode), ("csrf_token", token)]
                    if let grant { form.append(("grant_id", grant)) }
                    let response = try await browser.post(client, "/device", form)
                    #expect(response.status == .badRequest, "\(action) grant_id=\(grant ?? "missing")")
                }
                let other = try await browser.post(
                    client, "/device",
                    [
                        ("action", action), ("user_code", issued.userCode), ("csrf_token", token),
                        ("grant_id", "not-this-grant"),
                    ])
                #expect(other.status == .conflict, "\(action) with another grant id")
            }
            expectOAuthError(try await client.poll(deviceCode: issued.deviceCode, clientID: "fast"), "authorization_pending")
        }
    }
}
