import DiscordGateway
import DiscordProtocol
import DiscordREST
import FakeDiscord
import Foundation
import Logging
import MarkovChains
import MarkovCore
import NIOPosix
import Redis
import ServiceLifecycle
import Testing

/// Gateway tests share Redis keys (`gateway:*`, the event streams), so they run one at a time, in a database of
/// their own, emptied before each test, on a server of their own (`MARKOV_TEST_DISCORD_REDIS_URL`, port 16380 under
/// `make test`): their floods would otherwise hold up the Redis client tests, whose deadlines are tight.
@Suite("Gateway integration", .enabled(if: GatewayHarness.isConfigured), .serialized)
enum GatewayIntegrationTests {}

struct GatewayHarness {
    static let environment = ProcessInfo.processInfo.environment
    static let isConfigured = environment["MARKOV_TEST_DISCORD_REDIS_URL"] != nil || environment["CI"] != nil
    static let database = 3
    static var redisURL: String {
        (environment["MARKOV_TEST_DISCORD_REDIS_URL"] ?? "redis://127.0.0.1:16380") + "/\(database)"
    }
    static let partitions = 4

    static let logger: Logger = {
        var logger = Logger(label: "gateway-tests")
        logger.logLevel = environment["MARKOV_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
        return logger
    }()

    let redis: RedisClient
    let log: EventLog
    let store: GatewayStore

    /// The harness's view of Redis: generous deadlines, since under a flood Redis and both cores are busy.
    static func configuration() throws -> RedisConfiguration {
        var configuration = try RedisConfiguration(url: Self.redisURL)
        configuration.commandTimeout = .seconds(30)
        return configuration
    }

    /// The fake Discord's own event loop, so its floods never queue ahead of the tests' Redis replies.
    static let fakeEventLoops = MultiThreadedEventLoopGroup(numberOfThreads: 1)

    /// A harness on an emptied database.
    init() async throws {
        self.redis = RedisClient(configuration: try Self.configuration(), logger: Self.logger)
        self.log = EventLog(redis: self.redis, partitions: Self.partitions)
        self.store = GatewayStore(redis: self.redis)
        try await self.redis.send("FLUSHDB")
    }

    /// A gateway service talking to `fake`, and the service group running it.
    func gateway(
        _ fake: FakeDiscord, shards: [Int]? = nil, shardCount: Int? = nil, compress: Bool = false,
        identifyInterval: Duration = .milliseconds(300), token: String? = nil, discover: Bool = true
    ) -> RunningGateway {
        let token = token ?? fake.configuration.token
        var configuration = GatewayService.Configuration(token: token, owner: "test-\(UUID().uuidString)")
        if discover {
            configuration.rest = DiscordRESTClient(apiURL: fake.apiURL, token: token, logger: Self.logger)
        } else {
            configuration.gatewayURL = fake.gatewayURL
        }
        configuration.shards = shards
        configuration.shardCount = shardCount
        configuration.compress = compress
        configuration.identifyInterval = identifyInterval
        configuration.reconnectBackoffCap = .milliseconds(500)
        // Each gateway gets its own client, as a separate process would.
        let redis = RedisClient(configuration: try! RedisConfiguration(url: Self.redisURL), logger: Self.logger)
        let service = GatewayService(
            configuration: configuration, log: EventLog(redis: redis, partitions: Self.partitions), logger: Self.logger
        )
        let group = ServiceGroup(services: [service], logger: Self.logger)
        let task = Task { () -> (any Error)? in
            do {
                try await group.run()
                return nil
            } catch {
                return error
            }
        }
        return RunningGateway(service: service, group: group, task: task, redis: redis)
    }

    /// Every entry of every partition, oldest first per partition.
    func entries() async throws -> [ChainEvent] {
        var events: [ChainEvent] = []
        for partition in 0..<Self.partitions {
            let reply = try await self.redis.send(RedisCommand("XRANGE", .string(self.log.keys.stream(partition)), "-", "+"))
            for entry in EventLog.entries(reply) { events.append(try ChainEvent(fields: entry.fields)) }
        }
        return events
    }

    /// Waits until the streams hold at least `count` entries.
    func waitForEntries(_ count: Int, timeout: Duration = .seconds(60)) async throws -> [ChainEvent] {
        let deadline = ContinuousClock.now.advanced(by: timeout)
        while true {
            var total = 0
            for partition in 0..<Self.partitions {
                total += try await self.redis.send(RedisCommand("XLEN", .string(self.log.keys.stream(partition)))).int ?? 0
            }
            if total >= count { return try await self.entries() }
            guard ContinuousClock.now < deadline else {
                Issue.record("only \(total) of \(count) entries reached the streams")
                return try await self.entries()
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Every key matching `pattern` (`SCAN`).
    func keys(matching pattern: String) async throws -> [String] {
        var keys: [String] = []
        var cursor = "0"
        repeat {
            let reply = try await self.redis.send(RedisCommand("SCAN", .string(cursor), "MATCH", .string(pattern), "COUNT", 1000))
            cursor = reply.array?[0].string ?? "0"
            keys += (reply.array?[1].array ?? []).compactMap(\.string)
        } while cursor != "0"
        return keys
    }

    /// Entries ever added to the streams (trimming does not lower it).
    func entriesAdded() async throws -> Int {
        var total = 0
        for partition in 0..<Self.partitions {
            let key = self.log.keys.stream(partition)
            guard try await self.redis.send(RedisCommand("EXISTS", .string(key))).int == 1 else { continue }
            let flat = try await self.redis.send(RedisCommand("XINFO", "STREAM", .string(key))).array ?? []
            for index in stride(from: 0, to: flat.count - 1, by: 2) where flat[index].string == "entries-added" {
                total += flat[index + 1].int ?? 0
            }
        }
        return total
    }

    /// Waits until `condition` holds (an error counts as not yet: Redis may be slow under a flood).
    static func eventually(
        _ what: String, timeout: Duration = .seconds(30), _ condition: () async throws -> Bool
    ) async throws {
        let deadline = ContinuousClock.now.advanced(by: timeout)
        while !((try? await condition()) ?? false) {
            guard ContinuousClock.now < deadline else {
                Issue.record("timed out waiting for \(what)")
                return
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// A fake Discord with short heartbeats and identify spacing.
    static func fake(shards: Int = 1, configure: (inout FakeDiscord.Configuration) -> Void = { _ in }) async throws -> FakeDiscord {
        var configuration = FakeDiscord.Configuration()
        configuration.shards = shards
        configuration.heartbeatInterval = 250
        configuration.identifyInterval = .milliseconds(300)
        configure(&configuration)
        let fake = FakeDiscord(configuration: configuration, group: Self.fakeEventLoops, logger: Self.logger)
        try await fake.start()
        return fake
    }

    /// Message ids `base+0 ..< base+count` on guilds that live on `shard` of `shardCount`.
    static func guild(onShard shard: Int, of shardCount: Int, salt: UInt64 = 1) -> UInt64 {
        var guild = (salt * 1_000 + UInt64(shard)) << 22
        while Int((guild >> 22) % UInt64(shardCount)) != shard { guild += 1 << 22 }
        return guild
    }
}

/// A gateway service running in this process.
struct RunningGateway {
    let service: GatewayService
    let group: ServiceGroup
    let task: Task<(any Error)?, Never>
    let redis: RedisClient

    /// Shuts down gracefully and returns the error `run()` ended with, if any.
    @discardableResult
    func stop() async -> (any Error)? {
        await self.group.triggerGracefulShutdown()
        let error = await self.task.value
        self.redis.shutdown()
        return error
    }
}
