import DiscordResponder
import FakeDiscord
import Foundation
import MarkovChains
import MarkovCore
import Redis
import Testing

extension GatewayIntegrationTests {
    /// `/train` with real processes: a gateway, a trainer and responders against the fake Discord's history.
    @Suite("History backfill") struct BackfillTests {
        static let guild = GatewayHarness.guild(onShard: 0, of: 1, salt: 23)
        /// Snowflakes of a month ago (channels) and of the days after (messages).
        static let now = UInt64(Date().timeIntervalSince1970 * 1000) - 1_420_070_400_000
        static let monthAgo = (now - 30 * 86_400_000) << 22
        static func channel(_ index: UInt64) -> UInt64 { monthAgo + index }
        static let admin = "8"  // ADMINISTRATOR

        /// The history: three listened channels (one the bot may not read), one that is not listened to, an active
        /// thread and two archived ones; 25,000 messages from people and 100 from a bot.
        struct History {
            var perItem: [UInt64: Int] = [:]
            var humans = 0
        }

        static func fill(_ fake: FakeDiscord) -> History {
            let (general, random, secret, unlisted) = (channel(1), channel(2), channel(3), channel(4))
            let (active, archivedA, archivedB) = (channel(11), channel(12), channel(13))
            fake.rest.addThread(active, parent: general, guild: Self.guild, archived: false)
            fake.rest.addThread(archivedA, parent: random, guild: Self.guild, archived: true)
            fake.rest.addThread(archivedB, parent: random, guild: Self.guild, archived: true)
            fake.rest.forbid(channel: secret)
            var history = History()
            var next = (now - 20 * 86_400_000) << 22
            for (item, count) in [(general, 10_000), (random, 8_000), (active, 3_000), (archivedA, 2_000), (archivedB, 2_000), (unlisted, 500), (secret, 50)] {
                var messages: [FakeREST.HistoryMessage] = []
                for index in 0..<count {
                    next += 1 << 26  // ~16 s apart
                    messages.append(.init(id: next, author: 9, content: GatewayProcessTests.content(history.humans + index)))
                }
                if item == general {
                    for _ in 0..<100 {
                        next += 1 << 26
                        messages.append(.init(id: next, author: 5, content: "beep boop", bot: true))
                    }
                }
                fake.rest.addHistory(channel: item, messages)
                history.perItem[item] = messages.count
                if item != unlisted && item != secret { history.humans += count }
            }
            return history
        }

        @Test("/train of 25k messages over channels and threads: applied once, progress shown, carried on after the responder is killed; one backfill per guild")
        func trainThroughKill() async throws {
            let harness = try await GatewayHarness()
            defer { harness.redis.shutdown() }
            let fake = try await GatewayHarness.fake { configuration in
                configuration.guilds = [String(Self.guild)]
                // Heartbeats every 1.5 s: 250 ms would spend the 120-payloads-a-minute budget within this test.
                configuration.heartbeatInterval = 1_500
                // About 8 pages a second, so the backfill is still running when the responder is killed.
                configuration.rest.historyBucketLimit = 8
            }
            let history = Self.fill(fake)
            #expect(history.humans == 25_000)
            let guild = Snowflake(String(Self.guild))!
            let store = ChainStore(redis: harness.redis, stateSize: 2)
            try await store.prepare()
            for channel in [Self.channel(1), Self.channel(2), Self.channel(3)] {
                try await store.setListening(true, channel: Snowflake(String(channel))!, guild: guild)
            }
            let backfills = BackfillStore(redis: harness.redis)

            let responderArguments = ["responder", "--backfill-lease", "2", "--backfill-progress", "1"]
            let gateway = try GatewayProcessTests.start(["gateway", "--shards", "0", "--shard-count", "1"], fake: fake)
            let trainer = try GatewayProcessTests.start(["trainer"], fake: fake)
            var responder = try GatewayProcessTests.start(responderArguments, fake: fake)
            defer {
                for process in [gateway, trainer, responder] where process.isRunning { kill(process.processIdentifier, SIGKILL) }
            }
            try await fake.waitForShards([0])

            func callbacks() -> [String] {
                fake.rest.requests.filter { $0.path.hasSuffix("/callback") }.compactMap {
                    ($0.json?["data"] as? [String: Any])?["content"] as? String
                }
            }
            _ = try fake.dispatchInteraction(
                shard: 0, id: (Self.now << 22) + 1, guild: Self.guild, channel: Self.channel(1), user: 42, name: "train",
                permissions: Self.admin
            )
            try await GatewayHarness.eventually("the /train answer", timeout: .seconds(60)) { !callbacks().isEmpty }
            #expect(callbacks().first?.contains("Reading the history of") == true)

            // Kill the responder once a third of the history is read (and progress has been shown).
            try await GatewayHarness.eventually("a third of the history", timeout: .seconds(120)) {
                let messages = try await backfills.job(guild: guild)?.messages ?? 0
                return messages >= 8_000 && !fake.rest.edits.isEmpty
            }
            // A second /train meanwhile is refused: one backfill per guild.
            _ = try fake.dispatchInteraction(
                shard: 0, id: (Self.now << 22) + 2, guild: Self.guild, channel: Self.channel(1), user: 42, name: "train",
                permissions: Self.admin
            )
            try await GatewayHarness.eventually("the second /train answer", timeout: .seconds(60)) { callbacks().count >= 2 }
            #expect(callbacks().last?.contains("already reading") == true)

            kill(responder.processIdentifier, SIGKILL)
            responder.waitUntilExit()
            let atKill = try #require(try await backfills.job(guild: guild))
            #expect(atKill.status == .running)
            #expect(atKill.messages < history.humans)
            responder = try GatewayProcessTests.start(responderArguments, fake: fake)

            try await GatewayHarness.eventually("the backfill to finish", timeout: .seconds(240)) {
                try await backfills.job(guild: guild)?.status == .done
            }
            let job = try #require(try await backfills.job(guild: guild))
            #expect(job.items == 6 && job.channels == 3)
            #expect(job.skipped == [String(Self.channel(3))])

            // Carried on where it stopped: every page read once, but for at most a page or two around the kill.
            let pageReads = fake.rest.requests.filter { $0.method == "GET" && $0.path.hasSuffix("/messages") && $0.status == 200 }
            var expectedPages = 0
            for (item, count) in history.perItem where item != Self.channel(4) && item != Self.channel(3) {
                expectedPages += count / 100 + 1
            }
            #expect(pageReads.count >= expectedPages && pageReads.count <= expectedPages + 2, "pages read: \(pageReads.count) for \(expectedPages)")
            #expect(!pageReads.contains { $0.path.contains("/channels/\(Self.channel(4))/") }, "a channel not listened to is not read")

            // Progress: one progress message, edited with speed and time left; the report replies to it (posted
            // just after the backfill is marked done).
            try await GatewayHarness.eventually("the report") { fake.rest.messages.count >= 2 }
            let posted = fake.rest.messages
            // (Its content is the final state by now; the report's nonce ends in "r".)
            let progress = posted.filter { $0.nonce?.hasPrefix("bf") == true && $0.nonce?.hasSuffix("r") == false }
            #expect(progress.count == 1)
            #expect(fake.rest.edits.contains { $0.content.contains("messages/s") && $0.content.contains("left") })
            let report = posted.first { $0.replyTo == progress.first?.id }
            #expect(report?.content.contains("25,100 messages") == true, "report: \(report?.content ?? "none")")
            #expect(report?.content.contains("<#\(Self.channel(3))>") == true)

            // Applied exactly once: the trainer's counts equal the history's people's messages, bots left out.
            try await GatewayHarness.eventually("the trainer to catch up", timeout: .seconds(240)) {
                let backlog = try await harness.log.backlog(group: "trainers", partitions: 0..<GatewayHarness.partitions)
                let messages = try await store.totals(guild: guild)["messages"]
                return backlog == 0 && messages == history.humans
            }
            #expect(try await store.totals(guild: guild)["messages"] == history.humans)
            var expected: [String: Int] = [:]
            for index in 0..<history.humans where index % 7 == 3 && index % 11 == 5 { expected["c\(index % 13)", default: 0] += 1 }
            var counts: [String: Int] = [:]
            for (token, count) in try await store.state(["a3", "b5"], guild: guild).successors { counts[token] = count }
            #expect(counts == expected)

            for process in [gateway, trainer, responder] { kill(process.processIdentifier, SIGTERM) }
            for process in [gateway, trainer, responder] { process.waitUntilExit() }
            await fake.stop()
        }
    }
}
