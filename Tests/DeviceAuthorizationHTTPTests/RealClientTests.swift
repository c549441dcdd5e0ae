import DeviceAuthorizationHTTP
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
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
    @Test("Python oauthlib DeviceClient + requests complete the flow against a live server",
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

    @Test("headless Chromium: sign in, type the code, confirm, approve; the device then gets its token",
          .enabled(if: PythonClient.browserAvailable, "needs chromium, chromium-driver and python3 selenium"))
    func browserApproval() async throws {
        // The browser sends `Origin: http://127.0.0.1:PORT` with its form posts, so the public
        // base URL must be that origin (the server refuses posts from any other). HummingbirdTesting
        // always listens on a port of its own choosing, so the node runs as a plain Application on
        // a port picked first, and the device side talks to it with a live test client of its own.
        let port = try HTTPFixture.freePort()
        let fixture = try await HTTPFixture(secureCookies: false, publicBaseURL: "http://127.0.0.1:\(port)")
        defer { fixture.shutdown() }
        let node = fixture.app(port: port)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await node.runService() }
            defer { group.cancelAll() }
            var listening = false
            for _ in 0..<400 where !listening {
                listening = HTTPFixture.canConnect(port: port)
                if !listening { try await Task.sleep(for: .milliseconds(50)) }
            }
            try #require(listening, "the node did not start on port \(port)")
            let device = LiveNodeClient(host: "127.0.0.1", port: port)
            defer { Task { try? await device.client.shutdown() } }
            let issued = try await device.postForm("/oauth/device_authorization", [("client_id", "fast")])
            let userCode = try #require(issued.json["user_code"] as? String, "\(issued)")
            let deviceCode = try #require(issued.json["device_code"] as? String, "\(issued)")
            let screenshot = PythonClient.artifactsDirectory + "/verification-confirm.png"
            let result = try await PythonClient.run("browser_approval.py", arguments: [
                "http://127.0.0.1:\(port)", userCode, "Fast poller", "alice", "wonderland", screenshot,
            ])
            #expect(result.status == 0, "\(result.output)")
            #expect(result.output.contains("browser approval: ok"))
            #expect(FileManager.default.fileExists(atPath: screenshot), "screenshot artifact at \(screenshot)")
            let token = try await device.postForm("/oauth/token", [
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"), ("device_code", deviceCode), ("client_id", "fast"),
            ])
            #expect(token.status == .ok)
            #expect(token.json["access_token"] is String)
        }
    }
}

/// A HummingbirdTesting client on a node this test started itself (on a port it chose): the
/// device's two requests, as form posts.
struct LiveNodeClient {
    let client: TestClient

    init(host: String, port: Int) {
        client = TestClient(host: host, port: port, configuration: .init(timeout: .seconds(20)), eventLoopGroupProvider: .createNew)
        client.connect()
    }

    /// POSTs a form and returns the status and the JSON object of the answer.
    func postForm(_ path: String, _ parameters: [(String, String)]) async throws -> (status: HTTPResponse.Status, json: [String: Any]) {
        let body = parameters.map { "\($0.0)=\($0.1.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")" }.joined(separator: "&")
        var headers = HTTPFields()
        headers[.contentType] = "application/x-www-form-urlencoded"
        headers[.connection] = "keep-alive"
        let response = try await client.execute(TestClient.Request(path, method: .post, authority: "127.0.0.1", headers: headers, body: ByteBuffer(string: body)))
        let data = Data((response.body ?? ByteBuffer()).readableBytesView)
        return (response.head.status, (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:])
    }
}
