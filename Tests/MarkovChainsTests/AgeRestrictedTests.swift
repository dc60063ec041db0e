import Foundation
import MarkovChains
import MarkovCore
import Redis
import Testing

extension ChainIntegrationTests {
@Suite("Age-restricted channels")
struct AgeRestrictedTests {
    static let open = Snowflake("7")!
    static let restricted = Snowflake("8")!

    /// Marks channel 8 age-restricted, as the gateway does from GUILD_CREATE or CHANNEL_UPDATE.
    static func channels(_ guild: Snowflake, restricted: Bool = true) -> ChainEvent {
        var event = ChainEvent(kind: .channels, source: .gateway, guildID: guild, messageIDs: [Self.open.rawValue, Self.restricted.rawValue])
        event.ageRestricted = [false, restricted]
        return event
    }

    static func create(_ guild: Snowflake, id: String, _ text: String, channel: Snowflake, author: String = "1") -> ChainEvent {
        ChainEvent(kind: .create, source: .importer, guildID: guild, channelID: channel, messageID: id, authorID: Snowflake(author), content: text)
    }

    @Test(
        "in an age-restricted channel the walk draws from the union of both scopes, exactly (χ²); elsewhere only the guild's scope",
        arguments: [2, 10, 1200]
    )
    func unionSampling(restrictedSuccessors: Int) async throws {
        let harness = try ChainHarness()
        defer { harness.redis.shutdown() }
        let guild = ChainHarness.newGuild()
        var events = [Self.channels(guild)]
        var open: [String: Int] = ["a": 3, "b": 1]
        var restricted: [String: Int] = ["a": 1]
        for index in 0..<restrictedSuccessors { restricted["r\(index)", default: 0] += 1 + index % 3 }
        var id = 0
        for (token, count) in open {
            for _ in 0..<count { id += 1; events.append(Self.create(guild, id: "o\(id)", "x y \(token)", channel: Self.open)) }
        }
        for (token, count) in restricted {
            for _ in 0..<count { id += 1; events.append(Self.create(guild, id: "r\(id)", "x y \(token)", channel: Self.restricted)) }
        }
        try await harness.train(events)
        // The restricted scope's states are their own: the guild's "x y" holds only what was said in the open.
        let table = try await harness.store.state(["x", "y"], guild: guild)
        #expect(Dictionary(uniqueKeysWithValues: table.successors.map { ($0.token, $0.count) }) == open.mapValues { $0 })
        let restrictedTable = try await harness.store.state(["\u{1}x", "y"], guild: guild)
        #expect(Dictionary(uniqueKeysWithValues: restrictedTable.successors.map { ($0.token, $0.count) }) == restricted)

        let draws = 4000
        let elsewhere = try await SamplingTests.drawSuccessors(of: ["x", "y"], guild: guild, harness: harness, draws: draws, salt: 5)
        #expect(Set(elsewhere.keys).isSubset(of: Set(open.keys)), "no restricted token outside: \(elsewhere.keys.sorted().prefix(5))")
        let openFit = SamplingTests.chiSquare(elsewhere, expected: open, draws: draws)
        #expect(openFit.chi < openFit.critical, "χ² \(openFit.chi) ≥ \(openFit.critical)")

        let union = open.merging(restricted, uniquingKeysWith: +)
        let inside = try await SamplingTests.drawSuccessors(of: ["x", "y"], guild: guild, harness: harness, draws: draws, salt: 6, ageRestricted: true)
        #expect(Set(inside.keys).isSubset(of: Set(union.keys)))
        if restrictedSuccessors <= 10 {
            let fit = SamplingTests.chiSquare(inside, expected: union, draws: draws)
            #expect(fit.chi < fit.critical, "χ² \(fit.chi) ≥ \(fit.critical)")
        } else {
            // 1200 successors over 4000 draws: too few per cell for χ²; the share of each scope is checked instead.
            let fromOpen = Double(inside["b", default: 0] + inside["a", default: 0]) / Double(draws)
            let expected = Double(open.values.reduce(0, +) + restricted["a"]!) / Double(union.values.reduce(0, +))
            #expect(abs(fromOpen - expected) < 4 * (expected * (1 - expected) / Double(draws)).squareRoot() + 0.001)
        }
        try await harness.delete(guild)
    }

    @Test("no token learnt only in an age-restricted channel (or a thread of one) is ever said elsewhere; edits, deletes and forget work on the scope a message was learnt in")
    func neverOutside() async throws {
        let harness = try ChainHarness()
        defer { harness.redis.shutdown() }
        let guild = ChainHarness.newGuild()
        let thread = Snowflake("81")!
        var events = [Self.channels(guild), ChainEvent(kind: .threads, source: .gateway, guildID: guild, messageIDs: [thread.rawValue], threadParents: [Self.restricted.rawValue])]
        let openTexts = corpus(messages: 300, seed: 11)
        let secret = (0..<60).map { "s\($0)" }
        let restrictedTexts = corpus(messages: 300, seed: 12, vocabulary: (0..<200).map { "w\($0)" } + secret)
        for (index, text) in openTexts.enumerated() { events.append(Self.create(guild, id: "o\(index)", text, channel: Self.open, author: "3")) }
        for (index, text) in restrictedTexts.enumerated() {
            events.append(Self.create(guild, id: "r\(index)", text, channel: index % 2 == 0 ? Self.restricted : thread, author: "4"))
        }
        try await harness.train(events)
        let record = try await harness.redis.send(RedisCommand("HGET", .string(ChainKeys(guild: guild).messages), "r1")).string
        #expect(record?.hasPrefix("n4\t") == true, "a thread's message is learnt in its channel's scope: \(record ?? "nil")")
        #expect(try await harness.redis.send(RedisCommand("SMEMBERS", .string(ChainKeys(guild: guild).ageRestricted))).array?.compactMap(\.string) == ["8"])

        func sentences(ageRestricted: Bool, count: Int) async throws -> [String] {
            var result: [String] = []
            for seed in 0..<count {
                var options = ChainStore.GenerationOptions()
                options.rngSeed = UInt64(seed)
                options.ageRestricted = ageRestricted
                options.allowCopies = true
                if let sentence = try await harness.store.generate(guild: guild, options: options).sentence { result.append(sentence) }
            }
            return result
        }
        let secretSet = Set(secret)
        let outside = try await sentences(ageRestricted: false, count: 400)
        #expect(outside.count > 300)
        #expect(!outside.contains { $0.split(separator: " ").contains { secretSet.contains(String($0)) } }, "a restricted word said outside")
        // Seeding with a secret word outside does not reach the restricted scope either.
        var seeded = ChainStore.GenerationOptions()
        seeded.seedWords = ["s0"]
        seeded.allowCopies = true
        let fromSecret = try await harness.store.generate(guild: guild, options: seeded)
        #expect(fromSecret.notes.contains("unknown"), "\(fromSecret.notes)")
        #expect(!(fromSecret.sentence ?? "").split(separator: " ").contains { secretSet.contains(String($0)) })
        let inside = try await sentences(ageRestricted: true, count: 400)
        #expect(inside.contains { $0.split(separator: " ").contains { secretSet.contains(String($0)) } }, "the restricted scope is said inside")

        // Edits and deletes of restricted messages, a forget of their author and a relearn leave the restricted
        // scope as a model of what is left says.
        var edits: [ChainEvent] = []
        for index in stride(from: 0, to: 300, by: 3) {
            edits.append(ChainEvent(kind: .update, source: .gateway, guildID: guild, messageID: "r\(index)", content: "edited s1 words \(index)"))
        }
        for index in stride(from: 1, to: 300, by: 3) { edits.append(ChainEvent(kind: .delete, source: .gateway, guildID: guild, messageID: "r\(index)")) }
        try await harness.train(edits)
        let inspected = try await harness.store.state(["\u{1}", ""], guild: guild)
        #expect(inspected.successors.first { $0.token == "edited" }?.count == 100, "edits are learnt in the scope of the message")
        // `markov inspect --check` reads both scopes as sound: a restricted state's successors lead to restricted states.
        let report = try await ChainCheck(redis: harness.redis, guild: guild, stateSize: 2).run()
        #expect(report.problems.isEmpty, "\(report.problems.prefix(5))")
        let count = try await harness.store.totals(guild: guild)["count"]
        #expect(report.states > 0 && report.count == count)
        let totals = try await harness.store.totals(guild: guild)
        #expect(totals["messages"] == 300 + 200)
        #expect(try await harness.forget(Snowflake("4")!, guild: guild) == 200)
        #expect(try await harness.store.state(["\u{1}", ""], guild: guild).successors.isEmpty, "forgetting the author empties the restricted scope")
        #expect(try await harness.store.totals(guild: guild)["messages"] == 300)
        let afterForget = try await sentences(ageRestricted: true, count: 100)
        #expect(!afterForget.contains { $0.split(separator: " ").contains { secretSet.contains(String($0)) } })
        try await harness.delete(guild)
    }
}
}
