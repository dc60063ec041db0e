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
        buffer.writeInteger(UInt8(ascii: "*"))
        RedisCommandBuilder.writeDecimal(arguments.count + 1, into: &buffer)
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

    /// A command encoded by a ``RedisCommandBuilder``.
    init(encoded: ByteBuffer, name: String, slot: UInt16?) {
        self.encoded = encoded
        self.name = name
        self.slot = slot
    }

    public var description: String { "\(self.name) (\(self.encoded.readableBytes) bytes)" }

    private static func write(_ argument: RedisArgument, into buffer: inout ByteBuffer) {
        argument.withBytes { bytes in
            buffer.writeInteger(UInt8(ascii: "$"))
            RedisCommandBuilder.writeDecimal(bytes.count, into: &buffer)
            buffer.writeStaticString("\r\n")
            buffer.writeBytes(bytes)
            buffer.writeStaticString("\r\n")
        }
    }

    /// The index in `arguments` (which exclude the name) of the key that decides the command's slot, or `nil`
    /// for commands without keys. Covers the command shapes this project uses; pass `routingKey` for others.
    static func keyIndex(name: String, arguments: [RedisArgument]) -> Int? {
        // Names are written in capitals throughout; only others pay for a conversion.
        let upper = name.utf8.allSatisfy { !($0 >= 0x61 && $0 <= 0x7A) } ? name : name.uppercased()
        switch upper {
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

/// Writes a command's arguments straight into its wire encoding, for commands with many arguments built in a
/// hot loop (a bucket hash's fields and values): no intermediate argument array, and values can be written in
/// place once their length is known. The argument count is given first, as RESP puts it first.
public struct RedisCommandBuilder {
    private var buffer: ByteBuffer
    private let name: String
    private let expected: Int
    private var written = 0

    /// Starts a command `name` with `arguments` arguments after the name; the first is its key.
    public init(_ name: String, arguments: Int, capacity: Int = 256) {
        self.name = name
        self.expected = arguments
        self.buffer = ByteBufferAllocator().buffer(capacity: capacity)
        self.buffer.writeInteger(UInt8(ascii: "*"))
        Self.writeDecimal(arguments + 1, into: &self.buffer)
        self.buffer.writeStaticString("\r\n$")
        Self.writeDecimal(name.utf8.count, into: &self.buffer)
        self.buffer.writeStaticString("\r\n")
        self.buffer.writeString(name)
        self.buffer.writeStaticString("\r\n")
    }

    /// Writes a non-negative integer in decimal, without making a string of it.
    @inline(__always)
    static func writeDecimal(_ value: Int, into buffer: inout ByteBuffer) {
        if value < 10 {
            buffer.writeInteger(UInt8(truncatingIfNeeded: 0x30 + value))
            return
        }
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
            var value = value
            var count = 0
            while value > 0 {
                digits[19 - count] = UInt8(truncatingIfNeeded: 0x30 + value % 10)
                value /= 10
                count += 1
            }
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(digits)[(20 - count)...]))
        }
    }

    /// Appends an argument.
    public mutating func append(_ bytes: some Collection<UInt8>) {
        self.buffer.writeInteger(UInt8(ascii: "$"))
        Self.writeDecimal(bytes.count, into: &self.buffer)
        self.buffer.writeStaticString("\r\n")
        self.buffer.writeBytes(bytes)
        self.buffer.writeStaticString("\r\n")
        self.written += 1
    }

    /// Appends an argument (the common case, without generic iteration).
    public mutating func append(_ bytes: [UInt8]) {
        self.buffer.writeInteger(UInt8(ascii: "$"))
        Self.writeDecimal(bytes.count, into: &self.buffer)
        self.buffer.writeStaticString("\r\n")
        bytes.withUnsafeBytes { _ = self.buffer.writeBytes($0) }
        self.buffer.writeStaticString("\r\n")
        self.written += 1
    }

    /// Appends an argument made of two parts (a key's prefix and suffix), without joining them first.
    public mutating func append(_ first: [UInt8], _ second: [UInt8]) {
        self.buffer.writeInteger(UInt8(ascii: "$"))
        Self.writeDecimal(first.count + second.count, into: &self.buffer)
        self.buffer.writeStaticString("\r\n")
        first.withUnsafeBytes { _ = self.buffer.writeBytes($0) }
        second.withUnsafeBytes { _ = self.buffer.writeBytes($0) }
        self.buffer.writeStaticString("\r\n")
        self.written += 1
    }



    /// Appends a text argument.
    public mutating func append(_ text: String) {
        var text = text
        text.withUTF8 { self.append($0) }
    }

    /// Appends an argument of `length` bytes, written in place by `body`.
    public mutating func append(length: Int, _ body: (UnsafeMutableRawBufferPointer) -> Void) {
        self.buffer.writeInteger(UInt8(ascii: "$"))
        Self.writeDecimal(length, into: &self.buffer)
        self.buffer.writeStaticString("\r\n")
        self.buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { pointer in
            body(UnsafeMutableRawBufferPointer(rebasing: pointer[..<length]))
            return length
        }
        self.buffer.writeStaticString("\r\n")
        self.written += 1
    }

    /// The command, routed by `key` (its first key).
    public func build(routingKey key: some Collection<UInt8>) -> RedisCommand {
        self.build(slot: Array(key).withUnsafeBytes { HashSlot.slot(forKey: $0) })
    }

    /// The command, for a slot known already (keys sharing a hash tag share a slot).
    public func build(slot: UInt16) -> RedisCommand {
        precondition(self.written == self.expected, "\(self.name) was announced with \(self.expected) arguments, \(self.written) written")
        return RedisCommand(encoded: self.buffer, name: self.name, slot: slot)
    }
}
