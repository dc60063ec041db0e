import NIOCore

/// One argument of a Redis command: bytes on the wire, whatever Swift value they came from.
public enum RedisArgument: Sendable, Hashable, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral {
    /// Raw bytes, sent as they are (NUL and invalid UTF-8 included).
    case bytes([UInt8])
    /// Text, sent as its UTF-8 bytes.
    case string(String)
    /// A decimal integer.
    case integer(Int)

    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .integer(value) }

    @inlinable
    func withBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        switch self {
        case .bytes(let bytes):
            return try bytes.withUnsafeBytes(body)
        case .string(var text):
            return try text.withUTF8 { try body(UnsafeRawBufferPointer($0)) }
        case .integer(let value):
            var text = String(value)
            return try text.withUTF8 { try body(UnsafeRawBufferPointer($0)) }
        }
    }
}

/// A command ready for the wire: its RESP encoding, its name for errors and logs, and the cluster slot it
/// must go to (from its first key), or none for keyless commands.
///
/// Commands are encoded once, when made; a pipeline writes the encodings back to back.
public struct RedisCommand: Sendable, CustomStringConvertible {
    /// The command's RESP2 encoding (`*N\r\n$len\r\narg\r\n…`).
    public let encoded: ByteBuffer
    /// The command name as given (`HINCRBY`, `XREADGROUP`, …), for errors and logs. Arguments never appear in
    /// logs: they may hold message text or passwords.
    public let name: String
    /// The hash slot of the command's first key, or `nil` when it has no key and may go to any node.
    public let slot: UInt16?

    /// Makes a command from its name and arguments; the first key is found from the command's shape
    /// (see ``RedisCommand/keyIndex(name:arguments:)``) unless `routingKey` names the key to route by.
    public init(_ name: String, _ arguments: [RedisArgument], routingKey: RedisArgument? = nil) {
        self.name = name
        var buffer = ByteBufferAllocator().buffer(capacity: 16 + name.utf8.count + arguments.count * 24)
        buffer.writeStaticString("*")
        buffer.writeString(String(arguments.count + 1))
        buffer.writeStaticString("\r\n")
        Self.write(.string(name), into: &buffer)
        for argument in arguments {
            Self.write(argument, into: &buffer)
        }
        self.encoded = buffer
        if let routingKey {
            self.slot = routingKey.withBytes { HashSlot.slot(forKey: $0) }
        } else if let index = Self.keyIndex(name: name, arguments: arguments) {
            self.slot = arguments[index].withBytes { HashSlot.slot(forKey: $0) }
        } else {
            self.slot = nil
        }
    }

    /// Makes a command from its name and arguments.
    public init(_ name: String, _ arguments: RedisArgument...) {
        self.init(name, arguments)
    }

    public var description: String { "\(self.name) (\(self.encoded.readableBytes) bytes)" }

    private static func write(_ argument: RedisArgument, into buffer: inout ByteBuffer) {
        argument.withBytes { bytes in
            buffer.writeStaticString("$")
            buffer.writeString(String(bytes.count))
            buffer.writeStaticString("\r\n")
            buffer.writeBytes(bytes)
            buffer.writeStaticString("\r\n")
        }
    }

    /// The index in `arguments` (which exclude the name) of the key that decides the command's slot, or `nil`
    /// for commands without keys. Covers the command shapes this project uses; pass `routingKey` for others.
    static func keyIndex(name: String, arguments: [RedisArgument]) -> Int? {
        switch name.uppercased() {
        case "PING", "ECHO", "INFO", "AUTH", "SELECT", "ASKING", "READONLY", "READWRITE", "CLUSTER", "FUNCTION",
            "SCRIPT", "CONFIG", "CLIENT", "DBSIZE", "FLUSHALL", "FLUSHDB", "TIME", "COMMAND", "SCAN", "MULTI",
            "EXEC", "DISCARD", "WAIT", "HELLO", "QUIT", "SHUTDOWN", "DEBUG", "SAVE", "BGSAVE", "BGREWRITEAOF",
            "LASTSAVE", "ROLE", "SLOWLOG", "LATENCY", "RANDOMKEY", "KEYS":
            return nil
        case "FCALL", "FCALL_RO", "EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO":
            // name-or-script numkeys key…
            guard arguments.count > 2, case .integer(let count) = Self.integerValue(arguments[1]), count > 0 else {
                return nil
            }
            return 2
        case "XREAD", "XREADGROUP":
            // … STREAMS key… id…
            guard let streams = arguments.firstIndex(where: { Self.equalsIgnoringCase($0, "STREAMS") }),
                streams + 1 < arguments.count
            else { return nil }
            return streams + 1
        case "XGROUP", "XINFO", "OBJECT", "MEMORY":
            // subcommand key …
            return arguments.count > 1 ? 1 : nil
        default:
            return arguments.isEmpty ? nil : 0
        }
    }

    private static func integerValue(_ argument: RedisArgument) -> RedisArgument? {
        switch argument {
        case .integer: argument
        case .string(let text): Int(text).map { .integer($0) }
        case .bytes(let bytes): Int(String(decoding: bytes, as: UTF8.self)).map { .integer($0) }
        }
    }

    private static func equalsIgnoringCase(_ argument: RedisArgument, _ word: String) -> Bool {
        switch argument {
        case .string(let text): text.uppercased() == word
        case .bytes(let bytes): String(decoding: bytes, as: UTF8.self).uppercased() == word
        case .integer: false
        }
    }
}
