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

    static func startTrainer() throws -> Process {
        let process = Process()
        process.executableURL = try #require(Self.executable, "the markov executable must be built beside the tests")
        process.arguments = ["trainer", "--batch-size", "16", "--claim-after", "1"]
        var environment = ProcessInfo.processInfo.environment
        environment["REDIS_URL"] = ChainHarness.environment["MARKOV_TEST_REDIS_URL"] ?? "redis://127.0.0.1:16379"
        environment["MARKOV_PARTITIONS"] = "4"
        environment["LOG_LEVEL"] = "error"
        environment["MARKOV_HTTP_PORT"] = "0"  // any free port: several processes run side by side
        process.environment = environment
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        return process
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
