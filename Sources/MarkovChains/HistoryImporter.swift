import Foundation
import MarkovCore

/// Reads message history files into create events for one guild, streamed a block at a time so that a file of
/// millions of messages never sits in memory: DiscordChatExporter JSON, the reference bot's JSON
/// (`[{"message": "…", "attachments": ["url"]}]`), or plain text with one message per line.
///
/// Messages without an id of their own get a stable one from the file's content and their position
/// (`imp-<hash>-<n>`), so importing the same file twice changes nothing.
public enum HistoryImporter {
    /// The formats understood.
    public enum Format: String, Sendable {
        case discordChatExporter = "DiscordChatExporter JSON"
        case referenceBot = "reference bot JSON"
        case plainText = "plain text"
    }

    /// Why a file could not be read.
    public struct ImportError: Error, CustomStringConvertible {
        public var description: String
    }

    /// What a read found.
    public struct Summary: Sendable {
        public var format: Format
        public var messages: Int
        /// The file's size in bytes (for progress).
        public var bytes: Int
    }

    /// Reads a file and hands its events to `body`, `chunk` at a time, with the bytes read so far.
    @discardableResult
    public static func read(
        file path: String, guild: Snowflake, chunk: Int = 1000,
        _ body: (_ events: [ChainEvent], _ bytesRead: Int) async throws -> Void
    ) async throws -> Summary {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw ImportError(description: "cannot read \(path): no such file or no permission")
        }
        defer { try? handle.close() }
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        var stream = ByteStream(handle: handle, name: path)
        stream.skipWhitespace()
        let first = stream.peek()
        let format: Format
        switch first {
        case UInt8(ascii: "{"): format = .discordChatExporter
        case UInt8(ascii: "["): format = .referenceBot
        default: format = .plainText
        }
        var stable = ""
        if format != .discordChatExporter {
            // Ids made from the file's content: one pass to hash it first.
            var hash = StableHash()
            var hasher = ByteStream(handle: handle, name: path, from: 0)
            while let block = hasher.nextBlock() { hash.combine(block) }
            stable = "imp-\(hash.hex)-"
            stream = ByteStream(handle: handle, name: path, from: 0)
        }
        var batch: [ChainEvent] = []
        batch.reserveCapacity(chunk)
        var count = 0
        var position = 0
        func emit(_ event: ChainEvent) async throws {
            batch.append(event)
            count += 1
            if batch.count >= chunk {
                try await body(batch, position)
                batch.removeAll(keepingCapacity: true)
            }
        }
        switch format {
        case .plainText:
            var index = 0
            while let line = stream.nextLine() {
                defer { index += 1 }
                let text = String(decoding: line, as: UTF8.self)
                position = stream.position
                guard !text.allSatisfy(\.isWhitespace) else { continue }
                try await emit(ChainEvent(kind: .create, source: .importer, guildID: guild, messageID: stable + String(index), content: text))
            }
        case .referenceBot:
            var reader = JSONStreamReader(stream: stream)
            var index = 0
            try reader.beginArray()
            while try reader.nextElement() {
                guard reader.peekIsObject else { throw reader.error("item \(index) is not an object (reference bot format)") }
                var text: String?
                var attachments: [String] = []
                try reader.object { key, reader throws(ImportError) in
                    switch key {
                    case "message": text = try reader.stringOrNil()
                    case "attachments": attachments = try reader.strings()
                    default: try reader.skipValue()
                    }
                }
                guard let text else { throw reader.error("item \(index) has no \"message\" string (reference bot format)") }
                position = reader.stream.position
                try await emit(ChainEvent(kind: .create, source: .importer, guildID: guild, messageID: stable + String(index), content: text, attachments: attachments))
                index += 1
            }
            position = reader.stream.position
        case .discordChatExporter:
            var reader = JSONStreamReader(stream: stream)
            var channel: Snowflake?
            var sawMessages = false
            try reader.beginObject()
            while let key = try reader.nextKey() {
                switch key {
                case "channel":
                    try reader.object { key, reader throws(ImportError) in
                        if key == "id", let id = try reader.stringOrNil() { channel = Snowflake(id) } else { try reader.skipValue() }
                    }
                case "messages":
                    sawMessages = true
                    try reader.beginArray()
                    while try reader.nextElement() {
                        let event = try Self.exporterMessage(&reader, guild: guild, channel: channel)
                        position = reader.stream.position
                        if let event { try await emit(event) }
                    }
                default:
                    try reader.skipValue()
                }
            }
            position = reader.stream.position
            if !sawMessages {
                throw ImportError(description: "\(path) looks like JSON but has no \"messages\" array (DiscordChatExporter format)")
            }
        }
        if !batch.isEmpty { try await body(batch, size) }
        return Summary(format: format, messages: count, bytes: size)
    }

    /// One message object of a DiscordChatExporter file; `nil` for one without an id.
    private static func exporterMessage(_ reader: inout JSONStreamReader, guild: Snowflake, channel: Snowflake?) throws(ImportError) -> ChainEvent? {
        var id: String?
        var type = 0
        var content = ""
        var author: Snowflake?
        var flags: ChainEvent.AuthorFlags = []
        var attachments: [String] = []
        try reader.object { key, reader throws(ImportError) in
            switch key {
            case "id": id = try reader.stringOrNil()
            case "type":
                switch try reader.stringOrNil() ?? "Default" {
                case "Default": type = 0
                case "Reply": type = 19
                default: type = 99
                }
            case "content": content = try reader.stringOrNil() ?? ""
            case "author":
                try reader.object { key, reader throws(ImportError) in
                    switch key {
                    case "id": author = try reader.stringOrNil().flatMap { Snowflake($0) }
                    case "isBot": if try reader.bool() == true { flags.insert(.bot) }
                    default: try reader.skipValue()
                    }
                }
            case "attachments":
                try reader.array { reader throws(ImportError) in
                    try reader.object { key, reader throws(ImportError) in
                        if key == "url", let url = try reader.stringOrNil() { attachments.append(url) } else { try reader.skipValue() }
                    }
                }
            default:
                try reader.skipValue()
            }
        }
        guard let id, !id.isEmpty else { return nil }
        return ChainEvent(
            kind: .create, source: .importer, guildID: guild, channelID: channel, messageID: id, authorID: author,
            authorFlags: flags, messageType: type, content: content, attachments: attachments
        )
    }
}

/// A file read a block at a time.
struct ByteStream {
    private let handle: FileHandle
    let name: String
    private var block: [UInt8] = []
    private var index = 0
    private var atEnd = false
    /// Bytes consumed so far.
    private(set) var position = 0
    private static let blockSize = 1 << 20

    init(handle: FileHandle, name: String, from offset: UInt64? = nil) {
        self.handle = handle
        self.name = name
        if let offset { try? handle.seek(toOffset: offset) }
    }

    private mutating func refill() -> Bool {
        guard !self.atEnd else { return false }
        let data = (try? self.handle.read(upToCount: Self.blockSize)) ?? nil
        guard let data, !data.isEmpty else {
            self.atEnd = true
            return false
        }
        self.block = [UInt8](data)
        self.index = 0
        return true
    }

    /// The next block of raw bytes (for hashing the whole file).
    mutating func nextBlock() -> [UInt8]? {
        if self.index < self.block.count {
            defer { self.index = self.block.count }
            return Array(self.block[self.index...])
        }
        guard self.refill() else { return nil }
        self.index = self.block.count
        return self.block
    }

    @inline(__always)
    mutating func peek() -> UInt8? {
        if self.index < self.block.count { return self.block[self.index] }
        guard self.refill() else { return nil }
        return self.block[self.index]
    }

    @inline(__always)
    mutating func next() -> UInt8? {
        guard let byte = self.peek() else { return nil }
        self.index += 1
        self.position += 1
        return byte
    }

    mutating func skipWhitespace() {
        while let byte = self.peek(), byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D || byte == 0xEF || byte == 0xBB || byte == 0xBF {
            _ = self.next()
        }
    }

    /// The next line without its end (`\n`, and a `\r` before it); `nil` at the end of the file.
    mutating func nextLine() -> [UInt8]? {
        guard self.peek() != nil else { return nil }
        var line: [UInt8] = []
        while let byte = self.next() {
            if byte == 0x0A { break }
            line.append(byte)
        }
        if line.last == 0x0D { line.removeLast() }
        return line
    }
}

/// A small JSON reader over a ``ByteStream``: objects and arrays are walked with callbacks, values that are not
/// wanted are skipped without being built.
struct JSONStreamReader {
    var stream: ByteStream

    init(stream: ByteStream) { self.stream = stream }

    func error(_ message: String) -> HistoryImporter.ImportError {
        HistoryImporter.ImportError(description: "\(self.stream.name) is not valid JSON: \(message) (near byte \(self.stream.position))")
    }

    private mutating func expect(_ byte: UInt8) throws(HistoryImporter.ImportError) {
        self.stream.skipWhitespace()
        guard let next = self.stream.next() else { throw self.error("unexpected end of file, expected '\(Character(Unicode.Scalar(byte)))'") }
        guard next == byte else { throw self.error("expected '\(Character(Unicode.Scalar(byte)))', found '\(Character(Unicode.Scalar(next)))'") }
    }

    var peekIsObject: Bool {
        mutating get {
            self.stream.skipWhitespace()
            return self.stream.peek() == UInt8(ascii: "{")
        }
    }

    /// Where an object or array being walked step by step is.
    private var started: [Bool] = []

    /// Starts walking an object step by step: ``nextKey()`` gives each key (the value must then be read or skipped).
    mutating func beginObject() throws(HistoryImporter.ImportError) {
        try self.expect(UInt8(ascii: "{"))
        self.started.append(false)
    }

    /// The next key of the object begun with ``beginObject()``, or `nil` at its end.
    mutating func nextKey() throws(HistoryImporter.ImportError) -> String? {
        self.stream.skipWhitespace()
        if self.started.last == true {
            switch self.stream.next() {
            case UInt8(ascii: ","): break
            case UInt8(ascii: "}"): self.started.removeLast(); return nil
            case nil: throw self.error("unexpected end of file in an object")
            default: throw self.error("expected ',' or '}' in an object")
            }
        } else {
            if self.stream.peek() == UInt8(ascii: "}") {
                _ = self.stream.next()
                self.started.removeLast()
                return nil
            }
            self.started[self.started.count - 1] = true
        }
        guard let key = try self.string() else { throw self.error("an object key must be a string") }
        try self.expect(UInt8(ascii: ":"))
        return key
    }

    /// Starts walking an array step by step: while ``nextElement()`` is true, read or skip one element.
    mutating func beginArray() throws(HistoryImporter.ImportError) {
        try self.expect(UInt8(ascii: "["))
        self.started.append(false)
    }

    /// Whether the array begun with ``beginArray()`` has another element.
    mutating func nextElement() throws(HistoryImporter.ImportError) -> Bool {
        self.stream.skipWhitespace()
        if self.started.last == true {
            switch self.stream.next() {
            case UInt8(ascii: ","): return true
            case UInt8(ascii: "]"): self.started.removeLast(); return false
            case nil: throw self.error("unexpected end of file in an array")
            default: throw self.error("expected ',' or ']' in an array")
            }
        }
        if self.stream.peek() == UInt8(ascii: "]") {
            _ = self.stream.next()
            self.started.removeLast()
            return false
        }
        self.started[self.started.count - 1] = true
        return true
    }

    /// Walks an object, calling `body` with each key; `body` must read or skip the value.
    mutating func object(
        _ body: (String, inout JSONStreamReader) throws(HistoryImporter.ImportError) -> Void
    ) throws(HistoryImporter.ImportError) {
        try self.expect(UInt8(ascii: "{"))
        self.stream.skipWhitespace()
        if self.stream.peek() == UInt8(ascii: "}") {
            _ = self.stream.next()
            return
        }
        while true {
            self.stream.skipWhitespace()
            guard let key = try self.string() else { throw self.error("an object key must be a string") }
            try self.expect(UInt8(ascii: ":"))
            try body(key, &self)
            self.stream.skipWhitespace()
            switch self.stream.next() {
            case UInt8(ascii: ","): continue
            case UInt8(ascii: "}"): return
            case nil: throw self.error("unexpected end of file in an object")
            default: throw self.error("expected ',' or '}' in an object")
            }
        }
    }

    /// Walks an array, calling `body` for each element; `body` must read or skip it.
    mutating func array(_ body: (inout JSONStreamReader) throws(HistoryImporter.ImportError) -> Void) throws(HistoryImporter.ImportError) {
        try self.expect(UInt8(ascii: "["))
        self.stream.skipWhitespace()
        if self.stream.peek() == UInt8(ascii: "]") {
            _ = self.stream.next()
            return
        }
        while true {
            try body(&self)
            self.stream.skipWhitespace()
            switch self.stream.next() {
            case UInt8(ascii: ","): continue
            case UInt8(ascii: "]"): return
            case nil: throw self.error("unexpected end of file in an array")
            default: throw self.error("expected ',' or ']' in an array")
            }
        }
    }

    /// A string value, or `nil` for `null` (other values are an error).
    mutating func stringOrNil() throws(HistoryImporter.ImportError) -> String? {
        self.stream.skipWhitespace()
        if self.stream.peek() == UInt8(ascii: "n") {
            try self.skipValue()
            return nil
        }
        guard let value = try self.string() else { throw self.error("expected a string") }
        return value
    }

    /// An array of strings (other elements are skipped).
    mutating func strings() throws(HistoryImporter.ImportError) -> [String] {
        var values: [String] = []
        try self.array { reader throws(HistoryImporter.ImportError) in
            reader.stream.skipWhitespace()
            if reader.stream.peek() == UInt8(ascii: "\"") { values.append(try reader.string() ?? "") } else { try reader.skipValue() }
        }
        return values
    }

    mutating func bool() throws(HistoryImporter.ImportError) -> Bool? {
        self.stream.skipWhitespace()
        switch self.stream.peek() {
        case UInt8(ascii: "t"): try self.literal("true"); return true
        case UInt8(ascii: "f"): try self.literal("false"); return false
        default: try self.skipValue(); return nil
        }
    }

    private mutating func literal(_ word: String) throws(HistoryImporter.ImportError) {
        for expected in word.utf8 {
            guard self.stream.next() == expected else { throw self.error("expected \(word)") }
        }
    }

    /// A string at the current position (`nil` when the next value is not a string).
    mutating func string() throws(HistoryImporter.ImportError) -> String? {
        self.stream.skipWhitespace()
        guard self.stream.peek() == UInt8(ascii: "\"") else { return nil }
        _ = self.stream.next()
        var bytes: [UInt8] = []
        while true {
            guard let byte = self.stream.next() else { throw self.error("unterminated string") }
            switch byte {
            case UInt8(ascii: "\""):
                return String(decoding: bytes, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard let escaped = self.stream.next() else { throw self.error("unterminated escape") }
                switch escaped {
                case UInt8(ascii: "n"): bytes.append(0x0A)
                case UInt8(ascii: "t"): bytes.append(0x09)
                case UInt8(ascii: "r"): bytes.append(0x0D)
                case UInt8(ascii: "b"): bytes.append(0x08)
                case UInt8(ascii: "f"): bytes.append(0x0C)
                case UInt8(ascii: "u"):
                    var scalar = try self.hex4()
                    if (0xD800..<0xDC00).contains(scalar) {
                        // A surrogate pair: the low half must follow.
                        if self.stream.peek() == UInt8(ascii: "\\") {
                            _ = self.stream.next()
                            guard self.stream.next() == UInt8(ascii: "u") else { throw self.error("bad surrogate pair") }
                            let low = try self.hex4()
                            scalar = (0xDC00..<0xE000).contains(low) ? 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00) : 0xFFFD
                        } else {
                            scalar = 0xFFFD
                        }
                    }
                    let character = Unicode.Scalar(scalar).map(Character.init) ?? "\u{FFFD}"
                    bytes += Array(String(character).utf8)
                default: bytes.append(escaped)
                }
            default:
                bytes.append(byte)
            }
        }
    }

    private mutating func hex4() throws(HistoryImporter.ImportError) -> UInt32 {
        var value: UInt32 = 0
        for _ in 0..<4 {
            guard let byte = self.stream.next() else { throw self.error("unterminated \\u escape") }
            let digit: UInt32
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
            default: throw self.error("bad \\u escape")
            }
            value = value << 4 | digit
        }
        return value
    }

    /// Skips one value of any kind.
    mutating func skipValue() throws(HistoryImporter.ImportError) {
        self.stream.skipWhitespace()
        switch self.stream.peek() {
        case UInt8(ascii: "{"): try self.object { _, reader throws(HistoryImporter.ImportError) in try reader.skipValue() }
        case UInt8(ascii: "["): try self.array { reader throws(HistoryImporter.ImportError) in try reader.skipValue() }
        case UInt8(ascii: "\""): _ = try self.string()
        case nil: throw self.error("unexpected end of file")
        default:
            // A number, true, false or null: up to the next delimiter.
            var read = 0
            while let byte = self.stream.peek(), !(byte == UInt8(ascii: ",") || byte == UInt8(ascii: "}") || byte == UInt8(ascii: "]")
                || byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09) {
                _ = self.stream.next()
                read += 1
            }
            if read == 0 { throw self.error("expected a value") }
        }
    }
}
