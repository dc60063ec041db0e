import MarkovCore

/// Key names. Every key of a guild starts with the hash tag `{g:<id>}`; the id is a checked snowflake and all
/// message text comes after the tag, so no text can move a key to another guild's slot or key family.
///
/// This is the one registry of a guild's keys: deletion takes its list from ``families``, and docs/chain-store.md
/// describes each family.
public struct ChainKeys: Sendable, Hashable {
    /// The guild.
    public let guild: Snowflake

    /// Keys of one guild.
    public init(guild: Snowflake) { self.guild = guild }

    /// `{g:<id>}`: the prefix and hash tag of every key of the guild.
    public var prefix: String { "{g:\(self.guild.rawValue)}" }
    /// Hash of totals, the bucket table's shape, the layout, the fencing epoch, the write sequence and the entries
    /// applied; the key every Function call names.
    public var meta: String { "\(self.prefix):meta" }
    /// Set of channel ids the guild learns from.
    public var listen: String { "\(self.prefix):listen" }
    /// Set of user ids who opted out.
    public var optOut: String { "\(self.prefix):optout" }
    /// What the guild strips before learning (string, ``ContentFilters`` names; absent: the defaults).
    public var filters: String { "\(self.prefix):filters" }
    /// `on` when a member's messages are forgotten as they leave the guild (GUILD_MEMBER_REMOVE).
    public var purgeOnLeave: String { "\(self.prefix):purge-on-leave" }
    /// Set of ``BlockEntry`` texts: tokens the bot never says (read by `markov_generate`).
    public var blocklist: String { "\(self.prefix):block" }
    /// Set of the guild's age-restricted (NSFW) channels: text learnt in them (and their threads) goes to the
    /// age-restricted scope (``ChainScope``).
    public var ageRestricted: String { "\(self.prefix):nsfw" }
    /// Thread id → its channel (hash): a message in a thread is learnt when its channel is.
    public var threads: String { "\(self.prefix):threads" }
    /// Message id → its first image URL (hash), for replies with an image.
    public var images: String { "\(self.prefix):img" }
    /// Message id → what was learnt of it (``MessageRecord``).
    public var messages: String { "\(self.prefix):m" }
    /// Content hash → how many learnt messages have it.
    public var contentHashes: String { "\(self.prefix):h" }
    /// The guild's history backfill (`/train`), whose start stamps the messages it reads.
    public var backfill: String { "\(self.prefix):backfill" }

    /// The full name of a key suffix.
    public func key(_ suffix: String) -> String { self.prefix + suffix }

    // MARK: Layout 2 (suffixes after the prefix)

    /// Bucket hash `n`: state text → value.
    static func bucketSuffix(_ bucket: Int) -> String { ":b:\(bucket)" }
    /// States whose text passes 64 bytes (so that the buckets stay listpacks).
    static let longStatesSuffix = ":L"
    /// The set of big states.
    static let bigStatesSuffix = ":bigs"
    /// A big state's alias blob.
    static func aliasSuffix(_ state: [UInt8]) -> String { ":x:" + String(decoding: state, as: UTF8.self) }
    /// A big state's increments since its blob was built.
    static func pendingSuffix(_ state: [UInt8]) -> String { ":u:" + String(decoding: state, as: UTF8.self) }
    /// A big state's changed tokens since its blob was built.
    static func changesSuffix(_ state: [UInt8]) -> String { ":d:" + String(decoding: state, as: UTF8.self) }

    /// The list someone waits on for the outcome of a command (`markov_write` pushes it, with a TTL).
    static func replySuffix(_ token: String) -> String { ":reply:" + token }

    // MARK: Layout 1 (read, upgraded, deleted)

    static func legacyBucketSuffix(_ bucket: Int) -> String { ":c:\(bucket)" }
    static let legacyBigStatesSuffix = ":big"
    static func legacyBigSuffixes(_ state: String) -> [String] { [":s:" + state, ":a:" + state, ":p:" + state, ":n:" + state] }

    // MARK: The registry

    /// Who a key family belongs to, which decides when it goes.
    public enum Owner: String, Sendable, CaseIterable {
        /// The chain and message records, written by the partition owner.
        case chain
        /// Settings and state of the responders (chances, restrictions, backfill), removed with the guild.
        case responder
        /// Opt-outs: kept by `/delete-data`, removed with the guild.
        case optOuts
        /// Fencing and progress (`meta`): rewritten with only those fields when the guild's data goes, so that a
        /// paused owner can never write the guild again and applied entries are not applied twice.
        case meta
        /// Short-lived markers that hold no text (a trigger answered, a channel's cooldown, a command's outcome):
        /// each is written with an expiry and left to it, also by deletion (they cannot be found without scanning
        /// the keyspace).
        case markers
    }

    /// A key family of a guild.
    public struct Family: Sendable, Hashable {
        /// The suffix after `{g:<id>}`; a trailing `*` stands for many keys (numbered or named by state).
        public var suffix: String
        public var owner: Owner
        public var summary: String
        /// Whether `markov export` writes it: the guild's data and settings are; the meta's fencing and progress, a
        /// backfill under way and keys of the earlier layout are not.
        public var isPortable: Bool

        init(suffix: String, owner: Owner, summary: String, portable: Bool = true) {
            self.suffix = suffix
            self.owner = owner
            self.summary = summary
            self.isPortable = portable
        }
    }

    /// Every per-guild key family (fixed keys are deleted by name; families with `*` are found from the
    /// chain's shape and its sets of big states).
    public static let families: [Family] = [
        Family(suffix: ":meta", owner: .meta, summary: "totals, bucket table shape L/p, layout, epoch, wseq, applied entries", portable: false),
        Family(suffix: ":b:*", owner: .chain, summary: "bucket hashes: state → successors or big-state header"),
        Family(suffix: ":L", owner: .chain, summary: "states whose text passes 64 bytes"),
        Family(suffix: ":bigs", owner: .chain, summary: "set of big states"),
        Family(suffix: ":x:*", owner: .chain, summary: "a big state's alias blob and token entries"),
        Family(suffix: ":u:*", owner: .chain, summary: "a big state's increments since the blob was built"),
        Family(suffix: ":d:*", owner: .chain, summary: "a big state's changed tokens since the blob was built"),
        Family(suffix: ":m", owner: .chain, summary: "message records"),
        Family(suffix: ":h", owner: .chain, summary: "content hashes of learnt messages"),
        Family(suffix: ":img", owner: .chain, summary: "image URL of learnt messages"),
        Family(suffix: ":threads", owner: .chain, summary: "thread → channel"),
        Family(suffix: ":nsfw", owner: .chain, summary: "age-restricted channels"),
        Family(suffix: ":listen", owner: .chain, summary: "channels learnt from"),
        Family(suffix: ":filters", owner: .chain, summary: "training filters (what is stripped before learning)"),
        Family(suffix: ":purge-on-leave", owner: .chain, summary: "on: a member's messages are forgotten when they leave"),
        Family(suffix: ":optout", owner: .optOuts, summary: "users who opted out"),
        Family(suffix: ":block", owner: .responder, summary: "blocklist: tokens never said"),
        Family(suffix: ":chance", owner: .responder, summary: "unasked reply chances"),
        Family(suffix: ":autorespond", owner: .responder, summary: "auto-respond channels"),
        Family(suffix: ":reply-channels", owner: .responder, summary: "channels replies are limited to"),
        Family(suffix: ":ask-roles", owner: .responder, summary: "roles allowed to ask"),
        Family(suffix: ":backfill", owner: .responder, summary: "the history backfill", portable: false),
        Family(suffix: ":backfill:queue", owner: .responder, summary: "channels the backfill has left", portable: false),
        Family(suffix: ":backfill:lease", owner: .responder, summary: "the responder running the backfill (expires)", portable: false),
        Family(suffix: ":answered:*", owner: .markers, summary: "a trigger answered (expires after a day)", portable: false),
        Family(suffix: ":cooldown:*", owner: .markers, summary: "the bot spoke unasked in a channel (expires after the cooldown)", portable: false),
        Family(suffix: ":reply:*", owner: .markers, summary: "a command's outcome for whoever waits on it (expires after 10 minutes)", portable: false),
        Family(suffix: ":cfg", owner: .responder, summary: "(earlier versions) settings", portable: false),
        Family(suffix: ":c:*", owner: .chain, summary: "layout 1 bucket hashes", portable: false),
        Family(suffix: ":big", owner: .chain, summary: "layout 1 set of big states", portable: false),
        Family(suffix: ":s:*", owner: .chain, summary: "layout 1 big-state counts", portable: false),
        Family(suffix: ":a:*", owner: .chain, summary: "layout 1 alias blobs", portable: false),
        Family(suffix: ":p:*", owner: .chain, summary: "layout 1 increments lists", portable: false),
        Family(suffix: ":n:*", owner: .chain, summary: "layout 1 decrements", portable: false),
    ]

    /// The fixed keys (no `*`) of the families of these owners.
    static func fixedSuffixes(of owners: Set<Owner>) -> [String] {
        Self.families.filter { owners.contains($0.owner) && !$0.suffix.hasSuffix("*") }.map(\.suffix)
    }
}

/// The event log's keys: `partitions` streams per lane, each partition its own cluster slot, a guild always in the
/// same one.
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

    /// The live stream of partition `index`: `events:{index}`.
    public func stream(_ index: Int) -> String { "events:{\(index)}" }

    /// The stream of a lane of partition `index`: `events:{index}` (live) or `bulk:{index}` (imports and backfills),
    /// in the same slot.
    public func stream(_ index: Int, lane: EventLog.Lane) -> String {
        switch lane {
        case .live: "events:{\(index)}"
        case .bulk: "bulk:{\(index)}"
        }
    }

    /// The dead-letter stream of partition `index`, in the same slot: `events:{index}:dead`.
    public func deadLetters(_ index: Int) -> String { "events:{\(index)}:dead" }

    /// The live stream a guild's events go to.
    public func stream(for guild: Snowflake) -> String { self.stream(self.partition(of: guild)) }

    /// The stream of a lane a guild's events go to.
    public func stream(for guild: Snowflake, lane: EventLog.Lane) -> String { self.stream(self.partition(of: guild), lane: lane) }
}
