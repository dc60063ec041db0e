import Foundation
import MarkovChains
import MarkovCore
import Redis
import Testing

extension ChainIntegrationTests {
@Suite("Trainer processes")
struct TrainerProcessTests {
    /// The `markov` executable built beside the tests.
    static var executable: URL? {
        let directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for candidate in [directory, directory.deletingLastPathComponent()] {
            let url = candidate.appendingPathComponent("markov")
            if FileManager.default.isExecutableFile(atPath: url.path) { return url }
        }
        return nil
    }

    static func startTrainer(log: FileHandle? = nil) throws -> Process {
        let process = Process()
        process.executableURL = try #require(Self.executable, "the markov executable must be built beside the tests")
        process.arguments = ["trainer", "--batch-size", "16", "--claim-after", "1", "--lease-ttl", "2"]
        var environment = ProcessInfo.processInfo.environment
        environment["REDIS_URL"] = ChainHarness.environment["MARKOV_TEST_REDIS_URL"] ?? "redis://127.0.0.1:16379"
        environment["MARKOV_PARTITIONS"] = "4"
        environment["LOG_LEVEL"] = log == nil ? "error" : "info"
        environment["MARKOV_HTTP_PORT"] = "0"  // any free port: several processes run side by side
        process.environment = environment
        process.standardOutput = FileHandle.nullDevice
        if let log { process.standardError = log }
        try process.run()
        return process
    }

    @Test("a trainer paused past its lease (SIGSTOP) is taken over, gets every write refused when it wakes, and counts stay exact")
    func pausedOwner() async throws {
        let harness = try ChainHarness(partitions: 4)
        defer { harness.redis.shutdown() }
        _ = try await harness.drain()
        let guild = ChainHarness.newGuild()
        let texts = corpus(messages: 6_000, seed: 98)
        var model = ChainModel(stateSize: 2)
        for text in texts { model.add(text) }
        try await harness.store.prepare()
        try await harness.log.ensureGroup("trainers", lanes: EventLog.Lane.allCases)
        try await harness.log.append(texts.enumerated().map { ChainHarness.create(guild, id: "s\($0)", $1) })
        let logFile = FileManager.default.temporaryDirectory.appendingPathComponent("paused-\(UUID().uuidString).log")
        FileManager.default.createFile(atPath: logFile.path, contents: nil)
        let log = try FileHandle(forWritingTo: logFile)
        let paused = try Self.startTrainer(log: log)
        defer { kill(paused.processIdentifier, SIGKILL) }
        // Each wait has a deadline of its own: under the full suite on two cores one phase can take most of a minute.
        var deadline = ContinuousClock.now + .seconds(60)
        while try await harness.store.totals(guild: guild)["messages", default: 0] == 0 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        kill(paused.processIdentifier, SIGSTOP)
        let applied = try await harness.store.totals(guild: guild)["messages", default: 0]
        #expect(applied > 0 && applied < texts.count, "paused mid-work (\(applied) of \(texts.count) applied)")
        let epochBefore = try await harness.redis.send(RedisCommand("HGET", .string(ChainKeys(guild: guild).meta), "epoch")).string
        let successor = try Self.startTrainer()
        deadline = ContinuousClock.now + .seconds(120)
        while try await harness.backlog() > 0 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        #expect(try await harness.store.totals(guild: guild)["messages"] == texts.count, "the successor applied the rest")
        let epochAfter = try await harness.redis.send(RedisCommand("HGET", .string(ChainKeys(guild: guild).meta), "epoch")).string
        #expect(epochAfter != epochBefore, "the successor fenced the guild with a newer epoch")
        // The paused owner wakes up with its batch in hand; more messages arrive meanwhile.
        kill(paused.processIdentifier, SIGCONT)
        let more = corpus(messages: 500, seed: 97)
        for text in more { model.add(text) }
        try await harness.log.append(more.enumerated().map { ChainHarness.create(guild, id: "t\($0)", $1) })
        deadline = ContinuousClock.now + .seconds(120)
        while try await harness.backlog() > 0 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        try await Task.sleep(for: .seconds(3))
        while try await harness.backlog() > 0 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        for process in [paused, successor] {
            kill(process.processIdentifier, SIGTERM)
            process.waitUntilExit()
        }
        try log.close()
        let output = (try? String(contentsOf: logFile, encoding: .utf8)) ?? ""
        try? FileManager.default.removeItem(at: logFile)
        #expect(output.contains("lost a partition's lease") || output.contains("write refused"), "the woken trainer noticed:\n\(output.suffix(2000))")
        #expect(try await harness.store.totals(guild: guild)["messages"] == texts.count + more.count)
        #expect(try await harness.counts(of: model, guild: guild) == model.counts)
        try await harness.delete(guild)
    }

    @Test("trainer processes killed with SIGKILL mid-batch, again and again, lose and double nothing; SIGTERM exits cleanly")
    func killAndRestart() async throws {
        let harness = try ChainHarness(partitions: 4)
        defer { harness.redis.shutdown() }
        _ = try await harness.drain() // nothing of earlier tests is left in the streams
        let guild = ChainHarness.newGuild()
        let texts = corpus(messages: 6_000, seed: 99)
        var model = ChainModel(stateSize: 2)
        for text in texts { model.add(text) }
        try await harness.store.prepare()
        try await harness.log.ensureGroup("trainers")
        try await harness.log.append(texts.enumerated().map { ChainHarness.create(guild, id: "k\($0)", $1) })

        var kills = 0
        for round in 0..<4 {
            let trainer = try Self.startTrainer()
            try await Task.sleep(for: .milliseconds(250 + 100 * round))
            kill(trainer.processIdentifier, SIGKILL)
            trainer.waitUntilExit()
            kills += 1
        }
        let progress = try await harness.store.totals(guild: guild)["messages", default: 0]
        #expect(progress > 0, "the killed trainers applied some messages before dying")
        #expect(progress < texts.count, "the kills must land before the work is done (raise the corpus size if not)")

        let survivor = try Self.startTrainer()
        let deadline = ContinuousClock.now + .seconds(120)
        while try await harness.backlog() > 0 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
        }
        kill(survivor.processIdentifier, SIGTERM)
        survivor.waitUntilExit()
        #expect(survivor.terminationReason == .exit && survivor.terminationStatus == 0, "SIGTERM ends a trainer cleanly")
        #expect(kills == 4)
        #expect(try await harness.store.totals(guild: guild)["messages"] == texts.count)
        #expect(try await harness.counts(of: model, guild: guild) == model.counts)
        try await harness.delete(guild)
    }
}
}
