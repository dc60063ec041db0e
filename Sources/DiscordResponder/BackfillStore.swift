import Foundation
import MarkovChains
import MarkovCore
import Redis

/// One guild's history backfill (`/train`), kept in Redis so that any responder can carry it on after another
/// stopped or died. The guild's keys share its hash tag, so each script below sees them together on a cluster.
///
/// | key | type | what |
/// |---|---|---|
/// | `{g:<id>}:backfill` | hash | `status` (`listing`, `running`, `done`, `failed`, `cancelled`), `started` and `finished` (ms), `channel` and `requester` of the command, `progress` (the id of the message that shows progress), `items`, `channels` and `done_items` (channels and threads to read, how many are channels, how many are done), `messages` read, `skipped` (channels it may not read), `error`; per item being read: `cursor:<item>` (the oldest message read) and `newest:<item>` |
/// | `{g:<id>}:backfill:queue` | list | channels and threads still to read, the first being read |
/// | `{g:<id>}:backfill:lease` | string with an expiry | the responder running the backfill; renewed with every page |
/// | `backfill:jobs` | set | guilds whose backfill is not finished (responders look here for work) |
public struct BackfillStore: Sendable {
    public let redis: RedisClient
    /// How long a lease lasts without a renewal: a dead responder's backfill is taken over after this.
    public var leaseTTL: Duration = .seconds(30)

    public init(redis: RedisClient) { self.redis = redis }

    static let jobs = "backfill:jobs"

    struct Keys {
        var job: String
        var queue: String
        var lease: String
        init(_ guild: Snowflake) {
            let prefix = ChainKeys(guild: guild).prefix
            self.job = "\(prefix):backfill"
            self.queue = "\(prefix):backfill:queue"
            self.lease = "\(prefix):backfill:lease"
        }
    }

    /// A backfill as stored.
    public struct Job: Sendable, Hashable {
        public enum Status: String, Sendable, Hashable { case listing, running, done, failed, cancelled }
        public var status: Status
        /// Milliseconds since the Unix epoch.
        public var started: Int64
        public var channel: Snowflake?
        public var requester: String?
        public var progressMessage: String?
        /// Channels and threads to read, and how many of them are channels.
        public var items = 0
        public var channels = 0
        public var doneItems = 0
        public var messages = 0
        public var skipped: [String] = []
        public var error: String?
        /// The channel or thread being read, with its cursor (the oldest message read) and newest message.
        public var current: String?
        public var cursor: String?
        public var newest: String?

        public var isFinished: Bool { [.done, .failed, .cancelled].contains(self.status) }

        public init(status: Status, started: Int64) {
            self.status = status
            self.started = started
        }
    }

    /// What `/train` found.
    public enum StartResult: Sendable, Hashable {
        case started
        /// A backfill of the guild is already under way.
        case alreadyRunning(Job)
    }

    /// Starts a backfill of `guild` unless one is under way (one per guild at a time).
    public func start(guild: Snowflake, channel: Snowflake?, requester: String?) async throws(RedisError) -> StartResult {
        let keys = Keys(guild)
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let reply = try await self.redis.send(RedisCommand("EVAL", [
            .string(Self.startScript), 2, .string(keys.job), .string(keys.queue),
            .integer(Int(now)), .string(channel?.rawValue ?? ""), .string(requester ?? ""),
        ]))
        // `backfill:jobs` lives in another slot, so this cannot be atomic with the script: it is added on every
        // `/train`, so a guild that dropped out of the set (a failed SADD, a racing `forget`) comes back.
        try await self.redis.send(RedisCommand("SADD", .string(Self.jobs), .string(guild.rawValue)))
        if reply.int == 0, let job = try await self.job(guild: guild) { return .alreadyRunning(job) }
        return .started
    }

    private static let startScript = """
        local status = redis.call('HGET', KEYS[1], 'status')
        if status == 'listing' or status == 'running' then return 0 end
        redis.call('DEL', KEYS[1], KEYS[2])
        redis.call('HSET', KEYS[1], 'status', 'listing', 'started', ARGV[1], 'channel', ARGV[2], 'requester', ARGV[3],
            'items', 0, 'done_items', 0, 'messages', 0)
        return 1
        """

    /// The guild's backfill, if it has one.
    public func job(guild: Snowflake) async throws(RedisError) -> Job? {
        let keys = Keys(guild)
        let head = try await self.redis.send(RedisCommand("LINDEX", .string(keys.queue), 0)).string
        let flat = try await self.redis.send(RedisCommand("HGETALL", .string(keys.job))).array ?? []
        var fields: [String: String] = [:]
        for index in stride(from: 0, to: flat.count - 1, by: 2) {
            fields[flat[index].string ?? ""] = flat[index + 1].string ?? ""
        }
        guard let status = fields["status"].flatMap(Job.Status.init(rawValue:)) else { return nil }
        func nonEmpty(_ name: String) -> String? { fields[name].flatMap { $0.isEmpty ? nil : $0 } }
        var job = Job(status: status, started: Int64(fields["started"] ?? "") ?? 0)
        job.channel = nonEmpty("channel").flatMap { Snowflake($0) }
        job.requester = nonEmpty("requester")
        job.progressMessage = nonEmpty("progress")
        job.items = Int(fields["items"] ?? "") ?? 0
        job.channels = Int(fields["channels"] ?? "") ?? 0
        job.doneItems = Int(fields["done_items"] ?? "") ?? 0
        job.messages = Int(fields["messages"] ?? "") ?? 0
        job.skipped = nonEmpty("skipped")?.split(separator: ",").map(String.init) ?? []
        job.error = nonEmpty("error")
        if let head {
            job.current = head
            job.cursor = nonEmpty("cursor:\(head)")
            job.newest = nonEmpty("newest:\(head)")
        }
        return job
    }

    /// Guilds whose backfill is not finished.
    public func unfinished() async throws(RedisError) -> [Snowflake] {
        let reply = try await self.redis.send(RedisCommand("SMEMBERS", .string(Self.jobs)))
        return (reply.array ?? []).compactMap { $0.string.flatMap { Snowflake($0) } }
    }

    /// Takes the lease of the guild's backfill for `owner`; false when another responder holds it.
    public func claim(guild: Snowflake, owner: String) async throws(RedisError) -> Bool {
        let reply = try await self.redis.send(RedisCommand(
            "SET", .string(Keys(guild).lease), .string(owner), "NX", "PX", .integer(Self.milliseconds(self.leaseTTL))
        ))
        return reply.string == "OK"
    }

    /// Gives the lease back (at shutdown, so another responder carries on at once).
    public func release(guild: Snowflake, owner: String) async throws(RedisError) {
        try await self.redis.send(RedisCommand("EVAL", [
            .string("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"),
            1, .string(Keys(guild).lease), .string(owner),
        ]))
    }

    /// Sets the list of channels and threads to read and moves the backfill to `running`; false when `owner`
    /// lost the lease.
    public func setItems(_ items: [String], channels: Int, guild: Snowflake, owner: String) async throws(RedisError) -> Bool {
        let keys = Keys(guild)
        var arguments: [RedisArgument] = [
            .string(Self.setItemsScript), 3, .string(keys.job), .string(keys.queue), .string(keys.lease), .string(owner),
            .integer(Self.milliseconds(self.leaseTTL)), .integer(channels),
        ]
        arguments += items.map { .string($0) }
        return try await self.redis.send(RedisCommand("EVAL", arguments)).int == 1
    }

    private static let setItemsScript = """
        if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
        if redis.call('HGET', KEYS[1], 'status') ~= 'listing' then return 0 end
        redis.call('PEXPIRE', KEYS[3], ARGV[2])
        redis.call('DEL', KEYS[2])
        for i = 4, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
        redis.call('HSET', KEYS[1], 'status', 'running', 'items', #ARGV - 3, 'channels', ARGV[3], 'done_items', 0)
        return 1
        """

    /// One page read: records the item's new cursor (or, when `finished`, drops the item), adds `count` messages,
    /// and renews the lease. False when `owner` lost the lease (another responder carries on) or the backfill was
    /// cancelled.
    public func advance(
        guild: Snowflake, owner: String, item: String, cursor: String?, newest: String?, count: Int, finished: Bool,
        skipped: Bool = false
    ) async throws(RedisError) -> Bool {
        let keys = Keys(guild)
        let reply = try await self.redis.send(RedisCommand("EVAL", [
            .string(Self.advanceScript), 3, .string(keys.job), .string(keys.queue), .string(keys.lease), .string(owner),
            .integer(Self.milliseconds(self.leaseTTL)), .string(item), .string(cursor ?? ""), .string(newest ?? ""),
            .integer(count), finished ? "1" : "0", skipped ? "1" : "0",
        ]))
        return reply.int == 1
    }

    private static let advanceScript = """
        if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
        if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
        redis.call('PEXPIRE', KEYS[3], ARGV[2])
        local item = ARGV[3]
        if redis.call('LINDEX', KEYS[2], 0) ~= item then return 0 end
        redis.call('HINCRBY', KEYS[1], 'messages', ARGV[6])
        if ARGV[7] == '1' then
            redis.call('LPOP', KEYS[2])
            redis.call('HINCRBY', KEYS[1], 'done_items', 1)
            redis.call('HDEL', KEYS[1], 'cursor:' .. item, 'newest:' .. item)
            if ARGV[8] == '1' then
                local skipped = redis.call('HGET', KEYS[1], 'skipped')
                redis.call('HSET', KEYS[1], 'skipped', (skipped and skipped ~= '') and (skipped .. ',' .. item) or item)
            end
        else
            if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'cursor:' .. item, ARGV[4]) end
            if ARGV[5] ~= '' then redis.call('HSETNX', KEYS[1], 'newest:' .. item, ARGV[5]) end
        end
        return 1
        """

    /// Remembers the message that shows the backfill's progress.
    public func setProgressMessage(_ id: String, guild: Snowflake) async throws(RedisError) {
        try await self.redis.send(RedisCommand("HSET", .string(Keys(guild).job), "progress", .string(id)))
    }

    /// Ends the backfill (`done`, `failed` with a reason, or `cancelled`) and forgets the lease.
    public func finish(guild: Snowflake, status: Job.Status, error: String? = nil) async throws(RedisError) {
        let keys = Keys(guild)
        var fields: [RedisArgument] = [.string(keys.job), "status", .string(status.rawValue), "finished",
                                       .integer(Int(Date().timeIntervalSince1970 * 1000))]
        if let error { fields += ["error", .string(error)] }
        try await self.redis.send(RedisCommand("HSET", fields))
        try await self.redis.send(RedisCommand("DEL", .string(keys.queue), .string(keys.lease)))
        try await self.redis.send(RedisCommand("SREM", .string(Self.jobs), .string(guild.rawValue)))
    }

    /// Stops a guild's backfill wherever it runs (before its data is deleted); the running responder notices at its
    /// next page.
    public func cancel(guild: Snowflake) async throws(RedisError) {
        let keys = Keys(guild)
        let status = try await self.redis.send(RedisCommand("HGET", .string(keys.job), "status")).string
        guard status == "listing" || status == "running" else { return }
        try await self.finish(guild: guild, status: .cancelled)
    }

    /// Forgets a guild in `backfill:jobs` whose backfill is gone or finished (and adds it back if a new one
    /// started meanwhile).
    func forget(guild: Snowflake) async throws(RedisError) {
        try await self.redis.send(RedisCommand("SREM", .string(Self.jobs), .string(guild.rawValue)))
        if let job = try await self.job(guild: guild), !job.isFinished {
            try await self.redis.send(RedisCommand("SADD", .string(Self.jobs), .string(guild.rawValue)))
        }
    }

    /// Renews `owner`'s lease; false when it was lost.
    public func renew(guild: Snowflake, owner: String) async throws(RedisError) -> Bool {
        let reply = try await self.redis.send(RedisCommand("EVAL", [
            .string("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"),
            1, .string(Keys(guild).lease), .string(owner), .integer(Self.milliseconds(self.leaseTTL)),
        ]))
        return reply.int == 1
    }

    static func milliseconds(_ duration: Duration) -> Int {
        Int(duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000)
    }
}
