import DeviceAuthorization
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import RedisClient

/// The verification page (RFC 8628 §3.3): enter a code, confirm what is asked, approve or deny
/// (`GET /device`, `POST /device`, `POST /device/login`).
struct VerificationController: Sendable {
    let store: DeviceCodeStore
    let clients: any ClientRegistry
    let users: any UserAuthenticator
    let configuration: DeviceAuthorizationHTTPConfiguration
    let pages: PageRenderer
    let csrf: CSRFProtection
    let rateLimiter: RequestRateLimiter

    func addRoutes(to router: Router<DeviceAuthorizationRequestContext>) {
        router.get("/device") { request, context in await self.verificationPage(request, context) }
        router.post("/device") { request, context in await self.verificationSubmit(request, context) }
        router.post("/device/login") { request, context in await self.login(request, context) }
    }

    /// `GET /device` and `GET /device?user_code=…`.
    ///
    /// Only fills in the form: the code from the link is prefilled (normalized) and nothing is
    /// looked up or counted, so an `<img src=/device?user_code=…>` on another site cannot spend a
    /// person's guess budget. The lookup is the form's POST (`action=lookup`).
    func verificationPage(_ request: Request, _ context: DeviceAuthorizationRequestContext) async -> Response {
        let origin = RequestOrigin(request: request, peerAddress: context.peerIPAddress, trustedProxies: configuration.trustedProxies)
        let prefill = Self.reflectableCode(request.uri.queryParameters.get("user_code").map { String($0) })
        let user: AuthenticatedUser?
        do {
            user = try await users.authenticate(request: request, origin: origin)
        } catch {
            let (_, csrfCookie) = csrf.token(for: request, userID: nil)
            return failurePage(error, context, cookies: csrfCookie.map { [$0] } ?? [])
        }
        let (csrfToken, csrfCookie) = csrf.token(for: request, userID: user?.id)
        let cookies = csrfCookie.map { [$0] } ?? []
        guard let user else {
            return unauthenticatedPage(csrfToken: csrfToken, cookies: cookies, userCode: prefill)
        }
        var values: [String: Any] = ["title": "Connect a device", "csrf_token": csrfToken, "user": user.displayName]
        if let prefill { values["entered"] = prefill }
        return pages.render("enter_code", values, cookies: cookies)
    }

    /// `POST /device` with `action` = `lookup`, `approve` or `deny`.
    func verificationSubmit(_ request: Request, _ context: DeviceAuthorizationRequestContext) async -> Response {
        let origin = RequestOrigin(request: request, peerAddress: context.peerIPAddress, trustedProxies: configuration.trustedProxies)
        // A browser that says the form comes from another site is refused before anything else.
        if csrf.isCrossSite(request) {
            context.logger.notice("verification form rejected: cross-site request")
            return crossSitePage()
        }
        let form: FormBody
        do {
            form = try await FormBody.read(from: request, limit: configuration.maxBodySize)
        } catch {
            let status: HTTPResponse.Status = if case .tooLarge = error { .contentTooLarge } else { .badRequest }
            return messagePage(
                title: "Something went wrong", message: "The form could not be read. Please go back and try again.",
                status: status, cookies: [])
        }
        guard let action = form["action"], ["lookup", "approve", "deny"].contains(action) else {
            // Not this page's form (an empty or foreign body, an unknown action), whoever sends it.
            return messagePage(title: "Something went wrong", message: "Unknown action.", status: .badRequest, cookies: [], showBack: true)
        }
        let user: AuthenticatedUser?
        do {
            user = try await users.authenticate(request: request, origin: origin)
        } catch {
            return failurePage(error, context, cookies: [])
        }
        let (csrfToken, csrfCookie) = csrf.token(for: request, userID: user?.id)
        let cookies = csrfCookie.map { [$0] } ?? []
        // The form must come from this site and this session: the token is bound to the browser's
        // nonce and to who is signed in, so another person's pair, or one from before sign-in,
        // does not fit.
        guard csrf.isValid(request: request, formToken: form[CSRFProtection.formField], userID: user?.id) else {
            context.logger.notice("verification form rejected: missing or invalid CSRF token")
            return messagePage(
                title: "Please try again", message: "This form has expired or did not come from this site. Open the page again and re-enter your code.",
                status: .forbidden, cookies: cookies, showBack: true)
        }
        guard let user else {
            return unauthenticatedPage(csrfToken: csrfToken, cookies: cookies, userCode: Self.reflectableCode(form["user_code"]))
        }
        let userCode = form["user_code"] ?? ""
        switch action {
        case "lookup":
            return await confirmationPage(userCode: userCode, user: user, origin: origin, csrfToken: csrfToken, cookies: cookies, context)
        case "approve", "deny":
            // RFC 8628 §5.4: a decision names the grant the confirmation page showed; without it
            // the person never saw the client, the scopes and the code, so nothing is decided.
            guard let grantID = form["grant_id"], !grantID.isEmpty else {
                return messagePage(
                    title: "Something went wrong", message: "Please look at the request before approving or denying it: enter the code again.",
                    status: .badRequest, cookies: cookies, showBack: true, user: user)
            }
            return await decide(
                approve: action == "approve", userCode: userCode, grantID: grantID,
                user: user, origin: origin, csrfToken: csrfToken, cookies: cookies, context)
        default:
            return messagePage(title: "Something went wrong", message: "Unknown action.", status: .badRequest, cookies: cookies, showBack: true)
        }
    }

    /// `POST /device/login` for authenticators with a login form.
    func login(_ request: Request, _ context: DeviceAuthorizationRequestContext) async -> Response {
        guard users.supportsLoginForm else {
            return messagePage(title: "Not available", message: "Sign-in happens through your organization's login.", status: .notFound, cookies: [])
        }
        // Login CSRF: another site must not sign a person in as someone else.
        if csrf.isCrossSite(request) {
            context.logger.notice("login form rejected: cross-site request")
            return crossSitePage()
        }
        let origin = RequestOrigin(request: request, peerAddress: context.peerIPAddress, trustedProxies: configuration.trustedProxies)
        let (csrfToken, csrfCookie) = csrf.token(for: request, userID: nil)
        let cookies = csrfCookie.map { [$0] } ?? []
        let form: FormBody
        do {
            form = try await FormBody.read(from: request, limit: configuration.maxBodySize)
        } catch {
            return messagePage(title: "Something went wrong", message: "The form could not be read.", status: .badRequest, cookies: cookies)
        }
        let userCode = Self.reflectableCode(form["user_code"])
        // The pre-session token (bound to no user): the login form's own.
        guard csrf.isValid(request: request, formToken: form[CSRFProtection.formField], userID: nil) else {
            return unauthenticatedPage(
                csrfToken: csrfToken, cookies: cookies, userCode: userCode,
                error: "Your sign-in form expired. Please try again.", status: .forbidden)
        }
        do {
            guard let username = form["username"], let password = form["password"] else {
                return unauthenticatedPage(
                    csrfToken: csrfToken, cookies: cookies, userCode: userCode,
                    error: "Wrong user name or password.", status: .unauthorized)
            }
            // Charged before the password is checked, given back when it was right: a burst
            // across nodes gets at most the limit of "wrong password" answers (the rest, a right
            // password included, 429), and honest sign-ins use up nothing.
            let buckets = loginBuckets(origin: origin, username: username)
            if case .limited(_, let retryAfter) = try await rateLimiter.acquire(buckets) {
                context.logger.notice("development login refused: too many attempts")
                let seconds = retryAfter.wholeSecondsRoundedUp(atLeast: 1)
                let minutes = max(1, (seconds + 59) / 60)
                return unauthenticatedPage(
                    csrfToken: csrfToken, cookies: cookies, userCode: userCode,
                    error: "Too many sign-in attempts. For your security, please wait about \(minutes) minute\(minutes == 1 ? "" : "s") and try again.",
                    status: .tooManyRequests, headers: [.retryAfter: String(seconds)])
            }
            guard let session = try await users.logIn(username: username, password: password) else {
                context.logger.notice("development login failed")
                return unauthenticatedPage(
                    csrfToken: csrfToken, cookies: cookies, userCode: userCode,
                    error: "Wrong user name or password.", status: .unauthorized)
            }
            do {
                try await rateLimiter.release(buckets)
            } catch {
                // The sign-in stands; only its charge stays counted.
                context.logger.warning("login attempt not given back", metadata: ["error": "\(error)"])
            }
            context.logger.info("development login", metadata: ["user": "\(session.user.id)"])
            var location = "/device"
            if let userCode, let normalized = UserCode.normalize(userCode) {
                location += "?user_code=" + UserCode.display(normalized)
            }
            var response = Response.redirect(to: location, type: .found)
            response.status = .seeOther
            response.headers[.cacheControl] = "no-store"
            response.setCookie(session.cookie)
            // A fresh nonce with the session: whatever nonce the browser had before (planted or
            // not) stops working at sign-in.
            response.setCookie(csrf.rotatedCookie(userID: session.user.id).cookie)
            return response
        } catch {
            return failurePage(error, context, cookies: cookies)
        }
    }

    /// The counters a development-login attempt is charged to: the caller's address bucket and
    /// the user name (keyed hashes in Redis, never the name itself).
    func loginBuckets(origin: RequestOrigin, username: String) -> [RateLimitBucket] {
        var buckets: [RateLimitBucket] = []
        if let limit = configuration.rateLimits.loginFailuresPerIP {
            buckets.append(RateLimitBucket(name: "lgi", subject: origin.rateLimitKey, limit: limit))
        }
        if let limit = configuration.rateLimits.loginFailuresPerUser {
            buckets.append(RateLimitBucket(name: "lgu", subject: String(username.prefix(256)), limit: limit))
        }
        return buckets
    }

    /// Who tries a user code: the address buckets and the signed-in person.
    static func lookupAttempt(origin: RequestOrigin, user: AuthenticatedUser) -> LookupAttempt {
        LookupAttempt(callers: origin.lookupCallers, userID: user.id)
    }

    /// "2 minutes ago": how long before Redis's `now` the device asked.
    static func age(from createdAt: Date, to now: Date) -> String {
        let seconds = max(0, Int(now.timeIntervalSince(createdAt)))
        if seconds < 60 { return "less than a minute ago" }
        if seconds < 3600 {
            let minutes = seconds / 60
            return "\(minutes) minute\(minutes == 1 ? "" : "s") ago"
        }
        let hours = seconds / 3600
        return "\(hours) hour\(hours == 1 ? "" : "s") ago"
    }

    /// The address the device asked from, when it is an IP address (anything else, such as an
    /// unparseable forwarded entry, is not shown).
    static func displayedOrigin(_ origin: String?) -> String {
        guard let origin, IPAddressParser.parse(origin) != nil else { return "an unknown address" }
        return origin
    }

    /// What of a user code the page may show again: only characters of the user-code alphabet
    /// (upper case, at most 8, in the display form when complete), never the raw input.
    static func reflectableCode(_ input: String?) -> String? {
        guard let input else { return nil }
        if let normalized = UserCode.normalize(input) { return UserCode.display(normalized) }
        var kept: [UInt8] = []
        for byte in input.utf8.prefix(64) {
            let upper = (byte >= 97 && byte <= 122) ? byte - 32 : byte
            if UserCode.alphabet.contains(upper) {
                kept.append(upper)
                if kept.count == UserCode.length { break }
            }
        }
        return kept.isEmpty ? nil : String(decoding: kept, as: UTF8.self)
    }

    // MARK: - Steps

    private func confirmationPage(
        userCode: String, user: AuthenticatedUser, origin: RequestOrigin, csrfToken: String,
        cookies: [Cookie], _ context: DeviceAuthorizationRequestContext
    ) async -> Response {
        do {
            let grant = try await store.lookup(userCode: userCode, attempt: Self.lookupAttempt(origin: origin, user: user))
            if grant.status != .pending || grant.isRedeemed {
                return alreadyUsedPage(cookies: cookies)
            }
            let client = try await clients.client(id: grant.clientID)
            return pages.render(
                "confirm",
                [
                    "title": "Confirm the code",
                    "user": user.displayName,
                    "csrf_token": csrfToken,
                    "user_code": grant.userCode,
                    "grant_id": grant.grantID,
                    "client_name": client?.displayName ?? grant.clientID,
                    "client_id": grant.clientID,
                    "scopes": grant.scopes,
                    "has_scopes": !grant.scopes.isEmpty,
                    "requested_ago": Self.age(from: grant.createdAt, to: grant.observedAt),
                    "requested_from": Self.displayedOrigin(grant.requestOrigin),
                ], cookies: cookies)
        } catch {
            return lookupFailurePage(error, entered: userCode, user: user, csrfToken: csrfToken, cookies: cookies, context)
        }
    }

    private func decide(
        approve: Bool, userCode: String, grantID: String, user: AuthenticatedUser, origin: RequestOrigin,
        csrfToken: String, cookies: [Cookie], _ context: DeviceAuthorizationRequestContext
    ) async -> Response {
        do {
            // Look up first: wrong codes count against this caller's brute-force budget here too.
            let grant = try await store.lookup(userCode: userCode, attempt: Self.lookupAttempt(origin: origin, user: user))
            if grantID != grant.grantID {
                // The code now belongs to another request than the one the person confirmed.
                return grantChangedPage(cookies: cookies)
            }
            if grant.status != .pending || grant.isRedeemed { return alreadyUsedPage(cookies: cookies) }
            if approve {
                // The store checks the grant id again in the deciding script (the code may have
                // moved to another grant since the lookup).
                try await store.approve(userCode: userCode, userID: user.id, grantID: grantID)
                context.logger.info("device request approved", metadata: ["grant_id": "\(grant.grantID)", "client_id": "\(grant.clientID)", "user": "\(user.id)"])
                return messagePage(
                    title: "Device connected", message: "You approved the request. You can return to your device now; it will finish signing in by itself.",
                    status: .ok, cookies: cookies, user: user)
            } else {
                try await store.deny(userCode: userCode, grantID: grantID)
                context.logger.info("device request denied", metadata: ["grant_id": "\(grant.grantID)", "client_id": "\(grant.clientID)", "user": "\(user.id)"])
                return messagePage(
                    title: "Request denied", message: "The device was not given access. If you did not start this request, no further action is needed.",
                    status: .ok, cookies: cookies, user: user)
            }
        } catch {
            return lookupFailurePage(error, entered: userCode, user: user, csrfToken: csrfToken, cookies: cookies, context)
        }
    }

    // MARK: - Pages

    private func lookupFailurePage(
        _ error: any Error, entered: String, user: AuthenticatedUser, csrfToken: String,
        cookies: [Cookie], _ context: DeviceAuthorizationRequestContext
    ) -> Response {
        guard let error = error as? DeviceAuthorizationError else { return failurePage(error, context, cookies: cookies) }
        let entered = Self.reflectableCode(entered) ?? ""
        // The form again, with what was entered and why it did not lead anywhere.
        func enterCodeAgain(_ message: String, status: HTTPResponse.Status) -> Response {
            pages.render(
                "enter_code",
                ["title": "Connect a device", "csrf_token": csrfToken, "user": user.displayName, "entered": entered, "error": message],
                status: status, cookies: cookies)
        }
        switch error.code {
        case .invalidUserCode:
            return enterCodeAgain("That is not a valid code. Codes have 8 letters, like BCDF-GHJK.", status: .badRequest)
        case .notFound:
            return enterCodeAgain("We could not find a request with that code. Check the code on your device and try again.", status: .notFound)
        case .expired:
            return messagePage(
                title: "This code has expired", message: "The request timed out. Start again on your device to get a new code.",
                status: .gone, cookies: cookies, showBack: true, user: user)
        case .alreadyDecided:
            return alreadyUsedPage(cookies: cookies)
        case .grantChanged:
            return grantChangedPage(cookies: cookies)
        case .notDurable:
            // Made on the primary but not confirmed by enough replicas: it probably stands, but a
            // failover could undo it, so the person is not told it is done.
            return messagePage(
                title: "Not confirmed yet",
                message: "Your decision was recorded but could not be confirmed yet. Look at your device: if it does not continue within a minute, enter the code again.",
                status: .serviceUnavailable, cookies: cookies, showBack: true, headers: [.retryAfter: "5"], user: user)
        case .tooManyAttempts:
            let seconds = max(1, Int((error.retryAfter ?? .seconds(60)).components.seconds))
            let minutes = max(1, (seconds + 59) / 60)
            return messagePage(
                title: "Too many attempts",
                message: "Too many wrong codes were entered. For your security, please wait about \(minutes) minute\(minutes == 1 ? "" : "s") and try again.",
                status: .tooManyRequests, cookies: cookies, headers: [.retryAfter: String(seconds)], user: user)
        default:
            return failurePage(error, context, cookies: cookies)
        }
    }

    private func grantChangedPage(cookies: [Cookie]) -> Response {
        messagePage(
            title: "This code has changed", message: "The request you looked at is gone. Check the code on your device and enter it again.",
            status: .conflict, cookies: cookies, showBack: true)
    }

    private func crossSitePage() -> Response {
        messagePage(
            title: "Please try again", message: "This form did not come from this site. Open the page again and re-enter your code.",
            status: .forbidden, cookies: [], showBack: true)
    }

    private func alreadyUsedPage(cookies: [Cookie]) -> Response {
        messagePage(
            title: "This code was already used", message: "The request for this code has already been approved or denied. If that was not you, start again on your device.",
            status: .conflict, cookies: cookies, showBack: true)
    }

    private func unauthenticatedPage(
        csrfToken: String, cookies: [Cookie], userCode: String?, error: String? = nil,
        status: HTTPResponse.Status = .ok, headers: [HTTPField.Name: String] = [:]
    ) -> Response {
        if users.supportsLoginForm {
            var values: [String: Any] = ["title": "Sign in", "csrf_token": csrfToken]
            if let userCode { values["user_code"] = userCode }
            if let error { values["error"] = error }
            return pages.render("login", values, status: status, cookies: cookies, headers: headers)
        }
        return messagePage(
            title: "Sign-in required", message: "You need to sign in through your organization's login before you can connect a device.",
            status: .unauthorized, cookies: cookies)
    }

    private func failurePage(_ error: any Error, _ context: DeviceAuthorizationRequestContext, cookies: [Cookie]) -> Response {
        if let error = error as? RedisError {
            context.logger.error("Redis unavailable", metadata: ["error": "\(error.code)"])
            return messagePage(
                title: "Temporarily unavailable", message: "The sign-in service is temporarily unavailable. Please try again in a moment.",
                status: .serviceUnavailable, cookies: cookies, headers: [.retryAfter: "5"])
        }
        context.logger.error("verification page failed", metadata: ["error": "\(error)"])
        return messagePage(title: "Something went wrong", message: "Please try again in a moment.", status: .internalServerError, cookies: cookies)
    }

    private func messagePage(
        title: String, message: String, status: HTTPResponse.Status, cookies: [Cookie], showBack: Bool = false,
        headers: [HTTPField.Name: String] = [:], user: AuthenticatedUser? = nil
    ) -> Response {
        var values: [String: Any] = ["title": title, "message": message, "show_back": showBack]
        if let user { values["user"] = user.displayName }
        return pages.render("message", values, status: status, cookies: cookies, headers: headers)
    }
}

extension RequestOrigin {
    /// The address buckets a user-code guess is charged to, each limited on its own: the IPv4
    /// address; for IPv6 its /64 (one host) and its /48 (one site), so neither a host rotating
    /// through its /64 nor a site through its /64s gets more than the per-caller budget.
    var lookupCallers: [String] {
        guard let bytes = IPAddressParser.parse(clientIP), bytes.count == 16 else { return [rateLimitKey] }
        return [rateLimitKey, hexString(bytes[0..<6]) + "::/48"]
    }
}
