import Foundation
import MarkovChains
import MarkovCore
import Redis
import Testing

extension ChainIntegrationTests {
@Suite("Guild export and restore")
struct ArchiveTests {
    /// A guild with big states (with increments and decrements since their tables were built), message records,
    /// content hashes, settings and an opt-out.
    func populatedGuild(_ harness: ChainHarness) async throws -> Snowflake {
        let guild = ChainHarness.newGuild()
        let texts = corpus(messages: 1500, seed: 41)
        try await harness.train(texts.enumerated().map { ChainHarness.create(guild, id: "m\($0.offset)", $0.element, author: String(1 + $0.offset % 5)) })
        // Deletes and new messages after the tables were built leave decrements and increments beside them.
        try await harness.train(
            (0..<40).map { ChainEvent(kind: .delete, source: .gateway, guildID: guild, messageID: "m\($0 * 7)") }
                + corpus(messages: 60, seed: 42).enumerated().map { ChainHarness.create(guild, id: "n\($0.offset)", $0.element) }
        )
        _ = try await harness.store.setBlocked([try BlockEntry("w3"), try BlockEntry("x*")], blocked: true, guild: guild)
        try await harness.store.setFilters([.links, .code], guild: guild)
        try await harness.store.setListening(true, channel: Snowflake("7")!, guild: guild)
        try await harness.redis.send(RedisCommand("SADD", .string(ChainKeys(guild: guild).optOut), "99"))
        return guild
    }

    /// What must survive a round trip: totals, settings, and sentences for fixed seeds.
    struct Observed: Equatable {
        var totals: [String: Int]
        var blocklist: [String]
        var filters: ContentFilters
        var listening: [String]
        var optOuts: [String]
        var sentences: [String?]
        var records: Int
    }

    func observe(_ harness: ChainHarness, _ guild: Snowflake) async throws -> Observed {
        var sentences: [String?] = []
        for seed in 1...25 {
            var options = ChainStore.GenerationOptions()
            options.rngSeed = UInt64(seed)
            sentences.append(try await harness.store.generate(guild: guild, options: options).sentence)
        }
        let totals = try await harness.store.totals(guild: guild).filter { ["messages", "states", "transitions", "count", "L", "p", "rebuilds"].contains($0.key) }
        return Observed(
            totals: totals,
            blocklist: try await harness.store.blocklist(guild: guild),
            filters: try await harness.store.filters(guild: guild),
            listening: try await harness.store.listenChannels(guild: guild).sorted(),
            optOuts: try await harness.store.optedOutUsers(guild: guild).sorted(),
            sentences: sentences,
            records: try await harness.redis.send(RedisCommand("HLEN", .string(ChainKeys(guild: guild).messages))).int ?? 0
        )
    }

    func export(_ harness: ChainHarness, _ guild: Snowflake, to path: String) async throws -> GuildExport.Summary {
        FileManager.default.createFile(atPath: path, contents: nil)
        let handle = try #require(FileHandle(forWritingAtPath: path))
        defer { try? handle.close() }
        return try await GuildExport(redis: harness.redis, guild: guild).run(stateSize: 2) { line in
            try handle.write(contentsOf: line + [0x0A])
        }
    }

    /// Restores through a trainer in this process.
    func restore(_ harness: ChainHarness, _ path: String, into guild: Snowflake) async throws -> ChainCommands.RestoreOutcome {
        try await harness.store.prepare()
        try await harness.log.ensureGroup("trainers", lanes: EventLog.Lane.allCases)
        let checked = try GuildArchive.check(path: path)
        let trainer = harness.trainer()
        let commands = ChainCommands(log: harness.log)
        return try await withThrowingTaskGroup(of: ChainCommands.RestoreOutcome?.self) { group in
            group.addTask {
                try await trainer.run()
                return nil
            }
            group.addTask {
                try await commands.restore(guild: guild, timeout: .seconds(120)) { append in
                    // Small parts, so that the file goes in many entries.
                    try await GuildArchive.parts(path: path, checked: checked, partBytes: 4096) { parts, _ in try await append(parts) }
                }
            }
            defer { group.cancelAll() }
            while let result = try await group.next() {
                if let result { return result }
            }
            throw CancellationError()
        }
    }

    func temporaryFile() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("markov-export-\(UUID().uuidString).jsonl").path
    }

    @Test("export, delete, restore: totals, settings, records and sentences for fixed seeds are the same; a second restore changes nothing; the file restores under another id and into the cluster")
    func roundTrip() async throws {
        let harness = try ChainHarness()
        defer { harness.redis.shutdown() }
        let guild = try await self.populatedGuild(harness)
        let before = try await self.observe(harness, guild)
        #expect(try await harness.redis.send(RedisCommand("SCARD", .string(ChainKeys(guild: guild).key(":bigs")))).int ?? 0 > 0, "the guild has big states")
        #expect(before.sentences.compactMap { $0 }.count > 10)
        let path = self.temporaryFile()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let summary = try await self.export(harness, guild, to: path)
        #expect(!summary.changed)
        #expect(summary.header.messages == before.totals["messages"])

        try await harness.delete(guild)
        try await harness.expectOnlyTombstone(guild, "deleted before the restore")
        #expect(try await self.restore(harness, path, into: guild) == .restored(keys: summary.keys))
        #expect(try await self.observe(harness, guild) == before)
        #expect(try await self.restore(harness, path, into: guild) == .already)
        #expect(try await self.observe(harness, guild) == before)

        // The restored guild goes on learning: a new message adds its transitions to the restored counts.
        try await harness.train([ChainHarness.create(guild, id: "late", "w1 w2 brandnew")])
        let after = try await harness.store.totals(guild: guild)
        #expect(after["messages"] == (before.totals["messages"] ?? 0) + 1)
        let table = try await harness.store.state(["w2", "brandnew"], guild: guild)
        #expect(table.successors.map(\.token) == [""])

        // Under another guild id, and into the cluster.
        let other = ChainHarness.newGuild()
        #expect(try await self.restore(harness, path, into: other) == .restored(keys: summary.keys))
        #expect(try await self.observe(harness, other) == before)
        let cluster = try ChainHarness(cluster: true)
        defer { cluster.redis.shutdown() }
        #expect(try await self.restore(cluster, path, into: other) == .restored(keys: summary.keys))
        #expect(try await self.observe(cluster, other) == before)
        try await cluster.delete(other)
        try await cluster.expectOnlyTombstone(other, "a restored guild deleted leaves no restore marks, on the cluster")
        try await harness.delete(other)
        try await harness.delete(guild)
        try await harness.expectOnlyTombstone(guild, "a restored guild deleted leaves no restore marks")
    }

    @Test("record lines read back as the records they were written from: quotes, backslashes, control bytes, emoji, bytes that are not UTF-8")
    func linesRoundTrip() throws {
        let odd: [[UInt8]] = [
            Array("plain".utf8), Array(#"a "quoted" \ back\slash"#.utf8), [0x00, 0x01, 0x09, 0x0A, 0x0D, 0x1F, 0x7F], Array("é 😀 {g:1} /x".utf8),
            [0xFF, 0xFE, 0x00], [0xC3], [], Array("\u{2028}".utf8),
        ]
        let records: [GuildArchive.Record] = [
            .hash(suffix: Array(":b:3".utf8), entries: zip(odd, odd.reversed()).map { GuildArchive.Pair($0, $1) }),
            .hash(suffix: Array(":h".utf8), entries: []),
            .set(suffix: Array(":block".utf8), members: odd),
            .string(suffix: Array(":filters".utf8), value: [0x80, 0x22]),
            .string(suffix: Array(":x:\u{1}a b".utf8), value: Array("v\"".utf8)),
        ]
        for (index, record) in records.enumerated() {
            let line = GuildArchive.line(record)
            #expect(try JSONSerialization.jsonObject(with: Data(line)) is [String: Any], "line \(index) is JSON")
            #expect(try GuildArchive.parse(line, number: index) == .record(record), "\(String(decoding: line, as: UTF8.self))")
        }
    }

    @Test("a restore into a guild with learnt messages is refused and changes nothing")
    func refusedIntoData() async throws {
        let harness = try ChainHarness()
        defer { harness.redis.shutdown() }
        let source = ChainHarness.newGuild()
        try await harness.train([ChainHarness.create(source, id: "a", "one two three")])
        let path = self.temporaryFile()
        defer { try? FileManager.default.removeItem(atPath: path) }
        _ = try await self.export(harness, source, to: path)
        let target = ChainHarness.newGuild()
        try await harness.train([ChainHarness.create(target, id: "b", "four five six")])
        let keysBefore = try await harness.keys(matching: "{g:\(target.rawValue)}*").sorted()
        let totalsBefore = try await harness.store.totals(guild: target)
        await #expect(throws: ChainCommands.RestoreRefused.self) { try await self.restore(harness, path, into: target) }
        #expect(try await harness.keys(matching: "{g:\(target.rawValue)}*").sorted().filter { !$0.contains(":reply:") } == keysBefore)
        // The data is as it was (the fencing and progress fields move with any owner's write).
        let data: (String) -> Bool = { !["epoch", "wseq", "applied", "applied_bulk"].contains($0) }
        let totalsAfter = try await harness.store.totals(guild: target)
        #expect(totalsAfter.filter { data($0.key) } == totalsBefore.filter { data($0.key) })
        #expect(try await harness.redis.send(RedisCommand("HGET", .string(ChainKeys(guild: target).meta), "restoring")).isNull)
        try await harness.delete(source)
        try await harness.delete(target)
    }

    @Test("a file cut short, altered, from a newer version or not an export is refused before anything is read into Redis")
    func badFiles() async throws {
        let harness = try ChainHarness()
        defer { harness.redis.shutdown() }
        let guild = ChainHarness.newGuild()
        try await harness.train(corpus(messages: 50, seed: 3).enumerated().map { ChainHarness.create(guild, id: "m\($0.offset)", $0.element) })
        let path = self.temporaryFile()
        defer { try? FileManager.default.removeItem(atPath: path) }
        _ = try await self.export(harness, guild, to: path)
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(lines.count >= 3)
        func refused(_ text: String, _ expected: String, sourceLocation: SourceLocation = #_sourceLocation) {
            let bad = self.temporaryFile()
            defer { try? FileManager.default.removeItem(atPath: bad) }
            FileManager.default.createFile(atPath: bad, contents: Data(text.utf8))
            do {
                _ = try GuildArchive.check(path: bad)
                Issue.record("accepted: \(expected)", sourceLocation: sourceLocation)
            } catch {
                #expect("\(error)".contains(expected), "\(error)", sourceLocation: sourceLocation)
            }
        }
        refused(lines.dropLast().joined(separator: "\n") + "\n", "truncated")
        refused(lines.dropLast(2).joined(separator: "\n"), "truncated")
        var altered = lines
        altered[1] = altered[1].replacingOccurrences(of: "\"t\":", with: "\"x\":\"y\",\"t\":")
        refused(altered.joined(separator: "\n"), "damaged")
        var newer = lines
        newer[0] = newer[0].replacingOccurrences(of: "\"version\":1", with: "\"version\":2")
        refused(newer.joined(separator: "\n"), "newer markov")
        refused("hello\n", "not a JSON object")
        refused("{\"format\":\"something\"}\n", "not a markov guild export")
        refused("", "empty")
        var braces = lines
        braces.insert("{\"k\":\":b:{g:1}\",\"t\":\"string\",\"v\":\"x\"}", at: 1)
        refused(braces.joined(separator: "\n"), "without braces")
        try await harness.delete(guild)
    }
}
}
