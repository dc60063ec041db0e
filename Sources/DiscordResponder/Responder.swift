import DiscordProtocol
import DiscordREST
import Foundation
import Logging
import MarkovChains
import MarkovCore
import CoreMetrics
import Redis
import ServiceLifecycle
import Synchronization

/// `markov responder`: reads the event log in the consumer group `responders`, answers the events that ask for
/// an answer (a mention, the prefix, `/mark`), and replies through Discord's REST API. Any number may run.
///
/// Each trigger is answered at most once: a reply carries a nonce derived from the trigger with
/// `enforce_nonce` (a redelivered trigger whose reply was already posted gets Discord's earlier message back, not
/// a second one), and an answered-marker in Redis (`{g:<guild>}:answered:<trigger>`, one day) skips triggers
/// already answered. Entries are acknowledged after their reply.
public final class Responder: Service, Sendable {
    public struct Configuration: Sendable {
        public var group = "responders"
        public var consumer: String
        public var partitions = 16
        public var batchSize = 64
        /// Entries of one partition being handled at once (replies waiting for rate limits included).
        public var maxInFlight = 512
        public var block: Duration = .seconds(2)
        /// Entries idle this long with another (dead) responder are claimed.
        public var claimAfter: Duration = .seconds(30)
        public var commandPrefix = "!mark"
        /// Triggers older than this (after an outage) are not answered.
        public var maxAge: Duration = .seconds(300)
        /// A slash command not answered within this gets a deferred reply, then an edit.
        public var interactionDeferAfter: Duration = .milliseconds(2000)
        /// After speaking unasked (random chance, auto-respond) in a channel, the bot stays quiet there this long.
        public var cooldown: Duration = .seconds(10)
        /// How long a guild's auto-respond channels and chances are kept before they are read again (zero: read
        /// for every message). A settings command run here takes effect at once; `markov settings` within this.
        public var settingsCacheTTL: Duration = .seconds(2)
        /// Users allowed every admin command, whatever their permissions (`OWNER_IDS`).
        public var owners: Set<String> = []
        /// History backfills (`/train`) this responder reads at once.
        public var backfills = 2
        /// How long a dead responder's backfill waits before another responder takes it over.
        public var backfillLease: Duration = .seconds(30)
        /// How often a backfill's progress message is edited.
        public var backfillProgressInterval: Duration = .seconds(5)

        public init(consumer: String) { self.consumer = consumer }
    }

    /// Counts since start.
    public struct Statistics: Sendable, Hashable {
        public var replies = 0
        public var duplicatesSkipped = 0
        public var tooOld = 0
        public var failures = 0
        public var deferred = 0
        /// Answers given unasked (random chance, auto-respond).
        public var unasked = 0
        /// Triggers not answered because of the guild's channel or role restrictions.
        public var restricted = 0
    }

    public let configuration: Configuration
    private let log: EventLog
    private let composer: ReplyComposer
    private let commands: SettingsCommands
    private let settings: ResponseSettings
    private let unaskedSettings: UnaskedSettingsCache
    private let rest: DiscordRESTClient
    private let logger: Logger
    private let backfill: BackfillRunner
    private let counters = Mutex(Statistics())
    private let botUser = Mutex<String?>(nil)

    /// Makes a responder; `flags` default to a cache of their own.
    public init(
        store: ChainStore, log: EventLog, rest: DiscordRESTClient, configuration: Configuration, flags: FeatureFlags? = nil, logger: Logger
    ) {
        self.log = log
        self.composer = ReplyComposer(store: store, prefix: configuration.commandPrefix)
        self.settings = ResponseSettings(redis: log.redis)
        self.unaskedSettings = UnaskedSettingsCache(settings: self.settings, timeToLive: configuration.settingsCacheTTL)
        var backfills = BackfillStore(redis: log.redis)
        backfills.leaseTTL = configuration.backfillLease
        self.commands = SettingsCommands(
            store: store, chains: ChainCommands(log: log), settings: self.settings, backfills: backfills, owners: configuration.owners,
            flags: flags ?? FeatureFlags(redis: log.redis, logger: logger)
        )
        var backfillConfiguration = BackfillRunner.Configuration(owner: configuration.consumer)
        backfillConfiguration.maxJobs = configuration.backfills
        backfillConfiguration.progressInterval = configuration.backfillProgressInterval
        self.backfill = BackfillRunner(
            store: backfills, chains: store, log: log, rest: rest, configuration: backfillConfiguration, logger: logger
        )
        self.rest = rest
        self.configuration = configuration
        self.logger = logger
    }

    public var statistics: Statistics { self.counters.withLock { $0 } }

    /// Whether the consumer group is joined (for `/ready`).
    public var isRunning: Bool { self.running.load(ordering: .relaxed) }
    private let running = Atomic<Bool>(false)

    public func run() async throws {
        // The series exist from the start (rate() and increase() see the first failure or 429).
        ResponderMetrics.failures.increment(by: 0)
        RESTCounters.registerMetrics()
        try await self.log.ensureGroup(self.configuration.group)
        self.running.store(true, ordering: .relaxed)
        defer { self.running.store(false, ordering: .relaxed) }
        self.logger.info("responder started", metadata: ["responder.consumer": "\(self.configuration.consumer)"])
        await withDiscardingTaskGroup { group in
            for partition in 0..<self.configuration.partitions {
                group.addTask { await self.runPartition(partition) }
            }
            if self.configuration.backfills > 0 { group.addTask { await self.backfill.run() } }
        }
        self.logger.info("responder stopped", metadata: ["responder.consumer": "\(self.configuration.consumer)"])
    }

    /// Reads a partition and answers its entries without waiting for one another: a reply that waits for its
    /// channel's rate-limit bucket must not hold up the partition's other entries (most ask nothing). At most
    /// ``Configuration/maxInFlight`` entries are being handled at once; finished entries are acknowledged together
    /// before each read. Entries whose handling failed (Redis or the network) stay pending and are claimed again
    /// after `claimAfter`; a graceful shutdown stops reading and lets the entries in hand finish.
    private func runPartition(_ partition: Int) async {
        var configuration = PartitionConsumer.Configuration(group: self.configuration.group, consumer: self.configuration.consumer)
        configuration.batchSize = self.configuration.batchSize
        configuration.block = self.configuration.block
        configuration.claimAfter = self.configuration.claimAfter
        configuration.claimEvery = self.configuration.claimAfter
        var consumer = PartitionConsumer(log: self.log, partition: partition, configuration: configuration)
        let hand = EntriesInHand()
        await withDiscardingTaskGroup { group in
            while !Task.isShuttingDownGracefully && !Task.isCancelled {
                do throws(RedisError) {
                    let finished = hand.done.withLock { ids in
                        defer { ids.removeAll() }
                        return ids
                    }
                    do throws(RedisError) {
                        try await consumer.acknowledge(finished, lane: .live)
                    } catch {
                        hand.done.withLock { $0 += finished }
                        throw error
                    }
                    if hand.inFlight.withLock({ $0.count }) >= self.configuration.maxInFlight {
                        try? await Task.sleep(for: .milliseconds(10))
                        continue
                    }
                    // While entries are in hand, wait less for new ones, so their acknowledgements go out soon.
                    let busy = hand.inFlight.withLock { !$0.isEmpty }
                    let batches = try await consumer.next(block: busy ? .milliseconds(100) : nil)
                    consumer.succeeded()
                    for entry in batches.flatMap(\.entries) {
                        // An entry still in hand (a reply waiting longer than `claimAfter`, claimed or re-read) is
                        // not started twice.
                        guard hand.inFlight.withLock({ $0.insert(entry.id).inserted }) else { continue }
                        group.addTask {
                            let finished = await self.handle(entry)
                            hand.inFlight.withLock { _ = $0.remove(entry.id) }
                            if finished { hand.done.withLock { $0.append(entry.id) } }
                        }
                    }
                } catch {
                    if error.code == .cancelled || Task.isCancelled { return }
                    self.logger.warning("responder read failed; retrying", metadata: ["partition": "\(partition)", "error": "\(error)"])
                    if !(await consumer.failed()) { return }
                }
            }
        }
        // The entries in hand finished: acknowledge them.
        let finished = hand.done.withLock { $0 }
        try? await consumer.acknowledge(finished, lane: .live)
    }

    /// Answers one entry if it asks for an answer; true when the entry is done with (answered, nothing to
    /// answer, or refused by Discord, which would refuse again), false when it should be tried again (Redis or the
    /// network failed; the nonce and the marker keep a retry from answering twice).
    private func handle(_ entry: EventLog.Entry) async -> Bool {
        guard let event = try? ChainEvent(fields: entry.fields) else { return true }
        switch event.kind {
        case .create:
            return await self.handleMessage(event)
        case .interaction:
            return await self.handleInteraction(event)
        case .update, .delete, .deleteBulk, .guildRemoved, .threads, .channels, .forgetUser, .memberLeft, .deleteData, .migrate, .relearn, .restore:
            return true
        }
    }

    /// Counts and logs a failed answer; returns whether the entry is done with (false: try again later).
    private func failed(_ what: String, error: any Error, guild: Snowflake, trigger: String) -> Bool {
        self.counters.withLock { $0.failures += 1 }
        ResponderMetrics.failures.increment()
        let retry = Self.isTransient(error)
        self.logger.warning(
            "\(what)", metadata: ["guild": "\(guild)", "trigger": "\(trigger)", "error": "\(error)", "retry": "\(retry)"]
        )
        return !retry
    }

    /// Whether a failure is worth another try later.
    private static func isTransient(_ error: any Error) -> Bool {
        if error is RedisError { return true }
        // No answer, a server error, or still rate limited after the client's own retries: worth another try.
        if let rest = error as? DiscordRESTError { return rest.status == nil || rest.status! >= 500 || rest.status == 429 }
        return false
    }

    private func handleMessage(_ event: ChainEvent) async -> Bool {
        guard event.source == .gateway, let messageID = event.messageID, let channel = event.channelID,
              !event.authorFlags.contains(.bot), !event.authorFlags.contains(.webhook)
        else { return true }
        let bot = await self.botUserID()
        if let bot, event.authorID?.rawValue == bot { return true }
        let content = event.content ?? ""
        var trigger = Trigger.detect(content: content, botUserID: bot, prefix: self.configuration.commandPrefix)
        let unasked = trigger == nil
        if trigger == nil {
            // Unasked: in an auto-respond channel, or by chance; either way not more often than the cooldown.
            guard self.isFresh(event), await self.speaksUnasked(event, messageID: messageID, channel: channel) else { return true }
            trigger = Trigger(kind: .mention, request: .sentence(seed: Tokenizer.tokens(content), debug: false))
            self.counters.withLock { $0.unasked += 1 }
        }
        guard let trigger, self.isFresh(event) else { return true }
        let marker = Self.answeredMarker(guild: event.guildID, trigger: messageID)
        do throws(any Error) {
            let (answered, rules) = try await self.precheck(
                marker, guild: event.guildID, channel: channel, parent: event.threadParent, roles: event.authorRoles
            )
            if answered { return true }
            // Outside the channels singled out, or from someone without a role allowed to ask: no answer.
            let owner = event.authorID.map { self.configuration.owners.contains($0.rawValue) } ?? false
            guard rules.channelAllowed, rules.roleAllowed || unasked || owner else {
                self.counters.withLock { $0.restricted += 1 }
                return true
            }
            let text = try await self.composer.reply(to: trigger.request, guild: event.guildID, ageRestricted: rules.ageRestricted)
            var message = CreateMessage(content: text, replyTo: messageID, nonce: Self.nonce(for: messageID), tts: trigger.tts)
            if case .sentence = trigger.request {
                message.embeds = await self.image(guild: event.guildID, trigger: messageID, chance: rules.imageChance)
            }
            try await self.rest.createMessage(channel: channel.rawValue, message)
            try await self.markAnswered(marker)
            self.counters.withLock { $0.replies += 1 }
            ResponderMetrics.replied(trigger.kind.rawValue, since: event.timestamp)
            return true
        } catch {
            return self.failed("reply failed", error: error, guild: event.guildID, trigger: messageID)
        }
    }

    private func handleInteraction(_ event: ChainEvent) async -> Bool {
        guard let payload = event.payload,
              let interaction = try? JSONDecoder().decode(Interaction.self, from: Data(payload)),
              let trigger = Trigger.slash(interaction)
        else { return true }
        guard self.isFresh(event) else { return true }
        let marker = Self.answeredMarker(guild: event.guildID, trigger: interaction.id.rawValue)
        do throws(any Error) {
            let (answered, rules) = try await self.precheck(
                marker, guild: event.guildID, channel: interaction.channelID ?? Snowflake("0")!, roles: interaction.member?.roles ?? []
            )
            if answered { return true }
            if case .sentence = trigger.request, let refusal = self.refusal(rules, interaction: interaction) {
                self.counters.withLock { $0.restricted += 1 }
                try await self.rest.interactionCallback(
                    id: interaction.id.rawValue, token: interaction.token, .reply(refusal, ephemeral: true)
                )
                try await self.markAnswered(marker)
                return true
            }
            // Discord wants an answer within 3 s: reply at once when the sentence is ready in time, else say
            // "thinking" and edit the reply in when it is.
            let composer = self.composer
            let commands = self.commands
            let unaskedSettings = self.unaskedSettings
            let guild = event.guildID
            let ephemeral: Bool
            if case .command = trigger.request { ephemeral = true } else { ephemeral = false }
            if case .command(.myData) = trigger.request {
                // Reading every record of the guild may take longer than Discord waits: always "thinking" first.
                self.counters.withLock { $0.deferred += 1 }
                try await self.rest.interactionCallback(id: interaction.id.rawValue, token: interaction.token, .deferredEphemeral)
                let (text, file) = try await commands.myData(interaction: interaction, guild: guild)
                try await self.rest.editOriginal(
                    application: interaction.applicationID.rawValue, token: interaction.token, content: text, files: file.map { [$0] } ?? []
                )
                try await self.markAnswered(marker)
                self.counters.withLock { $0.replies += 1 }
                return true
            }
            let generation = Task { () throws -> String in
                if case .command(let command) = trigger.request {
                    defer { unaskedSettings.forget(guild: guild) } // the command may have changed them
                    return try await commands.run(command, interaction: interaction, guild: guild)
                }
                return try await composer.reply(to: trigger.request, guild: guild, ageRestricted: rules.ageRestricted)
            }
            let started = ContinuousClock.now
            let quick = await Self.result(of: generation, within: self.configuration.interactionDeferAfter)
            if let quick {
                var reply = InteractionCallback.reply(try quick.get(), tts: trigger.tts, ephemeral: ephemeral)
                // An image costs a Redis read and a REST call: only when well inside Discord's 3 s.
                if case .sentence = trigger.request, ContinuousClock.now - started < .milliseconds(1000) {
                    reply.data?.embeds = await self.image(guild: guild, trigger: interaction.id.rawValue, chance: rules.imageChance)
                }
                try await self.rest.interactionCallback(id: interaction.id.rawValue, token: interaction.token, reply)
            } else {
                self.counters.withLock { $0.deferred += 1 }
                try await self.rest.interactionCallback(
                    id: interaction.id.rawValue, token: interaction.token, ephemeral ? .deferredEphemeral : .deferred
                )
                let text = try await generation.value
                try await self.rest.editOriginal(application: interaction.applicationID.rawValue, token: interaction.token, content: text)
            }
            try await self.markAnswered(marker)
            self.counters.withLock { $0.replies += 1 }
            ResponderMetrics.replied("slash", since: event.timestamp)
            return true
        } catch let error as DiscordRESTError where error.code == 40060 {
            // Already acknowledged: an earlier delivery answered it.
            self.counters.withLock { $0.duplicatesSkipped += 1 }
            try? await self.markAnswered(marker)
            return true
        } catch {
            return self.failed("interaction reply failed", error: error, guild: event.guildID, trigger: interaction.id.rawValue)
        }
    }

    /// Whether to answer a message nobody asked about: an auto-respond channel, or the chance roll (decided by
    /// the message id, so a redelivery decides the same), and the channel's cooldown is free.
    private func speaksUnasked(_ event: ChainEvent, messageID: String, channel: Snowflake) async -> Bool {
        do {
            let (auto, chance) = try await self.unaskedSettings.rules(guild: event.guildID, channel: channel)
            if !auto {
                guard ResponseSettings.wins(messageID: messageID, partsPerMillion: chance) else { return false }
            }
            return try await self.settings.takeCooldown(guild: event.guildID, channel: channel, duration: self.configuration.cooldown)
        } catch {
            self.logger.warning("cannot read response settings", metadata: ["guild": "\(event.guildID)", "error": "\(error)"])
            return false
        }
    }

    /// The value of `task` if it finishes within `limit`.
    private static func result(of task: Task<String, any Error>, within limit: Duration) async -> Result<String, any Error>? {
        guard limit > .zero else { return nil }
        return await withTaskGroup(of: Result<String, any Error>?.self) { group in
            group.addTask { await task.result }
            group.addTask {
                try? await Task.sleep(for: limit)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    private func isFresh(_ event: ChainEvent) -> Bool {
        guard event.timestamp > 0 else { return true }
        let age = Int64(Date().timeIntervalSince1970 * 1000) - event.timestamp
        let limit = self.configuration.maxAge.components.seconds * 1000
        if age > limit {
            self.counters.withLock { $0.tooOld += 1 }
            return false
        }
        return true
    }

    /// `{g:<guild>}:answered:<trigger>`: set for a day once the trigger is answered.
    static func answeredMarker(guild: Snowflake, trigger: String) -> String {
        "\(ChainKeys(guild: guild).prefix):answered:\(trigger)"
    }

    /// In one round trip: whether a trigger was answered already (counted as a skipped duplicate), and the guild's
    /// restrictions for it.
    private func precheck(
        _ marker: String, guild: Snowflake, channel: Snowflake, parent: Snowflake? = nil, roles: [Snowflake]
    ) async throws(RedisError) -> (answered: Bool, rules: ResponseSettings.ReplyRules) {
        let commands = [RedisCommand("EXISTS", .string(marker))]
            + ResponseSettings.ruleCommands(guild: guild, channel: channel, roles: roles)
        var replies: [RedisReply] = []
        for result in await self.log.redis.pipeline(commands) { replies.append(try result.get()) }
        let answered = replies[0].int == 1
        if answered { self.counters.withLock { $0.duplicatesSkipped += 1 } }
        return (answered, ResponseSettings.rules(from: replies.dropFirst(), channel: channel, parent: parent))
    }

    /// An image the guild posted, for a reply that wins the image chance (decided by the trigger's id, so a
    /// redelivery decides the same): a stored attachment URL, refreshed through Discord (CDN links expire). Nil when
    /// the roll is lost, the guild has no images or anything fails (the reply then goes without).
    private func image(guild: Snowflake, trigger: String, chance: Int) async -> [CreateMessage.Embed]? {
        guard chance > 0, ResponseSettings.wins(messageID: trigger + ":image", partsPerMillion: chance) else { return nil }
        do throws(any Error) {
            let pair = try await self.log.redis.send(
                RedisCommand("HRANDFIELD", .string(ChainKeys(guild: guild).images), 1, "WITHVALUES")
            ).array ?? []
            guard pair.count == 2, let url = pair[1].string else { return nil }
            let refreshed = try await self.rest.refreshAttachmentURLs([url])
            return [CreateMessage.Embed(imageURL: refreshed[url] ?? url)]
        } catch {
            self.logger.notice("no image for the reply", metadata: ["guild": "\(guild)", "error": "\(error)"])
            return nil
        }
    }

    /// Why `/mark` is refused here, if it is: a channel not singled out, or a member without a role allowed to ask
    /// (admins and owners may always ask).
    private func refusal(_ restrictions: ResponseSettings.ReplyRules, interaction: Interaction) -> String? {
        if !restrictions.channelAllowed { return "I don't answer in this channel (`/reply-channels list` says where I do)." }
        if !restrictions.roleAllowed, !self.commands.isAdmin(interaction) {
            return "Only some roles may ask me here (`/ask-roles list`)."
        }
        return nil
    }

    private func markAnswered(_ marker: String) async throws(RedisError) {
        try await self.log.redis.send(RedisCommand("SET", .string(marker), "1", "EX", 86_400))
    }

    /// The bot's user id, from `bot:user` (written by the gateway at READY); cached once known.
    private func botUserID() async -> String? {
        if let known = self.botUser.withLock({ $0 }) { return known }
        let id = try? await self.log.redis.send(RedisCommand("HGET", "bot:user", "id")).string
        if let id { self.botUser.withLock { $0 = id } }
        return id
    }

    /// A nonce of at most 25 characters derived from the trigger (a snowflake has at most 20 digits).
    static func nonce(for trigger: String) -> String { String(trigger.prefix(25)) }
}

/// A partition's entries being handled, and those finished but not yet acknowledged.
private final class EntriesInHand: Sendable {
    let inFlight = Mutex<Set<String>>([])
    let done = Mutex<[String]>([])
}

/// The responder's metrics (swift-metrics; Prometheus when the process bootstraps it).
public enum ResponderMetrics {
    static let failures = Counter(label: "markov_responder_failures_total")
    static let latency = Timer(label: "markov_reply_latency_seconds", preferredDisplayUnit: .seconds)

    /// Counts a reply by trigger kind and records the time since the trigger was created (its snowflake).
    public static func replied(_ kind: String, since timestamp: Int64) {
        Counter(label: "markov_responder_replies_total", dimensions: [("trigger", kind)]).increment()
        guard timestamp > 0 else { return }
        let milliseconds = Int64(Date().timeIntervalSince1970 * 1000) - timestamp
        if milliseconds >= 0 { Self.latency.recordMilliseconds(milliseconds) }
    }
}
