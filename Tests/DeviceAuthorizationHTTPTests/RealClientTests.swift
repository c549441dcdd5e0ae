import DeviceAuthorization
import DeviceAuthorizationHTTP
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import TestProcesses
import Testing

/// Python helpers of these tests, run when their modules are installed
/// (`python3 -m pip install oauthlib requests selenium`; Debian `chromium chromium-driver`).
enum PythonClient {
    /// oauthlib and requests are importable.
    /// `make test` installs the tools and sets this, so there a missing tool fails the test
    /// instead of skipping it.
    static let required = ProcessInfo.processInfo.environment["DEVICEAUTH_REQUIRE_E2E"] == "1"
    static let oauthlibAvailable = required || succeeds(["python3", "-c", "import oauthlib, requests"])
    /// selenium is importable and Chromium with its driver is installed.
    static let browserAvailable = required || succeeds(["python3", "-c", "import selenium"]) && succeeds(["sh", "-c", "command -v chromium && command -v chromedriver"])

    private static func succeeds(_ arguments: [String]) -> Bool {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return false }
        process.waitUntilExit()
        return process.terminationStatus == 0
    }

    static func script(_ name: String) -> String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Python/\(name)").path
    }

    /// Where tests leave artifacts such as screenshots (`TEST_ARTIFACTS_DIR`, or a temp folder).
    static var artifactsDirectory: String {
        ProcessInfo.processInfo.environment["TEST_ARTIFACTS_DIR"]
            ?? FileManager.default.temporaryDirectory.appendingPathComponent("deviceauth-test-artifacts").path
    }

    /// Runs a script and returns its exit status and output.
    static func run(_ name: String, arguments: [String]) async throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script(name)] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        let status: Int32 = try await withCheckedThrowingContinuation { continuation in
            process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
            do { try process.run() } catch { continuation.resume(throwing: error) }
        }
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        return (status, output)
    }
}

@Suite("A real client")
struct RealClientTests {
    @Test(
        "Python oauthlib DeviceClient + requests complete the flow against a live server",
        .enabled(if: PythonClient.oauthlibAvailable, "needs python3 with oauthlib and requests"))
    func oauthlibDeviceClient() async throws {
        // Plain HTTP on loopback: a real cookie jar would not send `Secure` cookies.
        let fixture = try await HTTPFixture(secureCookies: false)
        defer { fixture.shutdown() }
        try await fixture.app.test(.live) { client in
            let port = try #require(client.port)
            let result = try await PythonClient.run("oauthlib_device_flow.py", arguments: ["http://127.0.0.1:\(port)", "fast", "alice", "wonderland"])
            #expect(result.status == 0, "\(result.output)")
            #expect(result.output.contains("oauthlib device flow: ok"))
        }
    }

    @Test(
        "headless Chromium: sign in, type the code, confirm, approve; the device then gets its token",
        .enabled(if: PythonClient.browserAvailable, "needs chromium, chromium-driver and python3 selenium"))
    func browserApproval() async throws {
        // The browser sends `Origin: http://127.0.0.1:PORT` with its form posts, so the public
        // base URL must be that origin (the server refuses posts from any other). The test
        // framework's live mode always picks its own port, so the server runs here directly.
        let port = try freeLoopbackPort()
        let fixture = try await HTTPFixture(secureCookies: false, publicBaseURL: "http://127.0.0.1:\(port)")
        defer { fixture.shutdown() }
        let (running, runningContinuation) = AsyncStream<Void>.makeStream()
        let app = Application(
            router: fixture.routes.makeRouter(), configuration: .init(address: .hostname("127.0.0.1", port: port)),
            onServerRunning: { _ in runningContinuation.yield() })
        let server = Task { try await app.runService(gracefulShutdownSignals: []) }
        defer { server.cancel() }
        var iterator = running.makeAsyncIterator()
        _ = await iterator.next()

        let issued = try await fixture.store.issue(clientID: "fast", scopes: ["profile"], interval: 0)
        let screenshot = PythonClient.artifactsDirectory + "/verification-confirm.png"
        let result = try await PythonClient.run(
            "browser_approval.py",
            arguments: [
                "http://127.0.0.1:\(port)", issued.userCode, "Fast poller", "alice", "wonderland", screenshot,
            ])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains("browser approval: ok"))
        #expect(FileManager.default.fileExists(atPath: screenshot), "screenshot artifact at \(screenshot)")
        let outcome = try await fixture.store.poll(deviceCode: issued.deviceCode, clientID: "fast")
        guard case .authorized(let userID, let scopes, let grantID) = outcome else {
            Issue.record("the device was not authorized: \(outcome)")
            return
        }
        #expect(userID == "alice" && scopes == ["profile"] && grantID == issued.grantID)
    }
}
