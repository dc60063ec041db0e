import Foundation
@testable import MarkovChains
import MarkovCore
import Redis
import Synchronization
import Testing

extension ChainIntegrationTests {
@Suite("Partition ownership")
struct OwnershipTests {
    @Test("the assignment is balanced, the same for every member, and moves few partitions when a member joins")
    func assignment() {
        let two = LeaseTable.assignment(members: ["b", "a"], count: 16)
        #expect(two == LeaseTable.assignment(members: ["a", "b"], count: 16), "the order of the list does not matter")
        #expect(two.values.map(\.count).sorted() == [8, 8])
        let three = LeaseTable.assignment(members: ["a", "b", "c"], count: 16)
        #expect(three.values.map(\.count).sorted() == [5, 5, 6])
        #expect(Set(three.values.flatMap { $0 }) == Set(0..<16), "every partition has a member")
        let moved = (0..<16).filter { partition in
            (two["a"]!.contains(partition) && !three["a"]!.contains(partition))
                || (two["b"]!.contains(partition) && !three["b"]!.contains(partition))
        }
        #expect(moved.count <= 7, "a third member takes about a third: \(moved.count) moved")
    }

    @Test("departed consumers are removed from every group of an owned partition's streams; one with entries in hand is not")
    func departedConsumers() async throws {
        let harness = try ChainHarness(partitions: 4)
        defer { harness.redis.shutdown() }
        try await harness.train([])
        try await harness.log.ensureGroup("responders")
        let stream = harness.log.keys.stream(1, lane: .live)
        func consumers(_ group: String) async throws -> [String: Int] {
            var result: [String: Int] = [:]
            for consumer in try await harness.redis.send(RedisCommand("XINFO", "CONSUMERS", .string(stream), .string(group))).array ?? [] {
                let flat = consumer.array ?? []
                var fields: [String: RedisReply] = [:]
                for index in stride(from: 0, to: flat.count - 1, by: 2) { fields[flat[index].string ?? ""] = flat[index + 1] }
                if let name = fields["name"]?.string { result[name] = fields["pending"]?.int ?? 0 }
            }
            return result
        }
        // Two departed processes (one per group), and one that holds an entry it has not acknowledged (names of
        // this run: the servers outlive a test run).
        let run = UUID().uuidString.prefix(8)
        let (trainerGone, responderGone, busy, trainerGone2) = ("trainer-gone-\(run)", "responder-gone-\(run)", "responder-busy-\(run)", "trainer-gone-2-\(run)")
        try await harness.redis.send(RedisCommand("XGROUP", "CREATECONSUMER", .string(stream), "trainers", .string(trainerGone)))
        try await harness.redis.send(RedisCommand("XGROUP", "CREATECONSUMER", .string(stream), "responders", .string(responderGone)))
        var guild = ChainHarness.newGuild()
        while harness.log.keys.partition(of: guild) != 1 { guild = ChainHarness.newGuild() }
        try await harness.log.append([ChainEvent(kind: .interaction, source: .gateway, guildID: guild)])
        try await harness.redis.send(RedisCommand("XREADGROUP", "GROUP", "responders", .string(busy), "COUNT", "1", "STREAMS", .string(stream), ">"))
        try await Task.sleep(for: .milliseconds(100))
        let leases = LeaseTable(redis: harness.redis, group: "trainers", count: 4)
        try await leases.prepare()
        #expect(try await leases.pruneConsumers(of: stream, idle: .seconds(3600)) == [], "nobody has been idle for an hour")
        let removed = try await leases.pruneConsumers(of: stream, idle: .milliseconds(50))
        #expect(Set(removed).isSuperset(of: ["trainers \(trainerGone)", "responders \(responderGone)"]), "\(removed)")
        #expect(!removed.contains("responders \(busy)"))
        #expect(try await consumers("responders")[busy] == 1, "the consumer with an entry in hand stays, with it")
        // An owner does the same when it trims.
        try await harness.redis.send(RedisCommand("XGROUP", "CREATECONSUMER", .string(stream), "trainers", .string(trainerGone2)))
        try await Task.sleep(for: .milliseconds(100))
        let trainer = harness.trainer { configuration in
            configuration.trimEvery = .milliseconds(100)
            configuration.consumerIdle = .milliseconds(50)
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await trainer.run() }
            try await Self.wait("the owner removes the departed trainer", seconds: 20) { try await consumers("trainers")[trainerGone2] == nil }
            group.cancelAll()
        }
        #expect(try await consumers("trainers")[trainerGone2] == nil, "the owner removed the departed trainer")
        try await harness.redis.send(RedisCommand("XGROUP", "DELCONSUMER", .string(stream), "responders", .string(busy)))
    }

    @Test("a write from an owner whose epoch is older than the guild's is refused, atomically")
    func fencedWrites() async throws {
        let harness = try ChainHarness()
        defer { harness.redis.shutdown() }
        let guild = ChainHarness.newGuild()
        try await harness.store.prepare()
        let keys = ChainKeys(guild: guild)
        func fence(_ epoch: Int) async throws -> RedisReply {
            try await harness.redis.send(RedisCommand("FCALL", "markov_fence", 1, .string(keys.meta), .integer(epoch)))
        }
        let handle = PartitionHandle(partition: 0, epoch: 5)
        handle.renewed(at: .now, ttl: .seconds(60))
        let writer = ChainWriter(redis: harness.redis, handle: handle)
        _ = try await fence(5)
        var write = ChainWrite(keys: keys)
        write.hset(":listen", [("1", "1")])
        #expect(try await writer.commit(write, epoch: 5, wseq: 0, timeout: .seconds(5)) == 1)
        // A newer owner fences the guild: the old one's next write is refused and changes nothing.
        _ = try await fence(6)
        var late = ChainWrite(keys: keys)
        late.hset(":img", [("m", "url")])
        await #expect {
            _ = try await writer.commit(late, epoch: 5, wseq: 1, timeout: .seconds(5))
        } throws: { error in
            (error as? RedisError)?.serverErrorPrefix == "FENCED"
        }
        #expect(try await harness.redis.send(RedisCommand("EXISTS", .string(keys.images))).int == 0)
        await #expect { _ = try await fence(5) } throws: { ($0 as? RedisError)?.serverErrorPrefix == "FENCED" }
        // A writer whose previous write did not go through is refused by the write sequence.
        let newer = ChainWriter(redis: harness.redis, handle: PartitionHandle(partition: 0, epoch: 6))
        newer.handle.renewed(at: .now, ttl: .seconds(60))
        await #expect {
            _ = try await newer.commit(late, epoch: 6, wseq: 0, timeout: .seconds(5))
        } throws: { ($0 as? RedisError)?.serverErrorPrefix == "WSEQ" }
        #expect(try await newer.commit(late, epoch: 6, wseq: 1, timeout: .seconds(5)) == 2)
        try await harness.delete(guild)
    }

    @Test("trainers joining and leaving rebalance within seconds, never own a partition twice, and count every message once")
    func rebalancing() async throws {
        let harness = try ChainHarness(partitions: 8)
        defer { harness.redis.shutdown() }
        _ = try await harness.drain()
        try await harness.store.prepare()
        try await harness.log.ensureGroup("trainers", lanes: EventLog.Lane.allCases)
        let guilds = (0..<16).map { _ in ChainHarness.newGuild() }
        let texts = corpus(messages: 3_000, seed: 31)
        var models = [Snowflake: ChainModel]()
        for (index, text) in texts.enumerated() { models[guilds[index % guilds.count], default: ChainModel(stateSize: 2)].add(text) }
        let trainers = (0..<3).map { harness.trainer(consumer: "rebalance-\($0)-\(UUID().uuidString)", leaseTTL: .seconds(2)) }
        let overlaps = Counter()
        try await withThrowingTaskGroup(of: Void.self) { group in
            let a = Task { try await trainers[0].run() }
            let b = Task { try await trainers[1].run() }
            var c: Task<Void, any Error>?
            group.addTask {
                // Sample every trainer's partitions throughout: never one partition in two places.
                while !Task.isCancelled {
                    let owned = trainers.map { Set($0.ownedPartitions.keys) }
                    for i in 0..<3 { for j in (i + 1)..<3 where !owned[i].isDisjoint(with: owned[j]) { overlaps.add() } }
                    try? await Task.sleep(for: .milliseconds(5))
                }
            }
            let feeder = Task {
                // Messages keep coming while the trainers join and leave.
                for start in stride(from: 0, to: texts.count, by: 50) {
                    let events = (start..<min(texts.count, start + 50)).map { ChainHarness.create(guilds[$0 % guilds.count], id: "r\($0)", texts[$0]) }
                    try await harness.log.append(events)
                    try await Task.sleep(for: .milliseconds(50))
                }
            }
            try await Self.wait("two trainers share the partitions") { trainers[0].ownedPartitions.count + trainers[1].ownedPartitions.count == 8 }
            c = Task { try await trainers[2].run() }
            try await Self.wait("a third trainer takes its share") { trainers.map(\.ownedPartitions.count).sorted() == [2, 3, 3] }
            b.cancel()
            _ = try? await b.value
            try await Self.wait("the two left take the leaver's partitions") {
                trainers[0].ownedPartitions.count == 4 && trainers[2].ownedPartitions.count == 4
            }
            try await feeder.value
            while try await harness.backlog() > 0 {
                try await Task.sleep(for: .milliseconds(50))
            }
            group.cancelAll()
            a.cancel()
            c?.cancel()
            _ = try? await a.value
            _ = try? await c?.value
        }
        #expect(overlaps.value == 0, "a partition was owned by two trainers at once \(overlaps.value) times")
        #expect(trainers.reduce(0) { $0 + $1.statistics.created } == texts.count, "every message learnt exactly once")
        for guild in guilds {
            let model = models[guild] ?? ChainModel(stateSize: 2)
            #expect(try await harness.counts(of: model, guild: guild) == model.counts)
        }
        for guild in guilds { try await harness.delete(guild) }
    }

    @Test("live events are applied before a bulk import in the same partition is")
    func liveBeforeBulk() async throws {
        let harness = try ChainHarness(partitions: 1)
        defer { harness.redis.shutdown() }
        _ = try await harness.drain()
        try await harness.store.prepare()
        try await harness.log.ensureGroup("trainers", lanes: EventLog.Lane.allCases)
        let importing = ChainHarness.newGuild()
        let live = ChainHarness.newGuild()
        let texts = corpus(messages: 20_000, seed: 32)
        for start in stride(from: 0, to: texts.count, by: 1000) {
            try await harness.log.append((start..<min(texts.count, start + 1000)).map { ChainHarness.create(importing, id: "b\($0)", texts[$0]) }, lane: .bulk)
        }
        let trainer = harness.trainer()
        var importedWhenLiveLanded = -1
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await trainer.run() }
            try await Self.wait("the import is under way") { try await harness.store.totals(guild: importing)["messages", default: 0] > 0 }
            try await harness.log.append([ChainHarness.create(live, id: "now", "a live message while importing", source: .console)])
            try await Self.wait("the live message is learnt") { try await harness.store.totals(guild: live)["messages", default: 0] == 1 }
            importedWhenLiveLanded = try await harness.store.totals(guild: importing)["messages", default: 0]
            while try await harness.backlog() > 0 { try await Task.sleep(for: .milliseconds(50)) }
            group.cancelAll()
        }
        #expect(importedWhenLiveLanded < texts.count / 2, "the live message waited for \(importedWhenLiveLanded) imported messages")
        #expect(try await harness.store.totals(guild: importing)["messages"] == texts.count)
        try await harness.delete(importing)
        try await harness.delete(live)
    }

    static func wait(_ what: String, seconds: Int = 15, _ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while ContinuousClock.now < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        Issue.record("timed out waiting until \(what)")
        throw CancellationError()
    }
}
}

/// A thread-safe counter for samplers.
final class Counter: Sendable {
    private let count = Mutex(0)
    func add() { self.count.withLock { $0 += 1 } }
    var value: Int { self.count.withLock { $0 } }
}
