import DiscordGateway
import DiscordProtocol
import DiscordREST
import FakeDiscord
import Foundation
import MarkovChains
import MarkovCore
import Redis
import ServiceLifecycle
import Testing

extension GatewayIntegrationTests {
    /// The gateway against the fake over real sockets, with a real Redis.
    @Suite("Gateway against the fake") struct GatewayTests {
        static let messageBase: UInt64 = 1_200_000_000_000_000_000

        /// Sends `count` MESSAGE_CREATEs on a shard; returns their ids.
        func flood(_ fake: FakeDiscord, shard: Int, shardCount: Int, from start: Int, count: Int, content: String = "hello there world")
            throws -> [String]
        {
            let guild = GatewayHarness.guild(onShard: shard, of: shardCount)
            var ids: [String] = []
            for index in start..<(start + count) {
                let id = Self.messageBase + UInt64(shard) * 10_000_000 + UInt64(index)
                try fake.dispatch(
                    shard: shard, event: "MESSAGE_CREATE",
                    json: FakeDiscord.messageJSON(id: id, channel: 7, guild: guild, author: 9, content: content)
                )
                ids.append(String(id))
            }
            return ids
        }

        @Test("identify, READY, dispatches onto the streams, the session checkpointed in Redis")
        func identifyAndForward() async throws {
            let harness = try await GatewayHarness()
            let fake = try await GatewayHarness.fake(shards: 2)
            let gateway = harness.gateway(fake)
            try await fake.waitForShards(0..<2)
            var expected = Set<String>()
            for shard in 0..<2 { expected.formUnion(try self.flood(fake, shard: shard, shardCount: 2, from: 0, count: 200)) }
            // Events nobody needs are dropped at the gateway, but their sequence numbers still count.
            try fake.dispatch(shard: 0, event: "TYPING_START", json: #"{"channel_id":"7"}"#)
            let entries = try await harness.waitForEntries(400)
            #expect(Set(entries.compactMap(\.messageID)) == expected)
            #expect(entries.allSatisfy { $0.kind == .create && $0.source == .gateway && $0.origin != nil })
            // Each guild's events sit in that guild's partition.
            for entry in entries {
                let reply = try await harness.redis.send(
                    RedisCommand("XLEN", .string(harness.log.keys.stream(for: entry.guildID)))
                )
                #expect((reply.int ?? 0) >= 200)
            }
            try await GatewayHarness.eventually("checkpoints") {
                let zero = try await harness.store.session(shard: 0)
                let one = try await harness.store.session(shard: 1)
                // READY is 1, then 200 messages (and the typing event on shard 0).
                return zero?.sequence == 202 && one?.sequence == 201
            }
            let session = try #require(try await harness.store.session(shard: 0))
            #expect(session.resumeURL.hasSuffix("/resume"))
            #expect(session.shardCount == 2)
            let bot = try await harness.redis.send(RedisCommand("HGET", .string(GatewayStore.botUserKey), "id"))
            #expect(bot.string == fake.configuration.botUserID)
            #expect(fake.identifies.count == 2)
            #expect(fake.violations.isEmpty)
            #expect(fake.httpRequests.contains("GET /api/v10/gateway/bot"))
            let remaining = try await harness.redis.send(RedisCommand("HGET", .string(GatewayStore.limitsKey), "remaining"))
            #expect(Int(remaining.string ?? "") == fake.configuration.identifiesRemaining - 2)
            #expect(await gateway.stop() == nil)
            // Shutdown closes with a resumable code: the session stays.
            #expect(fake.clientCloseCodes.allSatisfy { $0 != 1000 && $0 != 1001 })
            #expect(try await harness.store.session(shard: 0) != nil)
            await fake.stop()
        }

        @Test("op 7, op 9, drops, resumable close codes, zombies and bad frames: resumed, nothing lost")
        func faultsResume() async throws {
            let harness = try await GatewayHarness()
            let fake = try await GatewayHarness.fake()
            let gateway = harness.gateway(fake)
            try await fake.waitForShards([0])
            var expected = Set<String>()
            var next = 0
            func burst() throws {
                expected.formUnion(try self.flood(fake, shard: 0, shardCount: 1, from: next, count: 50))
                next += 50
            }
            let faults: [(String, () -> Void)] = [
                ("op 7", { fake.reconnect(shard: 0) }),
                ("op 9 resumable", { fake.invalidateSession(shard: 0, resumable: true) }),
                ("TCP drop", { fake.dropConnection(shard: 0) }),
                ("close 4000", { fake.close(shard: 0, code: 4000) }),
                ("close 4008", { fake.close(shard: 0, code: 4008) }),
                ("malformed JSON", { fake.sendRaw(shard: 0, #"{"op":0,"s":"#) }),
                ("unknown opcode", { fake.sendRaw(shard: 0, #"{"op":99,"d":null}"#) }),
                ("zombie", { fake.dropHeartbeatACKs(shard: 0, true) }),
            ]
            for (name, fault) in faults {
                let resumesBefore = fake.resumeCount
                try burst()
                fault()
                // Dispatches while the connection is going away are replayed on resume.
                try burst()
                if name == "zombie" {
                    try await GatewayHarness.eventually("the zombie to be detected") { fake.resumeCount > resumesBefore }
                    fake.dropHeartbeatACKs(shard: 0, false)
                } else if !name.contains("JSON"), !name.contains("opcode") {
                    try await GatewayHarness.eventually("a resume after \(name)") { fake.resumeCount > resumesBefore }
                }
                try await fake.waitForShards([0])
            }
            try burst()
            let entries = try await harness.waitForEntries(expected.count)
            let ids = entries.compactMap(\.messageID)
            #expect(Set(ids) == expected, "lost: \(expected.subtracting(ids).count)")
            // One identify in all: every fault above is resumable.
            #expect(fake.identifies.count == 1)
            #expect(gateway.service.statistics.skippedFrames >= 1)
            #expect(gateway.service.statistics.zombies >= 1)
            #expect(await gateway.stop() == nil)
            await fake.stop()
        }

        @Test("op 9 not resumable and session-ending close codes identify afresh at the discovery URL")
        func reidentify() async throws {
            let harness = try await GatewayHarness()
            let fake = try await GatewayHarness.fake()
            let gateway = harness.gateway(fake)
            try await fake.waitForShards([0])
            fake.invalidateSession(shard: 0, resumable: false)
            try await GatewayHarness.eventually("a second identify") { fake.identifies.count == 2 }
            try await fake.waitForShards([0])
            fake.close(shard: 0, code: 4009)
            try await GatewayHarness.eventually("a third identify") { fake.identifies.count == 3 }
            try await fake.waitForShards([0])
            let ids = try self.flood(fake, shard: 0, shardCount: 1, from: 0, count: 20)
            let entries = try await harness.waitForEntries(20)
            #expect(Set(entries.compactMap(\.messageID)) == Set(ids))
            #expect(fake.violations.isEmpty, "identifies kept their spacing")
            #expect(await gateway.stop() == nil)
            await fake.stop()
        }

        @Test("a restarted gateway resumes the stored session instead of identifying; nothing sent meanwhile is lost")
        func restartResumes() async throws {
            let harness = try await GatewayHarness()
            let fake = try await GatewayHarness.fake(shards: 2)
            var expected = Set<String>()
            let first = harness.gateway(fake)
            try await fake.waitForShards(0..<2)
            expected.formUnion(try self.flood(fake, shard: 0, shardCount: 2, from: 0, count: 100))
            _ = try await harness.waitForEntries(100)
            #expect(await first.stop() == nil)
            // While no gateway runs, Discord keeps the session's dispatches for a resume.
            expected.formUnion(try self.flood(fake, shard: 0, shardCount: 2, from: 100, count: 100))
            expected.formUnion(try self.flood(fake, shard: 1, shardCount: 2, from: 0, count: 100))
            let resumesBefore = fake.resumeCount
            let second = harness.gateway(fake)
            try await GatewayHarness.eventually("both shards to resume") { fake.resumeCount == resumesBefore + 2 }
            let entries = try await harness.waitForEntries(expected.count)
            #expect(Set(entries.compactMap(\.messageID)) == expected)
            #expect(fake.identifies.count == 2, "no new identify")
            #expect(await second.stop() == nil)
            await fake.stop()
        }

        @Test("while Redis is away the gateway keeps at most its backlog in memory and stops reading; when it returns, nothing is lost")
        func boundedBacklog() async throws {
            let redis = try ChaosSoakTests.AOFRedis()
            try await redis.start()
            defer { redis.kill9() }
            let fake = try await GatewayHarness.fake()
            var configuration = GatewayService.Configuration(token: fake.configuration.token, owner: "test-backlog")
            configuration.rest = DiscordRESTClient(apiURL: fake.apiURL, token: fake.configuration.token, logger: GatewayHarness.logger)
            configuration.identifyInterval = .milliseconds(300)
            configuration.reconnectBackoffCap = .milliseconds(500)
            configuration.eventBacklog = 20
            let client = RedisClient(configuration: {
                var redisConfiguration = try! RedisConfiguration(url: redis.url)
                redisConfiguration.commandTimeout = .seconds(1)
                return redisConfiguration
            }(), logger: GatewayHarness.logger)
            defer { client.shutdown() }
            let log = EventLog(redis: client, partitions: GatewayHarness.partitions)
            let service = GatewayService(configuration: configuration, log: log, logger: GatewayHarness.logger)
            let group = ServiceGroup(services: [service], logger: GatewayHarness.logger)
            let task = Task { try await group.run() }
            try await fake.waitForShards(0..<1)
            let guild = GatewayHarness.guild(onShard: 0, of: 1)
            func send(_ id: UInt64) throws {
                try fake.dispatch(shard: 0, event: "MESSAGE_CREATE",
                                  json: FakeDiscord.messageJSON(id: id, channel: 7, guild: guild, author: 9, content: "backlog \(id)"))
            }
            for id in UInt64(1)...5 { try send(id) }
            try await GatewayHarness.eventually("the first events in the log") { service.statistics.appended == 5 }

            await redis.stop()
            for id in UInt64(6)...205 { try send(id) }
            try await GatewayHarness.eventually("the backlog to fill") { service.statistics.backlog == 20 }
            try await Task.sleep(for: .seconds(1))
            let held = service.statistics
            #expect(held.backlog <= 20, "no more than the backlog waits: \(held)")
            #expect(held.dispatches < 100, "the shard stopped reading instead of queueing everything: \(held)")

            try await redis.start()
            let reader = RedisClient(configuration: try RedisConfiguration(url: redis.url), logger: GatewayHarness.logger)
            defer { reader.shutdown() }
            let keys = EventLog(redis: reader, partitions: GatewayHarness.partitions).keys
            func loggedIDs() async throws -> Set<String> {
                var ids = Set<String>()
                for partition in 0..<GatewayHarness.partitions {
                    let reply = try await reader.send(RedisCommand("XRANGE", .string(keys.stream(partition)), "-", "+"))
                    for entry in EventLog.entries(reply) {
                        if let id = try ChainEvent(fields: entry.fields).messageID { ids.insert(id) }
                    }
                }
                return ids
            }
            try await GatewayHarness.eventually("every message in the log", timeout: .seconds(60)) {
                try await loggedIDs().count == 205
            }
            #expect(try await loggedIDs() == Set((1...205).map(String.init)))
            await group.triggerGracefulShutdown()
            try await task.value
            await fake.stop()
        }

        @Test("the event log's backlog trusts the last delivered entry over a lag Redis got wrong or lost")
        func backlogDespiteRedisLag() async throws {
            let harness = try await GatewayHarness()
            let stream = harness.log.keys.stream(0)
            try await harness.log.ensureGroup("g")
            var ids: [String] = []
            for index in 0..<5 { ids.append(try await harness.redis.send(RedisCommand("XADD", .string(stream), "*", "n", .integer(index))).string ?? "") }
            _ = try await harness.redis.send(RedisCommand("XREADGROUP", "GROUP", "g", "c", "STREAMS", .string(stream), ">"))
            try await harness.redis.send(RedisCommand("XACK", [.string(stream), "g"] + ids.map { .string($0) }))
            #expect(try await harness.log.backlog(group: "g", partitions: 0..<GatewayHarness.partitions) == 0)
            // What a restart from an append-only file can leave: a wrong count of entries read.
            try await harness.redis.send(RedisCommand("XGROUP", "SETID", .string(stream), "g", "$", "ENTRIESREAD", 1))
            let groups = try await harness.redis.send(RedisCommand("XINFO", "GROUPS", .string(stream))).array ?? []
            let flat = groups.first?.array ?? []
            let lag = flat.firstIndex { $0.string == "lag" }.flatMap { flat[$0 + 1].int }
            #expect(lag == 4, "Redis itself reports the wrong lag")
            #expect(try await harness.log.backlog(group: "g", partitions: 0..<GatewayHarness.partitions) == 0)
            // And one it does not know at all, with entries still to read: not zero.
            try await harness.redis.send(RedisCommand("XGROUP", "SETID", .string(stream), "g", .string(ids[1])))
            #expect(try await harness.log.backlog(group: "g", partitions: 0..<GatewayHarness.partitions) > 0)
            _ = try await harness.redis.send(RedisCommand("XREADGROUP", "GROUP", "g", "c", "STREAMS", .string(stream), ">"))
            try await harness.redis.send(RedisCommand("XACK", [.string(stream), "g"] + ids.map { .string($0) }))
            #expect(try await harness.log.backlog(group: "g", partitions: 0..<GatewayHarness.partitions) == 0)
        }

        @Test("messages in a thread the connection announced carry the thread's channel")
        func threadParentOnMessages() async throws {
            let harness = try await GatewayHarness()
            let fake = try await GatewayHarness.fake()
            let gateway = harness.gateway(fake)
            try await fake.waitForShards(0..<1)
            let guild = GatewayHarness.guild(onShard: 0, of: 1)
            try fake.dispatch(shard: 0, event: "THREAD_CREATE", json: #"{"id":"70","type":11,"guild_id":"\#(guild)","parent_id":"7"}"#)
            try fake.dispatch(shard: 0, event: "MESSAGE_CREATE",
                              json: FakeDiscord.messageJSON(id: 101, channel: 70, guild: guild, author: 9, content: "in the thread"))
            try fake.dispatch(shard: 0, event: "MESSAGE_CREATE",
                              json: FakeDiscord.messageJSON(id: 102, channel: 71, guild: guild, author: 9, content: "elsewhere"))
            let events = try await harness.waitForEntries(3)
            let byID = Dictionary(uniqueKeysWithValues: events.compactMap { event in event.messageID.map { ($0, event) } })
            #expect(byID["101"]?.threadParent == Snowflake("7"))
            #expect(byID["102"] != nil && byID["102"]?.threadParent == nil)
            #expect(await gateway.stop() == nil)
            await fake.stop()
        }

        @Test("a stored session for another shard count is discarded")
        func reshardDiscardsSessions() async throws {
            let harness = try await GatewayHarness()
            let fake = try await GatewayHarness.fake(shards: 1)
            let first = harness.gateway(fake, shardCount: 1)
            try await fake.waitForShards([0])
            #expect(await first.stop() == nil)
            let second = harness.gateway(fake, shardCount: 2)
            try await fake.waitForShards(0..<2)
            #expect(fake.identifies.count == 3)
            #expect(fake.resumeCount == 0)
            try await GatewayHarness.eventually("the new session's checkpoint") {
                try await harness.store.session(shard: 0)?.shardCount == 2
            }
            #expect(await second.stop() == nil)
            await fake.stop()
        }

        @Test("zlib-stream: compressed payloads, large and small, arrive intact")
        func zlibStream() async throws {
            let harness = try await GatewayHarness()
            let fake = try await GatewayHarness.fake()
            let gateway = harness.gateway(fake, compress: true)
            try await fake.waitForShards([0])
            let big = String(repeating: "wörds {g:1} and more ", count: 5_000)
            var ids = try self.flood(fake, shard: 0, shardCount: 1, from: 0, count: 100, content: "short one")
            ids += try self.flood(fake, shard: 0, shardCount: 1, from: 100, count: 5, content: big)
            ids += try self.flood(fake, shard: 0, shardCount: 1, from: 200, count: 100, content: "short \u{0} again\n")
            fake.reconnect(shard: 0)
            ids += try self.flood(fake, shard: 0, shardCount: 1, from: 300, count: 50)
            let entries = try await harness.waitForEntries(ids.count)
            #expect(Set(entries.compactMap(\.messageID)) == Set(ids))
            #expect(entries.contains { $0.content == big })
            #expect(entries.contains { $0.content == "short \u{0} again\n" })
            #expect(gateway.service.statistics.skippedFrames == 0)
            #expect(await gateway.stop() == nil)
            await fake.stop()
        }

        @Test("fatal close codes stop the shard with an error naming the cause", arguments: [
            ("bad token", "authentication failed"), ("no MESSAGE_CONTENT", "MESSAGE_CONTENT"),
        ])
        func fatalCloseCodes(case name: String, cause: String) async throws {
            let harness = try await GatewayHarness()
            let fake = try await GatewayHarness.fake { configuration in
                if name == "no MESSAGE_CONTENT" { configuration.messageContentAllowed = false }
            }
            // With a bad token discovery would fail first; skip it to reach the gateway's close code.
            let gateway = harness.gateway(fake, shardCount: 1, token: name == "bad token" ? "wrong" : nil, discover: false)
            let error = await gateway.task.value
            let shardError = try #require(error as? GatewayShardError, "\(String(describing: error))")
            #expect(shardError.reason.contains(cause))
            #expect(fake.identifies.count <= 1)
            _ = await gateway.stop()
            await fake.stop()
        }

        @Test("identify slots hold across gateways: one per bucket per interval, none refused")
        func identifyBuckets() async throws {
            let harness = try await GatewayHarness()
            let interval = Duration.milliseconds(400)
            let fake = try await GatewayHarness.fake(shards: 4) { configuration in
                configuration.identifyInterval = interval
                configuration.maxConcurrency = 2
            }
            // Two gateways, as two processes, starting at once.
            let one = harness.gateway(fake, shards: [0, 1], identifyInterval: interval)
            let two = harness.gateway(fake, shards: [2, 3], identifyInterval: interval)
            try await fake.waitForShards(0..<4)
            let identifies = fake.identifies
            #expect(identifies.count == 4)
            #expect(identifies.allSatisfy { $0.accepted })
            #expect(fake.violations.isEmpty)
            for bucket in 0..<2 {
                let times = identifies.filter { $0.bucket == bucket }.map(\.at).sorted()
                #expect(times.count == 2)
                if times.count == 2 { #expect(times[1] - times[0] >= interval) }
            }
            #expect(await one.stop() == nil)
            #expect(await two.stop() == nil)
            await fake.stop()
        }
    }
}
