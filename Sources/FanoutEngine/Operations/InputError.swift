#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// A task's `input` that its operation cannot accept.
public struct InputError: Error, Sendable, Equatable {
    /// Path of the offending value inside `input` (`"ms"`, `"items[2].name"`), or `nil` for the
    /// input as a whole.
    public var path: String?
    /// What is wrong, for humans.
    public var message: String

    /// Creates an input error.
    public init(path: String? = nil, _ message: String) {
        self.path = path
        self.message = message
    }

    /// The field a problem at `path` (inside a task's input) is reported under: `input.ms`, or
    /// `input` for the input as a whole.
    public static func field(_ path: String?) -> String {
        path.map { "input." + $0 } ?? "input"
    }

    /// Describes a `DecodingError` in JSON terms: Swift type names never reach a client.
    init(decodingError error: any Error) {
        guard let error = error as? DecodingError else {
            self.init("input is not valid for this operation")
            return
        }
        switch error {
        case .keyNotFound(let key, let context):
            self.init(path: Self.path(context.codingPath + [key]), "is required")
        case .typeMismatch(let type, let context):
            self.init(path: Self.path(context.codingPath), "must be \(Self.jsonKind(of: type))")
        case .valueNotFound(let type, let context):
            self.init(path: Self.path(context.codingPath), "must be \(Self.jsonKind(of: type)), not null")
        case .dataCorrupted(let context):
            self.init(path: Self.path(context.codingPath), "has an invalid value")
        @unknown default:
            self.init("input is not valid for this operation")
        }
    }

    private static func path(_ codingPath: [any CodingKey]) -> String? {
        var path = ""
        for key in codingPath {
            if let index = key.intValue {
                path += "[\(index)]"
            } else {
                path += path.isEmpty ? key.stringValue : "." + key.stringValue
            }
        }
        return path.isEmpty ? nil : path
    }

    private static func jsonKind(of type: Any.Type) -> String {
        // Containers are matched by name: the decoder reports its own container types here.
        let name = String(describing: type)
        if name.hasPrefix("Array") || name.contains("UnkeyedDecodingContainer") { return "an array" }
        if name.hasPrefix("Dictionary") || name.contains("KeyedDecodingContainer") { return "an object" }
        return switch type {
        case is String.Type: "a string"
        case is Bool.Type: "a boolean"
        case is any BinaryInteger.Type: "an integer"
        case is any FloatingPoint.Type: "a number"
        default: "an object"
        }
    }
}

extension KeyedDecodingContainer {
    /// The value of an optional member: `nil` when absent, but an error when present and `null`
    /// (`decodeIfPresent` takes `null` for absent, where the contract allows only the type).
    public func decodeUnlessAbsent<Value: Decodable>(_ type: Value.Type, forKey key: Key) throws -> Value? {
        contains(key) ? try decode(type, forKey: key) : nil
    }
}
