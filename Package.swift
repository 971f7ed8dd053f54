// swift-tools-version:6.2
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "agent-service",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "agent-service", targets: ["AgentService"]),
        .executable(name: "agent-bench", targets: ["Benchmarks"]),
        .library(name: "ThreadStore", targets: ["ThreadStore"]),
        .library(name: "Claude", targets: ["Claude"]),
        .library(name: "ClaudeStub", targets: ["ClaudeStub"]),
        .library(name: "Tools", targets: ["Tools"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1", traits: []),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.0"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
    ],
    targets: [
        // System libraries (C).
        .systemLibrary(
            name: "CPostgres",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"]), .brew(["libpq"])]
        ),
        // The service's memory allocator (Linux): see README, "Memory allocator".
        .systemLibrary(
            name: "CMimalloc",
            providers: [.apt(["libmimalloc-dev"])]
        ),
        .systemLibrary(
            name: "CCurl",
            pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"]), .brew(["curl"])]
        ),

        // Domain modules.
        .target(
            name: "ThreadStore",
            dependencies: [
                "CPostgres",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings,
            plugins: ["EmbedMigrations"]
        ),
        // Compiles Migrations/*.sql into ThreadStore so an installed binary carries its schema.
        .plugin(
            name: "EmbedMigrations",
            capability: .buildTool(),
            dependencies: ["EmbedMigrationsTool"]
        ),
        // Compiles Web/* (the reference page) into AgentService, with the same tool.
        .plugin(
            name: "EmbedWebAssets",
            capability: .buildTool(),
            dependencies: ["EmbedMigrationsTool"]
        ),
        .executableTarget(
            name: "EmbedMigrationsTool",
            path: "Plugins/EmbedMigrationsTool"
        ),
        .target(
            name: "Claude",
            dependencies: [
                "CCurl",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // MCP client (stdio and Streamable HTTP) and the tool registry, with the built-in memory search.
        .target(
            name: "Tools",
            dependencies: [
                "CCurl",
                "ThreadStore",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "SupabaseAuth",
            dependencies: [
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "ClaudeStub",
            dependencies: [
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),

        // The connection's event loop as a request context and a task executor (the service's and relay-floor's).
        .target(
            name: "EventLoopExecution",
            dependencies: [
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),

        // The executable: agent layer, HTTP API, CLI.
        .executableTarget(
            name: "AgentService",
            dependencies: [
                "ThreadStore",
                "Claude",
                "ClaudeStub",
                "Tools",
                "SupabaseAuth",
                "EventLoopExecution",
                .target(name: "CMimalloc", condition: .when(platforms: [.linux])),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            swiftSettings: swiftSettings,
            plugins: ["EmbedWebAssets"]
        ),

        // Benchmarks (commands that print figures; never assertions).
        .executableTarget(
            name: "Benchmarks",
            dependencies: [
                "ThreadStore",
                "SupabaseAuth",
                // PgBouncer and nginx for `service --instances N --pooler --proxy`, the same as the tests start.
                "TestSupport",
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
                "Claude",
                "ClaudeStub",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                // `relay-floor`: the relay built from the service's own stack, for `service --relay-baseline`.
                .product(name: "Hummingbird", package: "hummingbird"),
                "EventLoopExecution",
            ],
            swiftSettings: swiftSettings
        ),

        // Tests.
        .target(
            name: "TestSupport",
            dependencies: [
                "ThreadStore",
                "ClaudeStub",
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/TestSupport",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ThreadStoreTests",
            dependencies: ["ThreadStore", "TestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ToolsTests",
            dependencies: [
                "Tools", "ThreadStore", "TestSupport",
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["Fixtures"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ClaudeTests",
            dependencies: [
                "Claude", "ClaudeStub", "TestSupport",
                .product(name: "PropertyBased", package: "swift-property-based"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "AgentServiceTests",
            dependencies: [
                "AgentService", "ThreadStore", "Claude", "ClaudeStub", "TestSupport", "SupabaseAuth", "EventLoopExecution",
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
