/// One entry of the event log: a versioned record of one event, as the gateway and the importer write it and
/// the trainers and responders read it. Stored as the fields of a Redis stream entry (see docs/event-log.md).
public struct ChainEvent: Sendable, Hashable {
    /// The record format version, field `v`.
    public static let version = "1"

    /// What happened.
    public enum Kind: String, Sendable, Hashable {
        /// A new message (`MESSAGE_CREATE`, or one imported message).
        case create
        /// A message's content changed (`MESSAGE_UPDATE`).
        case update
        /// A message was deleted (`MESSAGE_DELETE`).
        case delete
        /// Several messages were deleted (`MESSAGE_DELETE_BULK`); their ids are in ``ChainEvent/messageIDs``.
        case deleteBulk = "delete_bulk"
        /// The bot was removed from the guild (`GUILD_DELETE` without `unavailable`): all its data goes.
        case guildRemoved = "guild_removed"
        /// A slash command or other interaction (`INTERACTION_CREATE`), for the responders; ``ChainEvent/payload``
        /// holds it as JSON. Trainers acknowledge it and do nothing else.
        case interaction
        /// Threads were created or listed (THREAD_CREATE, THREAD_LIST_SYNC, GUILD_CREATE): their ids are in
        /// ``ChainEvent/messageIDs`` and their channels in ``ChainEvent/threadParents``, so that messages in a thread
        /// are learnt when its channel is.
        case threads
        /// Channels were announced or changed (GUILD_CREATE, CHANNEL_CREATE, CHANNEL_UPDATE): their ids are in
        /// ``ChainEvent/messageIDs`` and whether each is age-restricted in ``ChainEvent/ageRestricted``.
        case channels
        /// Forget every message of a user (``ChainEvent/authorID``) and keep them out (`markov forget-user`,
        /// `/forget-me`); the partition owner applies it in order with the messages.
        case forgetUser = "forget_user"
        /// Delete the guild's chain and settings but keep its opt-outs (`/delete-data`).
        case deleteData = "delete_data"
        /// Upgrade the guild's data to the current layout (`markov migrate`).
        case migrate
        /// Learn the guild's recorded messages again under its training filters now (`markov relearn`).
        case relearn
        /// A member left the guild (GUILD_MEMBER_REMOVE, ``ChainEvent/authorID``): their messages are forgotten when
        /// the guild purges leavers (`{g:G}:purge-on-leave`), without opting them out.
        case memberLeft = "member_left"
        /// One part of a guild export being restored (`markov restore`), in ``ChainEvent/payload``.
        case restore
    }

    /// Where the event came from.
    public enum Source: String, Sendable, Hashable {
        /// Discord's gateway.
        case gateway
        /// `markov train` or `/train`.
        case importer = "import"
        /// The local console channel of `markov up`.
        case console
    }

    /// Author flags that decide whether a message is trained on.
    public struct AuthorFlags: OptionSet, Sendable, Hashable {
        public let rawValue: Int
        public init(rawValue: Int) { self.rawValue = rawValue }
        /// The author is a bot account.
        public static let bot = AuthorFlags(rawValue: 1)
        /// The message came from a webhook.
        public static let webhook = AuthorFlags(rawValue: 2)
    }

    public var kind: Kind
    public var source: Source
    public var guildID: Snowflake
    public var channelID: Snowflake?
    /// The message, for create, update and delete.
    public var messageID: String?
    /// The messages of a bulk delete; the threads of a ``Kind/threads`` event.
    public var messageIDs: [String]
    /// The channel of each thread of a ``Kind/threads`` event, in the order of ``messageIDs``.
    public var threadParents: [String]
    /// For a ``Kind/channels`` event: whether each channel of ``messageIDs`` is age-restricted (NSFW).
    public var ageRestricted: [Bool] = []
    /// For a message in a thread whose channel the gateway knows: that channel (so a trainer can learn the message
    /// even if the thread's own `threads` event is applied after it, by another trainer).
    public var threadParent: Snowflake?
    public var authorID: Snowflake?
    public var authorFlags: AuthorFlags
    /// The author's roles in the guild, for creates from the gateway (the responders' role restriction).
    public var authorRoles: [Snowflake]
    /// Discord's message type: 0 default, 19 reply; others are system messages.
    public var messageType: Int
    /// The text, for create and update; `nil` on an update that did not change the content.
    public var content: String?
    /// Attachment URLs, for create and update.
    public var attachments: [String]
    /// Milliseconds since the Unix epoch when the event happened (0 when unknown).
    public var timestamp: Int64
    /// The interaction as JSON, for ``Kind/interaction``.
    public var payload: [UInt8]?
    /// The gateway shard and sequence number the event arrived with, `"shard:seq"` (diagnostics: a replay after a
    /// resume shows up as the same value twice).
    public var origin: String?
    /// For commands (forget-user, delete-data, guild removal, migrate): where the owner reports the outcome, a list
    /// `{g:<guild>}:reply:<reply>` someone waits on (letters, digits, `-` and `_`, at most 64).
    public var reply: String?

    /// Makes an event.
    public init(
        kind: Kind,
        source: Source,
        guildID: Snowflake,
        channelID: Snowflake? = nil,
        messageID: String? = nil,
        messageIDs: [String] = [],
        threadParents: [String] = [],
        threadParent: Snowflake? = nil,
        authorID: Snowflake? = nil,
        authorFlags: AuthorFlags = [],
        authorRoles: [Snowflake] = [],
        messageType: Int = 0,
        content: String? = nil,
        attachments: [String] = [],
        timestamp: Int64 = 0,
        payload: [UInt8]? = nil,
        origin: String? = nil,
        reply: String? = nil
    ) {
        self.kind = kind
        self.source = source
        self.guildID = guildID
        self.channelID = channelID
        self.messageID = messageID
        self.messageIDs = messageIDs
        self.threadParents = threadParents
        self.threadParent = threadParent
        self.authorID = authorID
        self.authorFlags = authorFlags
        self.authorRoles = authorRoles
        self.messageType = messageType
        self.content = content
        self.attachments = attachments
        self.timestamp = timestamp
        self.payload = payload
        self.origin = origin
        self.reply = reply
    }

    /// Whether a reply token is safe in a key name.
    public static func isValidReply(_ token: String) -> Bool {
        (1...64).contains(token.utf8.count)
            && token.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7A) || $0 == 0x2D || $0 == 0x5F }
    }

    /// Whether an attachment URL names an image (by its file extension; Discord's CDN keeps the file name).
    public static func isImage(_ url: String) -> Bool {
        guard url.utf8.count <= 2048 else { return false }
        let path = url.split(separator: "?", maxSplits: 1).first.map { $0.lowercased() } ?? ""
        return [".png", ".jpg", ".jpeg", ".gif", ".webp"].contains { path.hasSuffix($0) }
    }

    /// The stream fields, in a fixed order: `v`, `kind`, `src`, `guild`, then those that are set.
    public var fields: [(String, [UInt8])] {
        var fields: [(String, [UInt8])] = [
            ("v", Array(Self.version.utf8)), ("kind", Array(self.kind.rawValue.utf8)),
            ("src", Array(self.source.rawValue.utf8)), ("guild", Array(self.guildID.rawValue.utf8)),
        ]
        if let channelID { fields.append(("channel", Array(channelID.rawValue.utf8))) }
        if let messageID { fields.append(("id", Array(messageID.utf8))) }
        if !self.messageIDs.isEmpty { fields.append(("ids", Array(self.messageIDs.joined(separator: ",").utf8))) }
        if !self.threadParents.isEmpty { fields.append(("parents", Array(self.threadParents.joined(separator: ",").utf8))) }
        if !self.ageRestricted.isEmpty { fields.append(("nsfw", self.ageRestricted.map { $0 ? UInt8(ascii: "1") : UInt8(ascii: "0") })) }
        if let threadParent { fields.append(("parent", Array(threadParent.rawValue.utf8))) }
        if let authorID { fields.append(("author", Array(authorID.rawValue.utf8))) }
        if !self.authorFlags.isEmpty { fields.append(("aflags", Array(String(self.authorFlags.rawValue).utf8))) }
        if !self.authorRoles.isEmpty { fields.append(("roles", Array(self.authorRoles.map(\.rawValue).joined(separator: ",").utf8))) }
        if self.messageType != 0 { fields.append(("mtype", Array(String(self.messageType).utf8))) }
        if let content { fields.append(("content", Array(content.utf8))) }
        if !self.attachments.isEmpty { fields.append(("att", Array(self.attachments.joined(separator: "\n").utf8))) }
        if self.timestamp != 0 { fields.append(("ts", Array(String(self.timestamp).utf8))) }
        if let payload { fields.append(("payload", payload)) }
        if let origin { fields.append(("origin", Array(origin.utf8))) }
        if let reply { fields.append(("reply", Array(reply.utf8))) }
        return fields
    }

    /// Why a stream entry is not a valid event.
    public struct DecodingError: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    /// Reads an event back from stream fields. Unknown fields are ignored (newer writers may add some); an
    /// unknown version, a missing or malformed required field is an error naming it.
    public init(fields: [String: [UInt8]]) throws(DecodingError) {
        func text(_ name: String) -> String? { fields[name].map { String(decoding: $0, as: UTF8.self) } }
        func snowflake(_ name: String) throws(DecodingError) -> Snowflake? {
            guard let value = text(name) else { return nil }
            guard let id = Snowflake(value) else { throw DecodingError(description: "field \(name) is not a snowflake") }
            return id
        }
        guard let version = text("v") else { throw DecodingError(description: "no version field v") }
        guard version == Self.version else { throw DecodingError(description: "unknown record version \(version)") }
        guard let kindText = text("kind"), let kind = Kind(rawValue: kindText) else {
            throw DecodingError(description: "unknown or missing kind")
        }
        guard let guild = try snowflake("guild") else { throw DecodingError(description: "no guild") }
        self.kind = kind
        self.source = text("src").flatMap(Source.init(rawValue:)) ?? .gateway
        self.guildID = guild
        self.channelID = try snowflake("channel")
        self.messageID = text("id")
        self.messageIDs = text("ids").map { $0.split(separator: ",").map(String.init) } ?? []
        self.threadParents = text("parents").map { $0.split(separator: ",").map(String.init) } ?? []
        self.ageRestricted = fields["nsfw"].map { $0.map { $0 == UInt8(ascii: "1") } } ?? []
        self.threadParent = try snowflake("parent")
        self.authorID = try snowflake("author")
        self.authorFlags = AuthorFlags(rawValue: text("aflags").flatMap { Int($0) } ?? 0)
        self.authorRoles = text("roles").map { $0.split(separator: ",").compactMap { Snowflake($0) } } ?? []
        self.messageType = text("mtype").flatMap { Int($0) } ?? 0
        self.content = text("content")
        self.attachments = text("att").map { $0.split(separator: "\n").map(String.init) } ?? []
        self.timestamp = text("ts").flatMap { Int64($0) } ?? 0
        self.payload = fields["payload"]
        self.origin = text("origin")
        self.reply = text("reply")
        if let reply = self.reply, !Self.isValidReply(reply) { throw DecodingError(description: "malformed reply field") }
        switch kind {
        case .create, .update, .delete:
            guard let id = self.messageID, !id.isEmpty, id.utf8.count <= 64 else {
                throw DecodingError(description: "\(kind.rawValue) without a valid message id")
            }
        case .deleteBulk:
            guard !self.messageIDs.isEmpty else { throw DecodingError(description: "delete_bulk without ids") }
        case .guildRemoved, .deleteData, .migrate, .relearn:
            break
        case .restore:
            guard self.payload?.isEmpty == false else { throw DecodingError(description: "restore without a payload") }
        case .forgetUser, .memberLeft:
            guard self.authorID != nil else { throw DecodingError(description: "\(kind.rawValue) without an author") }
        case .channels:
            guard !self.messageIDs.isEmpty, self.messageIDs.count == self.ageRestricted.count, self.messageIDs.allSatisfy({ Snowflake($0) != nil }) else {
                throw DecodingError(description: "channels without matching channel ids and nsfw flags")
            }
        case .threads:
            guard !self.messageIDs.isEmpty, self.messageIDs.count == self.threadParents.count,
                  (self.messageIDs + self.threadParents).allSatisfy({ Snowflake($0) != nil })
            else { throw DecodingError(description: "threads without matching thread and channel ids") }
        case .interaction:
            guard self.payload != nil else { throw DecodingError(description: "interaction without payload") }
        }
    }
}
