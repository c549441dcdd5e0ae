import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// A private `redis-server` child on a Unix socket in a temporary folder, for development mode:
/// no persistence, no TCP port, stopped (and the folder removed) by ``stop()``.
///
/// The child may inherit an ignored `SIGTERM` from the server's signal handling, so ``stop()``
/// asks it to `SHUTDOWN NOSAVE` through `redis-cli` and falls back to `SIGKILL`, then waits
/// until the process is really gone.
public final class EmbeddedRedis: @unchecked Sendable {
    /// The socket path.
    public let socketPath: String
    /// The temporary folder (socket and log).
    public let directory: URL
    private let process: Process
    private let lock = NSLock()
    private var stopped = false
    private let logger: Logger

    /// The `unix://` URL of the server.
    public var url: String { "unix://" + socketPath }

    /// Starts `redis-server` and waits until it accepts connections.
    /// - Parameters:
    ///   - executable: the `redis-server` binary (found on `PATH` by default).
    ///   - logger: where to say what happens.
    /// - Throws: ``DeviceAuthorizationHTTPError`` with ``DeviceAuthorizationHTTPError/Code/embeddedRedis``.
    public init(executable: String? = nil, logger: Logger) throws {
        self.logger = logger
        guard let binary = executable ?? Self.find("redis-server") else {
            throw DeviceAuthorizationHTTPError(.embeddedRedis, "redis-server was not found on PATH; install it (apt-get install redis-server) or pass --redis-url")
        }
        let directory = URL(fileURLWithPath: "/tmp").appendingPathComponent("deviceauth-redis-\(UUID().uuidString.prefix(8).lowercased())")
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw DeviceAuthorizationHTTPError(.embeddedRedis, "cannot create \(directory.path)", underlying: error)
        }
        self.directory = directory
        self.socketPath = directory.appendingPathComponent("redis.sock").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = [
            "--save", "", "--appendonly", "no", "--port", "0", "--unixsocket", socketPath, "--unixsocketperm", "700",
            "--dir", directory.path, "--daemonize", "no", "--maxmemory-policy", "noeviction",
            "--logfile", directory.appendingPathComponent("redis.log").path,
        ]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        self.process = process
        do {
            try process.run()
        } catch {
            try? FileManager.default.removeItem(at: directory)
            throw DeviceAuthorizationHTTPError(.embeddedRedis, "cannot start \(binary)", underlying: error)
        }
        for _ in 0..<200 {
            if Self.canConnect(socketPath) {
                logger.notice(
                    "Development mode: started a private redis-server (no persistence); it stops when the server exits",
                    metadata: ["redis.socket": "\(socketPath)", "redis.pid": "\(process.processIdentifier)"])
                return
            }
            if !process.isRunning { break }
            usleep(25_000)
        }
        let log = (try? String(contentsOf: directory.appendingPathComponent("redis.log"), encoding: .utf8)) ?? ""
        stop()
        throw DeviceAuthorizationHTTPError(.embeddedRedis, "redis-server did not start: \(log.suffix(500))")
    }

    deinit { stop() }

    /// The child's process id.
    public var processIdentifier: Int32 { process.processIdentifier }

    /// Stops the server (`SHUTDOWN NOSAVE`, then `SIGKILL` if needed), waits for it to exit and
    /// removes the temporary folder. Safe to call more than once.
    public func stop() {
        lock.lock()
        defer { lock.unlock() }
        guard !stopped else { return }
        stopped = true
        if process.isRunning {
            if let cli = Self.find("redis-cli") {
                let shutdown = Process()
                shutdown.executableURL = URL(fileURLWithPath: cli)
                shutdown.arguments = ["-s", socketPath, "shutdown", "nosave"]
                shutdown.standardOutput = FileHandle.nullDevice
                shutdown.standardError = FileHandle.nullDevice
                if (try? shutdown.run()) != nil { shutdown.waitUntilExit() }
            }
            for _ in 0..<100 where process.isRunning { usleep(20_000) }
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
            }
            process.waitUntilExit()
            logger.notice("Development mode: stopped the private redis-server")
        }
        try? FileManager.default.removeItem(at: directory)
    }

    static func find(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":") + ["/usr/bin", "/usr/sbin", "/usr/local/bin"] {
            let candidate = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    static func canConnect(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in bytes.enumerated() { buffer[index] = byte }
        }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        } == 0
    }
}
