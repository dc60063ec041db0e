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
/// On graceful shutdown every shard closes with a resumable code, the queued events are written, and the
/// sessions are checkpointed; then ``run()`` returns.
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
        /// Unique per process.
        public var owner: String

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
    private let runners = Mutex<[ShardRunner]>([])
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
    /// `markov_gateway_shards_ready`), and returns them; the role's readiness check calls it at each scrape.
    @discardableResult
    public func recordShardStates() -> (ready: Int, total: Int) {
        let (ready, total) = self.readiness
        GatewayMetrics.shards.record(total)
        GatewayMetrics.shardsReady.record(ready)
        return (ready, total)
    }

    public var statistics: Statistics {
        var statistics = Statistics()
        for runner in self.runners.withLock({ $0 }) {
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
        self.logger.info(
            "starting shards",
            metadata: ["shards": "\(plan.shards.map(String.init).joined(separator: ","))", "shard_count": "\(plan.shardCount)",
                       "max_concurrency": "\(plan.maxConcurrency)", "gateway": "\(plan.url)"]
        )
        let settings = ShardRunner.Settings(
            token: self.configuration.token, intents: self.configuration.intents, gatewayURL: plan.url,
            compress: self.configuration.compress, maxConcurrency: plan.maxConcurrency,
            identifyInterval: self.configuration.identifyInterval, maxMessageSize: self.configuration.maxMessageSize,
            reconnectBackoffCap: self.configuration.reconnectBackoffCap, name: "markov", owner: self.configuration.owner
        )
        var runners: [ShardRunner] = []
        for id in plan.shards {
            let shard = ShardID(id: id, count: plan.shardCount)
            var session = try? await self.store.session(shard: id)
            if let stored = session, stored.shardCount != plan.shardCount {
                self.logger.notice(
                    "discarding a stored session of another shard count",
                    metadata: ["shard": "\(shard)", "stored_shard_count": "\(stored.shardCount)"]
                )
                try? await self.store.deleteSession(shard: id)
                session = nil
            }
            runners.append(ShardRunner(shard: shard, session: session, settings: settings, pump: self.pump,
                                       store: self.store, logger: self.logger))
        }
        self.runners.withLock { [runners] in $0 = runners }
        let shardRunners = runners

        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.pump.run() }
                await withTaskGroup(of: Void.self) { shards in
                    for runner in shardRunners {
                        shards.addTask {
                            do {
                                try await runner.run()
                            } catch let error as GatewayShardError {
                                // One shard's fatal error does not take the others down.
                                self.fatalErrors.withLock { $0.append(error) }
                            } catch {
                                self.logger.error("shard failed", metadata: ["shard": "\(runner.shard)", "error": "\(error)"])
                            }
                        }
                    }
                }
                self.pump.finish()
            }
        } onGracefulShutdown: {
            self.pump.drain()
            Task {
                await withTaskGroup(of: Void.self) { group in
                    for runner in shardRunners { group.addTask { await runner.stop() } }
                }
            }
        }
        self.logger.info("gateway stopped", metadata: ["events_appended": "\(self.pump.statistics.appended)"])
        // When no shard is left for a fatal reason, the process fails with it (a bad token, a missing intent).
        let fatal = self.fatalErrors.withLock { $0 }
        if let first = fatal.first, fatal.count == shardRunners.count { throw first }
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
