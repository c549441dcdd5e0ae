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
        ("redis+sentinel://fe80::1:26379/m", "bad port"),
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
        #expect {
            _ = try RedisClientConfiguration(url: url)
        } throws: { error in
            guard let error = error as? RedisError else { return false }
            return error.code == .invalidURL && error.message.contains(expected)
        }
    }

    @Test(arguments: ["rediss+sentinel://127.0.0.1/m", "redis+sentinel+tls://127.0.0.1/m"])
    func refusesSentinelOverTLS(url: String) {
        #expect {
            _ = try RedisClientConfiguration(url: url)
        } throws: { error in
            (error as? RedisError)?.code == .unsupported
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
}
