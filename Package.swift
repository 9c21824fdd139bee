// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Fanout",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "fanout", targets: ["fanout"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", exact: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto", exact: "3.12.3"),
        .package(url: "https://github.com/groue/GRDB.swift", exact: "7.10.0"),
        .package(url: "https://github.com/swift-server/async-http-client", exact: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", exact: "2.101.3"),
        .package(url: "https://github.com/vapor/postgres-nio", exact: "1.33.2"),
        .package(url: "https://github.com/apple/swift-metrics", exact: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", exact: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", exact: "2.13.0"),
        .package(url: "https://github.com/vapor/console-kit", exact: "4.16.2"),
    ],
    targets: [
        // C boundary: libfcgi, found through pkg-config.
        .systemLibrary(
            name: "CFastCGI",
            path: "Modules/CFastCGI",
            pkgConfig: "fcgi",
            providers: [.apt(["libfcgi-dev"])]
        ),
        // C boundary: the Linux calls the transport needs that the Glibc module leaves out.
        .systemLibrary(name: "CLinux", path: "Modules/CLinux"),
        // FastCGI transport: sockets, threads and libfcgi; knows nothing about batches.
        .target(
            name: "FastCGI",
            dependencies: [
                "CFastCGI",
                "CLinux",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        // Batch engine: model, validation, scheduling, operations; knows nothing about FastCGI or HTTP.
        .target(
            name: "FanoutEngine",
            dependencies: [
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        // Asynchronous jobs: the stores (SQLite for one host, PostgreSQL for many) and the runner.
        .target(
            name: "FanoutJobs",
            dependencies: [
                "FanoutEngine",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        // The `http` operation: calls to operator-configured upstreams over AsyncHTTPClient, with
        // path and header confinement, retries and per-upstream limits.
        .target(
            name: "FanoutHTTP",
            dependencies: [
                "FanoutEngine",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // HTTP-facing service: routes, status codes, problem documents.
        .target(
            name: "FanoutService",
            dependencies: [
                "FastCGI",
                "FanoutEngine",
                "FanoutJobs",
                "FanoutHTTP",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The command line: the settings (each declared once), `fanout serve`, the log format, and
        // the terminal client (`fanout submit`, `watch`, `status`, `cancel`, `ops`).
        .target(
            name: "FanoutCommandLine",
            dependencies: [
                "CLinux",
                "FanoutService",
                "FastCGI",
                "FanoutEngine",
                "FanoutHTTP",
                "FanoutJobs",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ConsoleKitTerminal", package: "console-kit"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        // Thin executable: hands the command line to FanoutCommandLine.
        .executableTarget(
            name: "fanout",
            dependencies: ["FanoutCommandLine"]),
        // libFuzzer targets (`make fuzz`): each is an ordinary, do-nothing program in a normal build,
        // and a fuzzer when built with `-sanitize=fuzzer` (scripts/fuzz.sh).
        .target(name: "FuzzSupport", path: "Tests/Fuzz/FuzzSupport"),
        .executableTarget(name: "fuzz-json", dependencies: ["FanoutEngine", "FuzzSupport"], path: "Tests/Fuzz/json"),
        .executableTarget(
            name: "fuzz-batch", dependencies: ["FanoutEngine", "FanoutHTTP", "FuzzSupport"], path: "Tests/Fuzz/batch"),
        .executableTarget(
            name: "fuzz-references", dependencies: ["FanoutEngine", "FuzzSupport"], path: "Tests/Fuzz/references"),
        .executableTarget(
            name: "fuzz-http-rules", dependencies: ["FanoutHTTP", "FuzzSupport"], path: "Tests/Fuzz/http-rules"),
        .testTarget(name: "FastCGITests", dependencies: ["FastCGI", "CFastCGI"]),
        .testTarget(name: "FanoutEngineTests", dependencies: ["FanoutEngine"]),
        .testTarget(
            name: "FanoutJobsTests",
            dependencies: ["FanoutJobs", "FanoutEngine", .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "FanoutHTTPTests", dependencies: ["FanoutHTTP", "FanoutEngine"]),
        .testTarget(
            name: "FanoutServiceTests", dependencies: ["FanoutService", "FanoutEngine", "FanoutJobs", "FastCGI"]),
        .testTarget(name: "FanoutCommandLineTests", dependencies: ["FanoutCommandLine", "FanoutService"]),
    ],
    swiftLanguageModes: [.v6]
)
