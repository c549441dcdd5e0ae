import CHiredis
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization

/// Failures, on the connection's event loop: a lost channel, command and connect timeouts, and
/// the typed errors callers get for them.
extension RedisConnection {
    // MARK: On the loop: failures and timeouts

    /// `channel` closed or failed. While connecting it is a failed connect; once connected,
    /// every command in flight fails (none is re-sent) and commands queued since reconnect.
    func channelFailed(_ channel: any Channel, _ error: any Error) {
        if connectingChannel === channel, case .connecting = state {
            connectFailed(Self.connectError(error, endpoint: endpoint, tls: currentTLS))
            return
        }
        guard case .connected(let current) = state, current === channel else { return }
        let redisError =
            error as? RedisError
            ?? RedisError(.connectionClosed, "the connection to Redis at \(endpoint) was lost: \(Self.describe(error))", underlying: error)
        if inFlight.isEmpty {
            logger.info("Redis connection closed while idle; the next command reconnects", metadata: ["endpoint": "\(endpoint)"])
        } else {
            logger.warning("Redis connection lost", metadata: ["endpoint": "\(endpoint)", "error": "\(redisError.message)"])
        }
        state = .idle
        outbox = nil
        channel.close(promise: nil)
        reportToResolver(redisError)
        failInFlight(with: redisError)
        if isShuttingDown {
            close()
        } else if !unsent.isEmpty {
            startConnect()
        }
        // No replies will come on this channel: take what callers left for the loop.
        updateHandover()
    }

    func channelInactive(_ channel: any Channel) {
        channelFailed(channel, RedisError(.connectionClosed, "Redis closed the connection at \(endpoint)"))
    }

    func failInFlight(with error: RedisError) {
        timeoutCheck?.cancel()
        timeoutCheck = nil
        while let waiter = inFlight.popFirst() { Self.fail(waiter.completion, with: error) }
    }

    func armTimeoutCheck(at deadline: NIODeadline) {
        timeoutCheck = eventLoop.scheduleTask(deadline: deadline) { self.checkTimeout() }
    }

    /// The oldest command in flight waited longer than the command timeout: the connection is
    /// dropped (Redis is stuck or the network is), and everything in flight fails with `timeout`.
    func checkTimeout() {
        timeoutCheck = nil
        guard let oldest = inFlight.first, case .connected(let channel) = state else { return }
        let deadline = oldest.sentAt + TimeAmount(configuration.commandTimeout)
        if deadline > .now() {
            armTimeoutCheck(at: deadline)
            return
        }
        channelFailed(channel, RedisError(.timeout, "Redis did not answer in time (command timeout \(configuration.commandTimeout))"))
    }

    static func fail(_ completion: Completion, with error: any Error) {
        switch completion {
        case .single(let continuation): continuation.resume(throwing: error)
        case .pipeline(let replies): replies.failRest(with: error as? RedisError ?? RedisError(.connectionClosed, "\(error)"))
        case .handshake, .dropped: break
        }
    }

    // MARK: Errors

    static func connectError(_ error: any Error, endpoint: RedisEndpoint, tls: TLSClientContext? = nil) -> RedisError {
        if let redisError = error as? RedisError { return redisError }
        // The peer closed the connection during the handshake (a server stopping or restarting,
        // a proxy dropping it): nothing about certificates or settings, so a connection failure,
        // retried like a refused connect, not a TLS failure an operator must fix.
        if TLSClientContext.isClosedDuringHandshake(error) {
            return RedisError(.connectionFailed, "cannot connect to Redis at \(endpoint): the server closed the connection during the TLS handshake", underlying: error)
        }
        if TLSClientContext.isTLSError(error) {
            let name = tls?.verifiedName(for: endpoint)
            return RedisError(.tlsFailed, "TLS with Redis at \(endpoint) failed: \(TLSClientContext.describe(error, expecting: name))", underlying: error)
        }
        if let channelError = error as? ChannelError, case .connectTimeout = channelError {
            return RedisError(.timeout, "cannot connect to Redis at \(endpoint): timed out", underlying: error)
        }
        return RedisError(.connectionFailed, "cannot connect to Redis at \(endpoint): \(describe(error))", underlying: error)
    }

    static func describe(_ error: any Error) -> String {
        if let io = error as? IOError { return io.description }
        return String(describing: error)
    }
}
