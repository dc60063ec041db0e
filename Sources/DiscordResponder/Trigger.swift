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
        /// A settings command (admins only, except the user's own opt-out).
        case command(SlashCommand)
        /// A command this responder does not handle yet.
        case unsupported(String)
    }

    /// The slash commands that change settings.
    public enum SlashCommand: Sendable, Hashable {
        public enum Action: String, Sendable, Hashable { case add, remove, list }
        /// `/listen add|remove|list [channel]`: channels the guild learns from.
        case listen(Action, channel: String?)
        /// `/autorespond add|remove|list [channel]`: channels where every message is answered.
        case autorespond(Action, channel: String?)
        /// `/chance set percent [channel]`: the chance of answering unasked.
        case chance(percent: Double, channel: String?)
        /// `/forget-me`, `/remember-me`: the invoking user's opt-out.
        case forgetMe, rememberMe
        /// `/delete-data`: the guild's whole model.
        case deleteData
        /// `/train`: read the history of the channels enabled for learning.
        case train
        /// `/reply-channels add|remove|list [channel]`: the only channels where the bot answers (none: all).
        case replyChannels(Action, channel: String?)
        /// `/images percent`: the chance that a reply carries an image the guild posted.
        case images(percent: Double)
        /// `/ask-roles add|remove|list role`: the only roles whose members may ask (none: everyone).
        case askRoles(Action, role: String?)
        /// `/filters strip|keep what`, `/filters list`, `/filters relearn`: what is stripped before learning.
        case filters(FiltersAction, filter: String?)

        public enum FiltersAction: String, Sendable, Hashable { case strip, keep, list, relearn }
        /// `/blocklist add|remove word`, `/blocklist list`: tokens the bot never says.
        case blocklist(Action, word: String?)
        /// `/my-data`: a file of everything stored about the invoking member.
        case myData
        /// `/purge-on-leave [enabled]`: whether a member's messages are forgotten when they leave (no option: show it).
        case purgeOnLeave(Bool?)

        /// Whether only admins (Administrator, Manage Guild or Manage Channels, or an owner) may use it.
        public var needsAdmin: Bool {
            switch self {
            case .forgetMe, .rememberMe, .myData: false
            case .listen(let action, _), .autorespond(let action, _), .replyChannels(let action, _), .askRoles(let action, _):
                action != .list
            case .filters(let action, _): action != .list
            case .chance, .deleteData, .train, .images, .purgeOnLeave: true
            case .blocklist: true  // even its list: it names words the guild finds offensive
            }
        }
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
        var options = interaction.data?.options ?? []
        // A subcommand (`/listen add channel:…`) carries its own options.
        let subcommand = options.first { $0.type == 1 }
        if let subcommand { options = subcommand.options ?? [] }
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
        case "listen", "autorespond", "reply-channels":
            guard let action = subcommand.flatMap({ SlashCommand.Action(rawValue: $0.name) }) else {
                return Trigger(kind: .slash, request: .unsupported(name))
            }
            let channel = string("channel") ?? interaction.channelID?.rawValue
            let command: SlashCommand = switch name {
            case "listen": .listen(action, channel: channel)
            case "autorespond": .autorespond(action, channel: channel)
            default: .replyChannels(action, channel: channel)
            }
            return Trigger(kind: .slash, request: .command(command))
        case "ask-roles":
            guard let action = subcommand.flatMap({ SlashCommand.Action(rawValue: $0.name) }) else {
                return Trigger(kind: .slash, request: .unsupported(name))
            }
            return Trigger(kind: .slash, request: .command(.askRoles(action, role: string("role"))))
        case "chance":
            let percent: Double
            switch options.first(where: { $0.name == "percent" })?.value {
            case .number(let value)?: percent = value
            case .integer(let value)?: percent = Double(value)
            default: return Trigger(kind: .slash, request: .unsupported(name))
            }
            return Trigger(kind: .slash, request: .command(.chance(percent: percent, channel: string("channel"))))
        case "images":
            switch options.first(where: { $0.name == "percent" })?.value {
            case .number(let value)?: return Trigger(kind: .slash, request: .command(.images(percent: value)))
            case .integer(let value)?: return Trigger(kind: .slash, request: .command(.images(percent: Double(value))))
            default: return Trigger(kind: .slash, request: .unsupported(name))
            }
        case "filters":
            guard let action = subcommand.flatMap({ SlashCommand.FiltersAction(rawValue: $0.name) }) else {
                return Trigger(kind: .slash, request: .unsupported(name))
            }
            return Trigger(kind: .slash, request: .command(.filters(action, filter: string("what"))))
        case "blocklist":
            guard let action = subcommand.flatMap({ SlashCommand.Action(rawValue: $0.name) }) else {
                return Trigger(kind: .slash, request: .unsupported(name))
            }
            return Trigger(kind: .slash, request: .command(.blocklist(action, word: string("word"))))
        case "forget-me":
            return Trigger(kind: .slash, request: .command(.forgetMe))
        case "my-data":
            return Trigger(kind: .slash, request: .command(.myData))
        case "purge-on-leave":
            var enabled: Bool?
            if case .bool(let value)? = options.first(where: { $0.name == "enabled" })?.value { enabled = value }
            return Trigger(kind: .slash, request: .command(.purgeOnLeave(enabled)))
        case "remember-me":
            return Trigger(kind: .slash, request: .command(.rememberMe))
        case "delete-data":
            return Trigger(kind: .slash, request: .command(.deleteData))
        case "train":
            return Trigger(kind: .slash, request: .command(.train))
        default:
            return Trigger(kind: .slash, request: .unsupported(name))
        }
    }
}
