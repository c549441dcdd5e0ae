import Foundation
import RedisClient
import Synchronization
import TestProcesses
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A private CA and certificates made with `openssl` for one test: the CA itself, another CA the
/// server's certificates do not chain to, server certificates for `localhost` / `127.0.0.1`, for a
/// different host only, and an expired one (issued under `faketime` in 2020), plus a client
/// certificate for mutual TLS.
final class TestCertificates: @unchecked Sendable {
    let directory: URL

    init() async throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("deviceauth-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        // CAs valid from 2019 for 20 years, so the certificate issued in 2020 has a valid issuer.
        try await makeCA("ca")
        try await makeCA("other-ca")
        try await issue("server", by: "ca", names: "DNS:localhost,IP:127.0.0.1")
        try await issue("server2", by: "ca", names: "DNS:localhost,IP:127.0.0.1")
        try await issue("wronghost", by: "ca", names: "DNS:other.example")
        try await issue("stranger", by: "other-ca", names: "DNS:localhost,IP:127.0.0.1")
        try await issue("expired", by: "ca", names: "DNS:localhost,IP:127.0.0.1", at: "2020-01-01 00:00:00", days: 30)
        try await issue("client", by: "ca", names: "DNS:deviceauth-client", extendedUsage: "clientAuth")
        // A cluster node is a TLS client of the other nodes' buses too.
        try await issue("node", by: "ca", names: "DNS:localhost,IP:127.0.0.1", extendedUsage: "serverAuth,clientAuth")
    }

    deinit { try? FileManager.default.removeItem(at: directory) }

    func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    /// `redis-server` TLS options serving certificate `name` (its key beside it).
    func serverArguments(_ name: String, authClients: String = "no") -> [String] {
        [
            "--tls-cert-file", path("\(name).crt"), "--tls-key-file", path("\(name).key"),
            "--tls-ca-cert-file", path("ca.crt"), "--tls-auth-clients", authClients,
        ]
    }

    private func makeCA(_ name: String) async throws {
        try await run(
            faketime: "2019-06-01 00:00:00",
            [
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", path("\(name).key"), "-out", path("\(name).crt"), "-days", "7300",
                "-subj", "/CN=deviceauth test \(name)",
            ])
    }

    private func issue(_ name: String, by ca: String, names: String, at time: String? = nil, days: Int = 30, extendedUsage: String = "serverAuth") async throws {
        try await run([
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", path("\(name).key"), "-out", path("\(name).csr"), "-subj", "/CN=\(name)",
        ])
        let extensions = path("\(name).ext")
        try "subjectAltName=\(names)\nextendedKeyUsage=\(extendedUsage)\n".write(toFile: extensions, atomically: true, encoding: .utf8)
        try await run(
            faketime: time,
            [
                "x509", "-req", "-in", path("\(name).csr"), "-CA", path("\(ca).crt"), "-CAkey", path("\(ca).key"),
                "-CAcreateserial", "-out", path("\(name).crt"), "-days", "\(days)", "-extfile", extensions,
            ])
    }

    private func run(faketime: String? = nil, _ arguments: [String]) async throws {
        let process = Process()
        if let faketime {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/faketime")
            process.arguments = [faketime, "/usr/bin/openssl"] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
            process.arguments = arguments
        }
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        let status = try await runToExit(process)
        guard status == 0 else {
            throw RedisError(.invalidArgument, "openssl \(arguments.prefix(2).joined(separator: " ")) failed with \(status)")
        }
    }
}

/// `rediss://` against Debian's `redis-server` with `--tls-port` and a CA made by the test.
@Suite(.serialized) struct TLSTests {
    let certificates: TestCertificates

    init() async throws {
        certificates = try await TestCertificates()
    }

    private func client(_ server: PrivateRedisServer, host: String = "127.0.0.1", options: String = "", connections: Int = 2) throws -> RedisClient {
        var configuration = try RedisClientConfiguration(url: "rediss://\(host):\(server.port)?tls_ca_file=\(certificates.path("ca.crt"))\(options)")
        configuration.connectionCount = connections
        configuration.connectTimeout = .seconds(5)
        return RedisClient(configuration: configuration)
    }

    @Test("commands, scripts and pipelines over TLS, verified against the test's CA, by IP and by name")
    func worksOverTLS() async throws {
        let server = try await PrivateRedisServer(tlsArguments: certificates.serverArguments("server"))
        defer { server.stop() }
        for host in ["127.0.0.1", "localhost"] {
            let client = try client(server, host: host)
            defer { client.shutdown() }
            #expect(try await client.send("PING") == .simpleString("PONG"))
            try await client.send("SET", "tls:key", "over TLS")
            #expect(try await client.send("GET", "tls:key").string == "over TLS")
            let script = RedisScript("return redis.call('INCR', KEYS[1])")
            #expect(try await client.eval(script, keys: ["tls:count"]).int != nil)
            let commands = (0..<50).map { _ in RedisCommand("INCR", "tls:pipelined") }
            let counts: [Int] = await client.pipeline(commands).compactMap { try? $0.get().int }
            let offset = host == "localhost" ? 50 : 0
            #expect(counts == Array((1 + offset)...(50 + offset)))
            // 64 concurrent callers on two connections: replies stay in order under pipelining.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<64 {
                    group.addTask {
                        try await client.send("SET", "tls:c\(index)", "v\(index)")
                        let value = try await client.send("GET", "tls:c\(index)").string
                        #expect(value == "v\(index)")
                    }
                }
                try await group.waitForAll()
            }
        }
    }

    /// A certificate from another CA, and an expired one (issued under `faketime` in 2020).
    @Test("a server certificate from another CA, or expired, is refused with tlsFailed", arguments: ["stranger", "expired"])
    func untrustedCertificate(name: String) async throws {
        let server = try await PrivateRedisServer(tlsArguments: certificates.serverArguments(name))
        defer { server.stop() }
        let client = try client(server)
        defer { client.shutdown() }
        let error = await expectRedisError { try await client.send("PING") }
        #expect(error?.code == .tlsFailed)
        #expect(error?.message.contains("certificate verify failed") == true, "\(error?.message ?? "")")
    }

    /// A server that closes the connection during the handshake (stopping, restarting) is a
    /// connection failure, retried like a refused connect, not a TLS failure naming certificates.
    @Test("a TLS handshake the server cuts off is connectionFailed, not tlsFailed")
    func handshakeCutOff() async throws {
        let listener = try ClosingListener()
        var configuration = try RedisClientConfiguration(url: "rediss://127.0.0.1:\(listener.port)?tls_ca_file=\(certificates.path("ca.crt"))")
        configuration.connectionCount = 1
        configuration.connectTimeout = .seconds(5)
        let client = RedisClient(configuration: configuration)
        defer { client.shutdown() }
        let error = await expectRedisError { try await client.send("PING") }
        #expect(error?.code == .connectionFailed, "\(error.map { "\($0.code): \($0.message)" } ?? "")")
        #expect(error?.message.contains("closed the connection during the TLS handshake") == true, "\(error?.message ?? "")")
    }

    @Test("a certificate for another host name is refused, by IP and with tls_server_name")
    func wrongHostName() async throws {
        let server = try await PrivateRedisServer(tlsArguments: certificates.serverArguments("wronghost"))
        defer { server.stop() }
        for options in ["", "&tls_server_name=localhost"] {
            let client = try client(server, options: options)
            defer { client.shutdown() }
            let error = await expectRedisError { try await client.send("PING") }
            #expect(error?.code == .tlsFailed, "\(options): \(error?.message ?? "")")
            #expect(
                error?.message.contains("not valid for this host name") == true || error?.message.contains("certificate verify failed") == true,
                "\(options): \(error?.message ?? "")")
        }
        // The name the certificate does carry is accepted.
        let client = try client(server, options: "&tls_server_name=other.example")
        defer { client.shutdown() }
        #expect(try await client.send("PING") == .simpleString("PONG"))
    }

    @Test("mutual TLS: a server that demands a client certificate accepts ours and refuses none")
    func mutualTLS() async throws {
        let server = try await PrivateRedisServer(tlsArguments: certificates.serverArguments("server", authClients: "yes"))
        defer { server.stop() }
        let withCertificate = try client(server, options: "&tls_cert_file=\(certificates.path("client.crt"))&tls_key_file=\(certificates.path("client.key"))")
        defer { withCertificate.shutdown() }
        #expect(try await withCertificate.send("PING") == .simpleString("PONG"))
        let without = try client(server)
        defer { without.shutdown() }
        let error = await expectRedisError { try await without.send("PING") }
        #expect(error.map { [.tlsFailed, .connectionClosed, .connectionFailed].contains($0.code) } == true, "\(error?.message ?? "")")
    }

    @Test("unreadable or mismatched TLS files and TLS options on redis:// are clear errors")
    func badConfiguration() async throws {
        let missing = RedisClient(configuration: try RedisClientConfiguration(url: "rediss://127.0.0.1:1?tls_ca_file=/nonexistent/ca.pem"))
        defer { missing.shutdown() }
        let error = await expectRedisError { try await missing.send("PING") }
        #expect(error?.code == .tlsFailed)
        #expect(error?.message.contains("/nonexistent/ca.pem") == true)
        let notPEM = RedisClient(configuration: try RedisClientConfiguration(url: "rediss://127.0.0.1:1?tls_ca_file=\(certificates.path("server.ext"))"))
        defer { notPEM.shutdown() }
        #expect(await expectRedisError { try await notPEM.send("PING") }?.code == .tlsFailed)
        #expect(throws: RedisError.self) { try RedisClientConfiguration(url: "redis://127.0.0.1:6379?tls_ca_file=/x") }
        #expect(throws: RedisError.self) { try RedisClientConfiguration(url: "rediss://127.0.0.1:6379?tls_cert_file=/x") }
        #expect(throws: RedisError.self) { try RedisClientConfiguration(url: "rediss://127.0.0.1:6379?tls_server_name=a%20b") }
        let cluster = try RedisClientConfiguration(url: "rediss+cluster://127.0.0.1:7000,127.0.0.1:7001?tls_ca_file=/ca.pem")
        #expect(cluster.tls?.caFile == "/ca.pem" && cluster.clusterSeeds.count == 2)
        #expect(try RedisClientConfiguration(url: "redis+cluster+tls://127.0.0.1:7000").tls != nil)
        #expect(try RedisClientConfiguration(url: "redis+cluster://127.0.0.1:7000").tls == nil)
    }

    /// Three primaries with `tls-cluster yes` (the bus and `CLUSTER SLOTS` speak TLS ports), made
    /// with `redis-cli --tls --cluster create`; `rediss+cluster://` routes across all three.
    @Test("a TLS-only Redis Cluster: commands and scripts are routed over TLS to every primary", .timeLimit(.minutes(2)))
    func tlsCluster() async throws {
        var nodes: [PrivateRedisServer] = []
        defer { for node in nodes { node.stop() } }
        for _ in 0..<3 {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("deviceauth-tls-cluster-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            // CLUSTER MEET reaches a node's bus on its port + 10000.
            nodes.append(
                try await PrivateRedisServer(
                    port: try freeClusterNodePort(),
                    arguments: [
                        "--cluster-enabled", "yes", "--cluster-config-file", directory.appendingPathComponent("nodes.conf").path,
                        "--tls-cluster", "yes", "--tls-replication", "yes",
                    ],
                    tlsArguments: certificates.serverArguments("node")))
        }
        let create = Process()
        // `timeout`: a cluster whose nodes cannot meet would make redis-cli wait for ever.
        create.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
        create.arguments =
            ["60", "/usr/bin/redis-cli", "--tls", "--cacert", certificates.path("ca.crt"), "--cluster", "create"]
            + nodes.map { "127.0.0.1:\($0.port)" } + ["--cluster-replicas", "0", "--cluster-yes"]
        create.standardOutput = FileHandle.nullDevice
        create.standardError = FileHandle.nullDevice
        try #require(try await runToExit(create) == 0, "redis-cli --cluster create")
        var configuration = try RedisClientConfiguration(
            url: "rediss+cluster://" + nodes.map { "127.0.0.1:\($0.port)" }.joined(separator: ",") + "?tls_ca_file=\(certificates.path("ca.crt"))")
        configuration.clusterRetryTimeout = .seconds(20)
        let client = RedisClient(configuration: configuration)
        defer { client.shutdown() }
        // The cluster state becomes ok a moment after create: CLUSTERDOWN is retried by the client.
        for index in 0..<300 { try await client.send("SET", "tls:cluster:\(index)", "\(index)") }
        for index in stride(from: 0, to: 300, by: 7) { #expect(try await client.send("GET", "tls:cluster:\(index)").string == "\(index)") }
        let script = RedisScript("return redis.call('INCR', KEYS[1])")
        for index in 0..<30 { #expect(try await client.eval(script, keys: ["tls:cluster:n\(index)"]).int == 1) }
        let primaries = try await client.primaries()
        #expect(Set(primaries) == Set(nodes.map { RedisEndpoint.tcp(host: "127.0.0.1", port: $0.port) }))
        // Every primary holds some of the keys: the commands really were spread over TLS.
        for (node, result) in await client.sendToEachPrimary(RedisCommand("DBSIZE")) {
            #expect((try? result.get().int).map { $0 > 0 } == true, "\(node)")
        }
    }

    /// The server is killed and restarted with a new certificate (new key, same CA) while 8
    /// callers keep incrementing a counter; commands that failed before being written are sent
    /// again. Every acknowledged increment is in Redis afterwards (`appendfsync always`), and the
    /// only increments the callers cannot account for are the ones in flight at the kill.
    @Test("a restart with a new certificate from the same CA under load loses nothing")
    func certificateRotationUnderLoad() async throws {
        let server = try await PrivateRedisServer(
            arguments: ["--appendonly", "yes", "--appendfsync", "always"],
            tlsArguments: certificates.serverArguments("server"))
        defer { server.stop() }
        let client = try client(server, connections: 2)
        defer { client.shutdown() }
        let acknowledged = SharedCounter()
        let uncertain = SharedCounter()
        let certificates = self.certificates
        let perCaller = 300
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    var done = 0
                    while done < perCaller {
                        do {
                            _ = try await client.send("INCR", "tls:rotation")
                            acknowledged.add()
                            done += 1
                        } catch let error as RedisError where error.code == .connectionFailed || error.code == .tlsFailed {
                            // Not written (no connection; or a handshake the stopping server cut
                            // off, "EOF during handshake"): send it again after a pause.
                            try await Task.sleep(for: .milliseconds(20))
                        } catch let error as RedisError where error.code == .connectionClosed || error.code == .timeout {
                            // In flight at the kill: it may have run; the caller moves on.
                            uncertain.add()
                            done += 1
                        }
                    }
                }
            }
            group.addTask {
                while acknowledged.value < 600 { try await Task.sleep(for: .milliseconds(5)) }
                server.stop()
                server.tlsArguments = certificates.serverArguments("server2")
                try await server.start()
            }
            try await group.waitForAll()
        }
        let stored = try #require(try await client.send("GET", "tls:rotation").string.flatMap(Int.init))
        let acked = acknowledged.value
        let maybe = uncertain.value
        print("TLS rotation under load: \(acked) acknowledged, \(maybe) in flight at the kill, \(stored) stored")
        #expect(acked + maybe == 8 * perCaller)
        #expect(stored >= acked && stored <= acked + maybe, "every acknowledged increment survived the restart")
    }
}

/// A counter many tasks add to.
final class SharedCounter: Sendable {
    private let count = Atomic<Int>(0)
    func add() { count.add(1, ordering: .relaxed) }
    var value: Int { count.load(ordering: .relaxed) }
}
