import Foundation
import RedisClient
import TestProcesses
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The test fixtures' launch check: a server counts as started only when it listens itself, not
/// when someone else already accepts connections on its port (a port taken between
/// `freeLoopbackPort()` and the server's bind).
@Suite("Test processes: a server is started when it listens itself")
struct TestProcessesTests {
    @Test(.timeLimit(.minutes(1)))
    func aPortHeldByAnotherListenerIsNotTheServers() async throws {
        let taken = try SilentListener()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        process.arguments = ["--bind", "127.0.0.1", "--port", "\(taken.port)", "--save", "", "--appendonly", "no", "--logfile", ""]
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        #expect(canConnect(port: taken.port), "the other listener accepts connections on the port")
        #expect(try await waitUntilListening(port: taken.port, process: process, attempts: 400) == false)
        #expect(!process.isRunning, "redis-server exited: the port was in use")
    }

    @Test(.timeLimit(.minutes(1)))
    func aServerOnAFreePortIsSeenListening() async throws {
        let port = try freeLoopbackPort()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        process.arguments = ["--bind", "127.0.0.1", "--port", "\(port)", "--save", "", "--appendonly", "no", "--logfile", ""]
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        defer {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        #expect(try await waitUntilListening(port: port, process: process, attempts: 400))
        #expect(listens(pid: process.processIdentifier, port: port))
        #expect(!listens(pid: getpid(), port: port), "this test process does not hold the server's socket")
    }
}
