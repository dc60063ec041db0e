import ArgumentParser
import Configuration
import Foundation
import Logging
import MarkovChains
import MarkovCore
import Observability
import Redis
import ServiceLifecycle

/// What every subcommand that talks to Redis starts from: the configuration, a logger, the Redis client, the
/// chain store and the event log.
struct RoleContext: Sendable {
    let configuration: MarkovConfiguration
    let logger: Logger
    let redis: RedisClient
    let store: ChainStore
    let log: EventLog
    /// Feature flags, kept for `MARKOV_FLAGS_TTL`; roles run it as a service so its gauges stay current.
    let flags: FeatureFlags

    init(options: GlobalOptions, label: String) async throws {
        try await self.init(configuration: Self.configuration(options), label: label)
    }

    /// Reads the configuration, with clear errors for bad values.
    static func configuration(_ options: GlobalOptions) async throws -> MarkovConfiguration {
        let reader = try await options.configReader()
        do {
            return try MarkovConfiguration(config: reader)
        } catch let error as RedisError {
            throw ValidationError(error.message)
        } catch {
            throw ValidationError("\(error)")
        }
    }

    init(configuration: MarkovConfiguration, label: String) {
        var logger = Logger(label: label)
        logger.logLevel = configuration.logLevel
        self.configuration = configuration
        self.logger = logger
        self.redis = RedisClient(configuration: configuration.redis, logger: logger)
        self.store = ChainStore(redis: self.redis, stateSize: configuration.stateSize)
        self.log = EventLog(redis: self.redis, partitions: configuration.partitions)
        self.flags = FeatureFlags(redis: self.redis, timeToLive: configuration.flagsTTL, logger: logger)
    }

    /// A consumer name unique to this process: host, pid and a random suffix.
    static func consumerName(role: String) -> String {
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "host"
        return "\(role)-\(host)-\(ProcessInfo.processInfo.processIdentifier)-\(UInt16.random(in: 0...UInt16.max))"
    }
}

extension RoleContext {
    /// The `/metrics`, `/health` and `/ready` service of a role: ready when Redis answers and every check of
    /// the role passes.
    func observability(_ checks: [Observability.Check]) -> ServiceGroupConfiguration.ServiceConfiguration {
        Observability.bootstrap()
        let redis = self.redis
        let ping: Observability.Check = {
            let reply = try? await redis.send(RedisCommand("PING"))
            return ("redis", reply?.string == "PONG")
        }
        return .init(service: Observability.server(host: self.configuration.httpHost, port: self.configuration.httpPort, checks: [ping] + checks, logger: self.logger))
    }
}

/// The Redis client as a service: its background work (``RedisClient/run()``) runs until graceful shutdown
/// reaches this service, which happens after the services listed after it (the roles using it) have finished;
/// then the client closes every connection and `run()` returns.
struct RedisClientService: Service {
    let client: RedisClient

    func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.client.run() }
            try? await gracefulShutdown()
            self.client.shutdown()
        }
    }
}

/// Parses a snowflake option with a clear error.
func snowflake(_ text: String, _ what: String) throws -> Snowflake {
    guard let id = Snowflake(text) else {
        throw ValidationError("\(what) must be a Discord id (1 to 20 digits), not \"\(text)\"")
    }
    return id
}

/// Sets up logging once: to standard error, as text, or as one JSON object per line when `LOG_FORMAT=json`.
enum LoggingSetup {
    static let once: Void = {
        if ProcessInfo.processInfo.environment["LOG_FORMAT"]?.lowercased() == "json" {
            LoggingSystem.bootstrap { label in JSONLogHandler(label: label) }
        } else {
            LoggingSystem.bootstrap { label in StreamLogHandler.standardError(label: label) }
        }
    }()
}

extension RoleContext {
    /// A trainer for the partitions of `guilds` that takes each partition only while no running trainer owns it:
    /// what lets `markov train`, `forget-user` and the like work alone as well as beside running trainers.
    func helperTrainer(for guilds: [Snowflake], cacheMB: Int? = nil) -> MarkovChains.Trainer {
        var configuration = MarkovChains.Trainer.Configuration(consumer: Self.consumerName(role: "helper"))
        if let cacheMB { configuration.cacheBytes = cacheMB << 20 }
        configuration.partitions = self.configuration.partitions
        configuration.commandPrefix = self.configuration.commandPrefix
        configuration.helperPartitions = Set(guilds.map { self.log.keys.partition(of: $0) })
        configuration.block = .milliseconds(200)
        configuration.heartbeat = .milliseconds(500)
        return MarkovChains.Trainer(store: self.store, log: self.log, configuration: configuration, flags: self.flags, logger: self.logger)
    }

    /// Runs `body` while a helper trainer (``helperTrainer(for:)``) applies the guilds' partitions if nobody does.
    func withOwner<Result: Sendable>(
        of guilds: [Snowflake], cacheMB: Int? = nil, _ body: @escaping @Sendable () async throws -> Result
    ) async throws -> Result {
        let trainer = self.helperTrainer(for: guilds, cacheMB: cacheMB)
        return try await withThrowingTaskGroup(of: Result?.self) { group in
            group.addTask {
                try await trainer.run()
                return nil
            }
            group.addTask { try await body() }
            while let result = try await group.next() {
                if let result {
                    group.cancelAll()
                    return result
                }
            }
            throw CancellationError()
        }
    }
}
