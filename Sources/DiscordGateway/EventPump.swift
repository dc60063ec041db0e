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
///
/// Memory is bounded: while Redis is unreachable, at most ``maxBacklog`` events wait besides the batch being
/// retried; past that, ``submit(shard:event:checkpoint:)`` waits, so the shards stop reading their sockets (TCP
/// pushes back on Discord) until the log takes events again. Nothing is dropped; a connection Discord closes
/// meanwhile is resumed from the last dispatch read, and Discord replays what came after.
final class EventPump: Sendable {
    private struct Item {
        var shard: Int
        var event: ChainEvent?
        var checkpoint: GatewaySession?
        var fence: ShardFence?
    }

    private struct State {
        var items: [Item] = []
        var waiter: CheckedContinuation<Void, Never>?
        /// Submitters waiting for room in ``items``, by ticket.
        var blocked: [Int: CheckedContinuation<Void, Never>] = [:]
        var nextTicket = 0
        var finished = false
        /// Shutting down: submissions no longer wait for room (the shards must be able to stop).
        var draining = false
        /// A batch is being written.
        var writing = false
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
    /// Shards whose checkpoint was refused because their lease moved on.
    private let fenced = Mutex<Set<Int>>([])
    private let counters = Mutex(Statistics())
    private let log: EventLog
    private let store: GatewayStore
    private let logger: Logger
    /// How long a finishing pump keeps retrying appends that fail (Redis down at shutdown).
    let finishRetryLimit: Duration
    /// Events that may wait besides the batch in flight before submitters wait.
    let maxBacklog: Int

    init(log: EventLog, store: GatewayStore, logger: Logger, finishRetryLimit: Duration = .seconds(10), maxBacklog: Int = 50_000) {
        self.log = log
        self.store = store
        self.logger = logger
        self.finishRetryLimit = finishRetryLimit
        self.maxBacklog = max(1, maxBacklog)
    }

    var statistics: Statistics { self.counters.withLock { $0 } }

    /// Takes the shards whose checkpoints were refused since the last call (their lease moved on).
    func takeFenced() -> Set<Int> {
        self.fenced.withLock { shards in
            defer { shards = [] }
            return shards
        }
    }

    /// Forgets that a shard's events were given up on: a new holding of the shard starts clean.
    func reset(shard: Int) {
        _ = self.abandoned.withLock { $0.remove(shard) }
        _ = self.fenced.withLock { $0.remove(shard) }
    }

    /// Waits until every event queued so far is written (or given up on), so a shard handed over is checkpointed.
    func settled() async {
        while self.state.withLock({ !$0.items.isEmpty || $0.writing }) {
            guard await Backoff.sleep(.milliseconds(10)) else { return }
        }
    }

    /// Events waiting to be written.
    var backlog: Int { self.state.withLock { $0.items.count } }

    /// Queues one dispatch's event (if it has one) and the shard's session as of that dispatch; waits while
    /// ``maxBacklog`` events are already waiting. A submitter cancelled while it waits stops waiting and queues
    /// its event past the bound: nothing read from Discord is dropped (the shard resumes from the last dispatch
    /// it read, so an event not queued would never come back).
    func submit(shard: Int, event: ChainEvent?, checkpoint: GatewaySession?, fence: ShardFence? = nil) async {
        var warned = false
        while true {
            enum Outcome { case queued(CheckedContinuation<Void, Never>?), full }
            let outcome = self.state.withLock { state -> Outcome in
                guard self.hasRoom(state) || Task.isCancelled else { return .full }
                state.items.append(Item(shard: shard, event: event, checkpoint: checkpoint, fence: fence))
                defer { state.waiter = nil }
                return .queued(state.waiter)
            }
            if case .queued(let waiter) = outcome {
                waiter?.resume()
                return
            }
            if !warned {
                warned = true
                self.logger.warning(
                    "the event log is not taking events; the shard pauses reading until it does",
                    metadata: ["shard": "\(shard)", "backlog": "\(self.maxBacklog)"]
                )
            }
            let ticket = self.state.withLock { state -> Int in
                state.nextTicket += 1
                return state.nextTicket
            }
            await withTaskCancellationHandler {
                await withCheckedContinuation { continuation in
                    let resumeNow = self.state.withLock { state -> Bool in
                        if self.hasRoom(state) || Task.isCancelled { return true }
                        state.blocked[ticket] = continuation
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
            } onCancel: {
                self.state.withLock { $0.blocked.removeValue(forKey: ticket) }?.resume()
            }
        }
    }

    /// Whether a submission may be queued now: below the backlog, or shutting down.
    private func hasRoom(_ state: State) -> Bool {
        state.items.count < self.maxBacklog || state.draining || state.finished
    }

    /// Shutting down: submitters stop waiting for room, so the shards can stop.
    func drain() {
        let blocked = self.state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.draining = true
            defer { state.blocked = [:] }
            return Array(state.blocked.values)
        }
        for continuation in blocked { continuation.resume() }
    }

    /// No more submissions: ``run()`` writes what is queued and returns.
    func finish() {
        let (waiter, blocked) = self.state.withLock { state -> (CheckedContinuation<Void, Never>?, [CheckedContinuation<Void, Never>]) in
            state.finished = true
            defer {
                state.waiter = nil
                state.blocked = [:]
            }
            return (state.waiter, Array(state.blocked.values))
        }
        waiter?.resume()
        for continuation in blocked { continuation.resume() }
    }

    /// The writer loop; returns after ``finish()`` once the queue is empty, or when cancelled (what is queued then
    /// is tried once more at most: the checkpoints stay behind what is not written, so a resume replays it).
    func run() async {
        while let batch = await self.next() {
            await self.write(batch)
            self.state.withLock { $0.writing = false }
        }
    }

    private func next() async -> [Item]? {
        while true {
            enum Step { case batch([Item]), done, wait }
            let (step, blocked) = self.state.withLock { state -> (Step, [CheckedContinuation<Void, Never>]) in
                if !state.items.isEmpty {
                    state.writing = true
                    defer {
                        state.items.removeAll(keepingCapacity: true)
                        state.blocked = [:]
                    }
                    return (.batch(state.items), Array(state.blocked.values))
                }
                return (state.finished || Task.isCancelled ? .done : .wait, [])
            }
            for continuation in blocked { continuation.resume() }
            switch step {
            case .batch(let items): return items
            case .done: return nil
            case .wait:
                await withTaskCancellationHandler {
                    await withCheckedContinuation { continuation in
                        let resumeNow = self.state.withLock { state -> Bool in
                            if !state.items.isEmpty || state.finished || Task.isCancelled { return true }
                            state.waiter = continuation
                            return false
                        }
                        if resumeNow { continuation.resume() }
                    }
                } onCancel: {
                    let waiter = self.state.withLock { state in
                        defer { state.waiter = nil }
                        return state.waiter
                    }
                    waiter?.resume()
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
            let results = await self.log.redis.pipeline(pending.map { self.log.appendCommand($0) })
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
            EventLog.recordAppended(firstFailure, lane: .live)
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
            guard await Backoff.sleep(.milliseconds(min(2_000, 50 << min(attempt, 6)))) else {
                self.logger.error(
                    "cancelled with events not appended; their sessions were not checkpointed past them, so a resume replays them",
                    metadata: ["events": "\(pending.count)", "error": "\(lastError)"]
                )
                self.abandoned.withLock { $0.formUnion(batch.map(\.shard)) }
                return
            }
        }
        // Every event of the batch is in the log: checkpoint each shard at its last dispatch of the batch.
        var checkpoints: [Int: (session: GatewaySession, fence: ShardFence?)] = [:]
        for item in batch { if let checkpoint = item.checkpoint { checkpoints[item.shard] = (checkpoint, item.fence) } }
        for shard in self.abandoned.withLock({ $0 }) { checkpoints.removeValue(forKey: shard) }
        let ordered = checkpoints.sorted { $0.key < $1.key }
        let commands = ordered.map { GatewayStore.saveCommand(shard: $0.key, session: $0.value.session, fence: $0.value.fence) }
        if !commands.isEmpty {
            for ((shard, checkpoint), result) in zip(ordered, await self.store.redis.pipeline(commands)) {
                switch result {
                case .failure(let error):
                    // Harmless: the checkpoint stays behind, and the next batch writes a newer one.
                    self.logger.warning("session checkpoint failed", metadata: ["error": "\(error)"])
                case .success(let reply) where checkpoint.fence != nil && reply.int != 1:
                    // The shard's lease moved on (this process was paused past it): the new holder owns the session.
                    self.logger.warning("session checkpoint refused: the shard's lease is held by another process", metadata: ["shard": "\(shard)"])
                    self.fenced.withLock { _ = $0.insert(shard) }
                case .success:
                    break
                }
            }
        }
        self.counters.withLock {
            $0.batches += 1
            $0.checkpoints += commands.count
        }
    }
}
