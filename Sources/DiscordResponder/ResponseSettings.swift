import MarkovChains
import MarkovCore
import Redis

/// When the bot speaks unasked, per guild, in Redis beside the guild's chain (same hash tag):
///
/// | key | type | what |
/// |---|---|---|
/// | `{g:<id>}:chance` | hash `guild` or `<channel>` → parts per million | the chance to answer any human message (a channel's value overrides the guild's) |
/// | `{g:<id>}:autorespond` | set of channel ids | channels where every human message is answered, seeded by it |
/// | `{g:<id>}:cooldown:<channel>` | string with an expiry | the bot spoke unasked in the channel recently |
public struct ResponseSettings: Sendable {
    public let redis: RedisClient

    public init(redis: RedisClient) { self.redis = redis }

    static func chanceKey(_ guild: Snowflake) -> String { "\(ChainKeys(guild: guild).prefix):chance" }
    static func autorespondKey(_ guild: Snowflake) -> String { "\(ChainKeys(guild: guild).prefix):autorespond" }
    static func cooldownKey(_ guild: Snowflake, _ channel: Snowflake) -> String {
        "\(ChainKeys(guild: guild).prefix):cooldown:\(channel.rawValue)"
    }

    /// The chance, in parts per million, of answering a message in `channel` unasked.
    public func chance(guild: Snowflake, channel: Snowflake) async throws(RedisError) -> Int {
        let reply = try await self.redis.send(
            RedisCommand("HMGET", .string(Self.chanceKey(guild)), .string(channel.rawValue), "guild")
        )
        let values = (reply.array ?? []).map { $0.string.flatMap { Int($0) } }
        return values.first.flatMap { $0 } ?? values.last.flatMap { $0 } ?? 0
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

    public func isAutorespond(guild: Snowflake, channel: Snowflake) async throws(RedisError) -> Bool {
        try await self.redis.send(RedisCommand("SISMEMBER", .string(Self.autorespondKey(guild)), .string(channel.rawValue))).int == 1
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
