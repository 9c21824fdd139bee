import FanoutJobs
import Foundation
import Logging
import PostgresNIO
import Testing

/// The job stores the shared test suite runs against.
enum StoreKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite
    case postgres

    var testDescription: String { rawValue }
}

let quietLogger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

/// A fresh, empty data directory.
func temporaryDirectory() -> String {
    let path = "/tmp/fanout-jobs-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Throwaway PostgreSQL databases, one per test, on the server `FANOUT_TEST_DATABASE_URL`
/// names (`make test` starts one; see scripts/lib.sh `start_postgres`).
enum TestDatabase {
    /// The server's URL; a test without one fails, loudly: PostgreSQL tests are never skipped.
    static func serverURL() throws -> String {
        guard let url = ProcessInfo.processInfo.environment["FANOUT_TEST_DATABASE_URL"], !url.isEmpty else {
            Issue.record(
                "FANOUT_TEST_DATABASE_URL is not set: the PostgreSQL tests need a server (`make test` starts a throwaway one)")
            throw CancellationError()
        }
        return url
    }

    /// A new, empty database on the test server.
    static func create() async throws -> DatabaseURL {
        let server = try serverURL()
        let name = "fanout_test_\(UInt64.random(in: 0...UInt64.max))"
        let admin = PostgresClient(configuration: try DatabaseURL(server).configuration)
        let running = Task { await admin.run() }
        defer { running.cancel() }
        try await admin.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"))
        var components = URLComponents(string: server)!
        components.path = "/" + name
        return try DatabaseURL(components.string!)
    }
}

/// A store of `kind`, new and empty, closed after `body`.
func withStore<Result>(
    _ kind: StoreKind, directory: String = temporaryDirectory(),
    _ body: (any JobStore) async throws -> Result
) async throws -> Result {
    let store: any JobStore
    switch kind {
    case .sqlite: store = try SQLiteJobStore(directory: directory)
    case .postgres: store = try await PostgresJobStore(url: try await TestDatabase.create(), logger: quietLogger)
    }
    do {
        let result = try await body(store)
        await store.close()
        return result
    } catch {
        await store.close()
        throw error
    }
}

/// Another store on the same jobs as `store`: another process, or another host.
func openStore(sameAs store: any JobStore) async throws -> any JobStore {
    if let store = store as? PostgresJobStore {
        return try await PostgresJobStore(url: store.url, logger: quietLogger)
    }
    return try SQLiteJobStore(directory: (store.location as NSString).deletingLastPathComponent)
}
