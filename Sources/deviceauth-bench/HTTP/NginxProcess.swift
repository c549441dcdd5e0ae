import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A private `nginx` on a free loopback port answering `POST /oauth/token` with the bytes the
/// token endpoint sends for a pending code (400, the same JSON body, `Content-Type` and
/// `Cache-Control`): what this machine can do for that answer with no application at all, the
/// physical ceiling next to which `deviceauth-bench http` reports the node.
///
/// A master and one worker per core (as nginx is deployed), logging nothing, in a temporary
/// directory; ``stop()`` ends it. ``cpuSeconds()`` sums user + system time of the master and its
/// workers from `/proc`, so its CPU per request can stand beside the node's.
final class NginxProcess: Sendable {
    let port: Int
    private let directory: URL
    private let process: Process

    private init(port: Int, directory: URL, process: Process) {
        self.port = port
        self.directory = directory
        self.process = process
    }

    /// Starts nginx from `executable` with `workers` worker processes and waits until it listens.
    /// - Throws: ``ChildProcess/Failure`` when it exits or does not listen within 10 s.
    static func start(executable: String, body: String, workers: Int) async throws -> NginxProcess {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("deviceauth-bench-nginx-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let port = try freeLoopbackPort()
        // `return 400 '…'` answers with that body; `default_type` is its Content-Type. The body is
        // JSON without quotes of its own kind ('), so it needs no escaping here.
        let configuration = """
            daemon off;
            worker_processes \(max(1, workers));
            pid \(directory.path)/nginx.pid;
            error_log \(directory.path)/error.log warn;
            events { worker_connections 4096; }
            http {
              access_log off;
              client_body_temp_path \(directory.path)/body;
              keepalive_requests 1000000;
              server {
                listen 127.0.0.1:\(port) reuseport;
                location = /oauth/token {
                  default_type application/json;
                  add_header Cache-Control no-store always;
                  return 400 '\(body)';
                }
              }
            }
            """
        let file = directory.appendingPathComponent("nginx.conf")
        try configuration.write(to: file, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["-p", directory.path, "-c", file.path]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        let nginx = NginxProcess(port: port, directory: directory, process: process)
        do {
            try process.run()
            try await ChildProcess.waitUntilListening(process, name: "nginx", port: port, timeout: .seconds(10)) {
                String(((try? String(contentsOf: directory.appendingPathComponent("error.log"), encoding: .utf8)) ?? "").suffix(300))
            }
        } catch {
            await nginx.stop()
            throw error
        }
        return nginx
    }

    /// User + system CPU seconds of the master and its workers so far.
    func cpuSeconds() -> Double {
        let master = process.processIdentifier
        var total = Self.cpuSeconds(of: master)
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for entry in entries {
            guard let pid = Int32(entry), pid != master, Self.parent(of: pid) == master else { continue }
            total += Self.cpuSeconds(of: pid)
        }
        return total
    }

    /// Fields after the command name in `/proc/<pid>/stat` (the name may contain spaces).
    private static func statFields(_ pid: Int32) -> [Substring] {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = text.lastIndex(of: ")")
        else { return [] }
        return text[text.index(after: close)...].split(separator: " ")
    }

    private static func parent(of pid: Int32) -> Int32? {
        let fields = statFields(pid)
        return fields.count > 1 ? Int32(fields[1]) : nil
    }

    /// utime + stime (fields 14 and 15 of stat; 12 and 13 after the name) in seconds.
    private static func cpuSeconds(of pid: Int32) -> Double {
        let fields = statFields(pid)
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// SIGTERM (nginx's fast stop: the master ends its workers), SIGKILL after 5 s; removes the directory.
    func stop() async {
        await ChildProcess.terminate(process, grace: .seconds(5))
        try? FileManager.default.removeItem(at: directory)
    }
}
