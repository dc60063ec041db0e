import Foundation
import MarkovChains
import MarkovCore
import Redis

/// Turns a request into the text of a reply, the same for Discord and for the console of `markov up`: never
/// empty, at most 2000 UTF-16 units, debug replies with each step's token and probability.
public struct ReplyComposer: Sendable {
    public let store: ChainStore
    public let prefix: String
    /// Discord's limit on a message's length, in UTF-16 units.
    public static let maxLength = 2000
    /// Said when the guild has too little data for any sentence.
    public static let tooLittleData = "I don't know enough words here yet. Talk a little more and ask again!"

    public init(store: ChainStore, prefix: String) {
        self.store = store
        self.prefix = prefix
    }

    /// The reply text.
    public func reply(to request: Trigger.Request, guild: Snowflake) async throws(RedisError) -> String {
        switch request {
        case .help:
            return Self.limit(self.help)
        case .unsupported(let name):
            return "`/\(name)` is not available yet. Try `/mark` or `\(self.prefix) help`."
        case .command:
            return "Settings commands are answered by the responder."
        case .sentence(let seed, let debug):
            var options = ChainStore.GenerationOptions()
            options.seedWords = seed
            options.debug = debug
            var result = try await self.store.generate(guild: guild, options: options)
            if result.sentence == nil {
                // A young chain can only repeat what it heard; better that than silence.
                options.allowCopies = true
                result = try await self.store.generate(guild: guild, options: options)
            }
            let sentence = result.sentence.flatMap { $0.isEmpty ? nil : $0 } ?? Self.tooLittleData
            guard debug else { return Self.limit(sentence) }
            var lines = [sentence, "```", "\(result.tries) tries; \(result.notes)"]
            for step in result.steps {
                let token = step.token.isEmpty ? "<end>" : step.token
                lines.append("\(token)  \(step.count)/\(step.total) (\(String(format: "%.1f", step.probability * 100))%)")
            }
            return Self.limit(lines.joined(separator: "\n") + "\n```")
        }
    }

    /// The help text.
    public var help: String {
        """
        **markov** learns how this server talks and answers in its voice.
        `\(self.prefix) [words]` a sentence, starting from your words when it knows them
        `\(self.prefix) debug [words]` the same, with each word's probability
        `/mark seed:… debug:… tts:…` the slash-command form; a mention of the bot works too
        """
    }

    /// Cuts a text to Discord's limit (UTF-16 units), on a character boundary, keeping a closed code block.
    public static func limit(_ text: String) -> String {
        guard text.utf16.count > Self.maxLength else { return text }
        let closing = text.hasSuffix("```") ? "\n…```" : "…"
        var result = ""
        var units = 0
        for character in text {
            let size = character.utf16.count
            guard units + size + closing.utf16.count <= Self.maxLength else { break }
            result.append(character)
            units += size
        }
        return result + closing
    }
}
