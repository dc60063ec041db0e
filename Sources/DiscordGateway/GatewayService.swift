import CoreMetrics
import DiscordProtocol
import DiscordREST
import Logging
import MarkovChains
import Redis
import ServiceLifecycle
import Synchronization

/// `markov gateway`: holds shard connections and pushes the events the system needs onto the event log. It keeps
/// no state of its own (sessions, identify slots and the bot user live in Redis, see ``GatewayStore``), so a
/// process can be killed, restarted or replaced: its successor resumes the sessions instead of identifying.
///
/// Every shard a process holds is leased in Redis (``LeaseTable``, group `gateways`, with a fencing epoch): a shard
/// is held by at most one process at a time, and its session checkpoints are written only while the lease is held
/// at that epoch, so a process paused past its lease can never checkpoint again (it closes and lets go). With
/// ``Configuration/leaseShards`` the processes share the shards evenly through the group's members and rebalance
/// within seconds when one joins or leaves; a dead process's shards are taken over after its lease expires,
/// resuming their sessions from Redis. Otherwise the process holds its listed shards, waiting (and saying so)
/// while another process holds one. A shard handed over closes with a resumable code, its events are written and
/// its session checkpointed, and only then is its lease released.
///
/// On graceful shutdown every shard closes with a resumable code, the queued events are written, the sessions are
/// checkpointed and the leases released; then ``run()`` returns.
public final class GatewayService: Service, Sendable {
    public struct Configuration: Sendable {
        /// The bot token. Secret: never logged.
        public var token: String
        /// `GET /gateway/bot` is used for the URL, shard count and identify limits unless both `gatewayURL` and
        /// `shardCount` are given.
        public var rest: DiscordRESTClient?
        /// Overrides the discovered gateway URL.
        public var gatewayURL: String?
        /// The shards this process holds; `nil` means all of them.
        public var shards: [Int]?
        /// The total number of shards; `nil` means Discord's recommendation.
        public var shardCount: Int?
        public var intents: GatewayIntents = .default
        public var compress = false
        /// Used when discovery is skipped.
        public var maxConcurrency = 1
        /// Discord allows one identify per bucket per 5 s.
        public var identifyInterval: Duration = .seconds(5)
        /// Larger payloads are skipped (the connection resumes).
        public var maxMessageSize = 16 << 20
        public var reconnectBackoffCap: Duration = .seconds(30)
        /// Events that may wait in memory for the event log (Redis unreachable) before the shards stop reading.
        public var eventBacklog = 50_000
        /// Unique per process; also its name in the `gateways` lease group.
        public var owner: String
        /// Take shards from the lease group (shared evenly with the other gateway processes) instead of `shards`.
        public var leaseShards = false
        /// A shard's lease lasts this long unless renewed: a dead process's shards move after it.
        public var leaseTTL: Duration = .seconds(10)
        /// How often leases are renewed and the assignment checked.
        public var heartbeat: Duration = .seconds(1)
        /// The lease group's name.
        public var leaseGroup = "gateways"

        public init(token: String, owner: String) {
            self.token = token
            self.owner = owner
        }
    }

    /// What the shards have done, for tests and metrics.
    public struct Statistics: Sendable, Hashable {
        public var connects = 0
        public var identifies = 0
        public var resumes = 0
        public var dispatches = 0
        public var skippedFrames = 0
        public var zombies = 0
        public var appended = 0
        public var backlog = 0
        /// Shards stopped by a fatal close code, with the reason.
        public var stopped: [Int: String] = [:]
    }

    private let configuration: Configuration
    private let log: EventLog
    private let store: GatewayStore
    private let logger: Logger
    /// The shards held now.
    private let runners = Mutex<[ShardRunner]>([])
    /// Every shard runner this process started, for the statistics.
    private let everyRunner = Mutex<[ShardRunner]>([])
    private let fatalErrors = Mutex<[GatewayShardError]>([])
    private let pump: EventPump

    public init(configuration: Configuration, log: EventLog, logger: Logger) {
        self.configuration = configuration
        self.log = log
        self.store = GatewayStore(redis: log.redis)
        self.logger = logger
        self.pump = EventPump(log: log, store: self.store, logger: logger, maxBacklog: configuration.eventBacklog)
    }

    /// Shards whose connection is identified or resumed, and the shards this process holds (for `/ready`).
    public var readiness: (ready: Int, total: Int) {
        let runners = self.runners.withLock { $0 }
        return (runners.filter(\.isReady).count, runners.count)
    }

    /// Records the shards this process holds and how many are ready (`markov_gateway_shards`,
    /// `markov_gateway_shards_ready`), which it holds (`markov_gateway_shard_held{shard}`, 1 or 0 once held here)
    /// and the shard count (`markov_gateway_shard_count`), and returns the first two; the role's readiness check
    /// calls it at each scrape.
    @discardableResult
    public func recordShardStates() -> (ready: Int, total: Int) {
        let runners = self.runners.withLock { $0 }
        let (ready, total) = (runners.filter(\.isReady).count, runners.count)
        GatewayMetrics.shards.record(total)
        GatewayMetrics.shardsReady.record(ready)
        let held = Set(runners.map(\.shard.id))
        let recorded = self.recordedShards.withLock { recorded in
            defer { recorded.formUnion(held) }
            return recorded.union(held)
        }
        for shard in recorded { GatewayMetrics.held(shard).record(held.contains(shard) ? 1 : 0) }
        let count = self.shardCount.load(ordering: .relaxed)
        if count > 0 { GatewayMetrics.shardCount.record(count) }
        return (ready, total)
    }

    /// Shards whose held gauge was recorded, and the shard count once known.
    private let recordedShards = Mutex<Set<Int>>([])
    private let shardCount = Atomic<Int>(0)

    public var statistics: Statistics {
        var statistics = Statistics()
        for runner in self.everyRunner.withLock({ $0 }) {
            let shard = runner.statistics
            statistics.connects += shard.connects
            statistics.identifies += shard.identifies
            statistics.resumes += shard.resumes
            statistics.dispatches += shard.dispatches
            statistics.skippedFrames += shard.skippedFrames
            statistics.zombies += shard.zombies
        }
        for error in self.fatalErrors.withLock({ $0 }) { statistics.stopped[error.shard.id] = error.reason }
        statistics.appended = self.pump.statistics.appended
        statistics.backlog = self.pump.backlog
        return statistics
    }

    public func run() async throws {
        GatewayMetrics.register()
        let plan = try await self.plan()
        self.shardCount.store(plan.shardCount, ordering: .relaxed)
        self.logger.info(
            "starting shards",
            metadata: ["shards": "\(self.configuration.leaseShards ? "leased" : plan.shards.map(String.init).joined(separator: ","))",
                       "shard_count": "\(plan.shardCount)", "max_concurrency": "\(plan.maxConcurrency)", "gateway": "\(plan.url)"]
        )
        let settings = ShardRunner.Settings(
            token: self.configuration.token, intents: self.configuration.intents, gatewayURL: plan.url,
            compress: self.configuration.compress, maxConcurrency: plan.maxConcurrency,
            identifyInterval: self.configuration.identifyInterval, maxMessageSize: self.configuration.maxMessageSize,
            reconnectBackoffCap: self.configuration.reconnectBackoffCap, name: "markov", owner: self.configuration.owner
        )
        let leases = LeaseTable(redis: self.log.redis, group: self.configuration.leaseGroup, count: plan.shardCount)
        try await leases.prepare()
        let fatal: GatewayShardError? = await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.pump.run() }
            let fatal = await self.hold(plan: plan, settings: settings, leases: leases)
            self.pump.finish()
            return fatal
        }
        self.logger.info("gateway stopped", metadata: ["events_appended": "\(self.pump.statistics.appended)"])
        // When no shard is left for a fatal reason, the process fails with it (a bad token, a missing intent).
        if let fatal { throw fatal }
    }

    /// One holding of a shard: its runner and lease epoch, and whether the runner has ended.
    private final class Holding: Sendable {
        let runner: ShardRunner
        let epoch: UInt64
        let ended = Atomic<Bool>(false)
        let fatal = Mutex<GatewayShardError?>(nil)
        /// Being handed over: its runner stops, then its lease is released.
        let leaving = Atomic<Bool>(false)
        let released = Atomic<Bool>(false)

        init(runner: ShardRunner, epoch: UInt64) {
            self.runner = runner
            self.epoch = epoch
        }
    }

    /// Takes, renews and gives back shard leases until a graceful shutdown, running a shard's connection while its
    /// lease is held; returns a fatal error when every shard held ended with one.
    private func hold(plan: Plan, settings: ShardRunner.Settings, leases: LeaseTable) async -> GatewayShardError? {
        let member = self.configuration.owner
        let ttl = self.configuration.leaseTTL
        var held: [Int: Holding] = [:]
        var reportedWaiting: Set<Int> = []
        var fatal: GatewayShardError?
        await withDiscardingTaskGroup { group in
            func publish() { self.runners.withLock { $0 = held.values.filter { !$0.leaving.load(ordering: .relaxed) }.map(\.runner) } }
            /// Stops a holding's runner, waits for its events to be written and its session checkpointed (bounded),
            /// then gives the lease back.
            func handOver(_ shard: Int, _ holding: Holding, release: Bool) {
                holding.leaving.store(true, ordering: .relaxed)
                group.addTask {
                    await holding.runner.stop()
                    let deadline = ContinuousClock.now + .seconds(5)
                    while !holding.ended.load(ordering: .relaxed) && ContinuousClock.now < deadline {
                        guard await Backoff.sleep(.milliseconds(20)) else { break }
                    }
                    await self.pump.settled()
                    if release { try? await leases.release(shard, member: member, epoch: holding.epoch) }
                    holding.released.store(true, ordering: .relaxed)
                }
            }
            var failures = 0
            while !Task.isShuttingDownGracefully && !Task.isCancelled {
                do throws(RedisError) {
                    let target: Set<Int>
                    if self.configuration.leaseShards {
                        let members = try await leases.heartbeat(member: member, ttl: ttl)
                        target = LeaseTable.assignment(members: members, count: plan.shardCount)[member] ?? []
                    } else {
                        target = Set(plan.shards)
                    }
                    // Leases lost (this process was paused or cut off past them), or checkpoints refused: the shard
                    // is someone else's now. Its connection closes; nothing of it is written again.
                    let kept = await leases.renew(held.filter { !$0.value.released.load(ordering: .relaxed) }.mapValues(\.epoch), member: member, ttl: ttl)
                    let refused = self.pump.takeFenced()
                    for (shard, holding) in held where !holding.leaving.load(ordering: .relaxed) && (!kept.contains(shard) || refused.contains(shard)) {
                        self.logger.warning("lost the lease of a shard; closing its connection", metadata: ["shard": "\(shard)"])
                        handOver(shard, holding, release: false)
                    }
                    for (shard, holding) in held where holding.released.load(ordering: .relaxed) { held[shard] = nil }
                    // Shards assigned elsewhere now: handed over.
                    for (shard, holding) in held where !target.contains(shard) && !holding.leaving.load(ordering: .relaxed) {
                        self.logger.info("handing a shard over", metadata: ["shard": "\(shard)"])
                        handOver(shard, holding, release: true)
                    }
                    // Shards assigned here: taken when free.
                    for shard in target.sorted() where held[shard] == nil {
                        switch try await leases.acquire(shard, member: member, ttl: ttl) {
                        case .acquired(let epoch):
                            reportedWaiting.remove(shard)
                            let holding = try await self.start(shard, epoch: epoch, plan: plan, settings: settings, leases: leases)
                            held[shard] = holding
                            group.addTask {
                                do {
                                    try await holding.runner.run()
                                } catch let error as GatewayShardError {
                                    // One shard's fatal error does not take the others down.
                                    self.fatalErrors.withLock { $0.append(error) }
                                    holding.fatal.withLock { $0 = error }
                                } catch {
                                    self.logger.error("shard failed", metadata: ["shard": "\(shard)", "error": "\(error)"])
                                }
                                holding.ended.store(true, ordering: .relaxed)
                            }
                        case .held(let holder):
                            if reportedWaiting.insert(shard).inserted {
                                self.logger.notice(
                                    "the shard is held by another process; waiting for its lease",
                                    metadata: ["shard": "\(shard)", "holder": "\(holder)"]
                                )
                            }
                        }
                    }
                    publish()
                    failures = 0
                } catch {
                    failures += 1
                    self.logger.warning("cannot renew or take shard leases; retrying", metadata: ["error": "\(error)", "attempt": "\(failures)"])
                }
                // Every shard this process should hold ended for a fatal reason: stop.
                let live = held.values.filter { !$0.leaving.load(ordering: .relaxed) }
                if !live.isEmpty, live.allSatisfy({ $0.ended.load(ordering: .relaxed) && $0.fatal.withLock({ $0 }) != nil }) {
                    fatal = live.first?.fatal.withLock { $0 }
                    break
                }
                guard await Backoff.sleep(self.configuration.heartbeat) else { break }
            }
            // Shutting down: every shard closes resumably, its events are written and its lease given back.
            self.pump.drain()
            for (shard, holding) in held where !holding.leaving.load(ordering: .relaxed) { handOver(shard, holding, release: true) }
            publish()
        }
        if self.configuration.leaseShards { try? await leases.leave(member: member) }
        return fatal
    }

    /// Starts holding a shard under a lease just taken: its stored session (when it is of this shard count) is
    /// resumed.
    private func start(_ id: Int, epoch: UInt64, plan: Plan, settings: ShardRunner.Settings, leases: LeaseTable) async throws(RedisError) -> Holding {
        let shard = ShardID(id: id, count: plan.shardCount)
        var session = try await self.store.session(shard: id)
        if let stored = session, stored.shardCount != plan.shardCount {
            self.logger.notice(
                "discarding a stored session of another shard count",
                metadata: ["shard": "\(shard)", "stored_shard_count": "\(stored.shardCount)"]
            )
            try? await self.store.deleteSession(shard: id)
            session = nil
        }
        self.pump.reset(shard: id)
        let fence = ShardFence(leaseKey: leases.leaseKey(id), member: self.configuration.owner, epoch: epoch)
        let runner = ShardRunner(shard: shard, session: session, settings: settings, pump: self.pump, store: self.store,
                                 fence: fence, logger: self.logger)
        self.everyRunner.withLock { $0.append(runner) }
        self.logger.info("holding a shard", metadata: ["shard": "\(shard)", "epoch": "\(epoch)", "resume": "\(session != nil)"])
        return Holding(runner: runner, epoch: epoch)
    }

    private struct Plan {
        var url: String
        var shardCount: Int
        var shards: [Int]
        var maxConcurrency: Int
    }

    /// The URL, shard count, shard list and identify concurrency: from the configuration, else from discovery.
    private func plan() async throws -> Plan {
        var url = self.configuration.gatewayURL
        var shardCount = self.configuration.shardCount
        var maxConcurrency = self.configuration.maxConcurrency
        if url == nil || shardCount == nil, let rest = self.configuration.rest {
            let bot = try await rest.gatewayBot()
            url = url ?? bot.url
            shardCount = shardCount ?? bot.shards
            maxConcurrency = bot.sessionStartLimit.maxConcurrency
            try await self.store.saveLimits(bot.sessionStartLimit)
            GatewayMetrics.identifiesLeft.record(bot.sessionStartLimit.remaining)
            self.logger.info(
                "discovered the gateway",
                metadata: ["identifies_left": "\(bot.sessionStartLimit.remaining)",
                           "identifies_total": "\(bot.sessionStartLimit.total)",
                           "reset_after_ms": "\(bot.sessionStartLimit.resetAfter)"]
            )
            if bot.sessionStartLimit.remaining < 10 {
                self.logger.warning(
                    "few identifies left today; exhausting them resets the token",
                    metadata: ["identifies_left": "\(bot.sessionStartLimit.remaining)"]
                )
            }
        }
        if self.configuration.shardCount == nil, let discovered = shardCount {
            // `auto`: every gateway uses the count the first one found (resharding is an operator's step).
            let agreed = try await self.store.agreedShardCount(discovered: discovered)
            if agreed != discovered {
                self.logger.notice("using the shard count the gateways agreed on", metadata: ["agreed": "\(agreed)", "recommended": "\(discovered)"])
            }
            shardCount = agreed
        }
        guard let url, let shardCount, shardCount > 0 else {
            throw GatewayConfigurationError(description: "no gateway URL or shard count: set DISCORD_GATEWAY_URL and --shard-count, or let discovery run")
        }
        let shards = self.configuration.shards ?? Array(0..<shardCount)
        if let bad = shards.first(where: { $0 >= shardCount }) {
            throw GatewayConfigurationError(description: "shard \(bad) is not below the shard count \(shardCount)")
        }
        return Plan(url: url, shardCount: shardCount, shards: shards, maxConcurrency: max(1, maxConcurrency))
    }
}

/// A gateway configuration that cannot work.
public struct GatewayConfigurationError: Error, Sendable, CustomStringConvertible {
    public var description: String
}
