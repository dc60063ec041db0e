import CoreMetrics
import Logging
import MarkovCore
import Redis
import ServiceLifecycle
import Synchronization

/// Feature flags as every role sees them: the rollouts stored in Redis (`markov:flags`, a hash of flag name →
/// ``Rollout`` text, one key so that one `HGETALL` reads them all), kept for ``timeToLive`` (a change is seen by
/// every role within it).
///
/// ``isOn(_:guild:)`` reads them again when they are older than that; ``run()`` also reads them on that period so
/// that the `markov_feature_flag_percent` and `markov_feature_flag_guilds` gauges show each flag's state while
/// nothing asks. When Redis cannot be read the last rollouts stay in force (a flag never read is off). A stored
/// flag this version does not know, or a value that is not a rollout, is ignored with one log line.
public final class FeatureFlags: Service, Sendable {
    /// The hash of rollouts.
    public static let key = "markov:flags"

    public let redis: RedisClient
    /// How long rollouts read are used before they are read again.
    public let timeToLive: Duration
    private let logger: Logger

    private struct Snapshot {
        var rollouts: [String: Rollout] = [:]
        var fetched: ContinuousClock.Instant?
        /// Names and values already logged as ignored.
        var reported: Set<String> = []
    }

    private let snapshot = Mutex(Snapshot())

    public init(redis: RedisClient, timeToLive: Duration = .seconds(5), logger: Logger) {
        self.redis = redis
        self.timeToLive = timeToLive
        self.logger = logger
    }

    /// Whether `flag` is on for `guild`, from rollouts at most ``timeToLive`` old (read now when they are older).
    public func isOn(_ flag: FeatureFlag, guild: Snowflake) async -> Bool {
        let now = ContinuousClock.now
        let cached = self.snapshot.withLock { snapshot -> Rollout?? in
            guard let fetched = snapshot.fetched, now - fetched < self.timeToLive else { return nil }
            return .some(snapshot.rollouts[flag.name])
        }
        let rollout: Rollout?
        if let cached {
            rollout = cached
        } else {
            rollout = await self.refresh()[flag.name]
        }
        return rollout?.includes(guild, flag: flag.name) ?? false
    }

    /// Reads the rollouts now; on failure keeps (and returns) the last ones read.
    @discardableResult
    public func refresh() async -> [String: Rollout] {
        let stored: [String: String]
        do {
            stored = try await Self.read(self.redis)
        } catch {
            self.logger.warning("feature flags could not be read; the last ones read stay in force", metadata: ["error": "\(error)"])
            return self.snapshot.withLock { $0.rollouts }
        }
        var rollouts: [String: Rollout] = [:]
        var ignored: [(String, String)] = []
        for (name, text) in stored {
            guard FeatureFlag.named(name) != nil else {
                ignored.append((name, "a flag this version does not know"))
                continue
            }
            do {
                rollouts[name] = try Rollout(parsing: text)
            } catch {
                ignored.append((name, "'\(text)' is not a rollout: \(error)"))
            }
        }
        let now = ContinuousClock.now
        let fresh = self.snapshot.withLock { snapshot in
            snapshot.rollouts = rollouts
            snapshot.fetched = now
            let fresh = ignored.filter { snapshot.reported.insert("\($0.0)=\(stored[$0.0] ?? "")").inserted }
            return fresh
        }
        for (name, reason) in fresh {
            self.logger.notice("feature flag ignored", metadata: ["flag": "\(name)", "reason": "\(reason)"])
        }
        for flag in FeatureFlag.known {
            let rollout = rollouts[flag.name] ?? .off
            Gauge(label: "markov_feature_flag_percent", dimensions: [("flag", flag.name)]).record(rollout.percent)
            Gauge(label: "markov_feature_flag_guilds", dimensions: [("flag", flag.name)]).record(rollout.guilds.count)
        }
        return rollouts
    }

    /// Reads the rollouts every ``timeToLive`` until shutdown, so the gauges stay current.
    public func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            await self.refresh()
            do {
                try await Task.sleep(for: self.timeToLive)
            } catch {
                return
            }
        }
    }

    // MARK: Reading and changing the stored rollouts (`markov flags`)

    /// The stored text of every flag set, known to this version or not.
    public static func read(_ redis: RedisClient) async throws(RedisError) -> [String: String] {
        let flat = try await redis.send(RedisCommand("HGETALL", .string(Self.key))).array ?? []
        var stored: [String: String] = [:]
        for index in stride(from: 0, to: flat.count - 1, by: 2) {
            guard let name = flat[index].string, let text = flat[index + 1].string else { continue }
            stored[name] = text
        }
        return stored
    }

    /// Stores a flag's rollout (`off` removes the field).
    public static func set(_ flag: FeatureFlag, to rollout: Rollout, redis: RedisClient) async throws(RedisError) {
        if rollout.isOff {
            try await redis.send(RedisCommand("HDEL", .string(Self.key), .string(flag.name)))
        } else {
            try await redis.send(RedisCommand("HSET", .string(Self.key), .string(flag.name), .string(rollout.description)))
        }
    }
}
