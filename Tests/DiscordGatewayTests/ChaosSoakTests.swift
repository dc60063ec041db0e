import DiscordREST
import FakeDiscord
import Foundation
import MarkovChains
import MarkovCore
import Redis
import Testing

extension GatewayIntegrationTests {
    /// The short chaos soak: every role as real processes (two gateways over four shards, two trainers, two
    /// responders), Redis with an append-only file, a seeded flood of messages, edits, deletes and triggers across
    /// eight guilds, while processes are SIGKILLed and restarted, shards are forced to reconnect, and Redis is
    /// restarted once. `bench/soak` runs the long version.
    @Suite("Chaos soak") struct ChaosSoakTests {
        /// SplitMix64: the soak's seeded randomness.
        struct Random {
            var state: UInt64
            mutating func next() -> UInt64 {
                self.state &+= 0x9E37_79B9_7F4A_7C15
                var z = self.state
                z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
                z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
                return z ^ (z >> 31)
            }
            mutating func below(_ bound: Int) -> Int { Int(self.next() % UInt64(bound)) }
        }

        /// A redis-server with an append-only file, restartable on the same port and data.
        final class AOFRedis: @unchecked Sendable {
            let port: Int
            let directory: URL
            var process: Process?

            init() throws {
                self.port = try GatewayProcessTests.freePort()
                self.directory = FileManager.default.temporaryDirectory.appendingPathComponent("markov-soak-\(UUID().uuidString)")
                try FileManager.default.createDirectory(at: self.directory, withIntermediateDirectories: true)
            }

            var url: String { "redis://127.0.0.1:\(self.port)" }

            func start() async throws {
                let process = Process()
                process.executableURL = URL(fileURLWithPath: GatewayHarness.environment["MARKOV_TEST_REDIS_SERVER"] ?? "/usr/bin/redis-server")
                process.arguments = ["--bind", "127.0.0.1", "--port", "\(self.port)", "--dir", self.directory.path,
                                     "--appendonly", "yes", "--save", "", "--logfile", "redis.log"]
                try process.run()
                self.process = process
                let client = RedisClient(configuration: try RedisConfiguration(url: self.url), logger: GatewayHarness.logger)
                defer { client.shutdown() }
                try await GatewayHarness.eventually("redis to start", timeout: .seconds(30)) {
                    try await client.send("PING").string == "PONG"
                }
            }

            /// `SHUTDOWN`: Redis writes its append-only file and exits. (Not SIGTERM: a child started by Foundation's
            /// `Process` inherits a blocked signal mask, and redis-server never unblocks it.)
            func stop() async {
                guard let process = self.process, process.isRunning else { return }
                let client = RedisClient(configuration: try! RedisConfiguration(url: self.url), logger: GatewayHarness.logger)
                _ = try? await client.send("SHUTDOWN")
                client.shutdown()
                process.waitUntilExit()
            }

            /// For the end of the test, whatever happened: no server is left behind.
            func kill9() {
                guard let process = self.process, process.isRunning else { return }
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
            }

            deinit {
                self.kill9()
                try? FileManager.default.removeItem(at: self.directory)
            }
        }

        /// One role process of the soak, restartable.
        final class Role: @unchecked Sendable {
            let name: String
            let arguments: [String]
            let port: Int
            let environment: [String: String]
            let fake: FakeDiscord
            var process: Process?

            init(name: String, arguments: [String], environment: [String: String], fake: FakeDiscord) throws {
                self.name = name
                self.arguments = arguments
                self.port = try GatewayProcessTests.freePort()
                self.environment = environment
                self.fake = fake
            }

            func start() throws {
                self.process = try GatewayProcessTests.start(
                    self.arguments, fake: self.fake, environment: self.environment.merging(["MARKOV_HTTP_PORT": "\(self.port)"]) { $1 }
                )
            }

            func kill9() {
                guard let process = self.process, process.isRunning else { return }
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
            }

            func terminate() -> Bool {
                guard let process = self.process, process.isRunning else { return false }
                kill(process.processIdentifier, SIGTERM)
                process.waitUntilExit()
                return process.terminationReason == .exit && process.terminationStatus == 0
            }
        }

        static let shardCount = 4

        @Test("chaos soak (short): kills, reconnects and a Redis restart lose and double nothing; every trigger is answered once")
        func soak() async throws {
            var random = Random(state: 42)
            let redis = try AOFRedis()
            try await redis.start()
            let fake = try await GatewayHarness.fake(shards: Self.shardCount) { configuration in
                configuration.heartbeatInterval = 1_500
                configuration.rest.messageBucketLimit = 1_000
                configuration.rest.globalLimit = 100_000
            }
            let client = RedisClient(configuration: {
                var configuration = try! RedisConfiguration(url: redis.url)
                configuration.commandTimeout = .seconds(30)
                return configuration
            }(), logger: GatewayHarness.logger)
            defer { client.shutdown() }
            let store = ChainStore(redis: client, stateSize: 2)
            try await store.prepare()
            let guilds = (0..<8).map { GatewayHarness.guild(onShard: $0 % Self.shardCount, of: Self.shardCount, salt: UInt64(1 + $0 / Self.shardCount)) }
            for guild in guilds { try await store.setListening(true, channel: Snowflake("7")!, guild: Snowflake(String(guild))!) }

            let environment = ["REDIS_URL": redis.url]
            var roles: [Role] = []
            // Two gateways sharing the four shards through leases: a SIGKILLed one's shards are resumed by the other
            // after the lease TTL, and taken back in part when it returns.
            for name in ["gateway-a", "gateway-b"] {
                roles.append(try Role(name: name, arguments: ["gateway", "--shard-count", "4", "--identify-interval-ms", "300", "--lease-ttl", "3"],
                                      environment: environment, fake: fake))
            }
            for name in ["trainer-a", "trainer-b"] {
                roles.append(try Role(name: name, arguments: ["trainer", "--claim-after", "2"], environment: environment, fake: fake))
            }
            for name in ["responder-a", "responder-b"] {
                roles.append(try Role(name: name, arguments: ["responder", "--claim-after", "2"], environment: environment, fake: fake))
            }
            defer { for role in roles { role.kill9() } }
            for role in roles { try role.start() }
            try await fake.waitForShards(0..<Self.shardCount)
            print("chaos soak: every role started, shards connected")

            // The flood and an independent model of what each guild must end with.
            var content: [UInt64: (guild: UInt64, text: String)] = [:]
            var deleted = Set<UInt64>()
            var triggers: [String] = []
            var next: UInt64 = 0
            // Snowflakes of the moment they are sent (a long soak outlasts the responders' maximum age of a
            // trigger), kept unique by the counter in the low 22 bits.
            func nextID() -> UInt64 {
                defer { next += 1 }
                return ((UInt64(Date().timeIntervalSince1970 * 1000) - 1_420_070_400_000) << 22) | (next & 0x3F_FFFF)
            }
            var actions: [String] = []
            // `bench/soak` asks for more rounds; the test suite runs ten.
            let rounds = GatewayHarness.environment["MARKOV_SOAK_ROUNDS"].flatMap { Int($0) } ?? 10
            for round in 0..<rounds {
                for _ in 0..<1_000 {
                    let guild = guilds[random.below(guilds.count)]
                    let id = nextID()
                    let text = "a\(random.below(7)) b\(random.below(11)) c\(random.below(13))"
                    content[id] = (guild, text)
                    try fake.dispatch(shard: Int((guild >> 22) % 4), event: "MESSAGE_CREATE",
                                      json: FakeDiscord.messageJSON(id: id, channel: 7, guild: guild, author: 9, content: text))
                }
                let known = Array(content.keys.filter { !deleted.contains($0) })
                for _ in 0..<100 {
                    let id = known[random.below(known.count)]
                    guard let (guild, _) = content[id] else { continue }
                    let text = "e\(random.below(5)) f\(random.below(3))"
                    content[id] = (guild, text)
                    try fake.dispatch(shard: Int((guild >> 22) % 4), event: "MESSAGE_UPDATE",
                                      json: #"{"id":"\#(id)","channel_id":"7","guild_id":"\#(guild)","content":"\#(text)"}"#)
                }
                for _ in 0..<60 {
                    let id = known[random.below(known.count)]
                    guard let (guild, _) = content[id], deleted.insert(id).inserted else { continue }
                    try fake.dispatch(shard: Int((guild >> 22) % 4), event: "MESSAGE_DELETE",
                                      json: #"{"id":"\#(id)","channel_id":"7","guild_id":"\#(guild)"}"#)
                }
                for _ in 0..<10 {
                    let guild = guilds[random.below(guilds.count)]
                    let id = nextID()
                    triggers.append(String(id))
                    try fake.dispatch(shard: Int((guild >> 22) % 4), event: "MESSAGE_CREATE",
                                      json: FakeDiscord.messageJSON(id: id, channel: 8, guild: guild, author: 9, content: "!mark"))
                }
                print("chaos soak: round \(round) sent")
                // One piece of chaos per round, seeded.
                switch round % 10 {
                case 4:
                    actions.append("restart Redis")
                    await redis.stop()
                    try await Task.sleep(for: .milliseconds(500))
                    try await redis.start()
                case 1, 3, 6, 8:
                    let role = roles[random.below(roles.count)]
                    actions.append("SIGKILL \(role.name), restart it")
                    role.kill9()
                    try await Task.sleep(for: .milliseconds(300))
                    try role.start()
                default:
                    let shard = random.below(Self.shardCount)
                    if random.below(2) == 0 {
                        actions.append("op 7 on shard \(shard)")
                        fake.reconnect(shard: shard)
                    } else {
                        actions.append("TCP drop of shard \(shard)")
                        fake.dropConnection(shard: shard)
                    }
                }
                try await Task.sleep(for: .milliseconds(300))
            }
            print("chaos soak: \(next) messages and triggers, \(content.count - deleted.count) left after edits and deletes; chaos: \(actions.joined(separator: "; "))")

            print("chaos soak: waiting for replies (\(fake.rest.messageCount) of \(triggers.count) so far)")
            // Every trigger answered exactly once.
            try await GatewayHarness.eventually("every trigger to be answered", timeout: .seconds(180)) {
                fake.rest.messageCount >= triggers.count
            }
            try await Task.sleep(for: .seconds(3))  // time for a duplicate to show up, if there were one
            var replies: [String: Int] = [:]
            for message in fake.rest.messages { replies[message.replyTo ?? "", default: 0] += 1 }
            #expect(replies.values.allSatisfy { $0 == 1 }, "a trigger was answered twice")
            #expect(Set(replies.keys) == Set(triggers), "unanswered: \(Set(triggers).subtracting(replies.keys).count)")

            // Every guild's counts equal the model's.
            let log = EventLog(redis: client, partitions: GatewayHarness.partitions)
            try await GatewayHarness.eventually("the trainers to catch up", timeout: .seconds(180)) {
                try await log.backlog(group: "trainers", partitions: 0..<GatewayHarness.partitions) == 0
            }
            for partition in 0..<GatewayHarness.partitions where try await log.backlog(group: "trainers", partitions: [partition]) > 0 {
                // What is left, for the record: the group's lag and pending counts, and who holds the pending entries.
                let groups = try await client.send(RedisCommand("XINFO", "GROUPS", .string(log.keys.stream(partition))))
                let pending = try await client.send(RedisCommand("XPENDING", .string(log.keys.stream(partition)), "trainers"))
                print("chaos soak: partition \(partition) not drained: groups \(groups), pending \(pending)")
            }
            for guild in guilds {
                let live = content.filter { $0.value.guild == guild && !deleted.contains($0.key) }
                let id = Snowflake(String(guild))!
                #expect(try await store.totals(guild: id)["messages"] == live.count, "guild \(guild)")
                var expected: [String: Int] = [:]
                for (_, value) in live {
                    let tokens = value.text.split(separator: " ")
                    if tokens.count == 3, tokens[0] == "a3", tokens[1] == "b5" { expected[String(tokens[2]), default: 0] += 1 }
                }
                var counts: [String: Int] = [:]
                for (token, count) in try await store.state(["a3", "b5"], guild: id).successors { counts[token] = count }
                #expect(counts == expected, "guild \(guild)")
            }
            #expect(fake.violations.isEmpty)

            // Every process is back to ready, and ends cleanly.
            for role in roles {
                try await GatewayHarness.eventually("\(role.name) to be ready", timeout: .seconds(30)) {
                    await GatewayProcessTests.get(role.port, "/ready")?.0 == 200
                }
            }
            for role in roles { #expect(role.terminate(), "\(role.name) ends cleanly on SIGTERM") }
            print("chaos soak: checked every guild's messages and a state's counts against the model, \(triggers.count) triggers answered once each, every role ready again")
            await fake.stop()
        }
    }
}
