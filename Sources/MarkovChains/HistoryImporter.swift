import Foundation
import MarkovCore

/// Reads message history files into create events for one guild: DiscordChatExporter JSON, the reference bot's
/// JSON (`[{"message": "…", "attachments": ["url"]}]`), or plain text with one message per line.
///
/// Messages without an id of their own get a stable one from the file's content and their position
/// (`imp-<hash>-<n>`), so importing the same file twice changes nothing.
public enum HistoryImporter {
    /// The formats understood.
    public enum Format: String, Sendable {
        case discordChatExporter = "DiscordChatExporter JSON"
        case referenceBot = "reference bot JSON"
        case plainText = "plain text"
    }

    /// Why a file could not be read.
    public struct ImportError: Error, CustomStringConvertible {
        public var description: String
    }

    /// The events of one file, and its detected format.
    public static func events(
        fromFile path: String, guild: Snowflake
    ) throws(ImportError) -> (format: Format, events: [ChainEvent]) {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ImportError(description: "cannot read \(path): \(error.localizedDescription)")
        }
        return try Self.events(from: data, name: path, guild: guild)
    }

    /// The events of a file's bytes; `name` appears in errors.
    public static func events(
        from data: Data, name: String, guild: Snowflake
    ) throws(ImportError) -> (format: Format, events: [ChainEvent]) {
        var hash = StableHash()
        hash.combine(data)
        let stable = "imp-\(hash.hex)-"
        let first = data.first(where: { !($0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D || $0 == 0xEF || $0 == 0xBB || $0 == 0xBF) })
        switch first {
        case UInt8(ascii: "{"):
            return (.discordChatExporter, try Self.discordChatExporter(data, name: name, guild: guild))
        case UInt8(ascii: "["):
            return (.referenceBot, try Self.referenceBot(data, name: name, guild: guild, stableIDPrefix: stable))
        default:
            var events: [ChainEvent] = []
            var index = 0
            for line in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
                defer { index += 1 }
                let text = String(decoding: line, as: UTF8.self)
                guard !text.allSatisfy(\.isWhitespace) else { continue }
                events.append(ChainEvent(kind: .create, source: .importer, guildID: guild, messageID: stable + String(index), content: text))
            }
            return (.plainText, events)
        }
    }

    private static func json(_ data: Data, name: String) throws(ImportError) -> Any {
        do {
            return try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        } catch {
            throw ImportError(description: "\(name) is not valid JSON: \(error.localizedDescription)")
        }
    }

    private static func discordChatExporter(_ data: Data, name: String, guild: Snowflake) throws(ImportError) -> [ChainEvent] {
        guard let root = try Self.json(data, name: name) as? [String: Any], let messages = root["messages"] as? [Any] else {
            throw ImportError(description: "\(name) looks like JSON but has no \"messages\" array (DiscordChatExporter format)")
        }
        let channel = ((root["channel"] as? [String: Any])?["id"] as? String).flatMap { Snowflake($0) }
        var events: [ChainEvent] = []
        events.reserveCapacity(messages.count)
        for case let message as [String: Any] in messages {
            guard let id = message["id"] as? String, !id.isEmpty else { continue }
            let author = message["author"] as? [String: Any]
            var flags: ChainEvent.AuthorFlags = []
            if (author?["isBot"] as? Bool) == true { flags.insert(.bot) }
            let type: Int
            switch message["type"] as? String ?? "Default" {
            case "Default": type = 0
            case "Reply": type = 19
            default: type = 99
            }
            let attachments = (message["attachments"] as? [[String: Any]] ?? []).compactMap { $0["url"] as? String }
            events.append(
                ChainEvent(
                    kind: .create, source: .importer, guildID: guild, channelID: channel, messageID: id,
                    authorID: (author?["id"] as? String).flatMap { Snowflake($0) }, authorFlags: flags,
                    messageType: type, content: message["content"] as? String ?? "", attachments: attachments
                )
            )
        }
        return events
    }

    private static func referenceBot(
        _ data: Data, name: String, guild: Snowflake, stableIDPrefix: String
    ) throws(ImportError) -> [ChainEvent] {
        guard let items = try Self.json(data, name: name) as? [Any] else {
            throw ImportError(description: "\(name) is not a JSON array")
        }
        var events: [ChainEvent] = []
        for (index, item) in items.enumerated() {
            guard let object = item as? [String: Any], let text = object["message"] as? String else {
                throw ImportError(description: "\(name): item \(index) has no \"message\" string (reference bot format)")
            }
            events.append(
                ChainEvent(
                    kind: .create, source: .importer, guildID: guild, messageID: stableIDPrefix + String(index),
                    content: text, attachments: object["attachments"] as? [String] ?? []
                )
            )
        }
        return events
    }
}
