import Logging
import MarkovCore
import CoreMetrics
import Redis
import ServiceLifecycle
import Synchronization

/// `markov trainer`: reads every partition of the event log in the consumer group `trainers` and applies each
/// message to its guild's chain exactly once. Any number of trainers may run; Redis hands each entry to one.
///
/// Exactly once: a guild's entries of a batch go to Redis in one atomic Function call that skips message ids it
/// already knows (a replay, a redelivery after a crash, a re-import) and remembers deleted ids; entries are
/// acknowledged only after their call returned. A trainer killed between the call and the acknowledgement leaves
/// its entries pending; another trainer claims them once they have been idle for ``Configuration/claimAfter`` and
/// the call skips what was already applied.
///
/// On graceful shutdown (SIGTERM/SIGINT) a trainer finishes and acknowledges the batch in hand, then returns.
public final class Trainer: Service, Sendable {
    /// How a trainer reads and applies.
    public struct Configuration: Sendable {
        /// The consumer group.
        public var group = "trainers"
        /// This consumer's name; unique per process.
        public var consumer: String
        /// Partitions of the event log (all writers and readers must agree).
        public var partitions = 16
        /// Entries read per partition per batch.
        public var batchSize = 256
        /// How long one read waits for new entries (also bounds how long shutdown waits).
        public var block: Duration = .seconds(2)
        /// Entries idle this long in another consumer's pending list are claimed.
        public var claimAfter: Duration = .seconds(60)
        /// How often to look for such entries.
        public var claimEvery: Duration = .seconds(15)
        /// Deliveries after which an entry that still fails goes to the dead-letter stream.
        public var maxDeliveries = 3
        /// How often to trim consumed entries from the streams.
        public var trimEvery: Duration = .seconds(60)
        /// Messages starting with this are commands, not conversation.
        public var commandPrefix = "!mark"
        /// Deadline of a batch's apply calls: Redis runs them one at a time, so under load one call may wait
        /// behind many others; cutting it off would only make it run again.
        public var applyTimeout: Duration = .seconds(120)

        /// Defaults, with the consumer name.
        public init(consumer: String) { self.consumer = consumer }
    }

    /// Counts since start, for progress and tests.
    public struct Statistics: Sendable, Hashable {
        public var batches = 0
        public var entries = 0
        public var created = 0
        public var updated = 0
        public var deleted = 0
        public var skipped = 0
        public var guildsRemoved = 0
        public var deadLetters = 0
        public var claimed = 0
        public init() {}
    }

    public let configuration: Configuration
    private let store: ChainStore
    private let log: EventLog
    private let logger: Logger
    private let filter: TrainingFilter
    private let counters = Mutex(Statistics())

    /// Makes a trainer over a chain store and an event log.
    public init(store: ChainStore, log: EventLog, configuration: Configuration, logger: Logger) {
        self.store = store
        self.log = log
        self.configuration = configuration
        self.logger = logger
        self.filter = TrainingFilter(commandPrefix: configuration.commandPrefix)
    }

    /// Counts since start.
    public var statistics: Statistics { self.counters.withLock { $0 } }

    /// Whether the consumer group is joined and the library loaded (for `/ready`).
    public var isRunning: Bool { self.running.load(ordering: .relaxed) }
    private let running = Atomic<Bool>(false)

    public func run() async throws {
        try await self.store.prepare()
        try await self.log.ensureGroup(self.configuration.group)
        self.running.store(true, ordering: .relaxed)
        defer { self.running.store(false, ordering: .relaxed) }
        self.logger.info(
            "trainer started",
            metadata: ["trainer.consumer": "\(self.configuration.consumer)",
                       "trainer.partitions": "\(self.configuration.partitions)"]
        )
        await withDiscardingTaskGroup { group in
            for partition in 0..<self.configuration.partitions {
                group.addTask { await self.runPartition(partition) }
            }
        }
        self.logger.info("trainer stopped", metadata: ["trainer.consumer": "\(self.configuration.consumer)"])
    }

    private func runPartition(_ partition: Int) async {
        let clock = ContinuousClock()
        var lastClaim = clock.now
        var lastLag = clock.now - .seconds(5)
        var lastTrim = clock.now - self.configuration.trimEvery + .seconds(Int64(partition % 10))
        // Entries this consumer was given before a restart or an error are read again first.
        var replayOwnPending = true
        var failures = 0
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do throws(RedisError) {
                if replayOwnPending {
                    let own = try await self.log.redis.send(
                        RedisCommand("XREADGROUP", ["GROUP", .string(self.configuration.group),
                                                    .string(self.configuration.consumer), "COUNT",
                                                    .integer(self.configuration.batchSize), "STREAMS",
                                                    .string(self.log.keys.stream(partition)), "0"])
                    )
                    let entries = EventLog.entries(own.array?.first?.array?[1] ?? .null)
                    if entries.isEmpty {
                        replayOwnPending = false
                    } else {
                        try await self.process(entries, partition: partition)
                    }
                    continue
                }
                if clock.now - lastClaim >= min(self.configuration.claimEvery, self.configuration.claimAfter) {
                    let stale = try await self.log.claimStale(
                        partition: partition, group: self.configuration.group, consumer: self.configuration.consumer,
                        minIdle: self.configuration.claimAfter, count: self.configuration.batchSize
                    )
                    if !stale.isEmpty {
                        self.counters.withLock { $0.claimed += stale.count }
                        TrainerMetrics.claimed.increment(by: stale.count)
                        self.logger.info(
                            "claimed stale entries",
                            metadata: ["trainer.partition": "\(partition)", "trainer.entries": "\(stale.count)"]
                        )
                        try await self.process(stale, partition: partition)
                    }
                    // A full batch means more may be waiting: claim again at once.
                    if stale.count < self.configuration.batchSize { lastClaim = clock.now }
                }
                if clock.now - lastLag >= .seconds(5) {
                    lastLag = clock.now
                    let lag = try await self.log.backlog(group: self.configuration.group, partitions: [partition])
                    Gauge(label: "markov_stream_lag", dimensions: [("partition", "\(partition)"), ("group", self.configuration.group)])
                        .record(lag)
                }
                if clock.now - lastTrim >= self.configuration.trimEvery {
                    lastTrim = clock.now
                    let trimmed = try await self.log.trim(partition: partition)
                    if trimmed > 0 {
                        self.logger.debug("trimmed", metadata: ["trainer.partition": "\(partition)", "trainer.entries": "\(trimmed)"])
                    }
                }
                let entries = try await self.log.read(
                    partition: partition, group: self.configuration.group, consumer: self.configuration.consumer,
                    count: self.configuration.batchSize, block: self.configuration.block
                )
                if !entries.isEmpty { try await self.process(entries, partition: partition) }
                failures = 0
            } catch {
                if error.code == .cancelled || Task.isCancelled { return }
                failures += 1
                replayOwnPending = true
                self.logger.warning(
                    "trainer batch failed; retrying",
                    metadata: ["trainer.partition": "\(partition)", "error": "\(error)"]
                )
                try? await Task.sleep(for: Backoff(initial: .milliseconds(100), maximum: .seconds(5)).delay(attempt: failures))
            }
        }
    }

    /// What one entry asks of one guild.
    private enum Work {
        case apply([ChainStore.Operation])
        case removeGuild
    }

    /// Applies a batch of entries from one partition and acknowledges them.
    func process(_ entries: [EventLog.Entry], partition: Int) async throws(RedisError) {
        var acknowledged: [String] = []
        var perGuild: [Snowflake: [(entry: EventLog.Entry, work: Work)]] = [:]
        var guildOrder: [Snowflake] = []
        for entry in entries {
            let event: ChainEvent
            do {
                event = try ChainEvent(fields: entry.fields)
            } catch {
                try await self.deadLetter(entry, partition: partition, reason: "malformed entry: \(error)")
                continue
            }
            guard let work = self.work(for: event) else {
                acknowledged.append(entry.id)
                continue
            }
            if perGuild[event.guildID] == nil { guildOrder.append(event.guildID) }
            perGuild[event.guildID, default: []].append((entry, work))
        }
        // Each guild's work is a sequence of calls (runs of operations, cut by guild removals); guilds are
        // independent, so their calls go out together, one round per position.
        var calls: [Snowflake: [(entries: [EventLog.Entry], command: RedisCommand, removal: Bool)]] = [:]
        for guild in guildOrder {
            var sequence: [(entries: [EventLog.Entry], command: RedisCommand, removal: Bool)] = []
            var run: [EventLog.Entry] = []
            var operations: [ChainStore.Operation] = []
            for (entry, work) in perGuild[guild] ?? [] {
                switch work {
                case .apply(let ops):
                    run.append(entry)
                    operations += ops
                case .removeGuild:
                    if !run.isEmpty {
                        sequence.append((run, self.store.applyCommand(operations, guild: guild), false))
                        run = []
                        operations = []
                    }
                    sequence.append(([entry], RedisCommand("FCALL", ["markov_delete_guild", 1, .string(ChainKeys(guild: guild).meta)]), true))
                }
            }
            if !run.isEmpty { sequence.append((run, self.store.applyCommand(operations, guild: guild), false)) }
            calls[guild] = sequence
        }
        var round = 0
        var totals = ChainStore.ApplyResult()
        var removals = 0
        while true {
            let batch = guildOrder.compactMap { guild -> (Snowflake, [EventLog.Entry], RedisCommand, Bool)? in
                guard let sequence = calls[guild], round < sequence.count else { return nil }
                let call = sequence[round]
                return (guild, call.entries, call.command, call.removal)
            }
            if batch.isEmpty { break }
            let results = await self.log.redis.pipeline(batch.map(\.2), timeout: self.configuration.applyTimeout)
            for ((guild, callEntries, _, removal), result) in zip(batch, results) {
                switch result {
                case .success(let reply):
                    if removal {
                        removals += 1
                    } else if let applied = try? ChainStore.applyResult(reply) {
                        totals.created += applied.created
                        totals.updated += applied.updated
                        totals.deleted += applied.deleted
                        totals.skipped += applied.skipped
                        totals.rebuilds += applied.rebuilds
                    }
                    acknowledged += callEntries.map(\.id)
                case .failure(let error) where error.code == .server:
                    if error.message.contains("Function not found") {
                        try await self.store.prepare()
                        throw error
                    }
                    // Find the entry at fault: apply each alone; the rest go through.
                    acknowledged += try await self.isolate(callEntries, guild: guild, partition: partition, error: error)
                case .failure(let error):
                    throw error
                }
            }
            round += 1
        }
        try await self.log.acknowledge(partition: partition, group: self.configuration.group, ids: acknowledged)
        self.counters.withLock { statistics in
            statistics.batches += 1
            statistics.entries += entries.count
            statistics.created += totals.created
            statistics.updated += totals.updated
            statistics.deleted += totals.deleted
            statistics.skipped += totals.skipped
            statistics.guildsRemoved += removals
        }
        TrainerMetrics.batches.increment()
        TrainerMetrics.entries.increment(by: entries.count)
        TrainerMetrics.created.increment(by: totals.created)
        TrainerMetrics.updated.increment(by: totals.updated)
        TrainerMetrics.deleted.increment(by: totals.deleted)
        TrainerMetrics.skipped.increment(by: totals.skipped)
        TrainerMetrics.aliasRebuilds.increment(by: totals.rebuilds)
        TrainerMetrics.guildsRemoved.increment(by: removals)
    }

    /// Applies entries one by one after their joint call failed; returns those that are done (applied, or
    /// dead-lettered after too many deliveries).
    private func isolate(
        _ entries: [EventLog.Entry], guild: Snowflake, partition: Int, error: RedisError
    ) async throws(RedisError) -> [String] {
        var done: [String] = []
        for entry in entries {
            guard let event = try? ChainEvent(fields: entry.fields), case .apply(let operations)? = self.work(for: event)
            else {
                done.append(entry.id)
                continue
            }
            do {
                try await self.store.apply(operations, guild: guild)
                done.append(entry.id)
            } catch where error.code == .server {
                let deliveries = try await self.log.deliveryCounts(
                    partition: partition, group: self.configuration.group, ids: [entry.id]
                )[entry.id] ?? 1
                if deliveries >= self.configuration.maxDeliveries {
                    try await self.deadLetter(entry, partition: partition, reason: "failed \(deliveries) times: \(error.message)")
                } else {
                    self.logger.warning(
                        "entry failed; it will be retried",
                        metadata: ["trainer.partition": "\(partition)", "stream.entry": "\(entry.id)",
                                   "trainer.deliveries": "\(deliveries)", "error": "\(error)"]
                    )
                }
            }
        }
        return done
    }

    private func deadLetter(_ entry: EventLog.Entry, partition: Int, reason: String) async throws(RedisError) {
        try await self.log.deadLetter(partition: partition, group: self.configuration.group, entry: entry, reason: reason)
        self.counters.withLock { $0.deadLetters += 1 }
        TrainerMetrics.deadLetters.increment()
        self.logger.warning(
            "entry moved to the dead-letter stream",
            metadata: ["trainer.partition": "\(partition)", "stream.entry": "\(entry.id)", "reason": "\(reason)"]
        )
    }

    /// The chain work an event asks for, or `nil` when there is none.
    private func work(for event: ChainEvent) -> Work? {
        let force = event.source != .gateway
        switch event.kind {
        case .create:
            guard let id = event.messageID else { return nil }
            let tokens = Tokenizer.tokens(event.content ?? "")
            if self.filter.skipReason(authorFlags: event.authorFlags, messageType: event.messageType, tokens: tokens) != nil {
                return nil
            }
            let create = ChainStore.Operation.create(
                id: id, author: event.authorID?.rawValue ?? "0", channel: event.channelID?.rawValue ?? "",
                force: force, message: LearnedMessage(tokens: tokens, stateSize: self.store.stateSize),
                image: event.attachments.first(where: ChainEvent.isImage),
                backfill: event.origin.flatMap { $0.hasPrefix("backfill:") ? String($0.dropFirst(9)) : nil }
            )
            // A message in a thread the gateway knew: record the thread's channel first, in the same atomic call, so
            // the channel check cannot miss a thread whose own event another trainer has not applied yet.
            if let thread = event.channelID, let parent = event.threadParent {
                return .apply([.thread(id: thread.rawValue, channel: parent.rawValue), create])
            }
            return .apply([create])
        case .update:
            guard let id = event.messageID, let content = event.content else { return nil }
            var tokens = Tokenizer.tokens(content)
            if self.filter.skipReason(authorFlags: event.authorFlags, messageType: event.messageType, tokens: tokens) != nil {
                tokens = []
            }
            return .apply([.update(id: id, message: LearnedMessage(tokens: tokens, stateSize: self.store.stateSize))])
        case .delete:
            guard let id = event.messageID else { return nil }
            return .apply([.delete(id: id)])
        case .deleteBulk:
            return .apply(event.messageIDs.map { .delete(id: $0) })
        case .guildRemoved:
            return .removeGuild
        case .threads:
            return .apply(zip(event.messageIDs, event.threadParents).map { .thread(id: $0, channel: $1) })
        case .interaction:
            return nil
        }
    }
}

/// The trainer's metrics (swift-metrics; Prometheus when the process bootstraps it).
enum TrainerMetrics {
    static let batches = Counter(label: "markov_trainer_batches_total")
    static let entries = Counter(label: "markov_trainer_entries_total")
    static let created = Counter(label: "markov_trainer_messages_total", dimensions: [("result", "created")])
    static let updated = Counter(label: "markov_trainer_messages_total", dimensions: [("result", "updated")])
    static let deleted = Counter(label: "markov_trainer_messages_total", dimensions: [("result", "deleted")])
    static let skipped = Counter(label: "markov_trainer_messages_total", dimensions: [("result", "skipped")])
    static let guildsRemoved = Counter(label: "markov_trainer_guilds_removed_total")
    static let deadLetters = Counter(label: "markov_trainer_dead_letters_total")
    static let claimed = Counter(label: "markov_trainer_claimed_total")
    static let aliasRebuilds = Counter(label: "markov_trainer_alias_rebuilds_total")
}
