import Logging
import MarkovCore
import CoreMetrics
import Redis
import ServiceLifecycle
import Synchronization

/// `markov trainer`: owns event-log partitions and applies their events to the guilds' chains, exactly once.
/// Any number of trainers may run; they share the partitions evenly through leases in Redis (``LeaseTable``), so
/// each partition has one owner at a time and each guild one writer.
///
/// The owner does the per-message work (tokenizing, merging a batch per state, encoding values, building alias
/// tables, in ``GuildChain``) and sends finished values through `markov_write`, which refuses a writer whose lease
/// epoch is older than the newest that wrote the guild, or whose previous write did not go through. Each call
/// records the last entry it applied per guild and lane, so a new owner skips what was applied and applies the
/// rest: a killed owner's partitions are taken over after its lease expires, a paused one can never write again.
/// Live events are applied before bulk ones (imports, backfills), which get one bounded batch per turn.
///
/// On graceful shutdown (SIGTERM/SIGINT) a trainer finishes and acknowledges the batch in hand, gives its
/// leases back and leaves the group, so the others take its partitions at once.
public final class Trainer: Service, Sendable {
    /// How a trainer reads and applies.
    public struct Configuration: Sendable {
        /// The consumer group, also the lease group's name.
        public var group = "trainers"
        /// This consumer's name; unique per process.
        public var consumer: String
        /// Partitions of the event log (all writers and readers must agree).
        public var partitions = 16
        /// Entries read per lane of a partition at a time: live entries wait at most one such batch of bulk
        /// entries (imports, backfills).
        public var batchSize = 512
        /// How long one read waits for new entries (also bounds how long a handover waits).
        public var block: Duration = .seconds(2)
        /// Entries idle this long with another consumer of an owned partition are claimed (a paused former owner).
        public var claimAfter: Duration = .seconds(10)
        /// How often to look for such entries.
        public var claimEvery: Duration = .seconds(5)
        /// How often to trim consumed entries from the streams (and remove departed consumers).
        public var trimEvery: Duration = .seconds(60)
        /// A consumer of a partition's streams (any group) with nothing pending and idle this long is removed from
        /// the group when the owner trims: departed trainers and responders do not stay listed for ever.
        public var consumerIdle: Duration = .seconds(3600)
        /// Messages starting with this are commands, not conversation.
        public var commandPrefix = "!mark"
        /// Deadline of a batch's write calls.
        public var applyTimeout: Duration = .seconds(60)
        /// A partition's lease lasts this long unless renewed; a dead owner's partitions move after it.
        public var leaseTTL: Duration = .seconds(10)
        /// How often leases are renewed and the assignment is checked.
        public var heartbeat: Duration = .seconds(1)
        /// The memory the owner may spend keeping chains (bytes, approximate); past it guilds are forgotten.
        public var cacheBytes = 512 << 20
        /// Transitions merged into one write call (keeps every call well under 5 ms in Redis).
        public var transitionsPerCall = 4096
        /// Only these partitions, taken only while nobody holds them, without joining the group: the in-process
        /// trainer of `markov train` and other commands, which must not take partitions from running trainers.
        public var helperPartitions: Set<Int>?

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
        public var transitions = 0
        public var guildsRemoved = 0
        public var deadLetters = 0
        public var claimed = 0
        /// Write calls refused because a newer owner had written the guild.
        public var fenced = 0
        /// Partitions taken and given up.
        public var acquired = 0
        public var released = 0
        public init() {}
    }

    public let configuration: Configuration
    let store: ChainStore
    let log: EventLog
    let leases: LeaseTable
    let logger: Logger
    let filter: TrainingFilter
    /// Feature flags (`training-filters` decides whether a guild's filters apply).
    let flags: FeatureFlags
    let counters = Mutex(Statistics())
    private let owned = Mutex<[Int: PartitionHandle]>([:])
    /// Per owned partition, the guilds with big states waiting to be compacted.
    let compactions = Mutex<[Int: Int]>([:])
    let cacheBytes = Atomic<Int>(0)

    /// Makes a trainer over a chain store and an event log; `flags` default to a cache of their own.
    public init(store: ChainStore, log: EventLog, configuration: Configuration, flags: FeatureFlags? = nil, logger: Logger) {
        self.store = store
        self.flags = flags ?? FeatureFlags(redis: log.redis, logger: logger)
        self.log = log
        self.configuration = configuration
        self.logger = logger
        self.filter = TrainingFilter(commandPrefix: configuration.commandPrefix)
        self.leases = LeaseTable(redis: log.redis, group: configuration.group, count: configuration.partitions)
    }

    /// Counts since start.
    public var statistics: Statistics { self.counters.withLock { $0 } }

    /// The partitions this trainer owns now, with their epochs.
    public var ownedPartitions: [Int: UInt64] {
        self.owned.withLock { $0.filter { $0.value.isWritable }.mapValues(\.epoch) }
    }

    /// Guilds whose big states wait to be compacted (rebuilt when their partition is idle), over the owned partitions.
    public var compactionsPending: Int { self.compactions.withLock { $0.values.reduce(0, +) } }

    /// Whether the group is joined and the libraries loaded (for `/ready`).
    public var isRunning: Bool { self.running.load(ordering: .relaxed) }
    private let running = Atomic<Bool>(false)

    public func run() async throws {
        TrainerMetrics.register()
        try await self.store.prepare()
        try await self.leases.prepare()
        try await self.log.ensureGroup(self.configuration.group, lanes: EventLog.Lane.allCases)
        self.running.store(true, ordering: .relaxed)
        defer { self.running.store(false, ordering: .relaxed) }
        self.logger.info(
            "trainer started",
            metadata: ["trainer.consumer": "\(self.configuration.consumer)", "trainer.partitions": "\(self.configuration.partitions)"]
        )
        await withDiscardingTaskGroup { group in
            var failures = 0
            while !Task.isShuttingDownGracefully && !Task.isCancelled {
                do throws(RedisError) {
                    for partition in try await self.coordinate() {
                        guard let handle = self.owned.withLock({ $0[partition] }) else { continue }
                        group.addTask { await self.own(handle) }
                    }
                    failures = 0
                } catch {
                    failures += 1
                    self.logger.warning("trainer cannot reach the lease group; retrying", metadata: ["error": "\(error)"])
                }
                let wait = failures == 0 ? self.configuration.heartbeat : Backoff(initial: .milliseconds(100), maximum: self.configuration.heartbeat).delay(attempt: failures)
                if !(await Backoff.sleep(wait)) { break }
            }
            // Stopping: every owner finishes its batch and gives its partition back.
            for handle in self.owned.withLock({ Array($0.values) }) { handle.requestStop() }
        }
        if self.configuration.helperPartitions == nil {
            try? await self.leases.leave(member: self.configuration.consumer)
        }
        self.logger.info("trainer stopped", metadata: ["trainer.consumer": "\(self.configuration.consumer)"])
    }

    /// One heartbeat: renews the leases held, gives up those another member should hold, and takes those this
    /// member should hold that are free. Returns the partitions newly taken (their owners are to be started).
    private func coordinate() async throws(RedisError) -> [Int] {
        let member = self.configuration.consumer
        let assigned: Set<Int>
        if let helper = self.configuration.helperPartitions {
            assigned = helper
        } else {
            let members = try await self.leases.heartbeat(member: member, ttl: self.configuration.leaseTTL)
            assigned = LeaseTable.assignment(members: members.contains(member) ? members : members + [member], count: self.configuration.partitions)[member] ?? []
        }
        let handles = self.owned.withLock { $0 }
        let renewedAt = ContinuousClock.now
        let held = handles.filter { !$0.value.isStopping }.mapValues(\.epoch)
        let kept = held.isEmpty ? [] : await self.leases.renew(held, member: member, ttl: self.configuration.leaseTTL)
        for (partition, handle) in handles where held[partition] != nil {
            if kept.contains(partition) {
                handle.renewed(at: renewedAt, ttl: self.configuration.leaseTTL)
            } else {
                handle.lose()
                self.logger.warning(
                    "trainer lost a partition's lease",
                    metadata: ["trainer.partition": "\(partition)", "trainer.epoch": "\(handle.epoch)"]
                )
            }
            if !assigned.contains(partition) { handle.requestStop() }
        }
        var started: [Int] = []
        for partition in assigned.sorted() where handles[partition] == nil {
            let attemptAt = ContinuousClock.now
            guard case .acquired(let epoch) = try await self.leases.acquire(partition, member: member, ttl: self.configuration.leaseTTL)
            else { continue }
            let handle = PartitionHandle(partition: partition, epoch: epoch)
            handle.renewed(at: attemptAt, ttl: self.configuration.leaseTTL)
            self.owned.withLock { $0[partition] = handle }
            self.counters.withLock { $0.acquired += 1 }
            TrainerMetrics.owned(partition).record(1)
            self.logger.info("trainer took a partition", metadata: ["trainer.partition": "\(partition)", "trainer.epoch": "\(epoch)"])
            started.append(partition)
        }
        return started
    }

    /// Runs a partition's owner until it is asked to stop or loses its lease, then gives the lease back.
    private func own(_ handle: PartitionHandle) async {
        var owner = PartitionOwner(trainer: self, handle: handle)
        await owner.run()
        let wasLost = handle.isLost
        // No write goes out from here on; then the lease is given back for the next owner.
        handle.lose()
        if !wasLost {
            try? await self.leases.release(handle.partition, member: self.configuration.consumer, epoch: handle.epoch)
        }
        self.owned.withLock { _ = $0.removeValue(forKey: handle.partition) }
        self.counters.withLock { $0.released += 1 }
        TrainerMetrics.owned(handle.partition).record(0)
        self.logger.info("trainer gave a partition up", metadata: ["trainer.partition": "\(handle.partition)", "trainer.epoch": "\(handle.epoch)"])
    }
}

/// The trainer's view of one partition it owns: its epoch, until when its lease is surely still valid, and whether
/// it was asked to stop.
final class PartitionHandle: Sendable {
    let partition: Int
    let epoch: UInt64

    private struct State {
        var validUntil: ContinuousClock.Instant
        var stopRequested = false
        var lost = false
    }

    private let state: Mutex<State>

    init(partition: Int, epoch: UInt64) {
        self.partition = partition
        self.epoch = epoch
        self.state = Mutex(State(validUntil: .now))
    }

    /// The lease was renewed by a call that started at `start`: it holds until `start + ttl`; writes stop a fifth
    /// of the TTL before that, in case this process is paused meanwhile.
    func renewed(at start: ContinuousClock.Instant, ttl: Duration) {
        self.state.withLock { $0.validUntil = start + ttl * 0.8 }
    }

    func requestStop() { self.state.withLock { $0.stopRequested = true } }
    func lose() { self.state.withLock { $0.lost = true } }

    var isLost: Bool { self.state.withLock { $0.lost } }
    var isStopping: Bool { self.state.withLock { $0.stopRequested || $0.lost } }
    /// Whether writes may go out: the lease is held and cannot have expired.
    var isWritable: Bool { self.state.withLock { !$0.lost && ContinuousClock.now < $0.validUntil } }
}

/// The trainer's metrics (swift-metrics; Prometheus when the process bootstraps it).
enum TrainerMetrics {
    static let batches = Counter(label: "markov_trainer_batches_total")
    static let entries = Counter(label: "markov_trainer_entries_total")
    static let created = Counter(label: "markov_trainer_messages_total", dimensions: [("result", "created")])
    static let updated = Counter(label: "markov_trainer_messages_total", dimensions: [("result", "updated")])
    static let deleted = Counter(label: "markov_trainer_messages_total", dimensions: [("result", "deleted")])
    static let skipped = Counter(label: "markov_trainer_messages_total", dimensions: [("result", "skipped")])
    static let transitions = Counter(label: "markov_trainer_transitions_total")
    static let guildsRemoved = Counter(label: "markov_trainer_guilds_removed_total")
    static let deadLetters = Counter(label: "markov_trainer_dead_letters_total")
    static let aliasRebuilds = Counter(label: "markov_trainer_alias_rebuilds_total")
    static let fenced = Counter(label: "markov_trainer_fenced_writes_total")
    static let writeCalls = Counter(label: "markov_trainer_write_calls_total")
    static let cacheBytes = Gauge(label: "markov_trainer_cache_bytes")
    static let cacheGuilds = Gauge(label: "markov_trainer_cache_guilds")
    /// Creates every series at 0 (they are made on first use otherwise): a counter that first appears at 1 looks
    /// unchanged to `increase()`, so the first dead letter would raise no alert.
    static func register() {
        for counter in [batches, entries, created, updated, deleted, skipped, transitions, guildsRemoved, deadLetters,
                        aliasRebuilds, fenced, writeCalls] { counter.increment(by: 0) }
    }

    static func owned(_ partition: Int) -> Gauge {
        Gauge(label: "markov_trainer_partition_owned", dimensions: [("partition", "\(partition)")])
    }
}
