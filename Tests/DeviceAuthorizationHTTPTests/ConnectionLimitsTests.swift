import DeviceAuthorization
import DeviceAuthorizationHTTP
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdTesting
import NIOCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A blocking TCP client socket for connections that misbehave on purpose (half a request head,
/// no request at all). Used only from threads of its own, never from Swift's cooperative pool.
final class RawSocket: @unchecked Sendable {
    let fd: Int32

    /// Connects to 127.0.0.1:`port`; every receive gives up after `hangGuard` (a test that hangs
    /// fails instead of blocking CI).
    init(port: Int, hangGuard: Duration = .seconds(30)) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EMFILE) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(fd)
            throw POSIXError(.ECONNREFUSED)
        }
        var seconds = timeval(tv_sec: Int(hangGuard.components.seconds), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &seconds, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &seconds, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    @discardableResult
    func send(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        return bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == bytes.count
    }

    enum Ending: Equatable {
        /// The server closed the connection (EOF or reset) after sending these bytes.
        case closed(received: String)
        /// The hang guard passed with the connection still open.
        case stillOpen(received: String)
    }

    /// Reads until the server closes the connection or `deadline` passes (one deadline for many
    /// sockets read one after another, so a server that closes nothing fails the test in one
    /// hang-guard period, not one per socket).
    func readUntilClosed(deadline: ContinuousClock.Instant = .now + .seconds(30)) -> Ending {
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let remaining = deadline - .now
            let milliseconds = max(0, remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000)
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, Int32(min(milliseconds, 60_000)))
            let text = String(decoding: received, as: UTF8.self)
            guard ready > 0 else { return .stillOpen(received: text) }
            let count = recv(fd, &buffer, buffer.count, 0)
            if count > 0 {
                received += buffer[0..<count]
                continue
            }
            if count == 0 || errno == ECONNRESET { return .closed(received: text) }
            return .stillOpen(received: text)
        }
    }

    /// Reads one whole response with a `Content-Length` body (the connection stays open).
    func readResponse() -> String? {
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let text = String(decoding: received, as: UTF8.self)
            if let end = text.range(of: "\r\n\r\n") {
                let head = text[..<end.lowerBound].lowercased()
                if let line = head.split(separator: "\r\n").first(where: { $0.hasPrefix("content-length:") }),
                    let length = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)),
                    text[end.upperBound...].utf8.count >= length
                {
                    return text
                }
            }
            let count = recv(fd, &buffer, buffer.count, 0)
            if count <= 0 { return received.isEmpty ? nil : text }
            received += buffer[0..<count]
        }
    }
}

/// Runs blocking socket work on a thread of its own.
func onThread<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try work() }) }.start()
    }
}

@Suite("Connection limits: header-read and idle timeouts, connection cap")
struct ConnectionLimitsTests {
    static let request = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

    /// A live node with `limits` over the product's routes (Redis from `with-redis.sh`, rate
    /// limits off); `body` gets its loopback port. The test framework's own client holds one
    /// connection, opened at start and idle.
    static func withServer(_ limits: ConnectionLimits, _ body: @escaping @Sendable (Int) async throws -> Void) async throws {
        let fixture = try await HTTPFixture(rateLimits: .off)
        defer { fixture.shutdown() }
        let app = Application(
            router: fixture.routes.makeRouter(), server: .deviceAuthorization(limits: limits),
            configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await app.test(.live) { client in try await body(try #require(client.port)) }
    }

    @Test("300 slow connections (half a request head each) are all closed by the server without an answer, while /healthz on a fresh connection answers")
    func slowHeadersAreClosed() async throws {
        try await Self.withServer(ConnectionLimits(headerReadTimeout: .seconds(1), idleTimeout: .seconds(60))) { port in
            let endings = try await onThread { () -> (healthz: String?, endings: [RawSocket.Ending]) in
                var sockets: [RawSocket] = []
                for index in 0..<300 {
                    let socket = try RawSocket(port: port)
                    // A head that never ends: one header line, no blank line.
                    socket.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow-\(index): ")
                    sockets.append(socket)
                }
                // A well-behaved client on a fresh connection, with the 300 open.
                let fresh = try RawSocket(port: port)
                fresh.send(Self.request)
                let healthz = fresh.readResponse()
                // Keep trickling one byte on half of them: bytes alone do not extend the deadline.
                for socket in sockets.prefix(150) { socket.send("a") }
                let deadline = ContinuousClock.now + .seconds(30)
                return (healthz, sockets.map { $0.readUntilClosed(deadline: deadline) })
            }
            #expect(endings.healthz?.hasPrefix("HTTP/1.1 200") == true, "\(endings.healthz ?? "no answer")")
            #expect(endings.endings.count == 300)
            #expect(
                endings.endings.allSatisfy { $0 == .closed(received: "") },
                "closed: \(endings.endings.filter { if case .closed = $0 { true } else { false } }.count) of 300")
            // Still serving afterwards, on a new connection (the test client's own idle connection
            // was closed by the same deadline).
            let after = try await onThread { () -> String? in
                let socket = try RawSocket(port: port)
                socket.send(Self.request)
                return socket.readResponse()
            }
            #expect(after?.hasPrefix("HTTP/1.1 200") == true)
        }
    }

    @Test("a kept-alive connection is closed after its idle timeout; a connection that never sends a byte after its header-read timeout; a whole request is answered")
    func idleConnectionsAreClosed() async throws {
        try await Self.withServer(ConnectionLimits(headerReadTimeout: .seconds(1), idleTimeout: .seconds(1))) { port in
            let (answers, idle, silent) = try await onThread { () -> ([String?], RawSocket.Ending, RawSocket.Ending) in
                let kept = try RawSocket(port: port)
                // Two requests on one connection, then nothing.
                kept.send(Self.request)
                let first = kept.readResponse()
                kept.send(Self.request)
                let second = kept.readResponse()
                let silent = try RawSocket(port: port)
                let deadline = ContinuousClock.now + .seconds(30)
                return ([first, second], kept.readUntilClosed(deadline: deadline), silent.readUntilClosed(deadline: deadline))
            }
            #expect(answers.allSatisfy { $0?.hasPrefix("HTTP/1.1 200") == true }, "\(answers)")
            #expect(idle == .closed(received: ""))
            #expect(silent == .closed(received: ""))
        }
    }

    @Test(
        "the deadline moves earlier and later: a kept-alive connection that starts a head after an answer gets the short header-read timeout, not its long idle one; a connection busy for longer than the header-read timeout is never closed"
    )
    func deadlinesFollowEachRequest() async throws {
        try await Self.withServer(ConnectionLimits(headerReadTimeout: .seconds(2), idleTimeout: .seconds(600))) { port in
            let (busyAnswers, busyEnding, slowAnswer, slowEnding) = try await onThread {
                () -> ([String?], RawSocket.Ending, String?, RawSocket.Ending) in
                // 16 requests 0.25 s apart: 4 s, twice the header-read timeout.
                let busy = try RawSocket(port: port)
                var answers: [String?] = []
                for _ in 0..<16 {
                    busy.send(Self.request)
                    answers.append(busy.readResponse())
                    usleep(250_000)
                }
                let stillServed = busy.send(Self.request) ? busy.readResponse() : nil
                answers.append(stillServed)
                // One answer, then half a head: closed by the 2 s header-read deadline, long
                // before the 600 s idle one (the hang guard is 20 s).
                let slow = try RawSocket(port: port)
                slow.send(Self.request)
                let answer = slow.readResponse()
                slow.send("GET /healthz HTTP/1.1\r\nHo")
                let slowEnding = slow.readUntilClosed(deadline: .now + .seconds(20))
                return (answers, busy.readUntilClosed(deadline: .now + .milliseconds(200)), answer, slowEnding)
            }
            #expect(busyAnswers.count == 17)
            #expect(busyAnswers.allSatisfy { $0?.hasPrefix("HTTP/1.1 200") == true }, "\(busyAnswers)")
            #expect(busyEnding == .stillOpen(received: ""))
            #expect(slowAnswer?.hasPrefix("HTTP/1.1 200") == true)
            #expect(slowEnding == .closed(received: ""))
        }
    }

    @Test("over the connection cap, new connections are closed at once with no answer; the open ones keep being served; freed slots are used again")
    func connectionCap() async throws {
        let cap = 20
        try await Self.withServer(ConnectionLimits(headerReadTimeout: .seconds(60), idleTimeout: .seconds(60), maxConnections: cap)) { port in
            let outcome = try await onThread { () -> (opened: [String?], extra: [RawSocket.Ending], again: [String?], afterFree: String?) in
                // Fill the cap with kept-alive connections, each proved accepted by an answer. The
                // test framework's client already holds one connection (opened at start, idle).
                var open: [RawSocket] = []
                var opened: [String?] = []
                for _ in 0..<(cap - 1) {
                    let socket = try RawSocket(port: port)
                    socket.send(Self.request)
                    opened.append(socket.readResponse())
                    open.append(socket)
                }
                // Ten more: the kernel completes the handshake, the node closes them unanswered.
                var extra: [RawSocket.Ending] = []
                let deadline = ContinuousClock.now + .seconds(30)
                for _ in 0..<10 {
                    let socket = try RawSocket(port: port)
                    socket.send(Self.request)
                    extra.append(socket.readUntilClosed(deadline: deadline))
                }
                // The open ones are still served.
                var again: [String?] = []
                for socket in open {
                    socket.send(Self.request)
                    again.append(socket.readResponse())
                }
                // Free five slots; a new connection is then served (retried while the node notices the closes).
                open.removeLast(5)
                var afterFree: String?
                for _ in 0..<1000 where afterFree == nil {
                    let socket = try RawSocket(port: port)
                    socket.send(Self.request)
                    afterFree = socket.readResponse()
                    if afterFree == nil { usleep(20_000) }
                }
                return (opened, extra, again, afterFree)
            }
            #expect(outcome.opened.allSatisfy { $0?.hasPrefix("HTTP/1.1 200") == true })
            #expect(outcome.extra == Array(repeating: .closed(received: ""), count: 10), "\(outcome.extra)")
            #expect(outcome.again.allSatisfy { $0?.hasPrefix("HTTP/1.1 200") == true }, "\(outcome.again)")
            #expect(outcome.afterFree?.hasPrefix("HTTP/1.1 200") == true)
        }
    }
}
