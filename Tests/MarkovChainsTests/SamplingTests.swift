import Foundation
import MarkovChains
import MarkovCore
import Redis
import Testing

extension ChainIntegrationTests {
@Suite("Sampling follows the counts")
struct SamplingTests {
    /// Critical value of χ² at α = 0.001 (Wilson–Hilferty approximation).
    static func critical(degreesOfFreedom df: Int) -> Double {
        let k = Double(df)
        let z = 3.090232
        return k * pow(1 - 2 / (9 * k) + z * (2 / (9 * k)).squareRoot(), 3)
    }

    /// The successor drawn after `state` in `draws` one-step generations (8 callers, seeds from the draw's number
    /// and `salt`), counted by token.
    static func drawSuccessors(
        of state: [String], guild: Snowflake, harness: ChainHarness, draws: Int, salt: UInt64, ageRestricted: Bool = false
    ) async throws -> [String: Int] {
        var observed: [String: Int] = [:]
        try await withThrowingTaskGroup(of: [String].self) { group in
            let workers = 8
            for worker in 0..<workers {
                group.addTask {
                    var options = ChainStore.GenerationOptions()
                    options.seedWords = state
                    options.allowCopies = true
                    options.maxWords = 4
                    options.ageRestricted = ageRestricted
                    var tokens: [String] = []
                    for draw in stride(from: worker, to: draws, by: workers) {
                        options.rngSeed = UInt64(draw) &* 0x9E37_79B9_7F4A_7C15 &+ salt
                        let sentence = try await harness.store.generate(guild: guild, options: options).sentence ?? ""
                        tokens.append(String(sentence.split(separator: " ").dropFirst(state.count).first ?? ""))
                    }
                    return tokens
                }
            }
            for try await tokens in group {
                for token in tokens { observed[token, default: 0] += 1 }
            }
        }
        return observed
    }

    /// χ² of observed draws against counts, and its critical value at α = 0.001.
    static func chiSquare(_ observed: [String: Int], expected counts: [String: Int], draws: Int) -> (chi: Double, critical: Double) {
        let total = Double(counts.values.reduce(0, +))
        var chi = 0.0
        for (token, count) in counts {
            let expected = Double(draws) * Double(count) / total
            let difference = Double(observed[token, default: 0]) - expected
            chi += difference * difference / expected
        }
        return (chi, Self.critical(degreesOfFreedom: counts.count - 1))
    }

    @Test(
        "χ² of drawn successors against the counts, for states with 1, 2, 10 and 1200 successors",
        arguments: [1, 2, 10, 1200]
    )
    func chiSquare(successors: Int) async throws {
        let harness = try ChainHarness()
        defer { harness.redis.shutdown() }
        let guild = ChainHarness.newGuild()
        var counts: [String: Int] = [:]
        var events: [ChainEvent] = []
        var id = 0
        for index in 0..<successors {
            let token = "t\(index)"
            counts[token] = 1 + (index * 7) % 13
            for _ in 0..<counts[token]! {
                events.append(ChainHarness.create(guild, id: "c\(id)", "s0 s1 \(token)"))
                id += 1
            }
        }
        try await harness.train(events)
        if successors > 8 {
            // Leave the alias table stale on purpose: increments and decrements since its build must be drawn
            // in proportion too.
            var later: [ChainEvent] = []
            for index in 0..<6 {
                later.append(ChainHarness.create(guild, id: "late\(index)", "s0 s1 t\(index)"))
                counts["t\(index)", default: 0] += 1
            }
            for victim in [0, 3, 5] {
                later.append(ChainEvent(kind: .delete, source: .gateway, guildID: guild, messageID: "c\(victim)"))
                let token = events[victim].content!.split(separator: " ")[2]
                counts[String(token)]! -= 1
            }
            try await harness.train(later)
            let table = try await harness.store.state(["s0", "s1"], guild: guild)
            let sampling = Dictionary(uniqueKeysWithValues: table.sampling)
            #expect(table.kind == "big")
            #expect(Int(sampling["pending_increments"] ?? "0")! > 0, "the test must sample a stale table: \(sampling)")
            #expect(Int(sampling["pending_decrements"] ?? "0")! > 0, "the test must sample a stale table: \(sampling)")
        }
        counts = counts.filter { $0.value > 0 }
        let total = counts.values.reduce(0, +)
        let draws = max(2000, total * 6)
        let observed = try await Self.drawSuccessors(of: ["s0", "s1"], guild: guild, harness: harness, draws: draws, salt: UInt64(successors))
        #expect(Set(observed.keys).isSubset(of: Set(counts.keys)), "only live successors are drawn")
        if counts.count == 1 {
            #expect(observed == counts.mapValues { _ in draws })
        } else {
            let (chi, critical) = Self.chiSquare(observed, expected: counts, draws: draws)
            #expect(chi < critical, "χ² = \(chi) with \(counts.count - 1) degrees of freedom (critical \(critical))")
        }
        try await harness.delete(guild)
    }

    @Test(
        "with a blocklist, drawn successors follow the counts of the allowed ones (χ²), and blocked ones never come",
        arguments: [10, 1200]
    )
    func chiSquareBlocked(successors: Int) async throws {
        let harness = try ChainHarness()
        defer { harness.redis.shutdown() }
        let guild = ChainHarness.newGuild()
        var counts: [String: Int] = [:]
        var events: [ChainEvent] = []
        for index in 0..<successors {
            // Mixed case, so that the blocklist's case-insensitivity is exercised.
            let token = index % 5 == 0 ? "Bad\(index)" : "t\(index)"
            counts[token] = 1 + (index * 7) % 13
            for copy in 0..<counts[token]! { events.append(ChainHarness.create(guild, id: "c\(index)-\(copy)", "s0 s1 \(token)")) }
        }
        try await harness.train(events)
        // Blocked: every "bad…" (a prefix wildcard, which blocks a fifth of the counts), t1 exactly, and anything
        // ending in "7" (a suffix wildcard).
        let entries = try ["BAD*", "t1", "*7"].map { try BlockEntry($0) }
        try await harness.store.setBlocked(entries, blocked: true, guild: guild)
        let allowed = counts.filter { token, _ in !entries.contains { $0.blocks(token) } }
        #expect(allowed.count < counts.count && !allowed.isEmpty)
        let total = allowed.values.reduce(0, +)
        let draws = max(2000, total * 6)
        let observed = try await Self.drawSuccessors(of: ["s0", "s1"], guild: guild, harness: harness, draws: draws, salt: UInt64(successors) &+ 17)
        #expect(Set(observed.keys).isSubset(of: Set(allowed.keys)), "blocked: \(Set(observed.keys).subtracting(allowed.keys).prefix(5))")
        let (chi, critical) = Self.chiSquare(observed, expected: allowed, draws: draws)
        #expect(chi < critical, "χ² = \(chi) with \(allowed.count - 1) degrees of freedom (critical \(critical))")

        // Every successor blocked: no sentence through the state, and the reason says so.
        try await harness.store.setBlocked([try BlockEntry("t*")], blocked: true, guild: guild)
        var options = ChainStore.GenerationOptions()
        options.seedWords = ["s0", "s1"]
        options.allowCopies = true
        options.maxTries = 3
        let none = try await harness.store.generate(guild: guild, options: options)
        #expect(none.sentence == nil)
        #expect(none.notes.contains("all blocked"), "\(none.notes)")
        // Unblocked again: the state speaks.
        try await harness.store.setBlocked(entries + [try BlockEntry("t*")], blocked: false, guild: guild)
        #expect(try await harness.store.generate(guild: guild, options: options).sentence != nil)
        try await harness.delete(guild)
    }

    @Test("no generated sentence holds a blocked token, seeded or not; a blocked seed word is not used")
    func blockedNeverSaid() async throws {
        let harness = try ChainHarness()
        defer { harness.redis.shutdown() }
        let guild = ChainHarness.newGuild()
        let vocabulary = (0..<60).map { "w\($0)" } + ["Darn", "darnit", "heck", "HECKIN", "flipping"]
        let texts = corpus(messages: 3000, seed: 99, vocabulary: vocabulary)
        try await harness.train(texts.enumerated().map { ChainHarness.create(guild, id: "m\($0)", $1) })
        let entries = try ["darn*", "heck", "heckin", "*ping", "w1", "w2*"].map { try BlockEntry($0) }
        try await harness.store.setBlocked(entries, blocked: true, guild: guild)
        var sentences = 0
        for index in 0..<400 {
            var options = ChainStore.GenerationOptions()
            options.rngSeed = UInt64(index)
            options.allowCopies = true
            // Every fourth asks to start from a blocked word.
            if index % 4 == 0 { options.seedWords = ["Darn"] }
            let generation = try await harness.store.generate(guild: guild, options: options)
            guard let sentence = generation.sentence else { continue }
            sentences += 1
            for token in sentence.split(separator: " ") {
                #expect(!entries.contains { $0.blocks(String(token)) }, "\"\(token)\" in \"\(sentence)\"")
            }
            if index % 4 == 0 { #expect(generation.notes.contains("seed word is blocked"), "\(generation.notes)") }
        }
        #expect(sentences > 300)
        try await harness.delete(guild, keepingOptOuts: false)
        #expect(try await harness.store.blocklist(guild: guild) == [], "the blocklist goes with the guild")
    }
}
}
