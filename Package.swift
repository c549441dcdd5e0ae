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


    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
    ],
    targets: [
        // C layer: hiredis (Debian's libhiredis-dev), found through pkg-config.
        .systemLibrary(
            name: "CHiredis",
            pkgConfig: "hiredis",
            providers: [.apt(["libhiredis-dev"])]
        ),
        // Swift binding: connections on their own threads, auto-pipelining, pool, scripts, URLs.
        .target(
            name: "RedisClient",
            dependencies: [
                "CHiredis",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
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

        // The API node executable: configuration, lifecycle, embedded Redis in development.

        // Benchmarks: each prints `BENCH name ours=… baseline=… unit=… ratio=…`.
        .executableTarget(
            name: "deviceauth-bench",
            dependencies: [
                "RedisClient",
                "DeviceAuthorization",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "RedisClientTests",
            dependencies: ["RedisClient"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "DeviceAuthorizationTests",
            dependencies: ["DeviceAuthorization", "RedisClient"],
            swiftSettings: swiftSettings
        ),

    ]
)
