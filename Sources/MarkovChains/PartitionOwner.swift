import Logging
import MarkovCore
import Redis
import CoreMetrics
import ServiceLifecycle
import Synchronization

/// One owned partition: reads its lanes (live first), keeps the chains of its guilds, applies each batch and
/// acknowledges it. Lives in one task of the trainer; stops when asked (after the batch in hand) or at once when
/// the lease is lost.
struct PartitionOwner {
    let trainer: Trainer
    let handle: PartitionHandle
    var consumer: PartitionConsumer
    /// The chains of this partition's guilds, in the order last used (for the memory bound).
    var chains: [Snowflake: GuildChain] = [:]
    var lastUse: [Snowflake: UInt64] = [:]
    var useClock: UInt64 = 0
    /// Guilds fenced with this owner's epoch (their meta read after the fence).
    var fenced: Set<Snowflake> = []
    var cacheBytes = 0
    var lastTrim: ContinuousClock.Instant
    /// Batches prepared so far (their number tags what their writes changed).
    var batchNumber: UInt64 = 0
    /// While a batch of messages is prepared, its writes are kept here instead of sent.
    var deferring = false
    var deferred: [WriteCall] = []
    /// The writes of the last batch, still in flight.
    var inFlight: Dispatched?

    var configuration: Trainer.Configuration { self.trainer.configuration }
    var log: EventLog { self.trainer.log }
    var redis: RedisClient { self.trainer.log.redis }
    var logger: Logger { self.trainer.logger }
    var partition: Int { self.handle.partition }

    init(trainer: Trainer, handle: PartitionHandle) {
        self.trainer = trainer
        self.handle = handle
        var configuration = PartitionConsumer.Configuration(group: trainer.configuration.group, consumer: trainer.configuration.consumer)
        configuration.lanes = [.live, .bulk]
        configuration.batchSize = trainer.configuration.batchSize
        configuration.block = trainer.configuration.block
        configuration.claimAfter = trainer.configuration.claimAfter
        configuration.claimEvery = trainer.configuration.claimEvery
        self.consumer = PartitionConsumer(log: trainer.log, partition: handle.partition, configuration: configuration)
        self.lastTrim = .now - trainer.configuration.trimEvery + .seconds(Int64(handle.partition % 10))
    }

    mutating func run() async {
        var takingOver = true
        while !self.handle.isStopping && !Task.isShuttingDownGracefully && !Task.isCancelled {
            do throws(RedisError) {
                guard self.handle.isWritable else {
                    // The lease may have expired while this process was paused: wait for the next renewal.
                    if !(await Backoff.sleep(.milliseconds(50))) { break }
                    continue
                }
                var batches: [PartitionConsumer.Batch]
                if takingOver {
                    // What the previous owner left unacknowledged comes first, in stream order.
                    batches = try await self.consumer.claimAll()
                    if batches.isEmpty { takingOver = false; continue }
                } else {
                    // With compactions waiting, do not wait long for new entries.
                    let compacting = self.chains.values.contains { $0.needsCompaction }
                    batches = try await self.consumer.next(block: compacting ? .milliseconds(50) : nil)
                    if batches.isEmpty && compacting { try await self.compact() }
                }
                batches = self.liveFirst(batches)
                for batch in batches {
                    guard !self.handle.isLost else { break }
                    try await self.process(batch)
                }
                // Under load (full batches) the writes stay in flight while the next read comes; otherwise they are
                // waited for, so that acknowledgements do not wait for the next entries.
                if !batches.contains(where: { $0.entries.count >= self.configuration.batchSize }) { try await self.settleInFlight() }
                self.consumer.succeeded()
                let waiting = self.chains.values.filter(\.needsCompaction).count
                self.trainer.compactions.withLock { $0[self.partition] = waiting }
                try await self.trimIfDue()
            } catch {
                if let inFlight = self.inFlight {
                    self.inFlight = nil
                    _ = await inFlight.task.value
                }
                self.deferred = []
                if error.serverErrorPrefix == "FENCED" { self.handle.lose() }
                if Task.isCancelled || self.handle.isLost { break }
                self.logger.warning(
                    "trainer batch failed; retrying",
                    metadata: ["trainer.partition": "\(self.partition)", "error": "\(error)"]
                )
                self.dropAll()
                if !(await self.consumer.failed()) { break }
            }
        }
        if !self.handle.isLost { try? await self.settleInFlight() }
        self.trainer.compactions.withLock { _ = $0.removeValue(forKey: self.partition) }
        self.dropAll()
    }

    /// Live entries first; a read brings at most one batch of bulk entries, so live ones wait at most that long.
    private func liveFirst(_ batches: [PartitionConsumer.Batch]) -> [PartitionConsumer.Batch] {
        batches.sorted { $0.lane == .live && $1.lane != .live }
    }

    /// Waits for the writes in flight, if any.
    mutating func settleInFlight() async throws(RedisError) {
        guard let inFlight = self.inFlight else { return }
        self.inFlight = nil
        try await self.settle(inFlight)
    }

    /// Rebuilds some big states of the cached chains when the partition is idle (one short transaction each).
    private mutating func compact() async throws(RedisError) {
        try await self.settleInFlight()
        var calls: [WriteCall] = []
        for chain in self.chains.values where chain.needsCompaction {
            guard chain.scheduleCompaction(successors: 20_000) else { continue }
            var write = ChainWrite(keys: chain.keys)
            chain.flush(into: &write, batch: self.batchNumber)
            write.hset(":meta", chain.metaFields(lanes: chain.applied))
            calls.append(WriteCall(guild: chain.guild, last: nil, write: write))
        }
        try await self.send(calls, lane: .live)
    }

    private mutating func trimIfDue() async throws(RedisError) {
        guard ContinuousClock.now - self.lastTrim >= self.configuration.trimEvery else { return }
        try await self.settleInFlight()
        self.lastTrim = .now
        let trimmed = try await self.log.trim(partition: self.partition)
        if trimmed > 0 {
            self.logger.debug("trimmed", metadata: ["trainer.partition": "\(self.partition)", "trainer.entries": "\(trimmed)"])
        }
        for lane in EventLog.Lane.allCases {
            let stream = self.log.keys.stream(self.partition, lane: lane)
            let removed = try await self.trainer.leases.pruneConsumers(of: stream, idle: self.configuration.consumerIdle)
            if !removed.isEmpty {
                self.logger.info(
                    "removed departed consumers",
                    metadata: ["trainer.partition": "\(self.partition)", "stream": "\(stream)", "consumers": "\(removed.joined(separator: ", "))"]
                )
            }
        }
    }

    /// Forgets every chain (after a failure, or when the partition goes).
    mutating func dropAll() {
        self.chains = [:]
        self.lastUse = [:]
        self.fenced = []
        self.trainer.cacheBytes.subtract(self.cacheBytes, ordering: .relaxed)
        self.cacheBytes = 0
        TrainerMetrics.cacheBytes.record(self.trainer.cacheBytes.load(ordering: .relaxed))
    }

    mutating func drop(_ guild: Snowflake) {
        if let chain = self.chains.removeValue(forKey: guild) {
            self.trainer.cacheBytes.subtract(chain.bytes, ordering: .relaxed)
            self.cacheBytes -= chain.bytes
        }
        self.lastUse[guild] = nil
        self.fenced.remove(guild)
    }

    /// Keeps the chains within the trainer's memory bound: the guilds used least recently go first; a guild alone
    /// over the bound is forgotten too (it is read again as needed). Writes in flight land first, so that no
    /// chain forgotten here is read back without them.
    mutating func enforceMemoryBound() async throws(RedisError) {
        var total = 0
        for chain in self.chains.values { total += chain.bytes }
        self.trainer.cacheBytes.add(total - self.cacheBytes, ordering: .relaxed)
        self.cacheBytes = total
        let limit = self.configuration.cacheBytes / max(1, self.trainer.ownedPartitions.count)
        if total > limit {
            try await self.settleInFlight()
            // Whole guilds used least recently first; then, within the guild left, the states not used lately.
            let byAge = self.lastUse.sorted(by: { $0.value < $1.value }).map(\.key)
            for guild in byAge.dropLast() {
                guard self.cacheBytes > limit * 3 / 4 else { break }
                self.drop(guild)
            }
            if self.cacheBytes > limit, let guild = byAge.last, let chain = self.chains[guild] {
                let before = chain.bytes
                chain.evict(toBytes: max(0, chain.bytes - (self.cacheBytes - limit * 3 / 4)))
                self.cacheBytes -= before - chain.bytes
                self.trainer.cacheBytes.subtract(before - chain.bytes, ordering: .relaxed)
            }
        }
        TrainerMetrics.cacheBytes.record(self.trainer.cacheBytes.load(ordering: .relaxed))
        TrainerMetrics.cacheGuilds.record(self.chains.count)
    }
}
