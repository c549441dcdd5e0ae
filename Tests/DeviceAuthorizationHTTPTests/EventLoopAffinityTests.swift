import DeviceAuthorizationHTTP
import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import NIOPosix
import RedisClient
import TestProcesses
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
        var configuration = try RedisClientConfiguration(url: TestEnvironment.redisURL)
        configuration.connectionCount = ServerOptions.defaultRedisConnections
        let redis = RedisClient(configuration: configuration)
        defer { redis.shutdown() }
        let app = Application(
            router: Self.router(redis: redis), server: .deviceAuthorization(limits: ConnectionLimits(), onEventLoops: onEventLoops),
            configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        let answers = try await app.test(.live) { client in
            let port = try #require(client.port)
            // 20 requests, each on a fresh connection (`Connection: close`), so they spread over the loops.
            let request = Array("GET /where HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".utf8)
            var answers: [String] = []
            for _ in 0..<20 {
                let reply = try await RawHTTP.request(port: port, head: request)
                #expect(reply.status == 200)
                answers.append(reply.body)
            }
            return answers
        }
        #expect(answers.count == 20)
        #expect(Set(answers) == [onEventLoops ? "same same" : "none none"], "\(answers)")
    }
}
