import Hummingbird
import Logging
import NIOCore

/// The request context of the device-authorization routes: Hummingbird's core context plus the
/// TCP peer address (for trusted-proxy decisions and per-IP brute-force limits).
public struct DeviceAuthorizationRequestContext: RequestContext, RemoteAddressRequestContext {
    /// Hummingbird's per-request storage.
    public var coreContext: CoreRequestContextStorage
    /// The TCP peer, or `nil` when unknown (Unix sockets, in-process tests).
    public let remoteAddress: SocketAddress?

    /// Creates the context of one request from its channel.
    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.remoteAddress = source.channel.remoteAddress
    }

    /// The peer's IP address as text, if it has one.
    public var peerIPAddress: String? { remoteAddress?.ipAddress }
}
