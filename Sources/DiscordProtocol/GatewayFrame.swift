import Foundation
import MarkovCore

/// One payload received from the gateway, decoded in a single pass: `{"op","d","s","t"}` with `d` read as the
/// type its opcode and event name call for. Dispatches the project does not use are decoded as ``Payload/ignored``
/// (their sequence number still counts).
public struct GatewayFrame: Sendable, Decodable {
    /// The opcode.
    public var opcode: Int
    /// The sequence number, for dispatches.
    public var sequence: Int?
    /// The event name, for dispatches.
    public var eventName: String?
    /// The decoded `d`.
    public var payload: Payload

    /// What `d` held.
    public enum Payload: Sendable {
        case none
        case hello(heartbeatInterval: Int)
        case invalidSession(resumable: Bool)
        case ready(Ready)
        case resumed
        case messageCreate(Message)
        case messageUpdate(Message)
        case messageDelete(MessageDelete)
        case messageDeleteBulk(MessageDeleteBulk)
        case guildDelete(GuildDelete)
        /// GUILD_MEMBER_REMOVE (only with the privileged GUILD_MEMBERS intent): a member left or was removed.
        case memberRemove(MemberRemove)
        case interaction(Interaction)
        /// Threads and their channels: THREAD_CREATE, THREAD_UPDATE, THREAD_LIST_SYNC, and GUILD_CREATE's threads.
        case threads(guild: Snowflake, [DiscordChannel])
        /// Channels with their age restriction: CHANNEL_CREATE, CHANNEL_UPDATE.
        case channels(guild: Snowflake, [DiscordChannel])
        /// GUILD_CREATE: the guild's channels and its active threads.
        case guildCreate(guild: Snowflake, channels: [DiscordChannel], threads: [DiscordChannel])
        /// A dispatch the project does not use.
        case ignored
    }

    /// The event names forwarded to the event log. Everything else is dropped at the gateway.
    public static let forwardedEvents: Set<String> = [
        "MESSAGE_CREATE", "MESSAGE_UPDATE", "MESSAGE_DELETE", "MESSAGE_DELETE_BULK", "GUILD_DELETE",
        "GUILD_MEMBER_REMOVE", "INTERACTION_CREATE", "THREAD_CREATE", "THREAD_UPDATE", "THREAD_LIST_SYNC", "GUILD_CREATE",
        "CHANNEL_CREATE", "CHANNEL_UPDATE",
    ]

    public init(opcode: Int, sequence: Int? = nil, eventName: String? = nil, payload: Payload) {
        self.opcode = opcode
        self.sequence = sequence
        self.eventName = eventName
        self.payload = payload
    }

    private enum CodingKeys: String, CodingKey { case op, d, s, t }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.opcode = try container.decode(Int.self, forKey: .op)
        self.sequence = try container.decodeIfPresent(Int.self, forKey: .s)
        self.eventName = try container.decodeIfPresent(String.self, forKey: .t)
        switch GatewayOpcode(rawValue: self.opcode) {
        case .hello:
            self.payload = .hello(heartbeatInterval: try container.decode(Hello.self, forKey: .d).heartbeatInterval)
        case .invalidSession:
            self.payload = .invalidSession(resumable: (try? container.decode(Bool.self, forKey: .d)) ?? false)
        case .dispatch:
            switch self.eventName {
            case "READY": self.payload = .ready(try container.decode(Ready.self, forKey: .d))
            case "RESUMED": self.payload = .resumed
            case "MESSAGE_CREATE": self.payload = .messageCreate(try container.decode(Message.self, forKey: .d))
            case "MESSAGE_UPDATE": self.payload = .messageUpdate(try container.decode(Message.self, forKey: .d))
            case "MESSAGE_DELETE": self.payload = .messageDelete(try container.decode(MessageDelete.self, forKey: .d))
            case "MESSAGE_DELETE_BULK":
                self.payload = .messageDeleteBulk(try container.decode(MessageDeleteBulk.self, forKey: .d))
            case "GUILD_DELETE": self.payload = .guildDelete(try container.decode(GuildDelete.self, forKey: .d))
            case "GUILD_MEMBER_REMOVE": self.payload = .memberRemove(try container.decode(MemberRemove.self, forKey: .d))
            case "INTERACTION_CREATE": self.payload = .interaction(try container.decode(Interaction.self, forKey: .d))
            // Thread lists are a convenience (learning in threads of enabled channels): a shape this decoder does
            // not expect is ignored rather than failing the frame.
            case "THREAD_CREATE", "THREAD_UPDATE":
                let thread = try? container.decode(DiscordChannel.self, forKey: .d)
                self.payload = thread.flatMap { thread in thread.guildID.map { .threads(guild: $0, [thread]) } } ?? .ignored
            case "THREAD_LIST_SYNC":
                let list = try? container.decode(GuildThreads.self, forKey: .d)
                self.payload = list.flatMap { list in (list.guildID ?? list.id).map { .threads(guild: $0, list.threads ?? []) } } ?? .ignored
            case "GUILD_CREATE":
                let guild = try? container.decode(GuildThreads.self, forKey: .d)
                self.payload = guild.flatMap { guild in
                    (guild.guildID ?? guild.id).map { .guildCreate(guild: $0, channels: guild.channels ?? [], threads: guild.threads ?? []) }
                } ?? .ignored
            case "CHANNEL_CREATE", "CHANNEL_UPDATE":
                let channel = try? container.decode(DiscordChannel.self, forKey: .d)
                self.payload = channel.flatMap { channel in channel.guildID.map { .channels(guild: $0, [channel]) } } ?? .ignored
            default: self.payload = .ignored
            }
        default:
            self.payload = .none
        }
    }

    /// Decodes one text (or inflated) frame.
    public static func decode(_ bytes: Data) throws -> GatewayFrame {
        try JSONDecoder().decode(GatewayFrame.self, from: bytes)
    }
}

// MARK: - Payloads

/// `d` of op 10.
public struct Hello: Sendable, Codable {
    public var heartbeatInterval: Int
    private enum CodingKeys: String, CodingKey { case heartbeatInterval = "heartbeat_interval" }
    public init(heartbeatInterval: Int) { self.heartbeatInterval = heartbeatInterval }
}

/// A user, as far as the project needs one.
public struct User: Sendable, Codable, Hashable {
    public var id: Snowflake
    public var bot: Bool?
    public init(id: Snowflake, bot: Bool? = nil) {
        self.id = id
        self.bot = bot
    }
}

/// `d` of READY.
public struct Ready: Sendable, Codable {
    public var sessionID: String
    public var resumeGatewayURL: String
    public var user: User
    public var application: Application?
    public var shard: [Int]?

    public struct Application: Sendable, Codable { public var id: Snowflake }

    private enum CodingKeys: String, CodingKey {
        case sessionID = "session_id", resumeGatewayURL = "resume_gateway_url", user, application, shard
    }

    public init(sessionID: String, resumeGatewayURL: String, user: User, application: Application?, shard: [Int]?) {
        self.sessionID = sessionID
        self.resumeGatewayURL = resumeGatewayURL
        self.user = user
        self.application = application
        self.shard = shard
    }
}

/// `d` of MESSAGE_CREATE and MESSAGE_UPDATE (an update is partial: most fields may be missing).
public struct Message: Sendable, Codable {
    public var id: Snowflake
    public var channelID: Snowflake
    public var guildID: Snowflake?
    public var author: User?
    public var webhookID: Snowflake?
    public var content: String?
    public var type: Int?
    public var attachments: [Attachment]?
    public var member: Member?

    /// An attachment's URL (the rest is not used).
    public struct Attachment: Sendable, Codable { public var url: String }
    /// The author's guild member (roles only).
    public struct Member: Sendable, Codable { public var roles: [Snowflake]? }

    private enum CodingKeys: String, CodingKey {
        case id, channelID = "channel_id", guildID = "guild_id", author, webhookID = "webhook_id", content, type,
            attachments, member
    }
}

/// The threads of `d` in THREAD_LIST_SYNC (`guild_id`) and GUILD_CREATE (`id`); the rest is not decoded.
struct GuildThreads: Decodable {
    var id: Snowflake?
    var guildID: Snowflake?
    var threads: [DiscordChannel]?
    var channels: [DiscordChannel]?
    private enum CodingKeys: String, CodingKey { case id, guildID = "guild_id", threads, channels }
}

/// `d` of MESSAGE_DELETE.
public struct MessageDelete: Sendable, Codable {
    public var id: Snowflake
    public var channelID: Snowflake
    public var guildID: Snowflake?
    private enum CodingKeys: String, CodingKey { case id, channelID = "channel_id", guildID = "guild_id" }
}

/// `d` of MESSAGE_DELETE_BULK.
public struct MessageDeleteBulk: Sendable, Codable {
    public var ids: [Snowflake]
    public var channelID: Snowflake
    public var guildID: Snowflake?
    private enum CodingKeys: String, CodingKey { case ids, channelID = "channel_id", guildID = "guild_id" }
}

/// `d` of GUILD_DELETE: `unavailable` true is an outage, absent means the bot was removed.
public struct GuildDelete: Sendable, Codable {
    public var id: Snowflake
    public var unavailable: Bool?
}

/// `d` of GUILD_MEMBER_REMOVE.
public struct MemberRemove: Sendable, Codable {
    public var guildID: Snowflake
    public var user: User
    private enum CodingKeys: String, CodingKey { case guildID = "guild_id", user }
}

/// `d` of INTERACTION_CREATE, with what responders need. Stored re-encoded in the event log.
public struct Interaction: Sendable, Codable {
    public var id: Snowflake
    public var applicationID: Snowflake
    public var type: Int
    public var token: String
    public var guildID: Snowflake?
    public var channelID: Snowflake?
    public var member: Member?
    public var user: User?
    public var data: CommandData?

    public struct Member: Sendable, Codable {
        public var user: User?
        /// The member's permissions in the channel, a decimal bit set.
        public var permissions: String?
        public var roles: [Snowflake]?
    }

    public struct CommandData: Sendable, Codable {
        public var name: String?
        public var options: [Option]?
    }

    public struct Option: Sendable, Codable {
        public var name: String
        public var type: Int
        public var value: JSONScalar?
        public var options: [Option]?
    }

    private enum CodingKeys: String, CodingKey {
        case id, applicationID = "application_id", type, token, guildID = "guild_id", channelID = "channel_id", member,
            user, data
    }
}

/// A JSON scalar: option values are strings, integers, numbers or booleans.
public enum JSONScalar: Sendable, Codable, Hashable {
    case string(String)
    case integer(Int64)
    case number(Double)
    case bool(Bool)
    case null

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .integer(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else {
            self = .string(try container.decode(String.self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let value): try container.encode(value)
        case .integer(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        case .bool(let value): try container.encode(value)
        case .null: try container.encodeNil()
        }
    }
}
