/// One RESP2 reply. Bulk strings are bytes, not text: Redis values may hold NUL bytes or invalid UTF-8.
///
/// A top-level error reply is thrown as a ``RedisError`` with code ``RedisError/Code/server``; an error nested
/// inside an array (for example one result of a script's table) stays in the tree as ``error(_:)``.
public enum RedisReply: Sendable, Hashable {
    /// A simple string such as `OK` or `PONG`.
    case simpleString(String)
    /// A bulk string: any bytes.
    case bulkString([UInt8])
    /// An integer reply.
    case integer(Int64)
    /// An array reply; elements may be arrays themselves.
    case array([RedisReply])
    /// The nil bulk string or nil array.
    case null
    /// An error reply nested inside an array.
    case error(String)
}

extension RedisReply {
    /// The reply as text: a simple string, or a bulk string decoded as UTF-8 (invalid bytes become U+FFFD).
    public var string: String? {
        switch self {
        case .simpleString(let text): text
        case .bulkString(let bytes): String(decoding: bytes, as: UTF8.self)
        case .integer(let value): String(value)
        default: nil
        }
    }

    /// The reply's bytes: a bulk string as is, a simple string as UTF-8.
    public var bytes: [UInt8]? {
        switch self {
        case .bulkString(let bytes): bytes
        case .simpleString(let text): Array(text.utf8)
        default: nil
        }
    }

    /// The reply as an integer: an integer reply, or a string that holds one.
    public var int: Int? {
        switch self {
        case .integer(let value): Int(value)
        case .bulkString, .simpleString: self.string.flatMap { Int($0) }
        default: nil
        }
    }

    /// The elements of an array reply.
    public var array: [RedisReply]? {
        if case .array(let elements) = self { return elements }
        return nil
    }

    /// Whether this is the nil reply.
    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }
}
