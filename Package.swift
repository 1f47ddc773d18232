// swift-tools-version: 6.1
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "capsule",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "capsule", targets: ["capsule"]),
        .executable(name: "capsule-worker", targets: ["CCapsuleWorker"]),
        .executable(name: "capsule-net", targets: ["capsule-net"]),
        .executable(name: "capsule-db", targets: ["capsule-db"]),
        .executable(name: "capsule-server", targets: ["capsule-server"]),
        .library(name: "CapsuleRuntime", targets: ["CapsuleRuntime"]),
        .library(name: "CapsuleKit", targets: ["CapsuleKit"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        // Tests only: our own SHA-256 (CapsuleOS) is checked against it.
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        // Already in the graph through async-http-client; capsule-net's WebSocket client uses them directly.
        .package(url: "https://github.com/apple/swift-nio", from: "2.81.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.29.0"),
        // capsule-server's HTTP stack.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        // System libraries the C worker links (each a module map over a one-line header).
        .systemLibrary(name: "CPython", pkgConfig: "python3-embed",
                       providers: [.apt(["libpython3-dev"])]),
        .systemLibrary(name: "CSeccomp", pkgConfig: "libseccomp",
                       providers: [.apt(["libseccomp-dev"])]),
        .systemLibrary(name: "CCap", pkgConfig: "libcap",
                       providers: [.apt(["libcap-dev"])]),

        // The sandbox: single-threaded C that sets up every stage, then embeds CPython.
        .executableTarget(
            name: "CCapsuleWorker",
            dependencies: ["CPython", "CSeccomp", "CCap"],
            cSettings: [.unsafeFlags(["-Wall", "-Wextra", "-Werror=implicit-function-declaration", "-Wno-missing-field-initializers"])]
        ),

        // System calls Swift cannot make through Glibc (openat2).
        .target(name: "CCapsuleSys"),
        .target(name: "CapsuleOS", dependencies: ["CCapsuleSys"], swiftSettings: swiftSettings),
        .target(name: "CapsuleProtocol", swiftSettings: swiftSettings),
        .target(name: "CapsulePolicy", dependencies: ["CapsuleOS"], swiftSettings: swiftSettings),
        .target(name: "CapsuleSandbox",
                dependencies: ["CapsuleOS", "CapsulePolicy"],
                swiftSettings: swiftSettings),
        .target(name: "CapsuleCapabilities",
                dependencies: ["CapsuleOS", "CapsulePolicy", "CapsuleProtocol"],
                swiftSettings: swiftSettings),
        .target(name: "CapsuleRuntime",
                dependencies: ["CapsuleOS", "CapsulePolicy", "CapsuleProtocol", "CapsuleSandbox", "CapsuleCapabilities"],
                swiftSettings: swiftSettings),
        // The audit log: a hash-chained JSONL file per log, shared by every session of the process.
        .target(name: "CapsuleAudit",
                dependencies: ["CapsuleOS", "CapsulePolicy", "CapsuleProtocol", "CapsuleCapabilities"],
                swiftSettings: swiftSettings),
        .executableTarget(
            name: "capsule",
            dependencies: [
                "CapsuleRuntime", "CapsulePolicy", "CapsuleSandbox", "CapsuleProtocol", "CapsuleCapabilities", "CapsuleAudit",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),

        // The net capability's requests, in a process of their own: the only part that links an
        // HTTP and TLS stack, so the supervisor's cold start never pays for it.
        .target(name: "CapsuleHelper", dependencies: ["CapsuleProtocol"], swiftSettings: swiftSettings),
        .executableTarget(
            name: "capsule-net",
            dependencies: ["CapsuleCapabilities", "CapsuleProtocol", "CapsuleHelper",
                           .product(name: "AsyncHTTPClient", package: "async-http-client"),
                           .product(name: "NIOWebSocket", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                           .product(name: "NIOSSL", package: "swift-nio-ssl")],
            swiftSettings: swiftSettings
        ),
        // The db capability's SQL, likewise in a process of its own (GRDB and SQLite).
        .executableTarget(
            name: "capsule-db",
            dependencies: ["CapsuleProtocol", "CapsuleHelper",
                           .product(name: "GRDB", package: "GRDB.swift"), .product(name: "GRDBSQLite", package: "GRDB.swift")],
            swiftSettings: swiftSettings
        ),

        // `capsule serve`: sessions over HTTP, in a program of its own (capsule serve runs it), so
        // that the HTTP stack never loads in capsule's cold start.
        .target(name: "CapsuleServer",
                dependencies: ["CapsuleRuntime", "CapsulePolicy", "CapsuleSandbox", "CapsuleProtocol", "CapsuleCapabilities",
                               "CapsuleAudit", "CapsuleOS", .product(name: "Hummingbird", package: "hummingbird"),
                               .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")],
                swiftSettings: swiftSettings),
        .executableTarget(
            name: "capsule-server",
            dependencies: ["CapsuleServer", "CapsulePolicy", "CapsuleSandbox", "CapsuleOS",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: swiftSettings
        ),

        // For programs that embed capsule: sessions, policies and their own capabilities.
        .target(name: "CapsuleKit",
                dependencies: ["CapsuleCapabilities", "CapsulePolicy", "CapsuleProtocol", "CapsuleRuntime", "CapsuleSandbox", "CapsuleAudit"],
                swiftSettings: swiftSettings),
        .executableTarget(name: "capsule-kit-example", dependencies: ["CapsuleKit"], path: "examples/kit",
                          swiftSettings: swiftSettings),

        // scripts/bench-calls: capability call round trips beside a raw round trip.
        .executableTarget(
            name: "capsule-bench-calls",
            dependencies: ["CapsuleRuntime", "CapsuleCapabilities", "CapsulePolicy", "CapsuleSandbox", "CapsuleAudit", "CapsuleOS", "CapsuleProtocol"],
            path: "Benchmarks/CallRoundTrip",
            swiftSettings: swiftSettings
        ),
        // scripts/bench-sessions: the Session API's round trips beside a raw pipe, memory, many sessions.
        .executableTarget(
            name: "capsule-bench-sessions",
            dependencies: ["CapsuleRuntime", "CapsulePolicy", "CapsuleSandbox", "CapsuleOS", "CapsuleProtocol"],
            path: "Benchmarks/Sessions",
            swiftSettings: swiftSettings
        ),

        // scripts/bench-preload: [sandbox] preload = ["pandas"] against none, new and pooled sessions, memory.
        .executableTarget(
            name: "capsule-bench-preload",
            dependencies: ["CapsuleRuntime", "CapsulePolicy", "CapsuleSandbox", "CapsuleOS"],
            path: "Benchmarks/Preload",
            swiftSettings: swiftSettings
        ),

        .target(name: "CapsuleTestSupport", path: "Tests/CapsuleTestSupport", swiftSettings: swiftSettings),
        .testTarget(name: "CapsuleProtocolTests", dependencies: ["CapsuleProtocol", "CapsuleTestSupport"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "CapsulePolicyTests", dependencies: ["CapsulePolicy", "CapsuleTestSupport"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "CapsuleSandboxTests", dependencies: ["CapsuleSandbox", "CapsulePolicy", "CapsuleOS"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "CapsuleRuntimeTests", dependencies: ["CapsuleRuntime", "CapsulePolicy", "CapsuleProtocol"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "CapsuleCapabilitiesTests",
                    dependencies: ["CapsuleCapabilities", "CapsulePolicy", "CapsuleProtocol", "CapsuleOS"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "CapsuleAuditTests",
                    dependencies: ["CapsuleAudit", "CapsuleCapabilities", "CapsulePolicy", "CapsuleProtocol", "CapsuleOS",
                                   .product(name: "Crypto", package: "swift-crypto")],
                    swiftSettings: swiftSettings),
        .testTarget(name: "CapsuleCLITests", dependencies: ["capsule", .product(name: "ArgumentParser", package: "swift-argument-parser")],
                    swiftSettings: swiftSettings),
        .testTarget(name: "IntegrationTests",
                    dependencies: ["CapsuleRuntime", "CapsulePolicy", "CapsuleSandbox", "CapsuleProtocol",
                                   "CapsuleOS", "CapsuleCapabilities", "CapsuleAudit",
                                   .product(name: "AsyncHTTPClient", package: "async-http-client")],
                    path: "Tests/Integration",
                    swiftSettings: swiftSettings),
    ]
)
