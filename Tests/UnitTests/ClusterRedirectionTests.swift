import Logging
import Testing

@testable import RedisClient

/// Cluster mode's decisions without a cluster: which slot a command goes to, and what a node's
/// error reply makes the router do (follow, retry, load the script, or fail).
@Suite("Cluster routing logic, server-free")
struct ClusterRedirectionTests {
    static func router() -> ClusterRouter {
        ClusterRouter(configuration: RedisClientConfiguration(clusterSeeds: [.tcp(host: "10.0.0.1", port: 7000)]), logger: Logger(label: "test"))
    }

    @Test func hashSlotsFollowTheClusterSpecification() {
        // The specification's CRC16/XMODEM check value, and its hash-tag rules.
        #expect(RedisHashSlot.slot(of: "123456789") == 0x31C3 % 16384)
        #expect(RedisHashSlot.slot(of: "foo") == 12182)
        #expect(RedisHashSlot.slot(of: "{user1000}.following") == RedisHashSlot.slot(of: "{user1000}.followers"))
        #expect(RedisHashSlot.slot(of: "foo{}{bar}") == RedisHashSlot.slot(of: "foo{}{bar}"))
        #expect(RedisHashSlot.slot(of: "foo{}{bar}") != RedisHashSlot.slot(of: "bar"), "an empty tag is no tag: the whole key hashes")
        #expect(RedisHashSlot.slot(of: "foo{{bar}}zap") == RedisHashSlot.slot(of: "{bar"))
    }

    @Test func commandsRouteByTheirKeysAndRefuseKeysInTwoSlots() throws {
        #expect(try CommandKeys.slot(of: RedisCommand("GET", "foo")) == 12182)
        #expect(try CommandKeys.slot(of: RedisCommand("PING")) == nil)
        #expect(try CommandKeys.slot(of: RedisCommand("FCALL", "f", "2", "{a}1", "{a}2", "arg")) == RedisHashSlot.slot(of: "a"))
        #expect(try CommandKeys.slot(of: RedisCommand("MSET", "{t}x", "1", "{t}y", "2")) == RedisHashSlot.slot(of: "t"))
        #expect(throws: RedisError.self) { try CommandKeys.slot(of: RedisCommand("MGET", "a", "b")) }
        #expect(try CommandKeys.slot(of: RedisCommand(arguments: ["INFO"], routingKey: "foo")) == 12182)
    }

    @Test func redirectsAreFollowedAndMalformedOnesAreNot() {
        let router = Self.router()
        guard case .moved(let slot, let endpoint) = router.recovery(for: RedisError(.server, "MOVED 3999 127.0.0.1:6381")) else {
            Issue.record("MOVED not followed")
            return
        }
        #expect(slot == 3999 && endpoint == .tcp(host: "127.0.0.1", port: 6381))
        guard case .ask(let target) = router.recovery(for: RedisError(.server, "ASK 3999 10.0.0.2:7001")) else {
            Issue.record("ASK not followed")
            return
        }
        #expect(target == .tcp(host: "10.0.0.2", port: 7001))
        // An empty host is the answering node's: here the seed's host.
        guard case .moved(_, let sameHost) = router.recovery(for: RedisError(.server, "MOVED 1 :7002")) else {
            Issue.record("MOVED with an empty host not followed")
            return
        }
        #expect(sameHost == .tcp(host: "10.0.0.1", port: 7002))
        for hostile in ["MOVED 16384 127.0.0.1:6381", "MOVED -1 127.0.0.1:6381", "MOVED 1 127.0.0.1:99999", "MOVED 1 127.0.0.1", "MOVED x y", "ASK"] {
            guard case .fail(refresh: true) = router.recovery(for: RedisError(.server, hostile)) else {
                Issue.record("\(hostile) was not refused")
                continue
            }
        }
    }

    @Test func retriableAnswersAreRetriedAndOthersFail() {
        let router = Self.router()
        guard case .retryLater(refresh: false) = router.recovery(for: RedisError(.server, "TRYAGAIN Multiple keys request during rehashing of slot")) else {
            Issue.record("TRYAGAIN")
            return
        }
        guard case .retryLater(refresh: true) = router.recovery(for: RedisError(.server, "CLUSTERDOWN The cluster is down")) else {
            Issue.record("CLUSTERDOWN")
            return
        }
        guard case .noScript = router.recovery(for: RedisError(.server, "ERR Function not found")) else {
            Issue.record("missing function")
            return
        }
        guard case .retryLater(refresh: true) = router.recovery(for: RedisError(.connectionFailed, "refused")) else {
            Issue.record("refused connection")
            return
        }
        guard case .fail(refresh: false) = router.recovery(for: RedisError(.server, "WRONGTYPE Operation against a key holding the wrong kind of value")) else {
            Issue.record("WRONGTYPE")
            return
        }
    }
}
