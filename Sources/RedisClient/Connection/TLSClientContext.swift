import Foundation
import NIOCore
import NIOSSL

/// The TLS side of ``RedisTLSConfiguration``: one swift-nio-ssl context (trust roots, client
/// certificate and key loaded once), shared by every connection of a client.
final class TLSClientContext: Sendable {
    let configuration: RedisTLSConfiguration
    private let context: NIOSSLContext

    /// Loads the CA file, the client certificate and key.
    /// - Throws: ``RedisError/Code/tlsFailed`` naming the file that cannot be read or parsed.
    init(_ configuration: RedisTLSConfiguration) throws {
        self.configuration = configuration
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        tls.certificateVerification = .fullVerification
        if let caFile = configuration.caFile {
            let roots = try Self.load("CA file", caFile) { try NIOSSLCertificate.fromPEMFile(caFile) }
            guard !roots.isEmpty else { throw RedisError(.tlsFailed, "the CA file \(caFile) holds no PEM certificate") }
            tls.trustRoots = .certificates(roots)
        }
        switch (configuration.certificateFile, configuration.privateKeyFile) {
        case (let certificateFile?, let keyFile?):
            let chain = try Self.load("client certificate file", certificateFile) { try NIOSSLCertificate.fromPEMFile(certificateFile) }
            guard !chain.isEmpty else { throw RedisError(.tlsFailed, "the client certificate file \(certificateFile) holds no PEM certificate") }
            tls.certificateChain = chain.map { .certificate($0) }
            let key = try Self.load("client key file", keyFile) { try NIOSSLPrivateKey(file: keyFile, format: .pem) }
            tls.privateKey = .privateKey(key)
        case (nil, nil):
            break
        default:
            throw RedisError(.tlsFailed, "a client certificate needs both tls_cert_file and tls_key_file")
        }
        do {
            self.context = try NIOSSLContext(configuration: tls)
        } catch {
            throw RedisError(.tlsFailed, "cannot set up TLS: \(Self.describe(error))", underlying: error)
        }
    }

    private static func load<T>(_ what: String, _ path: String, _ body: () throws -> T) throws -> T {
        guard FileManager.default.isReadableFile(atPath: path) else {
            throw RedisError(.tlsFailed, "the \(what) \(path) does not exist or cannot be read")
        }
        do {
            return try body()
        } catch {
            throw RedisError(.tlsFailed, "the \(what) \(path) is not valid PEM: \(describe(error))", underlying: error)
        }
    }

    /// A client handler for one connection to `endpoint`. The name sent (SNI) and verified is
    /// ``RedisTLSConfiguration/serverName``, else the endpoint's host; an IP address is not sent
    /// as SNI and is verified against the certificate's IP addresses.
    /// The name a connection to `endpoint` verifies: ``RedisTLSConfiguration/serverName``, else the host (or IP).
    func verifiedName(for endpoint: RedisEndpoint) -> String? {
        if let name = configuration.serverName { return name }
        if case .tcp(let host, _) = endpoint { return host }
        return nil
    }

    func makeHandler(for endpoint: RedisEndpoint) throws -> NIOSSLClientHandler {
        var name = configuration.serverName
        if name == nil, case .tcp(let host, _) = endpoint, !Self.isIPAddress(host) { name = host }
        do {
            return try NIOSSLClientHandler(context: context, serverHostname: name)
        } catch {
            throw RedisError(.tlsFailed, "cannot start TLS with Redis at \(endpoint): \(Self.describe(error))", underlying: error)
        }
    }

    static func isIPAddress(_ host: String) -> Bool {
        (try? SocketAddress(ipAddress: host, port: 0)) != nil
    }

    static func isTLSError(_ error: any Error) -> Bool {
        error is NIOSSLError || error is NIOSSLExtraError || error is BoringSSLError
    }

    /// Whether `error` says only that the peer closed the connection before the handshake ended
    /// (EOF, or a close without `close_notify`), as opposed to a refused certificate or setting.
    static func isClosedDuringHandshake(_ error: any Error) -> Bool {
        switch error as? NIOSSLError {
        case .handshakeFailed(.sslError(let stack)): stack.contains(.eofDuringHandshake)
        case .uncleanShutdown: true
        default: false
        }
    }

    /// What went wrong, in words an operator can act on ("certificate has expired", "unable to get
    /// local issuer certificate", the host name that did not match).
    static func describe(_ error: any Error, expecting name: String? = nil) -> String {
        switch error {
        case NIOSSLError.handshakeFailed(let inner):
            return "handshake failed: \(reason(inner))"
        case let extra as NIOSSLExtraError where extra == .failedToValidateHostname:
            return "the server's certificate is not valid for this host name\(name.map { ": it does not name \($0)" } ?? "") (\(extra))"
        default:
            return String(describing: error)
        }
    }

    private static func reason(_ error: BoringSSLError) -> String {
        switch error {
        case .sslError(let stack), .unknownError(let stack):
            // Each entry ends with the BoringSSL source file and line it came from (a path on
            // the build machine): noise to an operator, so it is cut.
            let text = stack.map { entry in
                let description = entry.description
                guard let at = description.range(of: " at /", options: .backwards) else { return description }
                return String(description[..<at.lowerBound])
            }.joined(separator: "; ")
            if text.contains("CERTIFICATE_VERIFY_FAILED") { return "certificate verify failed (\(text))" }
            return text
        default:
            return String(describing: error)
        }
    }
}
