import Logging
import MarkovCore
import Redis
import CoreMetrics
import ServiceLifecycle
import Synchronization

/// Applying a batch: decode, fence the guilds, read what the batch depends on (message records, settings, and
/// the states a chain does not know yet), merge per state in ``GuildChain``, and write each guild's changes in
/// calls of bounded size, all guilds in one pipeline.
extension PartitionOwner {
    /// One entry of a batch, decoded.
    struct Item {
        let entry: EventLog.Entry
        let event: ChainEvent
        let id: StreamID

        /// Commands run as procedures of their own, in order with the messages around them.
        var isCommand: Bool {
            switch self.event.kind {
            case .guildRemoved, .deleteData, .forgetUser, .memberLeft, .migrate, .relearn, .restore: true
            default: false
            }
        }
    }

    /// Applies one lane's batch and acknowledges it.
    mutating func process(_ batch: PartitionConsumer.Batch) async throws(RedisError) {
        let lane = batch.lane
        self.batchNumber += 1
        var acknowledged: [String] = []
        var perGuild: [Snowflake: [Item]] = [:]
        var order: [Snowflake] = []
        for entry in batch.entries {
            guard let id = StreamID(entry.id) else {
                acknowledged.append(entry.id)
                continue
            }
            let event: ChainEvent
            do {
                event = try ChainEvent(fields: entry.fields)
            } catch {
                try await self.deadLetter(entry, lane: lane, reason: "malformed entry: \(error)")
                continue
            }
            if event.kind == .interaction {
                acknowledged.append(entry.id)
                continue
            }
            if perGuild[event.guildID] == nil { order.append(event.guildID) }
            perGuild[event.guildID, default: []].append(Item(entry: entry, event: event, id: id))
        }
        // Commands run their steps one after another: whatever is in flight goes through first.
        let hasCommands = perGuild.values.contains { $0.contains(where: \.isCommand) }
        if hasCommands || order.contains(where: { !self.fenced.contains($0) }) { try await self.settleInFlight() }
        self.deferring = !hasCommands
        defer { self.deferring = false }
        try await self.fence(order)
        // Entries a previous owner (or this one, before a failure) applied already are acknowledged as they are.
        var queues: [Snowflake: ArraySlice<Item>] = [:]
        for guild in order {
            guard let chain = self.chains[guild] else {
                // The guild cannot be applied (another state size): its entries go to the dead letters.
                for item in perGuild[guild] ?? [] {
                    try await self.deadLetter(item.entry, lane: lane, reason: "guild \(guild) was trained with another state size")
                }
                continue
            }
            var pending: [Item] = []
            for item in perGuild[guild] ?? [] {
                if let applied = chain.applied[lane], item.id <= applied {
                    acknowledged.append(item.entry.id)
                } else {
                    pending.append(item)
                }
            }
            queues[guild] = pending[...]
        }
        var statistics = Trainer.Statistics()
        statistics.batches = 1
        statistics.entries = batch.entries.count
        // Rounds: each guild's leading messages, all guilds together; then each guild's command, alone.
        while true {
            var runs: [(guild: Snowflake, items: [Item])] = []
            for guild in order {
                guard let queue = queues[guild], !queue.isEmpty else { continue }
                let run = queue.prefix { !$0.isCommand }
                if !run.isEmpty {
                    runs.append((guild, Array(run)))
                    queues[guild] = queue.dropFirst(run.count)
                }
            }
            if !runs.isEmpty {
                acknowledged += try await self.apply(runs, lane: lane, statistics: &statistics)
            }
            var ranCommand = false
            for guild in order {
                guard let item = queues[guild]?.first, item.isCommand else { continue }
                queues[guild] = queues[guild]!.dropFirst()
                try await self.run(command: item, lane: lane, statistics: &statistics)
                acknowledged.append(item.entry.id)
                ranCommand = true
            }
            if runs.isEmpty && !ranCommand { break }
        }
        if self.deferring {
            // The writes leave now; the next batch is prepared while they are in flight.
            try await self.settleInFlight()
            self.inFlight = try self.dispatch(self.deferred, lane: lane, acknowledging: [(lane, acknowledged)])
            self.deferred = []
        } else {
            try await self.consumer.acknowledge(acknowledged, lane: lane)
        }
        try await self.enforceMemoryBound()
        self.record(statistics)
    }

    private func record(_ statistics: Trainer.Statistics) {
        self.trainer.counters.withLock { total in
            total.batches += statistics.batches
            total.entries += statistics.entries
            total.created += statistics.created
            total.updated += statistics.updated
            total.deleted += statistics.deleted
            total.skipped += statistics.skipped
            total.transitions += statistics.transitions
            total.guildsRemoved += statistics.guildsRemoved
            total.deadLetters += statistics.deadLetters
        }
        TrainerMetrics.batches.increment()
        TrainerMetrics.entries.increment(by: statistics.entries)
        TrainerMetrics.created.increment(by: statistics.created)
        TrainerMetrics.updated.increment(by: statistics.updated)
        TrainerMetrics.deleted.increment(by: statistics.deleted)
        TrainerMetrics.skipped.increment(by: statistics.skipped)
        TrainerMetrics.transitions.increment(by: statistics.transitions)
        TrainerMetrics.guildsRemoved.increment(by: statistics.guildsRemoved)
    }

    /// Moves an entry to the partition's dead-letter stream with the reason.
    mutating func deadLetter(_ entry: EventLog.Entry, lane: EventLog.Lane, reason: String) async throws(RedisError) {
        try await self.log.deadLetter(partition: self.partition, group: self.configuration.group, entry: entry, reason: reason, lane: lane)
        self.trainer.counters.withLock { $0.deadLetters += 1 }
        TrainerMetrics.deadLetters.increment()
        self.logger.warning(
            "entry moved to the dead letters",
            metadata: ["trainer.partition": "\(self.partition)", "stream.entry": "\(entry.id)", "reason": "\(reason)"]
        )
    }

    // MARK: Fencing

    /// Records this owner's epoch in every guild not yet fenced, and takes the guild's meta from the same call:
    /// from then on an older owner's writes to the guild are refused, and what is read of it stays true.
    mutating func fence(_ guilds: [Snowflake]) async throws(RedisError) {
        let unfenced = guilds.filter { !self.fenced.contains($0) }
        guard !unfenced.isEmpty else { return }
        guard self.handle.isWritable else { throw RedisError(.cancelled, "the partition's lease may have expired") }
        let commands = unfenced.map { guild in
            RedisCommand("FCALL", ["markov_fence", 1, .string(ChainKeys(guild: guild).meta), .integer(Int(self.handle.epoch))])
        }
        let replies = await self.redis.pipeline(commands)
        for (guild, result) in zip(unfenced, replies) {
            let reply: RedisReply
            switch result {
            case .success(let value): reply = value
            case .failure(let error):
                if error.serverErrorPrefix == "FENCED" { self.noteFenced(error) }
                if error.message.contains("Function not found") { try await self.trainer.store.prepare() }
                throw error
            }
            let meta = Self.fields(reply)
            if let size = meta["state_size"].flatMap({ Int($0) }), size != self.trainer.store.stateSize {
                self.drop(guild)
                self.fenced.insert(guild)
                continue
            }
            let wseq = meta["wseq"].flatMap { Int($0) } ?? 0
            if let known = self.chains[guild], known.wseq == wseq, known.layout == ChainLayout.version {
                // Nobody wrote the guild since this trainer last did: what it knows still holds.
            } else {
                self.drop(guild)
                self.chains[guild] = GuildChain(guild: guild, stateSize: self.trainer.store.stateSize, meta: meta)
            }
            self.fenced.insert(guild)
            self.touch(guild)
            if let chain = self.chains[guild] {
                if chain.layout != ChainLayout.version || meta["legacy_cleanup"] != nil {
                    try await self.upgrade(chain)
                }
            }
        }
    }

    mutating func touch(_ guild: Snowflake) {
        self.useClock += 1
        self.lastUse[guild] = self.useClock
    }

    func noteFenced(_ error: RedisError) {
        self.handle.lose()
        self.trainer.counters.withLock { $0.fenced += 1 }
        TrainerMetrics.fenced.increment()
        self.logger.warning(
            "trainer write refused: a newer owner has written the guild",
            metadata: ["trainer.partition": "\(self.partition)", "trainer.epoch": "\(self.handle.epoch)", "error": "\(error)"]
        )
    }

    static func fields(_ reply: RedisReply) -> [String: String] {
        let flat = reply.array ?? []
        var fields: [String: String] = [:]
        for index in stride(from: 0, to: flat.count - 1, by: 2) {
            if let name = flat[index].string, let value = flat[index + 1].string { fields[name] = value }
        }
        return fields
    }

    // MARK: Messages

    /// What the messages of one guild's run do, decided from the event, the message records and the settings.
    struct Plan {
        enum Effect {
            case learn([String], ChainScope)
            case unlearn([String], ChainScope)
            /// A channel became age-restricted (`true`) or open.
            case restricted(channel: String, Bool)
            case record(id: String, MessageRecord?)
            case image(id: String, url: String?)
            case contentHash(String, Int)
            case thread(id: String, channel: String)
        }

        /// The effects of each item, in order.
        var items: [(id: StreamID, effects: [Effect])] = []
        var created = 0
        var updated = 0
        var deleted = 0
        var skipped = 0
        /// Items whose stored data is damaged, with the reason: dead-lettered, the rest applied.
        var rejected: [(entry: EventLog.Entry, reason: String)] = []
    }

    /// One transaction of writes to a guild, and the last entry it applies (none for the steps of a command).
    struct WriteCall {
        let guild: Snowflake
        let last: StreamID?
        let write: ChainWrite
    }

    /// What a run of messages needs to know from Redis besides the chain.
    struct Context {
        var records: [String: [UInt8]] = [:]
        var listening: Set<String> = []
        var optedOut: Set<String> = []
        var threads: [String: String] = [:]
        var backfillStarted: String?
        /// What is stripped from the run's messages before they are learnt.
        var filters: ContentFilters = []
        /// The guild's age-restricted channels.
        var restricted: Set<String> = []
    }

    /// What the guild strips before learning: its stored setting (or the defaults) when the `training-filters`
    /// flag is on for it, else nothing.
    func filters(guild: Snowflake, stored: String?) async -> ContentFilters {
        guard await self.trainer.flags.isOn(.trainingFilters, guild: guild) else { return [] }
        guard let stored else { return .defaults }
        guard let filters = ContentFilters(stored: stored) else {
            self.logger.warning("the guild's training filters are not readable; the defaults apply", metadata: ["guild": "\(guild)", "filters": "\(stored)"])
            return .defaults
        }
        return filters
    }

    /// The commands that read a run's context, and how to read their replies.
    private func contextCommands(_ items: [Item], keys: ChainKeys) -> (commands: [RedisCommand], ids: [String], channels: [String], authors: [String], threadChannels: [String]) {
        var ids: [String] = []
        var channels: Set<String> = []
        var authors: Set<String> = []
        var threadChannels: Set<String> = []
        for item in items {
            let event = item.event
            switch event.kind {
            case .create:
                if let id = event.messageID { ids.append(id) }
                if let author = event.authorID { authors.insert(author.rawValue) }
                if let channel = event.channelID {
                    // A thread's channel decides whether the message is learnt (gateway messages) and its scope.
                    threadChannels.insert(channel.rawValue)
                    if event.source == .gateway {
                        channels.insert(channel.rawValue)
                        if let parent = event.threadParent { channels.insert(parent.rawValue) }
                    }
                }
            case .update, .delete:
                if let id = event.messageID { ids.append(id) }
            case .deleteBulk:
                ids += event.messageIDs
            default:
                break
            }
        }
        var commands: [RedisCommand] = []
        commands.append(ids.isEmpty ? RedisCommand("PING") : RedisCommand("HMGET", [.string(keys.messages)] + ids.map { .string($0) }))
        let channelList = Array(channels)
        let authorList = Array(authors)
        let threadList = Array(threadChannels)
        commands.append(channelList.isEmpty ? RedisCommand("PING") : RedisCommand("SMISMEMBER", [.string(keys.listen)] + channelList.map { .string($0) }))
        commands.append(authorList.isEmpty ? RedisCommand("PING") : RedisCommand("SMISMEMBER", [.string(keys.optOut)] + authorList.map { .string($0) }))
        commands.append(threadList.isEmpty ? RedisCommand("PING") : RedisCommand("HMGET", [.string(keys.threads)] + threadList.map { .string($0) }))
        commands.append(RedisCommand("HGET", .string(keys.backfill), "started"))
        commands.append(RedisCommand("GET", .string(keys.filters)))
        commands.append(RedisCommand("SMEMBERS", .string(keys.ageRestricted)))
        return (commands, ids, channelList, authorList, threadList)
    }

    /// Decides every item's effects against the records (as the run changes them).
    func plan(_ items: [Item], context: Context, chain: GuildChain) -> Plan {
        var plan = Plan()
        var records: [String: MessageRecord?] = [:]
        var threads = context.threads
        var restricted = context.restricted
        // What batches in flight wrote is not in what was read.
        for (thread, written) in chain.recentThreads { threads[thread] = written.channel }
        for (channel, written) in chain.recentRestricted {
            if written.restricted { restricted.insert(channel) } else { restricted.remove(channel) }
        }
        func record(_ id: String) -> MessageRecord?? {
            if let known = records[id] { return .some(known) }
            if let written = chain.recentRecords[id] { return .some(written.record) }
            guard let bytes = context.records[id] else { return .some(nil) }
            guard let decoded = MessageRecord(bytes) else { return nil }
            return .some(decoded)
        }
        for item in items {
            let event = item.event
            var effects: [Plan.Effect] = []
            /// Records the message's tokens and learns what the filters leave of them.
            /// `learnt`: what the filters leave of the tokens, when the caller has it already.
            func learn(_ id: String, author: String, tokens: [String], learnt: [String]? = nil, image: String?, scope: ChainScope) {
                let record = MessageRecord.learnt(author: author, tokens: tokens, filters: context.filters, scope: scope)
                let learnt = learnt ?? record.learntTokens
                if !learnt.isEmpty {
                    effects.append(.learn(learnt, scope))
                    effects.append(.contentHash(MessageRecord.contentHash(learnt), 1))
                    if let image { effects.append(.image(id: id, url: image)) }
                }
                effects.append(.record(id: id, record))
                records[id] = record
            }
            /// Unlearns what was learnt of a recorded message.
            func forget(_ record: MessageRecord) {
                let learnt = record.learntTokens
                guard !learnt.isEmpty else { return }
                effects.append(.unlearn(learnt, record.scope))
                effects.append(.contentHash(MessageRecord.contentHash(learnt), -1))
            }
            switch event.kind {
            case .create:
                guard let id = event.messageID else { plan.skipped += 1; break }
                guard let existing = record(id) else {
                    plan.rejected.append((item.entry, "the message record of \(id) is malformed"))
                    continue
                }
                var tokens = Tokenizer.tokens(event.content ?? "")
                var known = existing
                if case .editedBeforeCreate(let edited)? = existing {
                    // Edited before this create arrived: learn the edited text.
                    tokens = edited
                    known = nil
                }
                if let parent = event.threadParent, let channel = event.channelID {
                    threads[channel.rawValue] = parent.rawValue
                    effects.append(.thread(id: channel.rawValue, channel: parent.rawValue))
                }
                let skip = self.trainer.filter.skipReason(authorFlags: event.authorFlags, messageType: event.messageType, tokens: tokens) != nil
                let author = event.authorID?.rawValue ?? "0"
                var allowed = event.source != .gateway
                if let origin = event.origin, origin.hasPrefix("backfill:") {
                    // Read by a history backfill: learnt only while the guild's backfill is that one.
                    allowed = context.backfillStarted == String(origin.dropFirst(9))
                } else if !allowed, let channel = event.channelID?.rawValue {
                    allowed = context.listening.contains(channel) || threads[channel].map(context.listening.contains) == true
                }
                let refused = known != nil || skip || !allowed || context.optedOut.contains(author) || tokens.isEmpty
                let learnt = refused ? [] : context.filters.apply(to: tokens)
                if refused || learnt.contains(where: { $0.utf8.count > ChainLayout.maxTokenLength }) {
                    plan.skipped += 1
                } else {
                    // Text of an age-restricted channel (or a thread of one) is learnt into that scope only.
                    let channel = event.channelID?.rawValue
                    let parent = event.threadParent?.rawValue ?? channel.flatMap { threads[$0] }
                    let scope: ChainScope = [channel, parent].contains { $0.map(restricted.contains) == true } ? .ageRestricted : .guild
                    learn(id, author: author, tokens: tokens, learnt: learnt, image: event.attachments.first(where: ChainEvent.isImage), scope: scope)
                    plan.created += 1
                }
            case .update:
                guard let id = event.messageID, let content = event.content else { plan.skipped += 1; break }
                var tokens = Tokenizer.tokens(content)
                let skip = self.trainer.filter.skipReason(authorFlags: event.authorFlags, messageType: event.messageType, tokens: tokens) != nil
                var learnt = skip ? [] : context.filters.apply(to: tokens)
                if skip || learnt.contains(where: { $0.utf8.count > ChainLayout.maxTokenLength }) {
                    tokens = []
                    learnt = []
                }
                guard let existing = record(id) else {
                    plan.rejected.append((item.entry, "the message record of \(id) is malformed"))
                    continue
                }
                switch existing {
                case .deleted?:
                    plan.skipped += 1
                case nil, .editedBeforeCreate?:
                    // Not seen yet: the create, when it comes, learns the edited text.
                    effects.append(.record(id: id, .editedBeforeCreate(tokens: tokens)))
                    records[id] = .editedBeforeCreate(tokens: tokens)
                    plan.skipped += 1
                case .learnt(let author, let old, let filters, let scope)?:
                    if old == tokens && filters == context.filters {
                        plan.skipped += 1
                    } else {
                        // What was learnt goes (under the filters it was learnt with); the new text is learnt
                        // under the guild's filters now, in the scope the message was learnt in.
                        forget(.learnt(author: author, tokens: old, filters: filters, scope: scope))
                        if tokens.isEmpty {
                            effects.append(.record(id: id, nil))
                            effects.append(.image(id: id, url: nil))
                            records[id] = .some(nil)
                        } else {
                            learn(id, author: author, tokens: tokens, learnt: learnt, image: nil, scope: scope)
                        }
                        plan.updated += 1
                    }
                }
            case .delete, .deleteBulk:
                let ids = event.kind == .delete ? [event.messageID].compactMap { $0 } : event.messageIDs
                for id in ids {
                    guard let existing = record(id) else {
                        plan.rejected.append((item.entry, "the message record of \(id) is malformed"))
                        continue
                    }
                    if case .deleted? = existing {
                        plan.skipped += 1
                        continue
                    }
                    if let existing, case .learnt = existing {
                        forget(existing)
                        plan.deleted += 1
                    } else {
                        plan.skipped += 1
                    }
                    effects.append(.record(id: id, .deleted))
                    effects.append(.image(id: id, url: nil))
                    records[id] = .deleted
                }
            case .threads:
                for (thread, channel) in zip(event.messageIDs, event.threadParents) {
                    threads[thread] = channel
                    effects.append(.thread(id: thread, channel: channel))
                }
            case .channels:
                for (channel, isRestricted) in zip(event.messageIDs, event.ageRestricted) where restricted.contains(channel) != isRestricted {
                    if isRestricted { restricted.insert(channel) } else { restricted.remove(channel) }
                    effects.append(.restricted(channel: channel, isRestricted))
                }
            case .interaction, .guildRemoved, .deleteData, .forgetUser, .memberLeft, .migrate, .relearn, .restore:
                break
            }
            plan.items.append((item.id, effects))
        }
        return plan
    }

    /// Applies runs of messages of several guilds; returns the entries done.
    mutating func apply(
        _ runs: [(guild: Snowflake, items: [Item])], lane: EventLog.Lane, statistics: inout Trainer.Statistics
    ) async throws(RedisError) -> [String] {
        // 1. Context: records and settings, every guild in one pipeline.
        var commands: [RedisCommand] = []
        var shapes: [(base: Int, ids: [String], channels: [String], authors: [String], threads: [String])] = []
        for run in runs {
            let made = self.contextCommands(run.items, keys: ChainKeys(guild: run.guild))
            shapes.append((commands.count, made.ids, made.channels, made.authors, made.threadChannels))
            commands += made.commands
        }
        let replies = await self.redis.pipeline(commands)
        var plans: [Plan] = []
        for (index, run) in runs.enumerated() {
            let shape = shapes[index]
            let base = shape.base
            var context = Context()
            if !shape.ids.isEmpty, let values = try replies[base].get().array {
                for (id, value) in zip(shape.ids, values) { if let bytes = value.bytes { context.records[id] = bytes } }
            }
            if !shape.channels.isEmpty, let values = try replies[base + 1].get().array {
                for (channel, value) in zip(shape.channels, values) where value.int == 1 { context.listening.insert(channel) }
            }
            if !shape.authors.isEmpty, let values = try replies[base + 2].get().array {
                for (author, value) in zip(shape.authors, values) where value.int == 1 { context.optedOut.insert(author) }
            }
            if !shape.threads.isEmpty, let values = try replies[base + 3].get().array {
                for (channel, value) in zip(shape.threads, values) { if let parent = value.string { context.threads[channel] = parent } }
            }
            context.backfillStarted = try replies[base + 4].get().string
            context.filters = await self.filters(guild: run.guild, stored: try replies[base + 5].get().string)
            context.restricted = Set((try replies[base + 6].get().array ?? []).compactMap(\.string))
            guard let chain = self.chains[run.guild] else {
                plans.append(Plan())
                continue
            }
            let plan = self.plan(run.items, context: context, chain: chain)
            for (entry, reason) in plan.rejected { try await self.deadLetter(entry, lane: lane, reason: reason) }
            plans.append(plan)
        }
        // 2. The states the chains do not know yet.
        var loadable: [(GuildChain, [(tokens: [String], scope: ChainScope)])] = []
        for (run, plan) in zip(runs, plans) {
            guard let chain = self.chains[run.guild], !chain.isComplete else { continue }
            var messages: [(tokens: [String], scope: ChainScope)] = []
            for item in plan.items {
                for effect in item.effects {
                    switch effect {
                    case .learn(let tokens, let scope), .unlearn(let tokens, let scope): messages.append((tokens, scope))
                    default: break
                    }
                }
            }
            if !messages.isEmpty { loadable.append((chain, messages)) }
        }
        // A guild whose stored chain cannot be read is not written: its entries go to the dead letters with the
        // reason (and the damaged state named), the other guilds go on, and its chain is read afresh next time.
        var done = Set(runs.flatMap { $0.items.map(\.entry.id) })
        if !loadable.isEmpty {
            for (guild, reason) in try await self.load(loadable) {
                self.logger.error(
                    "guild's stored chain cannot be read; its entries go to the dead letters",
                    metadata: ["trainer.partition": "\(self.partition)", "guild": "\(guild)", "error": "\(reason)"]
                )
                self.drop(guild)
                for run in runs where run.guild == guild {
                    for item in run.items {
                        try await self.deadLetter(item.entry, lane: lane, reason: "the guild's stored chain cannot be read: \(reason)")
                        done.remove(item.entry.id)
                    }
                }
            }
        }
        // 3. Merge and encode, in calls of bounded size.
        var calls: [WriteCall] = []
        for (run, plan) in zip(runs, plans) {
            guard let chain = self.chains[run.guild] else { continue }
            calls += self.encode(plan, chain: chain, lane: lane, statistics: &statistics)
            statistics.created += plan.created
            statistics.updated += plan.updated
            statistics.deleted += plan.deleted
            statistics.skipped += plan.skipped
        }
        if self.deferring {
            self.deferred += calls
        } else {
            try await self.send(calls, lane: lane)
        }
        return runs.flatMap { $0.items.map(\.entry.id) }.filter(done.contains)
    }

    /// The write calls of one guild's plan: its messages in order, cut after every `transitionsPerCall`
    /// transitions; each call records the last entry it covers (`marking: false`: none, for the steps of a
    /// command whose entry is done only at its end).
    func encode(
        _ plan: Plan, chain: GuildChain, lane: EventLog.Lane, marking: Bool = true, statistics: inout Trainer.Statistics
    ) -> [WriteCall] {
        var calls: [WriteCall] = []
        var write = ChainWrite(keys: chain.keys)
        var transitions = 0
        var records: [String: MessageRecord?] = [:]
        var images: [String: String?] = [:]
        var hashes: [String: Int] = [:]
        var threads: [(String, String)] = []
        var flags: [(channel: String, restricted: Bool)] = []
        func close(_ last: StreamID) {
            let deletes = records.filter { $0.value == nil }.map { Array($0.key.utf8) }
            let writes = records.compactMap { id, record in record.map { (field: Array(id.utf8), value: $0.encoded) } }
            if !deletes.isEmpty { write.hdel(":m", deletes) }
            if !writes.isEmpty { write.hset(":m", writes) }
            let imageDeletes = images.filter { $0.value == nil }.map { Array($0.key.utf8) }
            let imageWrites = images.compactMap { id, url in url.map { (id, $0) } }
            if !imageDeletes.isEmpty { write.hdel(":img", imageDeletes) }
            if !imageWrites.isEmpty { write.hset(":img", imageWrites) }
            if !threads.isEmpty { write.hset(":threads", threads) }
            // In order: a channel may change twice in a run.
            for (channel, restricted) in flags {
                if restricted { write.sadd(":nsfw", [Array(channel.utf8)]) } else { write.srem(":nsfw", [Array(channel.utf8)]) }
            }
            write.counters(":h", hashes.filter { $0.value != 0 }.map { (field: $0.key, delta: $0.value) })
            chain.flush(into: &write, batch: self.batchNumber)
            var lanes = chain.applied
            if marking { lanes[lane] = last }
            if chain.isTombstone {
                write.persist(":meta")
                write.hdel(":meta", [Array("deleted".utf8)])
                chain.isTombstone = false
            }
            write.hset(":meta", chain.metaFields(lanes: lanes))
            calls.append(WriteCall(guild: chain.guild, last: marking ? last : nil, write: write))
            write = ChainWrite(keys: chain.keys)
            transitions = 0
            records = [:]
            images = [:]
            hashes = [:]
            threads = []
            flags = []
        }
        for (index, item) in plan.items.enumerated() {
            for effect in item.effects {
                switch effect {
                case .learn(let tokens, let scope):
                    transitions += chain.learn(tokens, delta: 1, scope: scope)
                    chain.counters.messages += 1
                case .unlearn(let tokens, let scope):
                    transitions += chain.learn(tokens, delta: -1, scope: scope)
                    chain.counters.messages -= 1
                case .restricted(let channel, let isRestricted):
                    flags.append((channel, isRestricted))
                    chain.recentRestricted[channel] = (isRestricted, self.batchNumber)
                case .record(let id, let record):
                    records[id] = .some(record)
                    chain.recentRecords[id] = (record, self.batchNumber)
                case .image(let id, let url):
                    images[id] = .some(url)
                case .contentHash(let hash, let delta):
                    hashes[hash, default: 0] += delta
                case .thread(let id, let channel):
                    threads.append((id, channel))
                    chain.recentThreads[id] = (channel, self.batchNumber)
                }
            }
            if transitions >= self.configuration.transitionsPerCall || (index == plan.items.count - 1) {
                statistics.transitions += transitions
                close(item.id)
            }
        }
        return calls
    }

    /// Sends the write calls and waits for them (see ``dispatch(_:lane:)``).
    mutating func send(_ calls: [WriteCall], lane: EventLog.Lane) async throws(RedisError) {
        guard let dispatched = try self.dispatch(calls, lane: lane, acknowledging: []) else { return }
        try await self.settle(dispatched)
    }

    /// Writes that left and the entries to acknowledge once they went through.
    struct Dispatched {
        let task: Task<[Snowflake: RedisError], Never>
        let batch: UInt64
        let acknowledgements: [(lane: EventLog.Lane, ids: [String])]
    }

    /// Starts the write calls, each guild's in order (a call whose predecessor failed would be refused by its write
    /// sequence, so a guild stops at its first failure), guilds side by side, up to eight at once on connections of
    /// their own. The chains take the calls' effects at once (write sequence, applied marks), so the next batch can
    /// be prepared while these are in flight; ``settle(_:)`` forgets every chain if any call failed.
    mutating func dispatch(
        _ calls: [WriteCall], lane: EventLog.Lane, acknowledging acknowledgements: [(lane: EventLog.Lane, ids: [String])]
    ) throws(RedisError) -> Dispatched? {
        guard !calls.isEmpty || !acknowledgements.isEmpty else { return nil }
        guard self.handle.isWritable else { throw RedisError(.cancelled, "the partition's lease may have expired") }
        var order: [Snowflake] = []
        var perGuild: [Snowflake: [WriteCall]] = [:]
        for call in calls {
            if perGuild[call.guild] == nil { order.append(call.guild) }
            perGuild[call.guild, default: []].append(call)
        }
        var jobs: [(guild: Snowflake, wseq: Int, writes: [ChainWrite])] = []
        for guild in order {
            guard let chain = self.chains[guild] else { continue }
            let guildCalls = perGuild[guild]!
            jobs.append((guild, chain.wseq, guildCalls.map(\.write)))
            chain.wseq += guildCalls.count
            for call in guildCalls { if let last = call.last { chain.applied[lane] = last } }
        }
        TrainerMetrics.writeCalls.increment(by: calls.count)
        let writer = ChainWriter(redis: self.redis, handle: self.handle)
        let epoch = self.handle.epoch
        let timeout = self.configuration.applyTimeout
        let handle = self.handle
        let task = Task { () -> [Snowflake: RedisError] in
            var failures: [Snowflake: RedisError] = [:]
            await withTaskGroup(of: (Snowflake, RedisError?).self) { group in
                var next = 0
                func start() {
                    guard next < jobs.count else { return }
                    let job = jobs[next]
                    next += 1
                    group.addTask {
                        var wseq = job.wseq
                        for write in job.writes {
                            guard handle.isWritable else {
                                return (job.guild, RedisError(.cancelled, "the partition's lease may have expired"))
                            }
                            do throws(RedisError) {
                                wseq = try await writer.commit(write, epoch: epoch, wseq: wseq, timeout: timeout)
                            } catch {
                                return (job.guild, error)
                            }
                        }
                        return (job.guild, nil)
                    }
                }
                for _ in 0..<8 { start() }
                for await (guild, error) in group {
                    if let error { failures[guild] = error }
                    start()
                }
            }
            return failures
        }
        return Dispatched(task: task, batch: self.batchNumber, acknowledgements: acknowledgements)
    }

    /// Waits for dispatched writes; acknowledges their entries when every call went through. After a failure,
    /// every chain is forgotten (the batches prepared meanwhile assumed success) and the entries are applied
    /// again from what Redis recorded.
    mutating func settle(_ dispatched: Dispatched) async throws(RedisError) {
        let failures = await dispatched.task.value
        if let (_, error) = failures.first {
            for (_, error) in failures where error.serverErrorPrefix == "FENCED" { self.noteFenced(error) }
            self.dropAll()
            throw error
        }
        for chain in self.chains.values { chain.settled(through: dispatched.batch) }
        for (lane, ids) in dispatched.acknowledgements where !ids.isEmpty {
            try await self.consumer.acknowledge(ids, lane: lane)
        }
    }

    /// Reads the states the chains do not know, for the messages about to be learnt or forgotten. Returns the
    /// guilds whose stored chain cannot be read, with the reason (the rest are loaded).
    mutating func load(_ work: [(GuildChain, [(tokens: [String], scope: ChainScope)])]) async throws(RedisError) -> [Snowflake: String] {
        // One HMGET per bucket and step: a state that a split in flight moves is looked for in each bucket it
        // passes through, in the order the splits go (``GuildChain/readLocations(text:hash:)``).
        var reads: [(step: Int, chain: GuildChain, location: GuildChain.Location, states: [(StateKey, [UInt8])])] = []
        var wanted: [(GuildChain, [StateKey])] = []
        for (chain, messages) in work {
            var groups: [GuildChain.Location: [Int: [(StateKey, [UInt8])]]] = [:]
            var seen: Set<StateKey> = []
            var keys: [StateKey] = []
            for (tokens, scope) in messages {
                for key in chain.path(tokens, scope: scope).keys where !chain.isKnown(key) && seen.insert(key).inserted {
                    let text = chain.text(of: key)
                    keys.append(key)
                    for (location, step) in chain.readLocations(text: text, hash: ChainLayout.stateHash(text)) {
                        groups[location, default: [:]][step, default: []].append((key, text))
                    }
                }
            }
            for (location, steps) in groups {
                for (step, states) in steps { reads.append((step, chain, location, states)) }
            }
            if !keys.isEmpty { wanted.append((chain, keys)) }
        }
        guard !reads.isEmpty else { return [:] }
        reads.sort { $0.step < $1.step }
        let stateReplies = await self.redis.pipeline(reads.map { read in
            RedisCommand("HMGET", [.string(read.chain.keys.key(read.location.suffix))] + read.states.map { .bytes($0.1) })
        })
        var found: [ObjectIdentifier: [StateKey: [UInt8]]] = [:]
        for (read, result) in zip(reads, stateReplies) {
            let values = try result.get().array ?? []
            for ((key, _), value) in zip(read.states, values) {
                if let bytes = value.bytes { found[ObjectIdentifier(read.chain), default: [:]][key] = bytes }
            }
        }
        var damaged: [Snowflake: String] = [:]
        var bigs: [(GuildChain, StateKey)] = []
        for (chain, keys) in wanted {
            let values = found[ObjectIdentifier(chain)] ?? [:]
            do throws(ChainDataError) {
                for key in keys { try chain.load(key, value: values[key]) }
            } catch {
                damaged[chain.guild] = error.description
                continue
            }
            for key in chain.bigStatesToRead(keys) { bigs.append((chain, key)) }
        }
        guard !bigs.isEmpty else { return damaged }
        let replies = await self.redis.pipeline(bigs.flatMap { chain, key in
            StoredBigState.commands(keys: chain.keys, text: chain.text(of: key))
        })
        for (index, (chain, key)) in bigs.enumerated() where damaged[chain.guild] == nil {
            let stored = try StoredBigState(replies, at: 3 * index)
            do throws(ChainDataError) {
                try chain.loadBig(key, stored)
            } catch {
                damaged[chain.guild] = error.description
            }
        }
        return damaged
    }
}

