import CoreMetrics
import MarkovCore
import Redis

/// Reads one partition of the event log for one consumer of a group, the way trainers and responders both need
/// it: the consumer's own pending entries first (after a start or a failure), then entries other consumers left
/// idle (claimed), then new ones, waiting when there are none. It acknowledges, keeps the lag gauges
/// (`markov_stream_lag` for the live lane, `markov_bulk_lag` for the bulk lane) and backs off after failures.
/// The roles are handlers of what it yields.
public struct PartitionConsumer: Sendable {
    public struct Configuration: Sendable {
        public var group: String
        public var consumer: String
        /// The lanes read, in the order their entries are handed out (live first).
        public var lanes: [EventLog.Lane] = [.live]
        /// Entries read per lane at a time.
        public var batchSize = 256
        /// How long a read waits for new entries.
        public var block: Duration = .seconds(2)
        /// Entries idle this long with another consumer are claimed.
        public var claimAfter: Duration = .seconds(60)
        /// How often to look for such entries.
        public var claimEvery: Duration = .seconds(15)
        /// How often the lag gauges are updated.
        public var lagEvery: Duration = .seconds(5)
        /// Waits between failed attempts.
        public var backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(5))

        public init(group: String, consumer: String) {
            self.group = group
            self.consumer = consumer
        }
    }

    /// Entries of one lane, in stream order.
    public struct Batch: Sendable {
        public var lane: EventLog.Lane
        public var entries: [EventLog.Entry]
    }

    public let log: EventLog
    public let partition: Int
    public let configuration: Configuration
    private var replayOwn: Set<EventLog.Lane>
    private var ownCursor: [EventLog.Lane: String] = [:]
    private var lastClaim: ContinuousClock.Instant
    private var lastLag: ContinuousClock.Instant
    private var failures = 0

    public init(log: EventLog, partition: Int, configuration: Configuration) {
        self.log = log
        self.partition = partition
        self.configuration = configuration
        self.replayOwn = Set(configuration.lanes)
        let now = ContinuousClock.now
        self.lastClaim = now
        self.lastLag = now - configuration.lagEvery
    }

    /// The next entries: own pending ones while there are any, claimed ones when it is time to look, else new
    /// ones (waiting up to `block`, or the configured block). Empty when nothing came.
    public mutating func next(block: Duration? = nil) async throws(RedisError) -> [Batch] {
        let clock = ContinuousClock()
        if clock.now - self.lastLag >= self.configuration.lagEvery {
            self.lastLag = clock.now
            try await self.recordLag()
        }
        for lane in self.configuration.lanes where self.replayOwn.contains(lane) {
            let entries = try await self.log.ownPending(
                partition: self.partition, group: self.configuration.group, consumer: self.configuration.consumer,
                count: self.configuration.batchSize, lane: lane, after: self.ownCursor[lane] ?? "0"
            )
            if let last = entries.last {
                self.ownCursor[lane] = last.id
                return [Batch(lane: lane, entries: entries)]
            }
            self.replayOwn.remove(lane)
            self.ownCursor[lane] = nil
        }
        if clock.now - self.lastClaim >= self.configuration.claimEvery {
            var batches: [Batch] = []
            var full = false
            for lane in self.configuration.lanes {
                let (entries, _) = try await self.log.claim(
                    partition: self.partition, group: self.configuration.group, consumer: self.configuration.consumer,
                    minIdle: self.configuration.claimAfter, count: self.configuration.batchSize, lane: lane
                )
                if !entries.isEmpty { batches.append(Batch(lane: lane, entries: entries)) }
                full = full || entries.count == self.configuration.batchSize
            }
            // A full batch means more may be waiting: claim again at once.
            if !full { self.lastClaim = clock.now }
            if !batches.isEmpty {
                PartitionConsumerMetrics.claimed(self.configuration.group).increment(by: batches.reduce(0) { $0 + $1.entries.count })
                return batches
            }
        }
        let read = try await self.log.read(
            partition: self.partition, group: self.configuration.group, consumer: self.configuration.consumer,
            count: self.configuration.batchSize, block: block ?? self.configuration.block, lanes: self.configuration.lanes
        )
        return self.configuration.lanes.compactMap { lane in
            guard let entries = read.first(where: { $0.lane == lane })?.entries, !entries.isEmpty else { return nil }
            return Batch(lane: lane, entries: entries)
        }
    }

    /// Claims every entry pending in the group on this partition, whoever holds it and however briefly: what a
    /// partition's new owner does first (its predecessor's unacknowledged entries). Returns them per lane, oldest
    /// first; call until it returns nothing.
    public mutating func claimAll() async throws(RedisError) -> [Batch] {
        var batches: [Batch] = []
        for lane in self.configuration.lanes {
            let (entries, _) = try await self.log.claim(
                partition: self.partition, group: self.configuration.group, consumer: self.configuration.consumer,
                minIdle: .zero, count: self.configuration.batchSize, lane: lane
            )
            if !entries.isEmpty { batches.append(Batch(lane: lane, entries: entries)) }
        }
        // What was claimed is now this consumer's own: if handling it fails, it is read again from the start.
        if !batches.isEmpty { self.replayOwn.formUnion(batches.map(\.lane)) }
        return batches
    }

    /// Acknowledges entries of a lane.
    public func acknowledge(_ ids: [String], lane: EventLog.Lane) async throws(RedisError) {
        try await self.log.acknowledge(partition: self.partition, group: self.configuration.group, ids: ids, lane: lane)
    }

    /// Records that a round went through (the backoff starts again from its first wait).
    public mutating func succeeded() { self.failures = 0 }

    /// Records a failed round: own pending entries are read again next, after a backoff. Returns `false` when the
    /// task was cancelled during the wait.
    public mutating func failed() async -> Bool {
        self.failures += 1
        self.replayOwn = Set(self.configuration.lanes)
        self.ownCursor = [:]
        return await self.configuration.backoff.wait(attempt: self.failures)
    }

    private func recordLag() async throws(RedisError) {
        for lane in self.configuration.lanes {
            let lag = try await self.log.backlog(group: self.configuration.group, partitions: [self.partition], lanes: [lane])
            Gauge(
                label: lane == .live ? "markov_stream_lag" : "markov_bulk_lag",
                dimensions: [("partition", "\(self.partition)"), ("group", self.configuration.group)]
            ).record(lag)
        }
    }
}

enum PartitionConsumerMetrics {
    static func claimed(_ group: String) -> Counter {
        Counter(label: group == "trainers" ? "markov_trainer_claimed_total" : "markov_\(group)_claimed_total")
    }
}
