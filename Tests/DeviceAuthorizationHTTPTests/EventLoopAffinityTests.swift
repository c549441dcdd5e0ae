import DeviceAuthorizationHTTP
import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOPosix
import RedisClient
import ServiceLifecycle
import Testing

/// The server's connection handling (`HTTPServerBuilder.deviceAuthorization`, what
/// `deviceauth-server` listens with) runs each connection's handlers on that connection's event
/// loop, also after awaiting a Redis reply; with `onEventLoops: false` (Hummingbird's way) they
/// run on Swift's global executor.
@Suite("Handlers on the connection's event loop")
struct EventLoopAffinityTests {
    /// A context that remembers its connection's loop.
    struct LoopContext: RequestContext {
        var coreContext: CoreRequestContextStorage
        let channelLoop: any EventLoop
        init(source: ApplicationRequestContextSource) {
            coreContext = .init(source: source)
            channelLoop = source.channel.eventLoop
        }
    }

    /// "same", "other" (another loop) or "none" (not on a loop), before and after a Redis round trip.
    static func router(redis: RedisClient) -> Router<LoopContext> {
        let router = Router(context: LoopContext.self)
        router.get("/where") { _, context -> String in
            func place() -> String {
                guard let loop = MultiThreadedEventLoopGroup.currentEventLoop else { return "none" }
                return loop === context.channelLoop ? "same" : "other"
            }
            let before = place()
            _ = try await redis.send("PING")
            return "\(before) \(place())"
        }
        return router
    }

    @Test(arguments: [true, false])
    func handlersStayOnTheConnectionsLoop(onEventLoops: Bool) async throws {
        // One connection per loop, as the server has by default: each loop finds its own.
        var configuration = try RedisClientConfiguration(url: try #require(ProcessInfo.processInfo.environment["REDIS_URL"], "REDIS_URL is set by Tests/Support/with-redis.sh"))
        configuration.connectionCount = ServerOptions.defaultRedisConnections
        let redis = RedisClient(configuration: configuration)
        defer { redis.shutdown() }
        let port = try HTTPFixture.freePort()
        let logger = Logger(label: "affinity-test")
        let app = Application(router: Self.router(redis: redis), server: .deviceAuthorization(limits: ConnectionLimits(), onEventLoops: onEventLoops),
                              configuration: .init(address: .hostname("127.0.0.1", port: port)), logger: logger)
        let group = ServiceGroup(configuration: .init(services: [app], logger: logger))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            defer { tasks.cancelAll() }
            // Until the server answers (a hang guard, not a duration under test), then 20 requests,
            // each on a fresh connection (`Connection: close`), so they spread over the loops.
            let request = Array("GET /where HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".utf8)
            try await waitUntilAnswering(port: port, request: request)
            var answers: [String] = []
            for _ in 0..<20 {
                let reply = try await RawHTTP.request(port: port, head: request)
                #expect(reply.status == 200)
                answers.append(reply.body)
            }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
            #expect(answers.count == 20)
            #expect(Set(answers) == [onEventLoops ? "same same" : "none none"], "\(answers)")
        }
    }

    private func waitUntilAnswering(port: Int, request: [UInt8]) async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if let reply = try? await RawHTTP.request(port: port, head: request, timeout: .seconds(5)), reply.status == 200 { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        Issue.record("the server on port \(port) never answered")
        throw CancellationError()
    }
}
