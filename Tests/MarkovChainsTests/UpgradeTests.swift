import Foundation
import MarkovChains
import MarkovCore
import Redis
import Testing

extension ChainIntegrationTests {
@Suite("Guilds written by the earlier layout")
struct UpgradeTests {
    /// The chain library of the earlier version (a test fixture), under names of its own.
    static let legacyLibrary: RedisFunctionLibrary = {
        let url = Bundle.module.url(forResource: "ChainLibraryV1", withExtension: "lua")!
        let source = try! String(contentsOf: url, encoding: .utf8)
        var hash = StableHash()
        hash.combine(source.utf8)
        return RedisFunctionLibrary(name: "markov_v1_fixture", version: hash.hex, source: source)
    }()

    /// Writes messages the way the earlier version's apply call did (one call per chunk).
    static func writeLegacy(_ texts: [(id: String, text: String)], guild: Snowflake, harness: ChainHarness) async throws {
        try await harness.redis.load(Self.legacyLibrary)
        for start in stride(from: 0, to: texts.count, by: 200) {
            var arguments: [RedisArgument] = ["markov_v1_apply", 1, .string(ChainKeys(guild: guild).meta), 2]
            for (id, text) in texts[start..<min(texts.count, start + 200)] {
                let tokens = Tokenizer.tokens(text).joined(separator: " ")
                arguments += ["c", .string(id), "5", "7", "1", .string(tokens), "", "", ""]
            }
            try await harness.redis.send(RedisCommand("FCALL", arguments))
        }
    }

    @Test("a guild of the earlier layout answers as it is, is upgraded by its first event with its counts intact, and learns on", arguments: [false, true])
    func upgrade(cluster: Bool) async throws {
        let harness = try ChainHarness(cluster: cluster)
        defer { harness.redis.shutdown() }
        let guild = ChainHarness.newGuild()
        let texts = corpus(messages: 1500, seed: 77)
        var model = ChainModel(stateSize: 2)
        for text in texts { model.add(text) }
        try await harness.store.prepare()
        try await Self.writeLegacy(texts.enumerated().map { ("u\($0)", $1) }, guild: guild, harness: harness)
        let legacyKeys = try await harness.keys(matching: "{g:\(guild.rawValue)}:c:*")
        #expect(!legacyKeys.isEmpty, "the fixture wrote the earlier layout")
        #expect(try await harness.counts(of: model, guild: guild) == model.counts, "the earlier layout is read as it is")
        var options = ChainStore.GenerationOptions()
        options.rngSeed = 9
        options.allowCopies = true
        #expect(try await harness.store.generate(guild: guild, options: options).sentence != nil)

        // The guild's first event makes its owner upgrade it before applying the event.
        try await harness.train([ChainHarness.create(guild, id: "after", "w1 w2 brand-new-word")])
        model.add("w1 w2 brand-new-word")
        let totals = try await harness.store.totals(guild: guild)
        #expect(totals["layout"] == ChainLayout.version)
        #expect(totals["messages"] == texts.count + 1)
        #expect(totals["transitions"] == model.transitions)
        #expect(totals["states"] == model.counts.count)
        #expect(try await harness.counts(of: model, guild: guild) == model.counts, "counts survive the upgrade")
        #expect(try await harness.keys(matching: "{g:\(guild.rawValue)}:c:*").isEmpty, "the earlier keys are gone")
        #expect(try await harness.keys(matching: "{g:\(guild.rawValue)}:s:*").isEmpty)
        #expect(try await harness.redis.send(RedisCommand("HEXISTS", .string(ChainKeys(guild: guild).meta), "legacy_cleanup")).int == 0)

        // Edits and deletes of messages learnt before the upgrade take exactly what was learnt.
        try await harness.train([
            ChainEvent(kind: .delete, source: .gateway, guildID: guild, messageID: "u3"),
            ChainEvent(kind: .update, source: .gateway, guildID: guild, messageID: "u4", content: "w0 w0 edited"),
        ])
        model.add(texts[3], -1)
        model.add(texts[4], -1)
        model.add("w0 w0 edited")
        #expect(try await harness.counts(of: model, guild: guild) == model.counts)
        #expect(try await harness.store.generate(guild: guild, options: options).sentence != nil)
        try await harness.delete(guild)
    }

    @Test("markov migrate's event upgrades a guild and reports it")
    func migrateCommand() async throws {
        let harness = try ChainHarness()
        defer { harness.redis.shutdown() }
        let guild = ChainHarness.newGuild()
        let texts = corpus(messages: 300, seed: 78)
        var model = ChainModel(stateSize: 2)
        for text in texts { model.add(text) }
        try await harness.store.prepare()
        try await Self.writeLegacy(texts.enumerated().map { ("m\($0)", $1) }, guild: guild, harness: harness)
        let trainer = harness.trainer()
        let commands = ChainCommands(log: harness.log)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await trainer.run() }
            try await commands.migrate(guild, timeout: .seconds(60))
            group.cancelAll()
        }
        #expect(try await harness.store.totals(guild: guild)["layout"] == ChainLayout.version)
        #expect(try await harness.counts(of: model, guild: guild) == model.counts)
        try await harness.delete(guild)
    }
}
}
