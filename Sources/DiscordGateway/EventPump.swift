import CoreMetrics
import DiscordProtocol
import Logging
import MarkovChains
import MarkovCore
import Redis
import Synchronization

/// Moves dispatches from the shards of one process to the event log, in order, and checkpoints each shard's
/// session only after every dispatch up to the checkpoint is in the log.
///
/// Shards ``submit(shard:event:checkpoint:)`` without waiting; one writer drains whatever has accumulated while
/// its previous write was in flight (natural batching: one pipeline of XADDs, then one of session HSETs). After a
/// failed append, it and every later event of the batch are appended again with backoff, so no event lands after
/// a later one (retries duplicate entries; consumers take a message id once);
/// the checkpoint of a batch is written only when all of its appends succeeded. A process killed with events
/// still in memory loses nothing: its checkpoint is behind them, so the next resume replays them.
final class EventPump: Sendable {
    private struct Item {
        var shard: Int
        var event: ChainEvent?
        var checkpoint: GatewaySession?
    }

    private struct State {
        var items: [Item] = []
        var waiter: CheckedContinuation<Void, Never>?
        var finished = false
    }

    /// Counts since start.
    struct Statistics: Sendable, Hashable {
        var appended = 0
        var batches = 0
        var checkpoints = 0
        var appendFailures = 0
    }

    private let state = Mutex(State())
    /// Shards with events the pump gave up on: their checkpoints must never pass those events again.
    private let abandoned = Mutex<Set<Int>>([])
    private let counters = Mutex(Statistics())
    private let log: EventLog
    private let store: GatewayStore
    private let logger: Logger
    /// How long a finishing pump keeps retrying appends that fail (Redis down at shutdown).
    let finishRetryLimit: Duration

    init(log: EventLog, store: GatewayStore, logger: Logger, finishRetryLimit: Duration = .seconds(10)) {
        self.log = log
        self.store = store
        self.logger = logger
        self.finishRetryLimit = finishRetryLimit
    }

    var statistics: Statistics { self.counters.withLock { $0 } }

    /// Events waiting to be written.
    var backlog: Int { self.state.withLock { $0.items.count } }

    /// Queues one dispatch's event (if it has one) and the shard's session as of that dispatch.
    func submit(shard: Int, event: ChainEvent?, checkpoint: GatewaySession?) {
        let waiter = self.state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.items.append(Item(shard: shard, event: event, checkpoint: checkpoint))
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// No more submissions: ``run()`` writes what is queued and returns.
    func finish() {
        let waiter = self.state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.finished = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// The writer loop; returns after ``finish()`` once the queue is empty.
    func run() async {
        while let batch = await self.next() {
            await self.write(batch)
        }
    }

    private func next() async -> [Item]? {
        while true {
            enum Step { case batch([Item]), done, wait }
            let step = self.state.withLock { state -> Step in
                if !state.items.isEmpty {
                    defer { state.items.removeAll(keepingCapacity: true) }
                    return .batch(state.items)
                }
                return state.finished ? .done : .wait
            }
            switch step {
            case .batch(let items): return items
            case .done: return nil
            case .wait:
                await withCheckedContinuation { continuation in
                    let resumeNow = self.state.withLock { state -> Bool in
                        if !state.items.isEmpty || state.finished { return true }
                        state.waiter = continuation
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
            }
        }
    }

    private func write(_ batch: [Item]) async {
        var pending = batch.compactMap(\.event)
        let clock = ContinuousClock()
        var giveUpAt: ContinuousClock.Instant?
        var attempt = 0
        while !pending.isEmpty {
            let results = await self.log.redis.pipeline(pending.map(self.log.appendCommand))
            // Everything from the first failure on goes again, successes after it included: an append that
            // failed must never land after a later event of the same message (a create after its edit would
            // bring back the old text). The repeats are duplicates, which consumers take once.
            var lastError: RedisError?
            var firstFailure = pending.count
            for (index, result) in results.enumerated() {
                if case .failure(let error) = result {
                    firstFailure = min(firstFailure, index)
                    lastError = error
                }
            }
            let failed = Array(pending[firstFailure...])
            self.counters.withLock {
                $0.appended += firstFailure
                $0.appendFailures += failed.count
            }
            GatewayMetrics.appended.increment(by: firstFailure)
            if !failed.isEmpty { GatewayMetrics.appendFailures.increment(by: failed.count) }
            pending = failed
            guard let lastError else { break }
            attempt += 1
            if self.state.withLock({ $0.finished }) {
                let limit = giveUpAt ?? clock.now.advanced(by: self.finishRetryLimit)
                giveUpAt = limit
                if clock.now >= limit {
                    self.logger.error(
                        "giving up on events at shutdown; their sessions were not checkpointed past them, so a resume replays them",
                        metadata: ["events": "\(pending.count)", "error": "\(lastError)"]
                    )
                    self.abandoned.withLock { $0.formUnion(batch.map(\.shard)) }
                    return
                }
            }
            self.logger.warning(
                "appending to the event log failed; retrying",
                metadata: ["events": "\(pending.count)", "attempt": "\(attempt)", "error": "\(lastError)"]
            )
            try? await Task.sleep(for: .milliseconds(min(2_000, 50 << min(attempt, 6))))
        }
        // Every event of the batch is in the log: checkpoint each shard at its last dispatch of the batch.
        var checkpoints: [Int: GatewaySession] = [:]
        for item in batch { if let checkpoint = item.checkpoint { checkpoints[item.shard] = checkpoint } }
        for shard in self.abandoned.withLock({ $0 }) { checkpoints.removeValue(forKey: shard) }
        let commands = checkpoints.sorted { $0.key < $1.key }.map { GatewayStore.saveCommand(shard: $0.key, session: $0.value) }
        if !commands.isEmpty {
            for result in await self.store.redis.pipeline(commands) {
                if case .failure(let error) = result {
                    // Harmless: the checkpoint stays behind, and the next batch writes a newer one.
                    self.logger.warning("session checkpoint failed", metadata: ["error": "\(error)"])
                }
            }
        }
        self.counters.withLock {
            $0.batches += 1
            $0.checkpoints += commands.count
        }
    }
}
