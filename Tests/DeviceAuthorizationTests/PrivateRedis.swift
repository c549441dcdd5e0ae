import Foundation
import RedisClient
import TestProcesses

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
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("deviceauth-store-redis-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let executable = ProcessInfo.processInfo.environment["REDIS_SERVER_BIN"] ?? "/usr/bin/redis-server"
        // A free port can be taken by another test's server before this one binds it; then the
        // server exits ("Address already in use") and a new port is tried.
        var attempt = 0
        while true {
            attempt += 1
            let port = try freeLoopbackPort()
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments =
                [
                    "--bind", "127.0.0.1", "--port", "\(port)", "--dir", directory.path, "--save", "", "--appendonly", "no",
                    "--logfile", directory.appendingPathComponent("redis.log").path,
                ] + arguments
            try process.run()
            if try await waitUntilListening(port: port, process: process, attempts: 400) {
                self.port = port
                self.process = process
                return
            }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
            guard attempt < 3 else {
                throw RedisError(.connectionFailed, "private redis-server did not start on port \(port); see \(directory.path)/redis.log")
            }
        }
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
}

extension StoreFixture {
    /// A fixture on a private server instead of the shared one.
    init(server: PrivateRedis, configure: (inout DeviceCodeStoreConfiguration) -> Void = { _ in }) throws {
        try self.init(url: server.url, configure: configure)
    }
}
