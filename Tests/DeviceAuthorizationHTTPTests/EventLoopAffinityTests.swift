import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOPosix
import RedisClient
import ServiceLifecycle
import Testing

@testable import DeviceAuthorizationHTTP

/// `EventLoopAffineService` (what `deviceauth-server` runs its application in): a handler runs
/// on the event loop of the connection that brought its request, also after awaiting a Redis
/// reply (`EventLoopAffinityMiddleware` moves a connection's first request there when its task
/// started on the accepting loop); without it Hummingbird runs handlers on Swift's global executor.
@Suite("Handlers on the connection's event loop")
struct EventLoopAffinityTests {
    /// "same", "other" (another loop) or "none" (not on a loop), before and after a Redis round trip.
    /// With the product's context and its first middleware, as `DeviceAuthorizationRoutes` has them.
    static func router(redis: RedisClient) -> Router<DeviceAuthorizationRequestContext> {
        let router = Router(context: DeviceAuthorizationRequestContext.self)
        router.add(middleware: EventLoopAffinityMiddleware())
        router.get("/where") { _, context -> String in
            func place() -> String {
                guard let loop = MultiThreadedEventLoopGroup.currentEventLoop else { return "none" }
                return loop === context.eventLoop ? "same" : "other"
            }
            let before = place()
            _ = try await redis.send("PING")
            return "\(before) \(place())"
        }
        return router
    }

    @Test(arguments: [true, false])
    func handlersStayOnTheConnectionsLoop(affine: Bool) async throws {
        // One connection per loop, as the server has by default: each loop finds its own.
        var configuration = try RedisClientConfiguration(url: try #require(ProcessInfo.processInfo.environment["REDIS_URL"], "REDIS_URL is set by Tests/Support/with-redis.sh"))
        configuration.connectionCount = ServerOptions.defaultRedisConnections
        let redis = RedisClient(configuration: configuration)
        defer { redis.shutdown() }
        let port = try HTTPFixture.freePort()
        let logger = Logger(label: "affinity-test")
        let app = Application(router: Self.router(redis: redis), configuration: .init(address: .hostname("127.0.0.1", port: port)), logger: logger)
        let service: any Service = affine ? EventLoopAffineService(app, group: MultiThreadedEventLoopGroup.singleton) : app
        let group = ServiceGroup(configuration: .init(services: [service], logger: logger))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            var answers: [String] = []
            for _ in 0..<200 {
                if let reply = try? await RawHTTP.request(port: port, head: Array("GET /where HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".utf8)),
                   reply.status == 200 {
                    answers.append(reply.body)
                    if answers.count == 20 { break }
                } else {
                    try await Task.sleep(for: .milliseconds(25))
                }
            }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
            #expect(answers.count == 20)
            // Twenty connections, spread over the loops: each handler on its own connection's loop.
            #expect(Set(answers) == [affine ? "same same" : "none none"], "\(answers)")
        }
    }
}
