import Foundation
import RedisClient
import Testing

@Suite("Redis Sentinel: redis+sentinel:// URLs and RedisSentinelConfiguration")
struct SentinelURLTests {
    @Test func parsesSentinelURLs() throws {
        let full = try RedisClientConfiguration(
            url: "redis+sentinel://app:p%40ss@10.0.0.1:26380,sentinel-2.example,[::1]:26381/mymaster?db=3&sentinel_username=sent&sentinel_password=s%26p")
        let sentinel = try #require(full.sentinel)
        #expect(full.isSentinel && !full.isCluster)
        #expect(sentinel.sentinels == [.tcp(host: "10.0.0.1", port: 26380), .tcp(host: "sentinel-2.example", port: 26379), .tcp(host: "::1", port: 26381)])
        #expect(sentinel.masterName == "mymaster")
        #expect(sentinel.credentials == RedisCredentials(username: "sent", password: "s&p"))
        // The user and password of the URL are the data nodes', not the sentinels'.
        #expect(full.username == "app" && full.password == "p@ss" && full.database == 3)
        #expect(full.endpoint == .tcp(host: "10.0.0.1", port: 26380))
        #expect(full.sentinelCheckInterval == .seconds(1))

        let minimal = try RedisClientConfiguration(url: "REDIS+SENTINEL://127.0.0.1/m")
        #expect(minimal.sentinel == RedisSentinelConfiguration(sentinels: [.tcp(host: "127.0.0.1", port: 26379)], masterName: "m"))
        #expect(minimal.username == nil && minimal.password == nil && minimal.database == 0 && minimal.sentinel?.credentials == nil)

        let passwordOnly = try RedisClientConfiguration(url: "redis+sentinel://:data-pw@127.0.0.1:26379/m%2Dname?sentinel_password=only")
        #expect(passwordOnly.username == nil && passwordOnly.password == "data-pw")
        #expect(passwordOnly.sentinel?.masterName == "m-name")
        #expect(passwordOnly.sentinel?.credentials == RedisCredentials(username: nil, password: "only"))

        let scripts = try RedisClientConfiguration(url: "redis+sentinel://127.0.0.1:26379/m?script_calls=eval&function_loader_user=loader&function_loader_password=lp")
        #expect(scripts.scriptCalls == .eval && scripts.functionLoader == RedisCredentials(username: "loader", password: "lp"))

        #expect(try RedisClientConfiguration(url: "redis://127.0.0.1:6379").sentinel == nil)
        #expect(try RedisClientConfiguration(url: "redis+cluster://127.0.0.1:7000").isSentinel == false)
    }

    @Test func readsTheSentinelPasswordFromAFile() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("sentinel-pw-\(UUID().uuidString)")
        try Data("  from-file-pw \n".utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let configuration = try RedisClientConfiguration(url: "redis+sentinel://127.0.0.1/m?sentinel_username=s&sentinel_password_file=\(file.path)")
        #expect(configuration.sentinel?.credentials == RedisCredentials(username: "s", password: "from-file-pw"))

        let empty = FileManager.default.temporaryDirectory.appendingPathComponent("sentinel-pw-empty-\(UUID().uuidString)")
        try Data(" \n".utf8).write(to: empty)
        defer { try? FileManager.default.removeItem(at: empty) }
        #expect { _ = try RedisClientConfiguration(url: "redis+sentinel://127.0.0.1/m?sentinel_password_file=\(empty.path)") } throws: { error in
            (error as? RedisError)?.code == .invalidURL && (error as? RedisError)?.message.contains("cannot be read or is empty") == true
        }
    }

    @Test func configurationInCode() throws {
        let sentinels: [RedisEndpoint] = [.tcp(host: "10.0.0.5", port: 26379), .tcp(host: "10.0.0.6", port: 26379)]
        let configuration = RedisClientConfiguration(
            password: "data",
            sentinel: RedisSentinelConfiguration(sentinels: sentinels, masterName: "cache", credentials: RedisCredentials(username: nil, password: "sentinel-secret")),
            sentinelCheckInterval: .milliseconds(250))
        #expect(configuration.isSentinel && configuration.endpoint == sentinels[0])
        #expect(configuration.sentinelCheckInterval == .milliseconds(250))
        // Passwords are never printed.
        #expect(!"\(configuration.sentinel!)".contains("sentinel-secret"))

        #expect { _ = try SentinelResolver(configuration: RedisClientConfiguration()) } throws: { error in
            (error as? RedisError)?.code == .invalidArgument
        }
        #expect { _ = try SentinelResolver(configuration: RedisClientConfiguration(sentinel: RedisSentinelConfiguration(sentinels: [], masterName: "m"))) } throws: { error in
            (error as? RedisError)?.code == .invalidArgument
        }
    }

    /// Each malformed URL fails with `.invalidURL` (TLS: `.unsupported`) and a message that says
    /// what is wrong, and no message repeats the password in the URL.
    @Test(arguments: [
        ("redis+sentinel://127.0.0.1:26379", "no master name"),
        ("redis+sentinel://127.0.0.1:26379/", "no master name"),
        ("redis+sentinel://127.0.0.1:26379?db=1", "no master name"),
        ("redis+sentinel:///m", "empty host"),
        ("redis+sentinel://:26379/m", "empty host"),
        ("redis+sentinel://a:1,,b:2/m", "empty host"),
        ("redis+sentinel://a:1,/m", "empty host"),
        ("redis+sentinel://127.0.0.1:99999/m", "out of range"),
        ("redis+sentinel://127.0.0.1:0/m", "out of range"),
        ("redis+sentinel://127.0.0.1:x/m", "bad port"),
        ("redis+sentinel://127.0.0.1:/m", "bad port"),
        ("redis+sentinel://127.0.0.1:+5/m", "bad port"),
        ("redis+sentinel://127.0.0.1:-1/m", "bad port"),
        ("redis+sentinel://127.0.0.1:123456789012345678901234567890/m", "bad port"),
        ("redis+sentinel://fe80::1:26379/m", "in brackets"),
        ("redis+sentinel://::1/m", "in brackets"),
        ("redis+sentinel://[::1/m", "unclosed"),
        ("redis+sentinel://[::1]x/m", "expected [ipv6]:port"),
        ("redis+sentinel://a%2Fb:1/m", "not a host name"),
        ("redis+sentinel://a b:1/m", "not a host name"),
        ("redis+sentinel://a%0d%0aPING:1/m", "not a host name"),
        ("redis+cluster+sentinel://127.0.0.1:7000/m", "cannot be combined"),
        ("redis+sentinel+cluster://127.0.0.1:7000/m", "cannot be combined"),
        ("redis+sentinel://127.0.0.1/m?db=x", "not a non-negative integer"),
        ("redis+sentinel://127.0.0.1/m?db=-1", "not a non-negative integer"),
        ("redis+sentinel://127.0.0.1/m?db=1.5", "not a non-negative integer"),
        ("redis+sentinel://127.0.0.1/m?db=", "not a non-negative integer"),
        ("redis+sentinel://127.0.0.1/m?db=99999999999999999999999", "not a non-negative integer"),
        ("redis+sentinel://127.0.0.1/m/2", "give the database as ?db=N"),
        ("redis+sentinel://127.0.0.1/m%0d%0aPING", "printable ASCII"),
        ("redis+sentinel://127.0.0.1/m%20x", "printable ASCII"),
        ("redis+sentinel://127.0.0.1/m%00", "printable ASCII"),
        ("redis+sentinel://127.0.0.1/" + String(repeating: "n", count: 300), "printable ASCII"),
        ("redis+sentinel://127.0.0.1/%zz", "percent-encoding"),
        ("redis+sentinel://127.0.0.1/m?db=%zz", "not a non-negative integer"),
        ("redis+sentinel://127.0.0.1/m#fragment", "fragment"),
        ("redis+sentinel://user@127.0.0.1/m", "needs a password"),
        ("redis+sentinel://127.0.0.1/m?sentinel_username=s", "sentinel_username needs"),
        ("redis+sentinel://127.0.0.1/m?sentinel_password=a&sentinel_password_file=/etc/hostname", "not both"),
        ("redis+sentinel://127.0.0.1/m?sentinel_password_file=/nonexistent/sentinel-password", "cannot be read"),
        ("redis+sentinel://127.0.0.1/m?script_calls=lua", "script_calls"),
        ("redis+sentinel://127.0.0.1/m?function_loader_user=l", "function_loader_user needs"),
        ("redis+sentinels://127.0.0.1/m", "unknown scheme"),
        ("redis+sentinel:", "unknown scheme"),
    ])
    func refusesMalformedSentinelURLs(url: String, expected: String) {
        expectInvalidURL(url, saying: expected)
    }

    @Test(arguments: ["rediss+sentinel://", "redis+sentinel+tls://", "REDISS+SENTINEL://"])
    func sentinelOverTLSTakesTheTLSOptions(scheme: String) throws {
        let configuration = try RedisClientConfiguration(
            url: "\(scheme)10.0.0.1:26380,10.0.0.2/mymaster?db=2&tls_ca_file=/etc/ca.pem&tls_cert_file=/c.pem&tls_key_file=/k.pem&tls_server_name=redis.internal")
        #expect(configuration.sentinel?.sentinels == [.tcp(host: "10.0.0.1", port: 26380), .tcp(host: "10.0.0.2", port: 26379)])
        #expect(configuration.sentinel?.masterName == "mymaster")
        #expect(configuration.database == 2)
        #expect(
            configuration.tls
                == RedisTLSConfiguration(
                    caFile: "/etc/ca.pem", certificateFile: "/c.pem", privateKeyFile: "/k.pem",
                    serverName: "redis.internal"))
        // Without options TLS is still on, verified against the system's CAs.
        #expect(try RedisClientConfiguration(url: "\(scheme)10.0.0.1/m").tls == RedisTLSConfiguration())
    }

    @Test(arguments: [
        ("redis+sentinel://127.0.0.1/m?tls_ca_file=/etc/ca.pem", "needs TLS"),
        ("rediss+sentinel://127.0.0.1/m?tls_cert_file=/c.pem", "both tls_cert_file and tls_key_file"),
        ("rediss+sentinel://127.0.0.1/m?tls_server_name=bad%20name", "host"),
        ("rediss+sentinel+cluster://127.0.0.1/m", "cannot be combined"),
        ("redis+sentinels://127.0.0.1/m", "unknown scheme"),
    ])
    func refusesBadSentinelTLSURLs(url: String, expected: String) {
        #expect {
            _ = try RedisClientConfiguration(url: url)
        } throws: { error in
            guard let error = error as? RedisError else { return false }
            return error.code == .invalidURL && error.message.contains(expected)
        }
    }

    @Test(arguments: [
        "redis+sentinel://app:Hunter2-secret@127.0.0.1:bad/m",
        "redis+sentinel://app:Hunter2-secret@127.0.0.1:26379",
        "redis+sentinel://app:Hunter2-secret@127.0.0.1:26379/m?db=x&sentinel_password=Hunter2-secret&sentinel_password_file=/x",
        "redis+sentinel://app:Hunter2-secret@,/m",
        "redis+sentinel://app:Hunter2-secret@127.0.0.1/m%0a",
    ])
    func errorMessagesNeverRepeatAPassword(url: String) {
        do {
            _ = try RedisClientConfiguration(url: url)
            Issue.record("\(url) was accepted")
        } catch {
            #expect(!"\(error)".contains("Hunter2"))
        }
    }

    /// 20 000 URLs assembled from plausible and hostile fragments: each is a typed
    /// `.invalidURL` / `.unsupported`, or a sane Sentinel configuration (hosts that are names or
    /// addresses, ports 1–65535, a printable master name) that written back as a URL parses to
    /// the same configuration.
    @Test func fuzzedSentinelURLs() throws {
        var rng = SplitMix64(seed: 26379)
        func pick(_ options: [String]) -> String { options[Int(rng.next() % UInt64(options.count))] }
        var parsed = 0
        var refused = 0
        var reasons: [String: Int] = [:]
        for _ in 0..<20_000 {
            let scheme = pick([
                "redis+sentinel://", "redis+sentinel://", "redis+sentinel://", "REDIS+SENTINEL://", "redis+sentinel:", "rediss+sentinel://", "redis+cluster+sentinel://",
                "redis+sentinel+x://",
            ])
            let userinfo = pick(["", "user:pw@", ":pw@", "user@", "u%40x:p%3Ass@", "%ZZ:x@", ":@", "a:b:c@", "üser:pässword@"])
            var hosts: [String] = []
            for _ in 0..<[1, 1, 1, 1, 1, 2, 2, 2, 3, 3][Int(rng.next() % 10)] {
                // Mostly valid, so that multi-sentinel URLs parse often enough to check the round trip.
                hosts.append(
                    pick([
                        "127.0.0.1", "10.0.0.2", "localhost", "[::1]", "s.example.com", "127.0.0.1", "[::1]", "s-2.example",
                        "", "::1", "[", "host name", "%41", "a%2Fb",
                    ])
                        + pick([
                            "", ":26379", ":65535", ":1", ":26380", "", ":26379",
                            ":0", ":65536", ":-1", ":abc", ":", ":+1", ":99999999999999999999",
                        ]))
            }
            let path = pick(["/m", "/mymaster", "/m", "/a.b", "", "/", "/mymaster", "/m/1", "/%zz", "/m%0d%0a", "/m%20x", "/m-1.b_c", "//m"])
            let query = pick([
                "", "?db=2", "?db=-3", "?db=x", "?sentinel_password=sp", "?sentinel_username=su&sentinel_password=sp",
                "?sentinel_username=su", "?db=1&db=2", "?", "#frag", "?script_calls=eval", "?sentinel_password_file=/nonexistent",
            ])
            var url = scheme + userinfo + hosts.joined(separator: ",") + path + query
            if rng.next() % 10 == 0 {
                var characters = Array(url)
                characters[Int(rng.next() % UInt64(characters.count))] = Character(pick(["%", " ", "\u{0}", "é", "@", "/", "?", "[", ",", ":"]))
                url = String(characters)
            }
            let configuration: RedisClientConfiguration
            do {
                configuration = try RedisClientConfiguration(url: url)
            } catch let error as RedisError {
                #expect(error.code == .invalidURL || error.code == .unsupported, "\(url.debugDescription): \(error)")
                refused += 1
                reasons[String(error.message.prefix(24)), default: 0] += 1
                continue
            }
            // Mutations can turn the scheme into another one (redis:, unix:); only Sentinel is checked here.
            guard let sentinel = configuration.sentinel else { continue }
            parsed += 1
            #expect(!sentinel.sentinels.isEmpty && configuration.database >= 0 && (configuration.username == nil || configuration.password != nil))
            #expect(sentinel.masterName.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F } && !sentinel.masterName.isEmpty, "\(url.debugDescription)")
            var hostList: [String] = []
            for endpoint in sentinel.sentinels {
                guard case .tcp(let host, let port) = endpoint else {
                    Issue.record("\(url.debugDescription): \(endpoint)")
                    continue
                }
                #expect(!host.isEmpty && RedisEndpoint.ports.contains(port), "\(url.debugDescription)")
                #expect(
                    host.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || ".-_:".unicodeScalars.contains($0)) },
                    "\(url.debugDescription): host \(host.debugDescription)")
                hostList.append(host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)")
            }
            var allowed = CharacterSet.alphanumerics
            allowed.insert(charactersIn: "-._~")
            func escape(_ text: String) -> String { text.addingPercentEncoding(withAllowedCharacters: allowed)! }
            let credentials = configuration.password.map { (configuration.username.map(escape) ?? "") + ":" + escape($0) + "@" } ?? ""
            var canonical =
                "\(configuration.tls == nil ? "redis" : "rediss")+sentinel://\(credentials)\(hostList.joined(separator: ","))/\(escape(sentinel.masterName))?db=\(configuration.database)"
            if let sentinelCredentials = sentinel.credentials {
                canonical += "&sentinel_password=\(escape(sentinelCredentials.password))"
                if let user = sentinelCredentials.username { canonical += "&sentinel_username=\(escape(user))" }
            }
            let again = try RedisClientConfiguration(url: canonical)
            #expect(
                again.sentinel == sentinel && again.username == configuration.username && again.password == configuration.password
                    && again.database == configuration.database && again.tls == configuration.tls, "\(url.debugDescription) → \(canonical.debugDescription)")
        }
        #expect(parsed > 200 && refused > 1_000, "both outcomes reached: \(parsed) parsed, \(refused) refused: \(reasons.sorted { $0.value > $1.value }.prefix(8))")
    }
}
