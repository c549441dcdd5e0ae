import Foundation
import Synchronization
import TestProcesses
import Testing

@testable import RedisClient

#if canImport(Glibc)
    import Glibc
#endif

/// What a resolver's switch handler was called with, in order.
final class SwitchLog: Sendable {
    private let entries = Mutex<[(old: RedisEndpoint, new: RedisEndpoint, at: ContinuousClock.Instant)]>([])

    func record(_ old: RedisEndpoint, _ new: RedisEndpoint) {
        entries.withLock { $0.append((old, new, .now)) }
    }

    var all: [(old: RedisEndpoint, new: RedisEndpoint, at: ContinuousClock.Instant)] { entries.withLock { $0 } }
}

private func loopback(_ port: Int) -> RedisEndpoint { .tcp(host: "127.0.0.1", port: port) }

/// The resolver against a real Sentinel deployment (SentinelTopology: a primary, two replicas,
/// three sentinels). One topology at a time: each is six processes on a shared 2-core machine.
@Suite(
    "Redis Sentinel: SentinelResolver on a real primary, 2 replicas and 3 sentinels", .serialized,
    .enabled(if: SentinelTopology.isAvailable || SentinelTopology.isRequired, Comment(rawValue: SentinelTopology.skipMessage)))
struct SentinelTests {
    @Test(.timeLimit(.minutes(2)))
    func findsThePrimaryAndRoleSaysMaster() async throws {
        let topology = try await SentinelTopology.start()
        defer { topology.stop() }

        // Two resolvers stand for two API nodes; 200 concurrent first calls share one resolution each.
        let resolvers = try (0..<2).map { _ in try SentinelResolver(configuration: topology.configuration()) }
        defer { resolvers.forEach { $0.shutdown() } }
        let answers = try await withThrowingTaskGroup(of: RedisEndpoint.self) { group in
            for index in 0..<200 { group.addTask { try await resolvers[index % 2].primary() } }
            return try await group.reduce(into: [RedisEndpoint: Int]()) { $0[$1, default: 0] += 1 }
        }
        #expect(answers == [loopback(topology.primaryPort): 200])
        #expect(resolvers.allSatisfy { $0.cachedPrimary == loopback(topology.primaryPort) })
        #expect(try await topology.role(port: topology.primaryPort) == "master")

        // A dead sentinel first in the list costs nothing but a note.
        let deadFirst = try SentinelResolver(configuration: topology.configuration(sentinels: [loopback(try freeLoopbackPort())] + topology.sentinels))
        defer { deadFirst.shutdown() }
        #expect(try await deadFirst.primary() == loopback(topology.primaryPort))

        // The data node accepts writes there (what a user would notice), and its replicas are replicas.
        let primary = topology.dataClient(port: topology.primaryPort)
        defer { primary.shutdown() }
        #expect(try await primary.send("SET", "sentinel:test:\(UUID().uuidString.prefix(8))", "v").string == "OK")
        for port in topology.replicaPorts { #expect(try await topology.role(port: port) == "slave") }
    }

    @Test(.timeLimit(.minutes(2)))
    func aReplicaIsNeverTakenForThePrimary() async throws {
        let topology = try await SentinelTopology.start()
        defer { topology.stop() }
        let resolver = try SentinelResolver(configuration: topology.configuration())
        defer { resolver.shutdown() }

        // Handed a replica's address, the ROLE check refuses it with a typed error naming the role.
        for port in topology.replicaPorts {
            let error = await expectRedisError { try await resolver.verifyPrimary(loopback(port)) }
            #expect(error?.code == .primaryUnavailable)
            #expect(error?.message.contains("ROLE says slave of 127.0.0.1:\(topology.primaryPort)") == true)
        }
        try await resolver.verifyPrimary(loopback(topology.primaryPort))
        // A write to a replica (a demoted primary) is refused with READONLY, which invalidates.
        let replica = topology.dataClient(port: topology.replicaPorts[0])
        defer { replica.shutdown() }
        let readOnly = await expectRedisError { try await replica.send("SET", "sentinel:readonly", "v") }
        #expect(readOnly.map(SentinelResolver.invalidatesPrimary) == true)

        // A stale sentinel: it monitors a master named `m` at an address that is a replica (of a
        // primary of its own, outside this topology). Listed first, it is asked first; its answer
        // fails the ROLE check and the next sentinel's answer is taken.
        let stalePrimaryPort = try freeLoopbackPort()
        var staleReplicaPort = try freeLoopbackPort()
        while staleReplicaPort == stalePrimaryPort { staleReplicaPort = try freeLoopbackPort() }
        try await topology.startServer(port: stalePrimaryPort, replicaOf: nil)
        try await topology.startServer(port: staleReplicaPort, replicaOf: stalePrimaryPort)
        let staleSentinelPort = try freeLoopbackPort()
        try await topology.startSentinel(port: staleSentinelPort, monitoring: staleReplicaPort, quorum: 2)
        try await waitFor("the stale replica to say slave") { (try? await topology.role(port: staleReplicaPort)) == "slave" }

        let staleFirst = try SentinelResolver(configuration: topology.configuration(sentinels: [loopback(staleSentinelPort)] + topology.sentinels))
        defer { staleFirst.shutdown() }
        #expect(try await staleFirst.primary() == loopback(topology.primaryPort))

        // Only the stale sentinel: no primary, and the error says why.
        let staleOnly = try SentinelResolver(configuration: topology.configuration(sentinels: [loopback(staleSentinelPort)], retryTimeout: .seconds(1)))
        defer { staleOnly.shutdown() }
        let error = await expectRedisError { _ = try await staleOnly.primary() }
        #expect(error?.code == .primaryUnavailable)
        #expect(error?.message.contains("master 'm'") == true)
        #expect(
            error?.message.contains("sentinel 127.0.0.1:\(staleSentinelPort) names 127.0.0.1:\(staleReplicaPort): 127.0.0.1:\(staleReplicaPort) is not a primary: ROLE says slave")
                == true)
        #expect(staleOnly.cachedPrimary == nil)
    }

    /// SIGKILL the primary: the sentinels promote a replica; `primary()` after `invalidate`
    /// answers the promoted replica, and `run()` reports the switch (old, new) exactly once.
    @Test(.timeLimit(.minutes(2)))
    func followsAFailover() async throws {
        let topology = try await SentinelTopology.start()
        defer { topology.stop() }
        let old = loopback(topology.primaryPort)

        let log = SwitchLog()
        let follower = try SentinelResolver(
            configuration: topology.configuration(checkInterval: .milliseconds(200)),
            onSwitch: { log.record($0, $1) })
        // Another node that only reacts to errors: invalidate, then ask again; it waits out the
        // failover within its retry timeout (30 s here, as a hang guard).
        let asker = try SentinelResolver(configuration: topology.configuration(retryTimeout: .seconds(30)))
        defer {
            follower.shutdown()
            asker.shutdown()
        }
        #expect(try await follower.primary() == old)
        #expect(try await asker.primary() == old)

        let running = Task { try await follower.run() }
        defer { running.cancel() }

        let killedAt = ContinuousClock.now
        topology.kill(port: topology.primaryPort)
        asker.invalidate(old)
        let promoted = try await asker.primary()
        let askerRecovered = ContinuousClock.now - killedAt

        #expect(promoted != old)
        #expect(topology.replicaPorts.map(loopback).contains(promoted))
        guard case .tcp(_, let promotedPort) = promoted else {
            Issue.record("not a TCP endpoint: \(promoted)")
            return
        }
        #expect(try await topology.role(port: promotedPort) == "master")

        try await waitFor("run() to report the switch") { !log.all.isEmpty }
        let switches = log.all
        #expect(switches.count == 1)
        #expect(switches.first?.old == old && switches.first?.new == promoted)
        #expect(follower.cachedPrimary == promoted)
        // A late error from a connection to the old primary does not undo the switch.
        follower.invalidate(old)
        #expect(follower.cachedPrimary == promoted)
        // The asker never ran `run()`: its switch was found by `primary()`; no handler was set.

        // The promoted node takes writes.
        let client = topology.dataClient(port: promotedPort)
        defer { client.shutdown() }
        #expect(try await client.send("SET", "sentinel:failover:\(UUID().uuidString.prefix(8))", "v").string == "OK")

        let followerRecovered = (switches.first?.at ?? .now) - killedAt
        print(
            "SENTINEL failover: primary 127.0.0.1:\(topology.primaryPort) SIGKILLed; primary() after invalidate answered \(promoted) after \(askerRecovered); run() (check every 200 ms) reported the switch after \(followerRecovered)"
        )
    }

    /// The protocol the pool follows, under load on two nodes: 40 writers per node ask their
    /// resolver for the primary, INCR there, and invalidate it after an error that says it may be
    /// gone. The primary is SIGKILLed while they write: both nodes write to the promoted replica
    /// again, and every error is one the failover explains (no other code, no crash).
    @Test(.timeLimit(.minutes(2)))
    func writersOnTwoNodesFollowAFailover() async throws {
        let topology = try await SentinelTopology.start()
        defer { topology.stop() }
        let old = loopback(topology.primaryPort)
        let key = "sentinel:writers:\(UUID().uuidString.prefix(8))"

        final class Node: Sendable {
            let resolver: SentinelResolver
            let clients = Mutex<[RedisEndpoint: RedisClient]>([:])
            let successes = Mutex<[RedisEndpoint: Int]>([:])
            let firstSuccess = Mutex<[RedisEndpoint: ContinuousClock.Instant]>([:])
            let errors = Mutex<[String: Int]>([:])
            init(_ resolver: SentinelResolver) { self.resolver = resolver }
            func client(_ endpoint: RedisEndpoint, password: String?) -> RedisClient {
                clients.withLock { clients in
                    if let client = clients[endpoint] { return client }
                    let client = RedisClient(
                        configuration: RedisClientConfiguration(
                            endpoint: endpoint, password: password,
                            connectTimeout: .seconds(1), commandTimeout: .seconds(2)))
                    clients[endpoint] = client
                    return client
                }
            }
            func count(_ endpoint: RedisEndpoint) -> Int { successes.withLock { $0[endpoint] ?? 0 } }
            func shutdown() {
                resolver.shutdown()
                clients.withLock { $0.values.forEach { $0.shutdown() } }
            }
        }
        let nodes = try (0..<2).map { _ in Node(try SentinelResolver(configuration: topology.configuration(retryTimeout: .seconds(30)))) }
        defer { nodes.forEach { $0.shutdown() } }
        final class Flag: Sendable {
            let raised = Mutex(false)
        }
        let stop = Flag()
        let password = topology.dataPassword

        let promoted: RedisEndpoint = try await withThrowingTaskGroup(of: Void.self) { group in
            for node in nodes {
                for _ in 0..<40 {
                    group.addTask {
                        while !stop.raised.withLock({ $0 }) {
                            let endpoint: RedisEndpoint
                            do { endpoint = try await node.resolver.primary() } catch {
                                node.errors.withLock { $0["primary(): \((error as? RedisError)?.code.description ?? "\(error)")", default: 0] += 1 }
                                continue
                            }
                            do {
                                _ = try await node.client(endpoint, password: password).send("INCR", key)
                                node.successes.withLock { $0[endpoint, default: 0] += 1 }
                                node.firstSuccess.withLock { if $0[endpoint] == nil { $0[endpoint] = .now } }
                            } catch let error as RedisError {
                                node.errors.withLock { $0["\(error.code)\(error.serverErrorPrefix.map { " \($0)" } ?? "")", default: 0] += 1 }
                                if SentinelResolver.invalidatesPrimary(error) { node.resolver.invalidate(endpoint) }
                                // Back off a little, as the pool's reconnect delay does.
                                try? await Task.sleep(for: .milliseconds(20))
                            }
                        }
                    }
                }
            }
            try await waitFor("writes on the first primary from both nodes") { nodes.allSatisfy { $0.count(old) >= 200 } }
            let killedAt = ContinuousClock.now
            topology.kill(port: topology.primaryPort)
            var promoted: RedisEndpoint?
            try await waitFor("both nodes to write to a promoted replica") {
                let candidates = topology.replicaPorts.map(loopback)
                guard let target = candidates.first(where: { endpoint in nodes.allSatisfy { $0.count(endpoint) >= 200 } }) else { return false }
                promoted = target
                return true
            }
            stop.raised.withLock { $0 = true }
            try await group.waitForAll()
            guard let promoted else { throw RedisError(.timeout, "no promoted replica") }
            for (index, node) in nodes.enumerated() {
                let recovered = (node.firstSuccess.withLock { $0[promoted] } ?? .now) - killedAt
                print(
                    "SENTINEL writers: node \(index): \(node.count(old)) INCR on the old primary, \(node.count(promoted)) on \(promoted); first write there \(recovered) after the SIGKILL; errors \(node.errors.withLock { $0 }.sorted { $0.key < $1.key })"
                )
            }
            return promoted
        }

        guard case .tcp(_, let promotedPort) = promoted else {
            Issue.record("not TCP: \(promoted)")
            return
        }
        #expect(try await topology.role(port: promotedPort) == "master")
        // Only errors a failover explains: refused or lost connections to the dead primary, a
        // replica's READONLY before it was promoted, a command timeout on the dying socket.
        let explained: Set<String> = ["connectionFailed", "connectionClosed", "timeout", "server READONLY"]
        for node in nodes {
            let codes = Set(node.errors.withLock { $0.keys })
            #expect(codes.isSubset(of: explained), "unexpected errors: \(codes.subtracting(explained))")
            #expect(node.resolver.cachedPrimary == promoted)
        }
        // The counter on the promoted node counts at least every write acknowledged there.
        let client = topology.dataClient(port: promotedPort)
        defer { client.shutdown() }
        let value = try await client.send("GET", key).int ?? 0
        let acknowledged = nodes.reduce(0) { $0 + $1.count(old) + $1.count(promoted) }
        #expect(value >= nodes.reduce(0) { $0 + $1.count(promoted) })
        // Replication is asynchronous: INCRs the old primary acknowledged but had not yet sent
        // to the replica are lost with it (Redis's documented behaviour, not the client's).
        // Commands in flight when a connection died (`.connectionClosed`) may have run: they count too.
        print(
            "SENTINEL writers: \(acknowledged) INCR acknowledged, the promoted primary holds \(value): \(max(0, acknowledged - value)) acknowledged by the old primary and lost, \(max(0, value - acknowledged)) more from commands in flight when their connection died"
        )
    }

    /// Every sentinel of the topology killed: the cached primary is kept by `run()`; after
    /// `invalidate`, `primary()` fails with `primaryUnavailable` naming the master.
    @Test(.timeLimit(.minutes(2)))
    func sentinelsDownKeepTheLastPrimaryUntilInvalidated() async throws {
        let topology = try await SentinelTopology.start()
        defer { topology.stop() }
        let resolver = try SentinelResolver(configuration: topology.configuration(retryTimeout: .seconds(1)))
        defer { resolver.shutdown() }
        let primary = try await resolver.primary()
        for port in topology.sentinelPorts { topology.kill(port: port) }
        await resolver.check()
        #expect(resolver.cachedPrimary == primary)
        #expect(try await resolver.primary() == primary)
        resolver.invalidate(primary)
        let error = await expectRedisError { _ = try await resolver.primary() }
        #expect(error?.code == .primaryUnavailable)
        #expect(error?.message.contains("master 'm'") == true)
        for port in topology.sentinelPorts { #expect(error?.message.contains("sentinel 127.0.0.1:\(port):") == true) }
    }

    /// Sentinels with `requirepass` and data nodes with a password: the sentinel credentials
    /// reach the sentinels and the data password the ROLE check; a wrong one of either means no
    /// primary, never a wrong one.
    @Test(.timeLimit(.minutes(2)))
    func sentinelAndDataCredentials() async throws {
        let topology = try await SentinelTopology.start(
            dataPassword: "data-pw-\(UUID().uuidString.prefix(6))",
            sentinelPassword: "sentinel-pw-\(UUID().uuidString.prefix(6))")
        defer { topology.stop() }
        let good = try SentinelResolver(configuration: topology.configuration())
        defer { good.shutdown() }
        #expect(try await good.primary() == loopback(topology.primaryPort))

        let noSentinelPassword = try SentinelResolver(configuration: topology.configuration(retryTimeout: .milliseconds(300), sentinelCredentials: .some(nil)))
        defer { noSentinelPassword.shutdown() }
        let unauthenticated = await expectRedisError { _ = try await noSentinelPassword.primary() }
        #expect(unauthenticated?.code == .primaryUnavailable)
        #expect(unauthenticated?.message.contains("NOAUTH") == true)

        let wrongDataPassword = try SentinelResolver(configuration: topology.configuration(retryTimeout: .milliseconds(300), dataPassword: .some("bad-data-pw-71x")))
        defer { wrongDataPassword.shutdown() }
        let refused = await expectRedisError { _ = try await wrongDataPassword.primary() }
        #expect(refused?.code == .primaryUnavailable)
        #expect(refused?.message.contains("authentication with Redis at 127.0.0.1:\(topology.primaryPort) failed") == true)
        #expect(!(refused?.message.contains("bad-data-pw-71x") ?? true))
        #expect(!(refused?.message.contains(topology.dataPassword!) ?? true))

        // A data user without `+role` (as deploy/redis.conf's user has today) cannot verify the
        // primary: the error says so instead of a primary being taken unverified.
        let admin = topology.dataClient(port: topology.primaryPort)
        defer { admin.shutdown() }
        try await admin.send("ACL", "SETUSER", "app-no-role", "on", ">app-pw", "~*", "+@all", "-role")
        var noRole = topology.configuration(retryTimeout: .milliseconds(300))
        noRole.username = "app-no-role"
        noRole.password = "app-pw"
        let withoutRole = try SentinelResolver(configuration: noRole)
        defer { withoutRole.shutdown() }
        let denied = await expectRedisError { _ = try await withoutRole.primary() }
        #expect(denied?.code == .primaryUnavailable)
        #expect(denied?.message.contains("NOPERM") == true)
    }
}

/// The resolver without a Sentinel deployment: nothing answering, hostile replies.
@Suite("Redis Sentinel: no sentinel reachable, hostile sentinel replies")
struct SentinelFailureTests {
    /// Two closed ports and a listener that never answers: 100 concurrent callers on two
    /// resolvers each get `primaryUnavailable` after the retry timeout, naming the master and
    /// what each sentinel did.
    @Test(.timeLimit(.minutes(1)))
    func allSentinelsDownIsPrimaryUnavailable() async throws {
        let silent = try SilentListener()
        let closed = [try freeLoopbackPort(), try freeLoopbackPort()]
        let sentinels = closed.map(loopback) + [loopback(silent.port)]
        let configuration = RedisClientConfiguration(
            connectTimeout: .milliseconds(300), clusterRetryTimeout: .seconds(1),
            sentinel: RedisSentinelConfiguration(sentinels: sentinels, masterName: "orders-primary"))
        let resolvers = try (0..<2).map { _ in try SentinelResolver(configuration: configuration) }
        defer { resolvers.forEach { $0.shutdown() } }
        let errors = await withTaskGroup(of: RedisError?.self) { group in
            for index in 0..<100 {
                group.addTask {
                    do {
                        _ = try await resolvers[index % 2].primary()
                        return nil
                    } catch { return error as? RedisError }
                }
            }
            return await group.reduce(into: [RedisError?]()) { $0.append($1) }
        }
        #expect(errors.count == 100)
        #expect(errors.allSatisfy { $0?.code == .primaryUnavailable })
        let message = errors.first??.message ?? ""
        #expect(message.contains("master 'orders-primary'"))
        for port in closed { #expect(message.contains("sentinel 127.0.0.1:\(port): cannot connect")) }
        #expect(message.contains("sentinel 127.0.0.1:\(silent.port): Redis did not answer in time"))
        withExtendedLifetime(silent) {}
    }

    @Test func shutDownResolverRefusesAtOnce() async throws {
        let resolver = try SentinelResolver(
            configuration: RedisClientConfiguration(
                sentinel: RedisSentinelConfiguration(sentinels: [loopback(try freeLoopbackPort())], masterName: "m")))
        resolver.shutdown()
        let error = await expectRedisError { _ = try await resolver.primary() }
        #expect(error?.code == .shutdown)
        try await resolver.run()  // returns at once
    }

    @Test func whichErrorsInvalidateThePrimary() {
        #expect(SentinelResolver.invalidatesPrimary(RedisError(.connectionFailed, "cannot connect: Connection refused")))
        #expect(SentinelResolver.invalidatesPrimary(RedisError(.connectionClosed, "Redis closed the connection")))
        #expect(SentinelResolver.invalidatesPrimary(RedisError(.server, "READONLY You can't write against a read only replica.")))
        #expect(!SentinelResolver.invalidatesPrimary(RedisError(.server, "ERR wrong number of arguments")))
        #expect(!SentinelResolver.invalidatesPrimary(RedisError(.server, "NOSCRIPT No matching script")))
        #expect(!SentinelResolver.invalidatesPrimary(RedisError(.timeout, "Redis did not answer in time")))
        #expect(!SentinelResolver.invalidatesPrimary(RedisError(.shutdown, "shut down")))
    }

    @Test func parsesTheMasterAddressReply() throws {
        let good = RedisValue.array([.bulkString(Array("10.0.0.7".utf8)), .bulkString(Array("6380".utf8))])
        #expect(try SentinelResolver.masterAddress(from: good, masterName: "m") == .tcp(host: "10.0.0.7", port: 6380))
        let v6 = RedisValue.array([.bulkString(Array("::1".utf8)), .bulkString(Array("6379".utf8))])
        #expect(try SentinelResolver.masterAddress(from: v6, masterName: "m") == .tcp(host: "::1", port: 6379))
        #expect { try SentinelResolver.masterAddress(from: .null, masterName: "m") } throws: { error in
            (error as? RedisError)?.code == .primaryUnavailable && (error as? RedisError)?.message.contains("'m'") == true
        }
    }

    private static func address(_ host: [UInt8], _ port: String) -> RedisValue {
        .array([.bulkString(host), .bulkString(Array(port.utf8))])
    }

    private static func address(_ host: String, _ port: String) -> RedisValue { address(Array(host.utf8), port) }

    static let hostileReplies: [RedisValue] = {
        var replies: [RedisValue] = [
            .simpleString("OK"),
            .error("ERR No such master with that name"),
            .integer(6379),
            .bulkString(Array("127.0.0.1:6379".utf8)),
            .array([]),
            .array([.bulkString(Array("127.0.0.1".utf8))]),
            .array([.bulkString(Array("127.0.0.1".utf8)), .bulkString(Array("6379".utf8)), .bulkString(Array("x".utf8))]),
            .array([.bulkString(Array("127.0.0.1".utf8)), .integer(6379)]),
        ]
        replies.append(address("", "6379"))
        replies.append(address("evil host", "6379"))
        replies.append(address("evil\r\nFLUSHALL", "6379"))
        replies.append(address("h/../x", "6379"))
        replies.append(address([0xFF, 0xFE], "6379"))
        replies.append(address(String(repeating: "a", count: 254), "6379"))
        for port in ["0", "65536", "-1", "+80", "80 ", "99999999999999999999", ""] {
            replies.append(address("127.0.0.1", port))
        }
        return replies
    }()

    /// Replies a broken or hostile sentinel might send: each is refused with a typed error, none
    /// becomes an endpoint, and none is echoed into the message.
    @Test(arguments: hostileReplies)
    func refusesHostileMasterAddressReplies(reply: RedisValue) {
        #expect {
            try SentinelResolver.masterAddress(from: reply, masterName: "m")
        } throws: { error in
            guard let error = error as? RedisError else { return false }
            return error.code == .protocolError && !error.message.contains("evil") && !error.message.contains("FLUSHALL")
        }
    }
}

@Suite("Redis Sentinel: cancellation")
struct SentinelCancellationTests {
    /// Sentinels that never answer and a retry timeout of 10 minutes: a cancelled caller of
    /// `primary()` gets `CancellationError` at once (a shutdown after 30 s is the hang guard),
    /// while another caller keeps waiting until the resolver is shut down.
    @Test(.timeLimit(.minutes(1)))
    func aCancelledCallerLeavesAtOnce() async throws {
        let silent = try SilentListener()
        let resolver = try SentinelResolver(
            configuration: RedisClientConfiguration(
                connectTimeout: .milliseconds(200), clusterRetryTimeout: .seconds(600),
                sentinel: RedisSentinelConfiguration(sentinels: [loopback(silent.port)], masterName: "m")))
        // Hang guard: were cancellation ignored, the shutdown after 30 s would end the wait with
        // `.shutdown`, and the expectation below would fail instead of the run hanging.
        let guardTask = Task {
            try await Task.sleep(for: .seconds(30))
            resolver.shutdown()
        }
        defer { guardTask.cancel() }
        let cancelled = Task { try await resolver.primary() }
        let other = Task { try await resolver.primary() }
        try await Task.sleep(for: .milliseconds(300))
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { try await cancelled.value }
        // The other caller is still waiting; shutting down releases it with a typed error.
        resolver.shutdown()
        let error = await expectRedisError { _ = try await other.value }
        #expect(error?.code == .shutdown)
        withExtendedLifetime(silent) {}
    }
}

/// `RedisClient` itself in Sentinel mode (`redis+sentinel://`): every connect asks the resolver,
/// a lost primary is invalidated, commands that certainly did not run (a refused connect,
/// `READONLY`) are sent again, and `run()` follows the switch.
@Suite(.serialized) struct SentinelClientTests {
    /// Plain TCP, and TLS everywhere (`rediss+sentinel://`: the sentinels and the data nodes
    /// listen only on TLS ports and replicate over TLS).
    @Test(.timeLimit(.minutes(2)), arguments: [false, true])
    func twoClientsFollowAKilledPrimaryWithoutHelp(tls: Bool) async throws {
        guard SentinelTopology.isAvailable else {
            if SentinelTopology.isRequired { Issue.record(Comment(rawValue: SentinelTopology.skipMessage)) }
            return
        }
        let certificates = tls ? try await TestCertificates() : nil
        let topology = try await SentinelTopology.start(tls: certificates)
        defer { topology.stop() }
        var configuration = topology.configuration(retryTimeout: .seconds(30), checkInterval: .milliseconds(200))
        if let certificates {
            // The URL a deployment writes, with the test CA; the same sentinels and master.
            let sentinels = topology.sentinelPorts.map { "127.0.0.1:\($0)" }.joined(separator: ",")
            let url = "rediss+sentinel://\(sentinels)/\(SentinelTopology.masterName)?tls_ca_file=\(certificates.path("ca.crt"))"
            var parsed = try RedisClientConfiguration(url: url)
            #expect(parsed.sentinel == configuration.sentinel && parsed.tls == configuration.tls)
            parsed.clusterRetryTimeout = configuration.clusterRetryTimeout
            parsed.sentinelCheckInterval = configuration.sentinelCheckInterval
            configuration = parsed
            // Sentinels whose certificate does not chain to the CA given are never asked.
            var untrusting = configuration
            untrusting.tls = RedisTLSConfiguration(caFile: certificates.path("other-ca.crt"))
            untrusting.clusterRetryTimeout = .milliseconds(500)
            let resolver = try SentinelResolver(configuration: untrusting)
            defer { resolver.shutdown() }
            await #expect {
                _ = try await resolver.primary()
            } throws: { error in
                guard let error = error as? RedisError else { return false }
                print("SENTINEL TLS with a foreign CA: \(error)")
                return error.code == .primaryUnavailable && error.message.contains("certificate")
            }
        }
        configuration.connectTimeout = .seconds(1)
        configuration.commandTimeout = .seconds(2)
        let clients = (0..<2).map { _ in RedisClient(configuration: configuration) }
        defer { clients.forEach { $0.shutdown() } }
        let key = "sentinel:client:\(UUID().uuidString.prefix(8))"
        final class Tally: Sendable {
            let acknowledged = Mutex(0)
            let afterKill = Mutex(0)
            let errors = Mutex<[String: Int]>([:])
            let killed = Mutex(false)
            let stop = Mutex(false)
        }
        let tally = Tally()
        // The clients as services: `run()` runs the resolver's check loop until cancelled.
        let services = clients.map { client in Task { try await client.run() } }
        defer { services.forEach { $0.cancel() } }
        let recovered: Duration = try await withThrowingTaskGroup(of: Void.self) { group in
            for client in clients {
                for _ in 0..<20 {
                    group.addTask {
                        while !tally.stop.withLock({ $0 }) {
                            do {
                                _ = try await client.send("INCR", key)
                                tally.acknowledged.withLock { $0 += 1 }
                                if tally.killed.withLock({ $0 }) { tally.afterKill.withLock { $0 += 1 } }
                            } catch let error as RedisError {
                                tally.errors.withLock { $0["\(error.code)\(error.serverErrorPrefix.map { " \($0)" } ?? "")", default: 0] += 1 }
                            }
                        }
                    }
                }
            }
            try await waitFor("writes through both clients") { tally.acknowledged.withLock { $0 } >= 400 }
            let killedAt = ContinuousClock.now
            tally.killed.withLock { $0 = true }
            topology.kill(port: topology.primaryPort)
            try await waitFor("writes on the promoted replica", timeout: .seconds(60)) { tally.afterKill.withLock { $0 } >= 400 }
            let recovered = ContinuousClock.now - killedAt
            tally.stop.withLock { $0 = true }
            try await group.waitForAll()
            return recovered
        }
        let errors = tally.errors.withLock { $0 }
        print(
            "SENTINEL client\(tls ? " over TLS" : ""): \(tally.acknowledged.withLock { $0 }) INCR acknowledged, 400 after the SIGKILL within \(recovered); errors seen by callers: \(errors.sorted { $0.key < $1.key })"
        )
        // Refused connects and READONLY are retried inside the client: callers see only the
        // commands that were in flight on the dying connections (they may have run), and
        let explained: Set<String> = ["connectionClosed", "timeout"]
        #expect(Set(errors.keys).isSubset(of: explained), "unexpected errors: \(Set(errors.keys).subtracting(explained))")
        let primary = try await clients[0].primaries()
        #expect(primary != [.tcp(host: "127.0.0.1", port: topology.primaryPort)])
    }
}
