import Foundation
import MarkovCore
import Redis

/// Writes a guild's data as a ``GuildArchive`` (`markov export`): every key of the families the registry marks
/// portable (``ChainKeys/Family/isPortable``), read a page at a time.
///
/// The read is not a snapshot: a guild that learns while it is exported may give a file whose totals disagree
/// with its chain. ``Summary/changed`` says when the guild's write sequence moved during the export.
public struct GuildExport: Sendable {
    public let redis: RedisClient
    public let guild: Snowflake

    public init(redis: RedisClient, guild: Snowflake) {
        self.redis = redis
        self.guild = guild
    }

    /// What was written.
    public struct Summary: Sendable {
        public var header: GuildArchive.Header
        public var keys = 0
        public var lines = 0
        public var digest = GuildArchive.initialDigest
        /// The guild was written to during the export.
        public var changed = false
    }

    /// A page of a hash or set per line.
    static let pageSize = 1000

    /// Writes the file's lines (each without its newline) to `write`; `progress` hears keys done and the keys there
    /// are. Throws when the guild is in the earlier layout (migrate it first) or a key has a type no family has.
    public func run(
        stateSize: Int, write: ([UInt8]) throws -> Void, progress: (Int, Int) -> Void = { _, _ in }
    ) async throws -> Summary {
        let keys = ChainKeys(guild: self.guild)
        let meta = PartitionOwner.fields(try await self.redis.send(RedisCommand("HGETALL", .string(keys.meta))))
        func int(_ name: String) -> Int { meta[name].flatMap { Int($0) } ?? 0 }
        if let stored = meta["state_size"].flatMap({ Int($0) }), stored != stateSize {
            throw GuildArchive.FormatError("guild \(self.guild) was trained with state size \(stored), not \(stateSize)")
        }
        let layout = meta["layout"].flatMap { Int($0) } ?? (int("states") > 0 || int("messages") > 0 ? 1 : ChainLayout.version)
        guard layout == ChainLayout.version else {
            throw GuildArchive.FormatError("guild \(self.guild) is in layout \(layout): run `markov migrate --guild \(self.guild)` first")
        }
        var exported: [String: String] = [:]
        for name in GuildArchive.metaFields { exported[name] = meta[name] ?? "0" }
        exported["layout"] = String(ChainLayout.version)
        exported["state_size"] = String(stateSize)
        let header = GuildArchive.Header(
            guild: self.guild, stateSize: stateSize, exportedAt: Int64(Self.now()), meta: exported
        )
        var summary = Summary(header: header)
        func emit(_ line: [UInt8]) throws {
            try write(line)
            summary.lines += 1
            summary.digest = GuildArchive.chain(summary.digest, line)
        }
        try emit(GuildArchive.line(header))

        // Every key to read: the fixed portable keys, the buckets, and the big states' keys.
        var suffixes: [[UInt8]] = ChainKeys.families.filter { $0.isPortable && !$0.suffix.hasSuffix("*") }.map { Array($0.suffix.utf8) }
        let shape = LinearHashing(level: int("L"), split: int("p"))
        suffixes += (0..<shape.buckets).map { Array(ChainKeys.bucketSuffix($0).utf8) }
        for state in try await self.members(keys.key(ChainKeys.bigStatesSuffix)) {
            suffixes += [ChainKeys.aliasSuffix(state), ChainKeys.pendingSuffix(state), ChainKeys.changesSuffix(state)].map { Array($0.utf8) }
        }
        progress(0, suffixes.count)
        // A hundred keys at a time: their types in one pipeline, then their first pages (a whole string, a hash's or
        // set's first page) in another; only keys bigger than a page are read on, one page after another.
        for start in stride(from: 0, to: suffixes.count, by: 100) {
            let batch = Array(suffixes[start..<min(suffixes.count, start + 100)])
            let prefix = Array(keys.prefix.utf8)
            let types = try await self.redis.pipeline(batch.map { RedisCommand("TYPE", .bytes(prefix + $0)) }).map { try $0.get().string }
            let firsts = await self.redis.pipeline(zip(batch, types).map { suffix, type in
                switch type {
                case "string": RedisCommand("GET", .bytes(prefix + suffix))
                case "hash": RedisCommand("HSCAN", .bytes(prefix + suffix), "0", "COUNT", .integer(Self.pageSize))
                case "set": RedisCommand("SSCAN", .bytes(prefix + suffix), "0", "COUNT", .integer(Self.pageSize))
                default: RedisCommand("PING")
                }
            })
            for ((suffix, type), first) in zip(zip(batch, types), firsts) {
                let key = prefix + suffix
                switch type {
                case "none":
                    continue
                case "string":
                    try emit(GuildArchive.line(.string(suffix: suffix, value: try first.get().bytes ?? [])))
                case "hash":
                    try await self.scan("HSCAN", key, first: try first.get()) { items in
                        var pairs: [GuildArchive.Pair] = []
                        for index in stride(from: 0, to: items.count - 1, by: 2) { pairs.append(GuildArchive.Pair(items[index], items[index + 1])) }
                        try emit(GuildArchive.line(.hash(suffix: suffix, entries: pairs)))
                    }
                case "set":
                    try await self.scan("SSCAN", key, first: try first.get()) { items in try emit(GuildArchive.line(.set(suffix: suffix, members: items))) }
                case let other:
                    throw GuildArchive.FormatError("key \(String(decoding: key, as: UTF8.self)) is a \(other ?? "?"), which no key family of a guild is")
                }
                summary.keys += 1
            }
            progress(start + batch.count, suffixes.count)
        }
        let wseq = try await self.redis.send(RedisCommand("HGET", .string(keys.meta), "wseq")).string
        summary.changed = wseq != meta["wseq"]
        try write(GuildArchive.trailer(lines: summary.lines, digest: summary.digest))
        return summary
    }

    /// Reads a hash or set a page at a time, from its `first` page when that was read already; `page` hears each
    /// non-empty page's items (field, value, … for hashes).
    private func scan(_ command: String, _ key: [UInt8], first: RedisReply? = nil, page: ([[UInt8]]) throws -> Void) async throws {
        func read(_ cursor: String) async throws(RedisError) -> RedisReply {
            try await self.redis.send(RedisCommand(command, .bytes(key), .string(cursor), "COUNT", .integer(Self.pageSize)))
        }
        var reply = if let first { first } else { try await read("0") }
        while true {
            guard let parts = reply.array, parts.count == 2, let next = parts[0].string else {
                throw RedisError(.protocolError, "\(command) answered \(reply)")
            }
            let items = (parts[1].array ?? []).compactMap(\.bytes)
            if !items.isEmpty { try page(items) }
            guard next != "0" else { return }
            reply = try await read(next)
        }
    }

    private func members(_ key: String) async throws -> [[UInt8]] {
        var members: [[UInt8]] = []
        try await self.scan("SSCAN", Array(key.utf8)) { members += $0 }
        return members
    }

    private static func now() -> Int { Int(Date().timeIntervalSince1970 * 1000) }
}
