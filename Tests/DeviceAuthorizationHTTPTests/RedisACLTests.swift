import DeviceAuthorization
import DeviceAuthorizationHTTP
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import RedisClient
import Testing

/// The whole product as the restricted Redis user of `deploy/redis.conf`: the user line is read
/// from that file (so the test follows it), created on the test Redis with `ACL SETUSER` under a
/// name, password and key prefix of this test, and then the HTTP flow and the store run as it.
@Suite("Redis ACL: the deploy/redis.conf user")
struct RedisACLTests {
    /// The rules of `user <name> …` in deploy/redis.conf (`deviceauth`, `deviceauth-loader`), without the name.
    static func deployedRules(of name: String = "deviceauth") throws -> [String] {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../deploy/redis.conf").standardized.path
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let line = try #require(text.split(separator: "\n").first { $0.hasPrefix("user \(name) ") }, "no 'user \(name)' line in \(path)")
        return line.split(separator: " ").dropFirst(2).map(String.init)
    }

    @Test(
        "the flow works as the deploy user, its functions loaded by the deploy loader user (issue, rate limits, wrong codes, approve, token, readiness); EVAL, FUNCTION LOAD, CONFIG, FLUSHALL, KEYS, other prefixes and admin commands are refused"
    )
    func restrictedUser() async throws {
        guard let port = ProcessInfo.processInfo.environment["REDIS_PORT"] else {
            Issue.record("REDIS_PORT is not set: run through Tests/Support/with-redis.sh")
            return
        }
        let admin = try RedisClient(url: "redis://127.0.0.1:\(port)/0")
        defer { admin.shutdown() }
        let prefix = HTTPFixture.uniquePrefix()
        let user = "deviceauth-acl-\(prefix)"
        let password = "pw-\(UUID().uuidString)"
        // The deployed rules, with this test's password and key prefix instead of `>change-me` and `~da:*`.
        var rules = try Self.deployedRules()
        #expect(rules.contains("~da:*"), "the deployed user is limited to the default prefix da:")
        #expect(rules.contains("-@all"), "the deployed user starts from no commands")
        rules = rules.map { rule in
            if rule.hasPrefix(">") || rule.hasPrefix("#") { return ">" + password }
            if rule == "~da:*" { return "~\(prefix):*" }
            return rule
        }
        let created = try await admin.send(RedisCommand(arguments: ["ACL", "SETUSER", user, "reset"] + rules))
        #expect(created.string == "OK")
        #expect(!rules.contains("+eval") && !rules.contains("+evalsha") && !rules.contains("+config|get") && !rules.contains("+function|load"))
        let loader = "\(user)-loader"
        let loaderRules = try Self.deployedRules(of: "deviceauth-loader").map { $0.hasPrefix(">") || $0.hasPrefix("#") ? ">" + password + "-l" : $0 }
        #expect(try await admin.send(RedisCommand(arguments: ["ACL", "SETUSER", loader, "reset"] + loaderRules)).string == "OK")
        defer { Task { [admin] in _ = try? await admin.send("ACL", "DELUSER", user, loader) } }

        // The loader user loads (REPLACE) every product function up front, as a node does at start-up;
        // the flow then runs as the application user alone, which cannot load anything: a script
        // missing from ProductScripts.all fails this test with NOPERM.
        let loaderURL = "redis://\(user):\(password)@127.0.0.1:\(port)/0?function_loader_user=\(loader)&function_loader_password=\(password)-l"
        let loading = try RedisClient(url: loaderURL)
        defer { loading.shutdown() }
        try await ProductScripts.load(on: loading)
        let url = "redis://\(user):\(password)@127.0.0.1:\(port)/0"
        await #expect(throws: RedisError.self, "the application user alone may not load functions") {
            let appOnly = try RedisClient(url: url)
            defer { appOnly.shutdown() }
            try await ProductScripts.load(on: appOnly)
        }
        let fixture = try await HTTPFixture(
            trustedProxies: ["127.0.0.1"], redisURL: url, keyPrefix: prefix,
            rateLimits: RateLimitSettings(deviceAuthorizationsPerIP: RateLimit(2, per: .seconds(3600))))
        defer { fixture.shutdown() }
        // The start-up check reads the policy from INFO (other tests may change the policy itself meanwhile).
        #expect(await !fixture.store.checkRedisConfiguration().contains { $0.hasPrefix("Could not read") }, "the maxmemory-policy check works without CONFIG GET")
        try await fixture.app.test(.live) { client in
            #expect(try await client.execute(uri: "/readyz", method: .get).status == .ok)
            let issued = try await client.issue(clientID: "fast")
            _ = try await client.issue(clientID: "fast")
            RateLimitTests.expectLimited(try await client.postForm("/oauth/device_authorization", [("client_id", "fast")]))
            expectOAuthError(try await client.poll(deviceCode: issued.deviceCode, clientID: "fast"), "authorization_pending")
            expectOAuthError(try await client.poll(deviceCode: "abcd." + String(repeating: "A", count: 43), clientID: "fast"), "invalid_grant")
            let browser = Browser()
            try await browser.logIn(client)
            #expect(try await browser.lookup(client, "BBBB-BBBB").status == .notFound)
            let page = try await browser.lookup(client, "\(issued.userCode)")
            #expect(page.status == .ok)
            let approved = try await browser.decide(client, "approve", on: page)
            #expect(approved.status == .ok)
            let token = try await client.poll(deviceCode: issued.deviceCode, clientID: "fast")
            #expect(token.status == .ok, "\(token.text)")
            // The kept answer, sent again, and a replay, as that user too.
            expectSameToken(try await client.poll(deviceCode: issued.deviceCode, clientID: "fast"), as: token)
            expectOAuthError(try await client.poll(deviceCode: issued.deviceCode, clientID: "other-cli"), "invalid_grant")
            // Refresh tokens: create, rotate, reuse (revokes the family) run as the user too.
            // (Issued on the store: this fixture allows two device authorizations per address.)
            let refreshGrant = try await fixture.store.issue(clientID: "rt", scopes: ["profile"], interval: 0)
            try await fixture.store.approve(userCode: refreshGrant.userCode, userID: "alice")
            let redeemed = try await client.poll(deviceCode: refreshGrant.deviceCode, clientID: "rt")
            let refreshable = try #require(redeemed.json["refresh_token"] as? String, "\(redeemed.text)")
            let rotated = try await client.refresh(refreshable, clientID: "rt")
            #expect(rotated.status == .ok, "\(rotated.text)")
            expectOAuthError(try await client.refresh(refreshable, clientID: "rt"), "invalid_grant")
            expectOAuthError(try await client.refresh(try #require(rotated.json["refresh_token"] as? String), clientID: "rt"), "invalid_grant")
        }
        // The reference model's methods run as the user too.
        let grant = try await fixture.store.issue(clientID: "tv", scopes: [])
        let code = try #require(try await fixture.store.find(deviceCode: grant.deviceCode))
        _ = try await fixture.store.checkRateLimit(code, intervalSeconds: 5)
        try await fixture.store.updatePollTime(code)
        try await fixture.store.deny(code)

        // What the user must not do.
        let refused: [[String]] = [
            ["FLUSHALL"], ["FLUSHDB"], ["KEYS", "*"], ["SCAN", "0"], ["GET", "other:secret"], ["SET", "other:x", "1"],
            ["DEL", "\(prefix):x"], ["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"], ["CONFIG", "REWRITE"], ["DEBUG", "SLEEP", "0"],
            ["SHUTDOWN", "NOSAVE"], ["ACL", "LIST"], ["CLIENT", "LIST"], ["CLIENT", "KILL", "TYPE", "normal"], ["SCRIPT", "FLUSH"], ["MONITOR"],
            ["SUBSCRIBE", "x"], ["MIGRATE", "127.0.0.1", "1", "\(prefix):x", "0", "1"], ["EVAL", "return redis.call('GET', KEYS[1])", "1", "other:secret"],
            ["EVAL", "return redis.call('FLUSHALL')", "1", "\(prefix):x"], ["EVAL", "return redis.call('KEYS', '*')", "0"],
            ["EVAL", "return redis.call('DEL', KEYS[1])", "1", "\(prefix):x"], ["EVAL", "return 1", "0"], ["EVALSHA", String(repeating: "0", count: 40), "0"],
            ["SCRIPT", "LOAD", "return 1"], ["FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('x', function() while true do end end)"],
            ["FUNCTION", "FLUSH"], ["FUNCTION", "DELETE", "l" + ProductScripts.all[0].sha1], ["CONFIG", "GET", "maxmemory-policy"],
        ]
        let restricted = fixture.redis
        _ = try await admin.send("SET", "other:secret", "s3cret")
        defer { Task { [admin] in _ = try? await admin.send("DEL", "other:secret") } }
        for command in refused {
            do {
                let reply = try await restricted.send(RedisCommand(arguments: command))
                Issue.record("\(command.joined(separator: " ")) was allowed: \(reply)")
            } catch let error as RedisError {
                #expect(
                    error.message.contains("NOPERM") || error.message.lowercased().contains("permission") || error.message.contains("can't run"),
                    "\(command.joined(separator: " ")): \(error.message)")
            }
        }
        #expect(try await admin.send("GET", "other:secret").string == "s3cret")
        #expect(try await admin.send("DBSIZE").int ?? 0 > 0, "nothing was flushed")
    }
}
