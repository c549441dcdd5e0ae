import Foundation
import RedisClient
import TestProcesses

@testable import DeviceAuthorization

#if canImport(Glibc)
    import Glibc
#endif

/// A private server for tests that change server-wide settings (`maxmemory`, the eviction policy,
/// users), which must not touch the shared test server other suites use: ``RedisServerProcess``
/// with `REDIS_SERVER_BIN` (Valkey's in `make test-valkey`).
typealias PrivateRedis = RedisServerProcess

extension StoreFixture {
    /// A fixture on a private server instead of the shared one.
    init(server: RedisServerProcess, configure: (inout DeviceCodeStoreConfiguration) -> Void = { _ in }) throws {
        try self.init(url: server.url, configure: configure)
    }
}
