import Foundation
import MarkovChains
import MarkovCore
import Redis
import Testing

extension ChainIntegrationTests {
@Suite("Training filters and feature flags")
struct FiltersTests {
    /// Sets the `training-filters` rollout for the test, and puts back what was there.
    func withRollout(_ rollout: Rollout, _ harness: ChainHarness, _ body: () async throws -> Void) async throws {
        let before = try await FeatureFlags.read(harness.redis)[FeatureFlag.trainingFilters.name]
        try await FeatureFlags.set(.trainingFilters, to: rollout, redis: harness.redis)
        do {
            try await body()
        } catch {
            try await FeatureFlags.set(.trainingFilters, to: (try? Rollout(parsing: before ?? "off")) ?? .off, redis: harness.redis)
            throw error
        }
        try await FeatureFlags.set(.trainingFilters, to: (try? Rollout(parsing: before ?? "off")) ?? .off, redis: harness.redis)
    }

    @Test("a guild in the rollout learns under its filters; edits and deletes remove what was learnt after a change; relearn applies a change to the history")
    func filtersAndRelearn() async throws {
        let harness = try ChainHarness()
        defer { harness.redis.shutdown() }
        let guild = ChainHarness.newGuild()
        let messages = [
            "m1": "hello https://a.example/x world",
            "m2": "join discord.gg/abc now <:e:123>",
            "m3": "plain words here `code span` end",
        ]
        try await self.withRollout(Rollout(guilds: [guild]), harness) {
            try await harness.train(messages.sorted { $0.key < $1.key }.map { ChainHarness.create(guild, id: $0.key, $0.value, author: "5") })
            var model = ChainModel(stateSize: 2)
            for text in messages.values { model.add(text, filters: .defaults) }
            #expect(try await harness.counts(of: model, guild: guild) == model.counts, "links and invites are stripped by default")
            let record = try await harness.redis.send(RedisCommand("HGET", .string(ChainKeys(guild: guild).messages), "m1")).string
            #expect(record == "5\tli\thello https://a.example/x world", "the record keeps the tokens and the filters")

            // Code is stripped from now on; an edit and a delete remove what was learnt under the old filters.
            let codeToo: ContentFilters = [.links, .invites, .code]
            try await harness.store.setFilters(codeToo, guild: guild)
            try await harness.train([
                ChainHarness.create(guild, id: "m4", "more `x` text", author: "5"),
                ChainEvent(kind: .update, source: .gateway, guildID: guild, messageID: "m1", content: "hello again `y` https://c.example"),
                ChainEvent(kind: .delete, source: .gateway, guildID: guild, messageID: "m2"),
            ])
            var expected = ChainModel(stateSize: 2)
            expected.add("hello again `y` https://c.example", filters: codeToo)
            expected.add(messages["m3"]!, filters: .defaults)
            expected.add("more `x` text", filters: codeToo)
            // Every state any of the texts has under any of the filters used: what the counts are read for.
            var everything = ChainModel(stateSize: 2)
            for text in Array(messages.values) + ["hello again `y` https://c.example", "more `x` text"] {
                for filters: ContentFilters in [[], .defaults, codeToo, [.invites, .code]] { everything.add(text, filters: filters) }
            }
            #expect(try await harness.counts(of: everything, guild: guild) == expected.counts)

            // Relearn: m3 is learnt again without its code span; nothing else changes.
            let first = try await harness.relearn(guild)
            #expect(first.messages == 4 && first.relearnt == 1, "\(first)")
            var relearnt = ChainModel(stateSize: 2)
            for text in ["hello again `y` https://c.example", messages["m3"]!, "more `x` text"] { relearnt.add(text, filters: codeToo) }
            let afterRelearn = try await harness.counts(of: everything, guild: guild)
            #expect(afterRelearn == relearnt.counts, "\(afterRelearn.filter { relearnt.counts[$0.key] != $0.value }) expected \(relearnt.counts.filter { afterRelearn[$0.key] != $0.value })")

            // Links kept again: only m1 had one.
            try await harness.store.setFilters([.invites, .code], guild: guild)
            let second = try await harness.relearn(guild)
            #expect(second.relearnt == 1, "\(second)")
            var withLinks = ChainModel(stateSize: 2)
            for text in ["hello again `y` https://c.example", messages["m3"]!, "more `x` text"] { withLinks.add(text, filters: [.invites, .code]) }
            #expect(try await harness.counts(of: everything, guild: guild) == withLinks.counts)
            let totals = try await harness.store.totals(guild: guild)
            #expect(totals["transitions"] == withLinks.transitions)

            // Forgetting the author removes exactly what was learnt under each record's filters.
            #expect(try await harness.forget(Snowflake("5")!, guild: guild) == 3)
            #expect(try await harness.counts(of: everything, guild: guild).isEmpty)
        }
        try await harness.delete(guild)
    }

    @Test("a percentage rollout strips in the guilds its hash picks and only those; guilds outside learn messages whole")
    func percentageRollout() async throws {
        let harness = try ChainHarness()
        defer { harness.redis.shutdown() }
        let guilds = (0..<24).map { _ in ChainHarness.newGuild() }
        let rollout = Rollout(basisPoints: 4_000)
        let text = "look https://x.example/y here discord.gg/z now"
        try await self.withRollout(rollout, harness) {
            try await harness.train(guilds.map { ChainHarness.create($0, id: "p1", text) })
            var inside = 0
            for guild in guilds {
                let picked = rollout.includes(guild, flag: FeatureFlag.trainingFilters.name)
                if picked { inside += 1 }
                var model = ChainModel(stateSize: 2)
                model.add(text, filters: picked ? .defaults : [])
                var both = model
                both.add(text)
                #expect(try await harness.counts(of: both, guild: guild) == model.counts, "guild \(guild) picked: \(picked)")
            }
            #expect(inside > 0 && inside < guilds.count, "24 guilds at 40% should fall on both sides (\(inside) inside)")
        }
        for guild in guilds { try await harness.delete(guild) }
    }

    @Test("a running trainer sees a flag change within its flag cache time")
    func runningTrainerSeesChange() async throws {
        let harness = try ChainHarness()
        defer { harness.redis.shutdown() }
        try await harness.store.prepare()
        try await harness.log.ensureGroup("trainers", lanes: EventLog.Lane.allCases)
        let guild = ChainHarness.newGuild()
        let flags = FeatureFlags(redis: harness.redis, timeToLive: .milliseconds(300), logger: ChainHarness.logger)
        let trainer = harness.trainer(flags: flags)
        let text = "before https://x.example/y after"
        try await self.withRollout(.off, harness) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await trainer.run() }
                try await harness.log.append([ChainHarness.create(guild, id: "r1", text)])
                while try await harness.backlog() > 0 { try await Task.sleep(for: .milliseconds(50)) }
                var whole = ChainModel(stateSize: 2)
                whole.add(text)
                #expect(try await harness.counts(of: whole, guild: guild) == whole.counts, "off: learnt whole")

                try await FeatureFlags.set(.trainingFilters, to: Rollout(guilds: [guild]), redis: harness.redis)
                try await Task.sleep(for: .milliseconds(400))
                try await harness.log.append([ChainHarness.create(guild, id: "r2", text)])
                while try await harness.backlog() > 0 { try await Task.sleep(for: .milliseconds(50)) }
                var expected = whole
                expected.add(text, filters: .defaults)
                var all = expected
                all.add(text)
                #expect(try await harness.counts(of: all, guild: guild) == expected.counts, "on within the cache time: the link is stripped")
                group.cancelAll()
            }
        }
        try await harness.delete(guild)
    }
}
}
