import DiscordGateway
import DiscordProtocol
import FakeDiscord
import Foundation
import MarkovChains
import MarkovCore
import Redis
import Testing

extension GatewayIntegrationTests {
    /// `markov gateway` and `markov trainer` as real processes against the fake.
    @Suite("Gateway processes") struct GatewayProcessTests {
        static let shardCount = 4
        static let messagesPerShard = 25_000

        /// The `markov` executable built beside the tests.
        static var executable: URL? {
            let directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            for candidate in [directory, directory.deletingLastPathComponent()] {
                let url = candidate.appendingPathComponent("markov")
                if FileManager.default.isExecutableFile(atPath: url.path) { return url }
            }
            return nil
        }

        static func start(_ arguments: [String], fake: FakeDiscord) throws -> Process {
            let process = Process()
            process.executableURL = try #require(Self.executable, "the markov executable must be built beside the tests")
            process.arguments = arguments
            var environment = ProcessInfo.processInfo.environment
            environment["REDIS_URL"] = GatewayHarness.redisURL
            environment["MARKOV_PARTITIONS"] = "\(GatewayHarness.partitions)"
            environment["DISCORD_TOKEN"] = fake.configuration.token
            environment["DISCORD_API_URL"] = fake.apiURL
            environment["LOG_LEVEL"] = GatewayHarness.environment["MARKOV_TEST_LOG"] ?? "error"
            process.environment = environment
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            return process
        }

        static func gateway(shards: String, fake: FakeDiscord) throws -> Process {
            try Self.start(
                ["gateway", "--shards", shards, "--shard-count", "\(Self.shardCount)", "--identify-interval-ms", "300"],
                fake: fake
            )
        }

        /// Three words per message, from small vocabularies, so every state has several successors.
        static func content(_ index: Int) -> String { "a\(index % 7) b\(index % 11) c\(index % 13)" }

        @Test("100k messages through 4 shards in 2 gateway processes, with reconnects, op 9, zombies and a SIGKILL: every message reaches the streams and the trainer's counts equal the flood's")
        func floodWithFaults() async throws {
            let harness = try await GatewayHarness()
            defer { harness.redis.shutdown() }
            // Heartbeats every 1.5 s: under this flood a debug-build gateway can take longer than the 250 ms of the
            // other tests to read its way to an ACK, and would call a healthy connection a zombie.
            let fake = try await GatewayHarness.fake(shards: Self.shardCount) { $0.heartbeatInterval = 1_500 }
            let store = ChainStore(redis: harness.redis, stateSize: 2)
            try await store.prepare()
            try await harness.log.ensureGroup("trainers")
            let guilds = (0..<Self.shardCount).map { Snowflake(String(GatewayHarness.guild(onShard: $0, of: Self.shardCount)))! }
            // Gateway messages train only in channels enabled for learning.
            for guild in guilds { try await store.setListening(true, channel: Snowflake("7")!, guild: guild) }

            var first = try Self.gateway(shards: "0-1", fake: fake)
            let second = try Self.gateway(shards: "2-3", fake: fake)
            let trainer = try Self.start(["trainer", "--batch-size", "256"], fake: fake)
            defer {
                for process in [first, second, trainer] where process.isRunning { kill(process.processIdentifier, SIGKILL) }
            }
            try await fake.waitForShards(0..<Self.shardCount)
            #expect(fake.identifies.count == Self.shardCount)

            let chunk = 2_500
            var sent = 0
            var killed = false
            for round in 0..<(Self.messagesPerShard / chunk) {
                for shard in 0..<Self.shardCount {
                    let guild = GatewayHarness.guild(onShard: shard, of: Self.shardCount)
                    for index in (round * chunk)..<((round + 1) * chunk) {
                        let id = GatewayTests.messageBase + UInt64(shard) * 10_000_000 + UInt64(index)
                        try fake.dispatch(
                            shard: shard, event: "MESSAGE_CREATE",
                            json: FakeDiscord.messageJSON(id: id, channel: 7, guild: guild, author: 9, content: Self.content(index))
                        )
                        sent += 1
                    }
                }
                switch round {
                case 1: fake.reconnect(shard: 0)
                case 2: fake.invalidateSession(shard: 1, resumable: true)
                case 3: fake.dropHeartbeatACKs(shard: 2, true)
                case 4: fake.dropConnection(shard: 3)
                case 5:
                    fake.dropHeartbeatACKs(shard: 2, false)
                    // SIGKILL the process holding shards 0 and 1 mid-flood; its successor resumes their sessions.
                    kill(first.processIdentifier, SIGKILL)
                    first.waitUntilExit()
                    killed = true
                case 7:
                    first = try Self.gateway(shards: "0-1", fake: fake)
                case 8: fake.close(shard: 2, code: 4000)
                default: break
                }
                // Let the gateways keep up a little between rounds.
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(killed)
            #expect(sent == Self.shardCount * Self.messagesPerShard)

            // Every message reaches the streams (a replay after a resume may add duplicates, never gaps). The
            // trainer trims what it consumed, so the streams are measured by entries ever added, and completeness
            // by the trainer's per-guild message counts below (it applies each message id once).
            try await GatewayHarness.eventually("the flood to reach the streams", timeout: .seconds(240)) {
                try await harness.entriesAdded() >= sent
            }
            #expect(fake.identifies.count == Self.shardCount, "every fault was resumed, none re-identified")
            #expect(fake.violations.isEmpty)

            // The trainer applied each message once: its counts equal an independent count of the flood.
            let deadline = ContinuousClock.now + .seconds(300)
            while try await harness.log.backlog(group: "trainers", partitions: 0..<GatewayHarness.partitions) > 0,
                  ContinuousClock.now < deadline
            {
                try await Task.sleep(for: .milliseconds(200))
            }
            var expected: [String: Int] = [:]
            for index in 0..<Self.messagesPerShard where index % 7 == 3 && index % 11 == 5 {
                expected["c\(index % 13)", default: 0] += 1
            }
            for guild in guilds {
                let totals = try await store.totals(guild: guild)
                #expect(totals["messages"] == Self.messagesPerShard)
                let table = try await store.state(["a3", "b5"], guild: guild)
                var counts: [String: Int] = [:]
                for (token, count) in table.successors { counts[token] = count }
                #expect(counts == expected)
            }

            for process in [first, second, trainer] { kill(process.processIdentifier, SIGTERM) }
            for process in [first, second, trainer] {
                process.waitUntilExit()
                #expect(process.terminationReason == .exit && process.terminationStatus == 0, "SIGTERM ends each role cleanly")
            }
            // The gateways closed resumably: their sessions stay for a successor.
            for shard in 0..<Self.shardCount { #expect(try await harness.store.session(shard: shard) != nil) }
            #expect(fake.clientCloseCodes.allSatisfy { $0 != 1000 && $0 != 1001 })
            await fake.stop()
        }
    }
}
