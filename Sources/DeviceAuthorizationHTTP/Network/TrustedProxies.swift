import Foundation
import Hummingbird
import HTTPTypes

/// The set of reverse-proxy addresses whose forwarding headers (`X-Forwarded-For`, the user
/// header) are believed. Entries are IPv4/IPv6 addresses or CIDR ranges (`10.0.0.0/8`, `::1/128`).
public struct TrustedProxies: Sendable, Hashable {
    struct Range: Sendable, Hashable {
        var network: [UInt8]
        var prefixLength: Int

        func contains(_ address: [UInt8]) -> Bool {
            guard address.count == network.count else { return false }
            var remaining = prefixLength
            for index in network.indices where remaining > 0 {
                let bits = min(8, remaining)
                let mask: UInt8 = bits == 8 ? 0xFF : ~(0xFF >> UInt8(bits))
                if address[index] & mask != network[index] & mask { return false }
                remaining -= bits
            }
            return true
        }
    }

    private var ranges: [Range]

    /// No proxy is trusted.
    public static let none = TrustedProxies(ranges: [])

    private init(ranges: [Range]) { self.ranges = ranges }

    /// Parses addresses and CIDR ranges.
    /// - Throws: ``DeviceAuthorizationHTTPError`` with ``DeviceAuthorizationHTTPError/Code/invalidConfiguration``
    ///   for an entry that is neither.
    public init(_ entries: [String]) throws {
        ranges = try entries.map { entry in
            let parts = entry.split(separator: "/", maxSplits: 1).map { String($0).trimmingCharacters(in: .whitespaces) }
            guard let address = IPAddressParser.parse(parts[0]) else {
                throw DeviceAuthorizationHTTPError(.invalidConfiguration, "trusted proxy '\(entry)' is not an IP address or CIDR range")
            }
            var length = address.count * 8
            if parts.count == 2 {
                guard let prefix = Int(parts[1]), (0...address.count * 8).contains(prefix) else {
                    throw DeviceAuthorizationHTTPError(.invalidConfiguration, "trusted proxy '\(entry)' has an invalid prefix length")
                }
                length = prefix
            }
            return Range(network: address, prefixLength: length)
        }
    }

    /// Whether `address` (textual IP) belongs to a trusted proxy.
    public func contains(_ address: String?) -> Bool {
        guard let address, let bytes = IPAddressParser.parse(address) else { return false }
        return ranges.contains { $0.contains(bytes) }
    }

    /// Whether any proxy is configured.
    public var isEmpty: Bool { ranges.isEmpty }

    /// The client's IP for rate limits: the peer address, or — only when the peer is a trusted
    /// proxy — the right-most `X-Forwarded-For` entry that is not itself a trusted proxy.
    func clientIP(peer: String?, forwardedFor: [String]) -> String {
        guard let peer else { return "unknown" }
        guard contains(peer), !forwardedFor.isEmpty else { return peer }
        let hops = forwardedFor.flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespaces) }
        for hop in hops.reversed() where !contains(hop) {
            // Unparseable entries are kept as-is: they still form one rate-limit bucket.
            return String(hop.prefix(64))
        }
        return hops.first.map { String($0.prefix(64)) } ?? peer
    }

    /// The brute-force bucket of a client IP: the address itself for IPv4, its /64 network for
    /// IPv6 (one host usually owns a whole /64, so per-address limits would be easy to dodge).
    static func rateLimitBucket(_ clientIP: String) -> String {
        guard let bytes = IPAddressParser.parse(clientIP), bytes.count == 16 else { return clientIP }
        return hexString(bytes[0..<8]) + "::/64"
    }
}

/// Parses textual IPv4 / IPv6 addresses into bytes (IPv4-mapped IPv6 becomes IPv4).
enum IPAddressParser {
    static func parse(_ text: String) -> [UInt8]? {
        var text = text
        if text.hasPrefix("[") && text.hasSuffix("]") { text = String(text.dropFirst().dropLast()) }
        if let zone = text.firstIndex(of: "%") { text = String(text[..<zone]) }
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            return withUnsafeBytes(of: &v4) { Array($0) }
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            let bytes = withUnsafeBytes(of: &v6) { Array($0) }
            if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xFF && bytes[11] == 0xFF {
                return Array(bytes[12..<16])
            }
            return bytes
        }
        return nil
    }
}

/// Who sent a request, as far as the server can tell.
public struct RequestOrigin: Sendable, Hashable {
    /// The TCP peer's IP address, or `nil` when unknown (Unix socket, tests).
    public var peerAddress: String?
    /// Whether the peer is a configured trusted proxy.
    public var peerIsTrustedProxy: Bool
    /// The client IP used for brute-force limits (forwarded only through trusted proxies).
    public var clientIP: String

    /// Creates an origin.
    /// - Parameters:
    ///   - peerAddress: the TCP peer's IP.
    ///   - peerIsTrustedProxy: whether it is a trusted proxy.
    ///   - clientIP: the client IP used for limits.
    public init(peerAddress: String? = nil, peerIsTrustedProxy: Bool = false, clientIP: String = "unknown") {
        self.peerAddress = peerAddress
        self.peerIsTrustedProxy = peerIsTrustedProxy
        self.clientIP = clientIP
    }

    /// Works out the origin of `request` from the peer address and trusted proxies.
    public init(request: Request, peerAddress: String?, trustedProxies: TrustedProxies) {
        let trusted = trustedProxies.contains(peerAddress)
        let forwarded = request.headers[values: .xForwardedFor]
        self.init(peerAddress: peerAddress, peerIsTrustedProxy: trusted,
                  clientIP: trustedProxies.clientIP(peer: peerAddress, forwardedFor: forwarded))
    }

    /// The key brute-force limits count under (IPv6 clients share a bucket per /64).
    public var rateLimitKey: String { TrustedProxies.rateLimitBucket(clientIP) }
}

extension HTTPField.Name {
    static let xForwardedFor = HTTPField.Name("X-Forwarded-For")!
    static let xRequestID = HTTPField.Name("X-Request-Id")!
    static let pragma = HTTPField.Name("Pragma")!
    static let xFrameOptions = HTTPField.Name("X-Frame-Options")!
    static let referrerPolicy = HTTPField.Name("Referrer-Policy")!
    static let xContentTypeOptions = HTTPField.Name("X-Content-Type-Options")!
}
