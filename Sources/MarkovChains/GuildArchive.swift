import Foundation
import MarkovCore

/// A guild's data as a portable file (`markov export`, `markov restore`; docs/chain-store.md): JSON Lines,
/// versioned, written and read a line at a time.
///
/// - The first line is the header: `{"format":"markov-guild","version":1,"guild":…,"state_size":…,
///   "exported_at":…,"meta":{…}}`, with the guild's totals and bucket table shape.
/// - Then one line per key, or per part of a big hash or set: `{"k":<suffix>,"t":"hash","e":[[field,value],…]}`,
///   `{"k":…,"t":"set","m":[…]}` or `{"k":…,"t":"string","v":…}`. Keys are named by their suffix after the
///   guild's prefix, so a file can be restored under another guild id. A byte string is a JSON string when it is
///   UTF-8, else `{"b64":…}`.
/// - The last line is the trailer, `{"end":true,"lines":N,"sha1":…}`: the number of lines before it and a chained
///   SHA-1 of them, so that a truncated or altered file is refused before anything is written.
///
/// The chain is stored as Redis holds it (layout 2), not recomputed: a restored guild samples exactly as the
/// exported one did, sentence for sentence with the same `--rng-seed`.
public enum GuildArchive {
    /// The `format` of the header.
    public static let format = "markov-guild"
    /// The version this build writes and the newest it reads.
    public static let version = 1
    /// The meta fields the file carries (the rest of the meta is fencing and progress, which belong to a Redis).
    static let metaFields = ["layout", "state_size", "messages", "states", "transitions", "count", "rebuilds", "L", "p"]

    /// The file is not a guild export this build can read; nothing was written.
    public struct FormatError: Error, CustomStringConvertible, Sendable {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    /// A key, or part of one, as the file holds it.
    public enum Record: Sendable, Equatable {
        case hash(suffix: [UInt8], entries: [Pair])
        case set(suffix: [UInt8], members: [[UInt8]])
        case string(suffix: [UInt8], value: [UInt8])

        /// The key's suffix after the guild's prefix.
        public var suffix: [UInt8] {
            switch self {
            case .hash(let suffix, _), .set(let suffix, _), .string(let suffix, _): suffix
            }
        }
    }

    /// A field of a hash and its value.
    public struct Pair: Sendable, Equatable {
        public var field: [UInt8]
        public var value: [UInt8]
        public init(_ field: [UInt8], _ value: [UInt8]) {
            self.field = field
            self.value = value
        }
    }

    /// The first line.
    public struct Header: Sendable, Equatable {
        public var guild: Snowflake
        public var stateSize: Int
        /// Milliseconds since the Unix epoch.
        public var exportedAt: Int64
        /// The guild's totals and bucket table shape (``GuildArchive/metaFields``).
        public var meta: [String: String]

        public init(guild: Snowflake, stateSize: Int, exportedAt: Int64, meta: [String: String]) {
            self.guild = guild
            self.stateSize = stateSize
            self.exportedAt = exportedAt
            self.meta = meta
        }

        /// Learnt messages, from the meta.
        public var messages: Int { self.meta["messages"].flatMap { Int($0) } ?? 0 }
    }

    // MARK: Lines

    /// The header's line (without its newline).
    public static func line(_ header: Header) -> [UInt8] {
        self.json([
            "format": Self.format, "version": Self.version, "guild": header.guild.rawValue, "state_size": header.stateSize,
            "exported_at": header.exportedAt, "meta": header.meta,
        ])
    }

    /// A record's line, keys sorted. Written byte by byte: through `JSONSerialization` (its bridging to Foundation
    /// objects) the lines took more than half of an export's time.
    public static func line(_ record: Record) -> [UInt8] {
        var line: [UInt8] = []
        switch record {
        case .hash(let suffix, let entries):
            line.reserveCapacity(32 + entries.reduce(0) { $0 + $1.field.count + $1.value.count + 8 })
            line += Array(#"{"e":["#.utf8)
            for (index, entry) in entries.enumerated() {
                if index > 0 { line.append(UInt8(ascii: ",")) }
                line.append(UInt8(ascii: "["))
                self.write(entry.field, into: &line)
                line.append(UInt8(ascii: ","))
                self.write(entry.value, into: &line)
                line.append(UInt8(ascii: "]"))
            }
            line += Array(#"],"k":"#.utf8)
            self.write(suffix, into: &line)
            line += Array(#","t":"hash"}"#.utf8)
        case .set(let suffix, let members):
            line += Array(#"{"k":"#.utf8)
            self.write(suffix, into: &line)
            line += Array(#","m":["#.utf8)
            for (index, member) in members.enumerated() {
                if index > 0 { line.append(UInt8(ascii: ",")) }
                self.write(member, into: &line)
            }
            line += Array(#"],"t":"set"}"#.utf8)
        case .string(let suffix, let value):
            line += Array(#"{"k":"#.utf8)
            self.write(suffix, into: &line)
            line += Array(#","t":"string","v":"#.utf8)
            self.write(value, into: &line)
            line.append(UInt8(ascii: "}"))
        }
        return line
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    /// A byte string as JSON: a string when it is UTF-8 (`"`, `\` and control bytes escaped), else `{"b64":…}`.
    static func write(_ bytes: [UInt8], into line: inout [UInt8]) {
        guard String(validating: bytes, as: UTF8.self) != nil else {
            line += Array(#"{"b64":""#.utf8)
            line += Array(Data(bytes).base64EncodedString().utf8)
            line += Array(#""}"#.utf8)
            return
        }
        let hex = Self.hexDigits
        line.append(UInt8(ascii: "\""))
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                line += [UInt8(ascii: "\\"), byte]
            case 0x0A: line += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
            case 0x0D: line += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
            case 0x09: line += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
            case 0x08: line += [UInt8(ascii: "\\"), UInt8(ascii: "b")]
            case 0x0C: line += [UInt8(ascii: "\\"), UInt8(ascii: "f")]
            case 0..<0x20:
                line += Array(#"\u00"#.utf8) + [hex[Int(byte >> 4)], hex[Int(byte & 0x0F)]]
            default:
                line.append(byte)
            }
        }
        line.append(UInt8(ascii: "\""))
    }

    /// The trailer's line, after `lines` lines whose chained digest is `digest`.
    public static func trailer(lines: Int, digest: String) -> [UInt8] {
        self.json(["end": true, "lines": lines, "sha1": digest])
    }

    /// Reads the header line.
    public static func header(_ line: some Collection<UInt8>) throws(FormatError) -> Header {
        let object = try self.object(line, what: "the header")
        guard object["format"] as? String == Self.format else {
            throw FormatError("not a markov guild export (the first line has no \"format\":\"\(Self.format)\")")
        }
        guard let version = object["version"] as? Int else { throw FormatError("the header has no version") }
        guard version <= Self.version else {
            throw FormatError("the file is version \(version), written by a newer markov; this one reads up to version \(Self.version)")
        }
        guard let guildText = object["guild"] as? String, let guild = Snowflake(guildText) else { throw FormatError("the header's guild is not a Discord id") }
        guard let stateSize = object["state_size"] as? Int, (1...6).contains(stateSize) else { throw FormatError("the header's state_size is not 1…6") }
        guard let meta = object["meta"] as? [String: String] else { throw FormatError("the header has no meta") }
        guard meta["layout"].flatMap({ Int($0) }) == ChainLayout.version else {
            throw FormatError("the chain in the file is in layout \(meta["layout"] ?? "?"); this markov restores layout \(ChainLayout.version)")
        }
        for name in ["L", "p"] where meta[name].flatMap({ Int($0) }) == nil {
            throw FormatError("the header's meta has no bucket table shape (\(name))")
        }
        let exportedAt = (object["exported_at"] as? NSNumber)?.int64Value ?? 0
        return Header(guild: guild, stateSize: stateSize, exportedAt: exportedAt, meta: meta.filter { Self.metaFields.contains($0.key) })
    }

    /// What a line after the header is.
    public enum Line: Sendable, Equatable {
        case record(Record)
        case trailer(lines: Int, digest: String)
    }

    /// Reads a line after the header.
    public static func parse(_ line: some Collection<UInt8>, number: Int) throws(FormatError) -> Line {
        let object = try self.object(line, what: "line \(number)")
        if object["end"] as? Bool == true {
            guard let lines = object["lines"] as? Int, let digest = object["sha1"] as? String else { throw FormatError("the trailer is malformed") }
            return .trailer(lines: lines, digest: digest)
        }
        guard let suffix = self.bytes(object["k"]), suffix.first == UInt8(ascii: ":"), !suffix.contains(0x7B), !suffix.contains(0x7D) else {
            throw FormatError("line \(number) names no key suffix (one starting with \":\" and without braces)")
        }
        switch object["t"] as? String {
        case "hash":
            guard let entries = object["e"] as? [Any] else { throw FormatError("line \(number): a hash without entries") }
            var pairs: [Pair] = []
            pairs.reserveCapacity(entries.count)
            for entry in entries {
                guard let pair = entry as? [Any], pair.count == 2, let field = self.bytes(pair[0]), let value = self.bytes(pair[1]) else {
                    throw FormatError("line \(number): a hash entry is not [field, value]")
                }
                pairs.append(Pair(field, value))
            }
            return .record(.hash(suffix: suffix, entries: pairs))
        case "set":
            guard let members = object["m"] as? [Any] else { throw FormatError("line \(number): a set without members") }
            var decoded: [[UInt8]] = []
            for member in members {
                guard let bytes = self.bytes(member) else { throw FormatError("line \(number): a set member is not a byte string") }
                decoded.append(bytes)
            }
            return .record(.set(suffix: suffix, members: decoded))
        case "string":
            guard let value = self.bytes(object["v"]) else { throw FormatError("line \(number): a string without a value") }
            return .record(.string(suffix: suffix, value: value))
        default:
            throw FormatError("line \(number) has no known type (hash, set or string)")
        }
    }

    /// The chained digest after one more line: SHA-1 of the digest so far and the line.
    public static func chain(_ digest: String, _ line: some Collection<UInt8>) -> String {
        var bytes = Array(digest.utf8)
        bytes.append(0x0A)
        bytes += line
        return SHA1.hex(bytes)
    }

    /// The digest before the first line.
    public static let initialDigest = ""

    // MARK: JSON

    private static func json(_ object: [String: Any]) -> [UInt8] {
        // Every value here is a string, number, bool, array or dictionary of those: serialization cannot fail.
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return Array(data)
    }

    private static func object(_ line: some Collection<UInt8>, what: String) throws(FormatError) -> [String: Any] {
        guard let parsed = try? JSONSerialization.jsonObject(with: Data(line)), let object = parsed as? [String: Any] else {
            throw FormatError("\(what) is not a JSON object")
        }
        return object
    }

    private static func bytes(_ value: Any?) -> [UInt8]? {
        if let text = value as? String { return Array(text.utf8) }
        if let object = value as? [String: Any], let text = object["b64"] as? String, let data = Data(base64Encoded: text) { return Array(data) }
        return nil
    }
}

// MARK: Restore parts

extension GuildArchive {
    /// One entry of a restore in the event log (``ChainEvent/Kind/restore``): a header line naming the restore and
    /// the part, then record lines. Parts apply in order; the first checks that the guild may be restored and
    /// writes its totals and shape, the last marks the restore done.
    public struct Part: Sendable {
        /// The file's digest: names the restore (a second restore of the same file is a no-op).
        public var digest: String
        /// 1 for the first part.
        public var index: Int
        public var isLast: Bool
        /// The file's header (every part carries it: small, and a part is then readable alone).
        public var header: Header
        public var records: [Record]
        /// Keys in the whole file (reported when done).
        public var keys: Int

        public init(digest: String, index: Int, isLast: Bool, header: Header, records: [Record], keys: Int) {
            self.digest = digest
            self.index = index
            self.isLast = isLast
            self.header = header
            self.records = records
            self.keys = keys
        }

        /// The payload: the part's own line, the file's header line, then the record lines.
        public var payload: [UInt8] {
            var bytes = GuildArchive.json(["restore": self.digest, "part": self.index, "last": self.isLast, "keys": self.keys])
            bytes.append(0x0A)
            bytes += GuildArchive.line(self.header)
            for record in self.records {
                bytes.append(0x0A)
                bytes += GuildArchive.line(record)
            }
            return bytes
        }

        /// Reads a payload.
        public init(payload: [UInt8]) throws(FormatError) {
            let lines = payload.split(separator: 0x0A, omittingEmptySubsequences: true)
            guard lines.count >= 2 else { throw FormatError("a restore part has no header") }
            let own = try GuildArchive.object(lines[0], what: "a restore part's first line")
            guard let digest = own["restore"] as? String, let index = own["part"] as? Int, let isLast = own["last"] as? Bool else {
                throw FormatError("a restore part's first line is malformed")
            }
            self.digest = digest
            self.index = index
            self.isLast = isLast
            self.keys = own["keys"] as? Int ?? 0
            self.header = try GuildArchive.header(lines[1])
            var records: [Record] = []
            for (offset, line) in lines.dropFirst(2).enumerated() {
                guard case .record(let record) = try GuildArchive.parse(line, number: offset + 3) else {
                    throw FormatError("a restore part holds a trailer")
                }
                records.append(record)
            }
            self.records = records
        }
    }
}

// MARK: Files

/// Reads a file a line at a time (lines end with `\n`; the last may not).
public final class LineReader {
    private let handle: FileHandle
    private var buffer: [UInt8] = []
    private var start = 0
    private var isAtEnd = false
    /// Bytes read from the file so far.
    public private(set) var bytesRead = 0

    public init(path: String) throws {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw GuildArchive.FormatError("cannot open \(path) for reading")
        }
        self.handle = handle
    }

    deinit { try? self.handle.close() }

    /// The next line without its newline; `nil` at the end.
    public func next() throws -> ArraySlice<UInt8>? {
        while true {
            if let newline = self.buffer[self.start...].firstIndex(of: 0x0A) {
                let line = self.buffer[self.start..<newline]
                self.start = newline + 1
                return line
            }
            if self.isAtEnd {
                guard self.start < self.buffer.count else { return nil }
                let line = self.buffer[self.start...]
                self.start = self.buffer.count
                return line
            }
            if self.start > 0 {
                self.buffer.removeFirst(self.start)
                self.start = 0
            }
            let data = try self.handle.read(upToCount: 1 << 20) ?? Data()
            if data.isEmpty { self.isAtEnd = true } else {
                self.buffer += data
                self.bytesRead += data.count
            }
        }
    }
}

extension GuildArchive {
    /// A file read from its header to its trailer, every line parsed and the digest matched.
    public struct Checked: Sendable {
        public var header: Header
        /// Lines before the trailer (the header's included).
        public var lines: Int
        /// Distinct keys.
        public var keys: Int
        public var digest: String
        public var bytes: Int
    }

    /// Reads the whole file once and checks it: a file cut short, altered, or from a newer version is refused here,
    /// before anything is written. `progress` hears bytes read.
    public static func check(path: String, progress: (Int) -> Void = { _ in }) throws -> Checked {
        let reader = try LineReader(path: path)
        guard let first = try reader.next() else { throw FormatError("\(path) is empty") }
        let header = try Self.header(first)
        var digest = Self.chain(Self.initialDigest, first)
        var lines = 1
        var keys = Set<[UInt8]>()
        while let line = try reader.next() {
            switch try Self.parse(line, number: lines + 1) {
            case .record(let record):
                keys.insert(record.suffix)
                digest = Self.chain(digest, line)
                lines += 1
            case .trailer(let count, let expected):
                guard count == lines, expected == digest else {
                    throw FormatError("\(path) is damaged: its trailer does not match its \(lines) lines")
                }
                guard try reader.next() == nil else { throw FormatError("\(path) has lines after its trailer") }
                progress(reader.bytesRead)
                return Checked(header: header, lines: lines, keys: keys.count, digest: digest, bytes: reader.bytesRead)
            }
            if lines % 1000 == 0 { progress(reader.bytesRead) }
        }
        throw FormatError("\(path) is truncated: it ends after \(lines) lines without its trailer")
    }

    /// Reads a checked file's records again as restore parts of about `partBytes` each, handed to `each` a few at a
    /// time with the bytes read so far.
    public static func parts(
        path: String, checked: Checked, partBytes: Int = 64 << 10, each: ([Part], Int) async throws -> Void
    ) async throws {
        let reader = try LineReader(path: path)
        _ = try reader.next()
        var index = 0
        var records: [Record] = []
        var size = 0
        var ready: [Part] = []
        var read = 1
        func cut(last: Bool) {
            index += 1
            ready.append(Part(digest: checked.digest, index: index, isLast: last, header: checked.header, records: records, keys: checked.keys))
            records = []
            size = 0
        }
        while read < checked.lines, let line = try reader.next() {
            read += 1
            guard case .record(let record) = try Self.parse(line, number: read) else { break }
            records.append(record)
            size += line.count
            if size >= partBytes && read < checked.lines { cut(last: false) }
            if ready.count >= 8 {
                try await each(ready, reader.bytesRead)
                ready = []
            }
        }
        cut(last: true)
        try await each(ready, reader.bytesRead)
    }
}
