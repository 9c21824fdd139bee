import Foundation
import PostgresNIO

/// A PostgreSQL connection URL, as libpq and most tools write it.
///
/// - `postgres://USER:PASSWORD@HOST:PORT/DATABASE` (`postgresql://` too), TCP; `sslmode=disable`
///   turns TLS off, `require` insists on it, otherwise it is used when the server offers it.
/// - `postgres://USER@/DATABASE?host=/var/run/postgresql` or
///   `postgres://USER@%2Fvar%2Frun%2Fpostgresql/DATABASE`: a Unix socket in that directory
///   (`.s.PGSQL.PORT` in it, port 5432 unless given), never TLS.
///
/// The user defaults to `postgres` and the database to the user, as with libpq.
public struct DatabaseURL: Sendable, CustomStringConvertible {
    /// What the client connects with.
    public let configuration: PostgresClient.Configuration
    /// The URL without its password, for logs.
    public let description: String

    /// Parses `text`.
    ///
    /// - Throws: ``DatabaseURLError`` naming what is wrong.
    public init(_ text: String) throws {
        guard let components = URLComponents(string: text), let scheme = components.scheme,
            scheme == "postgres" || scheme == "postgresql"
        else {
            throw DatabaseURLError(message: "the database URL must look like postgres://USER:PASSWORD@HOST:PORT/DATABASE")
        }
        let query = Dictionary(
            (components.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { $1 })
        let user = components.percentEncodedUser?.removingPercentEncoding ?? "postgres"
        let password = components.percentEncodedPassword?.removingPercentEncoding
        var database = String(components.path.dropFirst())
        if database.isEmpty { database = query["dbname"] ?? user }
        let host = query["host"] ?? components.percentEncodedHost?.removingPercentEncoding ?? ""
        let port = components.port ?? query["port"].flatMap(Int.init) ?? 5432
        guard (1...65535).contains(port) else {
            throw DatabaseURLError(message: "the database port \(port) is not between 1 and 65535")
        }
        var configuration: PostgresClient.Configuration
        if host.hasPrefix("/") {
            configuration = .init(
                unixSocketPath: "\(host)/.s.PGSQL.\(port)", username: user, password: password, database: database)
            description = "postgres://\(user)@\(host):\(port)/\(database)"
        } else {
            guard !host.isEmpty else {
                throw DatabaseURLError(message: "the database URL names no host (or ?host=/socket/directory)")
            }
            let tls: PostgresClient.Configuration.TLS
            switch query["sslmode"] ?? "prefer" {
            case "disable": tls = .disable
            case "allow", "prefer": tls = .prefer(.makeClientConfiguration())
            case "require", "verify-ca", "verify-full": tls = .require(.makeClientConfiguration())
            case let other:
                throw DatabaseURLError(message: "the database URL's sslmode \(other) is not one of disable, prefer, require")
            }
            configuration = .init(host: host, port: port, username: user, password: password, database: database, tls: tls)
            description = "postgres://\(user)@\(host):\(port)/\(database)"
        }
        configuration.options.connectTimeout = .seconds(5)
        self.configuration = configuration
    }
}

/// A database URL that cannot be used.
public struct DatabaseURLError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}
