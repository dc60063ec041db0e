import DiscordProtocol
import MarkovCore

/// What a message or interaction asks of the bot, if anything: decided from the text alone (pure).
public struct Trigger: Sendable, Hashable {
    public enum Kind: String, Sendable, Hashable {
        /// `<@bot> words` or `<@!bot> words`.
        case mention
        /// `!mark words`, `!mark debug words`, `!mark help` (the prefix is case-insensitive).
        case prefix
        /// `/mark seed:… debug:… tts:…`.
        case slash
    }

    public enum Request: Sendable, Hashable {
        /// A sentence, starting from `seed` when the chain knows those words.
        case sentence(seed: [String], debug: Bool)
        case help
        /// A command this responder does not handle yet.
        case unsupported(String)
    }

    public var kind: Kind
    public var request: Request
    public var tts = false

    public init(kind: Kind, request: Request, tts: Bool = false) {
        self.kind = kind
        self.request = request
        self.tts = tts
    }

    /// The trigger in a message's text: a mention of the bot anywhere at the start, or the prefix.
    public static func detect(content: String, botUserID: String?, prefix: String) -> Trigger? {
        let tokens = Tokenizer.tokens(content)
        guard let first = tokens.first else { return nil }
        if first.lowercased() == prefix.lowercased() {
            let rest = Array(tokens.dropFirst())
            switch rest.first?.lowercased() {
            case "help": return Trigger(kind: .prefix, request: .help)
            case "debug": return Trigger(kind: .prefix, request: .sentence(seed: Array(rest.dropFirst()), debug: true))
            default: return Trigger(kind: .prefix, request: .sentence(seed: rest, debug: false))
            }
        }
        // The tokenizer already turned <@!id> into <@id>.
        if let bot = botUserID, first == "<@\(bot)>" {
            let rest = tokens.dropFirst().filter { $0 != "<@\(bot)>" }
            return Trigger(kind: .mention, request: .sentence(seed: Array(rest), debug: false))
        }
        return nil
    }

    /// The trigger of a slash command.
    public static func slash(_ interaction: Interaction) -> Trigger? {
        guard interaction.type == 2, let name = interaction.data?.name else { return nil }
        let options = interaction.data?.options ?? []
        func string(_ key: String) -> String? {
            if case .string(let value)? = options.first(where: { $0.name == key })?.value { return value }
            return nil
        }
        func flag(_ key: String) -> Bool {
            if case .bool(let value)? = options.first(where: { $0.name == key })?.value { return value }
            return false
        }
        switch name {
        case "mark":
            return Trigger(kind: .slash, request: .sentence(seed: Tokenizer.tokens(string("seed") ?? ""), debug: flag("debug")),
                           tts: flag("tts"))
        case "help":
            return Trigger(kind: .slash, request: .help)
        default:
            return Trigger(kind: .slash, request: .unsupported(name))
        }
    }
}
