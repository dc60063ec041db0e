import Foundation
import MarkovCore
import Redis

/// Everything a guild stores about one member (`/my-data`, `markov user-data`): their learnt messages as the
/// message records hold them, and whether they opted out. Voices (a chain of one member) do not exist yet; the
/// file says so with `"voice": false`.
public struct MemberData: Sendable {
    public var guild: Snowflake
    public var user: Snowflake
    public var optedOut: Bool
    /// Message id and record, by message id.
    public var messages: [(id: String, tokens: [String], filters: ContentFilters, scope: ChainScope)]
    /// Records read to find them (the guild's whole history: records are kept by message, not by member).
    public var scanned: Int

    /// Reads the member's data; `progress` hears records read and the records there are.
    public static func read(
        redis: RedisClient, guild: Snowflake, user: Snowflake, progress: (Int, Int) -> Void = { _, _ in }
    ) async throws(RedisError) -> MemberData {
        let keys = ChainKeys(guild: guild)
        let optedOut = try await redis.send(RedisCommand("SISMEMBER", .string(keys.optOut), .string(user.rawValue))).int == 1
        let total = try await redis.send(RedisCommand("HLEN", .string(keys.messages))).int ?? 0
        var messages: [(id: String, tokens: [String], filters: ContentFilters, scope: ChainScope)] = []
        var scanned = 0
        var cursor = "0"
        repeat {
            let reply = try await redis.send(RedisCommand("HSCAN", .string(keys.messages), .string(cursor), "COUNT", 1000))
            guard let parts = reply.array, parts.count == 2, let next = parts[0].string else {
                throw RedisError(.protocolError, "HSCAN answered \(reply)")
            }
            cursor = next
            let items = parts[1].array ?? []
            for index in stride(from: 0, to: items.count - 1, by: 2) {
                scanned += 1
                guard let value = items[index + 1].bytes, MessageRecord.isLearnt(value, by: user.rawValue), let id = items[index].string,
                      case .learnt(_, let tokens, let filters, let scope)? = MessageRecord(value)
                else { continue }
                messages.append((id, tokens, filters, scope))
            }
            progress(scanned, max(total, scanned))
        } while cursor != "0"
        messages.sort { ($0.id.count, $0.id) < ($1.id.count, $1.id) }
        return MemberData(guild: guild, user: user, optedOut: optedOut, messages: messages, scanned: scanned)
    }

    /// The file: JSON, one message per line inside `messages` so that it reads in a text editor.
    public var json: [UInt8] {
        func quoted(_ text: String) -> String {
            let data = (try? JSONSerialization.data(withJSONObject: [text], options: [.withoutEscapingSlashes])) ?? Data("[\"\"]".utf8)
            return String(decoding: data.dropFirst().dropLast(), as: UTF8.self)
        }
        var lines = [
            "{",
            "  \"guild\": \(quoted(self.guild.rawValue)),",
            "  \"user\": \(quoted(self.user.rawValue)),",
            "  \"opted_out\": \(self.optedOut),",
            "  \"voice\": false,",
            "  \"message_count\": \(self.messages.count),",
            "  \"about\": \(quoted("Your messages as this bot stores them: the words of each, and the filters (l links, i invites, e emoji, m mentions, c code) whose matches were not learnt. /forget-me deletes them.")),",
            "  \"messages\": [",
        ]
        for (index, message) in self.messages.enumerated() {
            let comma = index == self.messages.count - 1 ? "" : ","
            lines.append("    {\"id\": \(quoted(message.id)), \"text\": \(quoted(message.tokens.joined(separator: " "))), \"filters\": \(quoted(message.filters.letters))\(message.scope == .ageRestricted ? ", \"age_restricted\": true" : "")}\(comma)")
        }
        lines += ["  ]", "}", ""]
        return Array(lines.joined(separator: "\n").utf8)
    }
}
