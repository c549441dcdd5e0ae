import DeviceAuthorization
import DeviceAuthorizationHTTP
import Foundation
import Testing

/// Client secrets as hashes or files; plaintext secrets only in development mode.
@Suite("Secrets from files, not the configuration in plaintext")
struct SecretsFromFilesTests {
    static func temporaryFile(_ text: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("deviceauth-secret-\(UUID().uuidString)").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test("a client secret from secret_file (trailing line break ignored) or secret_sha256 verifies; the wrong one does not")
    func clientSecretFromFile() throws {
        let path = try Self.temporaryFile("s3cret-from-a-file\n")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let fromFile = try ServerConfigurationFile.Client(clientID: "svc", scopes: ["profile"], secretFile: path).registeredClient()
        #expect(fromFile.isConfidential)
        #expect(fromFile.verifySecret("s3cret-from-a-file"))
        #expect(!fromFile.verifySecret("s3cret-from-a-file\n"))
        let hashed = try ServerConfigurationFile.Client(clientID: "svc", secretSHA256: "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b").registeredClient()
        #expect(hashed.verifySecret("secret"))
        let missing = #expect(throws: DeviceAuthorizationHTTPError.self) {
            try ServerConfigurationFile.Client(clientID: "svc", secretFile: "/nonexistent/secret").registeredClient()
        }
        #expect(missing?.message.contains("secret_file") == true)
        let both = #expect(throws: DeviceAuthorizationHTTPError.self) {
            try ServerConfigurationFile.Client(clientID: "svc", secret: "x", secretFile: path).registeredClient(allowPlaintextSecret: true)
        }
        #expect(both?.message.contains("give one of") == true)
    }

    @Test("a plaintext client secret is refused outside development mode, naming the alternatives; accepted in development")
    func plaintextSecretOnlyInDevelopment() throws {
        let entry = ServerConfigurationFile.Client(clientID: "svc", scopes: ["profile"], secret: "plaintext")
        let error = #expect(throws: DeviceAuthorizationHTTPError.self) { try entry.registeredClient() }
        #expect(error?.code == .invalidConfiguration)
        #expect(error?.message.contains("secret_sha256") == true && error?.message.contains("secret_file") == true, "\(error?.message ?? "")")
        #expect(try entry.registeredClient(allowPlaintextSecret: true).verifySecret("plaintext"))
    }
}
