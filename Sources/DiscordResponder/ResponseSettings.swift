import MarkovChains
import MarkovCore
import Redis
import Synchronization

/// When the bot speaks unasked, per guild, in Redis beside the guild's chain (same hash tag):
///
/// | key | type | what |
/// |---|---|---|
/// | `{g:<id>}:chance` | hash `guild` or `<channel>` → parts per million | the chance to answer any human message (a channel's value overrides the guild's); field `images`: the chance that a reply carries an image the guild posted (0 by default) |
/// | `{g:<id>}:autorespond` | set of channel ids | channels where every human message is answered, seeded by it |
/// | `{g:<id>}:cooldown:<channel>` | string with an expiry | the bot spoke unasked in the channel recently |
/// | `{g:<id>}:reply-channels` | set of channel ids | when not empty, the only channels (and their threads) where the bot answers |
/// | `{g:<id>}:ask-roles` | set of role ids | when not empty, only members with one of these roles may ask (admins may still use `/mark`; the guild's id is @everyone) |
public struct ResponseSettings: Sendable {
    public let redis: RedisClient

    public init(redis: RedisClient) { self.redis = redis }

    static func chanceKey(_ guild: Snowflake) -> String { "\(ChainKeys(guild: guild).prefix):chance" }
    static func autorespondKey(_ guild: Snowflake) -> String { "\(ChainKeys(guild: guild).prefix):autorespond" }
    static func cooldownKey(_ guild: Snowflake, _ channel: Snowflake) -> String {
        "\(ChainKeys(guild: guild).prefix):cooldown:\(channel.rawValue)"
    }

    static func replyChannelsKey(_ guild: Snowflake) -> String { "\(ChainKeys(guild: guild).prefix):reply-channels" }
    static func askRolesKey(_ guild: Snowflake) -> String { "\(ChainKeys(guild: guild).prefix):ask-roles" }

    /// Where the bot may answer, who may ask, and how often a reply carries an image, for one trigger.
    public struct ReplyRules: Sendable, Hashable {
        /// The channel is one where the bot answers (or no channel is singled out).
        public var channelAllowed = true
        /// The author has a role allowed to ask (or no role is singled out).
        public var roleAllowed = true
        /// The chance, in parts per million, that the reply carries an image the guild posted.
        public var imageChance = 0
        /// The channel (or the thread's channel) is age-restricted: the reply may say what was learnt in such
        /// channels (docs/responder.md).
        public var ageRestricted = false
        public init() {}
    }

    /// The commands that read the rules for a trigger in `channel` by an author with `roles` (pipelined by the
    /// caller with whatever else it needs from the guild); ``rules(from:)`` reads their replies.
    static func ruleCommands(guild: Snowflake, channel: Snowflake, roles: [Snowflake]) -> [RedisCommand] {
        let channels = Self.replyChannelsKey(guild), askRoles = Self.askRolesKey(guild)
        // The guild's id is the @everyone role, which members' role lists leave out.
        let roles = roles + [guild]
        return [
            RedisCommand("HGET", .string(Self.chanceKey(guild)), "images"),
            RedisCommand("SMEMBERS", .string(channels)),
            // A thread counts as its channel.
            RedisCommand("HGET", .string(ChainKeys(guild: guild).threads), .string(channel.rawValue)),
            RedisCommand("SCARD", .string(askRoles)),
            RedisCommand("SMISMEMBER", [.string(askRoles)] + roles.map { .string($0.rawValue) }),
            RedisCommand("SMEMBERS", .string(ChainKeys(guild: guild).ageRestricted)),
        ]
    }

    /// `parent`: the thread's channel when the event names it (a thread announced moments ago may not be recorded
    /// yet).
    static func rules(from replies: ArraySlice<RedisReply>, channel: Snowflake, parent known: Snowflake? = nil) -> ReplyRules {
        let values = Array(replies)
        var rules = ReplyRules()
        guard values.count >= 6 else { return rules }
        rules.imageChance = values[0].string.flatMap { Int($0) } ?? 0
        let channels = Set((values[1].array ?? []).compactMap(\.string))
        let parent = values[2].string
        rules.channelAllowed = channels.isEmpty || channels.contains(channel.rawValue) || parent.map(channels.contains) == true
        let memberships = (values[4].array ?? []).map { $0.int == 1 }
        rules.roleAllowed = values[3].int == 0 || memberships.contains(true)
        let restricted = Set((values[5].array ?? []).compactMap(\.string))
        rules.ageRestricted = restricted.contains(channel.rawValue) || (known?.rawValue ?? parent).map(restricted.contains) == true
        return rules
    }

    /// Sets the chance, in parts per million, that a reply carries an image the guild posted (0: never).
    public func setImageChance(_ partsPerMillion: Int, guild: Snowflake) async throws(RedisError) {
        try await self.redis.send(
            RedisCommand("HSET", .string(Self.chanceKey(guild)), "images", .integer(max(0, min(1_000_000, partsPerMillion))))
        )
    }

    /// Adds or removes a channel where the bot answers (none: everywhere).
    public func setReplyChannel(_ enabled: Bool, guild: Snowflake, channel: Snowflake) async throws(RedisError) {
        try await self.redis.send(RedisCommand(enabled ? "SADD" : "SREM", .string(Self.replyChannelsKey(guild)), .string(channel.rawValue)))
    }

    public func replyChannels(guild: Snowflake) async throws(RedisError) -> [String] {
        let reply = try await self.redis.send(RedisCommand("SMEMBERS", .string(Self.replyChannelsKey(guild))))
        return (reply.array ?? []).compactMap(\.string).sorted()
    }

    /// Adds or removes a role allowed to ask (none: everyone).
    public func setAskRole(_ enabled: Bool, guild: Snowflake, role: Snowflake) async throws(RedisError) {
        try await self.redis.send(RedisCommand(enabled ? "SADD" : "SREM", .string(Self.askRolesKey(guild)), .string(role.rawValue)))
    }

    public func askRoles(guild: Snowflake) async throws(RedisError) -> [String] {
        let reply = try await self.redis.send(RedisCommand("SMEMBERS", .string(Self.askRolesKey(guild))))
        return (reply.array ?? []).compactMap(\.string).sorted()
    }

    /// Sets the chance for the guild (`channel` nil) or one channel; `nil` ppm removes the setting.
    public func setChance(_ partsPerMillion: Int?, guild: Snowflake, channel: Snowflake?) async throws(RedisError) {
        let field = channel?.rawValue ?? "guild"
        if let partsPerMillion {
            try await self.redis.send(
                RedisCommand("HSET", .string(Self.chanceKey(guild)), .string(field), .integer(max(0, min(1_000_000, partsPerMillion))))
            )
        } else {
            try await self.redis.send(RedisCommand("HDEL", .string(Self.chanceKey(guild)), .string(field)))
        }
    }

    /// Every chance setting: `guild` and channel ids → parts per million.
    public func chances(guild: Snowflake) async throws(RedisError) -> [String: Int] {
        let flat = try await self.redis.send(RedisCommand("HGETALL", .string(Self.chanceKey(guild)))).array ?? []
        var result: [String: Int] = [:]
        for index in stride(from: 0, to: flat.count - 1, by: 2) {
            result[flat[index].string ?? ""] = flat[index + 1].string.flatMap { Int($0) } ?? 0
        }
        return result
    }

    /// A guild's settings for speaking unasked: its auto-respond channels and its chances.
    public struct Unasked: Sendable, Hashable {
        /// Channels where every human message is answered.
        public var autorespond: Set<String> = []
        /// Parts per million by channel id, and `guild` for the rest of the guild.
        public var chances: [String: Int] = [:]

        /// Whether `channel` answers every message, and the chance (parts per million) of answering a message
        /// there unasked: the channel's own chance, else the guild's.
        public func rules(channel: Snowflake) -> (autorespond: Bool, chance: Int) {
            (self.autorespond.contains(channel.rawValue), self.chances[channel.rawValue] ?? self.chances["guild"] ?? 0)
        }
    }

    /// A guild's unasked settings, in one round trip.
    public func unasked(guild: Snowflake) async throws(RedisError) -> Unasked {
        let replies = await self.redis.pipeline([
            RedisCommand("SMEMBERS", .string(Self.autorespondKey(guild))),
            RedisCommand("HGETALL", .string(Self.chanceKey(guild))),
        ])
        var settings = Unasked()
        settings.autorespond = Set((try replies[0].get().array ?? []).compactMap(\.string))
        let flat = try replies[1].get().array ?? []
        for index in stride(from: 0, to: flat.count - 1, by: 2) {
            guard let field = flat[index].string, field != "images", let value = flat[index + 1].string.flatMap({ Int($0) })
            else { continue }
            settings.chances[field] = value
        }
        return settings
    }

    public func setAutorespond(_ enabled: Bool, guild: Snowflake, channel: Snowflake) async throws(RedisError) {
        try await self.redis.send(
            RedisCommand(enabled ? "SADD" : "SREM", .string(Self.autorespondKey(guild)), .string(channel.rawValue))
        )
    }

    public func autorespondChannels(guild: Snowflake) async throws(RedisError) -> [String] {
        let reply = try await self.redis.send(RedisCommand("SMEMBERS", .string(Self.autorespondKey(guild))))
        return (reply.array ?? []).compactMap(\.string).sorted()
    }

    /// Takes the channel's cooldown; false when the bot spoke unasked there within `duration`.
    public func takeCooldown(guild: Snowflake, channel: Snowflake, duration: Duration) async throws(RedisError) -> Bool {
        let milliseconds = Int(duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000)
        guard milliseconds > 0 else { return true }
        let reply = try await self.redis.send(
            RedisCommand("SET", .string(Self.cooldownKey(guild, channel)), "1", "NX", "PX", .integer(milliseconds))
        )
        return reply.string == "OK"
    }

    /// Whether a message wins the chance roll: decided from its id, so a redelivered message gets the same answer.
    public static func wins(messageID: String, partsPerMillion: Int) -> Bool {
        guard partsPerMillion > 0 else { return false }
        var hash = StableHash()
        hash.combine(messageID.utf8)
        return Int(hash.value % 1_000_000) < partsPerMillion
    }
}

/// Guilds' unasked settings, kept for a short while by each responder: every human message asks for them, and they
/// change rarely (a settings slash command, which the responder that runs it forgets at once, or `markov settings`,
/// which other responders see within the time to live).
public final class UnaskedSettingsCache: Sendable {
    private struct Entry {
        var settings: ResponseSettings.Unasked
        var fetched: ContinuousClock.Instant
    }

    private let settings: ResponseSettings
    private let timeToLive: Duration
    private let entries = Mutex<[Snowflake: Entry]>([:])
    /// Past this many guilds, entries older than the time to live are dropped before another is added.
    private let sweepAbove = 10_000

    public init(settings: ResponseSettings, timeToLive: Duration) {
        self.settings = settings
        self.timeToLive = timeToLive
    }

    /// Whether `channel` answers every message, and its chance of answering unasked.
    public func rules(guild: Snowflake, channel: Snowflake) async throws(RedisError) -> (autorespond: Bool, chance: Int) {
        let now = ContinuousClock.now
        if self.timeToLive > .zero, let entry = self.entries.withLock({ $0[guild] }), now - entry.fetched < self.timeToLive {
            return entry.settings.rules(channel: channel)
        }
        let fresh = try await self.settings.unasked(guild: guild)
        if self.timeToLive > .zero {
            self.entries.withLock { entries in
                if entries.count >= self.sweepAbove {
                    entries = entries.filter { now - $0.value.fetched < self.timeToLive }
                }
                entries[guild] = Entry(settings: fresh, fetched: now)
            }
        }
        return fresh.rules(channel: channel)
    }

    /// Drops what is known of `guild` (its settings just changed).
    public func forget(guild: Snowflake) {
        _ = self.entries.withLock { $0.removeValue(forKey: guild) }
    }
}
