import Foundation
import Logging
import MarkovChains
import MarkovCore
import Redis
import Testing

/// Every suite that uses the shared event streams and the `trainers` group runs one test at a time: an
/// in-process trainer of one test would otherwise apply another test's entries.
@Suite("Chain integration", .enabled(if: ChainHarness.isConfigured), .serialized)
enum ChainIntegrationTests {}

/// Redis servers from `make test`, a fresh guild per test, an in-process trainer, and an independent model of
/// what the chain must hold.
struct ChainHarness {
    static let environment = ProcessInfo.processInfo.environment
    static let isConfigured = environment["MARKOV_TEST_REDIS_URL"] != nil || environment["CI"] != nil

    static let logger: Logger = {
        var logger = Logger(label: "chain-tests")
        logger.logLevel = .error
        return logger
    }()

    let redis: RedisClient
    let store: ChainStore
    let log: EventLog
    let stateSize: Int
    /// The memory bound of the harness's trainers (`Trainer.Configuration.cacheBytes`).
    var cacheBytes = Trainer.Configuration(consumer: "default").cacheBytes
    /// The size of the harness's trainers' write transactions (`Trainer.Configuration.transitionsPerCall`).
    var transitionsPerCall = Trainer.Configuration(consumer: "default").transitionsPerCall

    /// A harness on the standalone server (`cluster: false`) or the 3-master cluster.
    init(cluster: Bool = false, stateSize: Int = 2, partitions: Int = 4) throws {
        let configuration: RedisConfiguration
        if cluster {
            configuration = try RedisConfiguration(
                clusterNodes: Self.environment["MARKOV_TEST_CLUSTER_NODES"] ?? "127.0.0.1:17001,127.0.0.1:17002,127.0.0.1:17003"
            )
        } else {
            configuration = try RedisConfiguration(url: Self.environment["MARKOV_TEST_REDIS_URL"] ?? "redis://127.0.0.1:16379")
        }
        self.redis = RedisClient(configuration: configuration, logger: Self.logger)
        self.store = ChainStore(redis: self.redis, stateSize: stateSize)
        self.log = EventLog(redis: self.redis, partitions: partitions)
        self.stateSize = stateSize
    }

    /// A guild id no other test uses.
    static func newGuild() -> Snowflake {
        Snowflake(String(UInt64.random(in: 100_000_000_000_000_000...999_999_999_999_999_999)))!
    }

    /// A create event as the importer writes it (counts as enabled for learning).
    static func create(_ guild: Snowflake, id: String, _ text: String, author: String = "1", source: ChainEvent.Source = .importer) -> ChainEvent {
        ChainEvent(kind: .create, source: source, guildID: guild, channelID: Snowflake("7"), messageID: id, authorID: Snowflake(author), content: text)
    }

    func trainer(
        consumer: String = "test-\(UUID().uuidString)", leaseTTL: Duration = .seconds(3), flags: FeatureFlags? = nil,
        configure: (inout Trainer.Configuration) -> Void = { _ in }
    ) -> Trainer {
        var configuration = Trainer.Configuration(consumer: consumer)
        configuration.partitions = self.log.keys.partitions
        configuration.block = .milliseconds(100)
        configuration.batchSize = 64
        configuration.claimAfter = .milliseconds(500)
        configuration.claimEvery = .milliseconds(200)
        configuration.leaseTTL = leaseTTL
        configuration.heartbeat = .milliseconds(100)
        configuration.cacheBytes = self.cacheBytes
        configuration.transitionsPerCall = self.transitionsPerCall
        configure(&configuration)
        return Trainer(store: self.store, log: self.log, configuration: configuration, flags: flags, logger: Self.logger)
    }

    /// Appends events (to the live lane, or the bulk lane), then runs a trainer in this process until every
    /// partition has no backlog.
    @discardableResult
    func train(_ events: [ChainEvent], lane: EventLog.Lane = .live) async throws -> Trainer.Statistics {
        try await self.store.prepare()
        try await self.log.ensureGroup("trainers", lanes: EventLog.Lane.allCases)
        for chunk in stride(from: 0, to: events.count, by: 500) {
            try await self.log.append(Array(events[chunk..<min(chunk + 500, events.count)]), lane: lane)
        }
        return try await self.drain()
    }

    /// Deletes a guild's data through its partition's owner (a trainer in this process).
    func delete(_ guild: Snowflake, keepingOptOuts: Bool = false) async throws {
        try await self.train([ChainEvent(kind: keepingOptOuts ? .deleteData : .guildRemoved, source: .console, guildID: guild)])
    }

    /// Forgets a user's messages through the guild's partition owner; returns how many.
    func forget(_ user: Snowflake, guild: Snowflake) async throws -> Int {
        try await self.store.prepare()
        let trainer = self.trainer()
        let commands = ChainCommands(log: self.log)
        return try await withThrowingTaskGroup(of: Int?.self) { group in
            group.addTask {
                try await trainer.run()
                return nil
            }
            group.addTask { try await commands.forgetUser(user, guild: guild, timeout: .seconds(60)) }
            while let result = try await group.next() {
                if let result {
                    group.cancelAll()
                    return result
                }
            }
            return 0
        }
    }

    /// Learns the guild's history again under its filters through the partition owner; returns records read and
    /// messages relearnt.
    func relearn(_ guild: Snowflake) async throws -> (messages: Int, relearnt: Int) {
        try await self.store.prepare()
        let trainer = self.trainer()
        let commands = ChainCommands(log: self.log)
        return try await withThrowingTaskGroup(of: (messages: Int, relearnt: Int)?.self) { group in
            group.addTask {
                try await trainer.run()
                return nil
            }
            group.addTask { try await commands.relearn(guild, timeout: .seconds(60)) }
            while let result = try await group.next() {
                if let result {
                    group.cancelAll()
                    return result
                }
            }
            return (0, 0)
        }
    }

    /// Runs a trainer until the trainers group has read and acknowledged everything.
    func drain() async throws -> Trainer.Statistics {
        let trainer = self.trainer()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await trainer.run() }
            while try await self.backlog() > 0 { try await Task.sleep(for: .milliseconds(50)) }
            group.cancelAll()
        }
        return trainer.statistics
    }

    /// Entries not yet read plus entries pending, over all partitions and both lanes.
    func backlog() async throws -> Int {
        try await self.log.backlog(group: "trainers", partitions: 0..<self.log.keys.partitions, lanes: EventLog.Lane.allCases)
    }

    /// The counts the chain holds for every state of `model`, read back through `markov_state`.
    func counts(of model: ChainModel, guild: Snowflake) async throws -> [String: [String: Int]] {
        var result: [String: [String: Int]] = [:]
        for state in model.counts.keys {
            let tokens = state.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            let table = try await self.store.state(tokens, guild: guild)
            var row: [String: Int] = [:]
            for (token, count) in table.successors { row[token] = count }
            if !row.isEmpty { result[state] = row }
        }
        return result
    }

    /// Checks that a deleted guild left only its meta, holding fencing fields and expiring.
    func expectOnlyTombstone(_ guild: Snowflake, _ comment: Comment, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let keys = try await self.keys(matching: "{g:\(guild.rawValue)}*")
        #expect(keys == ["{g:\(guild.rawValue)}:meta"], comment, sourceLocation: sourceLocation)
        let meta = try await self.redis.send(RedisCommand("HKEYS", .string(ChainKeys(guild: guild).meta))).array?.compactMap(\.string) ?? []
        #expect(Set(meta).isSubset(of: ["epoch", "wseq", "layout", "deleted", "applied", "applied_bulk"]), "\(meta)", sourceLocation: sourceLocation)
        let ttl = try await self.redis.send(RedisCommand("PTTL", .string(ChainKeys(guild: guild).meta))).int ?? -1
        #expect(ttl > 0, "the tombstone expires", sourceLocation: sourceLocation)
    }

    /// Every key in the guild's slot family, to check nothing leaked elsewhere.
    func keys(matching pattern: String) async throws -> [String] {
        var keys: [String] = []
        for master in try await self.redis.masters() {
            var cursor = "0"
            repeat {
                let reply = try await self.redis.send(RedisCommand("SCAN", .string(cursor), "MATCH", .string(pattern), "COUNT", 1000), to: master)
                cursor = reply.array?[0].string ?? "0"
                keys += (reply.array?[1].array ?? []).compactMap(\.string)
            } while cursor != "0"
        }
        return keys
    }
}

/// An independent model of a chain: what the counts must be, computed straight from the messages.
struct ChainModel {
    var counts: [String: [String: Int]] = [:]
    let stateSize: Int

    init(stateSize: Int) { self.stateSize = stateSize }

    mutating func add(_ text: String, _ delta: Int = 1, filters: ContentFilters = []) {
        let tokens = filters.apply(to: Tokenizer.tokens(text))
        guard !tokens.isEmpty else { return }
        let padded = Array(repeating: "", count: self.stateSize) + tokens + [""]
        for index in 0..<(padded.count - self.stateSize) {
            let state = padded[index..<(index + self.stateSize)].joined(separator: " ")
            let next = padded[index + self.stateSize]
            self.counts[state, default: [:]][next, default: 0] += delta
            if self.counts[state]?[next] == 0 { self.counts[state]?[next] = nil }
            if self.counts[state]?.isEmpty == true { self.counts[state] = nil }
        }
    }

    var transitions: Int { self.counts.values.reduce(0) { $0 + $1.count } }
}

/// A seeded random generator, so corpora repeat from run to run.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { self.state = seed &+ 0x9E37_79B9_7F4A_7C15 }
    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Discord-shaped text: short messages over a heavy-tailed vocabulary.
func corpus(messages: Int, seed: UInt64, vocabulary: [String] = (0..<400).map { "w\($0)" }) -> [String] {
    var generator = SeededGenerator(seed: seed)
    return (0..<messages).map { _ in
        let length = Int.random(in: 1...12, using: &generator)
        return (0..<length).map { _ in
            // Squaring a uniform draw skews towards the first words (heavy head, long tail).
            let u = Double.random(in: 0..<1, using: &generator)
            return vocabulary[Int(u * u * Double(vocabulary.count))]
        }.joined(separator: " ")
    }
}
