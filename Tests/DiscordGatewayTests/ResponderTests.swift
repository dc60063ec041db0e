import DiscordGateway
import DiscordProtocol
import DiscordREST
import DiscordResponder
import FakeDiscord
import Foundation
import MarkovChains
import MarkovCore
import Redis
import ServiceLifecycle
import Testing

extension GatewayIntegrationTests {
    /// Gateway, trainer and responder in this process against the fake Discord and a real Redis.
    @Suite("Responder") struct ResponderTests {
        static let guild: UInt64 = GatewayHarness.guild(onShard: 0, of: 1, salt: 7)
        static let channel: UInt64 = 7
        /// Snowflakes of now: triggers older than the responder's maximum age are not answered.
        static let base: UInt64 = (UInt64(Date().timeIntervalSince1970 * 1000) - 1_420_070_400_000) << 22

        /// Everything running: returns the services' group task and the responder.
        func start(
            _ harness: GatewayHarness, _ fake: FakeDiscord, cooldown: Duration = .seconds(10),
            deferAfter: Duration = .milliseconds(2000), flags: FeatureFlags? = nil, intents: GatewayIntents = .default
        ) async throws -> (ServiceGroup, Task<Void, any Error>, Responder) {
            let store = ChainStore(redis: harness.redis, stateSize: 2)
            try await store.prepare()
            try await store.setListening(true, channel: Snowflake(String(Self.channel))!, guild: Snowflake(String(Self.guild))!)
            var gatewayConfiguration = GatewayService.Configuration(token: fake.configuration.token, owner: "test")
            gatewayConfiguration.intents = intents
            gatewayConfiguration.rest = DiscordRESTClient(apiURL: fake.apiURL, token: fake.configuration.token, logger: GatewayHarness.logger)
            let gateway = GatewayService(configuration: gatewayConfiguration, log: harness.log, logger: GatewayHarness.logger)
            var trainerConfiguration = Trainer.Configuration(consumer: "test-trainer")
            trainerConfiguration.partitions = GatewayHarness.partitions
            trainerConfiguration.block = .milliseconds(100)
            let trainer = Trainer(store: store, log: harness.log, configuration: trainerConfiguration, flags: flags, logger: GatewayHarness.logger)
            var rest = DiscordRESTClient(apiURL: fake.apiURL, token: fake.configuration.token, logger: GatewayHarness.logger)
            rest.rateLimits = SharedRateLimits(redis: harness.redis)
            var configuration = Responder.Configuration(consumer: "test-responder")
            // A group of its own: no responder process left from another test can take this test's entries.
            configuration.group = "responders-\(UUID().uuidString.prefix(8))"
            configuration.partitions = GatewayHarness.partitions
            configuration.block = .milliseconds(100)
            configuration.cooldown = cooldown
            configuration.interactionDeferAfter = deferAfter
            let responder = Responder(
                store: store, log: harness.log, rest: rest, configuration: configuration, flags: flags, logger: GatewayHarness.logger
            )
            let group = ServiceGroup(services: [gateway, trainer, responder], logger: GatewayHarness.logger)
            let task = Task { try await group.run() }
            try await fake.waitForShards([0])
            return (group, task, responder)
        }

        func message(
            _ fake: FakeDiscord, _ index: UInt64, _ content: String, author: UInt64 = 9, bot: Bool = false,
            channel: UInt64 = Self.channel, roles: [UInt64] = [], attachments: [String] = []
        ) throws -> String {
            let id = Self.base + index
            try fake.dispatch(shard: 0, event: "MESSAGE_CREATE", json: FakeDiscord.messageJSON(
                id: id, channel: channel, guild: Self.guild, author: author, content: content, bot: bot, roles: roles,
                attachments: attachments
            ))
            return String(id)
        }

        @Test("mentions, the prefix and /mark are answered once each, as replies that ping nobody; other messages are not")
        func triggers() async throws {
            let harness = try await GatewayHarness()
            let fake = try await GatewayHarness.fake()
            let (group, task, responder) = try await self.start(harness, fake)
            let lines = ["zebras enjoy quiet evenings", "zebras enjoy loud mornings", "zebras like quiet mornings"]
            for (index, line) in lines.enumerated() { _ = try self.message(fake, UInt64(index), line) }
            try await GatewayHarness.eventually("the lines to be learnt") {
                try await ChainStore(redis: harness.redis, stateSize: 2).totals(guild: Snowflake(String(Self.guild))!)["messages"] == 3
            }
            let bot = fake.configuration.botUserID
            let mention = try self.message(fake, 10, "<@!\(bot)> zebras")
            let prefix = try self.message(fake, 11, "!MARK")
            let debug = try self.message(fake, 12, "!mark debug zebras")
            let help = try self.message(fake, 13, "!mark help")
            _ = try self.message(fake, 14, "just talking about zebras")
            _ = try self.message(fake, 15, "!mark", author: UInt64(bot)!, bot: true)  // the bot's own message
            _ = try self.message(fake, 16, "!mark", author: 99, bot: true)  // another bot
            let slash = try fake.dispatchInteraction(
                shard: 0, id: Self.base + 20, guild: Self.guild, channel: Self.channel, user: 9, name: "mark",
                options: #"[{"name":"seed","type":3,"value":"zebras"},{"name":"tts","type":5,"value":true}]"#
            )
            try await GatewayHarness.eventually("five replies") { fake.rest.messages.count == 4 && responder.statistics.replies == 5 }
            let messages = fake.rest.messages
            #expect(Set(messages.compactMap(\.replyTo)) == [mention, prefix, debug, help])
            for message in messages {
                #expect(message.allowedMentionsParse == [], "never pings anyone")
                #expect(message.failIfNotExists == false)
                #expect(!message.content.isEmpty && message.content.utf16.count <= 2000)
                #expect(message.nonce == message.replyTo, "the nonce is the trigger")
                #expect(message.channel == String(Self.channel))
            }
            let byTrigger = Dictionary(uniqueKeysWithValues: messages.map { ($0.replyTo ?? "", $0.content) })
            #expect(byTrigger[mention]?.hasPrefix("zebras") == true, "the seed steers the sentence")
            #expect(byTrigger[debug]?.contains("```") == true && byTrigger[debug]?.contains("%") == true)
            #expect(byTrigger[help]?.contains("!mark debug") == true)
            let callback = try #require(fake.rest.requests.first { $0.path.hasPrefix("/api/v10/interactions/\(slash)/") })
            #expect(callback.json?["type"] as? Int == 4)
            let data = try #require(callback.json?["data"] as? [String: Any])
            #expect((data["content"] as? String)?.hasPrefix("zebras") == true)
            #expect(data["tts"] as? Bool == true)
            #expect((data["allowed_mentions"] as? [String: Any])?["parse"] as? [String] == [])
            await group.triggerGracefulShutdown()
            try await task.value
            await fake.stop()
        }

        @Test("a trigger delivered again is answered once: by the answered-marker, and by the nonce when the marker is missing")
        func redelivery() async throws {
            let harness = try await GatewayHarness()
            let fake = try await GatewayHarness.fake()
            let (group, task, responder) = try await self.start(harness, fake)
            let trigger = try self.message(fake, 30, "!mark")
            try await GatewayHarness.eventually("the reply") { responder.statistics.replies == 1 }
            #expect(responder.statistics.replies == 1, "\(responder.statistics)")
            // The same MESSAGE_CREATE again (a replay after a resume).
            _ = try self.message(fake, 30, "!mark")
            try await GatewayHarness.eventually("the duplicate to be skipped") { responder.statistics.duplicatesSkipped == 1 }
            // A responder that died after posting but before its marker: the nonce makes Discord return the
            // first message instead of a second one.
            try await harness.redis.send(RedisCommand("DEL", .string("{g:\(Self.guild)}:answered:\(trigger)")))
            _ = try self.message(fake, 30, "!mark")
            try await GatewayHarness.eventually("the third delivery") { responder.statistics.replies == 2 }
            #expect(fake.rest.messages.count == 1)
            #expect(fake.rest.requests.filter { $0.method == "POST" && $0.path.hasSuffix("/messages") }.count == 2)
            await group.triggerGracefulShutdown()
            try await task.value
            await fake.stop()
        }

        /// Sends a slash command and returns the content of the interaction's reply.
        func command(
            _ fake: FakeDiscord, id: UInt64, name: String, options: String, permissions: String, user: UInt64 = 9
        ) async throws -> String? {
            let interaction = try fake.dispatchInteraction(
                shard: 0, id: Self.base + id, guild: Self.guild, channel: Self.channel, user: user, name: name,
                options: options, permissions: permissions
            )
            var reply: String?
            try await GatewayHarness.eventually("the reply to /\(name)") {
                let request = fake.rest.requests.first { $0.path.hasPrefix("/api/v10/interactions/\(interaction)/") }
                reply = (request?.json?["data"] as? [String: Any])?["content"] as? String
                if let data = request?.json?["data"] as? [String: Any] { #expect(data["flags"] as? Int == 64, "only the user sees it") }
                return reply != nil
            }
            return reply
        }

        @Test("admin commands refuse non-admins; auto-respond answers every message within the cooldown; /forget-me purges and keeps the user out")
        func settingsCommands() async throws {
            let harness = try await GatewayHarness()
            let fake = try await GatewayHarness.fake()
            let (group, task, responder) = try await self.start(harness, fake, cooldown: .seconds(2))
            let store = ChainStore(redis: harness.redis, stateSize: 2)
            let guild = Snowflake(String(Self.guild))!
            let add = #"[{"name":"add","type":1,"options":[{"name":"channel","type":7,"value":"\#(Self.channel)"}]}]"#
            let refused = try await self.command(fake, id: 40, name: "autorespond", options: add, permissions: "0")
            #expect(refused?.contains("Only members with") == true)
            #expect(try await ResponseSettings(redis: harness.redis).autorespondChannels(guild: guild).isEmpty)
            // Manage Channels (1 << 4) is enough.
            let accepted = try await self.command(fake, id: 41, name: "autorespond", options: add, permissions: "16")
            #expect(accepted?.contains("answer every message") == true)
            // Every human message in the channel is answered, but not more often than the cooldown.
            for index in 0..<5 { _ = try self.message(fake, 50 + UInt64(index), "zebras enjoy quiet evenings \(index)") }
            try await GatewayHarness.eventually("one unasked reply") { responder.statistics.unasked == 1 }
            try await Task.sleep(for: .milliseconds(500))
            #expect(responder.statistics.unasked == 1, "the cooldown holds")
            try await Task.sleep(for: .seconds(2))
            _ = try self.message(fake, 60, "zebras again")
            try await GatewayHarness.eventually("a second unasked reply after the cooldown") { responder.statistics.unasked == 2 }

            // /forget-me purges the user's messages and keeps them out.
            try await GatewayHarness.eventually("the messages to be learnt") { try await store.totals(guild: guild)["messages", default: 0] >= 6 }
            let forgot = try await self.command(fake, id: 70, name: "forget-me", options: "[]", permissions: "0")
            #expect(forgot?.hasPrefix("Forgot 6 of your messages") == true, "\(forgot ?? "")")
            #expect(try await store.totals(guild: guild)["messages", default: 0] == 0)
            #expect(try await store.optedOutUsers(guild: guild) == ["9"])
            _ = try self.message(fake, 71, "zebras never learnt")
            try await Task.sleep(for: .milliseconds(500))
            #expect(try await store.totals(guild: guild)["messages", default: 0] == 0)
            let listed = try await self.command(fake, id: 72, name: "listen", options: #"[{"name":"list","type":1}]"#, permissions: "0")
            #expect(listed?.contains("<#\(Self.channel)>") == true, "listing is open to everyone")
            await group.triggerGracefulShutdown()
            try await task.value
            await fake.stop()
        }

        @Test("/filters is offered once the training-filters flag reaches the guild (seen within the flag cache time); its filters shape what is learnt; relearn applies them to the history")
        func filtersBehindFlag() async throws {
            let harness = try await GatewayHarness()
            let fake = try await GatewayHarness.fake()
            let flags = FeatureFlags(redis: harness.redis, timeToLive: .milliseconds(300), logger: GatewayHarness.logger)
            let (group, task, _) = try await self.start(harness, fake, flags: flags)
            let store = ChainStore(redis: harness.redis, stateSize: 2)
            let guild = Snowflake(String(Self.guild))!
            let list = #"[{"name":"list","type":1}]"#
            let early = try await self.command(fake, id: 900, name: "filters", options: list, permissions: "16")
            #expect(early?.hasPrefix("Training filters are not available") == true, "\(early ?? "")")
            // Learnt whole while the flag is off.
            let before = try self.message(fake, 901, "zebras like `code` and https://zebra.example")

            try await FeatureFlags.set(.trainingFilters, to: Rollout(guilds: [guild]), redis: harness.redis)
            try await Task.sleep(for: .milliseconds(400))
            let listed = try await self.command(fake, id: 902, name: "filters", options: list, permissions: "0")
            #expect(listed == "I strip links, invites before learning.", "\(listed ?? "")")
            let strip = #"[{"name":"strip","type":1,"options":[{"name":"what","type":3,"value":"code"}]}]"#
            let refused = try await self.command(fake, id: 903, name: "filters", options: strip, permissions: "0")
            #expect(refused?.contains("Only members with") == true)
            let stripped = try await self.command(fake, id: 904, name: "filters", options: strip, permissions: "16")
            #expect(stripped?.hasPrefix("I strip links, invites, code before learning.") == true, "\(stripped ?? "")")
            #expect(try await store.filters(guild: guild) == [.links, .invites, .code])

            let after = try self.message(fake, 905, "zebras like `code` and https://zebra.example")
            let records = ChainKeys(guild: guild).messages
            try await GatewayHarness.eventually("both messages learnt") {
                try await harness.redis.send(RedisCommand("HEXISTS", .string(records), .string(after))).int == 1
            }
            #expect(try await harness.redis.send(RedisCommand("HGET", .string(records), .string(before))).string
                    == "9\tzebras like `code` and https://zebra.example")
            #expect(try await harness.redis.send(RedisCommand("HGET", .string(records), .string(after))).string
                    == "9\tlic\tzebras like `code` and https://zebra.example")
            #expect(try await store.state(["like", "and"], guild: guild).successors.isEmpty == false, "learnt without the code span")

            let relearn = #"[{"name":"relearn","type":1}]"#
            let relearnt = try await self.command(fake, id: 906, name: "filters", options: relearn, permissions: "16")
            #expect(relearnt?.hasPrefix("Read 2 messages again: 1 are now learnt under the filters.") == true, "\(relearnt ?? "")")
            #expect(try await harness.redis.send(RedisCommand("HGET", .string(records), .string(before))).string
                    == "9\tlic\tzebras like `code` and https://zebra.example")
            #expect(try await store.state(["like", "`code`"], guild: guild).successors.isEmpty, "the code span is unlearnt")
            try await FeatureFlags.set(.trainingFilters, to: .off, redis: harness.redis)
            await group.triggerGracefulShutdown()
            try await task.value
            await fake.stop()
        }

        @Test("/blocklist add, list and remove; a reply never says a blocked word, even when asked to start with it")
        func blocklist() async throws {
            let harness = try await GatewayHarness()
            let fake = try await GatewayHarness.fake()
            let (group, task, _) = try await self.start(harness, fake)
            let guild = Snowflake(String(Self.guild))!
            for (index, text) in ["yaks love dark nights", "yaks love sunny days", "yaks adore sunny mornings", "yaks love quiet evenings"].enumerated() {
                _ = try self.message(fake, 950 + UInt64(index), text)
            }
            let records = ChainKeys(guild: guild).messages
            try await GatewayHarness.eventually("the messages learnt") {
                try await harness.redis.send(RedisCommand("HLEN", .string(records))).int == 4
            }
            // Identified without GUILD_MEMBERS (the default), the session is sent no leaves.
            #expect(try fake.dispatch(shard: 0, event: "GUILD_MEMBER_REMOVE", json: #"{"guild_id":"\#(Self.guild)","user":{"id":"9"}}"#) == nil)
            func options(_ action: String, _ word: String?) -> String {
                word.map { #"[{"name":"\#(action)","type":1,"options":[{"name":"word","type":3,"value":"\#($0)"}]}]"# }
                    ?? #"[{"name":"\#(action)","type":1}]"#
            }
            let refused = try await self.command(fake, id: 960, name: "blocklist", options: options("list", nil), permissions: "0")
            #expect(refused?.contains("Only members with") == true, "\(refused ?? "")")
            #expect(try await self.command(fake, id: 961, name: "blocklist", options: options("list", nil), permissions: "16") == "No word is blocked here.")
            let added = try await self.command(fake, id: 962, name: "blocklist", options: options("add", "SUNNY"), permissions: "16")
            #expect(added == "I'll never say `sunny` here (from my next sentence on).", "\(added ?? "")")
            let wildcard = try await self.command(fake, id: 963, name: "blocklist", options: options("add", "dar*"), permissions: "16")
            #expect(wildcard?.contains("`dar*`") == true)
            let bad = try await self.command(fake, id: 964, name: "blocklist", options: options("add", "two words"), permissions: "16")
            #expect(bad?.hasPrefix("A blocked word is one token") == true, "\(bad ?? "")")
            let listed = try await self.command(fake, id: 965, name: "blocklist", options: options("list", nil), permissions: "16")
            #expect(listed == "I never say: ||`dar*`||, ||`sunny`||.", "\(listed ?? "")")
            // The walks through "sunny" and "dark" are cut, so the only sentence left is "yaks love quiet evenings";
            // "!mark sunny" starts at random.
            for index in 0..<8 { _ = try self.message(fake, 970 + UInt64(index), index % 2 == 0 ? "!mark" : "!mark sunny") }
            try await GatewayHarness.eventually("eight answers") { fake.rest.messageCount >= 8 }
            for reply in fake.rest.messages {
                let words = reply.content.lowercased().split(separator: " ")
                #expect(!words.contains("sunny") && !words.contains { $0.hasPrefix("dar") }, "\(reply.content)")
            }
            #expect(fake.rest.messages.filter { $0.content == "yaks love quiet evenings" }.count >= 8, "\(fake.rest.messages.map(\.content))")
            let removed = try await self.command(fake, id: 980, name: "blocklist", options: options("remove", "sunny"), permissions: "16")
            #expect(removed == "`sunny` is no longer blocked.")
            #expect(try await ChainStore(redis: harness.redis, stateSize: 2).blocklist(guild: guild) == ["dar*"])
            await group.triggerGracefulShutdown()
            try await task.value
            await fake.stop()
        }

        @Test("/my-data sends the member, privately, a file of their messages and nobody else's; with /purge-on-leave a member who leaves is forgotten, not opted out")
        func memberData() async throws {
            let harness = try await GatewayHarness()
            let fake = try await GatewayHarness.fake()
            // Leaves come only with the privileged GUILD_MEMBERS intent.
            let (group, task, responder) = try await self.start(harness, fake, intents: [.default, .guildMembers])
            let store = ChainStore(redis: harness.redis, stateSize: 2)
            let guild = Snowflake(String(Self.guild))!
            _ = try self.message(fake, 300, "penguins slide downhill", author: 9)
            _ = try self.message(fake, 301, "penguins like \"quotes\" too", author: 9)
            _ = try self.message(fake, 302, "walruses nap on rocks", author: 11)
            try await GatewayHarness.eventually("the messages to be learnt") { try await store.totals(guild: guild)["messages", default: 0] == 3 }

            let id = try fake.dispatchInteraction(shard: 0, id: Self.base + 310, guild: Self.guild, channel: Self.channel, user: 9, name: "my-data")
            try await GatewayHarness.eventually("the file") { fake.rest.requests.contains { $0.method == "PATCH" && $0.status == 200 } }
            let requests = fake.rest.requests
            let callback = try #require(requests.first { $0.path.hasPrefix("/api/v10/interactions/\(id)/") })
            #expect(callback.json?["type"] as? Int == 5)
            #expect((callback.json?["data"] as? [String: Any])?["flags"] as? Int == 64, "only the member sees it")
            let edit = try #require(requests.first { $0.method == "PATCH" })
            #expect(edit.contentType?.hasPrefix("multipart/form-data") == true)
            #expect((edit.json?["content"] as? String)?.contains("2 learnt messages") == true, "\(edit.json ?? [:])")
            let file = try #require(edit.files.first { $0.name == "files[0]" })
            #expect(file.filename == "markov-data-\(Self.guild)-9.json")
            let object = try #require(try JSONSerialization.jsonObject(with: Data(file.bytes)) as? [String: Any])
            let texts = (object["messages"] as? [[String: Any]])?.compactMap { $0["text"] as? String } ?? []
            #expect(texts == ["penguins slide downhill", "penguins like \"quotes\" too"])
            #expect(object["opted_out"] as? Bool == false)
            #expect(responder.statistics.replies == 1)

            // Leavers are kept by default; an admin turns purging on, and the next leave forgets.
            #expect(try fake.dispatch(shard: 0, event: "GUILD_MEMBER_REMOVE", json: #"{"guild_id":"\#(Self.guild)","user":{"id":"11"}}"#) != nil)
            // A message after the leave, in the same partition: learnt once the leave was applied.
            _ = try self.message(fake, 303, "walruses are back", author: 11)
            try await GatewayHarness.eventually("the leave and the message after it") { try await store.totals(guild: guild)["messages", default: 0] == 4 }
            let refused = try await self.command(fake, id: 320, name: "purge-on-leave", options: #"[{"name":"enabled","type":5,"value":true}]"#, permissions: "0")
            #expect(refused?.contains("Only members with") == true)
            let enabled = try await self.command(fake, id: 321, name: "purge-on-leave", options: #"[{"name":"enabled","type":5,"value":true}]"#, permissions: "32")
            #expect(enabled?.contains("I forget a member's messages when they leave") == true, "\(enabled ?? "")")
            #expect(try await store.totals(guild: guild)["messages", default: 0] == 4, "the leave before the setting kept their messages")
            _ = try fake.dispatch(shard: 0, event: "GUILD_MEMBER_REMOVE", json: #"{"guild_id":"\#(Self.guild)","user":{"id":"9"}}"#)
            try await GatewayHarness.eventually("the leaver's messages to go") { try await store.totals(guild: guild)["messages", default: 0] == 2 }
            #expect(try await store.optedOutUsers(guild: guild).isEmpty, "a leaver is not opted out: back, they are learnt again")
            _ = try self.message(fake, 330, "penguins return", author: 9)
            try await GatewayHarness.eventually("the returning member's message to be learnt") { try await store.totals(guild: guild)["messages", default: 0] == 3 }
            await group.triggerGracefulShutdown()
            try await task.value
            await fake.stop()
        }

        @Test("a guild that used every feature, then /delete-data and the bot's removal: SCAN finds only the tombstone, the opt-outs /delete-data keeps, and markers that expire by themselves")
        func deletionLeavesNothing() async throws {
            let harness = try await GatewayHarness()
            let fake = try await GatewayHarness.fake()
            let (group, task, responder) = try await self.start(harness, fake, cooldown: .seconds(60))
            let store = ChainStore(redis: harness.redis, stateSize: 2)
            let guild = Snowflake(String(Self.guild))!
            let keys = ChainKeys(guild: guild)
            let admin = "8"
            // Channels (one age-restricted) and a thread; settings of every kind.
            _ = try fake.dispatch(shard: 0, event: "GUILD_CREATE", json: #"""
                {"id":"\#(Self.guild)","channels":[{"id":"\#(Self.channel)","type":0},{"id":"8","type":0,"nsfw":true}],
                 "threads":[{"id":"83","type":11,"parent_id":"\#(Self.channel)","guild_id":"\#(Self.guild)"}]}
                """#)
            try await GatewayHarness.eventually("the channels and the thread recorded") {
                let thread = try await harness.redis.send(RedisCommand("HGET", .string(keys.threads), "83")).string
                return try await store.isAgeRestricted(channel: Snowflake("8")!, guild: guild) && thread == String(Self.channel)
            }
            try await store.setListening(true, channel: Snowflake("8")!, guild: guild)
            try await store.setFilters([.links, .invites, .code], guild: guild)
            func sub(_ action: String, _ name: String, _ type: Int, _ value: String) -> String {
                #"[{"name":"\#(action)","type":1,"options":[{"name":"\#(name)","type":\#(type),"value":"\#(value)"}]}]"#
            }
            for (index, (name, options)) in [
                ("blocklist", sub("add", "word", 3, "forbidden")),
                ("autorespond", sub("add", "channel", 7, "8")),
                ("chance", #"[{"name":"set","type":1,"options":[{"name":"percent","type":10,"value":1}]}]"#),
                ("reply-channels", sub("add", "channel", 7, String(Self.channel))),
                ("ask-roles", sub("add", "role", 8, "77")),
                ("images", #"[{"name":"percent","type":10,"value":50}]"#),
                ("purge-on-leave", #"[{"name":"enabled","type":5,"value":true}]"#),
            ].enumerated() {
                let answer = try await self.command(fake, id: 1100 + UInt64(index), name: name, options: options, permissions: admin)
                #expect(answer != nil && answer?.contains("can do that") == false, "/\(name): \(answer ?? "")")
            }
            // Messages: plain, with an image, in the thread, in the age-restricted channel; a state with many
            // successors (a big state, with its alias blob); an edit and a delete.
            for index in 0..<80 { _ = try self.message(fake, 1200 + UInt64(index), "hub word\(index) follows") }
            _ = try self.message(fake, 1300, "zebras with a picture", attachments: ["https://cdn.discordapp.com/attachments/7/1/z.png"])
            _ = try self.message(fake, 1301, "zebras in the thread", channel: 83)
            _ = try self.message(fake, 1302, "zebras after dark", author: 12, channel: 8)
            let edited = try self.message(fake, 1303, "zebras before the edit")
            try fake.dispatch(shard: 0, event: "MESSAGE_UPDATE", json: #"{"id":"\#(edited)","channel_id":"\#(Self.channel)","guild_id":"\#(Self.guild)","content":"zebras after the edit"}"#)
            try await GatewayHarness.eventually("the messages learnt") { try await store.totals(guild: guild)["messages", default: 0] == 84 }
            #expect(try await harness.redis.send(RedisCommand("SCARD", .string(keys.key(":bigs")))).int ?? 0 > 0, "a big state")
            // A history backfill, answered triggers, a cooldown (auto-respond in 8) and a member who opted out.
            fake.rest.addHistory(channel: Self.channel, (0..<20).map {
                .init(id: ((UInt64(Date().timeIntervalSince1970 * 1000) - 1_420_070_400_000 - 86_400_000) << 22) + UInt64($0), author: 13, content: "history line \($0)")
            })
            let train = try await self.command(fake, id: 1400, name: "train", options: "[]", permissions: admin)
            #expect(train?.contains("Reading the history") == true, "\(train ?? "")")
            try await GatewayHarness.eventually("the backfill to finish", timeout: .seconds(60)) {
                try await harness.redis.send(RedisCommand("HGET", .string(keys.backfill), "status")).string == "done"
            }
            _ = try self.message(fake, 1401, "!mark zebras")
            _ = try self.message(fake, 1402, "zebras at night again", author: 12, channel: 8)
            try await GatewayHarness.eventually("a reply and an unasked one") { responder.statistics.replies >= 1 && responder.statistics.unasked >= 1 }
            let forgot = try await self.command(fake, id: 1403, name: "forget-me", options: "[]", permissions: "0", user: 12)
            #expect(forgot?.hasPrefix("Forgot") == true, "\(forgot ?? "")")
            let families = Set(try await harness.keys(matching: "\(keys.prefix)*").map { String($0.dropFirst(keys.prefix.count)) })
            for touched in [":meta", ":b:0", ":bigs", ":m", ":h", ":img", ":threads", ":nsfw", ":listen", ":filters", ":purge-on-leave",
                            ":optout", ":block", ":chance", ":autorespond", ":reply-channels", ":ask-roles", ":backfill"] {
                #expect(families.contains(touched), "the workload wrote \(touched): \(families.sorted())")
            }
            #expect(families.contains { $0.hasPrefix(":x:") } && families.contains { $0.hasPrefix(":answered:") } && families.contains { $0.hasPrefix(":cooldown:") })

            // Every key found after a deletion is declared in the registry: the tombstone, kept families, or a
            // marker with an expiry.
            func expectLeft(_ kept: Set<String>, _ comment: String) async throws {
                for key in try await harness.keys(matching: "\(keys.prefix)*") {
                    let suffix = String(key.dropFirst(keys.prefix.count))
                    if kept.contains(suffix) { continue }
                    let marker = ChainKeys.families.contains { $0.owner == .markers && suffix.hasPrefix($0.suffix.dropLast()) }
                    let ttl = try await harness.redis.send(RedisCommand("PTTL", .string(key))).int ?? -1
                    #expect(marker && ttl > 0 && ttl <= 86_400_000, "\(comment): \(key) is left (ttl \(ttl) ms)")
                }
                let meta = try await harness.redis.send(RedisCommand("HKEYS", .string(keys.meta))).array?.compactMap(\.string) ?? []
                #expect(Set(meta).isSubset(of: ["epoch", "wseq", "layout", "deleted", "applied", "applied_bulk"]), "\(comment): \(meta)")
            }
            let deleted = try await self.command(fake, id: 1500, name: "delete-data", options: "[]", permissions: admin)
            #expect(deleted?.hasPrefix("Deleted this server's model") == true, "\(deleted ?? "")")
            try await expectLeft([":meta", ":optout"], "after /delete-data")
            #expect(try await store.optedOutUsers(guild: guild) == ["12"], "/delete-data keeps opt-outs")
            try fake.dispatch(shard: 0, event: "GUILD_DELETE", json: #"{"id":"\#(Self.guild)"}"#)
            try await GatewayHarness.eventually("the guild's removal") { try await store.optedOutUsers(guild: guild).isEmpty }
            try await expectLeft([":meta"], "after the bot's removal")
            await group.triggerGracefulShutdown()
            try await task.value
            await fake.stop()
        }

        @Test("GUILD_CREATE and CHANNEL_UPDATE mark age-restricted channels; what is learnt there is said only there (and in their threads)")
        func ageRestricted() async throws {
            let harness = try await GatewayHarness()
            let fake = try await GatewayHarness.fake()
            let (group, task, responder) = try await self.start(harness, fake, cooldown: .zero)
            let store = ChainStore(redis: harness.redis, stateSize: 2)
            let guild = Snowflake(String(Self.guild))!
            let nsfw: UInt64 = 8
            try await store.setListening(true, channel: Snowflake(String(nsfw))!, guild: guild)
            _ = try fake.dispatch(shard: 0, event: "GUILD_CREATE", json: #"""
                {"id":"\#(Self.guild)","channels":[{"id":"\#(Self.channel)","type":0},{"id":"\#(nsfw)","type":0,"nsfw":true},{"id":"90","type":4,"nsfw":true}],
                 "threads":[{"id":"82","type":11,"parent_id":"\#(nsfw)","guild_id":"\#(Self.guild)"}]}
                """#)
            try await GatewayHarness.eventually("the age-restricted channel to be recorded") {
                try await store.isAgeRestricted(channel: Snowflake(String(nsfw))!, guild: guild)
            }
            #expect(try await store.isAgeRestricted(channel: Snowflake("82")!, guild: guild), "a thread takes its channel's flag")
            #expect(try await !store.isAgeRestricted(channel: Snowflake(String(Self.channel))!, guild: guild))
            _ = try self.message(fake, 400, "zorblax grumbles loudly", channel: nsfw)
            _ = try self.message(fake, 401, "zorblax mutters softly", channel: 82)
            _ = try self.message(fake, 402, "otters float calmly", channel: Self.channel)
            try await GatewayHarness.eventually("the messages to be learnt") { try await store.totals(guild: guild)["messages", default: 0] == 3 }
            _ = try self.message(fake, 410, "!mark zorblax", channel: Self.channel)
            _ = try self.message(fake, 411, "!mark zorblax", channel: nsfw)
            try await GatewayHarness.eventually("two replies") { responder.statistics.replies == 2 }
            let byTrigger = Dictionary(uniqueKeysWithValues: fake.rest.messages.map { ($0.replyTo ?? "", $0.content) })
            #expect(byTrigger[String(Self.base + 410)]?.contains("zorblax") == false, "\(byTrigger)")
            #expect(byTrigger[String(Self.base + 411)]?.hasPrefix("zorblax") == true, "\(byTrigger)")
            // The channel opens up: from then on its messages are the guild's, and a new one is said anywhere.
            _ = try fake.dispatch(shard: 0, event: "CHANNEL_UPDATE", json: #"{"id":"\#(nsfw)","type":0,"guild_id":"\#(Self.guild)","nsfw":false}"#)
            try await GatewayHarness.eventually("the channel to open") { try await !store.isAgeRestricted(channel: Snowflake(String(nsfw))!, guild: guild) }
            await group.triggerGracefulShutdown()
            try await task.value
            await fake.stop()
        }

        @Test("the bot answers only in the channels singled out, and only members with a role allowed to ask (admins always)")
        func restrictions() async throws {
            let harness = try await GatewayHarness()
            let fake = try await GatewayHarness.fake()
            let (group, task, responder) = try await self.start(harness, fake)
            let other: UInt64 = 8
            let onlyOther = #"[{"name":"add","type":1,"options":[{"name":"channel","type":7,"value":"\#(other)"}]}]"#
            let set = try await self.command(fake, id: 80, name: "reply-channels", options: onlyOther, permissions: "16")
            #expect(set?.contains("I answer only in <#\(other)>") == true)
            _ = try self.message(fake, 81, "!mark")  // channel 7: not answered
            let there = try self.message(fake, 82, "!mark", channel: other)
            try await GatewayHarness.eventually("the reply in the channel singled out") { fake.rest.messageCount == 1 }
            try await GatewayHarness.eventually("the other trigger to be refused") { responder.statistics.restricted == 1 }
            #expect(fake.rest.messages.map(\.replyTo) == [there])
            let refused = try await self.command(fake, id: 83, name: "mark", options: "[]", permissions: "0")
            #expect(refused?.contains("I don't answer in this channel") == true)
            // A thread of the channel singled out counts as that channel.
            try fake.dispatch(shard: 0, event: "THREAD_CREATE", json: #"{"id":"80","type":11,"guild_id":"\#(Self.guild)","parent_id":"\#(other)"}"#)
            try await GatewayHarness.eventually("the thread to be recorded") {
                try await harness.redis.send(RedisCommand("HGET", .string("{g:\(Self.guild)}:threads"), "80")).string == String(other)
            }
            let inThread = try self.message(fake, 79, "!mark", channel: 80)
            try await GatewayHarness.eventually("the reply in the thread") { fake.rest.messageCount == 2 }
            let removeOther = #"[{"name":"remove","type":1,"options":[{"name":"channel","type":7,"value":"\#(other)"}]}]"#
            let cleared = try await self.command(fake, id: 84, name: "reply-channels", options: removeOther, permissions: "16")
            #expect(cleared?.contains("every channel again") == true)

            // Only role 77 may ask.
            let role = #"[{"name":"add","type":1,"options":[{"name":"role","type":8,"value":"77"}]}]"#
            let notAdmin = try await self.command(fake, id: 85, name: "ask-roles", options: role, permissions: "0")
            #expect(notAdmin?.contains("Only members with Administrator") == true)
            let roles = try await self.command(fake, id: 86, name: "ask-roles", options: role, permissions: "16")
            #expect(roles?.contains("<@&77>") == true)
            _ = try self.message(fake, 87, "!mark", roles: [5])
            let allowed = try self.message(fake, 88, "!mark", roles: [5, 77])
            try await GatewayHarness.eventually("the member with the role to be answered") { fake.rest.messageCount == 3 }
            try await GatewayHarness.eventually("the member without it to be refused") { responder.statistics.restricted == 3 }
            #expect(fake.rest.messages.map(\.replyTo) == [there, inThread, allowed])
            let noRole = try await self.command(fake, id: 89, name: "mark", options: "[]", permissions: "0")
            #expect(noRole?.contains("Only some roles may ask me") == true)
            let admin = try fake.dispatchInteraction(
                shard: 0, id: Self.base + 90, guild: Self.guild, channel: Self.channel, user: 9, name: "mark", permissions: "8"
            )
            try await GatewayHarness.eventually("the admin's /mark to be answered") {
                let request = fake.rest.requests.first { $0.path.hasPrefix("/api/v10/interactions/\(admin)/") }
                return ((request?.json?["data"] as? [String: Any])?["flags"] as? Int) == nil && request != nil
            }
            // @everyone (the guild's id) lets every member ask again.
            let everyone = #"[{"name":"add","type":1,"options":[{"name":"role","type":8,"value":"\#(Self.guild)"}]}]"#
            _ = try await self.command(fake, id: 91, name: "ask-roles", options: everyone, permissions: "16")
            let anyone = try self.message(fake, 92, "!mark", roles: [])
            try await GatewayHarness.eventually("a member without roles to be answered") { fake.rest.messageCount == 4 }
            #expect(fake.rest.messages.last?.replyTo == anyone)
            await group.triggerGracefulShutdown()
            try await task.value
            await fake.stop()
        }

        @Test("messages in a thread are learnt when the thread's channel is")
        func threads() async throws {
            let harness = try await GatewayHarness()
            let fake = try await GatewayHarness.fake()
            let (group, task, _) = try await self.start(harness, fake)
            let guild = Self.guild
            try fake.dispatch(shard: 0, event: "THREAD_CREATE", json: #"{"id":"70","type":11,"guild_id":"\#(guild)","parent_id":"\#(Self.channel)"}"#)
            try fake.dispatch(shard: 0, event: "THREAD_CREATE", json: #"{"id":"71","type":11,"guild_id":"\#(guild)","parent_id":"8"}"#)
            try await GatewayHarness.eventually("the threads to be recorded") {
                try await harness.redis.send(RedisCommand("HLEN", .string("{g:\(guild)}:threads"))).int == 2
            }
            _ = try self.message(fake, 110, "zebras in a thread", channel: 70)
            _ = try self.message(fake, 111, "zebras in another thread", channel: 71)
            _ = try self.message(fake, 112, "zebras in the channel")
            let store = ChainStore(redis: harness.redis, stateSize: 2)
            try await GatewayHarness.eventually("the two messages to be learnt") {
                try await store.totals(guild: Snowflake(String(guild))!)["messages"] == 2
            }
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await store.totals(guild: Snowflake(String(guild))!)["messages"] == 2, "not the thread of a channel not enabled")
            await group.triggerGracefulShutdown()
            try await task.value
            await fake.stop()
        }

        @Test("with /images, replies carry an image the guild posted, refreshed through Discord; a deleted message's image goes")
        func images() async throws {
            let harness = try await GatewayHarness()
            let fake = try await GatewayHarness.fake()
            let (group, task, _) = try await self.start(harness, fake)
            let url = "https://cdn.discordapp.com/attachments/7/1/zebra.png?ex=old&is=1"
            let posted = try self.message(fake, 100, "zebras enjoy pictures", attachments: [url, "https://cdn.discordapp.com/a/notes.txt"])
            _ = try self.message(fake, 101, "zebras enjoy text", attachments: ["https://cdn.discordapp.com/a/notes.txt"])
            let images = "{g:\(Self.guild)}:img"
            try await GatewayHarness.eventually("the image to be kept") {
                try await harness.redis.send(RedisCommand("HGETALL", .string(images))).array?.compactMap(\.string) == [posted, url]
            }
            let off = try self.message(fake, 102, "!mark")
            try await GatewayHarness.eventually("the reply without an image (off by default)") { fake.rest.messageCount == 1 }
            let set = try await self.command(
                fake, id: 103, name: "images", options: #"[{"name":"percent","type":10,"value":100}]"#, permissions: "16"
            )
            #expect(set?.contains("100.0% of my replies carry an image") == true)
            let on = try self.message(fake, 104, "!mark")
            try await GatewayHarness.eventually("the reply with an image") { fake.rest.messageCount == 2 }
            let replies = Dictionary(uniqueKeysWithValues: fake.rest.messages.map { ($0.replyTo ?? "", $0.images) })
            #expect(replies[off] == [])
            #expect(replies[on] == ["https://cdn.discordapp.com/attachments/7/1/zebra.png?ex=refreshed"], "the link is refreshed first")
            #expect(fake.rest.requests.contains { $0.path.hasSuffix("/attachments/refresh-urls") })

            // The message is deleted: its image goes with it.
            try fake.dispatch(shard: 0, event: "MESSAGE_DELETE", json: #"{"id":"\#(posted)","channel_id":"\#(Self.channel)","guild_id":"\#(Self.guild)"}"#)
            try await GatewayHarness.eventually("the image to go") {
                try await harness.redis.send(RedisCommand("HLEN", .string(images))).int == 0
            }
            let after = try self.message(fake, 105, "!mark")
            try await GatewayHarness.eventually("a reply without an image") { fake.rest.messageCount == 3 }
            #expect(fake.rest.messages.first { $0.replyTo == after }?.images == [])
            await group.triggerGracefulShutdown()
            try await task.value
            await fake.stop()
        }

        @Test("random chance answers about that share of messages, decided by the message id (the same for a redelivery)")
        func randomChance() async throws {
            let harness = try await GatewayHarness()
            let fake = try await GatewayHarness.fake { $0.rest.messageBucketLimit = 100 }
            let (group, task, responder) = try await self.start(harness, fake, cooldown: .zero)
            let chance = #"[{"name":"set","type":1,"options":[{"name":"percent","type":10,"value":25}]}]"#
            let set = try await self.command(fake, id: 80, name: "chance", options: chance, permissions: "8")
            #expect(set?.contains("25.0%") == true, "\(set ?? "")")
            let count = 400
            var winners = 0
            for index in 0..<count {
                let id = try self.message(fake, 100 + UInt64(index), "just talking \(index)")
                if ResponseSettings.wins(messageID: id, partsPerMillion: 250_000) { winners += 1 }
            }
            // 25 % of 400: mean 100, standard deviation about 8.7.
            #expect((65...135).contains(winners), "\(winners)")
            try await GatewayHarness.eventually("the unasked replies") { responder.statistics.unasked == winners }
            try await GatewayHarness.eventually("their messages") { fake.rest.messages.count == winners }
            await group.triggerGracefulShutdown()
            try await task.value
            await fake.stop()
        }

        @Test("a slow answer is deferred, then edited into @original; a callback after the deadline fails with 10062")
        func deferredAndLate() async throws {
            let harness = try await GatewayHarness()
            let fake = try await GatewayHarness.fake()
            // Deferring after zero time: every interaction takes the slow path.
            let (group, task, responder) = try await self.start(harness, fake, deferAfter: .zero)
            let id = try fake.dispatchInteraction(shard: 0, id: Self.base + 90, guild: Self.guild, channel: Self.channel, user: 9, name: "mark")
            try await GatewayHarness.eventually("the deferred reply and its edit") { responder.statistics.replies == 1 }
            let requests = fake.rest.requests
            let callback = try #require(requests.first { $0.path.hasPrefix("/api/v10/interactions/\(id)/") })
            #expect(callback.json?["type"] as? Int == 5)
            let edit = try #require(requests.first { $0.method == "PATCH" })
            #expect(edit.path == "/api/v10/webhooks/\(fake.configuration.applicationID)/itoken-\(id)/messages/@original")
            #expect((edit.json?["content"] as? String)?.isEmpty == false)
            #expect(responder.statistics.deferred == 1)
            // Discord's 3 s are over before the responder gets to it: 10062, a failure, nothing else sent.
            fake.rest.configure { $0.interactionDeadline = .zero }
            _ = try fake.dispatchInteraction(shard: 0, id: Self.base + 91, guild: Self.guild, channel: Self.channel, user: 9, name: "mark")
            try await GatewayHarness.eventually("the late callback to fail") { responder.statistics.failures == 1 }
            #expect(fake.rest.requests.filter { $0.method == "PATCH" }.count == 1)
            await group.triggerGracefulShutdown()
            try await task.value
            await fake.stop()
        }

        @Test("a guild's auto-respond channels and chances are read once per time to live; a settings change is seen after forget or the time")
        func unaskedSettingsCache() async throws {
            let harness = try await GatewayHarness()
            let settings = ResponseSettings(redis: harness.redis)
            let guild = Snowflake(String(Self.guild))!
            let (here, there) = (Snowflake("7001")!, Snowflake("7002")!)
            try await settings.setChance(5_000, guild: guild, channel: nil)
            try await settings.setChance(250_000, guild: guild, channel: there)
            try await settings.setImageChance(1_000_000, guild: guild)
            let cached = UnaskedSettingsCache(settings: settings, timeToLive: .seconds(600))
            let uncached = UnaskedSettingsCache(settings: settings, timeToLive: .zero)
            #expect(try await cached.rules(guild: guild, channel: here) == (false, 5_000), "the guild's chance")
            #expect(try await cached.rules(guild: guild, channel: there) == (false, 250_000), "the channel's own chance wins")
            try await settings.setAutorespond(true, guild: guild, channel: here)
            #expect(try await uncached.rules(guild: guild, channel: here) == (true, 5_000))
            #expect(try await cached.rules(guild: guild, channel: here) == (false, 5_000), "kept for its time to live")
            cached.forget(guild: guild)
            #expect(try await cached.rules(guild: guild, channel: here) == (true, 5_000), "read again once forgotten")
        }

        @Test("two REST clients flooding one channel share its bucket through Redis: no 429 at all")
        func sharedBucket() async throws {
            _ = try await GatewayHarness()
            let fake = try await GatewayHarness.fake { $0.rest.messageBucketLimit = 5; $0.rest.messageBucketWindow = .milliseconds(500) }
            func client() throws -> (DiscordRESTClient, RedisClient) {
                // A client of its own, as another process would have.
                let redis = RedisClient(configuration: try RedisConfiguration(url: GatewayHarness.redisURL), logger: GatewayHarness.logger)
                var rest = DiscordRESTClient(apiURL: fake.apiURL, token: fake.configuration.token, logger: GatewayHarness.logger)
                rest.rateLimits = SharedRateLimits(redis: redis)
                return (rest, redis)
            }
            let (one, redisOne) = try client()
            let (two, redisTwo) = try client()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (rest, name) in [(one, "a"), (two, "b")] {
                    group.addTask {
                        for index in 0..<20 { try await rest.createMessage(channel: "77", CreateMessage(content: "\(name)\(index)")) }
                    }
                }
                try await group.waitForAll()
            }
            #expect(fake.rest.messages.count == 40)
            #expect(fake.rest.rateLimitedCount == 0, "the first answer revealed the bucket; nobody went over it")
            #expect(one.counters.snapshot.waitedMilliseconds + two.counters.snapshot.waitedMilliseconds > 0)
            // The web console's read of the shared limits lists the channel's bucket.
            let snapshot = try await SharedRateLimits(redis: redisOne).snapshot()
            let bucket = try #require(snapshot.buckets.first { $0.major == "77" })
            #expect(bucket.limit == fake.configuration.rest.messageBucketLimit)
            #expect(bucket.remaining.map { $0 >= 0 && $0 <= fake.configuration.rest.messageBucketLimit } ?? true)
            #expect(abs(Double(bucket.lastUsed) / 1000 - Date().timeIntervalSince1970) < 60)
            #expect(snapshot.globalLimit == 50 && snapshot.blockedFor == nil)
            redisOne.shutdown()
            redisTwo.shutdown()
            await fake.stop()
        }

        @Test("the global limit holds across clients, and the brake stops sending during a ban")
        func globalLimitAndBrake() async throws {
            let harness = try await GatewayHarness()
            let fake = try await GatewayHarness.fake { $0.rest.globalLimit = 20 }
            var rest = DiscordRESTClient(apiURL: fake.apiURL, token: fake.configuration.token, logger: GatewayHarness.logger)
            var limits = SharedRateLimits(redis: harness.redis)
            limits.globalLimit = 20
            limits.brakeLimit = 5
            rest.rateLimits = limits
            let client = rest
            try await withThrowingTaskGroup(of: Void.self) { group in
                for channel in 0..<12 {
                    group.addTask {
                        for index in 0..<4 { try await client.createMessage(channel: "\(100 + channel)", CreateMessage(content: "m\(index)")) }
                    }
                }
                try await group.waitForAll()
            }
            #expect(fake.rest.messages.count == 48)
            #expect(fake.rest.rateLimitedCount == 0, "48 requests at 20/s went out over more than two seconds without a global 429")
            #expect(client.counters.snapshot.waits[.global, default: 0] > 0, "waits for the global limit are counted as such")

            fake.rest.setBanned(true)
            var refused: DiscordRESTError?
            rest.rateLimitRetries = 0
            for index in 0..<10 {
                do {
                    try await rest.createMessage(channel: "500", CreateMessage(content: "x\(index)"))
                } catch {
                    if error.message.contains("braking") { refused = error; break }
                }
            }
            let braked = try #require(refused, "the brake engaged")
            #expect(braked.status == nil, "refused before sending")
            #expect(rest.counters.snapshot.braked == 1, "the refusal is counted")
            #expect(try await limits.badAnswers() == 5)
            await fake.stop()
        }
    }
}
