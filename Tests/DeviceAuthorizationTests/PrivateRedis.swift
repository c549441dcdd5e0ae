import Foundation
import RedisClient
@testable import DeviceAuthorization
#if canImport(Glibc)
import Glibc
#endif

/// A private `redis-server` for tests that change server-wide settings (`maxmemory`, the
/// eviction policy, users), which must not touch the shared test server other suites use.
final class PrivateRedis: @unchecked Sendable {
    let port: Int
    let directory: URL
    private let process: Process
    init(arguments: [String] = []) async throws {
        port = try Self.freePort()
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("deviceauth-store-redis-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        process = Process()
        process.executableURL = URL(fileURLWithPath: ProcessInfo.processInfo.environment["REDIS_SERVER_BIN"] ?? "/usr/bin/redis-server")
        process.arguments = ["--bind", "127.0.0.1", "--port", "\(port)", "--dir", directory.path, "--save", "", "--appendonly", "no",
                             "--logfile", directory.appendingPathComponent("redis.log").path] + arguments
        try process.run()
        // Suspends between attempts: a blocked thread of Swift's cooperative pool (one per core)
        // would hold up every other test in the process.
        for _ in 0..<400 {
            if Self.canConnect(port: port) { return }
            guard process.isRunning else { break }
            try await Task.sleep(for: .milliseconds(25))
        }
        stop()
        throw RedisError(.connectionFailed, "private redis-server did not start on port \(port)")
    }

    var url: String { "redis://127.0.0.1:\(port)/0" }

    /// Sends `signal` to the server (`SIGSTOP`/`SIGCONT` to stall and resume it).
    func send(signal: Int32) {
        guard process.isRunning else { return }
        kill(process.processIdentifier, signal)
    }

    func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: directory)
    }

    private static func loopback(port: UInt16) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }

    private static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = loopback(port: 0)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0 else { throw RedisError(.connectionFailed, "bind failed") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    private static func canConnect(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = loopback(port: UInt16(port))
        return withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
    }
}

extension StoreFixture {
    /// A fixture on a private server instead of the shared one.
    init(server: PrivateRedis, configure: (inout DeviceCodeStoreConfiguration) -> Void = { _ in }) throws {
        try self.init(url: server.url, configure: configure)
    }
}
