import Foundation
import RedisClient
import Testing

/// Expects `url` to be refused with ``RedisError/Code/invalidURL`` and a message containing `reason`.
func expectInvalidURL(_ url: String, saying reason: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(sourceLocation: sourceLocation) {
        _ = try RedisClientConfiguration(url: url)
    } throws: { error in
        guard let error = error as? RedisError else { return false }
        return error.code == .invalidURL && error.message.contains(reason)
    }
}

@Suite("Redis URLs: cluster seeds, server-free")
struct ClusterSeedURLTests {
    /// Cluster seeds are read as strictly as sentinel addresses (one parser): an IPv6 address
    /// without brackets is refused instead of its last group becoming the port, a port is digits
    /// only, and the message says which.
    @Test(arguments: [
        ("redis+cluster://::1", "in brackets"),
        ("redis+cluster://fe80::1:7000", "in brackets"),
        ("redis+cluster://127.0.0.1:7000,::1:7001", "in brackets"),
        ("redis+cluster://127.0.0.1:+5", "bad port"),
        ("redis+cluster://127.0.0.1:-1", "bad port"),
        ("redis+cluster://127.0.0.1:", "bad port"),
        ("redis+cluster://127.0.0.1:0", "out of range"),
        ("redis+cluster://[::1", "unclosed"),
        ("redis+cluster://[::1]7000", "expected [ipv6]:port"),
        ("redis+cluster://:7000", "empty host"),
        ("redis+cluster://a%0d%0aPING:7000", "not a host name"),
    ])
    func refusesMalformedClusterSeeds(url: String, reason: String) {
        expectInvalidURL(url, saying: reason)
    }
}
