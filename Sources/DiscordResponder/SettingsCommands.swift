import DiscordProtocol
import DiscordREST
import MarkovChains
import MarkovCore
import Redis

/// Carries out the settings slash commands, with the permission check: admin commands need Administrator,
/// Manage Guild or Manage Channels in the invoking member's permissions, or the user among the owners.
struct SettingsCommands: Sendable {
    let store: ChainStore
    /// Changes to the chain go through the guild's partition owner.
    let chains: ChainCommands
    let settings: ResponseSettings
    let backfills: BackfillStore
    let owners: Set<String>
    /// `/filters` is offered where the `training-filters` flag is on.
    let flags: FeatureFlags

    /// How long a command waits for the trainers before answering that it will finish on its own (an interaction's
    /// token lasts 15 minutes).
    var commandTimeout: Duration = .seconds(60)

    /// ADMINISTRATOR (1 << 3), MANAGE_CHANNELS (1 << 4), MANAGE_GUILD (1 << 5).
    static let adminPermissions: UInt64 = (1 << 3) | (1 << 4) | (1 << 5)

    func isAdmin(_ interaction: Interaction) -> Bool {
        if let user = interaction.member?.user?.id ?? interaction.user?.id, self.owners.contains(user.rawValue) { return true }
        let permissions = interaction.member?.permissions.flatMap { UInt64($0) } ?? 0
        return permissions & Self.adminPermissions != 0
    }

    /// The reply to a command (shown only to the invoking user).
    func run(_ command: Trigger.SlashCommand, interaction: Interaction, guild: Snowflake) async throws -> String {
        if command.needsAdmin, !self.isAdmin(interaction) {
            return "Only members with Administrator, Manage Server or Manage Channels can do that."
        }
        func mention(_ channel: String) -> String { "<#\(channel)>" }
        func list(_ channels: [String]) -> String { channels.map(mention).joined(separator: ", ") }
        switch command {
        case .listen(let action, let channel):
            if action == .list || channel == nil {
                let channels = try await self.store.listenChannels(guild: guild)
                return channels.isEmpty ? "I am not learning in any channel yet: `/listen add`." : "Learning in \(list(channels))."
            }
            guard let channel, let id = Snowflake(channel) else { return "That is not a channel." }
            try await self.store.setListening(action == .add, channel: id, guild: guild)
            return action == .add ? "I'll learn from \(mention(channel)) from now on." : "I no longer learn from \(mention(channel))."
        case .autorespond(let action, let channel):
            if action == .list || channel == nil {
                let channels = try await self.settings.autorespondChannels(guild: guild)
                return channels.isEmpty ? "No auto-respond channels." : "Answering every message in \(list(channels))."
            }
            guard let channel, let id = Snowflake(channel) else { return "That is not a channel." }
            try await self.settings.setAutorespond(action == .add, guild: guild, channel: id)
            return action == .add ? "I'll answer every message in \(mention(channel))." : "I stopped answering every message in \(mention(channel))."
        case .images(let percent):
            guard (0...100).contains(percent) else { return "The chance is a percentage from 0 to 100." }
            try await self.settings.setImageChance(Int((percent * 10_000).rounded()), guild: guild)
            return percent == 0 ? "My replies carry no images." : "\(percent)% of my replies carry an image posted here before."
        case .replyChannels(let action, let channel):
            if action == .list || channel == nil {
                let channels = try await self.settings.replyChannels(guild: guild)
                return channels.isEmpty ? "I answer in every channel." : "I answer only in \(list(channels))."
            }
            guard let channel, let id = Snowflake(channel) else { return "That is not a channel." }
            try await self.settings.setReplyChannel(action == .add, guild: guild, channel: id)
            let channels = try await self.settings.replyChannels(guild: guild)
            return channels.isEmpty ? "I answer in every channel again." : "I answer only in \(list(channels))."
        case .askRoles(let action, let role):
            func roles(_ ids: [String]) -> String { ids.map { "<@&\($0)>" }.joined(separator: ", ") }
            if action == .list {
                let ids = try await self.settings.askRoles(guild: guild)
                return ids.isEmpty ? "Everyone may ask me." : "Only members with \(roles(ids)) may ask me (admins may still use `/mark`)."
            }
            guard let role, let id = Snowflake(role) else { return "Name a role." }
            try await self.settings.setAskRole(action == .add, guild: guild, role: id)
            let ids = try await self.settings.askRoles(guild: guild)
            return ids.isEmpty ? "Everyone may ask me again." : "Only members with \(roles(ids)) may ask me (admins may still use `/mark`)."
        case .chance(let percent, let channel):
            guard (0...100).contains(percent) else { return "The chance is a percentage from 0 to 100." }
            let id = channel.flatMap { Snowflake($0) }
            try await self.settings.setChance(Int((percent * 10_000).rounded()), guild: guild, channel: id)
            return "I'll answer \(percent)% of messages unasked \(id.map { "in \(mention($0.rawValue))" } ?? "in this server")."
        case .filters(let action, let name):
            guard await self.flags.isOn(.trainingFilters, guild: guild) else {
                return "Training filters are not available in this server yet: they are being rolled out a few servers at a time."
            }
            var filters = try await self.store.filters(guild: guild)
            func stripped() -> String {
                filters.isEmpty ? "I learn messages whole." : "I strip \(filters.description.split(separator: " ").joined(separator: ", ")) before learning."
            }
            switch action {
            case .list:
                return stripped()
            case .relearn:
                do {
                    let (messages, relearnt) = try await self.chains.relearn(guild, timeout: self.commandTimeout)
                    return "Read \(messages) messages again: \(relearnt) are now learnt under the filters. \(stripped())"
                } catch is ChainCommands.Timeout {
                    return "I'm learning this server's messages again under the filters: it takes a while here, and it will finish on its own."
                }
            case .strip, .keep:
                guard let name, let filter = ContentFilters(name: name) else {
                    return "Name one of: \(ContentFilters.named.map(\.name).joined(separator: ", "))."
                }
                if action == .strip { filters.insert(filter) } else { filters.remove(filter) }
                try await self.store.setFilters(filters, guild: guild)
                return "\(stripped()) This applies to new messages; `/filters relearn` applies it to what I learnt before."
            }
        case .blocklist(let action, let word):
            func listed() async throws -> String {
                let words = try await self.store.blocklist(guild: guild)
                guard !words.isEmpty else { return "No word is blocked here." }
                var shown: [String] = []
                var length = 0
                for word in words {
                    length += word.count + 6
                    guard length < 1700 else { break }
                    shown.append("||`\(word)`||")
                }
                let more = words.count - shown.count
                return "I never say: \(shown.joined(separator: ", "))" + (more > 0 ? " and \(more) more." : ".")
            }
            if action == .list { return try await listed() }
            guard let word else { return "Name a word." }
            let entry: BlockEntry
            do {
                entry = try BlockEntry(word)
            } catch {
                return error.sentence
            }
            do {
                let changed = try await self.store.setBlocked([entry], blocked: action == .add, guild: guild)
                if action == .add {
                    return changed.isEmpty ? "`\(entry)` was blocked already." : "I'll never say `\(entry)` here (from my next sentence on)."
                }
                return changed.isEmpty ? "`\(entry)` was not blocked." : "`\(entry)` is no longer blocked."
            } catch let error as BlockEntry.InvalidEntry {
                return error.sentence
            }
        case .forgetMe:
            guard let user = interaction.member?.user?.id ?? interaction.user?.id else { return "I cannot tell who you are." }
            do {
                let forgotten = try await self.chains.forgetUser(user, guild: guild, timeout: self.commandTimeout)
                return "Forgot \(forgotten) of your messages; I won't learn from you again. `/remember-me` lets me learn your new messages."
            } catch is ChainCommands.Timeout {
                return "I won't learn from you again, and I'm forgetting your messages: it takes a while here, and it will finish on its own."
            }
        case .purgeOnLeave(let enabled):
            if let enabled { try await self.store.setPurgeOnLeave(enabled, guild: guild) }
            let on = try await self.store.purgesOnLeave(guild: guild)
            let state = on ? "I forget a member's messages when they leave." : "I keep a member's messages when they leave."
            return on ? state + " (This needs the Server Members intent, which the bot's operator must enable; without it I am not told of leaves.)" : state
        case .myData:
            // Answered with a file by ``myData(interaction:guild:)``.
            return "Use `/my-data` to get your data as a file."
        case .rememberMe:
            guard let user = interaction.member?.user?.id ?? interaction.user?.id else { return "I cannot tell who you are." }
            try await self.store.rememberUser(user, guild: guild)
            return "I'll learn from your new messages again (what I forgot stays forgotten)."
        case .train:
            let channels = try await self.store.listenChannels(guild: guild)
            guard !channels.isEmpty else { return "I am not learning in any channel yet: `/listen add` first, then `/train`." }
            let channel = interaction.channelID
            let requester = (interaction.member?.user?.id ?? interaction.user?.id)?.rawValue
            switch try await self.backfills.start(guild: guild, channel: channel, requester: requester) {
            case .started:
                return "Reading the history of \(list(channels)) and their threads; progress shows in \(channel.map { mention($0.rawValue) } ?? "this channel")."
            case .alreadyRunning(let job):
                return "I am already reading this server's history (\(BackfillProgress.grouped(job.messages)) messages so far)."
            }
        case .deleteData:
            try await self.backfills.cancel(guild: guild)
            do {
                let keys = try await self.chains.deleteGuild(guild, keepingOptOuts: true, timeout: self.commandTimeout)
                return "Deleted this server's model (\(keys) keys). I start learning from scratch."
            } catch is ChainCommands.Timeout {
                return "This server's model is being deleted: it takes a while here, and it will finish on its own."
            }
        }
    }
}

extension SettingsCommands {
    /// `/my-data`: a summary and the member's data as a JSON file.
    func myData(interaction: Interaction, guild: Snowflake) async throws -> (text: String, file: FormData.File?) {
        guard let user = interaction.member?.user?.id ?? interaction.user?.id else { return ("I cannot tell who you are.", nil) }
        let data = try await MemberData.read(redis: self.store.redis, guild: guild, user: user)
        var bytes = data.json
        var note = ""
        if bytes.count > Self.attachmentLimit {
            // Discord takes files up to 10 MiB from bots: the newest messages are left out, and the text says so.
            var kept = data
            while kept.json.count > Self.attachmentLimit, !kept.messages.isEmpty { kept.messages.removeLast(max(1, kept.messages.count / 10)) }
            bytes = kept.json
            note = " The file holds your \(kept.messages.count) oldest; `markov user-data` (for the bot's operator) gives them all."
        }
        let status = data.optedOut ? "You are opted out: I learn nothing new from you." : "I learn from your messages (`/forget-me` stops that and forgets them)."
        let text = "Here is everything I store about you in this server: \(data.messages.count) learnt messages.\(note) \(status)"
        return (text, FormData.File(filename: "markov-data-\(guild.rawValue)-\(user.rawValue).json", contentType: "application/json", bytes: bytes))
    }

    /// The largest file sent (Discord's limit for bots is 10 MiB; a margin for the form around it).
    static let attachmentLimit = 9 << 20
}

extension BlockEntry.InvalidEntry {
    /// The error as a reply: capitalized, with a full stop.
    fileprivate var sentence: String { "\(self.description.prefix(1).uppercased())\(self.description.dropFirst())." }
}
