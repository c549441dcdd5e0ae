import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Where the tests' servers come from: the shared test server `make test` starts
/// (Tests/Support/with-redis.sh exports `REDIS_URL` and `REDIS_PORT`) and the `redis-server` to run
/// for private ones (`REDIS_SERVER_BIN`, Valkey's in `make test-valkey`). The one place tests read them.
public enum TestEnvironment {
    /// The shared test server's URL.
    public static var redisURL: String {
        guard let url = ProcessInfo.processInfo.environment["REDIS_URL"] else {
            fatalError("REDIS_URL is not set: run the tests with `make test`, which starts redis-server (Tests/Support/with-redis.sh)")
        }
        return url
    }

    /// The shared test server's URL, or `nil` outside `make test`.
    public static var redisURLIfSet: String? { ProcessInfo.processInfo.environment["REDIS_URL"] }

    /// The shared test server's TCP port.
    public static var redisPort: Int { Int(ProcessInfo.processInfo.environment["REDIS_PORT"] ?? "") ?? 6379 }

    /// The `redis-server` (or `valkey-server`) of private servers.
    public static var redisServerExecutable: String { ProcessInfo.processInfo.environment["REDIS_SERVER_BIN"] ?? "/usr/bin/redis-server" }
}

/// A private `redis-server` on loopback for tests that stop, restart, stall or reconfigure a
/// server (which must not touch the shared one): no persistence, its own directory and log, the
/// `DEBUG` command enabled. The one launcher of private servers in the Swift tests.
///
/// Started on a free port, it starts again on another when the port was taken before it could bind
/// (``waitUntilListening(port:process:attempts:)`` tells). ``stop()`` is a SIGKILL (the tests want
/// to survive crashes; the test process may also block SIGTERM for children); `deinit` stops it and
/// removes its directory.
public final class RedisServerProcess: @unchecked Sendable {
    public private(set) var port: Int
    public let directory: URL
    public let executable: String
    /// Extra `redis-server` arguments, kept across ``start()``s.
    public var arguments: [String]
    /// TLS only (`--port 0 --tls-port <port>` and these certificate options), when set.
    public var tlsArguments: [String]?
    private var process: Process?

    /// Starts the server: on `port`, or on a free one.
    public init(
        port: Int? = nil, arguments: [String] = [], tlsArguments: [String]? = nil,
        executable: String = TestEnvironment.redisServerExecutable
    ) async throws {
        self.port = try port ?? freeLoopbackPort()
        self.arguments = arguments
        self.tlsArguments = tlsArguments
        self.executable = executable
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("deviceauth-private-redis-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var attempt = 1
        while true {
            do {
                try await start()
                return
            } catch is TestProcessError where port == nil && attempt < 3 {
                // The free port was taken before the server bound it: another one.
                attempt += 1
                self.port = try freeLoopbackPort()
            }
        }
    }

    public var url: String { "redis://127.0.0.1:\(port)" }

    /// Starts (or restarts, after ``stop()``) the server on ``port``.
    public func start() async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        let listen = tlsArguments.map { ["--port", "0", "--tls-port", "\(port)"] + $0 } ?? ["--port", "\(port)"]
        process.arguments =
            ["--bind", "127.0.0.1"] + listen + [
                "--dir", directory.path, "--save", "", "--appendonly", "no", "--enable-debug-command", "local",
                "--logfile", directory.appendingPathComponent("redis.log").path,
            ] + arguments
        try process.run()
        self.process = process
        guard try await waitUntilListening(port: port, process: process, attempts: 400) else {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
            self.process = nil
            let log = (try? String(contentsOf: directory.appendingPathComponent("redis.log"), encoding: .utf8)) ?? ""
            throw TestProcessError("\(executable) did not start on port \(port): \(log.split(separator: "\n").last ?? "no log")")
        }
    }

    /// Sends `signal` to the server (`SIGSTOP`/`SIGCONT` to stall and resume it).
    public func send(signal: Int32) {
        guard let process, process.isRunning else { return }
        kill(process.processIdentifier, signal)
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    public func stop() {
        guard let process, process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.process = nil
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: directory)
    }
}
