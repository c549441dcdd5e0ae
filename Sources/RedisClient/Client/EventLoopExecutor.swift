import NIOCore

/// A task executor that runs every job on one SwiftNIO event loop.
///
/// A task that prefers it (`withTaskExecutorPreference`) runs on the loop, so a ``RedisClient``
/// connection living on the same loop writes the task's commands and resumes it with the reply
/// without a thread hop. The API node runs each HTTP connection's task on that connection's
/// loop this way; the benchmarks run their callers so. The cost: the task's CPU work delays the
/// loop's other I/O meanwhile, as any NIO handler would, so nothing run on it may block.
public final class EventLoopExecutor: TaskExecutor, Sendable {
    public let eventLoop: any EventLoop

    public init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        eventLoop.execute { job.runSynchronously(on: executor) }
    }

    /// One executor per loop of `group`, in the group's order (connection i of a ``RedisClient``
    /// lives on loop i).
    public static func forEachLoop(of group: any EventLoopGroup) -> [EventLoopExecutor] {
        group.makeIterator().map { EventLoopExecutor($0) }
    }
}
