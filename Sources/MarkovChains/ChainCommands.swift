import MarkovCore
import Redis

/// Changes to a guild's chain that are not messages — forgetting a user, deleting the guild's data, upgrading its
/// layout — asked of the guild's partition owner as entries of the event log, so they apply in order with the
/// messages and by the one writer of the guild. Each waits for the owner's outcome (`{g:G}:reply:<token>`).
public struct ChainCommands: Sendable {
    public let log: EventLog

    public init(log: EventLog) { self.log = log }

    /// No trainer reported within the time allowed (none is running, or the partition's owner is far behind).
    public struct Timeout: Error, CustomStringConvertible {
        public var guild: Snowflake
        public var waited: Duration
        public var description: String {
            "no trainer applied the command for guild \(self.guild) within \(self.waited) (is a trainer running?); it stays queued and applies when one does"
        }
    }

    /// Forgets every message of a user and keeps them out; returns how many messages were forgotten.
    public func forgetUser(_ user: Snowflake, guild: Snowflake, timeout: Duration = .seconds(600)) async throws -> Int {
        let outcome = try await self.run(ChainEvent(kind: .forgetUser, source: .console, guildID: guild, authorID: user), timeout: timeout)
        return Self.value(outcome, "forgotten")
    }

    /// Deletes every key of the guild (but its opt-outs when `keepingOptOuts`, for the guild's own `/delete-data`);
    /// returns about how many keys went.
    public func deleteGuild(_ guild: Snowflake, keepingOptOuts: Bool = false, timeout: Duration = .seconds(600)) async throws -> Int {
        let kind: ChainEvent.Kind = keepingOptOuts ? .deleteData : .guildRemoved
        return Self.value(try await self.run(ChainEvent(kind: kind, source: .console, guildID: guild), timeout: timeout), "keys")
    }

    /// Upgrades the guild's data to the current layout (a no-op for a guild already there).
    public func migrate(_ guild: Snowflake, timeout: Duration = .seconds(3600)) async throws {
        _ = try await self.run(ChainEvent(kind: .migrate, source: .console, guildID: guild), timeout: timeout)
    }

    /// Learns the guild's recorded messages again under its training filters now; `progress` hears records read and
    /// the records there are, about once a second. Returns the records read and the messages whose learnt tokens changed.
    public func relearn(
        _ guild: Snowflake, timeout: Duration = .seconds(3600), progress: (@Sendable (Int, Int) -> Void)? = nil
    ) async throws -> (messages: Int, relearnt: Int) {
        let outcome = try await self.run(ChainEvent(kind: .relearn, source: .console, guildID: guild), timeout: timeout, progress: progress)
        return (Self.value(outcome, "messages"), Self.value(outcome, "relearnt"))
    }

    /// How a restore ended.
    public enum RestoreOutcome: Sendable, Equatable {
        /// The guild now holds the file's keys.
        case restored(keys: Int)
        /// The guild was restored from this same file before: nothing changed.
        case already
    }

    /// The guild's owner refused a restore (the guild has data, another state size, a damaged part); nothing changed.
    public struct RestoreRefused: Error, CustomStringConvertible {
        public var description: String
    }

    /// Restores a guild export: `parts` appends the parts in order through the function it is given, then this waits
    /// for the owner's outcome.
    public func restore(
        guild: Snowflake, timeout: Duration = .seconds(3600),
        parts: (_ append: ([GuildArchive.Part]) async throws -> Void) async throws -> Void
    ) async throws -> RestoreOutcome {
        let token = Self.token()
        try await parts { batch in
            let events = batch.map { part in
                ChainEvent(kind: .restore, source: .console, guildID: guild, payload: part.payload, reply: token)
            }
            try await self.log.append(events)
        }
        let outcome = try await self.wait(guild: guild, token: token, timeout: timeout)
        if outcome.hasPrefix("error=") { throw RestoreRefused(description: String(outcome.dropFirst(6))) }
        if outcome == "restored=already" { return .already }
        return .restored(keys: Self.value(outcome, "keys"))
    }

    /// Appends a command and waits for its outcome; `progress` hears what the owner reports (`done total`) on the
    /// way, for commands that report it.
    public func run(_ event: ChainEvent, timeout: Duration, progress: (@Sendable (Int, Int) -> Void)? = nil) async throws -> String {
        var event = event
        let token = Self.token()
        event.reply = token
        try await self.log.append([event])
        return try await self.wait(guild: event.guildID, token: token, timeout: timeout, progress: progress)
    }

    /// Waits for the outcome the owner pushes to `{g:G}:reply:<token>`.
    private func wait(
        guild: Snowflake, token: String, timeout: Duration, progress: (@Sendable (Int, Int) -> Void)? = nil
    ) async throws -> String {
        let key = ChainKeys(guild: guild).key(ChainKeys.replySuffix(token))
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            try Task.checkCancellation()
            let reply = try await self.log.redis.blocking(RedisCommand("BLPOP", .string(key), 1), block: .seconds(1))
            if let pair = reply.array, pair.count == 2, let outcome = pair[1].string { return outcome }
            if let progress, let text = try await self.log.redis.send(RedisCommand("GET", .string(key + ":progress"))).string {
                let numbers = text.split(separator: " ").compactMap { Int($0) }
                if numbers.count == 2 { progress(numbers[0], numbers[1]) }
            }
        }
        throw Timeout(guild: guild, waited: timeout)
    }

    private static func value(_ outcome: String, _ name: String) -> Int {
        for part in outcome.split(separator: " ") where part.hasPrefix(name + "=") {
            return Int(part.dropFirst(name.count + 1)) ?? 0
        }
        return 0
    }

    private static func token() -> String {
        String(UInt64.random(in: 0...UInt64.max), radix: 36) + String(UInt32.random(in: 0...UInt32.max), radix: 36)
    }
}
