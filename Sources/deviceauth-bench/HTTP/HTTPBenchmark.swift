import ArgumentParser
import DeviceAuthorization
import DeviceAuthorizationHTTP
import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import RedisClient
import ServiceLifecycle

/// `deviceauth-bench http`: `wrk` against `POST /oauth/token` for a pending code, side by side
/// with a trivial Hummingbird route answering a fixed 400 JSON body on the same machine (the
/// ceiling of the HTTP layer). Both servers run in this process; the wrk runs alternate between
/// them (`--rounds` each) and the medians are compared, so a machine whose speed drifts during
/// the run affects both sides alike. A third side, `nginx` answering the same bytes (see
/// ``NginxProcess``), is the physical ceiling of this machine for that answer.
struct HTTPBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "http",
        abstract: "wrk on the token endpoint (pending code) vs a trivial Hummingbird route."
    )

    @OptionGroup var redis: RedisOptions

    @Option(help: "Seconds per wrk run.")
    var duration: Int = 5

    @Option(help: "wrk connections.")
    var connections: Int = 64

    @Option(help: "wrk threads.")
    var threads: Int = 2

    @Option(help: "wrk runs on each side, alternating; the medians are compared.")
    var rounds: Int = 3

    @Option(help: "Redis connections of the token endpoint's client (default: the server's, one per core, at least 2).")
    var redisConnections: Int = ServerOptions.defaultRedisConnections

    @Option(
        help:
            "Where the token endpoint's connections run: event-loop (the server's default: each on its channel's loop) or global (Swift's global executor, Hummingbird's default). The token endpoint has the server's connection handling (limits, deadlines); the trivial route always runs as plain Hummingbird."
    )
    var executor: HandlerExecutor = .eventLoop

    enum HandlerExecutor: String, ExpressibleByArgument {
        case eventLoop = "event-loop"
        case global
    }

    @Option(help: "Path of wrk (default: found on PATH).")
    var wrk: String?

    @Option(help: "Path of nginx for the ceiling side (default: found on PATH or /usr/sbin/nginx; without one that side is skipped).")
    var nginx: String?

    static let clientID = "bench-http"

    func run() async throws {
        let wrkPath = try ChildProcess.locate("wrk", explicit: wrk)
        try await redis.withTarget(connectionCount: max(1, redisConnections)) { target in
            try await target.withClient { client in
                let store = DeviceCodeStore(client: client, configuration: DeviceCodeStoreConfiguration(keyPrefix: "dab", secret: Array(0..<32)))
                let issued = try await store.issue(clientID: Self.clientID, scopes: ["profile"], lifetime: .seconds(3600), interval: 0)
                let body = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&device_code=\(issued.deviceCode)&client_id=\(Self.clientID)"
                let script = try Self.writeWrkScript(body: body)
                defer { try? FileManager.default.removeItem(atPath: script) }

                let routes = try DeviceAuthorizationRoutes(
                    store: store, redis: client,
                    clients: StaticClientRegistry(clients: [RegisteredClient(clientID: Self.clientID, displayName: "Bench", allowedScopes: ["profile"], pollingInterval: 0)]),
                    users: DevelopmentLoginAuthenticator(users: [:], secret: Array(0..<32)),
                    tokens: try await JWTTokenIssuer(issuer: "http://127.0.0.1", privateKeyPEM: nil),
                    configuration: DeviceAuthorizationHTTPConfiguration(secret: Array(0..<32)))
                let rounds = max(1, self.rounds)
                let (oursRuns, ceilingRuns, floorRuns, nginxRuns) = try await Self.serve(
                    routes.makeRouter(), server: .deviceAuthorization(limits: ConnectionLimits(), onEventLoops: executor == .eventLoop)
                ) { oursPort in
                    // Check the route really answers authorization_pending before measuring.
                    let check = try await ChildProcess.run("/usr/bin/curl", ["-s", "-d", body, "http://127.0.0.1:\(oursPort)/oauth/token"])
                    guard check.standardOutput.contains("authorization_pending") else {
                        throw ChildProcess.Failure(description: "token endpoint answered \(check.standardOutput)")
                    }
                    // The baselines answer with exactly this body.
                    let pendingBody = check.standardOutput
                    let nginx = try await startNginx(body: pendingBody)
                    do {
                        // The floor of any poll: the trivial route plus one Redis round trip
                        // (PING through the same client), on the token endpoint's connection handling.
                        let floorRouter = Self.roundTripRouter(body: pendingBody, client: client)
                        let runs = try await Self.serve(floorRouter, server: .deviceAuthorization(limits: ConnectionLimits(), onEventLoops: executor == .eventLoop)) { floorPort in
                            try await Self.serve(Self.trivialRouter(body: pendingBody)) { trivialPort in
                                var ours: [WrkResult] = []
                                var ceiling: [WrkResult] = []
                                var floor: [WrkResult] = []
                                var edge: [WrkResult] = []
                                for round in 1...rounds {
                                    Console.progress("round \(round)/\(rounds), token endpoint: wrk -t\(threads) -c\(connections) -d\(duration)s")
                                    ours.append(try await measured(client) { try await runWrk(wrkPath, script: script, port: oursPort) })
                                    Console.progress("round \(round)/\(rounds), trivial route: wrk -t\(threads) -c\(connections) -d\(duration)s")
                                    ceiling.append(try await measured(client) { try await runWrk(wrkPath, script: script, port: trivialPort) })
                                    Console.progress("round \(round)/\(rounds), trivial route + one Redis PING: wrk -t\(threads) -c\(connections) -d\(duration)s")
                                    floor.append(try await measured(client) { try await runWrk(wrkPath, script: script, port: floorPort) })
                                    if let nginx {
                                        Console.progress("round \(round)/\(rounds), nginx: wrk -t\(threads) -c\(connections) -d\(duration)s")
                                        edge.append(try await measured(client, cpu: nginx.cpuSeconds) { try await runWrk(wrkPath, script: script, port: nginx.port) })
                                    }
                                }
                                return (ours, ceiling, floor, edge)
                            }
                        }
                        await nginx?.stop()
                        return runs
                    } catch {
                        await nginx?.stop()
                        throw error
                    }
                }

                let ours = WrkResult.median(oursRuns)
                let ceiling = WrkResult.median(ceilingRuns)
                BenchComparison(
                    name: "http.token.pending.c\(connections)", ours: ours.requestsPerSecond, baseline: ceiling.requestsPerSecond, unit: "req/s",
                    detail:
                        "medians of \(rounds) alternating runs; ours (handlers on the \(executor == .eventLoop ? "event loops" : "global executor")): p50=\(ours.p50) p99=\(ours.p99) runs=\(ours.runs) | baseline (trivial Hummingbird route, same body): p50=\(ceiling.p50) p99=\(ceiling.p99) runs=\(ceiling.runs) | wrk -t\(threads) -c\(connections) -d\(duration)s, \(max(1, redisConnections)) Redis connection(s), \(target.summary)"
                ).print()
                // CPU per request: this process (both servers live here, but only one is under
                // wrk at a time) and Redis, each over its wrk runs; lower is better.
                BenchComparison(
                    name: "http.token.pending.node_cpu", ours: WrkResult.median(oursRuns, by: \.nodeMicrosecondsPerRequest).nodeMicrosecondsPerRequest,
                    baseline: WrkResult.median(ceilingRuns, by: \.nodeMicrosecondsPerRequest).nodeMicrosecondsPerRequest, unit: "us/request",
                    detail:
                        "node CPU per request (lower is better), medians; token endpoint runs: \(oursRuns.map { String(format: "%.1f", $0.nodeMicrosecondsPerRequest) }.joined(separator: ",")) | trivial route runs: \(ceilingRuns.map { String(format: "%.1f", $0.nodeMicrosecondsPerRequest) }.joined(separator: ",")) | voluntary context switches per request: token \(String(format: "%.2f", WrkResult.median(oursRuns, by: \.contextSwitchesPerRequest).contextSwitchesPerRequest)), trivial \(String(format: "%.2f", WrkResult.median(ceilingRuns, by: \.contextSwitchesPerRequest).contextSwitchesPerRequest)) | Redis CPU per poll: \(String(format: "%.1f", WrkResult.median(oursRuns, by: \.redisMicrosecondsPerRequest).redisMicrosecondsPerRequest)) us"
                ).print()
                // The floor: what one Redis round trip adds to the trivial route, by itself. A poll must
                // ask Redis once (the grant lives there), so the token endpoint cannot cost less.
                let floor = WrkResult.median(floorRuns)
                let floorCPU = WrkResult.median(floorRuns, by: \.nodeMicrosecondsPerRequest).nodeMicrosecondsPerRequest
                let ceilingCPU = WrkResult.median(ceilingRuns, by: \.nodeMicrosecondsPerRequest).nodeMicrosecondsPerRequest
                BenchComparison(
                    name: "http.redis_round_trip.c\(connections)", ours: floor.requestsPerSecond, baseline: ceiling.requestsPerSecond, unit: "req/s",
                    detail:
                        "the floor of any poll: the trivial route plus one PING through the same RedisClient, on the token endpoint's connection handling; medians of \(rounds) runs: \(floor.runs) req/s, p50=\(floor.p50) p99=\(floor.p99) | token endpoint / floor: \(String(format: "%.2f", ours.requestsPerSecond / max(1, floor.requestsPerSecond)))x"
                ).print()
                BenchComparison(
                    name: "http.redis_round_trip.node_cpu", ours: floorCPU, baseline: ceilingCPU, unit: "us/request",
                    detail:
                        "node CPU per request (lower is better), medians; floor runs: \(floorRuns.map { String(format: "%.1f", $0.nodeMicrosecondsPerRequest) }.joined(separator: ",")) | the token endpoint's poll on top of the floor: \(String(format: "%+.1f", WrkResult.median(oursRuns, by: \.nodeMicrosecondsPerRequest).nodeMicrosecondsPerRequest - floorCPU)) us"
                ).print()
                if !nginxRuns.isEmpty {
                    let edge = WrkResult.median(nginxRuns)
                    let edgeCPU = WrkResult.median(nginxRuns, by: \.nodeMicrosecondsPerRequest).nodeMicrosecondsPerRequest
                    BenchComparison(
                        name: "http.token.pending.vs_nginx", ours: ours.requestsPerSecond, baseline: edge.requestsPerSecond, unit: "req/s",
                        detail:
                            "the machine's ceiling for this answer: nginx (\(Self.nginxWorkers) workers, no logging) returning the same 400 JSON; medians of \(rounds) runs: \(edge.runs) req/s, p50=\(edge.p50) p99=\(edge.p99), nginx CPU per request \(String(format: "%.1f", edgeCPU)) us (runs: \(nginxRuns.map { String(format: "%.1f", $0.nodeMicrosecondsPerRequest) }.joined(separator: ","))); the trivial Hummingbird route reached \(String(format: "%.2f", ceiling.requestsPerSecond / max(1, edge.requestsPerSecond)))x of it"
                    ).print()
                }
            }
        }
    }

    /// nginx answering `body` for the ceiling side, or `nil` (with a message) when none is installed.
    private func startNginx(body: String) async throws -> NginxProcess? {
        let path: String
        if let nginx {
            path = try ChildProcess.locate("nginx", explicit: nginx)
        } else if let found = (try? ChildProcess.locate("nginx")) ?? (FileManager.default.isExecutableFile(atPath: "/usr/sbin/nginx") ? "/usr/sbin/nginx" : nil) {
            path = found
        } else {
            Console.progress("nginx not found (Debian: apt-get install nginx): the ceiling side is skipped")
            return nil
        }
        return try await NginxProcess.start(executable: path, body: body, workers: Self.nginxWorkers)
    }

    /// One nginx worker per core, as nginx's `worker_processes auto` would choose.
    static var nginxWorkers: Int { ProcessInfo.processInfo.activeProcessorCount }

    /// Runs one wrk measurement and adds the CPU the server (this process, or `cpu` for another
    /// one) and Redis spent during it, per request.
    private func measured(_ client: RedisClient, cpu: (() -> Double)? = nil, _ run: () async throws -> WrkResult) async throws -> WrkResult {
        let serverCPU = cpu ?? { ProcessUsage.now().cpuSeconds }
        let nodeBefore = ProcessUsage.now()
        let serverBefore = serverCPU()
        let redisBefore = try await Self.redisCPUSeconds(client)
        var result = try await run()
        let nodeAfter = ProcessUsage.now()
        let serverAfter = serverCPU()
        let redisAfter = try await Self.redisCPUSeconds(client)
        let requests = max(1, result.requests)
        result.nodeMicrosecondsPerRequest = (serverAfter - serverBefore) * 1e6 / requests
        result.contextSwitchesPerRequest = Double(nodeAfter.voluntaryContextSwitches - nodeBefore.voluntaryContextSwitches) / requests
        result.redisMicrosecondsPerRequest = (redisAfter - redisBefore) * 1e6 / requests
        return result
    }

    /// `used_cpu_user + used_cpu_sys` from `INFO cpu` (of the node that serves the bench's keys
    /// on a cluster, which is the only one the token endpoint's poll touches).
    private static func redisCPUSeconds(_ client: RedisClient) async throws -> Double {
        let info = try await client.send("INFO", "cpu").string ?? ""
        var total = 0.0
        for line in info.split(whereSeparator: \.isNewline) where line.hasPrefix("used_cpu_user:") || line.hasPrefix("used_cpu_sys:") {
            total += line.split(separator: ":").last.flatMap { Double($0.trimmingCharacters(in: .whitespaces)) } ?? 0
        }
        return total
    }

    /// The ceiling: a route that answers the token endpoint's 400 JSON `body` without doing anything.
    static func trivialRouter(body: String) -> Router<BasicRequestContext> {
        let trivial = Router()
        let bytes = ByteBuffer(string: body)
        trivial.post("/oauth/token") { _, _ -> Response in
            Response(
                status: .badRequest, headers: [.contentType: "application/json", .cacheControl: "no-store"],
                body: .init(byteBuffer: bytes))
        }
        return trivial
    }

    /// The floor: the trivial route's answer after one Redis round trip (`PING`) through `client`.
    static func roundTripRouter(body: String, client: RedisClient) -> Router<DeviceAuthorizationRequestContext> {
        let router = Router(context: DeviceAuthorizationRequestContext.self)
        let bytes = ByteBuffer(string: body)
        router.post("/oauth/token") { _, _ -> Response in
            _ = try await client.send("PING")
            return Response(
                status: .badRequest, headers: [.contentType: "application/json", .cacheControl: "no-store"],
                body: .init(byteBuffer: bytes))
        }
        return router
    }

    struct WrkResult {
        var requestsPerSecond: Double
        var p50: String
        var p99: String
        /// Every run's req/s, for the detail line (only in medians).
        var runs: String = ""
        /// Requests wrk completed in the run.
        var requests: Double = 0
        /// CPU of this process per request during the run, in microseconds.
        var nodeMicrosecondsPerRequest: Double = 0
        /// Voluntary context switches of this process per request during the run.
        var contextSwitchesPerRequest: Double = 0
        /// CPU of Redis per request during the run, in microseconds.
        var redisMicrosecondsPerRequest: Double = 0

        /// The run with the median of `value` (the lower middle one for an even count).
        static func median(_ results: [WrkResult], by value: KeyPath<WrkResult, Double>) -> WrkResult {
            results.sorted { $0[keyPath: value] < $1[keyPath: value] }[(results.count - 1) / 2]
        }

        /// The run with the median req/s (the lower middle one for an even count), with all rates listed.
        static func median(_ results: [WrkResult]) -> WrkResult {
            let sorted = results.sorted { $0.requestsPerSecond < $1.requestsPerSecond }
            var middle = sorted[(sorted.count - 1) / 2]
            middle.runs = results.map { String(Int($0.requestsPerSecond.rounded())) }.joined(separator: ",")
            return middle
        }
    }

    private func runWrk(_ wrkPath: String, script: String, port: Int) async throws -> WrkResult {
        let output = try await ChildProcess.run(wrkPath, ["-t\(threads)", "-c\(connections)", "-d\(duration)s", "--latency", "-s", script, "http://127.0.0.1:\(port)/oauth/token"])
        let text = output.standardOutput
        func value(after label: String) -> String? {
            guard let line = text.split(separator: "\n").first(where: { $0.trimmingCharacters(in: .whitespaces).hasPrefix(label) }) else { return nil }
            return line.split(separator: " ", omittingEmptySubsequences: true).dropFirst(label.split(separator: " ").count).first.map(String.init)
        }
        guard let rate = value(after: "Requests/sec:").flatMap(Double.init) else {
            throw ChildProcess.Failure(description: "could not read wrk's output: \(text) \(output.standardError)")
        }
        // "  123456 requests in 5.00s, 12.34MB read"
        let requests =
            text.split(separator: "\n").first(where: { $0.contains(" requests in ") })
            .flatMap { $0.split(separator: " ").first }.flatMap { Double($0) } ?? rate * Double(duration)
        return WrkResult(requestsPerSecond: rate, p50: value(after: "50%") ?? "?", p99: value(after: "99%") ?? "?", requests: requests)
    }

    /// Runs `router` on a free loopback port while `body` runs, then shuts the server down
    /// gracefully (cancelling it instead made Hummingbird log shutdown errors).
    /// `server`: the server's connection handling for ours, plain Hummingbird for the baseline.
    private static func serve<Context: RequestContext, Result: Sendable>(
        _ router: Router<Context>, server: HTTPServerBuilder = .http1(), _ body: @Sendable (Int) async throws -> Result
    ) async throws -> Result where Context.Source == ApplicationRequestContextSource {
        let port = try freeLoopbackPort()
        let logger = Logger(label: "bench-http")
        let app = Application(router: router, server: server, configuration: .init(address: .hostname("127.0.0.1", port: port)), logger: logger)
        let services = ServiceGroup(configuration: .init(services: [app], logger: logger))
        return try await withThrowingTaskGroup(of: Result?.self) { group in
            group.addTask {
                try await services.run()
                return nil
            }
            do {
                for _ in 0..<100 where !canConnect(port: port) { try await Task.sleep(for: .milliseconds(50)) }
                let result = try await body(port)
                await services.triggerGracefulShutdown()
                try await group.waitForAll()
                return result
            } catch {
                await services.triggerGracefulShutdown()
                group.cancelAll()
                throw error
            }
        }
    }

    /// CPU time (user + system, every thread) and voluntary context switches of this process.
    struct ProcessUsage {
        var cpuSeconds: Double
        var voluntaryContextSwitches: Int

        static func now() -> ProcessUsage {
            var usage = rusage()
            getrusage(RUSAGE_SELF.rawValue, &usage)
            let seconds = Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
            return ProcessUsage(cpuSeconds: seconds, voluntaryContextSwitches: usage.ru_nvcsw)
        }
    }

    private static func writeWrkScript(body: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("deviceauth-wrk-\(UUID().uuidString).lua").path
        let lua = """
            wrk.method = "POST"
            wrk.body = "\(body)"
            wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
            """
        try lua.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }
}
