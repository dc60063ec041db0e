import DiscordProtocol
import Foundation
import MarkovCore
import Redis

/// What gateway processes keep in Redis, so that none keeps state of its own:
///
/// | key | type | what |
/// |---|---|---|
/// | `gateway:session:{<shard>}` | hash `session_id resume_url seq shard_count updated_ms` | the shard's resumable session, in the slot of its lease (`gateways:lease:{<shard>}`); read from `gateway:session:<shard>` (earlier versions) when absent |
/// | `gateway:shard-count` | string | the shard count every gateway process uses, fixed by the first that starts with `--shard-count auto` |
/// | `gateway:identify:<max_concurrency>:<bucket>` | string (owner process/shard) with an expiry | the bucket's identify slot: held from before connecting (at most 10 s + the interval) until the interval after the identify was sent |
/// | `gateway:limits` | hash `total remaining reset_at_ms max_concurrency updated_ms` | identify limits from discovery |
/// | `bot:user` | hash `id application_id` | the bot user (READY), for mention detection |
///
/// `seq` is written only after every dispatch up to it reached the event log, so a resume from it loses nothing.
public struct GatewayStore: Sendable {
    public let redis: RedisClient

    public init(redis: RedisClient) { self.redis = redis }

    public static func sessionKey(shard: Int) -> String { "gateway:session:{\(shard)}" }
    /// Where earlier versions kept the session (another slot than the shard's lease).
    static func legacySessionKey(shard: Int) -> String { "gateway:session:\(shard)" }
    public static let shardCountKey = "gateway:shard-count"
    public static func identifyKey(maxConcurrency: Int, bucket: Int) -> String {
        "gateway:identify:\(maxConcurrency):\(bucket)"
    }
    public static let limitsKey = "gateway:limits"
    public static let botUserKey = "bot:user"

    /// The stored session of a shard, if any.
    public func session(shard: Int) async throws(RedisError) -> GatewaySession? {
        var reply = try await self.redis.send(RedisCommand("HGETALL", .string(Self.sessionKey(shard: shard))))
        if reply.array?.isEmpty != false {
            reply = try await self.redis.send(RedisCommand("HGETALL", .string(Self.legacySessionKey(shard: shard))))
        }
        let flat = reply.array ?? []
        var fields: [String: String] = [:]
        for index in stride(from: 0, to: flat.count - 1, by: 2) {
            fields[flat[index].string ?? ""] = flat[index + 1].string
        }
        guard let id = fields["session_id"], let url = fields["resume_url"], let seq = fields["seq"].flatMap({ Int($0) }),
              let count = fields["shard_count"].flatMap({ Int($0) })
        else { return nil }
        return GatewaySession(sessionID: id, resumeURL: url, sequence: seq, shardCount: count)
    }

    /// The command that records a session checkpoint; with a fence, only while the shard's lease is held at that
    /// epoch (`lease_fenced_hset`: a process that lost the shard answers 0 and writes nothing).
    static func saveCommand(shard: Int, session: GatewaySession, fence: ShardFence? = nil) -> RedisCommand {
        let fields: [RedisArgument] = [
            "session_id", .string(session.sessionID), "resume_url", .string(session.resumeURL), "seq", .integer(session.sequence),
            "shard_count", .integer(session.shardCount), "updated_ms", .integer(Self.nowMilliseconds()),
        ]
        guard let fence else { return RedisCommand("HSET", [.string(Self.sessionKey(shard: shard))] + fields) }
        return RedisCommand(
            "FCALL",
            ["lease_fenced_hset", 2, .string(fence.leaseKey), .string(Self.sessionKey(shard: shard)), .string(fence.member),
             .integer(Int(fence.epoch))] + fields
        )
    }

    /// Forgets a shard's session (it cannot be resumed).
    public func deleteSession(shard: Int) async throws(RedisError) {
        try await self.redis.send(RedisCommand("DEL", .string(Self.sessionKey(shard: shard))))
        try await self.redis.send(RedisCommand("DEL", .string(Self.legacySessionKey(shard: shard))))
    }

    /// The shard count all gateways use: the stored one, else `discovered`, stored for the others (first wins).
    public func agreedShardCount(discovered: Int) async throws(RedisError) -> Int {
        _ = try await self.redis.send(RedisCommand("SET", .string(Self.shardCountKey), .integer(discovered), "NX"))
        let stored = try await self.redis.send(RedisCommand("GET", .string(Self.shardCountKey))).string.flatMap { Int($0) }
        return stored ?? discovered
    }

    /// How long an identify slot is held before the identify is sent: connecting and the Hello come first. A process
    /// that dies in between keeps the bucket waiting at most this long (plus the interval).
    public static let identifyHold: Duration = .seconds(10)

    /// Takes the identify slot of a bucket: returns once this caller may identify, at least `interval` after the
    /// previous identify in the same bucket by any process. The slot is held (``identifyHold`` plus `interval`)
    /// until ``markIdentify(maxConcurrency:bucket:interval:owner:)`` restarts it at the identify, or
    /// ``releaseIdentifySlot(maxConcurrency:bucket:owner:)`` gives it back. `stop` ends the wait early (returns false).
    public func acquireIdentifySlot(
        maxConcurrency: Int, bucket: Int, interval: Duration, owner: String, stop: @Sendable () -> Bool
    ) async throws(RedisError) -> Bool {
        let key = Self.identifyKey(maxConcurrency: maxConcurrency, bucket: bucket)
        let milliseconds = Self.milliseconds(interval + Self.identifyHold)
        while !stop() {
            let set = try await self.redis.send(
                RedisCommand("SET", .string(key), .string(owner), "NX", "PX", .integer(milliseconds))
            )
            if set.string == "OK" { return true }
            let left = try await self.redis.send(RedisCommand("PTTL", .string(key))).int ?? 0
            // A key without expiry (-1) cannot happen through this code; treat it as a full interval.
            let wait = left > 0 ? left : (left == -1 ? milliseconds : 1)
            try? await Task.sleep(for: .milliseconds(min(wait, 250) + Int.random(in: 0...10)))
        }
        return false
    }

    /// Restarts a bucket's interval now, just after this owner sent its identify: the next identify in the bucket
    /// comes at least `interval` later. (Restarting it before sending would let the next one in early when the
    /// send is slow.) Leaves a slot another owner holds alone.
    public func markIdentify(maxConcurrency: Int, bucket: Int, interval: Duration, owner: String) async throws(RedisError) {
        try await self.redis.send(
            RedisCommand("EVAL", [
                """
                local held = redis.call('GET', KEYS[1])
                if held == false or held == ARGV[1] then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
                return 0
                """, 1, .string(Self.identifyKey(maxConcurrency: maxConcurrency, bucket: bucket)), .string(owner),
                .integer(Self.milliseconds(interval)),
            ])
        )
    }

    /// Gives back a slot taken for an identify that was never sent (the connection failed first).
    public func releaseIdentifySlot(maxConcurrency: Int, bucket: Int, owner: String) async throws(RedisError) {
        try await self.redis.send(
            RedisCommand("EVAL", [
                "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end return 0", 1,
                .string(Self.identifyKey(maxConcurrency: maxConcurrency, bucket: bucket)), .string(owner),
            ])
        )
    }

    private static func milliseconds(_ duration: Duration) -> Int {
        Int(duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000)
    }

    /// Records the identify limits from discovery.
    public func saveLimits(_ limits: GatewayBot.SessionStartLimit) async throws(RedisError) {
        let now = Self.nowMilliseconds()
        try await self.redis.send(
            RedisCommand(
                "HSET", .string(Self.limitsKey), "total", .integer(limits.total), "remaining", .integer(limits.remaining),
                "reset_at_ms", .integer(now + limits.resetAfter), "max_concurrency", .integer(limits.maxConcurrency),
                "updated_ms", .integer(now)
            )
        )
    }

    /// Counts one identify against the stored daily limit; returns what is left.
    public func countIdentify() async throws(RedisError) -> Int? {
        let exists = try await self.redis.send(RedisCommand("HEXISTS", .string(Self.limitsKey), "remaining")).int ?? 0
        guard exists == 1 else { return nil }
        return try await self.redis.send(RedisCommand("HINCRBY", .string(Self.limitsKey), "remaining", -1)).int
    }

    /// Records the bot user from READY.
    public func saveBotUser(_ ready: Ready) async throws(RedisError) {
        var arguments: [RedisArgument] = [.string(Self.botUserKey), "id", .string(ready.user.id.rawValue)]
        if let application = ready.application { arguments += ["application_id", .string(application.id.rawValue)] }
        try await self.redis.send(RedisCommand("HSET", arguments))
    }

    static func nowMilliseconds() -> Int { Int(Date().timeIntervalSince1970 * 1000) }
}

/// Who may checkpoint a shard: its lease's holder at an epoch.
struct ShardFence: Sendable, Hashable {
    var leaseKey: String
    var member: String
    var epoch: UInt64
}
