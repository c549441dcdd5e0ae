import CHiredis
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization

/// Connecting, on the connection's event loop: back-off, TCP (or a Unix socket), TLS, then
/// `AUTH` / `SELECT` and, in Sentinel mode, the primary the resolver names.
extension RedisConnection {
    // MARK: On the loop: connecting

    func startConnect() {
        if let next = nextConnectAttempt, next > .now() {
            state = .waitingToReconnect
            eventLoop.scheduleTask(deadline: next) { self.connect() }
            return
        }
        connect()
    }

    func connect() {
        generation += 1
        let generation = generation
        state = .connecting(generation: generation)
        guard let resolver = configuration.primaryResolver else {
            open(generation)
            return
        }
        // Sentinel mode: ask for the primary (usually cached) before every connect.
        Task {
            do {
                let primary = try await resolver.primary()
                eventLoop.execute {
                    guard case .connecting(let current) = self.state, current == generation else { return }
                    self.endpoint = primary
                    self.open(generation)
                }
            } catch {
                let redisError = error as? RedisError ?? RedisError(.primaryUnavailable, "\(error)")
                eventLoop.execute {
                    guard case .connecting(let current) = self.state, current == generation else { return }
                    self.connectFailed(redisError)
                }
            }
        }
    }

    /// Sentinel mode: tells the resolver that `error` on this connection's primary may mean it
    /// is no longer the primary (a refused connect, a lost connection, `READONLY`).
    func reportToResolver(_ error: RedisError) {
        guard let resolver = configuration.primaryResolver, SentinelResolver.invalidatesPrimary(error) else { return }
        resolver.invalidate(endpoint)
    }

    /// Sentinel mode: the primary moved away from `old`; a connection to it is dropped (commands
    /// in flight fail with `connectionClosed`, never re-sent) and the next command connects to
    /// the new one.
    func primaryMoved(from old: RedisEndpoint) {
        eventLoop.execute {
            guard case .connected(let channel) = self.state, self.endpoint == old else { return }
            self.channelFailed(channel, RedisError(.connectionClosed, "the Redis primary moved away from \(old) (Sentinel failover)"))
        }
    }

    func open(_ generation: Int) {
        if case .tcp(_, let port) = endpoint, !RedisEndpoint.ports.contains(port) {
            connectFailed(RedisError(.connectionFailed, "cannot connect to Redis at \(endpoint): port \(port) is out of range (1–65535)"))
            return
        }
        let connectTimeout = TimeAmount(max(configuration.connectTimeout, .milliseconds(1)))
        connectDeadline = eventLoop.scheduleTask(in: connectTimeout) {
            guard case .connecting(let current) = self.state, current == generation else { return }
            self.connectFailed(RedisError(.timeout, "cannot connect to Redis at \(self.endpoint): no answer within \(self.configuration.connectTimeout)"))
        }
        let tls: TLSClientContext?
        do {
            tls = try self.tls?.context()
        } catch {
            connectFailed(error as? RedisError ?? RedisError(.tlsFailed, "\(error)"))
            return
        }
        let endpoint = self.endpoint
        currentTLS = tls
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(connectTimeout)
            .channelInitializer { channel in
                // On this loop: known before the TLS handshake can fail, so its error is a connect error.
                if case .connecting(let current) = self.state, current == generation { self.connectingChannel = channel }
                return channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        let handler = try tls.makeHandler(for: endpoint)
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                    try channel.pipeline.syncOperations.addHandler(RedisReplyDecoder(connection: self))
                }
            }
        let future: EventLoopFuture<any Channel>
        switch endpoint {
        case .tcp(let host, let port):
            future = bootstrap.channelOption(.socketOption(.so_keepalive), value: 1).connect(host: host, port: port)
        case .unix(let path):
            future = bootstrap.connect(unixDomainSocketPath: path)
        }
        future.whenComplete { result in
            guard case .connecting(let current) = self.state, current == generation else {
                // Timed out (or shut down) meanwhile: this channel is not wanted.
                if case .success(let channel) = result { channel.close(promise: nil) }
                return
            }
            switch result {
            case .success(let channel):
                self.connectingChannel = channel
                if tls == nil { self.handshake(channel) }
            // With TLS, the decoder calls `tlsHandshakeCompleted` once the handshake is done.
            case .failure(let error):
                self.connectFailed(Self.connectError(error, endpoint: endpoint, tls: tls))
            }
        }
    }

    func tlsHandshakeCompleted(on channel: any Channel) {
        guard connectingChannel === channel, case .connecting = state else { return }
        handshake(channel)
    }

    /// AUTH and SELECT, pipelined; the connection is ready when both answered OK.
    func handshake(_ channel: any Channel) {
        var steps: [([any RedisArgument], String)] = []
        if let password = configuration.password {
            var auth: [any RedisArgument] = ["AUTH"]
            if let username = configuration.username { auth.append(username) }
            auth.append(password)
            steps.append((auth, "authentication"))
        }
        if configuration.database != 0 { steps.append((["SELECT", configuration.database], "SELECT \(configuration.database)")) }
        guard !steps.isEmpty else {
            becameReady(channel)
            return
        }
        var buffer = channel.allocator.buffer(capacity: 128)
        for (arguments, what) in steps {
            buffer.writeBytes(RedisCommand.encode(arguments))
            inFlight.append(Waiter(id: 0, sentAt: .now(), completion: .handshake(what: what)))
        }
        channel.writeAndFlush(buffer, promise: nil)
    }

    func becameReady(_ channel: any Channel) {
        connectDeadline?.cancel()
        connectDeadline = nil
        connectingChannel = nil
        if nextConnectAttempt != nil { logger.info("Reconnected to Redis", metadata: ["endpoint": "\(endpoint)"]) }
        nextConnectAttempt = nil
        reconnectDelay = configuration.initialReconnectDelay
        state = .connected(channel)
        while let request = unsent.popFirst() {
            append(request.bytes, waiter: Waiter(id: request.id, sentAt: .now(), completion: request.completion), channel: channel)
        }
        if isShuttingDown && inFlight.isEmpty { close() }
    }

    /// A connect, TLS handshake or AUTH / SELECT failed: the queued commands fail with it (none
    /// was written), and the next command waits for the back-off delay.
    func connectFailed(_ error: RedisError) {
        connectDeadline?.cancel()
        connectDeadline = nil
        // Forgotten before it is closed: its close must not count as a second failure.
        let channel = connectingChannel
        connectingChannel = nil
        state = .idle
        channel?.close(promise: nil)
        logger.warning("Cannot connect to Redis", metadata: ["endpoint": "\(endpoint)", "error": "\(error.message)"])
        reportToResolver(error)
        nextConnectAttempt = .now() + TimeAmount(reconnectDelay)
        reconnectDelay = min(reconnectDelay * 2, configuration.maximumReconnectDelay)
        failInFlight(with: error)
        while let request = unsent.popFirst() { Self.fail(request.completion, with: error) }
        if isShuttingDown { close() }
    }
}
