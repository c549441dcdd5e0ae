import Hummingbird
import NIOCore
import NIOPosix
import ServiceLifecycle

/// A task executor that runs Swift concurrency jobs on SwiftNIO's event loops: a job enqueued on
/// an event-loop thread (a request part read, a Redis reply arrived) runs on that same loop, any
/// other one on the group's next loop.
///
/// Hummingbird handles each connection in a child task, on Swift's global executor by default:
/// every request then crosses threads four times (loop → pool for the request, pool → loop for
/// the Redis command, loop → pool for its reply, pool → loop for the response), and on a 2-core
/// machine the two event loops and the two pool threads take turns on the cores. With this
/// executor preferred (``EventLoopAffineService``) the connection's task, its handlers and the
/// Redis client (which writes on the caller's loop when it holds a connection there) stay on the
/// connection's loop. The cost: a handler's CPU work runs on the loop, delaying that loop's other
/// I/O meanwhile, as any NIO handler would; nothing on the request path blocks a thread.
public final class EventLoopTaskExecutor: TaskExecutor, Sendable {
    private let group: any EventLoopGroup

    public init(group: any EventLoopGroup) {
        self.group = group
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        let loop = MultiThreadedEventLoopGroup.currentEventLoop ?? group.next()
        loop.execute { job.runSynchronously(on: executor) }
    }
}

/// A task executor that runs every job on one event loop.
final class PinnedEventLoopExecutor: TaskExecutor, Sendable {
    let loop: any EventLoop

    init(loop: any EventLoop) {
        self.loop = loop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        loop.execute { job.runSynchronously(on: executor) }
    }
}

/// Under ``EventLoopTaskExecutor``, moves a request that is being handled on another loop than
/// its connection's to the connection's loop. That happens to the first request of a
/// connection whose bytes had arrived before its task first ran: the task starts on the
/// accepting loop and, not having to wait for the request, never left it. Anywhere else (on
/// Swift's global executor, or already on the right loop) it does nothing.
struct EventLoopAffinityMiddleware: RouterMiddleware {
    typealias Context = DeviceAuthorizationRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let current = MultiThreadedEventLoopGroup.currentEventLoop, current !== context.eventLoop else {
            return try await next(request, context)
        }
        return try await withTaskExecutorPreference(PinnedEventLoopExecutor(loop: context.eventLoop)) {
            try await next(request, context)
        }
    }
}

/// Runs a service (the HTTP application) with ``EventLoopTaskExecutor`` as its task executor
/// preference, which Hummingbird's per-connection child tasks inherit.
public struct EventLoopAffineService<Wrapped: Service>: Service {
    let wrapped: Wrapped
    let executor: EventLoopTaskExecutor

    public init(_ wrapped: Wrapped, group: any EventLoopGroup) {
        self.wrapped = wrapped
        self.executor = EventLoopTaskExecutor(group: group)
    }

    public func run() async throws {
        try await withTaskExecutorPreference(executor) { try await wrapped.run() }
    }
}
