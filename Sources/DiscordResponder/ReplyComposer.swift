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

    /// A reply: its text as posted, and the generation behind it (none for help and commands).
    public struct Answer: Sendable, Hashable {
        /// What is posted: never empty, within Discord's limit; with the debug block when the request asked for it.
        public var text: String
        /// Each word chosen with its count, its state's total and probability (empty unless asked for, or for
        /// replies that generate nothing).
        public var steps: [ChainStore.Step] = []
        /// Tries and the generator's notes (empty when nothing was generated).
        public var notes = ""
        public var tries = 0
    }

    /// The reply text; `ageRestricted` for a reply in an age-restricted channel, which may say what was learnt in one.
    public func reply(to request: Trigger.Request, guild: Snowflake, ageRestricted: Bool = false) async throws(RedisError) -> String {
        try await self.answer(to: request, guild: guild, ageRestricted: ageRestricted).text
    }

    /// The reply, and with `steps` the generation's steps whether or not the request asked for its debug block
    /// (the web console shows them on demand). The text is the same either way.
    public func answer(
        to request: Trigger.Request, guild: Snowflake, steps: Bool = false, ageRestricted: Bool = false
    ) async throws(RedisError) -> Answer {
        switch request {
        case .help:
            return Answer(text: Self.limit(self.help))
        case .unsupported(let name):
            return Answer(text: "`/\(name)` is not available yet. Try `/mark` or `\(self.prefix) help`.")
        case .command:
            return Answer(text: "Settings commands are answered by the responder.")
        case .sentence(let seed, let debug):
            var options = ChainStore.GenerationOptions()
            options.seedWords = seed
            options.debug = debug || steps
            options.ageRestricted = ageRestricted
            var result = try await self.store.generate(guild: guild, options: options)
            if result.sentence == nil {
                // A young chain can only repeat what it heard; better that than silence.
                options.allowCopies = true
                result = try await self.store.generate(guild: guild, options: options)
            }
            let sentence = result.sentence.flatMap { $0.isEmpty ? nil : $0 } ?? Self.tooLittleData
            var answer = Answer(text: Self.limit(sentence), steps: result.steps, notes: result.notes, tries: result.tries)
            guard debug else { return answer }
            var lines = [sentence, "```", "\(result.tries) tries; \(result.notes)"]
            for step in result.steps {
                let token = step.token.isEmpty ? "<end>" : step.token
                lines.append("\(token)  \(step.count)/\(step.total) (\(String(format: "%.1f", step.probability * 100))%)")
            }
            answer.text = Self.limit(lines.joined(separator: "\n") + "\n```")
            return answer
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
