import MarkovCore
import Redis

extension ChainStore {
    /// What a guild's keys take in Redis.
    public struct Footprint: Sendable, Hashable {
        /// Bytes, as `MEMORY USAGE` counts them (the key, its value and Redis's overhead).
        public var bytes: Int
        /// Whether the bucket hashes or big states were too many to measure each: then `bytes` scales the measured
        /// ones up to all of them.
        public var sampled: Bool
    }

    /// The bytes a guild takes in Redis, without reading its whole chain: `MEMORY USAGE` of each fixed key
    /// (``ChainKeys/families``), of up to `sample` bucket hashes spread over the table, and of the keys of up to
    /// `sample / 4` big states, scaled up to all of them. One pipeline of about `sample` commands, each O(1) for a
    /// listpack bucket; Redis samples the values of big hashes (its default of 5), so the figure is an estimate.
    public func footprint(guild: Snowflake, sample: Int = 256) async throws(RedisError) -> Footprint {
        let keys = ChainKeys(guild: guild)
        let totals = try await self.totals(guild: guild)
        let shape = LinearHashing(level: totals["L", default: 0], split: totals["p", default: 0])
        let bigs = keys.key(ChainKeys.bigStatesSuffix)
        let counted = await self.redis.pipeline([
            RedisCommand("SCARD", .string(bigs)), RedisCommand("SRANDMEMBER", .string(bigs), .integer(max(1, sample / 4))),
        ])
        let bigStates = try counted[0].get().int ?? 0
        let bigSample = try counted[1].get().array?.compactMap(\.bytes) ?? []

        let fixed = ChainKeys.fixedSuffixes(of: Set(ChainKeys.Owner.allCases)).map(keys.key)
        let bucketCount = totals.isEmpty ? 0 : shape.buckets
        let step = max(1, (bucketCount + sample - 1) / max(1, sample))
        let buckets = stride(from: 0, to: bucketCount, by: step).map { keys.key(ChainKeys.bucketSuffix($0)) }
        let bigKeys = bigSample.flatMap { state in
            [ChainKeys.aliasSuffix(state), ChainKeys.pendingSuffix(state), ChainKeys.changesSuffix(state)].map(keys.key)
        }
        let names = fixed + buckets + bigKeys
        let results = await self.redis.pipeline(names.map { RedisCommand("MEMORY", "USAGE", .string($0)) })
        var sizes: [Int] = []
        sizes.reserveCapacity(results.count)
        for result in results { sizes.append(try result.get().int ?? 0) }

        let fixedBytes = sizes[..<fixed.count].reduce(0, +)
        let bucketBytes = sizes[fixed.count..<(fixed.count + buckets.count)].reduce(0, +)
        let bigBytes = sizes[(fixed.count + buckets.count)...].reduce(0, +)
        let scaledBuckets = buckets.isEmpty ? 0 : bucketBytes * bucketCount / buckets.count
        let scaledBig = bigSample.isEmpty ? 0 : bigBytes * bigStates / bigSample.count
        return Footprint(
            bytes: fixedBytes + scaledBuckets + scaledBig,
            sampled: buckets.count < bucketCount || bigSample.count < bigStates
        )
    }
}
