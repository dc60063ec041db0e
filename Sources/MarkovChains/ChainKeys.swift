import MarkovCore

/// Key names. Every key of a guild starts with the hash tag `{g:<id>}`; the id is a checked snowflake and all
/// message text comes after the tag, so no text can move a key to another guild's slot or key family.
/// docs/chain-store.md describes each key.
public struct ChainKeys: Sendable, Hashable {
    /// The guild.
    public let guild: Snowflake

    /// Keys of one guild.
    public init(guild: Snowflake) { self.guild = guild }

    /// `{g:<id>}`: the prefix and hash tag of every key of the guild.
    public var prefix: String { "{g:\(self.guild.rawValue)}" }
    /// Hash of totals and the bucket table's shape; the key every Function call names.
    public var meta: String { "\(self.prefix):meta" }
    /// Set of channel ids the guild learns from.
    public var listen: String { "\(self.prefix):listen" }
    /// Set of user ids who opted out.
    public var optOut: String { "\(self.prefix):optout" }
    /// Thread id → its channel (hash): a message in a thread is learnt when its channel is.
    public var threads: String { "\(self.prefix):threads" }
    /// Message id → its first image URL (hash), for replies with an image.
    public var images: String { "\(self.prefix):img" }
}

/// The event log's keys: `partitions` streams, each its own cluster slot, a guild always in the same one.
public struct EventLogKeys: Sendable, Hashable {
    /// How many partitions the log has. All writers and readers must agree.
    public let partitions: Int

    /// Makes the key scheme; `partitions` must be at least 1.
    public init(partitions: Int) {
        precondition(partitions >= 1, "the event log needs at least one partition")
        self.partitions = partitions
    }

    /// The partition of a guild: its id modulo the partition count.
    public func partition(of guild: Snowflake) -> Int { Int(guild.value % UInt64(self.partitions)) }

    /// The stream of partition `index`: `events:{index}`.
    public func stream(_ index: Int) -> String { "events:{\(index)}" }

    /// The dead-letter stream of partition `index`, in the same slot: `events:{index}:dead`.
    public func deadLetters(_ index: Int) -> String { "events:{\(index)}:dead" }

    /// The stream a guild's events go to.
    public func stream(for guild: Snowflake) -> String { self.stream(self.partition(of: guild)) }
}
