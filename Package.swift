// swift-tools-version: 6.1
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "deviceauth",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "RedisClient", targets: ["RedisClient"]),
        .library(name: "DeviceAuthorization", targets: ["DeviceAuthorization"]),
        .library(name: "DeviceAuthorizationHTTP", targets: ["DeviceAuthorizationHTTP"]),
        .executable(name: "deviceauth-server", targets: ["deviceauth-server"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache.git", from: "2.1.1"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.7.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
    ],
    targets: [
        // C layer: hiredis (Debian's libhiredis-dev), found through pkg-config.
        .systemLibrary(
            name: "CHiredis",
            pkgConfig: "hiredis",
            providers: [.apt(["libhiredis-dev"])]
        ),
        // Swift binding: SwiftNIO channels with hiredis as the codec, TLS, auto-pipelining, pool, scripts, URLs.
        .target(
            name: "RedisClient",
            dependencies: [
                "CHiredis",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: swiftSettings
        ),
        // The domain: RFC 8628 device codes on Redis (key schema, Lua scripts, DeviceCodeStore).
        .target(
            name: "DeviceAuthorization",
            dependencies: [
                "RedisClient",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: swiftSettings
        ),
        // The API node's routes: RFC 8628 endpoints, verification page, clients, tokens, metrics.
        .target(
            name: "DeviceAuthorizationHTTP",
            dependencies: [
                "DeviceAuthorization",
                "RedisClient",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            resources: [.copy("Templates"), .copy("OpenAPI/openapi.json")],
            swiftSettings: swiftSettings
        ),
        // The API node executable: configuration, lifecycle, embedded Redis in development.
        .executableTarget(
            name: "deviceauth-server",
            dependencies: [
                "DeviceAuthorizationHTTP",
                "DeviceAuthorization",
                "RedisClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // The load-test harness: simulated devices and users against API nodes, or the store alone.
        .executableTarget(
            name: "deviceauth-loadtest",
            dependencies: [
                "DeviceAuthorization",
                "RedisClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // Benchmarks: each prints `BENCH name ours=… baseline=… unit=… ratio=…`.
        .executableTarget(
            name: "deviceauth-bench",
            dependencies: [
                "RedisClient",
                "DeviceAuthorization",
                "DeviceAuthorizationHTTP",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // The one home of the loopback-port and server-process helpers of every test target.
        .target(
            name: "TestProcesses",
            path: "Tests/TestProcesses",
            swiftSettings: swiftSettings
        ),
        // Server-free tests (no Redis, no sockets): codes, parsers, script replies, URLs, cluster
        // slots and redirect handling. `make unit` runs them alone, in seconds.
        .testTarget(
            name: "UnitTests",
            dependencies: [
                "RedisClient", "DeviceAuthorization", "DeviceAuthorizationHTTP",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "RedisClientTests",
            dependencies: ["RedisClient", "TestProcesses"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "DeviceAuthorizationTests",
            dependencies: ["DeviceAuthorization", "RedisClient", "TestProcesses"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "LoadTestHarnessTests",
            dependencies: [
                "deviceauth-loadtest",
                "RedisClient",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "DeviceAuthorizationHTTPTests",
            dependencies: [
                "DeviceAuthorizationHTTP",
                "DeviceAuthorization",
                "RedisClient",
                "TestProcesses",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
            ],
            // Python helpers the tests run (oauthlib client, Selenium browser), not Swift sources.
            exclude: ["Python"],
            swiftSettings: swiftSettings
        ),
    ]
)
