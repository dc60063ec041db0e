import CoreMetrics
import MarkovCore
import Redis

/// Reading guilds' chains in Redis, behind the `markov` Functions: generating sentences, inspecting states and
/// totals, and the settings that decide what is learnt. Changes to a chain go through its partition's owner
/// (``Trainer``, ``ChainCommands``).
public struct ChainStore: Sendable {
    /// The Redis client all calls go through.
    public let redis: RedisClient
    /// Tokens per state. Must not change for a guild once it has data.
    public let stateSize: Int

    /// Makes a store; call ``prepare()`` once before use.
    public init(redis: RedisClient, stateSize: Int) {
        precondition((1...6).contains(stateSize), "state size must be 1...6")
        self.redis = redis
        self.stateSize = stateSize
    }

    /// Loads the Functions on every master (only where the version differs).
    public func prepare() async throws(RedisError) {
        try await self.redis.load(ChainLibrary.library)
        try await self.redis.load(ChainLibrary.leases)
    }

    // MARK: Generating

    /// How to generate.
    public struct GenerationOptions: Sendable, Hashable {
        /// Words to start from (see docs/chain-store.md for the fallbacks).
        public var seedWords: [String] = []
        /// The random seed; the same seed, chain and options give the same sentence.
        public var rngSeed: UInt64 = UInt64.random(in: 0...UInt64.max)
        public var maxWords = 60
        public var maxTries = 20
        public var minWords = 1
        /// Discord's limit, counted in UTF-16 units.
        public var maxCharacters = 2000
        /// Allow a sentence identical to a learnt message.
        public var allowCopies = false
        /// Return each step's token and probability.
        public var debug = false
        /// Sample big states by scanning their counts instead of the alias table: an ablation for `bench/`.
        public var linearScan = false
        /// Draw from the age-restricted scope too (a reply in an age-restricted channel): from the union of the
        /// guild's chain and the one learnt in age-restricted channels. Off: text learnt there is never said.
        public var ageRestricted = false
        public init() {}
    }

    /// One step of a generated sentence: the token drawn (`""` is the end), its count and the state's total.
    public struct Step: Sendable, Hashable {
        public var token: String
        public var count: Int
        public var total: Int
        /// count / total.
        public var probability: Double { self.total > 0 ? Double(self.count) / Double(self.total) : 0 }
    }

    /// A generation's outcome.
    public struct Generation: Sendable, Hashable {
        /// The sentence, or `nil` when no try met the rules (see ``notes``).
        public var sentence: String?
        /// How many tries it took (or were spent).
        public var tries: Int
        /// How the seed was used, and why no sentence came out when none did.
        public var notes: String
        /// The steps of the sentence (debug only).
        public var steps: [Step]
    }

    /// The time of each generation call (`markov_generation_seconds`).
    private static let generationTime = CoreMetrics.Timer(label: "markov_generation_seconds", preferredDisplayUnit: .seconds)

    /// Generates one sentence with one `FCALL_RO`.
    public func generate(guild: Snowflake, options: GenerationOptions = .init()) async throws(RedisError) -> Generation {
        // The generator in Redis is seeded with two halves of the seed, mixed first (SplitMix64's finaliser):
        // nearby seeds such as 1, 2, 3 would otherwise start it in lockstep (their first draws mod 10 share a
        // parity, for one).
        var mixed = options.rngSeed &+ 0x9E37_79B9_7F4A_7C15
        mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
        mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
        mixed ^= mixed >> 31
        var arguments: [RedisArgument] = [
            .integer(self.stateSize), .integer(Int(mixed >> 33)), .integer(Int(mixed & 0x1_FFFF_FFFF)),
            .integer(options.maxWords), .integer(options.maxTries), .integer(options.minWords),
            .integer(options.maxCharacters), options.allowCopies ? "1" : "0", options.debug ? "1" : "0",
            .string((options.linearScan ? "linear" : "alias") + (options.ageRestricted ? ",restricted" : "")),
        ]
        arguments += options.seedWords.map { .string($0) }
        let started = ContinuousClock.now
        let reply = try await self.call("markov_generate", guild: guild, arguments, readOnly: true)
        let elapsed = (ContinuousClock.now - started).components
        Self.generationTime.recordNanoseconds(elapsed.seconds * 1_000_000_000 + elapsed.attoseconds / 1_000_000_000)
        guard let parts = reply.array, parts.count == 4 else {
            throw RedisError(.protocolError, "markov_generate answered \(reply)")
        }
        let flat = parts[3].array ?? []
        var steps: [Step] = []
        var index = 0
        while index + 2 < flat.count {
            steps.append(Step(token: flat[index].string ?? "", count: flat[index + 1].int ?? 0, total: flat[index + 2].int ?? 0))
            index += 3
        }
        return Generation(
            sentence: parts[0].isNull ? nil : parts[0].string,
            tries: parts[1].int ?? 0,
            notes: parts[2].string ?? "",
            steps: steps
        )
    }

    // MARK: Inspecting

    /// A state's successors as stored.
    public struct StateTable: Sendable {
        /// `small` (in a bucket hash), `big` (keys of its own, with an alias table) or `unknown`.
        public var kind: String
        /// The bucket hash that holds (or would hold) the state.
        public var bucketKey: String
        /// Next token → count, in stored order.
        public var successors: [(token: String, count: Int)]
        /// For big states: the alias table's total and columns, and increments/decrements since its build.
        public var sampling: [(String, String)]
    }

    /// The state made of `tokens` (`stateSize` of them; `""` stands for the start).
    public func state(_ tokens: [String], guild: Snowflake) async throws(RedisError) -> StateTable {
        let reply = try await self.call(
            "markov_state", guild: guild, [.integer(self.stateSize), .string(tokens.joined(separator: " "))], readOnly: true
        )
        guard let parts = reply.array, parts.count == 4 else {
            throw RedisError(.protocolError, "markov_state answered \(reply)")
        }
        let flat = parts[2].array ?? []
        var successors: [(String, Int)] = []
        for index in stride(from: 0, to: flat.count - 1, by: 2) {
            successors.append((flat[index].string ?? "", flat[index + 1].int ?? 0))
        }
        let info = parts[3].array ?? []
        var sampling: [(String, String)] = []
        for index in stride(from: 0, to: info.count - 1, by: 2) {
            sampling.append((info[index].string ?? "", info[index + 1].string ?? ""))
        }
        return StateTable(
            kind: parts[0].string ?? "", bucketKey: parts[1].string ?? "",
            successors: successors, sampling: sampling
        )
    }

    /// A guild's totals: `messages`, `states`, `transitions` (distinct), `count` (all), `L`/`p` (bucket table),
    /// `rebuilds` (alias tables built).
    public func totals(guild: Snowflake) async throws(RedisError) -> [String: Int] {
        let reply = try await self.redis.send(RedisCommand("HGETALL", .string(ChainKeys(guild: guild).meta)))
        let flat = reply.array ?? []
        var totals: [String: Int] = [:]
        for index in stride(from: 0, to: flat.count - 1, by: 2) {
            if let value = flat[index + 1].int ?? flat[index + 1].string.flatMap({ Int($0) }) { totals[flat[index].string ?? ""] = value }
        }
        return totals
    }

    // MARK: Opt-outs

    /// Lets a user's new messages be learnt again (their forgotten messages stay forgotten).
    public func rememberUser(_ user: Snowflake, guild: Snowflake) async throws(RedisError) {
        try await self.redis.send(RedisCommand("SREM", .string(ChainKeys(guild: guild).optOut), .string(user.rawValue)))
    }

    // MARK: Settings

    /// Channels the guild learns from.
    public func listenChannels(guild: Snowflake) async throws(RedisError) -> [String] {
        let reply = try await self.redis.send(RedisCommand("SMEMBERS", .string(ChainKeys(guild: guild).listen)))
        return (reply.array ?? []).compactMap(\.string).sorted()
    }

    /// Enables or disables learning in a channel.
    public func setListening(_ enabled: Bool, channel: Snowflake, guild: Snowflake) async throws(RedisError) {
        try await self.redis.send(
            RedisCommand(enabled ? "SADD" : "SREM", .string(ChainKeys(guild: guild).listen), .string(channel.rawValue))
        )
    }

    /// What the guild strips before learning: its setting, or the defaults when it chose nothing (whether they
    /// apply also depends on the `training-filters` flag).
    public func filters(guild: Snowflake) async throws(RedisError) -> ContentFilters {
        let stored = try await self.redis.send(RedisCommand("GET", .string(ChainKeys(guild: guild).filters))).string
        return stored.flatMap { ContentFilters(stored: $0) } ?? .defaults
    }

    /// Sets what the guild strips before learning (for messages learnt from then on; `markov relearn` applies it
    /// to the history).
    public func setFilters(_ filters: ContentFilters, guild: Snowflake) async throws(RedisError) {
        try await self.redis.send(RedisCommand("SET", .string(ChainKeys(guild: guild).filters), .string(filters.description)))
    }

    /// Whether a channel is age-restricted (or a thread of one, `parent` when the caller knows it): replies there may
    /// say text learnt in age-restricted channels.
    public func isAgeRestricted(channel: Snowflake, parent: Snowflake? = nil, guild: Snowflake) async throws(RedisError) -> Bool {
        let keys = ChainKeys(guild: guild)
        let replies = await self.redis.pipeline([
            RedisCommand("SMEMBERS", .string(keys.ageRestricted)), RedisCommand("HGET", .string(keys.threads), .string(channel.rawValue)),
        ])
        let restricted = Set((try replies[0].get().array ?? []).compactMap(\.string))
        guard !restricted.isEmpty else { return false }
        let stored = try replies[1].get().string
        let parent = parent?.rawValue ?? stored
        return restricted.contains(channel.rawValue) || parent.map(restricted.contains) == true
    }

    /// Whether a member's messages are forgotten when they leave the guild.
    public func purgesOnLeave(guild: Snowflake) async throws(RedisError) -> Bool {
        try await self.redis.send(RedisCommand("GET", .string(ChainKeys(guild: guild).purgeOnLeave))).string == "on"
    }

    /// Forget (`true`) or keep the messages of members who leave. Applies to leaves from now on.
    public func setPurgeOnLeave(_ purges: Bool, guild: Snowflake) async throws(RedisError) {
        let key = RedisArgument.string(ChainKeys(guild: guild).purgeOnLeave)
        try await self.redis.send(purges ? RedisCommand("SET", key, "on") : RedisCommand("DEL", key))
    }

    /// The guild's blocklist, sorted.
    public func blocklist(guild: Snowflake) async throws(RedisError) -> [String] {
        let reply = try await self.redis.send(RedisCommand("SMEMBERS", .string(ChainKeys(guild: guild).blocklist)))
        return (reply.array ?? []).compactMap(\.string).sorted()
    }

    /// Adds entries to the blocklist (or removes them); the blocklist holds at most ``BlockEntry/maxEntries``
    /// (``BlockEntry/InvalidEntry`` past it, nothing added). Returns the entries that changed. Generation sees the change at its next call.
    @discardableResult
    public func setBlocked(_ entries: [BlockEntry], blocked: Bool, guild: Snowflake) async throws -> [BlockEntry] {
        guard !entries.isEmpty else { return [] }
        let key = ChainKeys(guild: guild).blocklist
        if blocked {
            let count = try await self.redis.send(RedisCommand("SCARD", .string(key))).int ?? 0
            let new = try await self.redis.send(RedisCommand("SMISMEMBER", [.string(key)] + entries.map { .string($0.text) })).array?
                .filter { $0.int == 0 }.count ?? entries.count
            guard count + new <= BlockEntry.maxEntries else {
                throw BlockEntry.InvalidEntry(description: "a blocklist holds at most \(BlockEntry.maxEntries) words; this one has \(count)")
            }
        }
        // One pipeline; each command's answer says whether its entry changed.
        let results = await self.redis.pipeline(entries.map { RedisCommand(blocked ? "SADD" : "SREM", .string(key), .string($0.text)) })
        var changed: [BlockEntry] = []
        for (entry, result) in zip(entries, results) where try result.get().int == 1 { changed.append(entry) }
        return changed
    }

    /// Users who opted out.
    public func optedOutUsers(guild: Snowflake) async throws(RedisError) -> [String] {
        let reply = try await self.redis.send(RedisCommand("SMEMBERS", .string(ChainKeys(guild: guild).optOut)))
        return (reply.array ?? []).compactMap(\.string).sorted()
    }

    /// Calls one of the library's functions on a guild's keys (the client reloads the library if Redis lost it).
    private func call(
        _ function: String, guild: Snowflake, _ arguments: [RedisArgument], readOnly: Bool = false
    ) async throws(RedisError) -> RedisReply {
        try await self.redis.call(
            function, in: ChainLibrary.library, keys: [.string(ChainKeys(guild: guild).meta)],
            arguments: arguments, readOnly: readOnly
        )
    }
}
