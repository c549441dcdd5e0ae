import ArgumentParser
import RedisClient

/// The Redis server a benchmark talks to, as both our client and `redis-benchmark` see it.
struct RedisTarget: Sendable {
    /// How our ``RedisClient`` connects.
    var configuration: RedisClientConfiguration
    /// The `redis-benchmark` arguments that reach the same server, database and user.
    ///
    /// A password goes on the command line (`-a`): redis-benchmark has no other way to take it.
    var redisBenchmarkArguments: [String]
    /// The absolute path of `redis-benchmark`.
    var redisBenchmarkPath: String
    /// A short description for detail lines, such as `private redis-server 127.0.0.1:40123`.
    var summary: String

    /// A `redis-benchmark` runner aimed at this server.
    var redisBenchmark: RedisBenchmarkTool {
        RedisBenchmarkTool(executable: redisBenchmarkPath, connectionArguments: redisBenchmarkArguments)
    }

    init(configuration: RedisClientConfiguration, redisBenchmarkPath: String, summary: String) {
        self.configuration = configuration
        self.redisBenchmarkPath = redisBenchmarkPath
        self.summary = summary
        var arguments: [String]
        switch configuration.endpoint {
        case .tcp(let host, let port): arguments = ["-h", host, "-p", "\(port)"]
        case .unix(let path): arguments = ["-s", path]
        }
        if configuration.database != 0 { arguments += ["--dbnum", "\(configuration.database)"] }
        if let username = configuration.username { arguments += ["--user", username] }
        if let password = configuration.password { arguments += ["-a", password] }
        if let tls = configuration.tls {
            arguments += ["--tls"]
            if let caFile = tls.caFile { arguments += ["--cacert", caFile] }
            if let certificate = tls.certificateFile, let key = tls.privateKeyFile { arguments += ["--cert", certificate, "--key", key] }
            if let name = tls.serverName { arguments += ["--sni", name] }
        }
        self.redisBenchmarkArguments = arguments
    }
}

/// Options shared by every benchmark that needs Redis: which server, and where the tools are.
struct RedisOptions: ParsableArguments {
    @Option(
        name: .customLong("redis-url"),
        help: ArgumentHelp(
            "Benchmark an existing server (redis://host:port/db or unix:///path) instead of a private one.",
            valueName: "url"))
    var redisURL: String?

    @Option(
        name: .customLong("redis-server"),
        help: ArgumentHelp(
            "The redis-server to start when --redis-url is not given (default: found on PATH).",
            valueName: "path"))
    var redisServerPath: String?

    @Option(
        name: .customLong("redis-benchmark"),
        help: ArgumentHelp(
            "The redis-benchmark used as the baseline (default: found on PATH).",
            valueName: "path"))
    var redisBenchmarkPath: String?

    @Flag(help: "Start the private redis-server with TLS only (a CA and certificate made with openssl) and connect with rediss:// (redis-benchmark --tls).")
    var tls = false

    func validate() throws {
        if let redisURL {
            do { _ = try RedisClientConfiguration(url: redisURL) } catch { throw ValidationError("--redis-url: \(error)") }
        }
    }

    /// Runs `body` against the server of `--redis-url`, or else against a private `redis-server`
    /// started for it, which is stopped afterwards whether `body` succeeds or throws.
    /// - Parameter connectionCount: the connection count to put in the target's configuration.
    func withTarget<Result>(connectionCount: Int, _ body: (RedisTarget) async throws -> Result) async throws -> Result {
        let benchmarkPath = try ChildProcess.locate("redis-benchmark", explicit: redisBenchmarkPath)
        if let redisURL {
            var configuration = try RedisClientConfiguration(url: redisURL)
            configuration.connectionCount = connectionCount
            return try await body(
                RedisTarget(
                    configuration: configuration, redisBenchmarkPath: benchmarkPath,
                    summary: "redis \(configuration.endpoint)"))
        }
        let server = try await RedisServerProcess.start(executable: ChildProcess.locate("redis-server", explicit: redisServerPath), tls: tls)
        Console.progress("started private redis-server on 127.0.0.1:\(server.port)\(tls ? " (TLS only)" : "")")
        var configuration = RedisClientConfiguration(
            endpoint: .tcp(host: "127.0.0.1", port: server.port),
            connectionCount: connectionCount)
        if tls { configuration.tls = RedisTLSConfiguration(caFile: server.caFile) }
        let target = RedisTarget(
            configuration: configuration, redisBenchmarkPath: benchmarkPath,
            summary: "private redis-server 127.0.0.1:\(server.port)\(tls ? " over TLS" : "")")
        do {
            let result = try await body(target)
            await server.stop()
            return result
        } catch {
            await server.stop()
            throw error
        }
    }
}

extension RedisTarget {
    /// Runs `body` with a ``RedisClient`` for this target and shuts the client down afterwards,
    /// whether `body` succeeds or throws.
    func withClient<Result>(_ body: (RedisClient) async throws -> Result) async throws -> Result {
        let client = RedisClient(configuration: configuration)
        do {
            let result = try await body(client)
            client.shutdown()
            return result
        } catch {
            client.shutdown()
            throw error
        }
    }
}
