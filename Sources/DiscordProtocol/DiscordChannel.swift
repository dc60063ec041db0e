import MarkovCore

/// A channel or thread, with what the history backfill needs (`GET /guilds/{id}/threads/active`,
/// `GET /channels/{id}/threads/archived/public`).
public struct DiscordChannel: Sendable, Codable, Hashable {
    public var id: Snowflake
    /// 0 text, 2 voice, 5 announcement, 10/11/12 threads, 15 forum, 16 media.
    public var type: Int
    /// A thread's channel (or a channel's category).
    public var parentID: Snowflake?
    public var guildID: Snowflake?
    public var threadMetadata: ThreadMetadata?
    /// Age-restricted (NSFW); threads have no flag of their own and take their channel's.
    public var nsfw: Bool?

    public struct ThreadMetadata: Sendable, Codable, Hashable {
        public var archived: Bool?
        /// ISO 8601; archived threads are listed newest archive first and paged with `before=<this>`.
        public var archiveTimestamp: String?
        private enum CodingKeys: String, CodingKey { case archived, archiveTimestamp = "archive_timestamp" }
        public init(archived: Bool? = nil, archiveTimestamp: String? = nil) {
            self.archived = archived
            self.archiveTimestamp = archiveTimestamp
        }
    }

    private enum CodingKeys: String, CodingKey {
        case id, type, parentID = "parent_id", guildID = "guild_id", threadMetadata = "thread_metadata", nsfw
    }

    public init(
        id: Snowflake, type: Int, parentID: Snowflake? = nil, guildID: Snowflake? = nil, threadMetadata: ThreadMetadata? = nil, nsfw: Bool? = nil
    ) {
        self.nsfw = nsfw
        self.id = id
        self.type = type
        self.parentID = parentID
        self.guildID = guildID
        self.threadMetadata = threadMetadata
    }
}

/// A page of threads: `{"threads":[…],"has_more":…}`.
public struct ThreadList: Sendable, Codable {
    public var threads: [DiscordChannel]
    public var hasMore: Bool?
    private enum CodingKeys: String, CodingKey { case threads, hasMore = "has_more" }
    public init(threads: [DiscordChannel], hasMore: Bool? = nil) {
        self.threads = threads
        self.hasMore = hasMore
    }
}
