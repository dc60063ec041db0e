import Foundation
import MarkovChains
import MarkovCore
import Redis
import Testing

extension ChainIntegrationTests {
@Suite("Chains on Redis")
struct ChainStoreTests {
    @Test("counts equal an independent count of a corpus, on one Redis and on the cluster", arguments: [false, true])
    func countsMatch(cluster: Bool) async throws {
        let harness = try ChainHarness(cluster: cluster)
        defer { harness.redis.shutdown() }
        let guild = ChainHarness.newGuild()
        let texts = corpus(messages: 1500, seed: 42)
        var model = ChainModel(stateSize: 2)
        for text in texts { model.add(text) }
        try await harness.train(texts.enumerated().map { ChainHarness.create(guild, id: "m\($0)", $1) })
        let totals = try await harness.store.totals(guild: guild)
        #expect(totals["messages"] == texts.count)
        #expect(totals["transitions"] == model.transitions)
        #expect(totals["states"] == model.counts.count)
        #expect(totals["rebuilds", default: 0] > 0, "the corpus must exercise big states with alias tables")
        let stored = try await harness.counts(of: model, guild: guild)
        #expect(stored == model.counts)
        let check = try await ChainCheck(redis: harness.redis, guild: guild, stateSize: 2).run()
        #expect(check.problems == [])
        #expect(check.states == model.counts.count && check.transitions == model.transitions)
        try await harness.delete(guild)
    }

    /// A trainer that reads states before writing them: one whose memory bound forgets states in every batch (one
    /// byte), and one that meets a guild another trainer wrote (its chain is read on first use). Each batch is
    /// read, loaded and merged while the previous batch's writes, bucket splits among them, are in flight.
    @Test("a guild's footprint: exact when measured whole, near the exact sum when sampled, on one Redis and on the cluster", arguments: [false, true])
    func footprint(cluster: Bool) async throws {
        let harness = try ChainHarness(cluster: cluster)
        defer { harness.redis.shutdown() }
        let guild = ChainHarness.newGuild()
        let texts = corpus(messages: 3000, seed: 7)
        try await harness.train(texts.enumerated().map { ChainHarness.create(guild, id: "m\($0)", $1) })
        // The exact figure: MEMORY USAGE of every key with the guild's tag (SAMPLES 5, as the footprint asks).
        var exact = 0
        for key in try await harness.keys(matching: "{g:\(guild.rawValue)}:*") {
            exact += try await harness.redis.send(RedisCommand("MEMORY", "USAGE", .string(key))).int ?? 0
        }
        let whole = try await harness.store.footprint(guild: guild, sample: 100_000)
        #expect(!whole.sampled)
        #expect(whole.bytes == exact, "measured whole, the footprint is every key's MEMORY USAGE")
        let sampled = try await harness.store.footprint(guild: guild, sample: 64)
        #expect(sampled.sampled, "3000 messages need more than 64 buckets")
        #expect(abs(Double(sampled.bytes - exact)) < 0.25 * Double(exact), "sampled \(sampled.bytes) against \(exact)")
        try await harness.delete(guild)
        let gone = try await harness.store.footprint(guild: guild)
        #expect(gone.bytes < 1000, "only the meta's fencing fields stay after a delete: \(gone.bytes)")
    }

    @Test("a trainer that reads the chain as it goes counts exactly", arguments: [1, Trainer.Configuration(consumer: "default").cacheBytes])
    func readsUnderWriteBehind(cacheBytes: Int) async throws {
        var harness = try ChainHarness()
        defer { harness.redis.shutdown() }
        let guild = ChainHarness.newGuild()
        let texts = corpus(messages: 3000, seed: 43, vocabulary: (0..<1500).map { "w\($0)" })
        var model = ChainModel(stateSize: 2)
        for text in texts { model.add(text) }
        let events = texts.enumerated().map { ChainHarness.create(guild, id: "m\($0)", $1) }
        // A first trainer writes a tenth; the next one does not know the guild's chain.
        try await harness.train(Array(events.prefix(300)), lane: .bulk)
        harness.cacheBytes = cacheBytes
        // Many small transactions per batch: the next batch's reads come while most of them are still to be sent.
        harness.transitionsPerCall = 32
        // Full batches on the bulk lane: each batch's writes stay in flight while the next is prepared.
        try await harness.train(Array(events.dropFirst(300)), lane: .bulk)
        let totals = try await harness.store.totals(guild: guild)
        #expect(totals["messages"] == texts.count)
        #expect(totals["transitions"] == model.transitions)
        #expect(totals["states"] == model.counts.count)
        #expect(totals["rebuilds", default: 0] > 0, "the corpus must exercise big states with alias tables")
        #expect(try await harness.counts(of: model, guild: guild) == model.counts)
        #expect(try await ChainCheck(redis: harness.redis, guild: guild, stateSize: 2).run().problems == [])
        try await harness.delete(guild)
    }

    @Test("duplicates, replays and re-imports are counted once", arguments: [false, true])
    func exactlyOnce(cluster: Bool) async throws {
        let harness = try ChainHarness(cluster: cluster)
        defer { harness.redis.shutdown() }
        let guild = ChainHarness.newGuild()
        let texts = corpus(messages: 300, seed: 7)
        let events = texts.enumerated().map { ChainHarness.create(guild, id: "m\($0)", $1) }
        var model = ChainModel(stateSize: 2)
        for text in texts { model.add(text) }
        try await harness.train(events + events.shuffled())
        let again = try await harness.train(events)
        #expect(again.created == 0)
        #expect(try await harness.counts(of: model, guild: guild) == model.counts)
        #expect(try await harness.store.totals(guild: guild)["messages"] == texts.count)
        try await harness.delete(guild)
    }

    @Test("guilds of one partition applied in one batch each read their own records and settings")
    func guildsOfOneBatch() async throws {
        let harness = try ChainHarness()
        defer { harness.redis.shutdown() }
        // Three guilds in the same partition, so that one trainer batch holds a run of each.
        let first = ChainHarness.newGuild()
        let partitions = UInt64(harness.log.keys.partitions)
        let guilds = [first, Snowflake(String(first.value + partitions))!, Snowflake(String(first.value + 2 * partitions))!]
        // Guild 0 keeps user 1 out, guild 1 user 2, guild 2 nobody; guild 1 strips nothing, the others as stored.
        _ = try await harness.forget(Snowflake("1")!, guild: guilds[0])
        _ = try await harness.forget(Snowflake("2")!, guild: guilds[1])
        var events: [ChainEvent] = []
        for (index, guild) in guilds.enumerated() {
            for user in 1...3 { events.append(ChainHarness.create(guild, id: "g\(index)u\(user)", "user \(user) writes in guild \(index)", author: String(user))) }
        }
        try await harness.train(events)
        // Again, in one batch: every guild finds its own records and learns nothing twice.
        let again = try await harness.train(events.shuffled())
        #expect(again.created == 0)
        for (index, expected) in [2, 2, 3].enumerated() {
            #expect(try await harness.store.totals(guild: guilds[index])["messages"] == expected, "guild \(index)")
        }
        for guild in guilds { try await harness.delete(guild) }
    }

    @Test("edits, deletes, bulk deletes and a user purge return the counts to what they were without the messages")
    func editsAndDeletes() async throws {
        let harness = try ChainHarness()
        defer { harness.redis.shutdown() }
        let guild = ChainHarness.newGuild()
        let base = corpus(messages: 400, seed: 11)
        var model = ChainModel(stateSize: 2)
        for text in base { model.add(text) }
        try await harness.train(base.enumerated().map { ChainHarness.create(guild, id: "b\($0)", $1) })
        let before = try await harness.counts(of: model, guild: guild)
        #expect(before == model.counts)
        let baselineTotals = try await harness.store.totals(guild: guild)

        let extra = corpus(messages: 60, seed: 12)
        var events: [ChainEvent] = []
        for (index, text) in extra.enumerated() {
            events.append(ChainHarness.create(guild, id: "x\(index)", text, author: index % 3 == 0 ? "99" : "2"))
        }
        // Edit some, delete some singly, some in bulk; user 99's remaining messages go with the purge.
        for index in stride(from: 0, to: 60, by: 5) {
            events.append(ChainEvent(kind: .update, source: .gateway, guildID: guild, messageID: "x\(index)", content: "edited \(index) w1 w2"))
        }
        for index in stride(from: 1, to: 60, by: 3) {
            events.append(ChainEvent(kind: .delete, source: .gateway, guildID: guild, messageID: "x\(index)"))
        }
        let bulk = (0..<60).filter { $0 % 3 == 2 }.map { "x\($0)" }
        events.append(ChainEvent(kind: .deleteBulk, source: .gateway, guildID: guild, messageIDs: bulk))
        try await harness.train(events)
        let forgotten = try await harness.forget(Snowflake("99")!, guild: guild)
        #expect(forgotten == 20)
        #expect(try await harness.counts(of: model, guild: guild) == before)
        let totals = try await harness.store.totals(guild: guild)
        #expect(totals["transitions"] == baselineTotals["transitions"])
        #expect(totals["count"] == baselineTotals["count"])
        #expect(totals["messages"] == baselineTotals["messages"])

        // Deleted messages stay deleted when their create arrives late; opted-out users stay out.
        try await harness.train([ChainHarness.create(guild, id: "x1", "late create"), ChainHarness.create(guild, id: "new", "hello there", author: "99")])
        #expect(try await harness.counts(of: model, guild: guild) == before)
        try await harness.delete(guild)
    }

    @Test("a guild's sentences use only that guild's words", arguments: [false, true])
    func isolation(cluster: Bool) async throws {
        let harness = try ChainHarness(cluster: cluster)
        defer { harness.redis.shutdown() }
        let a = ChainHarness.newGuild()
        let b = ChainHarness.newGuild()
        let textsA = corpus(messages: 200, seed: 1, vocabulary: (0..<50).map { "alpha\($0)" })
        let textsB = corpus(messages: 200, seed: 2, vocabulary: (0..<50).map { "beta\($0)" })
        try await harness.train(
            textsA.enumerated().map { ChainHarness.create(a, id: "a\($0)", $1) }
                + textsB.enumerated().map { ChainHarness.create(b, id: "b\($0)", $1) }
        )
        var options = ChainStore.GenerationOptions()
        options.allowCopies = true
        for seed in 0..<200 {
            options.rngSeed = UInt64(seed)
            let sentence = try await harness.store.generate(guild: a, options: options).sentence ?? ""
            #expect(!sentence.isEmpty)
            #expect(!sentence.contains("beta"), "\(sentence)")
        }
        try await harness.delete(a)
        try await harness.delete(b)
    }

    @Test("generation: one call, replayable seeds, seeded starts, limits, no verbatim copies")
    func generation() async throws {
        let harness = try ChainHarness()
        defer { harness.redis.shutdown() }
        let guild = ChainHarness.newGuild()
        let texts = corpus(messages: 500, seed: 5)
        try await harness.train(texts.enumerated().map { ChainHarness.create(guild, id: "g\($0)", $1) })
        var options = ChainStore.GenerationOptions()
        options.rngSeed = 12345
        options.debug = true
        let first = try await harness.store.generate(guild: guild, options: options)
        let second = try await harness.store.generate(guild: guild, options: options)
        #expect(first.sentence != nil)
        #expect(first == second, "the same seed replays the same sentence")
        if let sentence = first.sentence {
            #expect(!texts.contains(sentence), "a sentence identical to a message is rejected")
            #expect(first.steps.count == Tokenizer.tokens(sentence).count + 1, "one step per word, plus the end")
            #expect(first.steps.allSatisfy { $0.count > 0 && $0.count <= $0.total })
        }
        // A seed that is a known state starts the sentence.
        options.seedWords = ["w0", "w1"]
        options.allowCopies = true
        let seeded = try await harness.store.generate(guild: guild, options: options)
        #expect(seeded.sentence?.hasPrefix("w0 w1") == true, "\(seeded)")
        options.seedWords = ["nonexistent-word"]
        let unknown = try await harness.store.generate(guild: guild, options: options)
        #expect(unknown.notes.contains("unknown"))
        // Limits: impossible minimum → no sentence and the reason.
        options.seedWords = []
        options.minWords = 500
        options.maxWords = 600
        let none = try await harness.store.generate(guild: guild, options: options)
        #expect(none.sentence == nil && none.notes.contains("shorter"))
        // An empty guild says so.
        let empty = try await harness.store.generate(guild: ChainHarness.newGuild())
        #expect(empty.sentence == nil && empty.notes.contains("no data"))
        try await harness.delete(guild)
    }

    @Test("braces, NUL, newlines, RTL marks, emoji, 4000-character and invalid UTF-8 messages are safe")
    func oddInput() async throws {
        let harness = try ChainHarness()
        defer { harness.redis.shutdown() }
        let guild = ChainHarness.newGuild()
        let other = ChainHarness.newGuild()
        let texts = [
            "{g:\(other.rawValue)} takes over", "}{ braces {} everywhere }", "nul \u{0} inside\u{0}token",
            "line one\nline two\r\nline three", "\u{200F}rtl \u{202E}override", "emoji 🎉🇫🇷 👩‍👩‍👧",
            String(repeating: "long ", count: 800), String(repeating: "x", count: 4000),
            String(decoding: [0x62, 0x61, 0x64, 0xFF, 0xFE, 0x20, 0x75, 0x74, 0x66], as: UTF8.self),
            "* ? [ ] \\ glob chars", "tab\tseparated\tvalues",
        ]
        var model = ChainModel(stateSize: 2)
        for text in texts { model.add(text) }
        try await harness.train(texts.enumerated().map { ChainHarness.create(guild, id: "o\($0)", $1) })
        #expect(try await harness.counts(of: model, guild: guild) == model.counts)
        let foreign = try await harness.keys(matching: "{g:\(other.rawValue)}*")
        #expect(foreign.isEmpty, "no text may create keys of another guild: \(foreign)")
        var options = ChainStore.GenerationOptions()
        options.allowCopies = true
        for seed in 0..<50 {
            options.rngSeed = UInt64(seed)
            let result = try await harness.store.generate(guild: guild, options: options)
            #expect((result.sentence?.utf16.count ?? 0) <= 2000)
        }
        try await harness.delete(guild)
        try await harness.expectOnlyTombstone(guild, "deleting a guild removes every key but the fencing fields")
    }

    @Test("a backfill's messages are learnt only while the guild's backfill is that one; /delete-data keeps opt-outs")
    func backfillToken() async throws {
        let harness = try ChainHarness()
        defer { harness.redis.shutdown() }
        let guild = ChainHarness.newGuild()
        func read(_ id: String, _ text: String, started: String) -> ChainEvent {
            var event = ChainHarness.create(guild, id: id, text)
            event.origin = "backfill:\(started)"
            return event
        }
        try await harness.redis.send(RedisCommand("HSET", .string("{g:\(guild.rawValue)}:backfill"), "started", "1000", "status", "running"))
        try await harness.train([read("b1", "read from history", started: "1000"), read("b2", "from an older backfill", started: "999")])
        #expect(try await harness.store.totals(guild: guild)["messages"] == 1, "only the current backfill's message")
        // /delete-data while pages are still in the stream: they are not learnt again.
        _ = try await harness.forget(Snowflake("42")!, guild: guild)
        try await harness.delete(guild, keepingOptOuts: true)
        try await harness.train([read("b3", "late page after the deletion", started: "1000")])
        #expect(try await harness.store.totals(guild: guild)["messages", default: 0] == 0)
        #expect(try await harness.store.optedOutUsers(guild: guild) == ["42"], "a user who opted out stays out")
        try await harness.delete(guild)
        try await harness.expectOnlyTombstone(guild, "the bot's removal removes everything but the fencing fields")
    }

    @Test("a malformed entry goes to the dead-letter stream; the rest of its batch is applied")
    func deadLetters() async throws {
        let harness = try ChainHarness()
        defer { harness.redis.shutdown() }
        let guild = ChainHarness.newGuild()
        try await harness.store.prepare()
        try await harness.log.ensureGroup("trainers")
        let stream = harness.log.keys.stream(for: guild)
        try await harness.log.append([ChainHarness.create(guild, id: "ok1", "fine message")])
        try await harness.redis.send(RedisCommand("XADD", .string(stream), "*", "v", "1", "kind", "create", "guild", "not-a-guild"))
        try await harness.redis.send(RedisCommand("XADD", .string(stream), "*", "v", "99", "kind", "create"))
        try await harness.log.append([ChainHarness.create(guild, id: "ok2", "another fine message")])
        let before = try await harness.redis.send(RedisCommand("XLEN", .string(harness.log.keys.deadLetters(harness.log.keys.partition(of: guild))))).int ?? 0
        let stats = try await harness.drain()
        #expect(stats.deadLetters == 2)
        let after = try await harness.redis.send(RedisCommand("XLEN", .string(harness.log.keys.deadLetters(harness.log.keys.partition(of: guild))))).int ?? 0
        #expect(after - before == 2)
        #expect(try await harness.store.totals(guild: guild)["messages"] == 2)
        try await harness.delete(guild)
    }

    @Test("trimming keeps every entry some group has not consumed")
    func trimming() async throws {
        let harness = try ChainHarness(partitions: 1)
        defer { harness.redis.shutdown() }
        let stream = "events:{trimtest-\(UUID().uuidString)}"
        try await harness.redis.send(RedisCommand("XGROUP", "CREATE", .string(stream), "fast", "0", "MKSTREAM"))
        try await harness.redis.send(RedisCommand("XGROUP", "CREATE", .string(stream), "slow", "0"))
        for index in 0..<10 { try await harness.redis.send(RedisCommand("XADD", .string(stream), "*", "n", .integer(index))) }
        // "fast" consumed and acknowledged all; "slow" read 4 and acknowledged 2.
        let fast = try await harness.redis.send(RedisCommand("XREADGROUP", "GROUP", "fast", "c", "STREAMS", .string(stream), ">"))
        let fastIDs = EventLog.entries(fast.array?[0].array?[1] ?? .null).map { RedisArgument.string($0.id) }
        try await harness.redis.send(RedisCommand("XACK", [.string(stream), "fast"] + fastIDs))
        let slow = try await harness.redis.send(RedisCommand("XREADGROUP", "GROUP", "slow", "c", "COUNT", 4, "STREAMS", .string(stream), ">"))
        let slowIDs = EventLog.entries(slow.array?[0].array?[1] ?? .null).map(\.id)
        try await harness.redis.send(RedisCommand("XACK", .string(stream), "slow", .string(slowIDs[0]), .string(slowIDs[1])))
        let trimmed = try await EventLog.trim(stream: stream, redis: harness.redis)
        #expect(trimmed == 2, "only the two entries every group acknowledged go")
        #expect(try await harness.redis.send(RedisCommand("XLEN", .string(stream))).int == 8)
        try await harness.redis.send(RedisCommand("DEL", .string(stream)))
    }

    @Test("a message whose event names its thread's channel is learnt even before the thread's own event is applied")
    func threadParentInTheEvent() async throws {
        let harness = try ChainHarness()
        defer { harness.redis.shutdown() }
        let guild = ChainHarness.newGuild()
        let (channel, thread, unknown) = (Snowflake("555")!, Snowflake("556")!, Snowflake("557")!)
        try await harness.store.setListening(true, channel: channel, guild: guild)
        func message(_ id: String, in place: Snowflake, parent: Snowflake?) -> ChainEvent {
            ChainEvent(kind: .create, source: .gateway, guildID: guild, channelID: place, messageID: id, threadParent: parent,
                       authorID: Snowflake("8"), content: "zebras in a thread \(id)")
        }
        // No thread record in Redis: only the event's own parent can tell where the thread is.
        try await harness.train([
            message("t1", in: thread, parent: channel),
            message("t2", in: unknown, parent: nil),
        ])
        #expect(try await harness.store.totals(guild: guild)["messages", default: 0] == 1, "t1 learnt, t2 not")
        let recorded = try await harness.redis.send(RedisCommand("HGET", .string(ChainKeys(guild: guild).threads), .string(thread.rawValue)))
        #expect(recorded.string == channel.rawValue, "the thread's channel is recorded for later messages")
        let round = try ChainEvent(fields: Dictionary(uniqueKeysWithValues: message("t3", in: thread, parent: channel).fields))
        #expect(round.threadParent == channel, "the parent survives the stream")
        try await harness.delete(guild)
    }

    @Test("gateway messages are learnt only in channels enabled for learning; a removed guild loses everything")
    func listenChannelsAndGuildRemoval() async throws {
        let harness = try ChainHarness()
        defer { harness.redis.shutdown() }
        let guild = ChainHarness.newGuild()
        let channel = Snowflake("555")!
        func message(_ id: String, _ text: String) -> ChainEvent {
            ChainEvent(kind: .create, source: .gateway, guildID: guild, channelID: channel, messageID: id,
                       authorID: Snowflake("8"), content: text)
        }
        try await harness.train([message("q1", "not listening yet")])
        #expect(try await harness.store.totals(guild: guild)["messages", default: 0] == 0)
        try await harness.store.setListening(true, channel: channel, guild: guild)
        #expect(try await harness.store.listenChannels(guild: guild) == ["555"])
        let bot = ChainEvent(kind: .create, source: .gateway, guildID: guild, channelID: channel, messageID: "q3",
                             authorID: Snowflake("9"), authorFlags: [.bot], content: "bots are not learnt")
        let command = message("q4", "!mark debug")
        try await harness.train([message("q2", "now it learns"), bot, command])
        #expect(try await harness.store.totals(guild: guild)["messages"] == 1)
        try await harness.train([ChainEvent(kind: .guildRemoved, source: .gateway, guildID: guild)])
        try await harness.expectOnlyTombstone(guild, "a removed guild loses everything but the fencing fields")
    }

    @Test("an entry whose message record is damaged goes to the dead letters with the reason; its batch-mates are applied")
    func poisonEntry() async throws {
        let harness = try ChainHarness()
        defer { harness.redis.shutdown() }
        let guild = ChainHarness.newGuild()
        try await harness.train([ChainHarness.create(guild, id: "p1", "a healthy message")])
        // Corrupt one message record: the update below cannot know what was learnt.
        try await harness.redis.send(RedisCommand("HSET", .string("{g:\(guild.rawValue)}:m"), "p1", "no-tab-here"))
        let deadLetters = harness.log.keys.deadLetters(harness.log.keys.partition(of: guild))
        let before = try await harness.redis.send(RedisCommand("XLEN", .string(deadLetters))).int ?? 0
        let stats = try await harness.train([
            ChainHarness.create(guild, id: "p2", "first neighbour"),
            ChainEvent(kind: .update, source: .gateway, guildID: guild, messageID: "p1", content: "edited text"),
            ChainHarness.create(guild, id: "p3", "second neighbour"),
        ])
        #expect(stats.deadLetters == 1)
        let entries = try await harness.redis.send(RedisCommand("XRANGE", .string(deadLetters), "-", "+"))
        let last = EventLog.entries(entries).last
        #expect((try await harness.redis.send(RedisCommand("XLEN", .string(deadLetters))).int ?? 0) == before + 1)
        #expect(last.map { String(decoding: $0.fields["reason"] ?? [], as: UTF8.self) }?.contains("record of p1 is malformed") == true)
        #expect(last.map { String(decoding: $0.fields["f.id"] ?? [], as: UTF8.self) } == "p1")
        #expect(try await harness.store.totals(guild: guild)["messages"] == 3, "the neighbours were applied")
        try await harness.delete(guild)
    }

    @Test("a guild whose stored chain is damaged has its entries dead-lettered with the reason; other guilds go on")
    func damagedChain() async throws {
        let harness = try ChainHarness()
        defer { harness.redis.shutdown() }
        let guild = ChainHarness.newGuild()
        // The same partition, so that both guilds share batches.
        var other = ChainHarness.newGuild()
        while harness.log.keys.partition(of: other) != harness.log.keys.partition(of: guild) { other = ChainHarness.newGuild() }
        // Sixty successors of "w0 w0": a big state, with an alias blob.
        try await harness.train((0..<60).map { ChainHarness.create(guild, id: "b\($0)", "w0 w0 s\($0)") })
        let big = "w0 w0"
        #expect(try await harness.redis.send(RedisCommand("SISMEMBER", .string("{g:\(guild.rawValue)}:bigs"), .string(big))).int == 1)
        // An increment that points into no token's entry.
        try await harness.redis.send(RedisCommand("APPEND", .string("{g:\(guild.rawValue)}:u:\(big)"), .bytes([0xFF, 0xFF, 0xFF, 0x7F])))
        let deadLetters = harness.log.keys.deadLetters(harness.log.keys.partition(of: guild))
        let before = try await harness.redis.send(RedisCommand("XLEN", .string(deadLetters))).int ?? 0
        // A new trainer reads the state on first use.
        let stats = try await harness.train([
            ChainHarness.create(guild, id: "d1", "w0 w0 again"),
            ChainHarness.create(other, id: "o1", "the other guild is learnt"),
        ])
        #expect(stats.deadLetters == 1)
        #expect((try await harness.redis.send(RedisCommand("XLEN", .string(deadLetters))).int ?? 0) == before + 1)
        let entries = try await harness.redis.send(RedisCommand("XRANGE", .string(deadLetters), "-", "+"))
        let reason = EventLog.entries(entries).last.map { String(decoding: $0.fields["reason"] ?? [], as: UTF8.self) } ?? ""
        #expect(reason.contains("stored chain cannot be read") && reason.contains("\"\(big)\"") && reason.contains("increment of no token"), "\(reason)")
        #expect(try await harness.store.totals(guild: other)["messages"] == 1, "the other guild was applied")
        #expect(try await harness.store.totals(guild: guild)["messages"] == 60, "nothing was written to the damaged guild")
        // The check of the whole chain finds the same damage, and only it.
        let problems = try await ChainCheck(redis: harness.redis, guild: guild, stateSize: 2).run().problems
        #expect(problems.count == 2 && problems.contains { $0.contains("increment of no token") }, "\(problems)")
        try await harness.delete(guild)
        try await harness.delete(other)
    }

    @Test("an edit applied before its create (a backfill reading an edited message late) leaves the edited text learnt")
    func editBeforeCreate() async throws {
        let harness = try ChainHarness()
        defer { harness.redis.shutdown() }
        let guild = ChainHarness.newGuild()
        let store = harness.store
        func update(_ text: String) -> ChainEvent { ChainEvent(kind: .update, source: .gateway, guildID: guild, messageID: "e1", content: text) }
        // The edit first (live lane): nothing is learnt yet, the edited text waits for the create.
        try await harness.train([update("edited words here")])
        #expect(try await store.totals(guild: guild)["messages", default: 0] == 0)
        // The create arrives later, from the bulk lane.
        try await harness.train([ChainHarness.create(guild, id: "e1", "original words there")], lane: .bulk)
        #expect(try await store.totals(guild: guild)["messages"] == 1)
        let edited = try await store.state(["edited", "words"], guild: guild).successors.map(\.0)
        #expect(edited == ["here"])
        #expect(try await store.state(["original", "words"], guild: guild).successors.isEmpty)
        // A later edit replaces it as usual; a delete removes it.
        try await harness.train([update("third version now")])
        #expect(try await store.state(["edited", "words"], guild: guild).successors.isEmpty)
        try await harness.train([ChainEvent(kind: .delete, source: .gateway, guildID: guild, messageID: "e1")])
        #expect(try await store.totals(guild: guild)["messages"] == 0)
        try await harness.delete(guild)
    }

    @Test("a guild keeps the state size it was first trained with: entries of another size go to the dead letters")
    func stateSizeIsFixed() async throws {
        let harness = try ChainHarness()
        defer { harness.redis.shutdown() }
        let guild = ChainHarness.newGuild()
        try await harness.train([ChainHarness.create(guild, id: "s1", "one two three four")])
        let other = try ChainHarness(stateSize: 3)
        defer { other.redis.shutdown() }
        let deadLetters = harness.log.keys.deadLetters(harness.log.keys.partition(of: guild))
        let before = try await harness.redis.send(RedisCommand("XLEN", .string(deadLetters))).int ?? 0
        let stats = try await other.train([ChainHarness.create(guild, id: "s2", "five six seven")])
        #expect(stats.deadLetters == 1)
        #expect((try await harness.redis.send(RedisCommand("XLEN", .string(deadLetters))).int ?? 0) == before + 1)
        await #expect {
            try await other.store.generate(guild: guild)
        } throws: { error in
            (error as? RedisError)?.message.contains("state size 2, not 3") == true
        }
        #expect(try await harness.store.totals(guild: guild)["messages"] == 1)
        try await harness.delete(guild)
    }
}
}
