import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A private `redis-server` child process for one benchmark run.
///
/// It listens on a free loopback TCP port (bound to 127.0.0.1 only), keeps no data on disk
/// (`--save "" --appendonly no`), works in its own temporary directory, and is stopped with
/// SIGTERM by ``stop()``. Use ``RedisOptions/withTarget(connectionCount:_:)``, which stops it
/// also when the benchmark fails.
final class RedisServerProcess: Sendable {
    /// The loopback TCP port it listens on.
    let port: Int
    /// Its temporary working directory (holds `redis.log`, and with TLS `ca.crt`); removed by ``stop()``.
    let directory: URL
    /// With TLS: the CA file that verifies the server's certificate.
    var caFile: String { directory.appendingPathComponent("ca.crt").path }
    private let process: Process

    private init(port: Int, directory: URL, process: Process) {
        self.port = port
        self.directory = directory
        self.process = process
    }

    /// Starts `redis-server` from `executable` and waits until it accepts connections.
    ///
    /// A port that another process grabs between choosing and binding it is retried with a new one.
    /// - Throws: ``ChildProcess/Failure`` when the server exits or does not answer within 10 s.
    /// `arguments` go after the defaults (for example `--replicaof 127.0.0.1 <port>`).
    static func start(executable: String, tls: Bool = false, arguments: [String] = []) async throws -> RedisServerProcess {
        var lastFailure: (any Error)?
        for _ in 0..<3 {
            let directory = FileManager.default.temporaryDirectory
                .appendingPathComponent("deviceauth-bench-redis-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let port = try freeLoopbackPort()
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            let listen = tls ? ["--port", "0", "--tls-port", "\(port)"] + (try await TLSFiles.make(in: directory)).serverArguments : ["--port", "\(port)"]
            process.arguments =
                ["--bind", "127.0.0.1"] + listen + [
                    "--dir", directory.path,
                    "--save", "", "--appendonly", "no", "--daemonize", "no",
                    "--logfile", directory.appendingPathComponent("redis.log").path,
                ] + arguments
            process.standardInput = FileHandle.nullDevice
            let server = RedisServerProcess(port: port, directory: directory, process: process)
            do {
                try process.run()
                try await server.waitUntilListening(timeout: .seconds(10))
                return server
            } catch {
                lastFailure = error
                await server.stop()
            }
        }
        throw lastFailure ?? ChildProcess.Failure(description: "redis-server did not start")
    }

    /// Sends SIGTERM, waits for the process to exit (SIGKILL after 10 s) and removes its directory.
    func stop() async {
        await ChildProcess.terminate(process, grace: .seconds(10))
        try? FileManager.default.removeItem(at: directory)
    }

    private func waitUntilListening(timeout: Duration) async throws {
        try await ChildProcess.waitUntilListening(process, name: "redis-server", port: port, timeout: timeout, log: logTail)
    }

    private func logTail() -> String {
        let log = (try? String(contentsOf: directory.appendingPathComponent("redis.log"), encoding: .utf8)) ?? ""
        return log.split(separator: "\n").suffix(3).joined(separator: " | ")
    }
}

/// A CA and a server certificate for 127.0.0.1 made with `openssl` (EC P-256, 30 days), for a
/// private TLS `redis-server`.
struct TLSFiles {
    let directory: URL

    var serverArguments: [String] {
        [
            "--tls-cert-file", directory.appendingPathComponent("server.crt").path, "--tls-key-file", directory.appendingPathComponent("server.key").path,
            "--tls-ca-cert-file", directory.appendingPathComponent("ca.crt").path, "--tls-auth-clients", "no",
        ]
    }

    static func make(in directory: URL) async throws -> TLSFiles {
        let openssl = try ChildProcess.locate("openssl", explicit: nil)
        func path(_ name: String) -> String { directory.appendingPathComponent(name).path }
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        try "subjectAltName=IP:127.0.0.1,DNS:localhost\n".write(toFile: path("server.ext"), atomically: true, encoding: .utf8)
        for arguments in [
            ["req", "-x509"] + ec + ["-keyout", path("ca.key"), "-out", path("ca.crt"), "-days", "30", "-subj", "/CN=deviceauth-bench CA"],
            ["req"] + ec + ["-keyout", path("server.key"), "-out", path("server.csr"), "-subj", "/CN=127.0.0.1"],
            [
                "x509", "-req", "-in", path("server.csr"), "-CA", path("ca.crt"), "-CAkey", path("ca.key"), "-CAcreateserial",
                "-out", path("server.crt"), "-days", "30", "-extfile", path("server.ext"),
            ],
        ] {
            let result = try await ChildProcess.run(openssl, arguments)
            guard result.status == 0 else { throw ChildProcess.Failure(description: "openssl \(arguments[0]) failed: \(result.standardError)") }
        }
        return TLSFiles(directory: directory)
    }
}

/// Asks the kernel for a currently free TCP port on 127.0.0.1.
func freeLoopbackPort() throws -> Int {
    let descriptor = socket(AF_INET, streamSocketType, 0)
    guard descriptor >= 0 else { throw ChildProcess.Failure(description: "socket() failed: errno \(errno)") }
    defer { close(descriptor) }
    var address = loopbackAddress(port: 0)
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw in
            bind(descriptor, raw, length) == 0 && getsockname(descriptor, raw, &length) == 0
        }
    }
    guard bound else { throw ChildProcess.Failure(description: "cannot bind a free loopback port: errno \(errno)") }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
func canConnect(port: Int) -> Bool {
    let descriptor = socket(AF_INET, streamSocketType, 0)
    guard descriptor >= 0 else { return false }
    defer { close(descriptor) }
    var address = loopbackAddress(port: port)
    return withUnsafePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
        }
    }
}

#if canImport(Glibc)
    private let streamSocketType = Int32(SOCK_STREAM.rawValue)
#else
    private let streamSocketType = SOCK_STREAM
#endif

func loopbackAddress(port: Int) -> sockaddr_in {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(port).bigEndian
    address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    return address
}
