import Foundation
import Redis

/// A REST route as Discord's rate limits see it: the method and path with ids replaced by placeholders, except the
/// top-level resource (channel, guild, webhook), whose id picks a separate bucket.
public struct RESTRoute: Sendable, Hashable, CustomStringConvertible {
    /// `POST /channels/:id/messages`, the route whose bucket id Discord reveals.
    public var template: String
    /// The top-level resource's id (`""` when the route has none).
    public var major: String
    /// Interaction callbacks do not count against the global limit.
    public var exemptFromGlobal: Bool

    public init(method: String, path: String) {
        let parts = path.split(separator: "?").first.map { $0.split(separator: "/").map(String.init) } ?? []
        func isID(_ text: String) -> Bool { !text.isEmpty && text.allSatisfy(\.isNumber) }
        var template: [String] = []
        var major = ""
        var index = 0
        while index < parts.count {
            let part = parts[index]
            if major.isEmpty, ["channels", "guilds"].contains(part), index + 1 < parts.count, isID(parts[index + 1]) {
                template += [part, ":major"]
                major = parts[index + 1]
                index += 2
            } else if major.isEmpty, ["webhooks", "interactions"].contains(part), index + 2 < parts.count {
                // A webhook or interaction id with its token: the top-level resource.
                // The token is a secret: the key holds a hash of it.
                template += [part, ":id", ":token"]
                var hash: UInt64 = 0xcbf2_9ce4_8422_2325
                for byte in parts[index + 2].utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
                major = parts[index + 1] + "/" + String(hash, radix: 16)
                index += 3
            } else {
                template.append(isID(part) ? ":id" : part)
                index += 1
            }
        }
        self.template = method + " /" + template.joined(separator: "/")
        self.major = major
        self.exemptFromGlobal = parts.first == "interactions"
    }

    public var description: String { self.template + (self.major.isEmpty ? "" : " [\(self.major)]") }
}

/// Discord's rate limits, shared through Redis by every process that uses the same token, so two responders
/// flooding one channel together stay inside the channel's bucket.
///
/// - Per route, the bucket id from `X-RateLimit-Bucket` is learnt (`{rl}:r:<route>`); per bucket, its size and
///   window (`{rl}:i:<bucket>`); per bucket and top-level resource, a counter of requests left in the current
///   window, expiring with the window (`{rl}:b:<bucket>:<major>`). A request takes one from the counter atomically;
///   at zero it waits for the counter to expire. A route not learnt yet lets one request through at a time (the
///   probe that learns it).
/// - Global: at most `globalLimit` requests in any one-second window per token (a sliding window, `{rl}:g`); a
///   global 429 blocks
///   everyone for its `retry_after` (`{rl}:block`).
/// - The brake: 401, 403 and 429 answers are counted over 10 minutes (`{rl}:bad`); past `brakeLimit` (well under
///   Discord's 10,000 ban threshold) no request is sent until the window ends.
///
/// All keys share the hash tag `{rl}`, so one script sees them all on a Redis Cluster too.
public struct SharedRateLimits: Sendable {
    public let redis: RedisClient
    public var globalLimit = 50
    public var brakeLimit = 2_000
    /// Added to every learnt window: the server's window starts when it receives the first request, a little after
    /// the client counted it.
    public var margin: Duration = .milliseconds(150)

    public init(redis: RedisClient) { self.redis = redis }

    /// What ``acquire(_:)`` decided.
    public enum Decision: Sendable, Hashable {
        case go
        case wait(Duration, WaitReason)
        /// The brake is on: too many 401/403/429 answers.
        case braked(Duration)
    }

    /// Why a request waits.
    public enum WaitReason: String, Sendable, Hashable, CaseIterable {
        /// Its route's bucket is spent (or its bucket is being learnt by another request).
        case bucket
        /// The global limit: `globalLimit` requests went out in the last second.
        case global
        /// A global 429 blocks every request for its retry-after.
        case globalBlock = "global_block"
    }

    static let acquireScript = """
        -- KEYS: 1 route map, 2 global window (sorted set), 3 global block, 4 bad-answer counter, 5 probe
        -- ARGV: 1 major, 2 global limit (0: exempt), 3 brake limit, 4 now (ms), 5 a unique request id,
        --       6 the window (one second plus the margin, for requests that travel at different speeds)
        local bad = tonumber(redis.call('GET', KEYS[4]) or '0')
        if bad >= tonumber(ARGV[3]) then return {2, redis.call('PTTL', KEYS[4])} end
        local block = redis.call('PTTL', KEYS[3])
        if block > 0 then return {4, block} end
        local bucket = redis.call('GET', KEYS[1])
        local counter, limit, window
        if bucket then
            counter = '{rl}:b:' .. bucket .. ':' .. ARGV[1]
            local info = redis.call('HMGET', '{rl}:i:' .. bucket, 'limit', 'window')
            limit, window = tonumber(info[1]), tonumber(info[2])
            local left = redis.call('GET', counter)
            if left and tonumber(left) <= 0 then
                local ttl = redis.call('PTTL', counter)
                return {1, ttl > 0 and ttl or 1}
            end
        else
            -- Not learnt yet: one probe at a time.
            if not redis.call('SET', KEYS[5], '1', 'NX', 'PX', 5000) then return {1, 25} end
        end
        local global = tonumber(ARGV[2])
        if global > 0 then
            -- A sliding window of the last second's requests: every one-second window, however Discord aligns
            -- its own, holds at most `global`.
            local now, span = tonumber(ARGV[4]), tonumber(ARGV[6])
            redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - span)
            if redis.call('ZCARD', KEYS[2]) >= global then
                if not bucket then redis.call('DEL', KEYS[5]) end
                local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
                return {3, math.max(1, tonumber(oldest[2]) + span - now)}
            end
            redis.call('ZADD', KEYS[2], now, ARGV[5])
            redis.call('PEXPIRE', KEYS[2], 2000)
        end
        if bucket and limit and window then
            if redis.call('EXISTS', counter) == 1 then
                redis.call('DECR', counter)
            else
                redis.call('SET', counter, limit - 1, 'PX', window)
            end
        end
        return {0, 0}
        """

    static let recordScript = """
        -- KEYS: 1 route map, 2 probe, 3 global block, 4 bad-answer counter
        -- ARGV: 1 major, 2 bucket ('' if none), 3 limit, 4 remaining, 5 reset-after ms, 6 status,
        --       7 retry-after ms (429), 8 global 429 (1/0), 9 margin ms, 10 now (ms)
        redis.call('DEL', KEYS[2])
        local status = tonumber(ARGV[6])
        if status == 401 or status == 403 or status == 429 then
            if redis.call('INCR', KEYS[4]) == 1 then redis.call('PEXPIRE', KEYS[4], 600000) end
        end
        if ARGV[8] == '1' then
            redis.call('SET', KEYS[3], '1', 'PX', math.max(1, tonumber(ARGV[7])))
        end
        local bucket = ARGV[2]
        if bucket == '' then return 0 end
        redis.call('SET', KEYS[1], bucket, 'EX', 86400)
        local limit, remaining, resetAfter = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
        local margin = tonumber(ARGV[9])
        local info = '{rl}:i:' .. bucket
        local window = tonumber(redis.call('HGET', info, 'window') or '0')
        -- The window is the reset-after of a full bucket's first request; keep the largest seen.
        if resetAfter + margin > window then window = resetAfter + margin end
        redis.call('HSET', info, 'limit', limit, 'window', window)
        redis.call('EXPIRE', info, 86400)
        local counter = '{rl}:b:' .. bucket .. ':' .. ARGV[1]
        -- The counters used in the last hour, for `snapshot` (read without SCAN).
        local now = tonumber(ARGV[10])
        redis.call('ZADD', '{rl}:seen', now, bucket .. ':' .. ARGV[1])
        redis.call('ZREMRANGEBYSCORE', '{rl}:seen', '-inf', now - 3600000)
        redis.call('PEXPIRE', '{rl}:seen', 3600000)
        if status == 429 and ARGV[8] ~= '1' then
            redis.call('SET', counter, 0, 'PX', math.max(1, tonumber(ARGV[7])) + margin)
            return 0
        end
        local left = redis.call('GET', counter)
        if not left then
            redis.call('SET', counter, remaining, 'PX', resetAfter + margin)
        elseif tonumber(left) > remaining then
            redis.call('SET', counter, remaining, 'KEEPTTL')
        end
        return 0
        """

    /// Takes a slot for one request on `route`, or says how long to wait.
    public func acquire(_ route: RESTRoute) async throws(RedisError) -> Decision {
        let now = Int(Date().timeIntervalSince1970 * 1000)
        let reply = try await self.redis.send(
            RedisCommand(
                "EVAL",
                [.string(Self.acquireScript), 5, .string("{rl}:r:\(route.template)"), "{rl}:g",
                 "{rl}:block", "{rl}:bad", .string("{rl}:p:\(route.template):\(route.major)"),
                 .string(route.major), .integer(route.exemptFromGlobal ? 0 : self.globalLimit), .integer(self.brakeLimit),
                 .integer(now), .string(UUID().uuidString), .integer(1000 + self.marginMilliseconds)]
            )
        )
        let values = reply.array?.compactMap(\.int) ?? []
        guard values.count == 2 else { return .go }
        switch values[0] {
        case 0: return .go
        case 2: return .braked(.milliseconds(max(1, values[1])))
        case 3: return .wait(.milliseconds(max(1, values[1])), .global)
        case 4: return .wait(.milliseconds(max(1, values[1])), .globalBlock)
        default: return .wait(.milliseconds(max(1, values[1])), .bucket)
        }
    }

    /// Learns from a response's rate-limit headers (and a 429's body).
    public func record(_ route: RESTRoute, response: HTTPResponse, retryAfter: Double?, global: Bool) async throws(RedisError) {
        let headers = response.headers
        let bucket = headers["x-ratelimit-bucket"] ?? ""
        let limit = Int(headers["x-ratelimit-limit"] ?? "") ?? 1
        let remaining = Int(headers["x-ratelimit-remaining"] ?? "") ?? 0
        let resetAfter = Int(((Double(headers["x-ratelimit-reset-after"] ?? "") ?? 1) * 1000).rounded(.up))
        let retryMilliseconds = Int(((retryAfter ?? 0) * 1000).rounded(.up))
        let margin = self.marginMilliseconds
        try await self.redis.send(
            RedisCommand(
                "EVAL",
                [.string(Self.recordScript), 4, .string("{rl}:r:\(route.template)"),
                 .string("{rl}:p:\(route.template):\(route.major)"), "{rl}:block", "{rl}:bad",
                 .string(route.major), .string(bucket), .integer(limit), .integer(remaining), .integer(resetAfter),
                 .integer(response.status), .integer(retryMilliseconds), global ? "1" : "0", .integer(margin),
                 .integer(Int(Date().timeIntervalSince1970 * 1000))]
            )
        )
    }

    private var marginMilliseconds: Int {
        Int(self.margin.components.seconds * 1000 + self.margin.components.attoseconds / 1_000_000_000_000_000)
    }

    /// 401, 403 and 429 answers in the current 10-minute window.
    public func badAnswers() async throws(RedisError) -> Int {
        try await self.redis.send(RedisCommand("GET", "{rl}:bad")).string.flatMap { Int($0) } ?? 0
    }

    // MARK: Reading (the web console)

    /// The shared limits as they stand, read-only: the buckets used most recently with what is left in each
    /// window, the global window's requests, a global block and the brake's count.
    public struct Snapshot: Sendable, Hashable, Codable {
        public struct Bucket: Sendable, Hashable, Codable {
            /// Discord's bucket id and the top-level resource (channel, guild or webhook id; empty for none).
            public var bucket: String
            public var major: String
            /// Requests left in the current window (nil: the window ended).
            public var remaining: Int?
            public var limit: Int?
            /// Milliseconds until the window ends (nil: no window open).
            public var resetsIn: Int?
            /// When a response last updated it (Unix milliseconds).
            public var lastUsed: Int
        }

        public var buckets: [Bucket]
        public var globalInWindow: Int
        public var globalLimit: Int
        /// Milliseconds a global 429 still blocks every request (nil: none).
        public var blockedFor: Int?
        public var badAnswers: Int
        public var brakeLimit: Int
    }

    static let snapshotScript = """
        -- KEYS: 1 counters seen (sorted set), 2 global window, 3 global block, 4 bad-answer counter
        -- ARGV: 1 now (ms), 2 the global window (ms), 3 how many buckets
        local now = tonumber(ARGV[1])
        local seen = redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[3]) - 1, 'WITHSCORES')
        local buckets = {}
        for i = 1, #seen, 2 do
            local name = seen[i]
            local counter = '{rl}:b:' .. name
            local bucket = string.match(name, '^([^:]*)')
            local info = redis.call('HMGET', '{rl}:i:' .. bucket, 'limit')
            buckets[#buckets + 1] = {name, redis.call('GET', counter) or '', redis.call('PTTL', counter), info[1] or '', seen[i + 1]}
        end
        local global = redis.call('ZCOUNT', KEYS[2], now - tonumber(ARGV[2]), '+inf')
        return {buckets, global, redis.call('PTTL', KEYS[3]), tonumber(redis.call('GET', KEYS[4]) or '0')}
        """

    /// The limits as they stand (one read-only script; at most `limit` buckets, the most recently used first).
    public func snapshot(limit: Int = 50) async throws(RedisError) -> Snapshot {
        let now = Int(Date().timeIntervalSince1970 * 1000)
        let reply = try await self.redis.send(
            RedisCommand(
                "EVAL_RO",
                [.string(Self.snapshotScript), 4, "{rl}:seen", "{rl}:g", "{rl}:block", "{rl}:bad",
                 .integer(now), .integer(1000 + self.marginMilliseconds), .integer(max(1, limit))]
            )
        )
        guard let parts = reply.array, parts.count == 4 else { throw RedisError(.protocolError, "the rate-limit snapshot answered \(reply)") }
        let buckets = (parts[0].array ?? []).compactMap { entry -> Snapshot.Bucket? in
            guard let fields = entry.array, fields.count == 5, let name = fields[0].string else { return nil }
            let (bucket, major) = name.firstIndex(of: ":").map { (String(name[..<$0]), String(name[name.index(after: $0)...])) } ?? (name, "")
            let ttl = fields[2].int ?? -2
            return Snapshot.Bucket(
                bucket: bucket, major: major, remaining: fields[1].string.flatMap { Int($0) },
                limit: fields[3].string.flatMap { Int($0) }, resetsIn: ttl > 0 ? ttl : nil,
                lastUsed: fields[4].string.flatMap { Double($0) }.map { Int($0) } ?? 0
            )
        }
        let block = parts[2].int ?? -2
        return Snapshot(
            buckets: buckets, globalInWindow: parts[1].int ?? 0, globalLimit: self.globalLimit,
            blockedFor: block > 0 ? block : nil, badAnswers: parts[3].int ?? 0, brakeLimit: self.brakeLimit
        )
    }
}
