import Foundation
import MarkovCore

/// Payloads the client sends, encoded as the JSON text of one WebSocket message.
public enum GatewayCommand: Sendable, Hashable {
    case heartbeat(sequence: Int?)
    case identify(token: String, intents: GatewayIntents, shard: ShardID, name: String)
    case resume(token: String, sessionID: String, sequence: Int)

    /// The JSON text. Strings are escaped by `JSONEncoder`; the token never appears anywhere else.
    public var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data: Data
        switch self {
        case .heartbeat(let sequence):
            return "{\"op\":1,\"d\":\(sequence.map(String.init) ?? "null")}"
        case .identify(let token, let intents, let shard, let name):
            data = try! encoder.encode(
                Envelope(op: 2, d: Identify(token: token, intents: intents.rawValue,
                                            properties: .init(os: "linux", browser: name, device: name),
                                            shard: [shard.id, shard.count], largeThreshold: 50))
            )
        case .resume(let token, let sessionID, let sequence):
            data = try! encoder.encode(Envelope(op: 6, d: Resume(token: token, sessionID: sessionID, seq: sequence)))
        }
        return String(decoding: data, as: UTF8.self)
    }

    private struct Envelope<D: Encodable>: Encodable {
        var op: Int
        var d: D
    }

    private struct Identify: Encodable {
        var token: String
        var intents: Int
        var properties: Properties
        var shard: [Int]
        var largeThreshold: Int
        struct Properties: Encodable {
            var os: String
            var browser: String
            var device: String
        }
        private enum CodingKeys: String, CodingKey {
            case token, intents, properties, shard, largeThreshold = "large_threshold"
        }
    }

    private struct Resume: Encodable {
        var token: String
        var sessionID: String
        var seq: Int
        private enum CodingKeys: String, CodingKey { case token, sessionID = "session_id", seq }
    }
}

/// A shard: its id and the total number of shards.
public struct ShardID: Sendable, Hashable, CustomStringConvertible {
    public var id: Int
    public var count: Int

    public init(id: Int, count: Int) {
        precondition(count > 0 && (0..<count).contains(id), "shard \(id) of \(count)")
        self.id = id
        self.count = count
    }

    /// The identify rate-limit bucket: `id % maxConcurrency`.
    public func bucket(maxConcurrency: Int) -> Int { self.id % max(1, maxConcurrency) }

    /// The shard a guild lives on: `(guild_id >> 22) % count`.
    public static func shard(of guild: Snowflake, count: Int) -> Int { Int((guild.value >> 22) % UInt64(count)) }

    public var description: String { "\(self.id)/\(self.count)" }
}

extension GatewayFrame {
    /// The event-log records for a dispatch, in order: none for DMs, outages and events nobody needs; two for a
    /// GUILD_CREATE (its channels, then its threads).
    public func chainEvents(shard: Int) -> [ChainEvent] {
        let origin = self.sequence.map { "\(shard):\($0)" }
        switch self.payload {
        case .guildCreate(let guild, let channels, let threads):
            return [
                Self.channelsEvent(guild: guild, channels, origin: origin),
                GatewayFrame(opcode: self.opcode, sequence: self.sequence, eventName: "THREAD_LIST_SYNC", payload: .threads(guild: guild, threads))
                    .chainEvent(shard: shard),
            ].compactMap { $0 }
        case .channels(let guild, let channels):
            return [Self.channelsEvent(guild: guild, channels, origin: origin)].compactMap { $0 }
        default:
            return [self.chainEvent(shard: shard)].compactMap { $0 }
        }
    }

    /// A ``ChainEvent/Kind/channels`` event of the guild's channels that can hold messages (not threads, whose flag is
    /// their channel's, nor categories).
    private static func channelsEvent(guild: Snowflake, _ channels: [DiscordChannel], origin: String?) -> ChainEvent? {
        let channels = channels.filter { ![4, 10, 11, 12].contains($0.type) }
        guard !channels.isEmpty else { return nil }
        var event = ChainEvent(kind: .channels, source: .gateway, guildID: guild, messageIDs: channels.map(\.id.rawValue), origin: origin)
        event.ageRestricted = channels.map { $0.nsfw == true }
        return event
    }

    /// The event-log record for a dispatch that makes at most one (``chainEvents(shard:)`` for any dispatch), or `nil`
    /// (DMs, outages, events nobody needs). `shard` is recorded in the event's origin with the sequence number.
    public func chainEvent(shard: Int) -> ChainEvent? {
        let origin = self.sequence.map { "\(shard):\($0)" }
        switch self.payload {
        case .messageCreate(let message), .messageUpdate(let message):
            guard let guild = message.guildID else { return nil }
            let isCreate: Bool
            if case .messageCreate = self.payload { isCreate = true } else { isCreate = false }
            return message.chainEvent(kind: isCreate ? .create : .update, source: .gateway, guild: guild, origin: origin)
        case .messageDelete(let delete):
            guard let guild = delete.guildID else { return nil }
            return ChainEvent(kind: .delete, source: .gateway, guildID: guild, channelID: delete.channelID,
                              messageID: delete.id.rawValue, origin: origin)
        case .messageDeleteBulk(let delete):
            guard let guild = delete.guildID, !delete.ids.isEmpty else { return nil }
            return ChainEvent(kind: .deleteBulk, source: .gateway, guildID: guild, channelID: delete.channelID,
                              messageIDs: delete.ids.map(\.rawValue), origin: origin)
        case .guildDelete(let guild):
            // `unavailable: true` is an outage, not a removal: the data stays.
            guard guild.unavailable != true else { return nil }
            return ChainEvent(kind: .guildRemoved, source: .gateway, guildID: guild.id, origin: origin)
        case .memberRemove(let removal):
            return ChainEvent(kind: .memberLeft, source: .gateway, guildID: removal.guildID, authorID: removal.user.id, origin: origin)
        case .threads(let guild, let channels):
            // Only threads (10 announcement, 11 public, 12 private) with a parent matter: their messages are learnt
            // when the parent channel is.
            let threads = channels.filter { [10, 11, 12].contains($0.type) && $0.parentID != nil }
            guard !threads.isEmpty else { return nil }
            return ChainEvent(kind: .threads, source: .gateway, guildID: guild, messageIDs: threads.map(\.id.rawValue),
                              threadParents: threads.map { $0.parentID!.rawValue }, origin: origin)
        case .interaction(let interaction):
            guard let guild = interaction.guildID else { return nil }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            guard let json = try? encoder.encode(interaction) else { return nil }
            return ChainEvent(
                kind: .interaction, source: .gateway, guildID: guild, channelID: interaction.channelID,
                messageID: interaction.id.rawValue, authorID: interaction.member?.user?.id ?? interaction.user?.id,
                timestamp: interaction.id.timestamp, payload: Array(json), origin: origin
            )
        case .guildCreate, .channels:
            return self.chainEvents(shard: shard).first
        case .none, .hello, .invalidSession, .ready, .resumed, .ignored:
            return nil
        }
    }
}

extension Message {
    /// The event-log record of this message (from the gateway, or read back from a channel's history).
    public func chainEvent(kind: ChainEvent.Kind, source: ChainEvent.Source, guild: Snowflake, origin: String? = nil) -> ChainEvent {
        var flags: ChainEvent.AuthorFlags = []
        if self.author?.bot == true { flags.insert(.bot) }
        if self.webhookID != nil { flags.insert(.webhook) }
        return ChainEvent(
            kind: kind,
            source: source,
            guildID: guild,
            channelID: self.channelID,
            messageID: self.id.rawValue,
            authorID: self.author?.id,
            authorFlags: flags,
            authorRoles: self.member?.roles ?? [],
            messageType: self.type ?? 0,
            content: self.content,
            attachments: self.attachments?.map(\.url) ?? [],
            timestamp: self.id.timestamp,
            origin: origin
        )
    }
}
