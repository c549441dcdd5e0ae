import Foundation
import RedisClient
import TestProcesses
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A real Redis Sentinel deployment on loopback for tests: one `redis-server` primary, two
/// replicas (`--replicaof`) and three `redis-sentinel` processes (quorum 2, down-after 2 s,
/// failover timeout 5 s), on free ports, in a temporary directory.
///
/// ``start(dataPassword:sentinelPassword:)`` returns once every sentinel knows the primary, both
/// replicas (linked) and the two other sentinels. ``stop()`` kills everything by pid (SIGKILL);
/// call it in a `defer`. A watchdog shell also kills every process of the topology when the test
/// process goes away (a crash, a `fatalError`), so no `redis-server` outlives the test run.
final class SentinelTopology: @unchecked Sendable {
    static let masterName = "m"
    static let sentinelExecutable = "/usr/bin/redis-sentinel"
    static let serverExecutable = "/usr/bin/redis-server"

    /// Whether Debian's `redis-sentinel` is installed (the tests are skipped without it).
    static var isAvailable: Bool { FileManager.default.isExecutableFile(atPath: sentinelExecutable) }
    /// `make test` sets DEVICEAUTH_REQUIRE_E2E=1: then a missing `redis-sentinel` is a failure.
    static var isRequired: Bool { ProcessInfo.processInfo.environment["DEVICEAUTH_REQUIRE_E2E"] == "1" }
    static let skipMessage = "redis-sentinel is not installed (apt-get install redis-sentinel, or `make deps`); DEVICEAUTH_REQUIRE_E2E=1 makes this a failure"

    let directory: URL
    /// The data nodes: the first primary, then the two replicas.
    let dataPorts: [Int]
    let sentinelPorts: [Int]
    let dataPassword: String?
    let sentinelPassword: String?
    /// TLS everywhere when set: the data nodes and sentinels listen only on TLS ports, replicate
    /// and talk to each other over TLS (`tls-replication yes`), serving the test CA's `node`
    /// certificate (`localhost`, `127.0.0.1`; server and client use).
    let certificates: TestCertificates?
    var primaryPort: Int { dataPorts[0] }
    var replicaPorts: [Int] { Array(dataPorts.dropFirst()) }
    var sentinels: [RedisEndpoint] { sentinelPorts.map { .tcp(host: "127.0.0.1", port: $0) } }

    private let lock = NSLock()
    /// Running processes by port (guarded by `lock`).
    private var processes: [Int: Process] = [:]
    private var watchdog: Process?

    private init(
        directory: URL, dataPorts: [Int], sentinelPorts: [Int], dataPassword: String?, sentinelPassword: String?,
        certificates: TestCertificates?
    ) {
        self.directory = directory
        self.dataPorts = dataPorts
        self.sentinelPorts = sentinelPorts
        self.dataPassword = dataPassword
        self.sentinelPassword = sentinelPassword
        self.certificates = certificates
    }

    /// Starts the topology and waits (a minute at most) until the sentinels know all of it.
    static func start(
        dataPassword: String? = nil, sentinelPassword: String? = nil,
        tls certificates: TestCertificates? = nil
    ) async throws -> SentinelTopology {
        guard isAvailable else {
            throw RedisError(.unsupported, "DEVICEAUTH_REQUIRE_E2E=1 but \(sentinelExecutable) is missing: apt-get install redis-sentinel")
        }
        // On tmpfs when there is one: a sentinel rewrites its config file with fsync, and an fsync
        // held up by a busy disk (seconds, on this VM) put the sentinels in TILT mode, where they
        // stop failing over for 30 s.
        let base = FileManager.default.isWritableFile(atPath: "/dev/shm") ? URL(fileURLWithPath: "/dev/shm") : FileManager.default.temporaryDirectory
        // A free port can be taken by another test's server before this topology's process binds
        // it; the process then exits ("Address already in use") and the topology starts again on
        // new ports (the launch checks that the listener is the process itself).
        var attempt = 0
        while true {
            attempt += 1
            let directory = base.appendingPathComponent("deviceauth-sentinel-\(UUID().uuidString.prefix(8))")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            var ports = Set<Int>()
            while ports.count < 6 { ports.insert(try freeLoopbackPort()) }
            let sorted = Array(ports)
            let topology = SentinelTopology(
                directory: directory, dataPorts: Array(sorted[0..<3]), sentinelPorts: Array(sorted[3..<6]),
                dataPassword: dataPassword, sentinelPassword: sentinelPassword, certificates: certificates)
            do {
                try topology.startWatchdog()
                try await topology.startServer(port: topology.primaryPort, replicaOf: nil)
                for port in topology.replicaPorts { try await topology.startServer(port: port, replicaOf: topology.primaryPort) }
                try await topology.waitUntilReplicated()
                for port in topology.sentinelPorts { try await topology.startSentinel(port: port, monitoring: topology.primaryPort, quorum: 2) }
                try await topology.waitUntilSettled()
                return topology
            } catch let error as LaunchFailure where attempt < 3 {
                print("SENTINEL topology: \(error); starting again on new ports")
                topology.stop()
            } catch {
                topology.stop()
                throw error
            }
        }
    }

    /// A process of the topology exited before it listened on its port.
    struct LaunchFailure: Error, CustomStringConvertible {
        let description: String
    }

    // MARK: Processes

    /// A shell that waits for this test process to exit and then kills every process of the
    /// topology by the pid files they wrote (each process removes nothing itself: SIGKILL).
    private func startWatchdog() throws {
        let script = """
            while kill -0 \(getpid()) 2>/dev/null; do sleep 1; done
            for f in '\(directory.path)'/*.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null; done
            rm -rf '\(directory.path)'
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", script]
        try process.run()
        watchdog = process
    }

    func startServer(port: Int, replicaOf primary: Int?) async throws {
        var arguments = [
            "--bind", "127.0.0.1", "--dir", directory.path,
            "--save", "", "--appendonly", "no", "--enable-debug-command", "local",
            // A replica syncs at once (Redis 7 waits 5 s for more replicas by default).
            "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0",
            "--pidfile", pidFile(port).path,
            "--logfile", directory.appendingPathComponent("redis-\(port).log").path,
        ]
        if let dataPassword { arguments += ["--requirepass", dataPassword, "--masterauth", dataPassword] }
        if let primary { arguments += ["--replicaof", "127.0.0.1", "\(primary)"] }
        if let certificates {
            arguments += ["--port", "0", "--tls-port", "\(port)", "--tls-replication", "yes"] + certificates.serverArguments("node")
        } else {
            arguments += ["--port", "\(port)"]
        }
        try await launch(Self.serverExecutable, arguments, port: port)
    }

    /// Starts a sentinel with a config file of its own (a sentinel rewrites its file).
    func startSentinel(port: Int, monitoring primary: Int, quorum: Int) async throws {
        var lines = [
            "bind 127.0.0.1",
            "daemonize no",
            "dir \(directory.path)",
            "pidfile \(pidFile(port).path)",
            "logfile \(directory.appendingPathComponent("sentinel-\(port).log").path)",
            "sentinel resolve-hostnames no",
            "sentinel monitor \(Self.masterName) 127.0.0.1 \(primary) \(quorum)",
            // 2 s, not 1: with 1 s the sentinels once took a just-promoted primary for down and
            // failed over a second time (Tests/Faults, sentinel-failover), losing its writes.
            "sentinel down-after-milliseconds \(Self.masterName) 2000",
            "sentinel failover-timeout \(Self.masterName) 5000",
            "sentinel parallel-syncs \(Self.masterName) 1",
        ]
        if let dataPassword { lines.append("sentinel auth-pass \(Self.masterName) \(dataPassword)") }
        // With requirepass a sentinel also authenticates with it to the other sentinels.
        if let sentinelPassword { lines.append("requirepass \(sentinelPassword)") }
        if let certificates {
            // TLS only: the sentinel's own port, and (tls-replication) its connections to the
            // data nodes and to the other sentinels, whose announced port is their TLS port.
            lines += [
                "port 0", "tls-port \(port)", "tls-replication yes", "tls-auth-clients no",
                "tls-cert-file \(certificates.path("node.crt"))", "tls-key-file \(certificates.path("node.key"))",
                "tls-ca-cert-file \(certificates.path("ca.crt"))",
            ]
        } else {
            lines.append("port \(port)")
        }
        let file = directory.appendingPathComponent("sentinel-\(port).conf")
        try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: file)
        try await launch(Self.sentinelExecutable, [file.path], port: port)
    }

    private func pidFile(_ port: Int) -> URL { directory.appendingPathComponent("\(port).pid") }

    private func launch(_ executable: String, _ arguments: [String], port: Int) async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        lock.withLock { processes[port] = process }
        guard try await waitUntilListening(port: port, process: process, attempts: 400) else {
            let log = directory.appendingPathComponent("\(executable.hasSuffix("sentinel") ? "sentinel" : "redis")-\(port).log")
            let lastLine = (try? String(contentsOf: log, encoding: .utf8))?.split(separator: "\n").last.map(String.init) ?? "no log"
            throw LaunchFailure(description: "\(executable) did not start on port \(port): \(lastLine)")
        }
    }

    /// Kills the process on `port` (SIGKILL: a crash, not a shutdown) and waits for it to exit.
    func kill(port: Int) {
        guard let process = lock.withLock({ processes.removeValue(forKey: port) }) else { return }
        if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        try? FileManager.default.removeItem(at: pidFile(port))
    }

    /// Kills every process of the topology and removes its directory.
    func stop() {
        for port in lock.withLock({ Array(processes.keys) }) { kill(port: port) }
        if let watchdog, watchdog.isRunning {
            Glibc.kill(watchdog.processIdentifier, SIGKILL)
            watchdog.waitUntilExit()
        }
        watchdog = nil
        try? FileManager.default.removeItem(at: directory)
    }

    deinit { stop() }

    // MARK: Asking

    /// A client of the data node on `port` (with the data password).
    func dataClient(port: Int) -> RedisClient {
        var configuration = RedisClientConfiguration(
            endpoint: .tcp(host: "127.0.0.1", port: port), password: dataPassword,
            connectTimeout: .seconds(2), commandTimeout: .seconds(5), connectionCount: 1)
        configuration.tls = tlsConfiguration
        return RedisClient(configuration: configuration)
    }

    /// The client side of ``certificates``: verify against the test CA.
    var tlsConfiguration: RedisTLSConfiguration? {
        certificates.map { RedisTLSConfiguration(caFile: $0.path("ca.crt")) }
    }

    /// A client of the sentinel on `port` (with the sentinel password).
    func sentinelClient(port: Int) -> RedisClient {
        var configuration = RedisClientConfiguration(
            endpoint: .tcp(host: "127.0.0.1", port: port), password: sentinelPassword,
            connectTimeout: .seconds(2), commandTimeout: .seconds(5), connectionCount: 1)
        configuration.tls = tlsConfiguration
        return RedisClient(configuration: configuration)
    }

    /// The first element of `ROLE` on the data node on `port` (`master`, `slave`).
    func role(port: Int) async throws -> String? {
        let client = dataClient(port: port)
        defer { client.shutdown() }
        return try await client.send("ROLE").array?.first?.string
    }

    /// A resolver configuration for this topology (data and sentinel passwords included).
    func configuration(
        sentinels: [RedisEndpoint]? = nil, retryTimeout: Duration = .seconds(5), checkInterval: Duration = .seconds(1),
        sentinelCredentials: RedisCredentials?? = .none, dataPassword: String?? = .none
    ) -> RedisClientConfiguration {
        let credentials = sentinelCredentials ?? sentinelPassword.map { RedisCredentials(username: nil, password: $0) }
        var configuration = RedisClientConfiguration(
            password: dataPassword ?? self.dataPassword,
            clusterRetryTimeout: retryTimeout,
            sentinel: RedisSentinelConfiguration(sentinels: sentinels ?? self.sentinels, masterName: Self.masterName, credentials: credentials),
            sentinelCheckInterval: checkInterval)
        configuration.tls = tlsConfiguration
        return configuration
    }

    /// Waits until the primary lists both replicas and each replica's link is up. A sentinel asks
    /// a node for `INFO` at once when it first learns of it and then only every 10 s: started
    /// before replication was up, a sentinel saw a replica's link down (or no replica) and
    /// needed two more 10 s rounds, which under a busy CI machine ran past the settling wait.
    private func waitUntilReplicated() async throws {
        let primary = dataClient(port: primaryPort)
        let replicas = replicaPorts.map { dataClient(port: $0) }
        defer { ([primary] + replicas).forEach { $0.shutdown() } }
        try await waitFor("the primary to list 2 replicas with their links up", timeout: .seconds(60)) {
            guard let info = try? await primary.send("INFO", "replication").string,
                info.contains("connected_slaves:2")
            else { return false }
            for replica in replicas {
                guard let info = try? await replica.send("INFO", "replication").string,
                    info.contains("master_link_status:up")
                else { return false }
            }
            return true
        }
    }

    /// Waits until every sentinel names the primary, sees both replicas linked and the two other
    /// sentinels, so a failover can happen (hello messages go out every 2 s).
    private func waitUntilSettled() async throws {
        let clients = sentinelPorts.map { sentinelClient(port: $0) }
        defer { clients.forEach { $0.shutdown() } }
        // What the last round saw, per sentinel, for the error when the wait gives up.
        var seen: [String] = []
        do {
            // The timeout is a hang guard only: two missed 10 s INFO rounds must still fit.
            try await waitFor("the sentinels to know the primary, 2 replicas and each other", timeout: .seconds(60)) {
                seen = []
                for (port, client) in zip(self.sentinelPorts, clients) {
                    seen.append(await self.settledState(of: client, port: port))
                }
                return seen.allSatisfy { $0.hasSuffix(": settled") }
            }
        } catch let error as RedisError {
            let logs = sentinelPorts.map { port in
                let log = (try? String(contentsOf: directory.appendingPathComponent("sentinel-\(port).log"), encoding: .utf8)) ?? ""
                return "sentinel-\(port).log, last lines:\n" + log.split(separator: "\n").suffix(15).joined(separator: "\n")
            }
            throw RedisError(error.code, "\(error.message); last round: \(seen.joined(separator: "; "))\n\(logs.joined(separator: "\n"))")
        }
    }

    /// What one sentinel knows of the topology: `"<port>: settled"` when it names the primary, sees
    /// both replicas linked and the two other sentinels, else what is missing.
    private func settledState(of client: RedisClient, port: Int) async -> String {
        do {
            let address = try await client.send("SENTINEL", "GET-MASTER-ADDR-BY-NAME", Self.masterName).array ?? []
            guard address.count == 2, address[1].int == primaryPort else {
                return "\(port): names \(address.compactMap(\.string)) as the primary, not \(primaryPort)"
            }
            let replicas = (try await client.send("SENTINEL", "REPLICAS", Self.masterName).array ?? []).map(Self.fields)
            let linked = replicas.filter { $0["flags"] == "slave" && $0["master-link-status"] == "ok" }
            guard linked.count == 2 else {
                return "\(port): replicas \(replicas.map { "\($0["port"] ?? "?") flags=\($0["flags"] ?? "?") link=\($0["master-link-status"] ?? "?")" })"
            }
            let others = try await client.send("SENTINEL", "SENTINELS", Self.masterName).array ?? []
            guard others.count == 2 else {
                return "\(port): knows \(others.count) other sentinels: \(others.map { Self.fields($0)["port"] ?? "?" })"
            }
            return "\(port): settled"
        } catch {
            return "\(port): \(error)"
        }
    }

    /// A flat `[key, value, key, value…]` reply of `SENTINEL REPLICAS` as a dictionary.
    static func fields(_ entry: RedisValue) -> [String: String] {
        guard let items = entry.array else { return [:] }
        var result: [String: String] = [:]
        var index = 0
        while index + 1 < items.count {
            if let key = items[index].string, let value = items[index + 1].string { result[key] = value }
            index += 2
        }
        return result
    }
}

/// Polls `condition` until it holds; `timeout` is only a hang guard (no test asserts a duration).
func waitFor(
    _ what: String, timeout: Duration = .seconds(30), every interval: Duration = .milliseconds(100),
    _ condition: () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: interval)
    }
    throw RedisError(.timeout, "gave up after \(timeout) waiting for \(what)")
}
