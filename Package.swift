// swift-tools-version: 6.1
import PackageDescription

/// Settings every Swift target shares. System library targets take none.
let swiftSettings: [SwiftSetting] = [
    // Swift 6 language mode: full data-race checking.
    .swiftLanguageMode(.v6),
    // `any` must be spelled out for existentials, so their cost is visible.
    .enableUpcomingFeature("ExistentialAny"),
    // A file sees only the modules it imports itself.
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "markov",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "markov", targets: ["markov"]),
        .library(name: "Redis", targets: ["Redis"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-configuration", from: "1.4.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/swift-websocket", from: "1.6.2"),
        .package(url: "https://github.com/adam-fowler/compress-nio", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
    ],
    targets: [
        // MARK: C libraries, each behind one door

        .systemLibrary(
            name: "CHiredis",
            pkgConfig: "hiredis",
            providers: [.apt(["libhiredis-dev"])]
        ),
        .systemLibrary(
            name: "CCurl",
            pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"])]
        ),

        // MARK: Redis client: knows nothing of Markov chains or Discord

        .target(
            name: "Redis",
            dependencies: [
                "CHiredis",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),

        // MARK: Markov chains: a pure core, and the chain store and trainer on Redis

        .target(name: "MarkovCore"),
        .target(
            name: "MarkovChains",
            dependencies: [
                "MarkovCore",
                "Redis",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            resources: [.copy("ChainLibrary.lua"), .copy("LeaseLibrary.lua")]
        ),

        // MARK: Discord: the protocol (pure), REST over libcurl, the gateway runtime, and a fake Discord for tests

        .target(name: "DiscordProtocol", dependencies: ["MarkovCore"]),
        .target(
            name: "DiscordREST",
            dependencies: [
                "CCurl",
                "DiscordProtocol",
                "Redis",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .target(
            name: "DiscordGateway",
            dependencies: [
                "DiscordProtocol",
                "DiscordREST",
                "MarkovChains",
                "MarkovCore",
                "Redis",
                .product(name: "CompressNIO", package: "compress-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "WSClient", package: "swift-websocket"),
            ]
        ),
        .target(
            name: "DiscordResponder",
            dependencies: [
                "DiscordProtocol",
                "DiscordREST",
                "MarkovChains",
                "MarkovCore",
                "Redis",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "FakeDiscord",
            dependencies: [
                "DiscordProtocol",
                "MarkovCore",
                .product(name: "CompressNIO", package: "compress-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ]
        ),

        // MARK: Operations: metrics, health and readiness over HTTP

        .target(
            name: "Observability",
            dependencies: [
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),

        // MARK: The local consoles of `markov up`: the conversation both share, and the web console

        .target(
            name: "LocalConsole",
            dependencies: [
                "DiscordREST",
                "DiscordResponder",
                "MarkovChains",
                "MarkovCore",
                "Observability",
                "Redis",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            resources: [.copy("Assets")]
        ),

        // MARK: The one executable

        .executableTarget(
            name: "markov",
            dependencies: [
                "Redis",
                "MarkovCore",
                "MarkovChains",
                "DiscordGateway",
                "DiscordProtocol",
                "DiscordREST",
                "DiscordResponder",
                "LocalConsole",
                "Observability",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ]
        ),

        // MARK: Benchmarks (run by bench/run, never by `swift test`)

        .executableTarget(
            name: "RedisBench",
            dependencies: [
                "Redis",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "bench/RedisBench"
        ),

        .executableTarget(
            name: "ChainBench",
            dependencies: [
                "MarkovChains",
                "MarkovCore",
                "Redis",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "bench/ChainBench"
        ),

        .executableTarget(
            name: "GatewayBench",
            dependencies: [
                "FakeDiscord",
                "Redis",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "bench/GatewayBench"
        ),

        // MARK: Tests

        .testTarget(name: "MarkovCoreTests", dependencies: ["MarkovCore"]),
        .testTarget(name: "DiscordProtocolTests", dependencies: ["DiscordProtocol", "MarkovCore"]),
        .testTarget(name: "LocalConsoleTests", dependencies: ["LocalConsole"]),
        .testTarget(
            name: "DiscordGatewayTests",
            dependencies: [
                // The process tests run the executable.
                "markov",
                "DiscordGateway",
                "DiscordProtocol",
                "DiscordREST",
                "DiscordResponder",
                "FakeDiscord",
                "MarkovChains",
                "MarkovCore",
                "Redis",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "WSClient", package: "swift-websocket"),
            ]
        ),
        .testTarget(
            name: "MarkovChainsTests",
            dependencies: [
                // The process tests run the executable; depending on it makes `swift test` build it.
                "markov",
                "MarkovChains",
                "MarkovCore",
                "Redis",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            resources: [.copy("Fixtures/ChainLibraryV1.lua")]
        ),
        .testTarget(
            name: "RedisTests",
            dependencies: [
                "Redis",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
    ]
)

for target in package.targets where target.type != .system {
    target.swiftSettings = (target.swiftSettings ?? []) + swiftSettings
}
