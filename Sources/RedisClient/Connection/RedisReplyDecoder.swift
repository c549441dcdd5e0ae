import CHiredis
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization

/// The replies of one pipeline, collected in order until the last one resumes the caller.
/// Used only on the connection's event loop.
final class PipelineReplies: @unchecked Sendable {
    private var results: [Result<RedisValue, RedisError>]
    private let count: Int
    private let continuation: UnsafeContinuation<[Result<RedisValue, RedisError>], Never>

    init(count: Int, continuation: UnsafeContinuation<[Result<RedisValue, RedisError>], Never>) {
        self.count = count
        self.continuation = continuation
        self.results = []
        results.reserveCapacity(count)
    }

    /// Adds one reply; `true` when it was the last.
    func add(_ value: RedisValue) -> Bool {
        if case .error(let message) = value {
            results.append(.failure(RedisError(.server, message)))
        } else {
            results.append(.success(value))
        }
        guard results.count == count else { return false }
        continuation.resume(returning: results)
        return true
    }

    /// Fails the replies not yet received and resumes the caller.
    func failRest(with error: RedisError) {
        while results.count < count { results.append(.failure(error)) }
        continuation.resume(returning: results)
    }
}

/// The channel handler: feeds received bytes to a hiredis reader (`redisReaderFeed`) and hands
/// every complete reply (`redisReaderGetReply`) to the connection, in order.
final class RedisReplyDecoder: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let connection: RedisConnection
    private let reader: UnsafeMutablePointer<redisReader>

    init(connection: RedisConnection) {
        self.connection = connection
        // Only fails when out of memory, where nothing else would work either.
        self.reader = redisReaderCreate()!
    }

    deinit {
        redisReaderFree(reader)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        let fed = buffer.withUnsafeReadableBytes { bytes in
            redisReaderFeed(reader, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
        }
        guard fed == REDIS_OK else {
            connection.channelFailed(context.channel, RedisError(.protocolError, "protocol error: hiredis could not buffer the reply"))
            return
        }
        while true {
            var raw: UnsafeMutableRawPointer?
            guard redisReaderGetReply(reader, &raw) == REDIS_OK else {
                let text = withUnsafePointer(to: &reader.pointee.errstr) {
                    $0.withMemoryRebound(to: CChar.self, capacity: 128) { String(cString: $0) }
                }
                connection.channelFailed(context.channel, RedisError(.protocolError, "protocol error: \(text)"))
                return
            }
            guard let raw else { return }
            let value = Self.value(of: raw.assumingMemoryBound(to: redisReply.self))
            freeReplyObject(raw)
            connection.received(value, on: context.channel)
        }
    }

    /// A hiredis reply tree as a ``RedisValue`` (copied: the reply is freed right after).
    static func value(of reply: UnsafeMutablePointer<redisReply>) -> RedisValue {
        let r = reply.pointee
        switch r.type {
        case REDIS_REPLY_STRING:
            return .bulkString(r.len == 0 ? [] : Array(UnsafeRawBufferPointer(start: r.str, count: r.len)))
        case REDIS_REPLY_STATUS:
            return .simpleString(String(decoding: UnsafeRawBufferPointer(start: r.str, count: r.len), as: UTF8.self))
        case REDIS_REPLY_ERROR:
            return .error(String(decoding: UnsafeRawBufferPointer(start: r.str, count: r.len), as: UTF8.self))
        case REDIS_REPLY_INTEGER:
            return .integer(Int(r.integer))
        case REDIS_REPLY_ARRAY:
            var elements: [RedisValue] = []
            elements.reserveCapacity(r.elements)
            for index in 0..<r.elements { elements.append(value(of: r.element[index]!)) }
            return .array(elements)
        default:
            return .null
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        connection.readComplete(on: context.channel)
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        connection.channelInactive(context.channel)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        connection.channelFailed(context.channel, error)
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted = event as? TLSUserEvent {
            connection.tlsHandshakeCompleted(on: context.channel)
        }
        context.fireUserInboundEventTriggered(event)
    }
}

extension TimeAmount {
    /// A Swift `Duration` as NIO's nanoseconds (rounded down, at most `Int64.max`).
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        let (product, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        self = .nanoseconds(overflow ? .max : product &+ attoseconds / 1_000_000_000)
    }
}
