/// Gateway opcodes (the `op` of every payload).
public enum GatewayOpcode: Int, Sendable, Hashable {
    case dispatch = 0
    case heartbeat = 1
    case identify = 2
    case resume = 6
    case reconnect = 7
    case invalidSession = 9
    case hello = 10
    case heartbeatACK = 11
}

/// Gateway intents: which events Discord sends.
public struct GatewayIntents: OptionSet, Sendable, Hashable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    public static let guilds = GatewayIntents(rawValue: 1 << 0)
    /// Privileged: GUILD_MEMBER_REMOVE, for guilds that purge a member's data when they leave.
    public static let guildMembers = GatewayIntents(rawValue: 1 << 1)
    public static let guildMessages = GatewayIntents(rawValue: 1 << 9)
    public static let directMessages = GatewayIntents(rawValue: 1 << 12)
    /// Privileged: without it `content` arrives empty except for mentions of the bot.
    public static let messageContent = GatewayIntents(rawValue: 1 << 15)

    /// What the bot needs: GUILDS | GUILD_MESSAGES | MESSAGE_CONTENT = 33281.
    public static let `default`: GatewayIntents = [.guilds, .guildMessages, .messageContent]
}

/// What a close of the gateway connection means for the session.
public enum GatewayCloseAction: Sendable, Hashable {
    /// Reconnect and resume the session.
    case resume
    /// Reconnect and identify anew (the session is gone).
    case identify
    /// Stop this shard: retrying cannot help. The reason names the cause.
    case fatal(reason: String)

    /// The action for a close code sent by Discord, or `nil` for a bare drop (no close frame).
    public init(closeCode: Int?) {
        switch closeCode {
        case 4003, 4007, 4009:
            self = .identify
        case 4004:
            self = .fatal(reason: "authentication failed (4004): the bot token is wrong or was reset")
        case 4010:
            self = .fatal(reason: "invalid shard (4010): the shard id is not below the shard count")
        case 4011:
            self = .fatal(reason: "sharding required (4011): the bot is in too many guilds for this shard count")
        case 4012:
            self = .fatal(reason: "invalid API version (4012)")
        case 4013:
            self = .fatal(reason: "invalid intents (4013): the intents value is not a valid bit set")
        case 4014:
            self = .fatal(
                reason: "disallowed intents (4014): enable the MESSAGE_CONTENT privileged intent for this bot in the developer portal, or drop it from the intents"
            )
        default:
            // 4000, 4001, 4002, 4005, 4008, 1000/1001 from the server, abnormal closes and drops: resume.
            self = .resume
        }
    }
}

/// The close codes this client sends.
public enum GatewayClientCloseCode {
    /// Closing with 1000 or 1001 ends the session; any other code keeps it resumable. The client uses this one
    /// (an application code Discord does not assign) whenever it means to resume: reconnect requests, zombie
    /// connections, shutdown of a process whose successor resumes.
    public static let resumable = 4900
    /// Ends the session for good.
    public static let normal = 1000
}
