import Foundation
import RedisClient
import TestProcesses
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The shared test server that `make test` starts (Tests/Support/with-redis.sh).
enum TestRedis {
    static var url: String { TestEnvironment.redisURL }

    static var port: Int { TestEnvironment.redisPort }

    static func client(connections: Int = 2, commandTimeout: Duration = .seconds(5)) throws -> RedisClient {
        var configuration = try RedisClientConfiguration(url: url)
        configuration.connectionCount = connections
        configuration.commandTimeout = commandTimeout
        return RedisClient(configuration: configuration)
    }

    /// A key prefix unique to one test, so tests run in parallel without FLUSHALL.
    static func prefix(_ name: String = #function) -> String { "test:\(UUID().uuidString.prefix(8)):" }
}

/// A private `redis-server` of Debian's (these suites also run in `make test-valkey`, whose
/// `REDIS_SERVER_BIN` is Valkey's): ``RedisServerProcess``.
typealias PrivateRedisServer = RedisServerProcess

extension RedisServerProcess {
    convenience init(port: Int? = nil, arguments: [String] = [], tlsArguments: [String]? = nil) async throws {
        try await self.init(port: port, arguments: arguments, tlsArguments: tlsArguments, executable: "/usr/bin/redis-server")
    }
}

// Tests run on Swift's cooperative pool, which has one thread per core (two in CI). A test that
// blocks one (`usleep`, `Process.waitUntilExit`) while another does the same stalls every test
// in the process, the HTTP servers under test included, until their clients time out. So waits
// for processes and ports suspend instead.

/// Runs `process` and suspends until it exits; its exit status.
func runToExit(_ process: Process) async throws -> Int32 {
    try await withCheckedThrowingContinuation { continuation in
        process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
        do { try process.run() } catch { continuation.resume(throwing: error) }
    }
}

/// A free loopback port P in 20000–45000 whose cluster-bus port P + 10000 is free too.
func freeClusterNodePort() throws -> Int {
    for _ in 0..<200 {
        let port = Int.random(in: 20_000...45_000)
        if canBind(port: port) && canBind(port: port + 10_000) { return port }
    }
    throw RedisError(.connectionFailed, "no free loopback port pair for a cluster node")
}

/// A loopback listener that accepts connections (through the kernel backlog) and never answers.
final class SilentListener {
    let fd: Int32
    let port: Int

    init() throws {
        (fd, port) = try Self.bound()
    }

    /// A listening loopback socket on a free port.
    static func bound() throws -> (fd: Int32, port: Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = loopbackAddress(port: 0)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0, listen(fd, 16) == 0 else {
            close(fd)
            throw RedisError(.connectionFailed, "listen failed")
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return (fd, Int(UInt16(bigEndian: address.sin_port)))
    }

    deinit { close(fd) }
}

/// A loopback listener that accepts each connection, reads what the client sends first (a TLS
/// ClientHello) and closes it with a FIN, on a thread of its own (never one of Swift's pool):
/// what a server that is stopping does to a TLS handshake. (Closing with the hello unread would
/// send a reset instead.)
final class ClosingListener: @unchecked Sendable {
    let fd: Int32
    let port: Int

    init() throws {
        let listener = try SilentListener.bound()
        fd = listener.fd
        port = listener.port
        let fd = self.fd
        Thread {
            while true {
                let connection = accept(fd, nil, nil)
                if connection < 0 { return }
                var timeout = timeval(tv_sec: 30, tv_usec: 0)  // a hang guard: recv returns with the hello
                setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                var buffer = [UInt8](repeating: 0, count: 16_384)
                _ = recv(connection, &buffer, buffer.count, 0)
                close(connection)
            }
        }.start()
    }

    /// Ends the accepting thread (accept fails once the socket is shut down) and closes the socket.
    deinit {
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }
}

/// Expects `body` to throw a ``RedisError`` and returns it.
func expectRedisError(_ body: () async throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) async -> RedisError? {
    do {
        try await body()
        Issue.record("expected a RedisError, but the call succeeded", sourceLocation: sourceLocation)
        return nil
    } catch let error as RedisError {
        return error
    } catch {
        Issue.record("expected a RedisError, got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}
