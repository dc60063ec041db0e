import Logging
import MarkovCore
import Redis

/// The event log: Redis streams partitioned by guild, read by consumer groups (`trainers`, `responders`).
///
/// Writers append with ``append(_:)``; readers use ``read(partition:group:consumer:count:block:)``,
/// ``acknowledge(partition:group:ids:)`` and ``claimStale(partition:group:consumer:minIdle:count:)``; poison entries
/// go to ``deadLetter(partition:group:entry:reason:)``; ``trim(partition:)`` drops only entries every group has
/// consumed.
public struct EventLog: Sendable {
    /// One stream entry.
    public struct Entry: Sendable {
        /// The stream id (`1700000000000-0`).
        public var id: String
        /// The fields as bytes.
        public var fields: [String: [UInt8]]
    }

    public let redis: RedisClient
    public let keys: EventLogKeys

    /// Makes an event log with `partitions` streams.
    public init(redis: RedisClient, partitions: Int) {
        self.redis = redis
        self.keys = EventLogKeys(partitions: partitions)
    }

    /// The command that appends one event to its guild's partition.
    public func appendCommand(_ event: ChainEvent) -> RedisCommand {
        var arguments: [RedisArgument] = [.string(self.keys.stream(for: event.guildID)), "*"]
        for (name, value) in event.fields {
            arguments.append(.string(name))
            arguments.append(.bytes(value))
        }
        return RedisCommand("XADD", arguments)
    }

    /// Appends events in one pipeline; returns the entry ids, in order. Fails if any append failed.
    @discardableResult
    public func append(_ events: [ChainEvent]) async throws(RedisError) -> [String] {
        var ids: [String] = []
        ids.reserveCapacity(events.count)
        for result in await self.redis.pipeline(events.map(self.appendCommand)) {
            ids.append(try result.get().string ?? "")
        }
        return ids
    }

    /// Creates the consumer group on every partition (from the start of each stream), if missing.
    public func ensureGroup(_ group: String) async throws(RedisError) {
        let commands = (0..<self.keys.partitions).map { partition in
            RedisCommand("XGROUP", "CREATE", .string(self.keys.stream(partition)), .string(group), "0", "MKSTREAM")
        }
        for result in await self.redis.pipeline(commands) {
            if case .failure(let error) = result, error.serverErrorPrefix != "BUSYGROUP" { throw error }
        }
    }

    /// Reads new entries for `consumer`, waiting up to `block` for some.
    public func read(
        partition: Int, group: String, consumer: String, count: Int, block: Duration
    ) async throws(RedisError) -> [Entry] {
        let milliseconds = Int(block.components.seconds * 1000 + block.components.attoseconds / 1_000_000_000_000_000)
        let reply = try await self.redis.blocking(
            RedisCommand(
                "XREADGROUP",
                ["GROUP", .string(group), .string(consumer), "COUNT", .integer(count), "BLOCK",
                 .integer(milliseconds), "STREAMS", .string(self.keys.stream(partition)), ">"]
            ),
            block: block
        )
        guard let streams = reply.array, let stream = streams.first?.array, stream.count == 2 else { return [] }
        return Self.entries(stream[1])
    }

    /// Claims entries other consumers have held for longer than `minIdle` (they died or hung).
    public func claimStale(
        partition: Int, group: String, consumer: String, minIdle: Duration, count: Int
    ) async throws(RedisError) -> [Entry] {
        let reply = try await self.redis.send(
            RedisCommand(
                "XAUTOCLAIM",
                [.string(self.keys.stream(partition)), .string(group), .string(consumer),
                 .integer(Int(minIdle.components.seconds * 1000)), "0-0", "COUNT", .integer(count)]
            )
        )
        guard let parts = reply.array, parts.count >= 2 else { return [] }
        return Self.entries(parts[1])
    }

    /// How often each entry has been delivered (for poison detection).
    public func deliveryCounts(partition: Int, group: String, ids: [String]) async throws(RedisError) -> [String: Int] {
        var counts: [String: Int] = [:]
        for id in ids {
            let reply = try await self.redis.send(
                RedisCommand("XPENDING", [.string(self.keys.stream(partition)), .string(group), .string(id), .string(id), 1])
            )
            if let row = reply.array?.first?.array, row.count == 4, let deliveries = row[3].int {
                counts[id] = deliveries
            }
        }
        return counts
    }

    /// Entries of a group not yet read (lag) plus entries read but not acknowledged (pending), over every
    /// partition: zero when the group has caught up.
    ///
    /// Redis's own `lag` cannot be trusted everywhere: after a restart from an append-only file it is unknown
    /// (null) until the group reads to the end, and after that it can stay far too high (the chaos soak saw a lag
    /// of 263,552 for a group whose last delivered entry was the stream's last). So a group that has been given
    /// the stream's last entry has no lag, whatever Redis says, and otherwise its lag is at most the stream's
    /// length (unknown: the length).
    public func backlog(group: String, partitions: some Sequence<Int>) async throws(RedisError) -> Int {
        var total = 0
        for partition in partitions {
            let stream = self.keys.stream(partition)
            let replies = await self.redis.pipeline([
                RedisCommand("XINFO", "GROUPS", .string(stream)),
                RedisCommand("XINFO", "STREAM", .string(stream)),
            ])
            let groups = try replies[0].get()
            let streamInfo = Self.fields((try? replies[1].get())?.array ?? [])
            let length = streamInfo["length"]?.int
            let lastGenerated = streamInfo["last-generated-id"]?.string
            for entry in groups.array ?? [] {
                let info = Self.fields(entry.array ?? [])
                guard info["name"]?.string == group else { continue }
                let pending = info["pending"]?.int ?? 0
                let lag: Int
                if let lastGenerated, info["last-delivered-id"]?.string == lastGenerated {
                    lag = 0
                } else if let length {
                    lag = min(info["lag"]?.int ?? length, length)
                } else {
                    lag = info["lag"]?.int ?? 0
                }
                total += lag + pending
            }
        }
        return total
    }

    /// A flat `name value name value …` reply as a dictionary.
    private static func fields(_ flat: [RedisReply]) -> [String: RedisReply] {
        var fields: [String: RedisReply] = [:]
        for index in stride(from: 0, to: flat.count - 1, by: 2) { fields[flat[index].string ?? ""] = flat[index + 1] }
        return fields
    }

    /// Acknowledges entries.
    public func acknowledge(partition: Int, group: String, ids: [String]) async throws(RedisError) {
        guard !ids.isEmpty else { return }
        try await self.redis.send(
            RedisCommand("XACK", [.string(self.keys.stream(partition)), .string(group)] + ids.map { .string($0) })
        )
    }

    /// Moves a poison entry to the partition's dead-letter stream with the reason, then acknowledges it.
    public func deadLetter(partition: Int, group: String, entry: Entry, reason: String) async throws(RedisError) {
        var arguments: [RedisArgument] = [
            .string(self.keys.deadLetters(partition)), "*", "reason", .string(reason), "entry", .string(entry.id),
            "group", .string(group),
        ]
        for (name, value) in entry.fields.sorted(by: { $0.key < $1.key }) {
            arguments += [.string("f." + name), .bytes(value)]
        }
        let results = await self.redis.pipeline([
            RedisCommand("XADD", arguments),
            RedisCommand("XACK", .string(self.keys.stream(partition)), .string(group), .string(entry.id)),
        ])
        for result in results { _ = try result.get() }
    }

    /// Trims a partition up to the oldest entry some group has not consumed (delivered and acknowledged);
    /// returns how many entries went. Does nothing when the stream has no group.
    @discardableResult
    public func trim(partition: Int) async throws(RedisError) -> Int {
        try await Self.trim(stream: self.keys.stream(partition), redis: self.redis)
    }

    /// Trims one stream up to the oldest entry some group has not consumed.
    @discardableResult
    public static func trim(stream: String, redis: RedisClient) async throws(RedisError) -> Int {
        let groups: [RedisReply]
        do {
            groups = try await redis.send(RedisCommand("XINFO", "GROUPS", .string(stream))).array ?? []
        } catch where error.message.contains("no such key") {
            return 0
        }
        guard !groups.isEmpty else { return 0 }
        var keep: StreamID?
        for group in groups {
            let info = Self.fields(group.array ?? [])
            guard let name = info["name"]?.string, let lastDelivered = info["last-delivered-id"]?.string.flatMap(StreamID.init)
            else { continue }
            var oldest = lastDelivered.next
            if (info["pending"]?.int ?? 0) > 0 {
                let summary = try await redis.send(RedisCommand("XPENDING", .string(stream), .string(name)))
                if let first = summary.array?[1].string.flatMap(StreamID.init) { oldest = min(oldest, first) }
            }
            keep = keep.map { min($0, oldest) } ?? oldest
        }
        guard let keep else { return 0 }
        return try await redis.send(RedisCommand("XTRIM", .string(stream), "MINID", .string(keep.description))).int ?? 0
    }

    /// Entries from an `XREADGROUP`/`XRANGE`-shaped array.
    public static func entries(_ reply: RedisReply) -> [Entry] {
        (reply.array ?? []).compactMap { item in
            guard let pair = item.array, pair.count == 2, let id = pair[0].string else { return nil }
            // A claimed entry that was trimmed meanwhile comes back with nil fields.
            let flat = pair[1].array ?? []
            var fields: [String: [UInt8]] = [:]
            for index in stride(from: 0, to: flat.count - 1, by: 2) {
                fields[flat[index].string ?? ""] = flat[index + 1].bytes ?? []
            }
            return Entry(id: id, fields: fields)
        }
    }
}

/// A stream entry id, `ms-seq`, ordered as Redis orders them.
struct StreamID: Comparable, CustomStringConvertible {
    var milliseconds: UInt64
    var sequence: UInt64

    init(milliseconds: UInt64, sequence: UInt64) {
        self.milliseconds = milliseconds
        self.sequence = sequence
    }

    init?(_ text: String) {
        let parts = text.split(separator: "-")
        guard parts.count == 2, let ms = UInt64(parts[0]), let seq = UInt64(parts[1]) else { return nil }
        self.init(milliseconds: ms, sequence: seq)
    }

    var next: StreamID {
        self.sequence == .max ? StreamID(milliseconds: self.milliseconds + 1, sequence: 0)
            : StreamID(milliseconds: self.milliseconds, sequence: self.sequence + 1)
    }

    var description: String { "\(self.milliseconds)-\(self.sequence)" }

    static func < (lhs: StreamID, rhs: StreamID) -> Bool {
        (lhs.milliseconds, lhs.sequence) < (rhs.milliseconds, rhs.sequence)
    }
}
