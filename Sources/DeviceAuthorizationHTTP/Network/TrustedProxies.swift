import Crypto
import DeviceAuthorization
import Foundation
import HTTPTypes
import Hummingbird

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

    /// A shared secret a trusted proxy must also send, in a header of its own: the address alone
    /// is not enough where other workloads can share it (a pod network, a NAT).
    struct ProxySecret: Sendable, Hashable {
        var header: HTTPField.Name
        /// SHA-256 of the secret: comparing hashes takes the same time whatever the presented length.
        var sha256: [UInt8]
    }

    private var ranges: [Range]
    private var proxySecret: ProxySecret?

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

    /// Parses addresses and CIDR ranges, and requires every request from them to carry
    /// `secret` in `header` before any forwarding header of theirs is believed.
    /// - Parameters:
    ///   - entries: addresses and CIDR ranges.
    ///   - secretHeader: the header the proxy sets (`X-Deviceauth-Proxy-Secret`).
    ///   - secret: the shared secret (at least 32 bytes; the proxy must also strip a client's copy).
    /// - Throws: ``DeviceAuthorizationHTTPError`` with ``DeviceAuthorizationHTTPError/Code/invalidConfiguration``
    ///   for a bad entry, header name or a short secret.
    public init(_ entries: [String], secretHeader: String, secret: [UInt8]) throws {
        try self.init(entries)
        guard let header = HTTPField.Name(secretHeader) else {
            throw DeviceAuthorizationHTTPError(.invalidConfiguration, "proxy_secret_header '\(secretHeader)' is not a valid header name")
        }
        guard secret.count >= 32 else {
            throw DeviceAuthorizationHTTPError(.invalidConfiguration, "the proxy secret must be at least 32 bytes")
        }
        proxySecret = ProxySecret(header: header, sha256: Array(SHA256.hash(data: secret)))
    }

    /// Whether a proxy secret is required (``init(_:secretHeader:secret:)``).
    public var requiresProxySecret: Bool { proxySecret != nil }

    /// Whether `request` carries the proxy secret exactly once (always `true` when none is required).
    func carriesProxySecret(_ request: Request) -> Bool {
        guard let proxySecret else { return true }
        let values = request.headers[values: proxySecret.header]
        guard values.count == 1 else { return false }
        return constantTimeEquals(Array(SHA256.hash(data: Array(values[0].utf8))), proxySecret.sha256)
    }

    /// The entries whose prefix is shorter than /`ipv4` (IPv4) or /`ipv6` (IPv6), as text: a
    /// range that wide (`0.0.0.0/0`, `10.0.0.0/8`) holds hosts that are not proxies.
    public func entriesWiderThan(ipv4: Int, ipv6: Int) -> [String] {
        ranges.filter { $0.prefixLength < ($0.network.count == 4 ? ipv4 : ipv6) }
            .map { "\(IPAddressParser.format($0.network) ?? "?")/\($0.prefixLength)" }
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
    /// Entries lose their ports (`ip:port`, `[v6]:port`) and are written canonically, so one
    /// address is one bucket however a proxy spells it.
    func clientIP(peer: String?, forwardedFor: [String], peerTrusted: Bool? = nil) -> String {
        guard let peer else { return "unknown" }
        guard peerTrusted ?? contains(peer), !forwardedFor.isEmpty else { return peer }
        let hops = forwardedFor.flatMap { $0.split(separator: ",") }.map { Self.forwardedAddress($0) }
        for hop in hops.reversed() where !contains(hop) {
            // Unparseable entries are kept as-is: they still form one rate-limit bucket.
            return String(hop.prefix(64))
        }
        return hops.first.map { String($0.prefix(64)) } ?? peer
    }

    /// One `X-Forwarded-For` entry as a bare, canonical address: `203.0.113.7:4711` →
    /// `203.0.113.7`, `[2001:DB8::1]:443` → `2001:db8::1`; anything unparseable stays as sent
    /// (trimmed), still one bucket.
    static func forwardedAddress(_ entry: some StringProtocol) -> String {
        var text = entry.trimmingCharacters(in: .whitespaces)
        if text.hasPrefix("[") {
            // [v6] or [v6]:port
            if let close = text.firstIndex(of: "]") {
                let rest = text[text.index(after: close)...]
                if rest.isEmpty || (rest.first == ":" && rest.dropFirst().allSatisfy(\.isNumber)) {
                    text = String(text[text.index(after: text.startIndex)..<close])
                }
            }
        } else if let colon = text.firstIndex(of: ":"), text[text.index(after: colon)...].allSatisfy(\.isNumber),
            IPAddressParser.parse(String(text[..<colon]))?.count == 4
        {
            // v4:port (an IPv6 address has more than one colon and is left whole)
            text = String(text[..<colon])
        }
        guard let bytes = IPAddressParser.parse(text), let canonical = IPAddressParser.format(bytes) else { return text }
        return canonical
    }

    /// The brute-force bucket of a client IP: the address itself for IPv4, its /64 network for
    /// IPv6 (one host usually owns a whole /64, so per-address limits would be easy to dodge).
    static func rateLimitBucket(_ clientIP: String) -> String {
        guard let bytes = IPAddressParser.parse(clientIP), bytes.count == 16 else { return clientIP }
        return hexString(bytes[0..<8]) + "::/64"
    }

    /// A coarser bucket for limits one party should not dodge by rotating networks: the /48 of an
    /// IPv6 client (a site's usual allocation, 65 536 /64s), the address itself for IPv4.
    static func coarseRateLimitBucket(_ clientIP: String) -> String {
        guard let bytes = IPAddressParser.parse(clientIP), bytes.count == 16 else { return clientIP }
        return hexString(bytes[0..<6]) + "::/48"
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

    /// The canonical text of 4 or 16 address bytes (`inet_ntop`), or `nil` for other lengths.
    static func format(_ bytes: [UInt8]) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let family = bytes.count == 4 ? AF_INET : bytes.count == 16 ? AF_INET6 : -1
        guard family >= 0 else { return nil }
        let result = bytes.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &buffer, socklen_t(buffer.count)) }
        guard result != nil else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
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

    /// Works out the origin of `request` from the peer address and trusted proxies. A peer in the
    /// trusted ranges that does not present the proxy secret (when one is configured) is treated
    /// as any other client: its `X-Forwarded-For` and user header are ignored.
    public init(request: Request, peerAddress: String?, trustedProxies: TrustedProxies) {
        let trusted = trustedProxies.contains(peerAddress) && trustedProxies.carriesProxySecret(request)
        let forwarded = request.headers[values: .xForwardedFor]
        self.init(
            peerAddress: peerAddress, peerIsTrustedProxy: trusted,
            clientIP: trustedProxies.clientIP(peer: peerAddress, forwardedFor: forwarded, peerTrusted: trusted))
    }

    /// The key brute-force limits count under (IPv6 clients share a bucket per /64).
    public var rateLimitKey: String { TrustedProxies.rateLimitBucket(clientIP) }

    /// A coarser key for a second, looser limit: IPv6 clients per /48 (so one site rotating
    /// through its /64s is still one party), IPv4 clients per address (as ``rateLimitKey``).
    public var coarseRateLimitKey: String { TrustedProxies.coarseRateLimitBucket(clientIP) }
}

extension HTTPField.Name {
    static let xForwardedFor = HTTPField.Name("X-Forwarded-For")!
    static let xRequestID = HTTPField.Name("X-Request-Id")!
    static let pragma = HTTPField.Name("Pragma")!
    static let xFrameOptions = HTTPField.Name("X-Frame-Options")!
    static let referrerPolicy = HTTPField.Name("Referrer-Policy")!
    static let xContentTypeOptions = HTTPField.Name("X-Content-Type-Options")!
}
