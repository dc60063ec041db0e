import CoreMetrics
import Logging
import MarkovCore
import Redis

/// The event log: Redis streams partitioned by guild, read by consumer groups (`trainers`, `responders`).
///
/// Each partition has two lanes in one cluster slot: `events:{N}` (live: the gateway, the console, commands) and
/// `bulk:{N}` (imports and `/train` backfills), which only the trainers read, after the live lane, so a big import
/// never delays live learning or the responders (docs/event-log.md).
///
/// Writers append with ``append(_:lane:)``; readers use ``read(partition:group:consumer:count:block:lanes:)``,
/// ``acknowledge(partition:group:ids:lane:)`` and ``claim(partition:group:consumer:minIdle:count:lane:)``, or
/// a ``PartitionConsumer`` that does all of it; poison entries go to ``deadLetter(partition:group:entry:reason:lane:)``;
/// ``trim(partition:)`` drops only entries every group has consumed.
public struct EventLog: Sendable {
    /// One stream entry.
    public struct Entry: Sendable {
        /// The stream id (`1700000000000-0`).
        public var id: String
        /// The fields as bytes.
        public var fields: [String: [UInt8]]

        public init(id: String, fields: [String: [UInt8]]) {
            self.id = id
            self.fields = fields
        }
    }

    /// The two streams of a partition.
    public enum Lane: String, Sendable, Hashable, CaseIterable {
        /// `events:{N}`: everything but bulk work; read by trainers and responders.
        case live
        /// `bulk:{N}`: imports and history backfills; read by trainers only, after the live lane.
        case bulk

        /// The meta field of a guild that holds the last entry of this lane applied to it.
        var appliedField: String { self == .live ? "applied" : "applied_bulk" }
    }

    public let redis: RedisClient
    public let keys: EventLogKeys

    /// Makes an event log with `partitions` streams.
    public init(redis: RedisClient, partitions: Int) {
        self.redis = redis
        self.keys = EventLogKeys(partitions: partitions)
    }

    /// The command that appends one event to its guild's partition.
    public func appendCommand(_ event: ChainEvent, lane: Lane = .live) -> RedisCommand {
        var arguments: [RedisArgument] = [.string(self.keys.stream(for: event.guildID, lane: lane)), "*"]
        for (name, value) in event.fields {
            arguments.append(.string(name))
            arguments.append(.bytes(value))
        }
        return RedisCommand("XADD", arguments)
    }

    /// Appends events in one pipeline; returns the entry ids, in order. Fails if any append failed.
    @discardableResult
    public func append(_ events: [ChainEvent], lane: Lane = .live) async throws(RedisError) -> [String] {
        var ids: [String] = []
        ids.reserveCapacity(events.count)
        for result in await self.redis.pipeline(events.map { self.appendCommand($0, lane: lane) }) {
            ids.append(try result.get().string ?? "")
        }
        Self.recordAppended(ids.count, lane: lane)
        return ids
    }

    /// Counts events appended to a lane, whoever appended them (`markov_log_events_appended_total{lane}`):
    /// ``append(_:lane:)`` counts its own; a writer that pipelines ``appendCommand(_:lane:)`` itself calls this.
    public static func recordAppended(_ count: Int, lane: Lane) {
        guard count > 0 else { return }
        Counter(label: "markov_log_events_appended_total", dimensions: [("lane", lane.rawValue)]).increment(by: count)
    }

    /// Creates the consumer group on every partition of the lanes (from the start of each stream), if missing.
    public func ensureGroup(_ group: String, lanes: [Lane] = [.live]) async throws(RedisError) {
        let commands = lanes.flatMap { lane in
            (0..<self.keys.partitions).map { partition in
                RedisCommand("XGROUP", "CREATE", .string(self.keys.stream(partition, lane: lane)), .string(group), "0", "MKSTREAM")
            }
        }
        for result in await self.redis.pipeline(commands) {
            if case .failure(let error) = result, error.serverErrorPrefix != "BUSYGROUP" { throw error }
        }
    }

    /// Reads new entries of the lanes for `consumer`, at most `count` of each, waiting up to `block` for some
    /// (zero: no wait).
    public func read(
        partition: Int, group: String, consumer: String, count: Int, block: Duration, lanes: [Lane] = [.live]
    ) async throws(RedisError) -> [(lane: Lane, entries: [Entry])] {
        var arguments: [RedisArgument] = ["GROUP", .string(group), .string(consumer), "COUNT", .integer(count)]
        if block > .zero { arguments += ["BLOCK", .integer(Self.milliseconds(block))] }
        arguments.append("STREAMS")
        for lane in lanes { arguments.append(.string(self.keys.stream(partition, lane: lane))) }
        for _ in lanes { arguments.append(">") }
        let command = RedisCommand("XREADGROUP", arguments)
        let reply = block > .zero ? try await self.redis.blocking(command, block: block) : try await self.redis.send(command)
        return Self.streams(reply, lanes: lanes, keys: self.keys, partition: partition)
    }

    /// Reads `consumer`'s own pending entries of a lane (delivered to it, not acknowledged), oldest first, from
    /// after `after`.
    public func ownPending(
        partition: Int, group: String, consumer: String, count: Int, lane: Lane, after: String = "0"
    ) async throws(RedisError) -> [Entry] {
        let reply = try await self.redis.send(
            RedisCommand("XREADGROUP", ["GROUP", .string(group), .string(consumer), "COUNT", .integer(count), "STREAMS",
                                        .string(self.keys.stream(partition, lane: lane)), .string(after)])
        )
        return Self.entries(reply.array?.first?.array?[1] ?? .null)
    }

    /// The entries of an `XREADGROUP` reply, per lane.
    static func streams(_ reply: RedisReply, lanes: [Lane], keys: EventLogKeys, partition: Int) -> [(lane: Lane, entries: [Entry])] {
        var result: [(lane: Lane, entries: [Entry])] = []
        for stream in reply.array ?? [] {
            guard let pair = stream.array, pair.count == 2, let name = pair[0].string,
                  let lane = lanes.first(where: { keys.stream(partition, lane: $0) == name })
            else { continue }
            result.append((lane, Self.entries(pair[1])))
        }
        return result
    }

    static func milliseconds(_ duration: Duration) -> Int {
        Int(duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000)
    }

    /// Claims entries of a lane that other consumers have held for at least `minIdle` (they died, hung, or lost
    /// the partition), oldest first, from `start`; returns them and where the next claim starts (`0-0` when the
    /// whole pending list was scanned).
    public func claim(
        partition: Int, group: String, consumer: String, minIdle: Duration, count: Int, lane: Lane = .live,
        start: String = "0-0"
    ) async throws(RedisError) -> (entries: [Entry], next: String) {
        let reply = try await self.redis.send(
            RedisCommand(
                "XAUTOCLAIM",
                [.string(self.keys.stream(partition, lane: lane)), .string(group), .string(consumer),
                 .integer(Self.milliseconds(minIdle)), .string(start), "COUNT", .integer(count)]
            )
        )
        guard let parts = reply.array, parts.count >= 2 else { return ([], "0-0") }
        return (Self.entries(parts[1]), parts[0].string ?? "0-0")
    }

    /// How often each entry has been delivered (for poison detection).
    public func deliveryCounts(partition: Int, group: String, ids: [String], lane: Lane = .live) async throws(RedisError) -> [String: Int] {
        var counts: [String: Int] = [:]
        for id in ids {
            let reply = try await self.redis.send(
                RedisCommand("XPENDING", [.string(self.keys.stream(partition, lane: lane)), .string(group), .string(id), .string(id), 1])
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
    public func backlog(group: String, partitions: some Sequence<Int>, lanes: [Lane] = [.live]) async throws(RedisError) -> Int {
        var total = 0
        for partition in partitions {
          for lane in lanes {
            let stream = self.keys.stream(partition, lane: lane)
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
        }
        return total
    }

    /// A flat `name value name value …` reply as a dictionary.
    private static func fields(_ flat: [RedisReply]) -> [String: RedisReply] {
        var fields: [String: RedisReply] = [:]
        for index in stride(from: 0, to: flat.count - 1, by: 2) { fields[flat[index].string ?? ""] = flat[index + 1] }
        return fields
    }

    /// Acknowledges entries of a lane.
    public func acknowledge(partition: Int, group: String, ids: [String], lane: Lane = .live) async throws(RedisError) {
        guard !ids.isEmpty else { return }
        try await self.redis.send(
            RedisCommand("XACK", [.string(self.keys.stream(partition, lane: lane)), .string(group)] + ids.map { .string($0) })
        )
    }

    /// Moves a poison entry to the partition's dead-letter stream with the reason, then acknowledges it.
    public func deadLetter(partition: Int, group: String, entry: Entry, reason: String, lane: Lane = .live) async throws(RedisError) {
        var arguments: [RedisArgument] = [
            .string(self.keys.deadLetters(partition)), "*", "reason", .string(reason), "entry", .string(entry.id),
            "group", .string(group), "lane", .string(lane.rawValue),
        ]
        for (name, value) in entry.fields.sorted(by: { $0.key < $1.key }) {
            arguments += [.string("f." + name), .bytes(value)]
        }
        let results = await self.redis.pipeline([
            RedisCommand("XADD", arguments),
            RedisCommand("XACK", .string(self.keys.stream(partition, lane: lane)), .string(group), .string(entry.id)),
        ])
        for result in results { _ = try result.get() }
    }

    /// Trims both lanes of a partition up to the oldest entry some group has not consumed (delivered and
    /// acknowledged); returns how many entries went. Does nothing to a stream without a group.
    @discardableResult
    public func trim(partition: Int) async throws(RedisError) -> Int {
        var trimmed = 0
        for lane in Lane.allCases { trimmed += try await Self.trim(stream: self.keys.stream(partition, lane: lane), redis: self.redis) }
        return trimmed
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
        // Whole stream nodes first (cheap however many entries go), then exactly the rest, so that no single
        // command holds Redis for long.
        let approximate = try await redis.send(RedisCommand("XTRIM", .string(stream), "MINID", "~", .string(keep.description))).int ?? 0
        return try await approximate + (redis.send(RedisCommand("XTRIM", .string(stream), "MINID", .string(keep.description))).int ?? 0)
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
struct StreamID: Comparable, Hashable, Sendable, CustomStringConvertible {
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
