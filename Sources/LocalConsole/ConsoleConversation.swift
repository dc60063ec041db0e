import DiscordResponder
import Foundation
import MarkovChains
import MarkovCore
import Redis
import Synchronization

/// The local guild of `markov up` without Discord: what one typed line does, the same for the terminal console
/// and the web console. A trigger (`!mark…`, `@markov …`, `/mark seed:…`) is answered exactly as the responder
/// answers on Discord (the same ``Trigger`` and ``ReplyComposer``); any other line is a message, appended to the
/// event log and learnt by the trainer like a Discord message.
public final class ConsoleConversation: Sendable {
    /// The console's guild, channel and author ids, and the bot's user id (a mention of it is `<@0>`).
    public static let guild = Snowflake("1")!
    public static let channel = Snowflake("1")!
    public static let author = Snowflake("1")!
    public static let botUser = "0"
    /// A message's longest text, in characters: Discord's limit for members with Nitro.
    public static let maxLength = 4000

    public let store: ChainStore
    public let log: EventLog
    public let prefix: String
    public let guild: Snowflake
    private let composer: ReplyComposer
    private let sequence = Atomic<Int>(0)

    public init(store: ChainStore, log: EventLog, prefix: String, guild: Snowflake = ConsoleConversation.guild) {
        self.store = store
        self.log = log
        self.prefix = prefix
        self.guild = guild
        self.composer = ReplyComposer(store: store, prefix: prefix)
    }

    /// What a line did.
    public enum Outcome: Sendable, Hashable {
        /// Appended to the event log as a message (the trainer learns it within a moment).
        case learnt(messageID: String)
        /// Nothing to learn (blank, or only whitespace).
        case ignored
        /// Answered; `help` for the help text (printed as is rather than as the bot's line).
        case reply(ReplyComposer.Answer, help: Bool)
    }

    /// A line that cannot be a message.
    public struct InputError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Handles one line; with `steps`, a reply carries its generation steps even when it did not ask for debug.
    public func handle(_ line: String, steps: Bool = false) async throws -> Outcome {
        guard line.count <= Self.maxLength else {
            throw InputError(description: "a message is at most \(Self.maxLength) characters (Discord's limit); this one has \(line.count)")
        }
        guard !line.contains("\0") else { throw InputError(description: "a message cannot contain NUL characters") }
        guard let trigger = self.trigger(in: line) else {
            guard !Tokenizer.tokens(line).isEmpty else { return .ignored }
            let millis = Int64(Date().timeIntervalSince1970 * 1000)
            let id = "console-\(millis)-\(self.sequence.add(1, ordering: .relaxed).newValue)"
            try await self.log.append([
                ChainEvent(
                    kind: .create, source: .console, guildID: self.guild, channelID: Self.channel,
                    messageID: id, authorID: Self.author, content: line, timestamp: millis
                )
            ])
            return .learnt(messageID: id)
        }
        let start = Int64(Date().timeIntervalSince1970 * 1000)
        let answer = try await self.composer.answer(to: trigger.request, guild: self.guild, steps: steps)
        ResponderMetrics.replied("console", since: start)
        if case .help = trigger.request { return .reply(answer, help: true) }
        return .reply(answer, help: false)
    }

    /// The trigger in a typed line: `/mark [seed:]words` is the slash command, `@markov words` a mention of the
    /// bot, and the prefix as on Discord.
    public func trigger(in line: String) -> Trigger? {
        let trimmed = line.drop { $0 == " " }
        if trimmed.hasPrefix("/mark") {
            let options = trimmed.dropFirst("/mark".count)
            let debug = options.contains("debug:true")
            let seed = options.replacingOccurrences(of: "debug:true", with: "").replacingOccurrences(of: "debug:false", with: "")
                .replacingOccurrences(of: "seed:", with: "")
            return Trigger(kind: .slash, request: .sentence(seed: Tokenizer.tokens(seed), debug: debug))
        }
        let content = trimmed.lowercased().hasPrefix("@markov") ? "<@\(Self.botUser)>" + trimmed.dropFirst("@markov".count) : String(trimmed)
        return Trigger.detect(content: content, botUserID: Self.botUser, prefix: self.prefix)
    }
}
